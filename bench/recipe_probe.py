"""Recipe probe: train one backbone on a run's split under recipe variants, print what it learned.

Notebook 02's text on the demo recipe cites these runs (the demo's split, written by notebook 01):
each line is one training from scratch with the variant's settings on top of the base recipe, and
prints validation and test ROC-AUC (scikit-learn), the best epoch, the validation curve and the
wall time. Nothing is written into the run: the model goes to a temporary folder.

Run, e.g. (the demo's split after ``make demo`` or ``pneumoloc run papermill_runs/demo.yaml --only 01``):
  OMP_NUM_THREADS=1 .venv/bin/python bench/recipe_probe.py papermill_runs/demo mobilenet_v3 \\
      --variant augment=true --variant augment=false
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch
from sklearn.metrics import roc_auc_score

from pneumoloc.data.tables import load_tables
from pneumoloc.environment import RunPaths
from pneumoloc.training.batches import predictions_table, prepare_data
from pneumoloc.training.config import TrainConfig
from pneumoloc.training.distributed import train_on_devices

# The demo's recipe (papermill_runs/demo.yaml, the 02 entry).
BASE = {"image_size": 96, "epochs": 7, "batch_size": 16, "max_train_images": 0, "lr": 0.003, "optimizer": "adamw",
        "scheduler": "cosine", "loss": "bce", "sampler": "none", "augment": False, "patience": 7}


def _settings(items: str) -> dict:
    """``"lr=0.01,augment=false"`` -> ``{"lr": 0.01, "augment": False}`` (values parsed as JSON when they are)."""
    out = {}
    for item in filter(None, items.split(",")):
        key, _, value = item.partition("=")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def probe(run_dir: str, backbone: str, settings: dict) -> dict:
    """Train once under ``BASE`` updated by ``settings``; the scores and curve of that training."""
    cfg = TrainConfig.from_dict({**BASE, **settings, "backbone": backbone})
    tables = load_tables(RunPaths.from_params(run_dir))
    data = prepare_data(tables.images, cfg, findings=tables.findings)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="recipe_probe_") as out:
        result = train_on_devices(cfg, data, Path(out), progress=False)
        seconds = time.perf_counter() - start
        pred = predictions_table(result.model, data, device=result.device, batch_size=64)
    auc = {s: roc_auc_score(g.label, g.prob) for s, g in pred.groupby("split") if s in ("val", "test")}
    return {"backbone": backbone, **settings, "val_roc_auc": round(auc["val"], 3), "test_roc_auc": round(auc["test"], 3),
            "best_epoch": result.best_epoch, "val_curve": [round(v, 3) for v in result.history["val_roc_auc"]],
            "seconds": round(seconds)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run_dir")
    ap.add_argument("backbone")
    ap.add_argument("--variant", action="append", default=[],
                    help="comma-separated key=value settings on top of the demo recipe; repeat for more runs")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    for variant in args.variant or [""]:
        print(json.dumps(probe(args.run_dir, args.backbone, _settings(variant))), flush=True)


if __name__ == "__main__":
    main()
