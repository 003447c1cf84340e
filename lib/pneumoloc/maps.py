"""Heatmaps computed once per run, model and method, then read by everything else.

Layout (shared contract, see the team brief)::

    run.maps/<model>/<method>.npz    maps float16 [N, M, M] (min-max per image, squashed
                                     S x S frame resized to M), image_ids unicode [N]
    run.maps/<model>/<method>.json   target layer, sizes, target, checkpoint sha256,
                                     parameters, provenance

A multi-label model explained with ``target="findings"`` stores one file per finding,
``<method>@<finding>.npz``. ``store_as`` stores a variant under its own name, e.g. the
maps of another target layer as ``gradcam@layer3`` beside the default ``gradcam``.
One file may hold several splits (``split=["val", "test"]``): readers pick their images
by id (notebook 04 tunes thresholds on the val rows and scores the test rows).
:func:`compute_maps` skips the work when the stored file was made from the same
checkpoint (sha256) with the same parameters for the same images.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from .paths import RunPaths, safe_name
from .provenance import provenance
from .storage import load_arrays, load_json, save_arrays, save_json, sha256_of

__all__ = ["MapSet", "map_file", "load_maps", "list_maps", "compute_maps", "map_parameters",
           "resize_maps", "checkpoint_sha256", "model_input_size"]


@dataclass
class MapSet:
    """Stored maps of one model and method.

    Attributes:
        image_ids: unicode ``[N]``.
        maps: float16 ``[N, M, M]`` in [0, 1].
        meta: the JSON metadata (parameters, checkpoint sha256, provenance, ...).
    """

    image_ids: np.ndarray
    maps: np.ndarray
    meta: dict = field(default_factory=dict)
    _index: dict[str, int] = field(default_factory=dict, repr=False)

    def __len__(self) -> int:
        return len(self.image_ids)

    @property
    def map_size(self) -> int:
        return int(self.maps.shape[-1])

    def row(self, image_id: str) -> int:
        if not self._index:
            self._index = {str(i): k for k, i in enumerate(self.image_ids)}
        if str(image_id) not in self._index:
            raise KeyError(f"image {image_id!r} has no stored map ({self.meta.get('method', '?')})")
        return self._index[str(image_id)]

    def take(self, image_ids) -> np.ndarray:
        """float32 ``[n, M, M]`` maps of ``image_ids`` in that order."""
        return self.maps[[self.row(i) for i in image_ids]].astype(np.float32)


def map_file(run: RunPaths, model: str, method: str) -> Path:
    return run.maps / safe_name(model) / f"{safe_name(method)}.npz"


def load_maps(run: RunPaths, model: str, method: str) -> MapSet:
    """Read stored maps; the error names the missing file and the notebook that writes it."""
    path = map_file(run, model, method)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist: compute it with pneumoloc.maps.compute_maps("
                                f"run, {model!r}, {method!r}) (notebook 03)")
    arrays = load_arrays(path)
    return MapSet(arrays["image_ids"].astype(str), arrays["maps"], load_json(path.with_suffix(".json")))


def list_maps(run: RunPaths) -> pd.DataFrame:
    """One row per stored map file: ``model, method, n, map_size, target, path``."""
    rows = []
    for js in sorted(run.maps.glob("*/*.json")) if run.maps.exists() else []:
        if not js.with_suffix(".npz").exists():
            continue
        meta = load_json(js)
        rows.append({"model": meta.get("model", js.parent.name), "method": meta.get("method", js.stem),
                     "n": meta.get("n"), "map_size": meta.get("map_size"), "target": meta.get("target"),
                     "path": str(js.with_suffix(".npz"))})
    return pd.DataFrame(rows, columns=["model", "method", "n", "map_size", "target", "path"])


def resize_maps(maps, size: int):
    """``[B,T,S,S]`` torch maps -> ``[B,T,size,size]`` (area-averaging when shrinking), min-max again."""
    import torch.nn.functional as F

    from .cams import normalize_maps

    if maps.shape[-1] == size and maps.shape[-2] == size:
        return maps
    b, t = maps.shape[:2]
    out = F.interpolate(maps.reshape(b * t, 1, *maps.shape[-2:]), size=(size, size), mode="bilinear",
                        align_corners=False, antialias=size < maps.shape[-1])
    return normalize_maps(out.reshape(b, t, size, size))


def checkpoint_sha256(path: Path) -> str:
    side = path.with_name(path.name + ".sha256")
    return side.read_text().strip() if side.exists() else sha256_of(path)


def model_input_size(model) -> int:
    """Input side S the model was trained on (its config), else its backbone's default."""
    cfg = getattr(model, "config", {}) or {}
    size = cfg.get("image_size") or getattr(getattr(model, "spec", None), "default_size", None)
    if not size:
        raise ValueError("cannot tell the model's input size: pass input_size=<S> to compute_maps")
    return int(size)


def map_parameters(method: str, *, split: str, map_size: int, input_size: int, target: str,
                   target_layer: str) -> dict:
    """Everything that changes the maps besides the checkpoint (a change recomputes them)."""
    from .attributions import PARAMETERS

    return {"method": method, "split": split, "map_size": int(map_size), "input_size": int(input_size),
            "target": target, "target_layer": target_layer, "method_parameters": PARAMETERS.get(method, {})}


def _stored_names(name: str, target: str, findings: list[str], k: int) -> list[str]:
    if target != "findings":
        return [name]
    names = findings if len(findings) == k else [f"output{i}" for i in range(k)]
    return [f"{name}@{f}" for f in names]


