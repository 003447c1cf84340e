"""A trained model's predictions and metrics, tied to the checkpoint that made them.

Notebook 02 computes ``predictions.csv`` and ``metrics.json`` from the model's ``best.pt``.
Training again (another seed or recipe, more epochs with ``resume=True``) replaces ``best.pt``;
when that notebook stops before it rewrites its outputs, the folder holds predictions of a model
that no longer exists, and notebooks 03-05 would silently combine them with maps and latencies
of the new one. So each artifact records the SHA-256 of the ``best.pt`` file it was computed
from, inside the artifact itself (a ``checkpoint_sha256`` column, a ``checkpoint_sha256`` key),
so artifact and digest are written by one atomic rename and cannot disagree; every reader
hashes the current ``best.pt`` once and compares before using the artifact:

=================  ==============  ============================================================
artifact records   ``best.pt``     on load
=================  ==============  ============================================================
digest D           has digest D    loaded
digest D           other digest    :class:`StaleArtifactError` naming the stage to rerun
digest D           missing         :class:`StaleArtifactError` naming the stage to rerun
nothing            exists          :class:`StaleArtifactError` (which checkpoint made it is unknown)
nothing            missing         loaded as given (outputs of a system trained elsewhere)
=================  ==============  ============================================================

The digest is :func:`pneumoloc.storage.sha256_of` of the checkpoint file.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from ..environment import RunPaths
from ..storage import load_json, load_table, save_json, save_table, sha256_of

__all__ = [
    "DIGEST_KEY", "TRAIN_STAGE", "StaleArtifactError", "checkpoint_digest", "check_made_by",
    "save_predictions", "save_metrics", "load_predictions", "load_metrics",
]

DIGEST_KEY = "checkpoint_sha256"  # column of predictions.csv, key of metrics.json
TRAIN_STAGE = "02_train_backbone"  # the notebook that writes best.pt, predictions and metrics
_SHOWN = 12  # hex digits of a digest shown in messages


class StaleArtifactError(ValueError):
    """An artifact was made by another checkpoint than the model's current ``best.pt``."""


def checkpoint_digest(run: RunPaths, model: str) -> str | None:
    """SHA-256 of ``model``'s ``best.pt`` in ``run``; None when the model has none."""
    path = run.best_checkpoint(model)
    return sha256_of(path) if path.exists() else None


def _required_digest(run: RunPaths, model: str) -> str:
    digest = checkpoint_digest(run, model)
    if digest is None:
        raise FileNotFoundError(f"{run.best_checkpoint(model)} does not exist: predictions and metrics are "
                                f"computed from it; train {model!r} with notebook {TRAIN_STAGE} first")
    return digest


def _shown(path: Path, run: RunPaths) -> str:
    return str(path.relative_to(run.root)) if path.is_relative_to(run.root) else str(path)


def check_made_by(run: RunPaths, model: str, artifact: Path, recorded: str | None, current: str | None) -> None:
    """Raise :class:`StaleArtifactError` unless ``recorded`` (the artifact's digest) is ``current``'s.

    Args:
        run: the run holding the model.
        model: model name (its folder under ``models/`` and the stage's foreach value).
        artifact: the file checked, named in the message.
        recorded: the digest the artifact records; None when it records none.
        current: :func:`checkpoint_digest` of the model now; None when it has no ``best.pt``.
    """
    if recorded == current:
        return
    what, best = f"{artifact.name} of {model}", _shown(run.best_checkpoint(model), run)
    rerun = f"rerun {TRAIN_STAGE}[{model}]"
    if recorded is None:
        why = (f"{what} records no checkpoint digest (written by hand or by an older pneumoloc) but {best} "
               f"exists ({current[:_SHOWN]}…), so which model made it is unknown: {rerun}")
    elif current is None:
        why = f"{what} was made by checkpoint {recorded[:_SHOWN]}… but {best} does not exist: {rerun}"
    else:
        why = f"{what} was made by checkpoint {recorded[:_SHOWN]}… but {best} is {current[:_SHOWN]}…: {rerun}"
    raise StaleArtifactError(f"{why} (file: {artifact})")


def save_predictions(run: RunPaths, model: str, pred: pd.DataFrame) -> Path:
    """Write ``predictions.csv`` with the digest of the current ``best.pt`` in a ``checkpoint_sha256`` column."""
    return save_table(run.model_predictions(model), pred.assign(**{DIGEST_KEY: _required_digest(run, model)}))


def save_metrics(run: RunPaths, model: str, metrics: dict[str, Any]) -> Path:
    """Write ``metrics.json`` with the digest of the current ``best.pt`` under ``checkpoint_sha256``."""
    return save_json(run.model_metrics(model), {**metrics, DIGEST_KEY: _required_digest(run, model)})


def _recorded_in_table(pred: pd.DataFrame, path: Path, model: str) -> str | None:
    if DIGEST_KEY not in pred:
        return None
    digests = set(pred[DIGEST_KEY].fillna(""))
    if len(digests) > 1:
        raise StaleArtifactError(f"{path} holds rows of {len(digests)} checkpoint digests (tables of several "
                                 f"trainings pasted together, or rows without one): rerun {TRAIN_STAGE}[{model}]")
    return digests.pop() or None


def load_predictions(run: RunPaths, model: str) -> pd.DataFrame:
    """``predictions.csv`` of ``model``, after checking it was made by the current ``best.pt``.

    Raises:
        FileNotFoundError: no predictions stored.
        StaleArtifactError: made by another checkpoint, or its checkpoint cannot be told.
    """
    path = run.model_predictions(model)
    pred = load_table(path, dtype={"image_id": str, "patient_id": str})
    check_made_by(run, model, path, _recorded_in_table(pred, path, model), checkpoint_digest(run, model))
    return pred


def load_metrics(run: RunPaths, model: str) -> dict[str, Any]:
    """``metrics.json`` of ``model``, after checking it was made by the current ``best.pt``.

    Raises:
        FileNotFoundError: no metrics stored.
        StaleArtifactError: made by another checkpoint, or its checkpoint cannot be told.
    """
    path = run.model_metrics(model)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist: run notebook {TRAIN_STAGE}[{model}] first")
    metrics = load_json(path)
    check_made_by(run, model, path, metrics.get(DIGEST_KEY), checkpoint_digest(run, model))
    return metrics
