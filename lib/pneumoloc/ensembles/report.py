"""Reading a run's stored predictions and maps for notebook 05, and comparing systems.

Nothing here recomputes a model output: predictions come from each model's
``predictions.csv`` (notebook 02, refused when made by another checkpoint than the model's
current ``best.pt``: :mod:`pneumoloc.models.outputs`), maps from :func:`pneumoloc.explain.stored.load_maps`
(notebook 03). Members are aligned on the images every member scored; images missing
from a member are dropped and counted (never silently misaligned).

Comparisons (:func:`compare_systems`) are on the TEST split against a reference
system (the best single model on VALIDATION): each metric with a patient-bootstrap CI,
the paired-bootstrap CI of the difference (same patient resamples for both systems),
and DeLong's test for the ROC-AUC difference. :class:`EnsembleMaps` holds the members' maps
of one method with each ensemble's map, the members' agreement and the ground truth, for the
map figures and :func:`compare_map_localization`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Sequence

import numpy as np
import pandas as pd

from ..evaluate.bootstrap import Estimate, patient_resamples, percentile_interval
from ..models.outputs import DIGEST_KEY, load_predictions as load_model_predictions
from .combiners import ensemble_map
from .diversity import map_agreement_matrix, per_image_agreement, pixel_spread

if TYPE_CHECKING:
    from ..localize.ground_truth import GroundTruth

__all__ = [
    "PredictionSet", "trained_models", "ensemble_members", "load_predictions", "classification_metrics",
    "compare_systems", "CLASSIFICATION_HEADERS", "load_member_maps", "EnsembleMaps", "load_ensemble_maps",
    "PRED_COLUMNS", "localization_scores", "compare_localization", "compare_map_localization", "format_ci",
    "LOC_METRICS", "LOCALIZATION_COLUMNS",
]

PRED_COLUMNS = ("image_id", "patient_id", "split", "label", "prob")
# Columns of compare_systems shown in notebook 05's test table (format_ci), with their printed headers.
CLASSIFICATION_HEADERS = {"roc_auc": "ROC-AUC", "d_roc_auc": "Δ ROC-AUC", "delong_p": "DeLong p", "pr_auc": "PR-AUC",
                          "d_pr_auc": "Δ PR-AUC", "accuracy": "accuracy", "f1": "F1"}


@dataclass
class PredictionSet:
    """Members' probabilities aligned by image, per split.

    Attributes:
        members: model names, the column order of :meth:`probs`.
        frames: ``{"val": df, "test": df}`` with ``image_id, patient_id, label`` and one
            probability column per member.
        dropped: images dropped per split because some member lacks them.
        checkpoints: SHA-256 of the ``best.pt`` each member's predictions were made by (None for
            predictions stored without a checkpoint), for the provenance of ensemble artifacts.
    """

    members: list[str]
    frames: dict[str, pd.DataFrame]
    dropped: dict[str, int] = field(default_factory=dict)
    checkpoints: dict[str, str | None] = field(default_factory=dict)

    def _frame(self, split: str) -> pd.DataFrame:
        if split not in self.frames:
            raise KeyError(f"split {split!r} not loaded; have {sorted(self.frames)}")
        return self.frames[split]

    def probs(self, split: str) -> np.ndarray:
        return self._frame(split)[self.members].to_numpy(float)

    def labels(self, split: str) -> np.ndarray:
        return self._frame(split)["label"].to_numpy(int)

    def groups(self, split: str) -> np.ndarray:
        return self._frame(split)["patient_id"].to_numpy(str)

    def image_ids(self, split: str) -> np.ndarray:
        return self._frame(split)["image_id"].to_numpy(str)

    def describe(self) -> str:
        """One line: members, images per split, test patients and positives, images dropped."""
        test = self._frame("test")
        return (f"{len(self.members)} members {self.members}; val {len(self._frame('val'))} images, test "
                f"{len(test)} images from {test['patient_id'].nunique()} patients ({int(test['label'].sum())} "
                f"positive); images dropped because a member lacks them: {self.dropped}")


def trained_models(run) -> list[str]:
    """Models of a run that have a stored ``predictions.csv`` (sorted by name)."""
    root = run.root / "models"
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if run.model_predictions(p.name).exists())


def ensemble_members(run, backbones: Sequence[str] = ()) -> list[str]:
    """The models to combine: ``backbones``, or every trained model of the run when empty.

    Raises:
        ValueError: fewer than two models (an ensemble of one model is that model).
    """
    trained = trained_models(run)
    models = list(backbones) or trained
    if len(models) < 2:
        raise ValueError(f"an ensemble needs >= 2 trained models; {run.root} has {trained}: "
                         "train more with notebook 02")
    return models


def _read_member(run, name: str) -> pd.DataFrame:
    path = run.model_predictions(name)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist: train {name!r} with notebook 02 first "
                                f"(trained here: {trained_models(run)})")
    df = load_model_predictions(run, name)
    missing = [c for c in PRED_COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"{path} lacks columns {missing}; expected {list(PRED_COLUMNS)}")
    if df["prob"].isna().any() or not df["prob"].between(0, 1).all():
        raise ValueError(f"{path}: column 'prob' must hold probabilities in [0, 1] without NaN")
    return df


def load_predictions(run, models: Sequence[str], splits: Sequence[str] = ("val", "test")) -> PredictionSet:
    """Read and align the stored predictions of ``models`` for ``splits``.

    Raises:
        FileNotFoundError / ValueError naming the file, when a member's table is missing or
        malformed, or when two members disagree on an image's label or patient.
        StaleArtifactError: a member's table was made by another checkpoint than its ``best.pt``.
    """
    if not models:
        raise ValueError("no models given: train some with notebook 02, or list them in `backbones`")
    tables = {m: _read_member(run, m) for m in models}
    frames, dropped = {}, {}
    for split in splits:
        merged = None
        for m, df in tables.items():
            part = df.loc[df["split"] == split, ["image_id", "patient_id", "label", "prob"]]
            if part.empty:
                raise ValueError(f"{run.model_predictions(m)} has no {split!r} rows")
            part = part.rename(columns={"prob": m, "label": f"label@{m}", "patient_id": f"patient@{m}"})
            merged = part if merged is None else merged.merge(part, on="image_id", how="outer")
        complete = merged[list(models)].notna().all(axis=1)
        dropped[split] = int((~complete).sum())
        merged = merged[complete].sort_values("image_id").reset_index(drop=True)
        for key in ("label", "patient"):
            cols = merged[[f"{key}@{m}" for m in models]]
            bad = cols.nunique(axis=1) > 1
            if bad.any():
                raise ValueError(f"members disagree on the {key} of images {merged.loc[bad, 'image_id'].iloc[:5].tolist()}"
                                 f" in split {split!r}: were they trained on different runs?")
        out = merged[["image_id"]].assign(patient_id=merged[f"patient@{models[0]}"],
                                          label=merged[f"label@{models[0]}"].astype(int))
        frames[split] = pd.concat([out, merged[list(models)]], axis=1)
    return PredictionSet(list(models), frames, dropped, {m: _digest(df) for m, df in tables.items()})


def _digest(pred: pd.DataFrame) -> str | None:
    """The checkpoint digest a (checked, hence single-digest) predictions table records."""
    recorded = pred[DIGEST_KEY].dropna() if DIGEST_KEY in pred else pd.Series(dtype=str)
    return str(recorded.iloc[0]) if len(recorded) else None


def classification_metrics(y: np.ndarray, prob: np.ndarray, threshold: float = 0.5) -> dict:
    """The project's binary metrics (:func:`pneumoloc.evaluate.classification.binary_metrics`)."""
    from ..evaluate.classification import binary_metrics

    return binary_metrics(y, prob, threshold)


