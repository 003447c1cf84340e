"""Heads: shapes over the registry, WILDCAT pooling against hand-computed values and a numpy reference."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from pneumoloc.models.heads import HEADS, LinearHead, MLPHead, WildcatHead, build_head, region_count, wildcat_pool




@pytest.mark.parametrize("name", sorted(HEADS))
def test_every_head_maps_features_to_logits_and_trains(name):
    torch.manual_seed(0)
    head = build_head(name, in_features=8, num_outputs=3)
    feats = torch.randn(4, 8, 5, 5, requires_grad=True)
    logits = head(feats)
    assert logits.shape == (4, 3)
    logits.sum().backward()
    assert feats.grad is not None and feats.grad.abs().sum() > 0
    assert all(p.grad is not None for p in head.parameters())


def test_unknown_head_and_option_are_clear_errors():
    with pytest.raises(ValueError, match="known heads.*linear.*mlp.*wildcat"):
        build_head("attention", 8, 1)
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['kk'\].*alpha"):
        build_head("wildcat", 8, 1, kk=3)


def test_wildcat_pool_hand_computed():
    maps = torch.tensor([[1.0, 2.0], [3.0, 4.0]]).view(1, 1, 2, 2)
    assert wildcat_pool(maps, k=1, alpha=0.5).item() == pytest.approx(4 + 0.5 * 1)
    assert wildcat_pool(maps, k=2, alpha=0.5).item() == pytest.approx(3.5 + 0.5 * 1.5)
    assert wildcat_pool(maps, k=0.5, alpha=0.5).item() == pytest.approx(3.5 + 0.5 * 1.5)  # half of 4 regions
    assert wildcat_pool(maps, k=1, alpha=0.0).item() == pytest.approx(4.0)
    assert wildcat_pool(maps, k=1, alpha=1.0, kmin=2).item() == pytest.approx(4 + 1.5)
    assert wildcat_pool(maps, k=4, alpha=1.0).item() == pytest.approx(2.5 + 2.5)  # all regions both ways


def test_region_count_counts_and_fractions():
    assert region_count(0.2, 16) == 3  # round(3.2)
    assert region_count(0.01, 4) == 1  # at least one region
    assert region_count(1.0, 7) == 7
    assert region_count(100, 4) == 4
    assert region_count(3, 49) == 3
    for bad in (0, -1, 1.5, True, "2"):
        with pytest.raises(ValueError, match="wildcat k="):
            region_count(bad, 10)


def _numpy_wildcat(maps: np.ndarray, k_hi: int, k_lo: int, alpha: float) -> np.ndarray:
    flat = np.sort(maps.reshape(maps.shape[0], maps.shape[1], -1), axis=-1)
    return flat[..., -k_hi:].mean(-1) + alpha * flat[..., :k_lo].mean(-1)


@settings(max_examples=40, deadline=None)
@given(h=st.integers(1, 6), w=st.integers(1, 6), k=st.integers(1, 40), kmin=st.integers(1, 40),
       alpha=st.floats(0, 2), seed=st.integers(0, 10_000))
def test_wildcat_pool_matches_numpy_sort_reference(h, w, k, kmin, alpha, seed):
    maps = np.random.default_rng(seed).normal(size=(2, 3, h, w)).astype(np.float64)
    got = wildcat_pool(torch.from_numpy(maps), k=k, alpha=alpha, kmin=kmin).numpy()
    ref = _numpy_wildcat(maps, min(k, h * w), min(kmin, h * w), alpha)
    np.testing.assert_allclose(got, ref, rtol=1e-12, atol=1e-12)


def test_wildcat_head_class_maps_average_the_m_maps_hand_computed():
    head = WildcatHead(in_features=1, num_outputs=2, maps=2, k=1, alpha=0.7)
    with torch.no_grad():  # class 0 maps: 1x and 3x (mean 2x); class 1 maps: 2x+1 and -2x+3 (mean 2)
        head.transfer.weight.copy_(torch.tensor([1.0, 3.0, 2.0, -2.0]).view(4, 1, 1, 1))
        head.transfer.bias.copy_(torch.tensor([0.0, 0.0, 1.0, 3.0]))
    x = torch.tensor([[1.0, 2.0], [3.0, 4.0]]).view(1, 1, 2, 2)
    cm = head.class_maps(x)
    assert torch.allclose(cm[0, 0], 2 * x[0, 0])
    assert torch.allclose(cm[0, 1], torch.full((2, 2), 2.0))
    assert torch.allclose(head(x), torch.tensor([[8 + 0.7 * 2, 2 + 0.7 * 2]]))


def test_wildcat_rejects_bad_options_at_build_time():
    with pytest.raises(ValueError, match="maps"):
        WildcatHead(8, 1, maps=0)
    with pytest.raises(ValueError, match="k="):
        WildcatHead(8, 1, k=2.5)


def test_linear_head_class_maps_are_cam_whose_mean_is_the_logit():
    torch.manual_seed(1)
    head = LinearHead(6, 2).eval()
    feats = torch.randn(3, 6, 4, 4)
    assert torch.allclose(head.class_maps(feats).mean(dim=(2, 3)), head(feats), atol=1e-6)


def test_mlp_head_is_the_papers_layer_stack():
    head = MLPHead(1024, 1)
    kinds = [type(m) for m in head.mlp]
    assert kinds == [nn.Linear, nn.BatchNorm1d, nn.ReLU, nn.Dropout, nn.Linear, nn.ReLU, nn.Dropout, nn.Linear]
    assert [head.mlp[i].out_features for i in (0, 4, 7)] == [512, 128, 1]
    assert (head.mlp[3].p, head.mlp[6].p) == (0.3, 0.2)
    head.eval()
    feats = torch.randn(2, 1024, 3, 3)
    assert torch.allclose(head(feats), head.mlp(feats.mean(dim=(2, 3))))
