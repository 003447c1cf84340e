"""Train one backbone under the identical recipe every backbone gets (notebook 02).

One :class:`~pneumoloc.training.config.TrainConfig` holds every choice, with its default written once and a
comment; overrides with unknown keys or wrong types are refused (nanoGPT's
habit), and the config travels inside each checkpoint and ``config.json``.

Data come from the uint8 image cache (:mod:`pneumoloc.training.batches`): a batch is a fancy
index into a memory map, converted and augmented as one tensor
(:mod:`pneumoloc.training.transforms`), so an epoch costs model compute, not decoding.

Reproducibility: every random draw of an epoch (sampling order, augmentation,
dropout) is seeded from ``(seed, epoch)`` alone (augmentation and ``nn.Dropout``
masks per image, from its position in the epoch: :mod:`pneumoloc.training.keyed_dropout`;
other global draws, such as timm's drop-path, per rank), and ``last.pt`` stores model,
optimizer, scheduler and early-stopping state after each finished epoch. Hence
the same seed gives the same metrics twice, and ``resume=True`` after an
interruption ends with exactly the metrics of an uninterrupted run (on the CPU;
CUDA kernels are not bitwise deterministic). A non-finite loss stops the run with
a message rather than silently training on NaNs.

Interruptions at any instant, ``kill -9`` included: each epoch writes ``last.pt``,
then ``best.pt`` (when the epoch improved), then ``history.csv``, each atomically.
``last.pt`` is never behind ``best.pt``, so a resume always has the optimizer state
of the latest finished epoch; it records the best epoch, so a resume killed after
``last.pt`` and before ``best.pt`` rewrites ``best.pt`` from ``last.pt`` (whose weights
are then the best ones), and it rewrites ``history.csv`` from the recorded history.

Preemption (SIGTERM / SIGUSR1 of a scheduler, a requeued Slurm job): nothing
needs to be caught here. A job stopped at any instant leaves ``last.pt`` of its
latest finished epoch, and the requeued job calling :func:`train` with
``resume=True`` ends with the metrics of an uninterrupted run.

Several ranks (:mod:`pneumoloc.training.distributed`): :func:`train` runs on every
rank with a :class:`SingleProcess`-like ``ranks`` object that wraps the model
(DistributedDataParallel), sums across ranks and synchronises; every rank trains on
its shard of each global batch and validates on the whole validation split (the
same weights give the same scores, so every rank takes the same early-stopping and
learning-rate decisions), and only rank 0 writes files.

Model selection follows the MIMIC-CXR study and Shahi & Bagale: the best epoch by
validation ROC-AUC (mean over findings for multi-label) is kept as ``best.pt``,
training stops after ``patience`` epochs without improvement.
"""
from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import torch

from ..evaluate.classification import roc_auc
from .batches import TrainData, epoch_order, make_batch, predict, rank_positions, sample_keys
from .config import OPTIMIZERS, SCHEDULERS, TrainConfig
from .keyed_dropout import batch_keys, key_dropout
from .losses import build_loss
from .transforms import AugmentConfig

__all__ = ["TrainResult", "SingleProcess", "train", "train_epoch"]

# -- the loop --------------------------------------------------------------------------
@dataclass
class TrainResult:
    """What :func:`train` returns: the model with its best weights loaded, and the history."""

    model: torch.nn.Module
    history: pd.DataFrame
    best_epoch: int
    best_score: float
    stopped: str  # "completed" | "early_stopping" | "already_finished"
    device: str


class SingleProcess:
    """The ranks of a one-process run: rank 0 of 1, the model as it is, sums of one term."""

    rank, world = 0, 1

    @property
    def writes(self) -> bool:
        """Whether this rank writes the run's files (rank 0 only)."""
        return self.rank == 0

    def device(self, cfg: TrainConfig) -> torch.device:
        from ..environment import pick_device

        return pick_device(cfg.device)

    def wrap(self, model: torch.nn.Module) -> torch.nn.Module:
        """The module that trains (DistributedDataParallel on several ranks)."""
        return model

    def sum(self, value: float) -> float:
        """``value`` summed over the ranks."""
        return value

    def barrier(self) -> None:
        """Wait for every rank (rank 0's files are then on disk)."""


