"""Training one backbone: the recipe (config: TrainConfig), batches from the cache (batches),
augmentation and model input (transforms), losses, per-image dropout masks (keyed_dropout), the
loop (loop), the same loop on several devices or nodes (distributed), and a published checkpoint
made a model of a run in place of training (imported).

May import: models and every earlier stage.
"""
