"""Maps that explain a model: the model made explainable, CAM methods, captum attributions,
the randomization sanity check, maps stored once per run.

Imports training, models, evaluate, data and the root modules.
"""