def _seed_dropout(cfg: TrainConfig, epoch: int, rank: int) -> None:
    # dropout and other global draws; each rank draws its own masks (one process: rank 0)
    torch.manual_seed(cfg.seed * 1_000_003 + epoch + 7 + 7919 * rank)


def _score(y: np.ndarray, p: np.ndarray) -> float:
    """Validation ROC-AUC; mean over outputs that have both classes (multi-label)."""
    aucs = []
    for k in range(y.shape[1]):
        yk = y[:, k]
        yk_ok = yk[~np.isnan(yk)]
        if 0 < yk_ok.sum() < len(yk_ok):
            aucs.append(roc_auc(yk, p[:, k]))
    return float(np.mean(aucs)) if aucs else float("nan")


def train_epoch(model, data, cfg, epoch, loss_fn, opt, sched, scaler, device, progress=True,
                ranks: SingleProcess | None = None) -> tuple[float, int]:
    """One training epoch (loader, augmentation, step, NaN check, progress); returns mean loss and images seen.

    On several ranks each rank trains on its shard of every global batch of ``cfg.batch_size``;
    its loss is weighted by its share of the batch's labelled targets times the number of
    ranks, so the gradients DistributedDataParallel averages are those of the global batch's
    loss, and the returned loss is the global one.
    """
    from tqdm.auto import tqdm

    ranks = ranks or SingleProcess()
    model.train()
    _seed_dropout(cfg, epoch, ranks.rank)
    order = epoch_order(data, cfg, epoch)
    keys = sample_keys(cfg.seed, epoch, np.arange(len(order)))
    labelled = (~np.isnan(data.targets)).sum(axis=1)
    steps = list(rank_positions(len(order), cfg.batch_size, ranks.rank, ranks.world))
    cuda = device.type == "cuda"
    aug = AugmentConfig() if cfg.augment else None
    total, seen = 0.0, 0
    bar = tqdm(steps, desc=f"{cfg.backbone} epoch {epoch + 1}/{cfg.epochs}", leave=False, disable=not progress)
    for b, pos in enumerate(bar):
        batch = order[pos[0] - ranks.rank:pos[0] - ranks.rank + cfg.batch_size]  # the global batch
        rows = order[pos]
        x, y = make_batch(data, rows, device, aug, None, channels_last=cfg.channels_last, keys=keys[pos])
        with batch_keys(keys[pos][np.argsort(rows, kind="stable")]), \
                torch.autocast(device_type=device.type, dtype=torch.float16, enabled=cuda and cfg.amp):
            loss = loss_fn(model(x).float(), y)  # make_batch orders the rows as argsort does
        value = float(loss.detach())
        if not math.isfinite(value):
            raise FloatingPointError(
                f"{cfg.backbone}: the training loss is {value} at epoch {epoch + 1}, batch {b + 1}; "
                f"training stopped. Lower lr (now {cfg.lr}), check the inputs, or use loss='bce'. "
                "Checkpoints of finished epochs are kept.")
        share = float(labelled[order[pos]].sum() / max(labelled[batch].sum(), 1)) if ranks.world > 1 else 1.0
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss * (share * ranks.world) if ranks.world > 1 else loss).backward()
        scaler.step(opt)
        scaler.update()
        if cfg.scheduler == "cosine":
            sched.step()
        total, seen = total + value * share * len(batch), seen + len(batch)
        bar.set_postfix(loss=f"{total / seen:.4f}", refresh=False)
    return ranks.sum(total) / max(seen, 1), seen


def _checkpoint(path: Path, model, cfg: TrainConfig, state: dict, opt=None, sched=None, scaler=None) -> None:
    from ..models.checkpoints import save_checkpoint

    extra = {"epoch": state["epoch"] + 1, "train_config": cfg.as_dict(), "train_state": state}
    if opt is not None:
        extra.update(optimizer=opt.state_dict(), scheduler=sched.state_dict(), scaler=scaler.state_dict())
    save_checkpoint(path, model, **extra)


def _recipe(train_config: dict) -> dict:
    """What must match to resume: every option but the device (a run may move between machines)."""
    return {k: v for k, v in train_config.items() if k != "device"}


