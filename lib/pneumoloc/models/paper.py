"""Import of the checkpoints published with Shahi & Bagale 2025 (repo kiranshahi/pneumonia-analysis).

Their ``train.py`` saves ``{"model_state", "class_to_idx", "img_size", "arch", "val_*"}``
where ``model_state`` is a ``PneumoniaNet``: a torchvision model under ``backbone.`` whose
last classifier layer was replaced by the MLP head
``Sequential(Flatten, Linear→512, BN, ReLU, Dropout, Linear→128, ReLU, Dropout, Linear→K)``
(``fc`` for ResNets, ``classifier`` for DenseNet, ``classifier[-1]`` for EfficientNet /
MobileNets, ``heads.head`` for ViT), trained with K=2 softmax logits on grey images
repeated to RGB and normalized with ImageNet mean/std.

:func:`import_paper_checkpoint` rebuilds that network exactly, then splits it into a
:class:`~pneumoloc.models.backbones.Classifier`: ``backbone`` = the torchvision trunk (Grad-CAM
paths such as ``backbone.layer4``), ``head`` = their classifier. The model takes pneumoloc
input ``[B,1,S,S]`` normalized as ``(u/255-0.5)/0.25``, converts it to their input inside
``forward``, and ``probabilities`` returns softmax[:, PNEUMONIA]. ViT-B/16 needs input at
the checkpoint's ``img_size``; the CNNs accept any size.
"""
from __future__ import annotations

import dataclasses
import os
import pickle
from typing import Any, Callable

import torch
from torch import nn
from torch.nn import functional as F

from .backbones import Classifier
from .kinds import register_model_kind
from .specs import BackboneSpec, TokensToGrid

__all__ = ["PAPER_ARCHS", "PaperArch", "paper_head", "build_paper_network", "PaperClassifier",
           "import_paper_checkpoint"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)  # their utils.py / albumentations Normalize
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclasses.dataclass(frozen=True)
class PaperArch:
    """How to rebuild and split one of their architectures.

    Attributes:
        build: ``img_size -> torchvision model`` (random init, ImageNet classifier).
        head_path: dotted path of the module their MLP head replaced.
        classifier: attribute holding everything after pooling (becomes our ``head``).
        target_layer: Grad-CAM layer inside the Classifier.
        trunk: ``(torchvision model, x) -> feature map (or ViT tokens)``.
        pool: ``trunk output -> [B, C]`` exactly as their forward does it.
        reshape_transform: ViT tokens → map.
    """
    build: Callable[[int], nn.Module]
    head_path: str
    classifier: str
    target_layer: str
    trunk: Callable[[nn.Module, torch.Tensor], torch.Tensor]
    pool: Callable[[torch.Tensor], torch.Tensor]
    reshape_transform: Callable | None = None


PAPER_ARCHS: dict[str, PaperArch] = {}


def _register(name: str, head_path: str, classifier: str, target_layer: str, trunk: Callable,
              pool: Callable, reshape_transform: Callable | None = None):
    def add(build: Callable[[int], nn.Module]) -> Callable[[int], nn.Module]:
        PAPER_ARCHS[name] = PaperArch(build, head_path, classifier, target_layer, trunk, pool, reshape_transform)
        return build
    return add


def _resnet_trunk(m: nn.Module, x: torch.Tensor) -> torch.Tensor:
    x = m.maxpool(m.relu(m.bn1(m.conv1(x))))
    return m.layer4(m.layer3(m.layer2(m.layer1(x))))


