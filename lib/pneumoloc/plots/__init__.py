"""Figures: save_figure and one module per notebook's figures, the gallery, the widget browser.

Imports ensembles and every earlier stage; nothing imports plots.
"""
