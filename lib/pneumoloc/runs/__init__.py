"""Runs: run specs (spec) and their cluster resources (resources), notebook parameters and their
check (params), the runner (runner) that plans a run and hands it to an executor (executors: inline,
local; slurm: submitit jobs), one papermill execution (stage), the locked manifest (manifest) and
the run-folder lock (lock).

May import: every stage. Only cli imports runs.
"""
