"""Runs: run specs (spec), notebook parameters and their check (params), the runner that executes
notebooks with papermill (runner).

May import: every stage. Only cli imports runs.
"""
