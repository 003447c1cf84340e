"""Write small notebooks for runner tests (a parameters cell, then code cells)."""
import nbformat
from nbformat.v4 import new_code_cell, new_notebook


def write_notebook(path, parameters: str, *cells: str) -> None:
    nb = new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    p = new_code_cell(parameters)
    p.metadata["tags"] = ["parameters"]
    nb.cells = [p, *(new_code_cell(c) for c in cells)]
    nbformat.write(nb, path)