def _split_list(split: str | Sequence[str]) -> list[str]:
    splits = [split] if isinstance(split, str) else list(split)
    unknown = [s for s in splits if s not in ("train", "val", "test", "all")]
    if unknown or not splits:
        raise ValueError(f"split={split!r}: use 'train', 'val', 'test', 'all' or a list of them")
    return splits


def _up_to_date(run: RunPaths, model_name: str, names: list[str], sha: str, params: dict,
                image_ids: np.ndarray) -> bool:
    for name in names:
        path = map_file(run, model_name, name)
        js = path.with_suffix(".json")
        if not (path.exists() and js.exists()):
            return False
        meta = load_json(js)
        if meta.get("checkpoint_sha256") != sha or meta.get("parameters") != params:
            return False
        if meta.get("image_ids_sha256") != _ids_digest(image_ids):
            return False
    return True


def _ids_digest(image_ids: np.ndarray) -> str:
    import hashlib

    return hashlib.sha256("\n".join(map(str, image_ids)).encode()).hexdigest()


def compute_maps(run: RunPaths, model_name: str, method: str, *, split: str | Sequence[str] = "test",
                 map_size: int = 64, batch_size: int = 16, target: str = "pneumonia", target_layer: str = "",
                 store_as: str = "", device: str = "cpu", checkpoint: str = "best.pt", input_size: int = 0,
                 force: bool = False, progress: bool = True) -> dict[str, MapSet]:
    """Compute (or reuse) the maps of ``method`` for the ``split`` images of a trained model.

    Args:
        run: the run (needs notebook 01's tables and notebook 02's ``<model>/<checkpoint>``).
        model_name: folder name under ``run.model_dir``.
        method: a key of :data:`pneumoloc.cams.METHODS`.
        split: which images (``"test"``, ``"val"``, ``"train"``, ``"all"``, or a list such
            as ``["val", "test"]``: one file, images in images-table order).
        map_size: stored side M.
        batch_size: images per forward pass.
        target: a key of :data:`pneumoloc.cams.TARGETS`.
        target_layer: dotted module path; ``""`` = the backbone registry default; several
            joined by ``+`` average their maps (:func:`pneumoloc.cams.prepare_model`).
        store_as: stored method name; ``""`` = ``method`` (give variants their own name,
            e.g. ``"gradcam@layer3"``, so they sit beside the default maps).
        device: torch device string (``"auto"`` picks CUDA when present).
        checkpoint: file name inside the model folder.
        input_size: S; 0 = from the checkpoint's config.
        force: recompute even when up to date.
        progress: tqdm bar.

    Returns:
        stored method name -> :class:`MapSet` (one entry, or one per finding).
    """
    import torch
    from tqdm.auto import tqdm

    from .cache import cached_images
    from .cams import explain, get_method, resolve_targets
    from .explainable import feature_sizes, prepare_model
    from .checkpoints import load_model
    from .dataset import load_tables
    from .devices import pick_device
    from .transforms import to_input

    get_method(method)  # unknown names fail before loading anything
    resolve_targets(torch.zeros(1, 1), 0, target)
    if map_size <= 0 or batch_size <= 0:
        raise ValueError(f"map_size={map_size} and batch_size={batch_size} must be positive")
    splits = _split_list(split)
    ckpt = run.model_dir(model_name) / checkpoint
    if not ckpt.exists():
        raise FileNotFoundError(f"{ckpt} does not exist: train {model_name!r} with notebook 02 first")
    tables = load_tables(run)
    images = tables.images if "all" in splits else tables.images[tables.images["split"].isin(splits)]
    if images.empty:
        raise ValueError(f"split={split!r} has no images in {run.images_table}")
    dev = pick_device(device)
    model = load_model(ckpt, device=str(dev))
    size = input_size or model_input_size(model)
    ex = prepare_model(model, target_layer=target_layer, device=dev)
    with torch.no_grad():
        k = model(to_input(np.zeros((1, size, size), np.uint8)).to(dev)).shape[1]
    outputs = list(getattr(model, "config", {}).get("output_names") or tables.findings)
    names = _stored_names(store_as or method, target, outputs, k)
    ids = images["image_id"].astype(str).to_numpy()
    sha = checkpoint_sha256(ckpt)
    params = map_parameters(method, split="+".join(splits), map_size=map_size, input_size=size, target=target,
                            target_layer=ex.layer_name)
    if not force and _up_to_date(run, model_name, names, sha, params, ids):
        return {n: load_maps(run, model_name, n) for n in names}
    pixels = cached_images(images, size, progress=progress)
    out = np.zeros((len(ids), len(names), map_size, map_size), np.float16)
    for start in tqdm(range(0, len(ids), batch_size), desc=f"{model_name} {method}", disable=not progress):
        x = to_input(np.array(pixels[start:start + batch_size]))  # a writable copy of the memmap rows
        out[start:start + len(x)] = resize_maps(explain(ex, x, method, target), map_size).numpy()
    features = "+".join(f"{h}x{w}" for h, w in feature_sizes(ex, size))
    result = {}
    for t, name in enumerate(names):
        meta = {"model": model_name, "method": name, "base_method": method, "n": len(ids), "splits": splits,
                "map_size": map_size, "input_size": size, "target": target, "target_layer": ex.layer_name,
                "feature_size": features, "target_index": t, "checkpoint": str(ckpt), "checkpoint_sha256": sha, "parameters": params,
                "image_ids_sha256": _ids_digest(ids), "provenance": provenance()}
        path = map_file(run, model_name, name)
        save_arrays(path, maps=np.ascontiguousarray(out[:, t]), image_ids=ids.astype(str))
        save_json(path.with_suffix(".json"), meta)  # written last: marks a complete store
        result[name] = MapSet(ids, out[:, t], meta)
    return result