def _percentile(point: float, stats: np.ndarray, level: float) -> Estimate:
    """Percentile interval of the finite resample values (as :mod:`pneumoloc.evaluate.bootstrap`)."""
    ok = stats[np.isfinite(stats)]
    if ok.size == 0:
        return Estimate(float(point), float("nan"), float("nan"), 0, int(stats.size))
    low, high = percentile_interval(ok, level)
    return Estimate(float(point), float(low), float(high), int(ok.size), int(stats.size - ok.size))


def _delong(y: np.ndarray, score: np.ndarray, reference: np.ndarray) -> dict[str, float]:
    """DeLong's z and p of ``score`` vs ``reference``; NaN when the test split has fewer than two
    images of a class (DeLong's variance estimate needs two per class, DeLong et al. 1988)."""
    from ..evaluate.delong import delong_test

    if min(int((y == 1).sum()), int((y == 0).sum())) < 2:
        return {"delong_z": np.nan, "delong_p": np.nan}
    test = delong_test(y, score, reference)
    return {"delong_z": test.z, "delong_p": test.p_value}


def compare_systems(y: np.ndarray, groups: Sequence, systems: dict[str, np.ndarray], reference: str,
                    metrics: Sequence[str] = ("roc_auc", "pr_auc", "accuracy", "f1"),
                    threshold: float = 0.5, n_boot: int = 1000, seed: int = 0,
                    level: float = 0.95) -> pd.DataFrame:
    """Test metrics of each system with CIs, and its difference to ``reference``.

    The intervals are those of :func:`~pneumoloc.evaluate.bootstrap.bootstrap_ci` (per system) and
    :func:`~pneumoloc.evaluate.bootstrap.paired_bootstrap` (system - reference) with the same seed,
    hence the same patient resamples; computed here in one pass that evaluates all metrics
    of every system once per resample (one ``binary_metrics`` call where per-metric calls
    make 3 per metric; ``bench/bench_ensemble_bootstrap.py`` prints the difference).

    Returns:
        One row per system: ``system``; for each metric ``<m>``, ``<m>_low``, ``<m>_high``
        (patient bootstrap), ``d_<m>``, ``d_<m>_low``, ``d_<m>_high`` (paired bootstrap of
        system - reference); ``delong_z``, ``delong_p`` for the ROC-AUC difference (NaN with
        fewer than two test images of a class).
    """
    if reference not in systems:
        raise KeyError(f"reference {reference!r} is not among the systems {list(systems)}")
    y = np.asarray(y, dtype=float)
    resamples = patient_resamples(groups, n_boot, seed)

    def values(p: np.ndarray, idx=slice(None)) -> np.ndarray:
        try:
            m = classification_metrics(y[idx], p[idx], threshold)
        except ValueError:  # a degenerate resample: dropped and counted, as bootstrap_ci does
            return np.full(len(metrics), np.nan)
        return np.array([m[k] for k in metrics], dtype=float)

    point = {s: values(np.asarray(p, float)) for s, p in systems.items()}
    boot = {s: np.array([values(np.asarray(p, float), i) for i in resamples]).reshape(n_boot, len(metrics))
            for s, p in systems.items()}
    rows = []
    for name, p in systems.items():
        row: dict = {"system": name}
        for k, m in enumerate(metrics):
            est = _percentile(point[name][k], boot[name][:, k], level)
            d = _percentile(point[name][k] - point[reference][k], boot[name][:, k] - boot[reference][:, k], level)
            row.update({m: est.value, f"{m}_low": est.low, f"{m}_high": est.high,
                        f"d_{m}": d.value, f"d_{m}_low": d.low, f"d_{m}_high": d.high})
        row.update(_delong(y.astype(int), p, systems[reference]))
        rows.append(row)
    return pd.DataFrame(rows)


