"""Notebook parameters: declared in the parameters cell, checked by one call shared with run specs."""
from __future__ import annotations

import math

import pytest
from notebook_factory import write_notebook

from pneumoloc.environment import NOTEBOOKS_DIR
from pneumoloc.runs.params import check_parameters, declared_parameters, type_error

CELL = '''run_dir = "papermill_runs/x"  # run folder
n_boot = 1000  # bootstrap resamples, in [1, inf)
threshold: float = 0.5  # decision threshold, in (0, 1)
frac = 0.25  # share kept, in [0, 1]
distance = 4  # Hamming distance; -1 skips the scan, in [-1, 63]
methods = ["gradcam"]  # map methods (see (a) and [b]), in [1, inf) methods
flag = True  # a switch
'''


@pytest.fixture
def nb(tmp_path):
    path = tmp_path / "nb.ipynb"
    write_notebook(path, CELL)
    return path


def test_defaults_comments_and_ranges_are_read_from_the_cell(nb):
    p = declared_parameters(nb)
    assert list(p) == ["run_dir", "n_boot", "threshold", "frac", "distance", "methods", "flag"]
    assert p["n_boot"].default == 1000 and (p["n_boot"].low, p["n_boot"].high) == (1, math.inf)
    assert (p["threshold"].low_open, p["threshold"].high_open) == (True, True)
    assert (p["distance"].low, p["distance"].high) == (-1, 63)
    assert p["methods"].low == 1 and p["run_dir"].comment == "run folder" and p["flag"].low == -math.inf


def test_good_values_pass_and_come_back(nb):
    ns = {"run_dir": "r", "n_boot": 1, "threshold": 0.3, "frac": 1, "distance": -1, "methods": ["a"], "flag": False}
    assert check_parameters(nb, {**ns, "other": 1}) == ns


@pytest.mark.parametrize("name, value, message", [
    ("n_boot", 0, r"n_boot=0 is outside \[1, inf\)"),
    ("threshold", 1.0, r"threshold=1.0 is outside \(0, 1\)"),
    ("distance", 64, r"distance=64 is outside \[-1, 63\]"),
    ("n_boot", 2.5, "n_boot=2.5 is a float, the notebook expects int"),
    ("flag", 1, "flag=1 is a int, the notebook expects bool"),
    ("n_boot", True, "n_boot=True is a bool"),
    ("methods", "gradcam", "methods='gradcam' is a str, the notebook expects list"),
    ("methods", [], r"len\(methods\)=0 is outside \[1, inf\)"),
])
def test_ill_typed_and_out_of_range_values_are_errors(nb, name, value, message):
    ns = {"run_dir": "r", "n_boot": 1, "threshold": 0.3, "frac": 0.5, "distance": 4, "methods": ["a"], "flag": True}
    with pytest.raises(ValueError, match=message):
        check_parameters(nb, {**ns, name: value})


def test_choices_name_every_unknown_value(nb):
    ns = {"run_dir": "r", "n_boot": 1, "threshold": 0.3, "frac": 0.5, "distance": 4, "methods": ["a", "zz"],
          "flag": True}
    with pytest.raises(ValueError, match="methods: 'zz' not among a, b"):
        check_parameters(nb, ns, choices={"methods": ["a", "b"]})


def test_int_stands_for_float_and_none_matches_anything():
    assert type_error("x", 1, 0.5) is None and type_error("x", None, 3) is None
    assert type_error("x", 0.5, 1) and type_error("x", False, 0.0)


@pytest.mark.parametrize("notebook", sorted(p.stem for p in NOTEBOOKS_DIR.glob("*.ipynb")))
def test_every_notebooks_defaults_pass_its_own_check(notebook):
    defaults = {n: p.default for n, p in declared_parameters(notebook).items()}
    assert check_parameters(notebook, defaults) == defaults


@pytest.mark.parametrize("notebook", sorted(p.stem for p in NOTEBOOKS_DIR.glob("*.ipynb")))
def test_papermill_reads_every_declared_parameter(notebook):
    """papermill's own reader of the parameters cell sees every parameter (it skips a line whose
    comment holds '=' and then warns 'Passed unknown parameter' on every run)."""
    import papermill as pm

    assert list(pm.inspect_notebook(str(NOTEBOOKS_DIR / f"{notebook}.ipynb"))) == list(declared_parameters(notebook))