def _features_trunk(m: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return m.features(x)


def _densenet_trunk(m: nn.Module, x: torch.Tensor) -> torch.Tensor:
    # as torchvision's DenseNet.forward: an in-place ReLU on the output of features.norm5, which
    # the grad-cam package therefore reads after the ReLU (pneumoloc.explain.cams detects it)
    return F.relu(m.features(x), inplace=True)


def _avg(f: torch.Tensor) -> torch.Tensor:
    return torch.flatten(F.adaptive_avg_pool2d(f, 1), 1)


def _vit_trunk(m: nn.Module, x: torch.Tensor) -> torch.Tensor:
    tokens = m._process_input(x)  # torchvision VisionTransformer.forward, minus the head
    cls = m.class_token.expand(tokens.shape[0], -1, -1)
    return m.encoder(torch.cat([cls, tokens], dim=1))


def _cls_token(tokens: torch.Tensor) -> torch.Tensor:
    return tokens[:, 0]


def _tv(name: str, **kwargs: Any) -> Callable[[int], nn.Module]:
    def build(img_size: int) -> nn.Module:
        import torchvision.models as tvm

        return getattr(tvm, name)(weights=None, **kwargs)
    return build


_register("resnet18", "fc", "fc", "backbone.layer4", _resnet_trunk, _avg)(_tv("resnet18"))
_register("resnet50", "fc", "fc", "backbone.layer4", _resnet_trunk, _avg)(_tv("resnet50"))
_register("densenet121", "classifier", "classifier", "backbone.features.norm5", _densenet_trunk,
          _avg)(_tv("densenet121"))
_register("efficientnet_b0", "classifier.1", "classifier", "backbone.features.8", _features_trunk,
          _avg)(_tv("efficientnet_b0"))
_register("mobilenet_v2", "classifier.1", "classifier", "backbone.features.18", _features_trunk,
          _avg)(_tv("mobilenet_v2"))
_register("mobilenet_v3", "classifier.3", "classifier", "backbone.features.16", _features_trunk,
          _avg)(_tv("mobilenet_v3_large"))


@_register("vit_b_16", "heads.head", "heads", "backbone.encoder.layers.encoder_layer_11.ln_1",
           _vit_trunk, _cls_token, TokensToGrid(1))
def _vit(img_size: int) -> nn.Module:
    import torchvision.models as tvm

    return tvm.vit_b_16(weights=None, image_size=img_size)


def paper_head(in_features: int, num_classes: int) -> nn.Sequential:
    """Their MLP head (``src/model.py``), with the same child indices so state dicts match."""
    return nn.Sequential(
        nn.Flatten(), nn.Linear(in_features, 512), nn.BatchNorm1d(512), nn.ReLU(inplace=True),
        nn.Dropout(0.3), nn.Linear(512, 128), nn.ReLU(inplace=True), nn.Dropout(0.2),
        nn.Linear(128, num_classes))


def build_paper_network(arch: str, num_classes: int = 2, img_size: int = 224) -> nn.Module:
    """Their ``PneumoniaNet`` layout: ``nn.Module`` with ``.backbone`` = torchvision model + MLP head."""
    if arch not in PAPER_ARCHS:
        raise ValueError(f"paper checkpoint arch {arch!r} unknown; known: {sorted(PAPER_ARCHS)}")
    spec = PAPER_ARCHS[arch]
    tv = spec.build(img_size)
    parent_path, _, leaf = spec.head_path.rpartition(".")
    parent = tv.get_submodule(parent_path) if parent_path else tv
    setattr(parent, leaf, paper_head(getattr(parent, leaf).in_features, num_classes))
    net = nn.Module()
    net.backbone = tv
    return net


class PaperClassifier(Classifier):
    """A paper network as a :class:`Classifier` taking pneumoloc grey input ``[B,1,S,S]``."""

    def __init__(self, tv: nn.Module, head: nn.Module, arch: str, config: dict[str, Any]):
        spec = PAPER_ARCHS[arch]
        bspec = BackboneSpec(f"paper:{arch}", f"torchvision:{arch}", spec.target_layer,
                             spec.reshape_transform, int(config["img_size"]))
        super().__init__(tv, head, bspec, config, in_chans=3)
        self.paper_arch = spec
        mean, std = torch.tensor(IMAGENET_MEAN), torch.tensor(IMAGENET_STD)
        self.register_buffer("mean", mean.view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", std.view(1, 3, 1, 1), persistent=False)

    def _paper_input(self, x: torch.Tensor) -> torch.Tensor:
        # pneumoloc: (u - 0.5) / 0.25 with u in [0,1]; theirs: grey repeated to RGB, ImageNet-normalized.
        u = self._check(x) * 0.25 + 0.5
        return (u - self.mean) / self.std

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        f = self.paper_arch.trunk(self.backbone, self._paper_input(x))
        return self.paper_arch.reshape_transform(f) if self.paper_arch.reshape_transform else f

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.paper_arch.trunk(self.backbone, self._paper_input(x))
        return self.head(self.paper_arch.pool(f))


@register_model_kind("paper")
def paper_from_config(arch: str, num_classes: int, img_size: int, **config: Any) -> PaperClassifier:
    """Rebuild (untrained) the split network described by a paper-model ``config``."""
    net = build_paper_network(arch, num_classes, img_size)
    return _split(net, dict(config, kind="paper", arch=arch, num_classes=num_classes, img_size=img_size))


def _split(net: nn.Module, config: dict[str, Any]) -> PaperClassifier:
    tv = net.backbone
    name = PAPER_ARCHS[config["arch"]].classifier
    head = getattr(tv, name)
    setattr(tv, name, nn.Identity())  # the head now lives in Classifier.head only
    return PaperClassifier(tv, head, config["arch"], config)


def _numpy_scalar_globals() -> list[Any]:
    # sklearn metrics saved in their dict may be numpy scalars; these reconstruct plain
    # numbers and run no code, so allowing them keeps weights_only=True meaningful.
    import numpy as np

    return [np._core.multiarray.scalar, np.dtype, np.dtypes.Float64DType, np.dtypes.Float32DType,
            np.dtypes.Int64DType, np.dtypes.Int32DType, np.dtypes.BoolDType]


# First bytes of a file that stands in for the checkpoint: a Git LFS pointer or a git-annex link target.
_POINTERS = {b"version https://git-lfs": "a Git LFS pointer: run `git lfs pull` in its repository",
             b"/annex/objects/": "a git-annex pointer: run `git annex get` on it"}


def _check_readable(path: str | os.PathLike) -> None:
    """A clear error for a missing file or a placeholder of a file that was never fetched."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path} does not exist: copy the checkpoint their train.py saved to this "
                                f"machine and pass its path (nothing is downloaded)")
    with open(path, "rb") as f:
        head = f.read(64)
    for prefix, fix in _POINTERS.items():
        if prefix in head:
            raise ValueError(f"{path} is {fix.split(':')[0]}, not the checkpoint:{fix.split(':', 1)[1]} "
                             f"or copy the real file")


def import_paper_checkpoint(path: str | os.PathLike) -> PaperClassifier:
    """Load a checkpoint in the paper's format as an eval-mode :class:`Classifier` on CPU.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: a Git LFS / git-annex pointer or other non-checkpoint file, missing keys,
            unknown arch, no PNEUMONIA class, or weights that do not fit.
    """
    _check_readable(path)
    with torch.serialization.safe_globals(_numpy_scalar_globals()):
        try:
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as err:
            # torch's message suggests turning weights_only off; keep only its reason (e.g. the refused global)
            text = str(err)
            reason = " ".join(text.split("WeightsUnpickler error:", 1)[-1].split("Check the documentation")[0].split())
            raise pickle.UnpicklingError(f"{path} was refused by torch.load(weights_only=True): it holds objects "
                                         f"other than tensors and plain values, or is not a torch file ({reason}); "
                                         f"pneumoloc loads only tensors and plain values") from err
        except (RuntimeError, EOFError, KeyError, ValueError) as err:  # not a torch file, or truncated
            raise ValueError(f"{path} is not a readable torch checkpoint ({type(err).__name__}: {err}); copy "
                             f"the .pt file their train.py saved again (the copy may be truncated)") from err
    missing = {"model_state", "class_to_idx", "arch"} - set(ckpt if isinstance(ckpt, dict) else ())
    if missing:
        raise ValueError(f"{path} is not a paper checkpoint: missing {sorted(missing)} "
                         f"(expected keys model_state, class_to_idx, img_size, arch)")
    classes = {str(k): int(v) for k, v in ckpt["class_to_idx"].items()}
    positive = [v for k, v in classes.items() if k.lower() == "pneumonia"]
    if len(positive) != 1:
        raise ValueError(f"{path}: class_to_idx {classes} has no single PNEUMONIA class")
    arch, img_size = str(ckpt["arch"]).lower(), int(ckpt.get("img_size", 224))
    net = build_paper_network(arch, len(classes), img_size)
    try:
        # keys as PneumoniaNet saves them; "module." if it was wrapped in DataParallel
        net.load_state_dict({k.removeprefix("module."): v for k, v in ckpt["model_state"].items()}, strict=True)
    except RuntimeError as err:
        raise ValueError(f"{path}: weights do not fit the paper's {arch} network: {err}") from err
    config = {"kind": "paper", "arch": arch, "num_classes": len(classes), "img_size": img_size,
              "class_to_idx": classes, "positive_index": positive[0], "activation": "softmax",
              "head": "paper-mlp", "num_outputs": len(classes), "init": f"paper:{os.fspath(path)}"}
    return _split(net, config).eval()
