"""The backbone registry: the paper's seven with their CAM layers, lookups, token reshapes."""
from __future__ import annotations

import pytest
import torch

from pneumoloc.models.specs import (_TIMM_KWARGS, BACKBONES, BackboneSpec, ChannelsFirst, TokensToGrid, get_spec,
                                    register_backbone)

# The paper's seven (Shahi & Bagale 2025) with the standard Grad-CAM layers in timm 1.0 names.
EXPECTED = {"resnet18": ("resnet18", "backbone.layer4"), "resnet50": ("resnet50", "backbone.layer4"),
            "densenet121": ("densenet121", "backbone.features.norm5"),
            "efficientnet_b0": ("efficientnet_b0", "backbone.bn2"), "mobilenet_v2": ("mobilenetv2_100", "backbone.bn2"),
            "mobilenet_v3": ("mobilenetv3_large_100", "backbone.blocks.6"),
            "vit_b_16": ("vit_base_patch16_224", "backbone.blocks.11.norm1")}


def test_registry_holds_the_papers_seven():
    assert set(BACKBONES) >= set(EXPECTED)
    assert get_spec("mobilenet_v3").timm_name == "mobilenetv3_large_100"
    with pytest.raises(ValueError, match="registered: .*resnet18"):
        get_spec("resnet19")


@pytest.mark.parametrize("name", sorted(BACKBONES))
def test_every_entry_has_a_timm_name_target_layer_and_kwargs(name):
    spec = BACKBONES[name]
    assert isinstance(spec, BackboneSpec) and spec.name == name and spec.default_size >= 32
    assert spec.target_layer.startswith("backbone.") and isinstance(_TIMM_KWARGS[name](96), dict)
    if name in EXPECTED:
        assert (spec.timm_name, spec.target_layer) == EXPECTED[name] and spec.default_size == 224
        vit = name == "vit_b_16"  # tokens need a reshape and position embeddings sized for the input
        assert (spec.reshape_transform is not None) == vit
        assert _TIMM_KWARGS[name](96) == ({"img_size": 96, "dynamic_img_size": True} if vit else {})


def test_registering_a_name_twice_is_an_error():
    with pytest.raises(ValueError, match="'resnet18' is registered twice"):
        register_backbone("resnet18", "resnet18", "backbone.layer3")(lambda size: {})
    assert BACKBONES["resnet18"].target_layer == "backbone.layer4"


def test_tokens_to_grid_is_row_major_and_drops_prefix_tokens():
    tokens = torch.arange(5 * 2, dtype=torch.float32).view(1, 5, 2)  # cls + 4 patches, 2 channels
    grid = TokensToGrid(1)(tokens)
    assert grid.shape == (1, 2, 2, 2)
    assert grid[0, 0].tolist() == [[2.0, 4.0], [6.0, 8.0]] and grid[0, 1].tolist() == [[3.0, 5.0], [7.0, 9.0]]
    with pytest.raises(ValueError, match="square"):
        TokensToGrid(1)(torch.zeros(1, 4, 2))


def test_channels_first_moves_nhwc_channels_and_leaves_tokens():
    nhwc = torch.arange(2 * 3 * 4 * 5, dtype=torch.float32).view(2, 3, 4, 5)
    assert torch.equal(ChannelsFirst()(nhwc), nhwc.permute(0, 3, 1, 2))
    tokens = torch.zeros(2, 4, 8)
    assert ChannelsFirst()(tokens) is tokens
