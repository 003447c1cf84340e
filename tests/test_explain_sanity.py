"""Cascading randomization: grouping, re-initialization, similarity, flagging."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from pneumoloc.explain import cams, sanity
from pneumoloc.models.backbones import build_model

torch.set_num_threads(1)


class TinyNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.backbone = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1),
                                      nn.ReLU(), nn.Conv2d(8, 8, 3, stride=2, padding=1))
        self.head = nn.Linear(8, 1)
        self.positive_index = 0

    def forward(self, x):
        return self.head(torch.relu(self.backbone(x)).mean(dim=(2, 3)))


def test_groups_run_top_down_and_cover_every_parameter_once():
    model = build_model("resnet18", image_size=32)
    groups = sanity.cascade_groups(model, max_groups=6)
    names = [g.name for g in groups]
    assert names[0].startswith("head")
    assert names.index("backbone.layer4") < names.index("backbone.layer3") < names.index("backbone.layer1")
    ids = [id(p) for g in groups for p in g.parameters()]
    assert len(ids) == len(set(ids)) and set(ids) == {id(p) for p in model.parameters()}


def test_vit_embeddings_are_a_group_of_their_own_and_reinitialized():
    model = build_model("vit_b_16", image_size=32)
    groups = sanity.cascade_groups(model, max_groups=4)
    own = [g for g in groups if g.own_only]
    assert own and own[-1] is groups[-1], "cls token and position embedding sit at the input: last"
    before = [p.clone() for p in own[-1].parameters()]
    sanity.reinitialize(own[-1], seed=1)
    assert all(not torch.equal(a, b) for a, b in zip(before, own[-1].parameters()))


def test_reinitialize_changes_the_group_only():
    torch.manual_seed(0)
    net = TinyNet()
    groups = sanity.cascade_groups(net, max_groups=3)
    head = groups[0]
    others = {n: p.clone() for n, p in net.backbone.named_parameters()}
    old = net.head.weight.clone()
    sanity.reinitialize(head, seed=5)
    assert not torch.equal(old, net.head.weight)
    assert all(torch.equal(others[n], p) for n, p in net.backbone.named_parameters())


def test_similarity_hand_cases():
    a = np.linspace(0, 1, 64, dtype=np.float32).reshape(1, 8, 8)
    rho, ssim = sanity.map_similarity(a, a)
    assert rho[0] == pytest.approx(1.0) and ssim[0] == pytest.approx(1.0)
    rho, _ = sanity.map_similarity(a, 1 - a)
    assert rho[0] == pytest.approx(-1.0)
    rho, _ = sanity.map_similarity(a, np.zeros_like(a))
    assert rho[0] == 0.0  # the map lost all structure
    rho, _ = sanity.map_similarity(np.zeros_like(a), a)
    assert np.isnan(rho[0])  # a constant original has no ranks: image left out


def test_summary_uses_the_final_step_even_when_it_is_nan():
    import pandas as pd

    table = pd.DataFrame({"backbone": "b", "method": "m", "step": [0, 1], "layer": ["original", "head"],
                          "spearman": [1.0, np.nan], "ssim": [1.0, 0.1], "n": [3, 0]})
    row = sanity.sanity_summary(table).iloc[0]
    assert row["steps"] == 1 and np.isnan(row["final_spearman"]) and not row["flagged"]


def test_model_independent_method_is_flagged_and_gradcam_is_not(monkeypatch):
    def input_intensity(ex, x, target):  # ignores the model entirely: must fail the test
        return cams.normalize_maps(x.abs()).detach()

    monkeypatch.setitem(cams.METHODS, "intensity", cams.MapMethod("intensity", input_intensity, "cam", "test"))
    torch.manual_seed(0)
    net = TinyNet()
    state = {k: v.clone() for k, v in net.state_dict().items()}
    x = torch.randn(4, 1, 16, 16, generator=torch.Generator().manual_seed(2))
    table = sanity.sanity_table({"tiny": net}, x, ["intensity", "gradcam"], target="predicted",
                                target_layer="backbone.4", max_groups=3)
    assert set(table["method"]) == {"intensity", "gradcam"}
    flat = table[table["method"] == "intensity"]
    assert np.allclose(flat["spearman"], 1.0) and np.allclose(flat["ssim"], 1.0)
    summary = sanity.sanity_summary(table).set_index("method")
    assert bool(summary.loc["intensity", "flagged"])
    assert not bool(summary.loc["gradcam", "flagged"])
    assert summary.loc["gradcam", "final_spearman"] < 0.5
    assert all(torch.equal(state[k], v) for k, v in net.state_dict().items()), "caller's model intact"


def test_sanity_subset_empty_means_every_backbone_in_run_order():
    assert sanity.sanity_subset(["resnet18", "vit_b_16", "mobilenet_v2"], []) == ["resnet18", "vit_b_16", "mobilenet_v2"]


def test_sanity_subset_keeps_the_run_order_of_the_chosen_backbones():
    run = ["resnet18", "mobilenet_v3", "mobilenet_v2", "vit_b_16"]
    assert sanity.sanity_subset(run, ["vit_b_16", "resnet18"]) == ["resnet18", "vit_b_16"]


def test_sanity_subset_names_the_parameter_and_the_fix_for_an_unknown_backbone():
    with pytest.raises(ValueError, match=r"sanity_backbones.*'resnet34'.*resnet18, vit_b_16.*\[\]"):
        sanity.sanity_subset(["resnet18", "vit_b_16"], ["resnet18", "resnet34"])


def test_notebook_03_declares_the_sanity_subset_and_its_sanity_cell_uses_it():
    """The parameter exists with the default 'every backbone', the subset is validated before any map
    is computed (the parameter-check cell) and the sanity cell runs on it."""
    import json

    from pneumoloc.environment import NOTEBOOKS_DIR
    from pneumoloc.runs.params import declared_parameters

    declared = declared_parameters("03_gradcam_gallery")
    assert declared["sanity_backbones"].default == []
    cells = ["".join(c["source"]) for c in json.loads((NOTEBOOKS_DIR / "03_gradcam_gallery.ipynb").read_text())["cells"]
             if c["cell_type"] == "code"]
    check = next(i for i, s in enumerate(cells) if "check_parameters(" in s)
    run = next(i for i, s in enumerate(cells) if "run_sanity(" in s)
    assert "sanity_subset(backbones, sanity_backbones)" in cells[check]
    assert "sanity.run_sanity(run, images, sanity_models," in cells[run]