def load_member_maps(run, models: Sequence[str], method: str,
                     image_ids: Sequence[str] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Stored maps of ``models`` for ``method`` on the images all of them have.

    Args:
        image_ids: restrict to (and order by) these images when given.

    Returns:
        ``(image_ids [N], maps [M, N, H, W] float32)``.

    Raises:
        ValueError: members' maps differ in size (say which), or no image is shared.
    """
    from ..explain.stored import load_maps

    sets = {m: load_maps(run, m, method) for m in models}
    shapes = {m: tuple(s.maps.shape[1:]) for m, s in sets.items()}
    if len(set(shapes.values())) > 1:
        raise ValueError(f"maps of {method!r} differ in size across models {shapes}; "
                         f"recompute them at one map size with notebook 03")
    common = set.intersection(*(set(map(str, s.image_ids)) for s in sets.values()))
    ids = [str(i) for i in image_ids if str(i) in common] if image_ids is not None else sorted(common)
    if not ids:
        raise ValueError(f"no image has {method!r} maps from every model {list(models)}")
    return np.asarray(ids), np.stack([s.take(ids) for s in sets.values()])


@dataclass(frozen=True)
class EnsembleMaps:
    """Members' stored maps of one method on the images all of them have, each ensemble's map,
    how much the members agree, and the ground truth the maps are scored against.

    Attributes:
        method: the stored map method (notebook 03).
        split: the split the images come from.
        members: member names, the first axis of ``member_maps``.
        image_ids: ``[N]``, row-aligned with every map stack and with ``gt``.
        member_maps: ``[M, N, S, S]`` float32.
        ensemble_maps: ``{"ens_<combiner>": [N, S, S]}``, the combiner's member weights applied
            by :func:`~pneumoloc.ensembles.combiners.ensemble_map`.
        weights: ``{combiner: member weights}`` of those maps.
        agreement: member x member mean per-image Spearman correlation
            (:func:`~pneumoloc.ensembles.diversity.map_agreement_matrix`).
        spread: ``[N, S, S]`` per-pixel standard deviation across members.
        per_image_agreement: ``[N]`` mean pairwise Spearman correlation (NaN without a ranking).
        gt: :class:`~pneumoloc.localize.ground_truth.GroundTruth` of the images at map size.
        n_requested: images of the split asked for; those lacking a map of some member are left out.
    """

    method: str
    split: str
    members: list[str]
    image_ids: np.ndarray
    member_maps: np.ndarray
    ensemble_maps: dict[str, np.ndarray]
    weights: dict[str, np.ndarray]
    agreement: pd.DataFrame
    spread: np.ndarray
    per_image_agreement: np.ndarray
    gt: GroundTruth
    n_requested: int

    @property
    def size(self) -> int:
        """Side S of the maps."""
        return int(self.member_maps.shape[-1])

    def describe(self) -> str:
        """Three lines: images with maps, the member weights of each ensemble map, spread and agreement."""
        weights = {c: np.round(w, 3).tolist() for c, w in self.weights.items()}
        return (f"{len(self.image_ids)} of {self.n_requested} {self.split} images have {self.method!r} maps from all "
                f"members (map size {self.size})\nmember weights of each ensemble map: {weights}\n"
                f"mean pixel spread {self.spread.mean():.3f}; "
                f"per-image agreement median {np.nanmedian(self.per_image_agreement):.3f}")


def load_ensemble_maps(run, preds: PredictionSet, method: str, fitted: dict, split: str = "test") -> EnsembleMaps:
    """:class:`EnsembleMaps` of the members of ``preds`` on the images of ``split`` (in its order).

    Args:
        run: :class:`~pneumoloc.environment.RunPaths` holding the stored maps and dataset tables.
        fitted: combiner -> :class:`~pneumoloc.ensembles.combiners.FittedEnsemble`, whose weights
            make the ensemble maps (uniform for combiners whose weights are not convex).
    """
    from ..data.tables import load_tables
    from ..localize.ground_truth import ground_truth

    requested = preds.image_ids(split)
    ids, maps = load_member_maps(run, preds.members, method, requested)
    weights = {c: e.weights for c, e in fitted.items()}
    return EnsembleMaps(
        method=method, split=split, members=list(preds.members), image_ids=ids, member_maps=maps,
        ensemble_maps={f"ens_{c}": ensemble_map(maps, w) for c, w in weights.items()}, weights=weights,
        agreement=map_agreement_matrix(maps, preds.members), spread=pixel_spread(maps),
        per_image_agreement=per_image_agreement(maps), gt=ground_truth(load_tables(run), ids, int(maps.shape[-1])),
        n_requested=len(requested))


LOCALIZATION_COLUMNS = ("system", "metric", "n", "value", "low", "high", "d", "d_low", "d_high", "excluded")
LOC_METRICS = ("hit", "energy", "auprc", "lung_energy", "lar", "iou@otsu")


def localization_scores(maps: np.ndarray, gt, probs: np.ndarray | None = None,
                        metrics: Sequence[str] = LOC_METRICS) -> dict:
    """Notebook 04's per-image metrics of one map stack (:func:`pneumoloc.localize.report.score_maps`).

    Args:
        maps: ``[N, H, W]`` in [0, 1], row-aligned with ``gt``; scored as float16, the
            precision of stored maps (exact linear-time AUPRC, see :mod:`pneumoloc.localize.metrics`).
        gt: :class:`~pneumoloc.localize.ground_truth.GroundTruth` of the same images.
        probs: the system's probabilities (unused by these metrics; NaN when absent).
        metrics: which of notebook 04's metrics to keep (thresholded ones use Otsu per image).

    Returns:
        ``{metric: Scores}``.
    """
    from ..localize.report import score_maps
    from ..localize.thresholds import otsu_thresholds

    maps = np.asarray(maps).astype(np.float16)
    probs = np.full(len(maps), np.nan) if probs is None else np.asarray(probs, float)
    scores = score_maps(maps, gt, probs, {"otsu": otsu_thresholds(maps)}, detection=False)
    return {k: scores[k] for k in metrics if k in scores}


def compare_localization(scores: dict[str, dict], groups: Sequence, reference: str,
                         n_boot: int = 1000, seed: int = 0, level: float = 0.95) -> pd.DataFrame:
    """Mean of each localization metric per system with a patient-bootstrap CI, and the
    paired difference to ``reference`` on the images valid for both (row-aligned inputs).

    All systems share the patient resamples of :func:`~pneumoloc.evaluate.bootstrap.patient_resamples`
    (drawn once over all rows); in each resample a metric's mean is taken over the drawn
    images valid for both systems. With every image valid this is exactly
    :func:`~pneumoloc.evaluate.bootstrap.bootstrap_ci` / ``paired_bootstrap`` of the mean.

    Returns:
        Long table :data:`LOCALIZATION_COLUMNS`, empty when no image is valid for any metric.
    """
    groups = np.asarray(groups)
    n = len(groups)
    # draw counts [n_boot, n]: resample means become two matrix products per metric
    counts = np.stack([np.bincount(i, minlength=n) for i in patient_resamples(groups, n_boot, seed)]).astype(float)
    rows = []
    for name, per in scores.items():
        for metric, sc in per.items():
            ref = scores[reference][metric]
            both = (sc.valid & ref.valid).astype(float)
            if not both.any():
                continue
            with np.errstate(invalid="ignore", divide="ignore"):
                drawn = counts @ both
                mean_a = (counts @ (sc.values * both)) / drawn
                mean_b = (counts @ (ref.values * both)) / drawn
            va = float((sc.values * both).sum() / both.sum())
            vb = float((ref.values * both).sum() / both.sum())
            est, d = _percentile(va, mean_a, level), _percentile(va - vb, mean_a - mean_b, level)
            rows.append({"system": name, "metric": metric, "n": int(both.sum()), "value": est.value,
                         "low": est.low, "high": est.high, "d": d.value, "d_low": d.low,
                         "d_high": d.high, "excluded": sum(sc.excluded.values())})
    return pd.DataFrame(rows, columns=LOCALIZATION_COLUMNS)  # no valid image (all-zero maps): empty, same columns


def compare_map_localization(maps: EnsembleMaps, reference: str, n_boot: int = 1000, seed: int = 0) -> pd.DataFrame:
    """:func:`compare_localization` of every member's maps and every ensemble map against the
    ground truth of the same images (``maps.gt``)."""
    gt = maps.gt
    scores = {m: localization_scores(maps.member_maps[k], gt) for k, m in enumerate(maps.members)}
    scores.update({name: localization_scores(ens, gt) for name, ens in maps.ensemble_maps.items()})
    return compare_localization(scores, gt.images["patient_id"].to_numpy(str), reference, n_boot, seed)


def format_ci(table: pd.DataFrame, columns: dict[str, str], digits: int = 3) -> pd.DataFrame:
    """Paper-style strings ``"v [lo, hi]"`` from ``<c>``, ``<c>_low``, ``<c>_high`` columns.

    Args:
        columns: ``{source column: printed header}``; a column without ``_low``/``_high``
            companions is printed as a plain number (integers without decimals); NaN -> "–".
    """
    out = pd.DataFrame(index=table.index)
    for col, header in columns.items():
        has_ci = f"{col}_low" in table and f"{col}_high" in table
        cells = []
        for _, r in table.iterrows():
            v = r[col]
            if isinstance(v, str):
                cells.append(v)
            elif v is None or not np.isfinite(v):
                cells.append("–")
            elif has_ci and np.isfinite(r[f"{col}_low"]):
                cells.append(f"{v:.{digits}f} [{r[f'{col}_low']:.{digits}f}, {r[f'{col}_high']:.{digits}f}]")
            elif float(v).is_integer() and abs(v) >= 10:
                cells.append(f"{int(v):,}")
            else:
                cells.append(f"{v:.{digits}f}")
        out[header] = cells
    return out
