"""A notebook's parameters: declared once in its ``parameters`` cell, checked by one call.

Each parameter is one literal assignment with a trailing comment (papermill's convention)::

    n_boot = 1000  # bootstrap resamples (by patient), in [1, inf)
    threshold = 0.5  # decision threshold on P(pneumonia), in (0, 1)

The default's type is the parameter's type, and an interval written ``in [low, high]`` in the
comment (``(`` / ``)`` for open ends, ``inf`` or nothing for no bound) is its range; for a
list or dict parameter the range bounds its length (``in [1, inf)``: not empty). The run
spec validator (:mod:`pneumoloc.runs.spec`) and the notebook's own check
(:func:`check_parameters`, the first call after the parameters cell) apply the same rule, so a
value accepted by ``pneumoloc run`` is accepted by the notebook and the reverse.
"""
from __future__ import annotations

import ast
import io
import math
import re
import tokenize
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping

from ..environment import NOTEBOOKS_DIR

__all__ = ["Parameter", "declared_parameters", "type_error", "check_parameters"]

_RANGE = re.compile(r"\bin ([\[(])\s*([-+.\deinf]*)\s*,\s*([-+.\deinf]*)\s*([\])])")


@dataclass(frozen=True)
class Parameter:
    """One parameter of a notebook: its default, its comment and the range the comment declares."""

    name: str
    default: Any
    comment: str = ""
    low: float = -math.inf
    high: float = math.inf
    low_open: bool = False
    high_open: bool = False

    def range_error(self, value: Any) -> str | None:
        """Why ``value`` (a list's or dict's length) lies outside the declared range, or None."""
        what = f"{self.name}={value!r}"
        if isinstance(value, (list, tuple, dict)):
            what, value = f"len({self.name})={len(value)}", len(value)
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            return None
        below = value < self.low or (self.low_open and value == self.low)
        above = value > self.high or (self.high_open and value == self.high)
        if below or above:
            lo, hi = "(" if self.low_open else "[", ")" if self.high_open else "]"
            return f"{what} is outside {lo}{_num(self.low)}, {_num(self.high)}{hi}"
        return None


def _num(x: float) -> str:
    return "inf" if x == math.inf else "-inf" if x == -math.inf else f"{x:g}"


def _parse_range(comment: str) -> dict:
    m = _RANGE.search(comment)
    if not m:
        return {}
    lo, hi = (float(t) if t else default for t, default in ((m.group(2), -math.inf), (m.group(3), math.inf)))
    return {"low": lo, "high": hi, "low_open": m.group(1) == "(", "high_open": m.group(4) == ")"}


def _parameters_cell(notebook: Path) -> str:
    import nbformat

    nb = nbformat.read(notebook, as_version=4)
    cells = [c for c in nb.cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    if len(cells) != 1:
        raise ValueError(f"{notebook.name}: expected exactly one cell tagged 'parameters', found {len(cells)}")
    return cells[0].source


def declared_parameters(notebook: str | Path) -> dict[str, Parameter]:
    """The parameters a notebook declares, in cell order.

    Args:
        notebook: a path, or a notebook name in ``notebooks/`` (``"02_train_backbone"``).
    """
    path = Path(notebook)
    if not path.suffix:
        path = NOTEBOOKS_DIR / f"{notebook}.ipynb"
    source = _parameters_cell(path)
    comments = {tok.start[0]: tok.string.lstrip("#").strip()
                for tok in tokenize.generate_tokens(io.StringIO(source).readline) if tok.type == tokenize.COMMENT}
    out: dict[str, Parameter] = {}
    for node in ast.parse(source).body:
        if not isinstance(node, (ast.Assign, ast.AnnAssign)):
            continue
        target = node.targets[0] if isinstance(node, ast.Assign) else node.target
        try:
            default = ast.literal_eval(node.value)
        except ValueError as e:
            raise ValueError(f"{path.name}: parameter {target.id} is not a literal") from e
        comment = comments.get(node.end_lineno, "")
        out[target.id] = Parameter(target.id, default, comment, **_parse_range(comment))
    return out


def type_error(name: str, value: Any, default: Any) -> str | None:
    """Why ``value`` cannot replace ``default``, or None. The type of the default rules; an int
    may stand for a float, a bool never for a number, None (either side) matches anything."""
    if default is None or value is None:
        return None
    if isinstance(value, bool) and not isinstance(default, bool):
        ok = False
    elif isinstance(default, float):
        ok = isinstance(value, (int, float))
    else:
        ok = isinstance(value, type(default))
    if ok:
        return None
    return f"{name}={value!r} is a {type(value).__name__}, the notebook expects {type(default).__name__}"


def check_parameters(notebook: str | Path, namespace: Mapping[str, Any],
                     choices: Mapping[str, Iterable[str]] | None = None) -> dict[str, Any]:
    """Check a notebook's parameter values against its parameters cell; returns them as a dict.

    Every problem is collected and raised at once: a wrong type, a value outside the declared
    range, or (``choices``) a value, or an element of a list value, that is not an allowed name.

    Args:
        notebook: the notebook's name in ``notebooks/`` (or a path).
        namespace: where the values live (the notebook passes ``globals()``).
        choices: allowed names per parameter, e.g. ``{"methods": cams.method_names()}``.

    Raises:
        ValueError: listing every ill-typed, out-of-range or unknown value.
    """
    declared = declared_parameters(notebook)
    values = {name: namespace[name] for name in declared}
    problems = [e for p in declared.values() for e in (type_error(p.name, values[p.name], p.default),)
                if e]
    problems += [e for p in declared.values() if not type_error(p.name, values[p.name], p.default)
                 for e in (p.range_error(values[p.name]),) if e]
    for name, allowed in (choices or {}).items():
        allowed = list(allowed)
        given = values[name] if isinstance(values[name], (list, tuple)) else [values[name]]
        unknown = [v for v in given if v not in allowed]
        if unknown:
            problems.append(f"{name}: {', '.join(map(repr, unknown))} not among {', '.join(map(str, allowed))}")
    if problems:
        raise ValueError(f"parameters of {Path(str(notebook)).stem}: " + "; ".join(problems))
    return values
