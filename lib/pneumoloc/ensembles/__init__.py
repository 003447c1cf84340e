"""Ensembles of stored predictions and maps: combiners, diversity, cost (efficiency),
notebook 05's reading of a run (report) and its tables (summary).

May import: localize and every earlier stage.
"""
