"""The efficiency frontier: LAR as a quality axis, and the latency's device and threads on every figure."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from torch import nn

from pneumoloc.ensembles import summary
from pneumoloc.ensembles.efficiency import latency_setting, measure_latency

MEMBERS = ["cheap", "lungs", "costly"]


def hand_made():
    """Three members and a mean ensemble of the first two. ``cheap`` is cheapest and best on
    ROC-AUC and hit rate, so it alone is on those frontiers; ``lungs`` costs more and is worse on
    both but keeps the most map energy inside the lungs, so LAR puts it on the frontier too."""
    costs = pd.DataFrame({"params": [1e6, 2e6, 4e6], "latency_ms": [1.0, 2.0, 4.0],
                          "ms_per_image_batched": [0.5, 1.0, 2.0], "device": "cpu", "threads": 1,
                          "hardware": "Test CPU 3000"}, index=MEMBERS)
    fitted = {"mean": SimpleNamespace(weights=np.array([0.5, 0.5, 0.0]))}
    systems = [*MEMBERS, "ens_mean"]
    cls = pd.DataFrame({"system": systems, "roc_auc": [0.90, 0.80, 0.85, 0.88]})
    values = {"hit": [0.50, 0.40, 0.45, 0.48], "lar": [0.60, 0.95, 0.70, 0.80]}
    loc = pd.DataFrame([{"system": s, "metric": m, "value": v[k]} for m, v in values.items()
                        for k, s in enumerate(systems)])
    return costs, fitted, cls, loc


def test_lar_is_a_quality_axis_that_changes_the_frontier():
    frontier = summary.efficiency_frontier(*hand_made()[:2], MEMBERS, *hand_made()[2:])
    assert frontier.loc["ens_mean", "params"] == 3e6
    for cost in ("params", "latency_ms"):
        assert frontier[f"front_{cost}_roc_auc"].tolist() == [True, False, False, False]
        assert frontier[f"front_{cost}_hit"].tolist() == [True, False, False, False]
        assert frontier[f"front_{cost}_lar"].tolist() == [True, True, False, False]
    assert summary.frontier_counts(frontier, ["lungs"]) == {"lungs": "on 2 of 6 frontiers"}


def test_the_frontier_carries_where_latency_was_measured():
    frontier = summary.efficiency_frontier(*hand_made()[:2], MEMBERS, *hand_made()[2:])
    assert (frontier["device"] == "cpu").all() and (frontier["threads"] == 1).all()
    assert (frontier["hardware"] == "Test CPU 3000").all()  # ensembles inherit their members' setting
    assert latency_setting(frontier) == "latency on cpu (Test CPU 3000), 1 torch thread"


def test_latency_setting_lists_every_setting_of_a_mixed_table():
    table = pd.DataFrame({"device": ["cpu", "cuda:0"], "threads": [1, 4], "hardware": ["A", "B"]})
    assert latency_setting(table) == "latency on cpu (A), 1 torch thread; cuda:0 (B), 4 torch threads"
    with pytest.raises(ValueError, match="efficiency_table"):
        latency_setting(table.drop(columns="threads"))


def test_efficiency_figure_states_device_and_threads_and_has_a_lar_row():
    import matplotlib

    matplotlib.use("Agg")
    from pneumoloc.plots.ensembles import plot_efficiency_frontier

    frontier = summary.efficiency_frontier(*hand_made()[:2], MEMBERS, *hand_made()[2:])
    fig = plot_efficiency_frontier(frontier, highlight=["cheap"])
    title = fig._suptitle.get_text()
    assert "cpu" in title and "1 torch thread" in title and "Test CPU 3000" in title
    assert [ax.get_ylabel() for ax in fig.axes[::2]] == ["ROC-AUC", "hit rate", "LAR"]
    with pytest.raises(ValueError, match="device"):
        plot_efficiency_frontier(frontier.drop(columns=["device", "threads", "hardware"]))


def test_measure_latency_records_the_hardware():
    tiny = nn.Sequential(nn.Conv2d(1, 2, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2, 1))
    lat = measure_latency(tiny, 8, n_batches=1, batch_size=2, warmup=0, threads=1)
    assert isinstance(lat.hardware, str) and lat.hardware and lat.threads == 1
