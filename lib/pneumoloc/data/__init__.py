"""Data in: the manifest tables every reader produces (tables), the dataset readers (readers/),
image decoding (images), the uint8 image cache (cache), patient-wise splits (splits), near
duplicates (near_duplicates), the tables and lung masks shipped inside torchxrayvision
(xrv_assets), and CheXmask's lung masks with the RSNA -> NIH id mapping (chexmask).

May import: the root modules (environment, storage, registry). The first stage.
"""
