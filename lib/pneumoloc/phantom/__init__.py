"""The generated default dataset: its parameters (config), the drawn body (anatomy),
RSNA-placed consolidations (lesions), the optional burned-in laterality marker (markers: a
shortcut with an exact box), patients and images in memory (drawing), the files on disk (writer).

May import: data and the root modules. The phantom's reader lives in data/readers and reads
the files only, so data never imports phantom.
"""
