"""Models: the backbone registry (specs), backbones and the Classifier (backbones), heads,
pretrained weights (weights), checkpoints, the kinds that rebuild a model from its config
(kinds), import of the paper's published checkpoints (paper).

May import: evaluate, phantom, data and the root modules.
"""
