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


def notebook_dir(tmp_path, monkeypatch, parameters: str, notebooks: dict[str, tuple[str, ...]]):
    """``<tmp>/notebooks`` holding ``notebooks`` (stem -> code cells after ``parameters``), made the
    runner's notebook folder; the library hash is fixed so that other work on the library cannot
    change fingerprints mid-test."""
    from pneumoloc.runs import spec as runspec

    d = tmp_path / "notebooks"
    d.mkdir()
    monkeypatch.setattr(runspec, "NOTEBOOKS_DIR", d)
    monkeypatch.setattr(runspec, "library_hash", lambda: "fixed")
    for stem, cells in notebooks.items():
        write_notebook(d / f"{stem}.ipynb", parameters, *cells)
    return d


def write_spec(tmp_path, body: str):
    """``<tmp>/spec.yaml`` with ``body``; returns its path."""
    path = tmp_path / "spec.yaml"
    path.write_text(body)
    return path
