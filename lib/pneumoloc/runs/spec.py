"""Run specs: ``papermill_runs/<name>.yaml`` parsed, validated and expanded into stages.

A spec names the notebooks to execute, in order, and their parameters::

    name: demo                 # run folder papermill_runs/<name>, figures in figures/<name>
    timeout: 1800              # seconds one notebook may take before it is stopped
    parameters:                # given to every notebook that declares them
      seed: 0
    resources: {cpus_per_task: 4, mem_gb: 16}          # Slurm executor only (runs/resources.py)
    notebooks:
      - notebook: 01_data_audit_and_patient_split
        parameters: {dataset: phantom, data_root: data/phantom}
      - notebook: 02_train_backbone
        foreach: {backbone: [resnet18, mobilenet_v3]}   # one execution per value
        parameters: {epochs: 4}
        overrides: {mobilenet_v3: {epochs: 6}}          # per-value extras
        recipe_differences: {mobilenet_v3: "why it needs 6 epochs"}  # required: overrides change the recipe
        resources: {gpus_per_node: 1}                   # updates the defaults above

Unknown keys, unknown notebook parameters and values whose type differs from the
notebook's default are errors naming the spec file, so a typo never silently runs
the default. ``name`` and the ``foreach`` values become folder and file names, so they
are limited to ``[A-Za-z0-9._-]`` (no path separator, no ``..``); every ``timeout`` is a
positive, finite number of seconds. Overrides that change a recipe key
(:data:`pneumoloc.training.recipe.RECIPE_KEYS`: image size, epochs, optimizer, loss, ...) make
models that compare recipes rather than architectures, so they are refused unless the entry's
``recipe_differences`` gives a reason for that value; the reason is passed to the notebook as
``recipe_difference`` (notebook 02 stores it in the model's ``config.json``). A stage's *fingerprint* hashes its notebook, its
parameters, the library source and the fingerprints of the stages before it: a rerun skips a stage
whose fingerprint is unchanged and whose previous execution succeeded.
"""
from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..environment import NOTEBOOKS_DIR, PACKAGE_DIR, RUNS_DIR, resolve
from .params import Parameter, declared_parameters, type_error
from .resources import check_resources, merge_resources

__all__ = ["Stage", "RunSpec", "load_spec", "library_hash", "steps"]

_SPEC_KEYS = {"name", "timeout", "parameters", "notebooks", "description", "resources"}
_STAGE_KEYS = {"notebook", "parameters", "foreach", "overrides", "recipe_differences", "timeout", "resources"}
# Parameters the runner always sets; every notebook declares them.
RUNNER_PARAMETERS = ("run_dir", "figures_dir")
# Run names and foreach values become paths (papermill_runs/<name>/<stem>__<value>.ipynb):
# the POSIX portable filename character set, never ".." and never only dots ("." is the folder itself).
SAFE_NAME = re.compile(r"[A-Za-z0-9._-]+")


@dataclass
class Stage:
    """One notebook execution."""

    name: str  # e.g. "02_train_backbone[resnet18]"
    notebook: Path  # source notebook
    output_name: str  # executed notebook file name inside the run folder
    parameters: dict[str, Any]
    timeout: float
    fingerprint: str = ""
    entry: int = 0  # index of its notebook entry: one Slurm job or job array per entry
    foreach: bool = False  # one value of a ``foreach`` entry: independent of its siblings (see steps)
    resources: dict[str, Any] = field(default_factory=dict)  # cluster resources, not in the fingerprint


@dataclass
class RunSpec:
    name: str
    path: Path
    timeout: float
    stages: list[Stage] = field(default_factory=list)
    raw: dict[str, Any] = field(default_factory=dict)

    @property
    def run_dir(self) -> Path:
        return RUNS_DIR / self.name


def _check_parameters(spec_path: Path, stage: str, given: dict, declared: dict[str, Parameter]) -> None:
    """The notebook's own rule (:func:`pneumoloc.runs.params.check_parameters`), before anything runs."""
    unknown = sorted(set(given) - set(declared))
    if unknown:
        raise ValueError(f"{spec_path}: stage {stage}: unknown parameters {unknown}; "
                         f"the notebook declares {sorted(declared)}")
    for key, value in given.items():
        error = type_error(key, value, declared[key].default) or declared[key].range_error(value)
        if error:
            raise ValueError(f"{spec_path}: stage {stage}: parameter {error}")


def _check_safe_name(spec_path: Path, key: str, value: Any) -> str:
    """``str(value)`` when it is a safe path component, else a ValueError naming ``key``."""
    text = str(value)
    safe = SAFE_NAME.fullmatch(text) and ".." not in text and text.strip(".")
    if isinstance(value, (list, dict, tuple, set)) or not safe:
        raise ValueError(f"{spec_path}: {key} {text!r} is not a safe file name: use only the characters "
                         "A-Za-z0-9._- (letters, digits, dot, underscore, hyphen), not '..' and not only dots")
    return text


