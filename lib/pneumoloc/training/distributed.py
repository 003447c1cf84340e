"""One backbone trained on several devices or nodes with ``torch.distributed`` (torchrun semantics).

:func:`train_on_devices` is what notebook 02 and ``pneumoloc train`` call: with ``devices=1,
nodes=1`` it is :func:`pneumoloc.training.loop.train`; otherwise it starts ``devices`` processes
on this node (``torch.multiprocessing`` spawn, ``env://`` rendezvous as torchrun sets it up:
``MASTER_ADDR``, ``MASTER_PORT``, ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``), one per GPU with
``nccl``, or sharing the CPU cores with ``gloo``, and each runs the same loop with:

- the same epoch order on every rank (weighted sampling included: drawn from ``(seed, epoch)``),
  of which each rank takes a strided shard of every global batch
  (:func:`pneumoloc.training.batches.rank_positions`): ``batch_size`` stays the global batch,
  each rank takes ``batch_size / ranks`` images per step;
- each image augmented from its own key (seed, epoch, position in the epoch), so a batch is
  augmented as one process would;
- BatchNorm statistics over the global batch (:func:`sync_batchnorm`): with each rank
  normalising its shard alone, N ranks would train another model than one process (a smaller
  batch's noisier statistics); synchronising costs two small all-reduces per BatchNorm layer
  and keeps a run's result independent of how many devices trained it. (``torch.nn.SyncBatchNorm``
  runs on GPUs only and drops the activation of timm's BatchNormAct layers, hence our own.)
- each image's ``nn.Dropout`` masks drawn from its key too (:mod:`pneumoloc.training.keyed_dropout`);
- gradients all-reduced by ``DistributedDataParallel``;
- only rank 0 writing ``last.pt``, ``best.pt`` and ``history.csv``. The caller (notebook 02,
  ``pneumoloc train``) is the parent process and writes everything else.

Failures: when a rank dies or raises, the others are stopped and :class:`DistributedTrainingError`
names every failed rank with its signal or error; a rank stuck in a collective raises after
``timeout_s`` (the process group's timeout). A launcher that dies (a killed notebook kernel, a
preempted job) takes its ranks with it: torch's spawn sets ``PR_SET_PDEATHSIG`` in every rank, so
no orphan keeps writing into the model folder while a requeued job resumes from ``last.pt``
(checked by hand: after a SIGKILL of the launcher both ranks were gone within the 20 s watched).

Several nodes: run the same command once per node (e.g. ``srun --ntasks-per-node=1 pneumoloc
train ... --nodes 2 --devices 4``) with ``MASTER_ADDR``/``MASTER_PORT`` set and ``NODE_RANK`` or
Slurm's ``SLURM_NODEID``; node 0's rank 0 writes, so the model folder must be on a shared
filesystem.
"""
from __future__ import annotations

import os
import socket
import types
from datetime import timedelta
from pathlib import Path
from typing import Mapping

import torch
import torch.distributed as dist

from .batches import TrainData
from .config import TrainConfig
from .loop import SingleProcess, TrainResult, train

__all__ = ["DistributedTrainingError", "ProcessGroupRanks", "all_reduce", "rendezvous", "sync_batchnorm",
           "train_on_devices", "train_in_run"]


class DistributedTrainingError(RuntimeError):
    """A rank of a multi-process training failed; the message names the rank(s)."""


def rendezvous(nodes: int, environ: Mapping[str, str]) -> tuple[str, int | None, int]:
    """``(master address, port or None to pick a free one, node rank)`` for ``nodes`` nodes.

    Raises:
        ValueError: ``nodes > 1`` without ``MASTER_ADDR``, ``MASTER_PORT`` and a node rank.
    """
    if nodes == 1:
        return "127.0.0.1", None, 0
    node_rank = environ.get("NODE_RANK", environ.get("GROUP_RANK", environ.get("SLURM_NODEID")))
    if not environ.get("MASTER_ADDR") or not environ.get("MASTER_PORT") or node_rank is None:
        raise ValueError(
            f"nodes={nodes} needs MASTER_ADDR, MASTER_PORT and NODE_RANK (torchrun's names) or SLURM_NODEID "
            f"in the environment of every node; start the same command once per node, e.g. "
            f"srun --ntasks-per-node=1 pneumoloc train ... --nodes {nodes}, or use nodes=1")
    return environ["MASTER_ADDR"], int(environ["MASTER_PORT"]), int(node_rank)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- BatchNorm over the global batch ------------------------------------------------------
