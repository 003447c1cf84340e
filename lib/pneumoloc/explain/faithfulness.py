"""Faithfulness of maps: does removing what a map highlights change what the model says?

Two families of perturbation metrics, both scored on the model's P(target) (its probability,
not its logit, so images and models are on one scale):

* **Deletion and insertion** (Petsiuk, Das & Saenko 2018, "RISE", BMVC, §4.1). Pixels are
  ranked by decreasing map value (the map resized to the model's input frame; ties broken by
  a seeded random permutation, so a flat region is removed in no spatial order) and, in
  ``steps`` equal steps of the pixel count, *deleted* (replaced by the baseline: zeros in the
  normalized input, i.e. mid-grey, as RISE's code does on its normalized tensors, or a
  Gaussian-blurred copy) or *inserted* into a blurred copy of the image (Gaussian, kernel 11,
  sigma 5 as in RISE's code; reflect padding). The curve of P(target) against the fraction of
  pixels changed is integrated by the trapezoid rule over [0, 1]. Lower deletion AUC and
  higher insertion AUC mean a more faithful map.
* **ROAD** (Rong, Leemann, Borisov, Kasneci & Kasneci 2022, "A consistent and efficient
  evaluation strategy for attribution methods", ICML): pixels are not replaced by a constant
  but by *noisy linear imputation* from their neighbours, which leaks less of the removed
  shape to the model. The masks, equations and noise are pytorch-grad-cam's
  (``pytorch_grad_cam.metrics.road``: ``RemoveMostRelevantFirst`` / ``RemoveLeastRelevantFirst``,
  ``NoisyLinearImputer``, noise 0.01 in normalized-input units; tests compare with it); the
  system is assembled in one vectorized pass and solved by a symmetric sparse LU, and the
  forward passes are batched. At percentile ``p`` MoRF imputes the ``100 - p`` % most relevant pixels, LeRF
  the ``100 - p`` % least relevant; each score is P(target) after minus before, averaged over
  the percentiles, and ``road_combined = (LeRF - MoRF) / 2`` as grad-cam's ``ROADCombined``
  (higher = more faithful; MoRF very negative and LeRF near 0 is a faithful map).

:func:`faithfulness_scores` scores one model on a batch of images and maps (one row per image);
:func:`run_faithfulness` scores every stored model x method of a run plus a random-map baseline
(seeded uniform noise: maps that know nothing) with patient-bootstrap CIs.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

__all__ = ["DELETION_BASELINES", "ROAD_PERCENTILES", "METRICS", "FaithfulnessReport", "gaussian_blur",
           "removal_ranks", "step_counts", "trapezoid_auc", "target_probability", "endpoint_probabilities",
           "perturbation_curves",
           "NEIGHBOUR_WEIGHTS", "road_keep_mask", "road_impute", "road_scores", "faithfulness_scores", "random_maps", "summarize_faithfulness", "faithfulness_table", "run_faithfulness"]

DELETION_BASELINES = ("zeros", "blur")  # what a deleted pixel becomes (zeros: in the normalized input)
ROAD_PERCENTILES = (10, 20, 30, 40, 50, 60, 70, 80, 90)  # grad-cam's ROADCombined default
BLUR_KERNEL = 11  # RISE's insertion substrate: Gaussian kernel side ...
BLUR_SIGMA = 5.0  # ... and sigma, in input pixels
RANDOM_METHOD = "random"  # method name of the random-map baseline in the tables
METRICS = {  # per-image column -> which direction is more faithful
    "deletion_auc": "lower", "insertion_auc": "higher",
    "road_morf": "lower", "road_lerf": "higher", "road_combined": "higher"}


def gaussian_blur(x: torch.Tensor, kernel_size: int = BLUR_KERNEL, sigma: float = BLUR_SIGMA) -> torch.Tensor:
    """Separable Gaussian blur of ``[B, C, H, W]`` with reflect padding (OpenCV's BORDER_REFLECT_101)."""
    if kernel_size % 2 != 1 or sigma <= 0:
        raise ValueError(f"gaussian_blur: kernel_size={kernel_size} must be odd and sigma={sigma} positive")
    half = kernel_size // 2
    if half >= min(x.shape[-2:]):
        raise ValueError(f"gaussian_blur: kernel_size={kernel_size} needs images larger than {half} px, "
                         f"got {tuple(x.shape[-2:])}; pass a smaller blur_kernel")
    t = torch.arange(kernel_size, dtype=torch.float64) - half
    k = torch.exp(-t ** 2 / (2 * sigma ** 2))
    k = (k / k.sum()).to(x.dtype).to(x.device)
    b, c, h, w = x.shape
    y = F.pad(x.reshape(b * c, 1, h, w), (half, half, half, half), mode="reflect")
    y = F.conv2d(F.conv2d(y, k.view(1, 1, 1, -1)), k.view(1, 1, -1, 1))
    return y.reshape(b, c, h, w)


def removal_ranks(maps: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """Position of each pixel in the order of decreasing map value: int64 ``[B, H*W]``.

    Equal values are ordered by a seeded random permutation (one per image), so a flat
    region is removed in no particular spatial order.
    """
    flat = maps.reshape(len(maps), -1).float().cpu()
    g = torch.Generator().manual_seed(seed)
    perm = torch.stack([torch.randperm(flat.shape[1], generator=g) for _ in range(len(flat))])
    order = perm.gather(1, torch.argsort(-flat.gather(1, perm), dim=1, stable=True))
    ranks = torch.empty_like(order)
    ranks.scatter_(1, order, torch.arange(flat.shape[1]).expand_as(order).contiguous())
    return ranks


def step_counts(n_pixels: int, steps: int) -> np.ndarray:
    """Pixels changed after each of ``steps`` equal steps: ``floor(k * n / steps)``, k = 0..steps."""
    if steps < 1:
        raise ValueError(f"steps={steps} must be at least 1")
    return np.arange(steps + 1) * n_pixels // steps


def trapezoid_auc(curves: np.ndarray, fractions: np.ndarray) -> np.ndarray:
    """Area under each row of ``curves`` over ``fractions`` (trapezoid rule)."""
    widths = np.diff(fractions)
    return (0.5 * (curves[:, 1:] + curves[:, :-1]) * widths).sum(axis=1)


def _probabilities(model: torch.nn.Module, logits: torch.Tensor) -> torch.Tensor:
    if hasattr(model, "probabilities"):
        return model.probabilities(logits)
    return torch.sigmoid(logits) if logits.shape[1] == 1 else logits.softmax(dim=1)


def target_probability(model: torch.nn.Module, logits: torch.Tensor, target: str | int,
                       negate: torch.Tensor | None = None) -> torch.Tensor:
    """P(target) ``[B]`` from logits.

    Args:
        model: a classifier; its ``probabilities`` (pneumoloc's Classifier) turns logits into
            probabilities, else sigmoid (one logit) or softmax.
        logits: ``[B, K]``.
        target: ``"pneumonia"`` (the positive class), ``"predicted"`` (the class predicted on
            the unperturbed image: pass its ``negate``), or an output index (a finding).
        negate: bool ``[B]``: score ``1 - P`` (the predicted class is "normal").
    """
    p = _probabilities(model, logits)
    if isinstance(target, (int, np.integer)):
        col = int(target)
    elif target in ("pneumonia", "predicted"):
        col = int(getattr(model, "positive_index", 0)) if p.shape[1] > 1 else 0
    else:
        raise ValueError(f"target={target!r}: use 'pneumonia', 'predicted' or an output index")
    out = p[:, col]
    return out if negate is None else torch.where(negate.to(out.device), 1 - out, out)


def _forward(model, x: torch.Tensor, target, negate, batch_size: int, device) -> torch.Tensor:
    """P(target) of every row of ``x`` in chunks of ``batch_size`` (``negate`` row-aligned)."""
    out = []
    with torch.inference_mode():
        for a in range(0, len(x), batch_size):
            logits = model(x[a:a + batch_size].to(device))
            neg = None if negate is None else negate[a:a + batch_size]
            out.append(target_probability(model, logits, target, neg).float().cpu())
    return torch.cat(out)


def _negate(model, x: torch.Tensor, target, batch_size: int, device) -> torch.Tensor | None:
    """For ``target="predicted"``: which images the model calls normal (scored as ``1 - P``)."""
    if target != "predicted":
        return None
    return _forward(model, x, "pneumonia", None, batch_size, device) < 0.5


def _substrates(x: torch.Tensor, deletion_baseline: str, blur_kernel: int,
                blur_sigma: float) -> tuple[torch.Tensor, torch.Tensor]:
    """What a deleted pixel becomes and the insertion's starting image (RISE): ``removed, blurred``."""
    if deletion_baseline not in DELETION_BASELINES:
        raise ValueError(f"deletion_baseline={deletion_baseline!r}: choose one of {DELETION_BASELINES}")
    blurred = gaussian_blur(x, blur_kernel, blur_sigma)
    return (blurred if deletion_baseline == "blur" else torch.zeros_like(x)), blurred


def endpoint_probabilities(model: torch.nn.Module, x: torch.Tensor, *, batch_size: int = 64,
                           device: str | torch.device = "cpu", target: str | int = "pneumonia",
                           deletion_baseline: str = "zeros", blur_kernel: int = BLUR_KERNEL,
                           blur_sigma: float = BLUR_SIGMA) -> dict[str, torch.Tensor]:
    """P(target) of the copies no map decides, to share between the maps of one model and images.

    Nothing or everything changed is the same copy for every map: deletion starts at the image
    and ends at the baseline, insertion starts at the blurred image and ends at the image, and
    ROAD's reference is the image. Arguments as :func:`perturbation_curves`.

    Returns:
        ``image``, ``deleted``, ``blurred``: float32 ``[B]``; ``negate``: bool ``[B]`` or None
        (``target="predicted"``: the images scored as ``1 - P``).
    """
    x = x.float().cpu()
    removed, blurred = _substrates(x, deletion_baseline, blur_kernel, blur_sigma)
    negate = _negate(model, x, target, batch_size, device)
    three = None if negate is None else negate.repeat(3)
    p = _forward(model, torch.cat([x, removed, blurred]), target, three, batch_size, device).view(3, len(x))
    return {"image": p[0], "deleted": p[1], "blurred": p[2], "negate": negate}


def perturbation_curves(model: torch.nn.Module, x: torch.Tensor, maps: torch.Tensor, *, steps: int = 16,
                        batch_size: int = 64, device: str | torch.device = "cpu", target: str | int = "pneumonia",
                        deletion_baseline: str = "zeros", blur_kernel: int = BLUR_KERNEL,
                        blur_sigma: float = BLUR_SIGMA, seed: int = 0,
                        endpoints: dict[str, torch.Tensor] | None = None) -> dict[str, np.ndarray]:
    """Deletion and insertion curves of P(target), batched over images and steps.

    The ``2 (steps - 1)`` copies of every image that its map decides go through the model in
    chunks of ``batch_size`` (built chunk by chunk, so memory stays at one chunk); the first and
    last step of both curves come from :func:`endpoint_probabilities`.

    Args:
        model: classifier in eval mode (on ``device``).
        x: normalized input ``[B, 1, S, S]`` (:func:`pneumoloc.training.transforms.to_input`).
        maps: ``[B, S, S]`` in the input frame (higher = more relevant).
        steps: number of equal steps from 0 to all pixels.
        deletion_baseline: ``"zeros"`` (mid-grey in the normalized input) or ``"blur"``.
        endpoints: :func:`endpoint_probabilities` of ``x`` with the same model, target and
            substrates (shared by every map of these images); None computes them.

    Returns:
        ``fractions [steps + 1]``, ``deletion [B, steps + 1]``, ``insertion [B, steps + 1]``.
    """
    if maps.shape != (x.shape[0], *x.shape[-2:]):
        raise ValueError(f"maps {tuple(maps.shape)} must be [B, S, S] in the input frame of x {tuple(x.shape)}")
    b, n = len(x), x.shape[-2] * x.shape[-1]
    x = x.float().cpu()
    removed, blurred = _substrates(x, deletion_baseline, blur_kernel, blur_sigma)
    if endpoints is None:
        endpoints = endpoint_probabilities(model, x, batch_size=batch_size, device=device, target=target,
                                           deletion_baseline=deletion_baseline, blur_kernel=blur_kernel,
                                           blur_sigma=blur_sigma)
    ranks = removal_ranks(maps, seed).view(b, 1, *x.shape[-2:])
    counts = torch.from_numpy(step_counts(n, steps))
    # copy c: mode (0 deletion, 1 insertion), interior step k, image i; changed pixels: rank < count[k]
    mode, k, i = (t.reshape(-1) for t in torch.meshgrid(torch.arange(2), torch.arange(1, steps),
                                                       torch.arange(b), indexing="ij"))
    changed_to = torch.stack([removed, x])  # deletion: a pixel becomes the baseline; insertion: the image
    unchanged = torch.stack([x, blurred])  # deletion starts from the image; insertion from the blur
    negate = endpoints["negate"]
    probs = [torch.zeros(0)]
    for a in range(0, len(i), batch_size):
        m, kk, ii = mode[a:a + batch_size], k[a:a + batch_size], i[a:a + batch_size]
        on = ranks[ii] < counts[kk].view(-1, 1, 1, 1)
        copies = torch.where(on, changed_to[m, ii], unchanged[m, ii])
        probs.append(_forward(model, copies, target, None if negate is None else negate[ii], batch_size, device))
    interior = torch.cat(probs).view(2, steps - 1, b)
    first = torch.stack([endpoints["image"], endpoints["blurred"]])[:, None]  # nothing changed yet
    last = torch.stack([endpoints["deleted"], endpoints["image"]])[:, None]  # every pixel changed
    curves = torch.cat([first, interior, last], dim=1).permute(0, 2, 1).numpy().astype(np.float64)
    return {"fractions": counts.numpy() / n, "deletion": curves[0], "insertion": curves[1]}


# ROAD's neighbour weights (Rong et al. 2022, imputations.py; grad-cam's NoisyLinearImputer):
# (row offset, column offset) -> weight; edge neighbours 1/6, diagonal ones 1/12 (sum 1)
NEIGHBOUR_WEIGHTS = {(1, 1): 1 / 12, (0, 1): 1 / 6, (-1, 1): 1 / 12, (1, -1): 1 / 12,
                     (0, -1): 1 / 6, (-1, -1): 1 / 12, (1, 0): 1 / 6, (-1, 0): 1 / 6}


def road_keep_mask(cam: torch.Tensor, percentile: float, most_relevant_first: bool) -> np.ndarray:
    """Pixels ROAD keeps at ``percentile``: bool ``[H, W]``.

    As grad-cam's ``RemoveMostRelevantFirst`` / ``RemoveLeastRelevantFirst``: MoRF keeps the
    pixels strictly below the map's ``percentile``-th percentile (imputes the rest, the most
    relevant), LeRF does the same on ``1 - map`` (imputes the least relevant).
    """
    values = (cam if most_relevant_first else 1 - cam).cpu().numpy()
    return values < np.percentile(values, percentile)


def _imputation_system(keep: np.ndarray):
    """Sparse SPD system ``M u = W v`` of ROAD's linear imputation on one image.

    Each missing pixel equals the weighted mean of its in-image neighbours: with ``D`` the sum
    of a pixel's in-image neighbour weights, ``M = D - W_missing`` (symmetric, diagonally
    dominant) and the right-hand side sums the weighted kept neighbours (``rhs @ v``).
    """
    from scipy.sparse import coo_matrix

    h, w = keep.shape
    missing = np.flatnonzero(~keep.ravel())
    var = np.full(h * w, -1)
    var[missing] = np.arange(len(missing))
    r, c = np.divmod(missing, w)
    diag = np.zeros(len(missing))
    rows, cols, vals, krows, kcols, kvals = [], [], [], [], [], []
    for (dr, dc), wt in NEIGHBOUR_WEIGHTS.items():
        inside = (r + dr >= 0) & (r + dr < h) & (c + dc >= 0) & (c + dc < w)
        i = np.flatnonzero(inside)
        j = (r[i] + dr) * w + c[i] + dc
        diag[i] += wt
        free = var[j] >= 0
        rows.append(i[free]), cols.append(var[j[free]]), vals.append(np.full(free.sum(), -wt))
        krows.append(i[~free]), kcols.append(j[~free]), kvals.append(np.full((~free).sum(), wt))
    n = len(missing)
    m = coo_matrix((np.concatenate(vals + [diag]), (np.concatenate(rows + [np.arange(n)]),
                                                   np.concatenate(cols + [np.arange(n)]))), shape=(n, n)).tocsc()
    rhs = coo_matrix((np.concatenate(kvals), (np.concatenate(krows), np.concatenate(kcols))), shape=(n, h * w)).tocsr()
    return missing, m, rhs


def road_impute(image: torch.Tensor, keep: np.ndarray, noise: float = 0.01) -> torch.Tensor:
    """Noisy linear imputation of the pixels outside ``keep`` (Rong et al. 2022, §4).

    Solves the same equations as grad-cam's ``NoisyLinearImputer`` (a symmetric sparse LU, as
    the matrix is symmetric) and adds ``noise * N(0, 1)`` drawn from torch's generator with the
    same shape and order as grad-cam, so a seeded call reproduces its imputation.

    Args:
        image: ``[C, H, W]`` float32.
        keep: bool ``[H, W]``: pixels kept (the rest are imputed).
        noise: standard deviation of the added noise, in the image's units.
    """
    from scipy.sparse.linalg import splu

    missing, m, rhs = _imputation_system(np.asarray(keep, bool))
    flat = image.reshape(image.shape[0], -1).clone()
    if len(missing) == 0:
        return flat.reshape_as(image)
    lu = splu(m, permc_spec="MMD_AT_PLUS_A", diag_pivot_thresh=0.0, options={"SymmetricMode": True})
    solved = torch.tensor(lu.solve(rhs @ flat.double().numpy().T), dtype=torch.float)  # [n, C]
    solved = solved[:, 0] if solved.shape[1] == 1 else solved  # grad-cam's spsolve returns a vector for C = 1
    flat[:, missing] = solved.t() + noise * torch.randn_like(solved.t())
    return flat.reshape_as(image)


def road_scores(model: torch.nn.Module, x: torch.Tensor, maps: torch.Tensor, *,
                percentiles: Sequence[int] = ROAD_PERCENTILES, batch_size: int = 64,
                device: str | torch.device = "cpu", target: str | int = "pneumonia", noise: float = 0.01,
                seed: int = 0, endpoints: dict[str, torch.Tensor] | None = None) -> dict[str, np.ndarray]:
    """ROAD MoRF, LeRF and combined scores per image (Rong et al. 2022).

    The imputations (:func:`road_impute`) are made in grad-cam's order (LeRF then MoRF, each
    percentile, each image) from torch's generator seeded with ``seed`` inside
    :func:`torch.random.fork_rng` (the caller's random state is untouched), so the scores equal
    grad-cam's ``ROADCombined`` on the same batch after ``torch.manual_seed(seed)`` up to the
    solver's rounding; all imputed copies go through the model in chunks of ``batch_size``.
    ``endpoints`` (:func:`endpoint_probabilities` of ``x``) gives P(target) before imputation.

    Returns:
        ``road_morf``, ``road_lerf``, ``road_combined``: float64 ``[B]``.
    """
    x, cams = x.float().cpu(), maps.float().cpu()
    if endpoints is None:
        negate = _negate(model, x, target, batch_size, device)
        before = _forward(model, x, target, negate, batch_size, device)
    else:
        negate, before = endpoints["negate"], endpoints["image"]
    copies = []
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for most_relevant_first in (False, True):
            for p in percentiles:
                copies += [road_impute(x[j], road_keep_mask(cams[j], p, most_relevant_first), noise)
                           for j in range(len(x))]
    reps = 2 * len(percentiles)
    neg = None if negate is None else negate.repeat(reps)
    after = _forward(model, torch.stack(copies), target, neg, batch_size, device).view(2, len(percentiles), -1)
    diff = (after - before).double().mean(dim=1).numpy()
    lerf, morf = diff[0], diff[1]
    return {"road_morf": morf, "road_lerf": lerf, "road_combined": (lerf - morf) / 2}


def faithfulness_scores(model: torch.nn.Module, images_uint8: np.ndarray, maps: np.ndarray, *, steps: int = 16,
                        batch_size: int = 64, device: str | torch.device = "cpu", target: str | int = "pneumonia",
                        deletion_baseline: str = "zeros", road: bool = True,
                        road_percentiles: Sequence[int] = ROAD_PERCENTILES, seed: int = 0,
                        endpoints: dict[str, torch.Tensor] | None = None) -> pd.DataFrame:
    """Deletion / insertion AUC and ROAD of one model on row-aligned images and maps.

    Args:
        model: classifier in eval mode, on ``device``.
        images_uint8: cached images ``[B, S, S]`` (uint8, the model's input frame).
        maps: ``[B, M, M]`` maps (any M; resized bilinearly to S x S).
        steps: deletion / insertion steps.
        batch_size: perturbed copies per forward pass.
        device: where the model runs.
        target: ``"pneumonia"``, ``"predicted"`` or an output index (see :func:`target_probability`).
        deletion_baseline: ``"zeros"`` or ``"blur"`` (see the module docstring).
        road: also compute ROAD (one sparse solve per image and percentile: the slow part).
        road_percentiles: ROAD percentiles (grad-cam's ROADCombined default).
        seed: tie-breaking of the removal order and ROAD's imputation noise.
        endpoints: :func:`endpoint_probabilities` of these images (``to_input(images_uint8)``)
            with the same model, target and deletion baseline, shared by all their maps; None
            computes them.

    Returns:
        One row per image: ``p_original``, ``deletion_auc``, ``insertion_auc`` and, with
        ``road``, ``road_morf``, ``road_lerf``, ``road_combined``.
    """
    from ..training.transforms import to_input

    images_uint8 = np.asarray(images_uint8)
    x = to_input(np.array(images_uint8))
    size = x.shape[-2:]
    m = torch.as_tensor(np.asarray(maps, dtype=np.float32))
    if len(m) != len(x):
        raise ValueError(f"faithfulness_scores: {len(x)} images but {len(m)} maps (row-aligned)")
    if tuple(m.shape[-2:]) != tuple(size):
        m = F.interpolate(m[:, None], size=tuple(size), mode="bilinear", align_corners=False)[:, 0]
    if endpoints is None:  # the map-independent copies of these images, shared by curves and ROAD
        endpoints = endpoint_probabilities(model, x, batch_size=batch_size, device=device, target=target,
                                           deletion_baseline=deletion_baseline)
    curves = perturbation_curves(model, x, m, steps=steps, batch_size=batch_size, device=device, target=target,
                                 deletion_baseline=deletion_baseline, seed=seed, endpoints=endpoints)
    out = {"p_original": curves["deletion"][:, 0],
           "deletion_auc": trapezoid_auc(curves["deletion"], curves["fractions"]),
           "insertion_auc": trapezoid_auc(curves["insertion"], curves["fractions"])}
    if road:
        out.update(road_scores(model, x, m, percentiles=road_percentiles, batch_size=batch_size, device=device,
                               target=target, seed=seed, endpoints=endpoints))
    return pd.DataFrame(out)


def random_maps(n: int, size: int, seed: int = 0) -> np.ndarray:
    """Uniform-noise maps ``[n, size, size]`` in [0, 1): the baseline that knows nothing."""
    return np.random.default_rng(seed).random((n, size, size), dtype=np.float32)


@dataclass
class FaithfulnessReport:
    """``summary``: one row per model x method x metric (mean, patient-bootstrap 95% CI, and the
    paired difference to the random maps of the same model); ``per_image``: one row per model x
    method x image with every score."""

    summary: pd.DataFrame
    per_image: pd.DataFrame

    def save(self, folder: str | Path) -> list[Path]:
        """``faithfulness.csv`` (summary) and ``faithfulness_per_image.csv`` in ``folder``."""
        from ..storage import save_table

        return [save_table(Path(folder) / "faithfulness.csv", self.summary),
                save_table(Path(folder) / "faithfulness_per_image.csv", self.per_image)]


def summarize_faithfulness(per_image: pd.DataFrame, n_boot: int = 200, seed: int = 0) -> pd.DataFrame:
    """Mean of each metric per model x method with a patient-bootstrap 95% CI
    (:func:`pneumoloc.evaluate.bootstrap.bootstrap_ci`) and, beside it, the paired difference
    to the same model's random maps on the same images (``vs_random``, same resamples:
    :func:`pneumoloc.evaluate.bootstrap.paired_bootstrap`)."""
    from ..evaluate.bootstrap import bootstrap_ci, paired_bootstrap

    rows = []
    metrics = [m for m in METRICS if m in per_image]
    for (model, method), g in per_image.groupby(["model", "method"], sort=False):
        rand = per_image[(per_image.model == model) & (per_image.method == RANDOM_METHOD)].set_index("image_id")
        for metric in metrics:
            est = bootstrap_ci(np.mean, g[metric].to_numpy(float), groups=g["patient_id"].to_numpy(),
                               n_boot=n_boot, seed=seed)
            row = {"model": model, "method": method, "metric": metric, "better": METRICS[metric], "n": len(g),
                   **est.as_dict(), **{c: g[c].iloc[0] for c in ("target_layer", "map_size", "input_size", "steps")
                                       if c in g}}
            if method != RANDOM_METHOD and not rand.empty:
                base = rand[metric].reindex(g["image_id"]).to_numpy(float)
                d = paired_bootstrap(np.mean, [g[metric].to_numpy(float)], [base], g["patient_id"].to_numpy(),
                                     n_boot=n_boot, seed=seed)
                row.update(d.as_dict("vs_random_"))
            rows.append(row)
    return pd.DataFrame(rows)


def faithfulness_table(summary: pd.DataFrame) -> pd.DataFrame:
    """Wide table: one row per model x method (random maps included), one column per metric
    holding ``value [low, high]`` and one ``<metric> - random`` holding the paired difference to
    the same model's random maps (a CI excluding 0 is a method these images tell from noise)."""
    if summary.empty:
        return pd.DataFrame(columns=["model", "method", *METRICS])
    df = summary.copy()
    keys = [k for k in ("model", "method", "target_layer", "map_size", "input_size", "n") if k in df]
    df["cell"] = [f"{v:.3f} [{lo:.3f}, {hi:.3f}]" for v, lo, hi in zip(df["value"], df["low"], df["high"])]
    cells = {"cell": lambda m: m}
    if "vs_random_value" in df:
        df["diff"] = [f"{v:+.3f} [{lo:+.3f}, {hi:+.3f}]" if np.isfinite(v) else ""
                      for v, lo, hi in zip(df["vs_random_value"], df["vs_random_low"], df["vs_random_high"])]
        cells["diff"] = lambda m: f"{m} - random"
    df[keys] = df[keys].fillna("")
    order = [m for m in METRICS if m in set(df["metric"])]
    parts = [df.pivot_table(index=keys, columns="metric", values=col, aggfunc="first", sort=False)[order]
             .rename(columns=name) for col, name in cells.items()]
    wide = pd.concat(parts, axis=1)
    columns = [name(m) for m in order for name in cells.values()]
    return wide[columns].reset_index().rename_axis(columns=None)


def _pick_images(images: pd.DataFrame, ids: np.ndarray, split: str, n_images: int, positives_only: bool,
                 seed: int) -> pd.DataFrame:
    """``n_images`` images of ``split`` that have maps (positives only unless told), a seeded sample
    kept in table order."""
    pool = images[(images["split"] == split) & images["image_id"].astype(str).isin(set(ids))]
    if positives_only and "label" in pool:
        pool = pool[pool["label"] == 1]
    take = np.sort(np.random.default_rng(seed).choice(len(pool), min(n_images, len(pool)), replace=False))
    return pool.iloc[take]


def _map_target(meta: dict) -> str | int:
    """What the stored maps explain: a finding's maps (``target="findings"``) their output index."""
    target = meta.get("target", "pneumonia")
    return int(meta.get("target_index", 0)) if target == "findings" else target


def run_faithfulness(run, *, split: str = "test", models: Sequence[str] = (), methods: Sequence[str] = (),
                     n_images: int = 8, steps: int = 16, batch_size: int = 64, device: str = "auto",
                     deletion_baseline: str = "zeros", road: bool = True,
                     road_percentiles: Sequence[int] = ROAD_PERCENTILES, positives_only: bool = True,
                     n_boot: int = 200, seed: int = 0, progress: bool = True) -> FaithfulnessReport:
    """Faithfulness of every stored model x method of ``run`` (``models``/``methods`` empty = all),
    plus each model's random maps (method ``"random"``, seeded, the stored map size).

    Every model scores the same ``n_images`` images of ``split`` (a seeded sample; with
    ``positives_only`` the pneumonia images, since a map of P(pneumonia) on a normal image has
    no evidence to delete). Models load from the checkpoint the maps were made with
    (``weights_only=True``), images from the run's cache at the model's input size.
    See :func:`faithfulness_scores` for the other arguments.
    """
    from tqdm.auto import tqdm

    from ..data.cache import cached_images
    from ..data.tables import load_tables
    from ..environment import pick_device
    from ..models.checkpoints import load_model
    from ..training.transforms import to_input
    from .stored import load_maps, model_input_size, select_maps

    listing = select_maps(run, models, methods)
    images, dev = load_tables(run).images, pick_device(device)
    kw = dict(steps=steps, batch_size=batch_size, device=dev, deletion_baseline=deletion_baseline, road=road,
              road_percentiles=road_percentiles, seed=seed)
    parts = []
    for model_name, rows in tqdm(listing.groupby("model", sort=False), desc="faithfulness", disable=not progress):
        sets = {m: load_maps(run, model_name, m) for m in rows["method"]}
        first = next(iter(sets.values()))
        chosen = _pick_images(images, first.image_ids, split, n_images, positives_only, seed)
        if chosen.empty:
            warnings.warn(f"faithfulness: {model_name} has no {'positive ' if positives_only else ''}image of split "
                          f"{split!r} with stored maps; skipped (positives_only=False scores every image)", stacklevel=2)
            continue
        ids = chosen["image_id"].astype(str).to_numpy()
        model = load_model(run.model_dir(model_name) / Path(first.meta.get("checkpoint") or "best.pt").name,
                           device=str(dev)).to(memory_format=torch.channels_last)  # as explain's models: faster convolutions
        size = int(first.meta.get("input_size") or model_input_size(model))
        pixels = np.array(cached_images(chosen, size, progress=False))
        x, ends = to_input(pixels.copy()), {}  # map-independent copies: once per target, shared by the maps
        sets[RANDOM_METHOD] = None
        for method, ms in sets.items():
            # the random maps explain what the model's first stored maps explain
            maps = random_maps(len(ids), first.map_size, seed) if ms is None else ms.take(ids)
            target = _map_target(first.meta if ms is None else ms.meta)
            if target not in ends:
                ends[target] = endpoint_probabilities(model, x, batch_size=batch_size, device=dev, target=target,
                                                      deletion_baseline=deletion_baseline)
            df = faithfulness_scores(model, pixels, maps, target=target, endpoints=ends[target], **kw)
            parts.append(df.assign(model=model_name, method=method, image_id=ids,
                                   patient_id=chosen["patient_id"].astype(str).to_numpy(),
                                   label=chosen.get("label", pd.Series(np.nan, index=chosen.index)).to_numpy(),
                                   map_size=first.map_size, input_size=size,
                                   target_layer="" if ms is None else ms.meta.get("target_layer", ""), steps=steps))
    if not parts:
        return FaithfulnessReport(pd.DataFrame(columns=["model", "method", "metric", "value", "low", "high"]),
                                  pd.DataFrame(columns=["model", "method", "image_id", "patient_id"]))
    per_image = pd.concat(parts, ignore_index=True)
    lead = ["model", "method", "image_id", "patient_id", "label"]
    per_image = per_image[lead + [c for c in per_image if c not in lead]]
    return FaithfulnessReport(summarize_faithfulness(per_image, n_boot, seed), per_image)