def _check_timeout(spec_path: Path, where: str, value: Any) -> float:
    """A positive, finite number of seconds (bool is not a number), as float."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0
    if not ok:
        raise ValueError(f"{spec_path}: {where} timeout={value!r} must be a positive number of seconds "
                         "(e.g. timeout: 1800)")
    return float(value)


def library_hash() -> str:
    """Hash of the library's source: a code change invalidates stored stages."""
    h = hashlib.sha256()
    for p in sorted(PACKAGE_DIR.rglob("*.py")):
        h.update(p.relative_to(PACKAGE_DIR).as_posix().encode())
        h.update(p.read_bytes())
    return h.hexdigest()


def _expand(spec_path: Path, index: int, entry: dict, common: dict, default_timeout: float,
            default_resources: dict, forced: dict | None = None) -> list[Stage]:
    """The stages of notebook entry number ``index``: parameters, timeout and resources checked."""
    stages = _expand_parameters(spec_path, entry, common, default_timeout, forced)
    where = f"notebook entry {str(entry['notebook']).removesuffix('.ipynb')!r}: "
    own = check_resources(spec_path, where, entry.get("resources"))
    for stage in stages:
        stage.entry = index
        stage.resources = merge_resources(default_resources, own)
    return stages


def _expand_parameters(spec_path: Path, entry: dict, common: dict, default_timeout: float,
                      forced: dict | None = None) -> list[Stage]:
    unknown = sorted(set(entry) - _STAGE_KEYS)
    if unknown:
        raise ValueError(f"{spec_path}: notebook entry {entry.get('notebook')!r} has unknown keys {unknown}; "
                         f"allowed: {sorted(_STAGE_KEYS)}")
    stem = str(entry["notebook"]).removesuffix(".ipynb")
    notebook = NOTEBOOKS_DIR / f"{stem}.ipynb"
    if not notebook.exists():
        known = sorted(p.stem for p in NOTEBOOKS_DIR.glob("*.ipynb"))
        raise ValueError(f"{spec_path}: no notebook {notebook.name} in {NOTEBOOKS_DIR}; known: {known}")
    defaults = declared_parameters(notebook)
    base = {k: v for k, v in common.items() if k in defaults}
    base.update(entry.get("parameters") or {})
    base.update({k: v for k, v in (forced or {}).items() if k in defaults})
    timeout = (_check_timeout(spec_path, f"notebook entry {stem!r}:", entry["timeout"])
               if "timeout" in entry else default_timeout)
    foreach = entry.get("foreach") or {}
    if len(foreach) > 1:
        raise ValueError(f"{spec_path}: {stem}: foreach takes one parameter, got {sorted(foreach)}")
    if not foreach:
        _check_parameters(spec_path, stem, base, defaults)
        return [Stage(stem, notebook, f"{stem}.ipynb", base, timeout)]
    (key, values), = foreach.items()
    if not isinstance(values, list):
        raise ValueError(f"{spec_path}: {stem}: foreach {key!r} takes a list of values, got {values!r}")
    for value in values:
        _check_safe_name(spec_path, f"notebook entry {stem!r}: foreach {key!r} value", value)
    overrides = entry.get("overrides") or {}
    stray = sorted(set(map(str, overrides)) - set(map(str, values)))
    if stray:
        raise ValueError(f"{spec_path}: {stem}: overrides for {stray} which are not in foreach {key}")
    reasons = _check_recipe_differences(spec_path, stem, entry, base, values)
    stages = []
    for value in values:
        params = {**base, key: value, **(overrides.get(value) or {})}
        params.update({k: v for k, v in (forced or {}).items() if k in defaults})
        if value in reasons and "recipe_difference" in defaults:
            params["recipe_difference"] = reasons[value]
        name = f"{stem}[{value}]"
        _check_parameters(spec_path, name, params, defaults)
        stages.append(Stage(name, notebook, f"{stem}__{value}.ipynb", params, timeout, foreach=True))
    return stages


