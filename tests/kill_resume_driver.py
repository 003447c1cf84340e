"""Kill a tiny training with SIGKILL at many instants, resume each, compare with an uninterrupted run.

Run by ``tests/test_training_loop.py::test_kill_9_then_resume_equals_uninterrupted_run`` as its own
process (``python tests/kill_resume_driver.py WORKDIR TRIALS SEED``); it prints one JSON line.

The driver imports torch once, prepares the data and trains the uninterrupted reference
in-process, then ``fork``s a child per training (fast: no interpreter start or first-run
warm-up per trial; safe: one intra-op thread, so no thread pool is forked). Some trials kill
at an exact write instant: the child sends itself SIGKILL just after the rename of its j-th
atomic write (for every j: each state the run folder passes through), or just before the
fsync or the rename of a drawn write (temp file on disk). The rest are killed by the parent
at a uniformly drawn time over the whole run, some twice (the resumed run is killed again).
Every interrupted run is then resumed in a
fresh child to the end; its history (losses, AUCs, learning rates), ``history.csv`` and the
weights in ``best.pt`` and ``last.pt`` must equal the uninterrupted run's bit for bit.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import sys
import time
from pathlib import Path

import numpy as np

COLS = ["epoch", "train_loss", "val_loss", "val_roc_auc", "lr"]  # timing columns differ run to run
RECIPE = dict(backbone="test_resnet", image_size=32, epochs=5, batch_size=8, eval_batch_size=8,
              scheduler="cosine", sampler="weighted", lr=3e-3, patience=2)


def make_images(folder: Path):
    """28 images; val labels carry little signal, so val AUC rises and falls (best.pt moves)."""
    import pandas as pd
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng, rows = np.random.default_rng(2), []
    for i in range(28):
        label, img = i % 2, rng.normal(100, 30, (40, 48))
        split = "train" if i < 12 else "val" if i < 26 else "test"
        if (label if split == "train" else rng.random() < 0.5):
            img[8:24, 10:26] += 40
        Image.fromarray(img.clip(0, 255).astype(np.uint8)).save(folder / f"{i}.png")
        rows.append({"image_id": f"im{i}", "patient_id": f"p{i // 2}", "path": str(folder / f"{i}.png"),
                     "label": label, "width": 48, "height": 40, "split": split})
    return pd.DataFrame(rows)


def _self_kill_at(write: int, phase: str) -> None:
    """Make this process SIGKILL itself at ``phase`` of its ``write``-th atomic write."""
    real_fsync, real_replace, seen = os.fsync, os.replace, {"fsync": 0, "replace": 0}

    def fsync(fd):
        seen["fsync"] += 1
        if phase == "fsync" and seen["fsync"] == write:
            os.kill(os.getpid(), signal.SIGKILL)
        return real_fsync(fd)

    def replace(src, dst):
        seen["replace"] += 1
        if phase == "rename" and seen["replace"] == write:
            os.kill(os.getpid(), signal.SIGKILL)
        real_replace(src, dst)
        if phase == "after" and seen["replace"] == write:
            os.kill(os.getpid(), signal.SIGKILL)
    os.fsync, os.replace = fsync, replace


def _child(fn) -> int:
    """Fork; the child runs ``fn`` and exits 0 (1 with the error on stderr), never returning."""
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            fn()
        except BaseException as e:  # report, then leave without running the parent's cleanups
            print(f"child {os.getpid()}: {type(e).__name__}: {e}", file=sys.stderr)
            code = 1
        os._exit(code)
    return pid


def _wait(pid: int) -> int:
    return os.waitpid(pid, 0)[1]


def _summary(res) -> dict:
    return {"history": res.history[COLS].to_numpy().tolist(), "best_epoch": res.best_epoch, "stopped": res.stopped}


def _train(cfg, data, out: Path, resume: bool, result: Path | None = None):
    from pneumoloc.training.loop import train

    def run():
        res = train(cfg, data, out, resume=resume, progress=False)
        if result is not None:
            result.write_text(json.dumps(_summary(res)))
    return run


def _reference(cfg, data, out: Path) -> tuple[dict, dict]:
    """The uninterrupted run, in this process (it also warms up what every forked child reuses)."""
    from pneumoloc.training.loop import train

    replace, writes, t0 = os.replace, [], time.perf_counter()

    def logged(src, dst):
        replace(src, dst)
        writes.append([round(time.perf_counter() - t0, 4), Path(dst).name])
    os.replace = logged
    try:
        res = train(cfg, data, out, progress=False)
    finally:
        os.replace = replace
    return _summary(res), {"seconds": time.perf_counter() - t0, "writes": writes}


def _state_after_kill(out: Path) -> dict:
    """What a kill left on disk: temp files, and whether best.pt lags behind last.pt's record of it."""
    from pneumoloc.models.checkpoints import load_checkpoint

    tmp = sorted(p.name for p in out.glob(".*.tmp")) if out.exists() else []
    state = {"temp_files": len(tmp), "best_lags": False, "last_epoch": None}
    try:
        last = load_checkpoint(out / "last.pt")
        state["last_epoch"] = last["epoch"]
        best = load_checkpoint(out / "best.pt") if (out / "best.pt").exists() else {}
        state["best_lags"] = best.get("epoch") != last["train_state"]["best_epoch"]
    except Exception:  # no last.pt yet
        pass
    return state


