"""How well maps localize: metrics (LAR, pointing game, energy, AUPRC), boxes from maps, the
RSNA metric, thresholds, chance maps, lung-mask sources, notebook 04's report.

Imports explain and every earlier stage.
"""
