"""Runs: run specs, the runner that executes notebooks with papermill.

Imports every stage; only cli imports runs.
"""
