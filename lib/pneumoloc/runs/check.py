"""What ``pneumoloc run SPEC --check`` verifies beyond the spec itself, without running anything.

* **Data**: each ``01_data_audit_and_patient_split`` stage's dataset is listed through its reader
  (:func:`pneumoloc.data.readers.list_dataset`: tables and folders checked, files checked to
  exist, no image decoded); a missing folder or file gives the reader's own message naming
  what it expected. A phantom whose folder is absent is planned: notebook 01 generates it.
* **Weights**: a ``02_train_backbone`` stage asking for ``weights`` needs that file; one asking
  for ``pretrained`` needs timm's hub weights in the local cache
  (:func:`pneumoloc.models.weights.cached_hub_weights`). No network access is attempted.
* **Time**: CPU and GPU time per stage from the image counts and the measured per-image costs
  of :mod:`pneumoloc.runs.costs` (its assumptions are printed with the estimate).

Every problem is collected; :class:`CheckFailed` reports them together.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..data.readers import list_dataset
from ..environment import resolve
from ..models.specs import BACKBONES
from ..models.weights import cached_hub_weights
from ..phantom.config import PhantomConfig
from . import costs
from .params import declared_parameters
from .spec import RunSpec, Stage

__all__ = ["CheckFailed", "DataSummary", "StageEstimate", "check_spec", "estimate_stages", "format_estimates"]

DATA, TRAIN, MAPS = "01_data_audit_and_patient_split", "02_train_backbone", "03_gradcam_gallery"


class CheckFailed(ValueError):
    """``--check`` found problems; ``problems`` lists every one of them."""

    def __init__(self, spec_path: str | Path, problems: list[str]):
        self.problems = problems
        listed = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"{spec_path}: --check found {len(problems)} problem(s):\n{listed}")


@dataclass
class DataSummary:
    """What the time estimate needs from a dataset: image counts, split shares, findings."""

    n_images: int
    ratios: tuple[float, float, float] = (0.7, 0.15, 0.15)
    findings: list[str] = field(default_factory=list)

    def split_sizes(self) -> dict[str, float]:
        return dict(zip(("train", "val", "test"), (r * self.n_images for r in self.ratios)))


@dataclass
class StageEstimate:
    """Seconds a stage should take on one CPU thread and with one GPU (None: not estimated)."""

    stage: str
    cpu: float | None
    gpu: float | None
    note: str = ""


def _parameters(stage: Stage) -> dict[str, Any]:
    """Every parameter the stage's notebook will see: its declared defaults, then the spec's values."""
    return {**{k: p.default for k, p in declared_parameters(stage.notebook).items()}, **stage.parameters}


def _check_data(stage: Stage, problems: list[str]) -> tuple[str, DataSummary | None]:
    """The listing line of a notebook-01 stage and its summary; problems appended."""
    p = _parameters(stage)
    root = resolve(p["data_root"])
    ratios = tuple(p["ratios"])
    if p["dataset"] == "phantom" and not root.exists():
        n = int({**{"n_images": PhantomConfig().n_images}, **p["phantom_options"]}["n_images"])
        return f"  data: phantom at {root}: absent, notebook 01 generates {n} images", DataSummary(n, ratios)
    try:
        tables = list_dataset(p["dataset"], str(root), progress=False, **p["reader_options"])
    except (ValueError, TypeError, KeyError, OSError, RuntimeError) as e:
        problems.append(f"{stage.name}: dataset {p['dataset']!r} at {root}: {e}")
        return f"  data: {p['dataset']} at {root}: NOT USABLE (below)", None
    images = tables.images
    line = (f"  data: {p['dataset']} at {root}: {len(images)} images, {images['patient_id'].nunique()} patients, "
            f"{len(tables.boxes)} boxes, {len(tables.findings)} findings"
            + (f", {len(tables.skipped)} listed files missing" if len(tables.skipped) else ""))
    return line, DataSummary(len(images), ratios, list(tables.findings))


def _offline_message(stage: str, backbone: str, timm_name: str) -> str:
    return (f"{stage}: pretrained=True needs timm's {timm_name!r} ImageNet weights, which are not in the "
            f"local caches (Hugging Face hub cache, $TORCH_HOME/hub/checkpoints); runs are offline and never "
            f"download. Provide a local file: in the spec's 02_train_backbone entry set "
            f"overrides: {{{backbone}: {{weights: <path to the state dict>}}}} (relative to the project root), "
            f"or fill the cache on a machine with network (python -c \"import timm; "
            f"timm.create_model('{timm_name}', pretrained=True)\") and copy it here, or set pretrained: false")


def _check_weights(stage: Stage, problems: list[str]) -> str:
    """Where a notebook-02 stage's initial weights come from; problems appended."""
    p = _parameters(stage)
    if p["weights"]:
        path = resolve(p["weights"])
        if not path.is_file():
            problems.append(f"{stage.name}: weights={p['weights']!r}: no file at {path}; give the path of a "
                            "saved state dict (relative to the project root) or leave weights empty")
        return f"local file {path}"
    if not p["pretrained"]:
        return "from scratch"
    spec = BACKBONES.get(p["backbone"])
    timm_name = spec.timm_name if spec else p["backbone"]
    found = cached_hub_weights(timm_name)
    if found is None:
        problems.append(_offline_message(stage.name, p["backbone"], timm_name))
        return f"timm hub {timm_name}: NOT CACHED (below)"
    return f"timm hub cache {found}"


