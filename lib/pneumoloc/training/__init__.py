"""Training one backbone: the recipe (TrainConfig), batches from the cache, augmentation,
losses and the loop.

Imports models, evaluate, data and the root modules.
"""
