"""Efficiency: hand-counted parameters, a sane latency record, a hand-worked frontier."""
import numpy as np
import pytest
import torch
from torch import nn

from pneumoloc.ensembles.efficiency import count_parameters, efficiency_table, measure_latency, pareto_front
from pneumoloc.environment import RunPaths


def tiny():
    # conv 1->4 3x3: 4*9 + 4 = 40; linear 4->1: 4 + 1 = 5 -> 45 parameters
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 1))


def test_count_parameters_by_hand():
    m = tiny()
    assert count_parameters(m) == 45
    m[0].weight.requires_grad_(False)
    assert count_parameters(m, trainable_only=True) == 9
    assert count_parameters(m) == 45


def test_measure_latency_record():
    lat = measure_latency(tiny(), image_size=16, n_batches=3, batch_size=4, warmup=1)
    assert lat.device == "cpu" and lat.image_size == 16 and lat.batch_size == 4 and lat.n_batches == 3
    assert np.isfinite(lat.latency_ms) and lat.latency_ms > 0
    assert np.isfinite(lat.ms_per_image_batched) and lat.ms_per_image_batched > 0
    before = torch.get_num_threads()
    assert measure_latency(tiny(), 16, n_batches=1, batch_size=2, threads=1).threads == 1
    assert torch.get_num_threads() == before  # restored
    with pytest.raises(ValueError, match="n_batches"):
        measure_latency(tiny(), 16, n_batches=0)


def test_pareto_front_by_hand():
    cost = [1, 2, 3, 2, 4]
    score = [0.7, 0.9, 0.8, 0.9, np.nan]
    # 0: cheapest -> front; 1 and 3 tie (same cost, same score) -> neither dominates; 2 dominated
    # by 1; 4 NaN -> never on the front
    np.testing.assert_array_equal(pareto_front(cost, score), [True, True, False, True, False])
    np.testing.assert_array_equal(pareto_front([1, 1], [0.5, 0.6]), [False, True])


def test_efficiency_table_reads_best_checkpoints(tmp_path):
    run = RunPaths(root=tmp_path / "run", figures=tmp_path / "fig")
    for name in ("a", "b"):
        run.model_dir(name).mkdir(parents=True)
        (run.model_dir(name) / "best.pt").write_bytes(b"stand-in")

    def loader(path, device="cpu"):
        m = tiny()
        m.config = {"image_size": 12}
        return m

    t = efficiency_table(run, ["a", "b"], n_batches=2, batch_size=2, loader=loader)
    assert t["model"].tolist() == ["a", "b"] and (t["params"] == 45).all()
    assert (t["image_size"] == 12).all() and (t["latency_ms"] > 0).all()
    with pytest.raises(FileNotFoundError, match="notebook 02"):
        efficiency_table(run, ["missing"], loader=loader)
