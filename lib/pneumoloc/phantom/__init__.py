"""The generated default dataset: its parameters, the drawn anatomy, RSNA-placed lesions, the
in-memory drawing and the writer.

Imports data and the root modules.
"""
