"""Figures: save_figure (save) and one module per notebook's figures (audit, training,
localization, sanity, ensembles, shortcut), the gallery and the widget browser.

May import: ensembles and every earlier stage. Nothing but notebooks imports plots.
"""