def _save_epoch(out_dir: Path, model, cfg: TrainConfig, state: dict, improved: bool, opt, sched, scaler) -> None:
    """Write the epoch's files, ``last.pt`` first: it must never be behind ``best.pt`` (module docstring)."""
    from ..storage import save_table

    _checkpoint(out_dir / "last.pt", model, cfg, state, opt, sched, scaler)
    if improved:
        _checkpoint(out_dir / "best.pt", model, cfg, state)
    save_table(out_dir / "history.csv", pd.DataFrame(state["history"]))


def _holds_best(path: Path, model, cfg: TrainConfig, state: dict) -> bool:
    """Whether ``path`` is this run's checkpoint of ``state``'s best epoch (same weights if that is the last one)."""
    from ..models.checkpoints import load_checkpoint

    try:
        best = load_checkpoint(path)
    except Exception:  # missing, corrupt or foreign: not the best checkpoint of this run
        return False
    if best.get("epoch") != state["best_epoch"] or _recipe(best.get("train_config") or {}) != _recipe(cfg.as_dict()):
        return False
    if state["best_epoch"] != state["epoch"] + 1:
        return True
    current = model.state_dict()
    return best["model_state"].keys() == current.keys() and all(
        torch.equal(v, current[k].detach().cpu()) for k, v in best["model_state"].items())


def _repair_after_resume(out_dir: Path, model, cfg: TrainConfig, state: dict) -> None:
    """Bring ``best.pt`` and ``history.csv`` up to the resumed ``last.pt`` (a kill may fall between them).

    Raises:
        CorruptFileError: ``best.pt`` of an earlier epoch is missing or damaged; its weights are lost.
    """
    from ..storage import CorruptFileError, save_table

    best = out_dir / "best.pt"
    if state["best_epoch"] >= 1 and not _holds_best(best, model, cfg, state):
        if state["best_epoch"] != state["epoch"] + 1:
            raise CorruptFileError(
                f"{best} should hold epoch {state['best_epoch']} (the best so far, recorded in last.pt) but is "
                f"missing, damaged or from another run, and last.pt holds epoch {state['epoch'] + 1}: the best "
                "weights are lost; train again with resume=False (or into a new folder)")
        _checkpoint(best, model, cfg, state)  # last.pt's weights are the best ones
    if state["history"]:
        save_table(out_dir / "history.csv", pd.DataFrame(state["history"]))


