"""Runs: run specs (spec) and their cluster resources (resources), notebook parameters and their
check (params), the runner (runner) that plans a run and hands it to an executor (executors: inline,
local; slurm: submitit jobs), one papermill execution (stage), the locked manifest (manifest),
the run-folder lock (lock), and what ``--check`` verifies beyond the spec (check: data listing,
weights, time) with the measured per-image costs it estimates from (costs).

May import: every stage. Only cli imports runs.
"""
