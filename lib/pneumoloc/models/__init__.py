"""Models: the backbone registry, backbones and the Classifier, heads, pretrained weights,
checkpoints, model kinds, import of published checkpoints.

Imports data, evaluate and the root modules.
"""