def _check_recipe_differences(spec_path: Path, stem: str, entry: dict, base: dict, values: list) -> dict:
    """The declared reasons by foreach value; refuses overrides that change a recipe key without
    one, and declarations for values that are not in foreach or change no recipe key."""
    from ..training.recipe import recipe_changes

    overrides, declared = entry.get("overrides") or {}, entry.get("recipe_differences") or {}
    if not isinstance(declared, dict):
        raise ValueError(f"{spec_path}: {stem}: recipe_differences takes {{value: reason}}, got {declared!r}")
    stray = sorted(set(map(str, declared)) - set(map(str, values)))
    if stray:
        raise ValueError(f"{spec_path}: {stem}: recipe_differences for {stray} which are not in foreach")
    for value in values:
        changed, reason = recipe_changes(base, overrides.get(value) or {}), declared.get(value)
        if changed and value not in declared:
            raise ValueError(
                f"{spec_path}: {stem}: overrides of {value} change the recipe keys {changed} that every other "
                "value shares, so its results would compare recipes, not models; train it under the shared "
                f"recipe, or declare why in the entry: recipe_differences: {{{value}: \"<why {value} needs "
                "this>\"} (stored in its config.json and shown in every table)")
        if value in declared and not changed:
            raise ValueError(f"{spec_path}: {stem}: recipe_differences declares {value}, whose overrides change "
                             "no recipe key: remove the declaration")
        if value in declared and not (isinstance(reason, str) and reason.strip()):
            raise ValueError(f"{spec_path}: {stem}: recipe_differences of {value} must be a reason (text), "
                             f"got {reason!r}")
    return {v: declared[v].strip() for v in values if v in declared}


def load_spec(path: str | Path, overrides: dict[str, Any] | None = None) -> RunSpec:
    """Parse and validate a run spec; relative paths are from the project root.

    Args:
        path: the spec file.
        overrides: parameters that win over the spec's, given to every notebook that
            declares them (``pneumoloc run spec.yaml --set data_root=/data/rsna``); a key
            no notebook declares is an error.
    """
    path = resolve(path)
    if not path.exists():
        raise FileNotFoundError(f"run spec {path} does not exist; see papermill_runs/*.yaml for examples")
    raw = yaml.safe_load(path.read_text()) or {}
    unknown = sorted(set(raw) - _SPEC_KEYS)
    if unknown:
        raise ValueError(f"{path}: unknown keys {unknown}; allowed: {sorted(_SPEC_KEYS)}")
    if not raw.get("notebooks"):
        raise ValueError(f"{path}: 'notebooks' lists no notebook to run")
    name = _check_safe_name(path, "'name'" if raw.get("name") else "'name' (the file stem, as no name is given)",
                            raw.get("name") or path.stem)
    timeout = _check_timeout(path, "top-level", raw["timeout"]) if "timeout" in raw else 3600.0
    spec = RunSpec(name=name, path=path, timeout=timeout, raw=raw)
    common = dict(raw.get("parameters") or {})
    resources = check_resources(path, "", raw.get("resources"))
    for index, entry in enumerate(raw["notebooks"]):
        spec.stages.extend(_expand(path, index, entry, common, timeout, resources, overrides))
    stray = sorted(set(overrides or {}) - {k for s in spec.stages for k in s.parameters})
    if stray:
        raise ValueError(f"{path}: overrides {stray} are declared by no notebook of this spec")
    _check_unique_names(path, spec.stages)
    _fingerprint(spec)
    return spec


def _check_unique_names(spec_path: Path, stages: list[Stage]) -> None:
    """Each stage has its own name: it names the executed notebook and the manifest record."""
    seen: set[str] = set()
    for stage in stages:
        if stage.name in seen:
            raise ValueError(f"{spec_path}: stage {stage.name!r} appears twice; give entries of the same notebook "
                             "different foreach values (e.g. foreach: {backbone: [vit_b_16]})")
        seen.add(stage.name)


def steps(stages: list[Stage]) -> list[list[Stage]]:
    """Stages grouped into steps, in order; a step needs every step before it, its stages need
    nothing of each other and may run at once.

    Consecutive ``foreach`` stages of one notebook form one step: one ``foreach`` entry (one stage
    per backbone), or several such entries of that notebook in a row (e.g. one per resource need).
    An entry without ``foreach`` is a step of its own, so it may read what the stages before it
    wrote even when they ran the same notebook: ``03_gradcam_gallery`` with ``foreach: {backbone:
    ...}`` computes each backbone's maps as parallel jobs, and a following plain
    ``03_gradcam_gallery`` entry reuses them for the cross-backbone gallery and sanity check.
    """
    groups: list[list[Stage]] = []
    for stage in stages:
        last = groups[-1][-1] if groups else None
        if last is not None and stage.foreach and last.foreach and stage.notebook == last.notebook:
            groups[-1].append(stage)
        else:
            groups.append([stage])
    return groups


def _fingerprint(spec: RunSpec) -> None:
    """Chain hashes over steps (:func:`steps`): a stage depends on every step before its own.

    Stages of one step (e.g. one per backbone) do not depend on each other, so changing one
    backbone's parameters reruns only that backbone and the steps after it.
    """
    upstream = hashlib.sha256(library_hash().encode())
    for step in steps(spec.stages):
        fingerprints = []
        for stage in step:
            h = upstream.copy()
            h.update(stage.notebook.read_bytes())
            h.update(json.dumps(stage.parameters, sort_keys=True, default=str).encode())
            stage.fingerprint = h.hexdigest()
            fingerprints.append(stage.fingerprint)
        for fingerprint in fingerprints:
            upstream.update(fingerprint.encode())