def check_spec(spec: RunSpec) -> list[str]:
    """Data, weights and time of a loaded spec: the plan lines to print.

    Raises:
        CheckFailed: listing every problem found (missing data, files or weights).
    """
    problems: list[str] = []
    lines, data, weights = [], None, {}
    for stage in spec.stages:
        if stage.notebook.stem == DATA:
            line, data = _check_data(stage, problems)
            lines.append(line)
        elif stage.notebook.stem == TRAIN:
            weights[stage.name] = _check_weights(stage, problems)
    lines += [f"  weights: {name}: {where}" for name, where in weights.items()]
    if problems:
        raise CheckFailed(spec.path, problems)
    return lines + format_estimates(estimate_stages(spec.stages, data))


def _train_estimate(stage: Stage, data: DataSummary, cached_sizes: set[int]) -> StageEstimate:
    p = _parameters(stage)
    cost = costs.BACKBONE_COSTS.get(p["backbone"])
    if cost is None:
        return StageEstimate(stage.name, None, None, f"no measured cost for backbone {p['backbone']!r}")
    n = data.split_sizes()
    n_train = min(n["train"], p["max_train_images"]) if p["max_train_images"] else n["train"]
    # validation every epoch, then predictions of val and test from the best checkpoint
    model = p["epochs"] * (n_train * cost.train + n["val"] * cost.predict) + (n["val"] + n["test"]) * cost.predict
    model *= costs.size_factor(p["image_size"])
    decode = 0.0 if p["image_size"] in cached_sizes else data.n_images * costs.DECODE_SECONDS
    cached_sizes.add(p["image_size"])
    note = f"{p['epochs']} epochs at {p['image_size']} px" + (", builds the image cache" if decode else "")
    return StageEstimate(stage.name, model + decode, model / costs.GPU_SPEEDUP + decode, note)


def _maps_estimate(stage: Stage, data: DataSummary, sizes: dict[str, int],
                   stored: set[tuple[str, str]]) -> StageEstimate:
    """Maps of a notebook-03 stage; maps an earlier 03 stage stored (``stored``) are read, not recomputed."""
    p = _parameters(stage)
    n_images = sum(data.split_sizes()[s] for s in p["map_splits"] if s in ("train", "val", "test"))
    targets = len(data.findings) if p["target"] == "findings" and data.findings else 1
    model, unknown, new = 0.0, [], 0
    for backbone in [p["backbone"]] if p.get("backbone") else p["backbones"]:
        cost = costs.BACKBONE_COSTS.get(backbone)
        variants = p["layer_variants"].get(backbone, {})
        methods = list(p["methods"]) + [f"{m}@{label}" for label in variants for m in p["variant_methods"]]
        for method in methods:
            if (backbone, method) in stored:
                continue
            stored.add((backbone, method))
            new += 1
            seconds = costs.map_seconds(method, cost) if cost else None
            if seconds is None:
                unknown.append(f"{backbone}/{method}")
                continue
            model += seconds * n_images * targets * costs.size_factor(sizes.get(backbone, costs.MEASURED_SIZE))
    note = f"{new} model x method maps x {targets} target(s) x {n_images:.0f} images"
    if unknown:
        note += f"; not estimated: {', '.join(unknown)}"
    return StageEstimate(stage.name, model, model / costs.GPU_SPEEDUP, note)


def estimate_stages(stages: list[Stage], data: DataSummary | None) -> list[StageEstimate]:
    """Seconds per stage (start-up of the notebook kernel included); see :mod:`pneumoloc.runs.costs`."""
    if data is None:
        return [StageEstimate(s.name, None, None, "no dataset listed") for s in stages]
    out, cached, sizes, stored = [], set(), {}, set()
    for stage in stages:
        kind = stage.notebook.stem
        if kind == DATA:
            p = _parameters(stage)
            # the near-duplicate scan hashes every decoded image; the listing itself is cheap
            cpu = data.n_images * costs.DECODE_SECONDS if p["near_duplicate_distance"] >= 0 else 0.0
            est = StageEstimate(stage.name, cpu, cpu, "CPU only: near-duplicate scan decodes every image")
        elif kind == TRAIN:
            sizes[_parameters(stage)["backbone"]] = _parameters(stage)["image_size"]
            est = _train_estimate(stage, data, cached)
        elif kind == MAPS:
            est = _maps_estimate(stage, data, sizes, stored)
        else:
            est = StageEstimate(stage.name, 0.0, 0.0, "CPU only: patient bootstraps, not modelled (a few minutes)")
        if est.cpu is not None:
            est.cpu += costs.STAGE_STARTUP_SECONDS
            est.gpu += costs.STAGE_STARTUP_SECONDS
        out.append(est)
    return out


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    if seconds < 120:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.0f} min" if seconds < 7200 else f"{seconds / 3600:.1f} h"


def format_estimates(estimates: list[StageEstimate]) -> list[str]:
    """The estimate as plan lines, with its assumptions and the one-after-another total."""
    lines = [f"  estimated time per stage: CPU = one thread of the bench machine (bench/bench_scaling.py, "
             f"docs/scaling.md); GPU = model compute / {costs.GPU_SPEEDUP:.0f} (A100, docs/scaling.md assumption 3)"
             f" + decoding on the CPU; cost grows with the pixel count; {costs.STAGE_STARTUP_SECONDS:.0f} s "
             "kernel start-up per stage; early stopping ignored"]
    width = max(len(e.stage) for e in estimates)
    for e in estimates:
        lines.append(f"    {e.stage:<{width}}  CPU {_duration(e.cpu):>8}  GPU {_duration(e.gpu):>8}  {e.note}")
    known = [e for e in estimates if e.cpu is not None]
    total_cpu, total_gpu = sum(e.cpu for e in known), sum(e.gpu for e in known)
    lines.append(f"    {'total, one stage after another':<{width}}  CPU {_duration(total_cpu):>8}  "
                 f"GPU {_duration(total_gpu):>8}" + ("" if len(known) == len(estimates) else
                                                      f"  ({len(estimates) - len(known)} stages not estimated)"))
    return lines