def train(cfg: TrainConfig, data: TrainData, out_dir, resume: bool = False, progress: bool = True,
          on_epoch_end: Callable[[int, dict], None] | None = None,
          ranks: SingleProcess | None = None) -> TrainResult:
    """Train, validate each epoch, keep ``best.pt`` and ``last.pt`` and ``history.csv`` in ``out_dir``.

    Args:
        cfg: the recipe.
        data: from :func:`prepare_data`; needs train and val rows.
        out_dir: the model folder (``run.model_dir(backbone)``).
        resume: continue from the last good checkpoint in ``out_dir`` (same config required).
        progress: tqdm bars.
        on_epoch_end: called as ``f(epoch, history_row)`` after the epoch's checkpoints are written.
        ranks: this process's place among several (:mod:`pneumoloc.training.distributed`);
            default one process.
    """
    from ..models.backbones import build_model
    from ..models.checkpoints import latest_good_checkpoint, load_checkpoint
    from ..storage import clean_stale_temps

    ranks = ranks or SingleProcess()
    out_dir = Path(out_dir)
    if ranks.writes:
        clean_stale_temps(out_dir)  # temp files of a killed run
    ranks.barrier()
    device = ranks.device(cfg)
    train_rows, val_rows = data.indices("train"), data.indices("val")
    if len(train_rows) < 2 or len(val_rows) < 1:
        raise ValueError(f"need >= 2 train and >= 1 val images, got {len(train_rows)} and {len(val_rows)}")
    torch.manual_seed(cfg.seed)
    model = build_model(cfg.backbone, head=cfg.head, num_outputs=len(data.outputs), in_chans=1,
                        pretrained=cfg.pretrained, weights=cfg.weights or None,
                        image_size=cfg.image_size, **cfg.head_options).to(device)
    if cfg.channels_last:  # measured per backbone in the TrainConfig comment; ViT is unaffected
        model = model.to(memory_format=torch.channels_last)
    key_dropout(model)  # each image's dropout mask from its key, whatever its batch or rank
    net = ranks.wrap(model)  # trains; `model` (the same weights) predicts and is saved
    loss_fn = build_loss(cfg.loss, targets=data.targets[train_rows], gamma=cfg.focal_gamma,
                         alpha=cfg.focal_alpha, num_outputs=len(data.outputs)).to(device)
    opt = OPTIMIZERS[cfg.optimizer](model.parameters(), cfg)
    steps = max(1, sum(1 for _ in rank_positions(len(train_rows), cfg.batch_size, 0, ranks.world)))
    sched = SCHEDULERS[cfg.scheduler](opt, cfg, steps)
    scaler = torch.amp.GradScaler("cuda", enabled=device.type == "cuda" and cfg.amp)
    state = {"epoch": -1, "best_score": -math.inf, "best_epoch": -1, "bad_epochs": 0, "history": [],
             "stopped": ""}
    # last.pt is never behind best.pt and alone holds the optimizer state: best.pt only if last.pt fails
    last = (latest_good_checkpoint([out_dir / "last.pt"]) or latest_good_checkpoint([out_dir / "best.pt"])
            if resume else None)
    if last is not None:
        ck = load_checkpoint(last)
        diff = sorted(k for k, v in _recipe(ck["train_config"]).items() if cfg.as_dict().get(k) != v)
        if diff:
            raise ValueError(f"resume=True but {last} was trained with different options {diff}; "
                             "use the same parameters or resume=False (or a new run_dir)")
        model.load_state_dict(ck["model_state"])
        if "optimizer" in ck:
            opt.load_state_dict(ck["optimizer"])
            sched.load_state_dict(ck["scheduler"])
            scaler.load_state_dict(ck["scaler"])
        else:  # last.pt was damaged: best.pt keeps weights and history but no optimizer state
            warnings.warn(f"resuming from {last.name} without optimizer state (last.pt failed its check); "
                          "the result will differ from an uninterrupted run")
        state = ck["train_state"]
        if ranks.writes:
            _repair_after_resume(out_dir, model, cfg, state)
        if state["epoch"] + 1 < cfg.epochs and state["stopped"] == "" and ranks.writes:
            print(f"resuming {cfg.backbone} after epoch {state['epoch'] + 1} from {last}")
    y_val = data.targets[val_rows]
    ran = 0
    for epoch in range(state["epoch"] + 1, cfg.epochs if not state["stopped"] else 0):
        t0 = time.perf_counter()
        train_loss, seen = train_epoch(net, data, cfg, epoch, loss_fn, opt, sched, scaler, device, progress, ranks)
        seconds = time.perf_counter() - t0
        p_val, val_loss = predict(model, data, val_rows, cfg.eval_batch_size, device, loss_fn)
        score = _score(y_val, p_val)
        monitored = score if math.isfinite(score) else -val_loss  # one-class val: fall back to loss
        row = {"epoch": epoch + 1, "train_loss": train_loss, "val_loss": val_loss, "val_roc_auc": score,
               "lr": opt.param_groups[0]["lr"], "train_seconds": seconds, "train_images_per_s": seen / seconds}
        if cfg.scheduler == "plateau":
            sched.step(monitored)
        improved = monitored > state["best_score"]
        state.update(epoch=epoch, history=state["history"] + [row], bad_epochs=0 if improved else state["bad_epochs"] + 1)
        if improved:
            state.update(best_score=monitored, best_epoch=epoch + 1)
        if state["bad_epochs"] >= cfg.patience:
            state["stopped"] = "early_stopping"
        if ranks.writes:
            _save_epoch(out_dir, model, cfg, state, improved, opt, sched, scaler)
        ran += 1
        if on_epoch_end is not None and ranks.writes:
            on_epoch_end(epoch, row)
        if state["stopped"]:
            break
    stopped = state["stopped"] or ("completed" if ran or last is None else "already_finished")
    ranks.barrier()  # rank 0 has written best.pt
    model.load_state_dict(load_checkpoint(out_dir / "best.pt")["model_state"])
    model.eval()
    return TrainResult(model=model, history=pd.DataFrame(state["history"]), best_epoch=state["best_epoch"],
                       best_score=state["best_score"], stopped=stopped, device=str(device))
