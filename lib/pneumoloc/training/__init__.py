"""Training one backbone: the recipe (config: TrainConfig), batches from the cache (batches),
augmentation and model input (transforms), losses, the loop (loop).

May import: models and every earlier stage.
"""
