"""Data in: the manifest tables every reader produces, the dataset readers, image decoding, the
uint8 image cache, patient-wise splits, near duplicates, and the tables and lung masks that
ship inside torchxrayvision.

Imports only the root modules (paths, storage, environment).
"""
