"""Ensembles of stored predictions and maps: combiners, diversity, efficiency, notebook 05's
report.

Imports localize and every earlier stage.
"""
