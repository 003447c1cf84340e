"""A published checkpoint as a model of a run, in place of training it.

A checkpoint saved by the Shahi & Bagale code (``train.py`` of kiranshahi/pneumonia-analysis,
rebuilt by :func:`pneumoloc.models.paper.import_paper_checkpoint`) becomes model ``<backbone>``
of a run: ``models/<backbone>/best.pt`` in pneumoloc's checkpoint format (atomic, SHA-256
inside), then val/test ``predictions.csv`` and ``metrics.json`` stamped with that file's digest
and ``config.json``, the files notebook 02 writes after training. Notebooks 03-05 then explain
and score it as any trained model. ``pneumoloc import-checkpoint`` and notebook 02's
``import_checkpoint`` parameter both call this module.

The config records where the model came from: ``recipe: "published checkpoint"``,
``imported_from`` (the file) and ``sha256`` (of that file), with an empty ``train`` recipe.
"""
from __future__ import annotations

import dataclasses
import os
import warnings
from pathlib import Path
from typing import Any

import pandas as pd

from ..environment import RunPaths, provenance
from ..models.backbones import Classifier
from ..models.checkpoints import save_checkpoint
from ..models.paper import import_paper_checkpoint
from ..storage import save_json, sha256_of
from .batches import TrainData, predictions_table, prepare_data
from .config import TrainConfig
from .loop import TrainResult
from .recipe import PUBLISHED

__all__ = ["IMPORTED_RECIPE", "IMPORTED_STOP", "ImportedModel", "load_published", "install_checkpoint",
           "imported_origin", "imported_result", "import_into_run"]

IMPORTED_RECIPE = PUBLISHED  # config.json "recipe" of an imported model (one string, in training.recipe)
IMPORTED_STOP = "imported"  # TrainResult.stopped of a model that was not trained here


@dataclasses.dataclass
class ImportedModel:
    """What :func:`import_into_run` wrote: the model, its predictions and test scores."""

    model: Classifier
    predictions: pd.DataFrame
    scores: dict[str, Any]
    model_dir: Path


def load_published(path: str | os.PathLike, backbone: str, image_size: int = 0) -> Classifier:
    """A paper checkpoint as model ``backbone`` fed ``image_size`` px input, its origin in its config.

    Args:
        path: the checkpoint their ``train.py`` saved (loaded with ``weights_only=True``).
        backbone: model name in the run; must be the checkpoint's architecture (``densenet121``...).
        image_size: input side the run's notebooks feed the model; 0 = the checkpoint's ``img_size``.

    Raises:
        FileNotFoundError: ``path`` is missing.
        ValueError: not a paper checkpoint, a Git LFS pointer, or another architecture than ``backbone``.
    """
    source = Path(path).expanduser().resolve()
    model = import_paper_checkpoint(source)
    arch, native = model.config["arch"], int(model.config["img_size"])
    if backbone != arch:
        raise ValueError(f"{source} holds the paper's {arch} network but the backbone given is {backbone!r}: "
                         f"import it as backbone {arch!r} (--backbone {arch}), or give the checkpoint of {backbone}")
    size = int(image_size or native)
    if model.spec.reshape_transform is not None and size != native:
        raise ValueError(f"{source}: the {arch} network takes {native} px input only; set image_size={native} (or 0)")
    origin = {"recipe": IMPORTED_RECIPE, "imported_from": str(source), "sha256": sha256_of(source)}
    model.config = {**model.config, "image_size": size, **origin}
    return model


def install_checkpoint(path: str | os.PathLike, run: RunPaths, backbone: str, image_size: int = 0) -> Classifier:
    """:func:`load_published`, written as ``models/<backbone>/best.pt`` of ``run``; returns the model."""
    from ..data.tables import load_tables

    model = load_published(path, backbone, image_size)
    if not run.images_table.exists():
        raise FileNotFoundError(f"{run.images_table} does not exist: run notebook 01 for {run.root} first "
                                f"(the imported model is scored on that run's split)")
    load_tables(run)  # a split that breaks the schema or leaks patients fails before best.pt is written
    _set_training_apart(run.model_dir(backbone))
    save_checkpoint(run.best_checkpoint(backbone), model,
                    **{k: model.config[k] for k in ("recipe", "imported_from", "sha256")})
    return model


