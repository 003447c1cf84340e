"""Train a tiny model on two gloo ranks for long enough to be killed from outside.

Run by ``tests/test_training_distributed.py::test_killing_one_rank_fails_the_stage_naming_it`` as
its own process (``python tests/distributed_driver.py IMAGES_CSV CACHE_DIR OUT_DIR``): the test
kills one rank and expects this process to exit 1 with the launcher's message on stderr.
"""
from __future__ import annotations

import sys

import pandas as pd

from pneumoloc.training.batches import prepare_data
from pneumoloc.training.config import TrainConfig
from pneumoloc.training.distributed import DistributedTrainingError, train_on_devices


def main(images_csv: str, cache_dir: str, out_dir: str) -> int:
    cfg = TrainConfig.from_dict(dict(backbone="test_resnet", image_size=32, epochs=500, patience=500,
                                     batch_size=8, eval_batch_size=8, device="cpu"))
    data = prepare_data(pd.read_csv(images_csv), cfg, cache_dir=cache_dir, progress=False)
    try:
        train_on_devices(cfg, data, out_dir, devices=2, progress=False)
    except DistributedTrainingError as e:
        print(f"driver: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:4]))