class _AllReduceSum(torch.autograd.Function):
    """Sum over the ranks whose backward sums the gradients over the ranks (the sum's adjoint)."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor, group) -> torch.Tensor:
        ctx.group = group
        out = tensor.clone()
        dist.all_reduce(out, group=group)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        grad = grad.clone()
        dist.all_reduce(grad, group=ctx.group)
        return grad, None


def all_reduce(tensor: torch.Tensor, group=None) -> torch.Tensor:
    """Differentiable sum of ``tensor`` over the ranks of ``group``."""
    return _AllReduceSum.apply(tensor, group)


def _global_batch_norm(bn: torch.nn.modules.batchnorm._BatchNorm, x: torch.Tensor, group) -> torch.Tensor:
    """BatchNorm of ``x`` with the mean and biased variance of every rank's batch (two-pass).

    The all-reduces are differentiable: their backward sums the gradients of the statistics
    over the ranks, as the global batch's backward would.
    """
    dims = [0, *range(2, x.dim())]
    shape = [1, -1] + [1] * (x.dim() - 2)
    xf = x.float()
    count = torch.tensor([xf.numel() / xf.shape[1]], dtype=xf.dtype, device=xf.device)
    sums = all_reduce(torch.cat([xf.sum(dims), count]), group=group)
    n = sums[-1]
    mean = sums[:-1] / n
    centered = xf - mean.view(shape)
    var = all_reduce((centered * centered).sum(dims), group=group) / n
    y = centered * torch.rsqrt(var + bn.eps).view(shape)
    if bn.affine:
        y = y * bn.weight.view(shape) + bn.bias.view(shape)
    if bn.track_running_stats:
        with torch.no_grad():
            bn.num_batches_tracked.add_(1)
            m = bn.momentum if bn.momentum is not None else 1.0 / float(bn.num_batches_tracked)
            bn.running_mean.mul_(1 - m).add_(mean.detach(), alpha=m)
            bn.running_var.mul_(1 - m).add_(var.detach() * (n / (n - 1)), alpha=m)  # unbiased, as torch
    return y.to(x.dtype)


def _synced_forward(bn, x: torch.Tensor, group, plain) -> torch.Tensor:
    if not bn.training:
        return plain(x)
    y = _global_batch_norm(bn, x, group)
    for after in ("drop", "act"):  # timm's BatchNormAct2d: norm, then dropout, then activation
        if hasattr(bn, after):
            y = getattr(bn, after)(y)
    return y


def sync_batchnorm(model: torch.nn.Module, group=None) -> int:
    """Make every BatchNorm layer of ``model`` normalise with the global batch's statistics.

    The layers keep their class and parameters (a checkpoint loads into the plain model); in
    eval mode they use their running statistics as before. Returns the number of layers.
    """
    layers = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    for bn in layers:
        plain = bn.forward
        bn.forward = types.MethodType(lambda self, x, _p=plain: _synced_forward(self, x, group, _p), bn)
    return len(layers)


class ProcessGroupRanks(SingleProcess):
    """This process's place in an initialised process group, for :func:`pneumoloc.training.loop.train`."""

    def __init__(self, rank: int, world: int, device: torch.device, batchnorm_group=None,
                 synced_batchnorm: bool = True):
        self.rank, self.world, self._device = rank, world, device
        self.bn_group, self.synced_batchnorm = batchnorm_group, synced_batchnorm

    def device(self, cfg: TrainConfig) -> torch.device:
        return self._device

    def wrap(self, model: torch.nn.Module) -> torch.nn.Module:
        from torch.nn.parallel import DistributedDataParallel

        if self.synced_batchnorm:
            sync_batchnorm(model, self.bn_group)
        ids = [self._device.index] if self._device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=ids)

    def sum(self, value: float) -> float:
        t = torch.tensor([value], dtype=torch.float64, device=self._device)
        dist.all_reduce(t)
        return float(t.item())

    def barrier(self) -> None:
        dist.barrier()