def _set_training_apart(folder: Path) -> Path | None:
    """Move the files of a model trained in ``folder`` (it has ``last.pt`` or ``history.csv``) into
    ``folder/before_import`` (``before_import-2``... when taken); returns that folder, or None.

    They are kept, not deleted; left in place, a later ``resume=True`` would continue the old
    training from ``last.pt`` on top of the imported model. An imported model being replaced
    has no training state and is simply overwritten (its source file still exists)."""
    if not any((folder / name).exists() for name in ("last.pt", "history.csv")):
        return None
    target, n = folder / "before_import", 2
    while target.exists():
        target, n = folder / f"before_import-{n}", n + 1
    target.mkdir()
    for path in sorted(p for p in folder.iterdir() if p.is_file()):
        path.rename(target / path.name)
    warnings.warn(f"{folder} held a trained model: its files moved to {target} before the import", stacklevel=3)
    return target


def imported_origin(model: Classifier) -> dict[str, Any]:
    """``recipe``, ``imported_from``, ``sha256`` of an imported model (``{}`` for a trained one),
    with an empty ``train`` recipe: the top-level keys of its ``config.json``."""
    config = getattr(model, "config", {}) or {}
    if config.get("recipe") != IMPORTED_RECIPE:
        return {}
    return {"train": {}, **{k: config[k] for k in ("recipe", "imported_from", "sha256")}}


def imported_result(model: Classifier, data: TrainData, device: str = "auto", batch_size: int = 64) -> TrainResult:
    """A :class:`TrainResult` for an imported model (moved to ``device``): no epochs, its validation
    ROC-AUC on ``data``, ``stopped = "imported"``."""
    from ..environment import pick_device
    from ..evaluate.classification import binary_metrics

    device = str(pick_device(device))
    model = model.to(device)
    val = predictions_table(model, data, device=device, batch_size=batch_size, splits=("val",))
    history = pd.DataFrame(columns=["epoch", "train_loss", "val_loss", "val_roc_auc", "lr", "train_seconds",
                                    "train_images_per_s"])
    return TrainResult(model=model, history=history, best_epoch=-1,
                       best_score=float(binary_metrics(val["label"], val["prob"])["roc_auc"]),
                       stopped=IMPORTED_STOP, device=device)


def import_into_run(path: str | os.PathLike, run: RunPaths, backbone: str, *, image_size: int = 0,
                    spec_target: float = 0.95, n_boot: int = 1000, seed: int = 0, device: str = "auto",
                    batch_size: int = 64) -> ImportedModel:
    """Write ``best.pt``, ``predictions.csv``, ``metrics.json`` and ``config.json`` of ``backbone``
    in ``run`` from a paper checkpoint, as notebook 02 writes them after training.

    Args:
        path, backbone, image_size: as for :func:`install_checkpoint`.
        run: a run whose notebook 01 has written the split.
        spec_target, n_boot, seed: notebook 02's evaluation options (operating point at this
            validation specificity, patient-bootstrap resamples, their seed).
        device: ``auto | cpu | cuda | cuda:N``.
        batch_size: images per forward pass.
    """
    from ..data.tables import load_tables
    from ..evaluate import classification as evaluation
    from ..models.outputs import save_metrics, save_predictions

    model = install_checkpoint(path, run, backbone, image_size)
    tables = load_tables(run)
    data = prepare_data(tables.images, TrainConfig.from_dict({"image_size": model.config["image_size"]}))
    result = imported_result(model, data, device, batch_size)
    model, dev = result.model, result.device
    pred = predictions_table(model, data, device=dev, batch_size=batch_size)
    save_predictions(run, backbone, pred)
    scores = evaluation.evaluate_binary(pred, spec_target=spec_target, n_boot=n_boot, seed=seed)
    info = {"backbone": backbone, "task": "binary", "stopped": result.stopped, "best_epoch": result.best_epoch,
            "best_val_roc_auc": result.best_score, "epochs_run": 0, "train_seconds": 0.0, "device": dev}
    save_metrics(run, backbone, evaluation.jsonable({**info, **scores, "provenance": provenance()}))
    save_json(run.model_dir(backbone) / "config.json", evaluation.jsonable({
        **imported_origin(model), "model": model.config, "run_dir": str(run.root),
        "n_images": {s: int((data.table["split"] == s).sum()) for s in ("train", "val", "test")},
        "skipped_images": len(data.skipped), "spec_target": spec_target, "n_boot": n_boot,
        "provenance": provenance()}))
    return ImportedModel(model, pred, scores, run.model_dir(backbone))