def _weights(path: Path) -> dict:
    from pneumoloc.models.checkpoints import load_checkpoint

    return load_checkpoint(path)["model_state"]


def _same_weights(a: dict, b: dict) -> bool:
    import torch

    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _history_csv(out: Path) -> list:
    import pandas as pd

    return pd.read_csv(out / "history.csv")[COLS].to_numpy().tolist()


def _plan(rng, n: int, writes: int, seconds: float) -> list[dict]:
    """Kill instants: just after every write (each state the folder passes through), just before
    the fsync and the rename of two drawn writes (temp files left), the rest drawn uniformly
    over the run (every third of them killed again while resuming); at least 5 drawn times."""
    plans = [{"kind": "write", "write": j, "phase": "after"} for j in range(1, writes + 1)]
    plans += [{"kind": "write", "write": int(j), "phase": phase}
              for j, phase in zip(rng.choice(np.arange(1, writes + 1), 2, replace=False), ["fsync", "rename"])]
    for i in range(max(5, n - len(plans))):
        plans.append({"kind": "timed", "times": rng.uniform(0, seconds, size=1 + int(i % 3 == 2)).round(4).tolist()})
    return plans


def _run_trial(cfg, data, out: Path, plan: dict) -> dict:
    """Interrupt as planned, resume to the end; what it left on disk after each kill and the result."""
    after_kills = []
    if plan["kind"] == "write":
        train = _train(cfg, data, out, resume=False)
        _wait(_child(lambda: (_self_kill_at(plan["write"], plan["phase"]), train())))
        after_kills.append(_state_after_kill(out))
    else:
        for k, delay in enumerate(plan["times"]):
            pid = _child(_train(cfg, data, out, resume=k > 0))
            time.sleep(delay)
            os.kill(pid, signal.SIGKILL)  # a child that already finished is a zombie: the kill is a no-op
            _wait(pid)
            after_kills.append(_state_after_kill(out))
    result = out.parent / f"{out.name}.json"
    status = _wait(_child(_train(cfg, data, out, resume=True, result=result)))
    return {"after_kills": after_kills, "status": status,
            "result": json.loads(result.read_text()) if status == 0 else None}


def main(workdir: str, trials: int, seed: int) -> dict:
    import torch

    torch.set_num_threads(1)
    from pneumoloc.training.config import TrainConfig
    from pneumoloc.training.batches import prepare_data

    work = Path(workdir)
    cfg = TrainConfig.from_dict(RECIPE)
    data = prepare_data(make_images(work / "images"), cfg, cache_dir=work / "cache", progress=False)
    ref = work / "reference"
    _reference(cfg, data, work / "warm-up")
    reference, timeline = _reference(cfg, data, ref)
    best, last, history = _weights(ref / "best.pt"), _weights(ref / "last.pt"), _history_csv(ref)
    rng, report = np.random.default_rng(seed), []
    for i, plan in enumerate(_plan(rng, trials, len(timeline["writes"]), timeline["seconds"])):
        out = work / f"trial{i}"
        got = _run_trial(cfg, data, out, plan)
        res = got["result"] or {}
        checks = {"resumed": got["status"] == 0,
                  "history": res.get("history") == reference["history"],
                  "best_epoch": res.get("best_epoch") == reference["best_epoch"],
                  "history_csv": got["status"] == 0 and _history_csv(out) == history,
                  "best_weights": got["status"] == 0 and _same_weights(_weights(out / "best.pt"), best),
                  "last_weights": got["status"] == 0 and _same_weights(_weights(out / "last.pt"), last),
                  "no_temp_files": not list(out.glob(".*.tmp"))}
        report.append({"trial": i, "plan": plan, "after_kills": got["after_kills"], "checks": checks,
                       "equal": all(checks.values())})
        shutil.rmtree(out, ignore_errors=True)
    return {"reference": {**reference, **timeline}, "trials": report}


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))))