def _worker(local_rank: int, cfg: TrainConfig, data: TrainData, out_dir: str, resume: bool, progress: bool,
            devices: int, nodes: int, node_rank: int, addr: str, port: int, backend: str,
            timeout_s: float, synced_batchnorm: bool) -> None:
    rank, world = node_rank * devices + local_rank, devices * nodes
    os.environ.update(MASTER_ADDR=addr, MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(local_rank))
    if backend == "nccl":
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
    else:
        device = torch.device("cpu")
        cores = int(os.environ.get("OMP_NUM_THREADS") or os.cpu_count() or 1)  # a local executor's share
        torch.set_num_threads(max(1, cores // devices))  # the ranks split the cores, never oversubscribe
    dist.init_process_group(backend, init_method="env://", rank=rank, world_size=world,
                            timeout=timedelta(seconds=timeout_s))
    try:
        ranks = ProcessGroupRanks(rank, world, device, dist.new_group(backend=backend), synced_batchnorm)
        train(cfg, data, out_dir, resume=resume, progress=progress and rank == 0, ranks=ranks)
    finally:
        dist.destroy_process_group()


def _failures(ctx, error: Exception, node_rank: int, devices: int, world: int) -> str:
    """One line per failed rank: its signal, exit code or raised error."""
    import signal

    raised = getattr(error, "error_index", None), str(error).strip().splitlines()
    lines = []
    for i, p in enumerate(ctx.processes):
        rank = node_rank * devices + i
        if i == raised[0] and isinstance(error, torch.multiprocessing.ProcessRaisedException):
            lines.append(f"rank {rank} of {world} raised: {raised[1][-1] if raised[1] else error}")
        elif p.exitcode is not None and p.exitcode < 0:
            lines.append(f"rank {rank} of {world} died from {signal.Signals(-p.exitcode).name}")
        elif p.exitcode:
            lines.append(f"rank {rank} of {world} exited with code {p.exitcode}")
    return "; ".join(lines) or str(error)


def _result(out_dir: Path, epoch_before: int | None, device: str) -> TrainResult:
    """What rank 0 wrote, read back as :func:`train` returns it."""
    import pandas as pd

    from ..models.checkpoints import load_checkpoint, load_model

    state = load_checkpoint(out_dir / "last.pt")["train_state"]
    finished = "already_finished" if epoch_before is not None and epoch_before == state["epoch"] else "completed"
    return TrainResult(model=load_model(out_dir / "best.pt", device), history=pd.DataFrame(state["history"]),
                       best_epoch=state["best_epoch"], best_score=state["best_score"],
                       stopped=state["stopped"] or finished, device=device)


def train_on_devices(cfg: TrainConfig, data: TrainData, out_dir, devices: int = 1, nodes: int = 1,
                     resume: bool = False, progress: bool = True, on_epoch_end=None,
                     synced_batchnorm: bool = True, timeout_s: float = 900.0) -> TrainResult | None:
    """Train on ``devices`` processes per node on ``nodes`` nodes (module docstring).

    Args:
        cfg: the recipe; ``cfg.batch_size`` is the global batch (each rank takes its share).
        data: from :func:`pneumoloc.training.batches.prepare_data` (a cached memmap travels by name).
        out_dir: the model folder.
        devices: processes on this node: GPUs (one each) when ``cfg.device`` picks CUDA, else CPU ranks.
        nodes: nodes taking part (see :func:`rendezvous`).
        resume, progress, on_epoch_end: as for :func:`pneumoloc.training.loop.train`
            (``on_epoch_end`` only with one process).
        synced_batchnorm: BatchNorm over the global batch (module docstring); False normalises
            each rank's shard alone.
        timeout_s: how long a rank waits in a collective for the others before failing.

    Returns:
        The result as :func:`train` gives it; ``None`` on nodes other than node 0.

    Raises:
        DistributedTrainingError: a rank failed; the message names it.
        ValueError: ``devices`` or ``nodes`` below 1, more GPUs asked than present, or
            ``on_epoch_end`` with several processes.
    """
    from ..environment import pick_device
    from ..models.checkpoints import load_checkpoint

    for name, value in (("devices", devices), ("nodes", nodes)):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    if devices * nodes == 1:
        return train(cfg, data, out_dir, resume=resume, progress=progress, on_epoch_end=on_epoch_end)
    if on_epoch_end is not None:
        raise ValueError("on_epoch_end runs in one process only; use devices=1, nodes=1 or leave it None")
    cuda = pick_device(cfg.device).type == "cuda"
    if cuda and torch.cuda.device_count() < devices:
        raise ValueError(f"devices={devices} but {torch.cuda.device_count()} GPU(s) are visible; "
                         "lower devices or set CUDA_VISIBLE_DEVICES")
    addr, port, node_rank = rendezvous(nodes, os.environ)
    out_dir = Path(out_dir)
    last = out_dir / "last.pt"
    epoch_before = load_checkpoint(last)["train_state"]["epoch"] if resume and last.exists() else None
    args = (cfg, data, str(out_dir), resume, progress, devices, nodes, node_rank, addr, port or _free_port(),
            "nccl" if cuda else "gloo", timeout_s, synced_batchnorm)
    ctx = torch.multiprocessing.start_processes(_worker, args=args, nprocs=devices, join=False, start_method="spawn")
    try:
        while not ctx.join(timeout=1.0, grace_period=5.0):
            pass
    except (torch.multiprocessing.ProcessRaisedException, torch.multiprocessing.ProcessExitedException) as e:
        raise DistributedTrainingError(
            f"{cfg.backbone}: training on {devices * nodes} ranks failed: "
            f"{_failures(ctx, e, node_rank, devices, devices * nodes)}; the model folder {out_dir} keeps the "
            "last finished epoch (resume=True continues from it)") from e
    if node_rank != 0:
        return None
    return _result(out_dir, epoch_before, "cuda:0" if cuda else "cpu")


def train_in_run(run_dir: str, cfg: TrainConfig, devices: int = 1, nodes: int = 1, resume: bool = False,
                 progress: bool = True) -> tuple[TrainResult | None, Path]:
    """``pneumoloc train``: notebook 02's training alone, on the split notebook 01 stored in ``run_dir``.

    Writes ``last.pt``, ``best.pt`` and ``history.csv`` into ``<run_dir>/models/<backbone>``
    (predictions, metrics and figures stay notebook 02's). Returns the result (``None`` on nodes
    other than node 0) and the model folder.
    """
    from ..data.tables import load_tables
    from ..environment import RunPaths
    from .batches import prepare_data

    for name, value in (("devices", devices), ("nodes", nodes)):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    run = RunPaths.from_params(run_dir)
    tables = load_tables(run)
    data = prepare_data(tables.images, cfg, findings=tables.findings, progress=progress)
    out = run.model_dir(cfg.backbone)
    return train_on_devices(cfg, data, out, devices=devices, nodes=nodes, resume=resume, progress=progress), out
