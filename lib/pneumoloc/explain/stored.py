"""Heatmaps computed once per run, model and method, then read by everything else.

Layout (the contract between notebook 03, which writes the maps, and everything that reads them)::

    run.maps/<model>/<method>.npz    maps float16 [N, M, M] (min-max per image, squashed
                                     S x S frame resized to M), image_ids unicode [N],
                                     meta_json: one JSON string (target layer, sizes, target,
                                     checkpoint sha256, parameters, provenance)

Maps and their metadata are one file written by one atomic rename, with its SHA-256
inside (:func:`pneumoloc.storage.save_arrays`): a crash can never leave new maps beside
old parameters. A file without ``meta_json`` (the older layout, metadata in a ``.json``
beside it) is refused, and :func:`compute_maps` stores it again.

Every load checks that the maps were made by the model's current checkpoint (the
SHA-256 of the file, as :mod:`pneumoloc.models.outputs` does for predictions and metrics):
maps of a retrained model are refused with the stage to rerun, never mixed with the
new model's predictions.

A multi-label model explained with ``target="findings"`` stores one file per finding,
``<method>@<finding>.npz``. ``store_as`` stores a variant under its own name, e.g. the
maps of another target layer as ``gradcam@layer3`` beside the default ``gradcam``.
One file may hold several splits (``split=["val", "test"]``): readers pick their images
by id (notebook 04 tunes thresholds on the val rows and scores the test rows).
:func:`compute_maps` skips the work when the stored file was made from the same
checkpoint (sha256) with the same parameters for the same images.
"""
from __future__ import annotations

import json
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from ..environment import RunPaths, safe_name, provenance
from ..models.outputs import TRAIN_STAGE, StaleArtifactError
from ..storage import CorruptFileError, clean_stale_temps, json_text, load_arrays, save_arrays, sha256_of

__all__ = ["MapSet", "map_file", "save_maps", "read_maps", "load_maps", "list_maps", "compute_maps",
           "map_parameters", "select_maps", "resize_maps", "checkpoint_sha256", "model_input_size", "require_trained",
           "require_maps", "MAPS_STAGE"]

MAPS_STAGE = "03_gradcam_gallery"  # the notebook that computes and stores the maps
_META = "meta_json"  # array name of the metadata inside the .npz
_SHOWN = 12  # hex digits of a digest shown in messages


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


def save_maps(path: str | os.PathLike, maps: np.ndarray, image_ids: np.ndarray, meta: dict) -> Path:
    """Store ``maps [N, M, M]``, ``image_ids [N]`` and ``meta`` as one file (one atomic rename).

    A ``.json`` beside it from the older layout is removed afterwards.
    """
    path = Path(path)
    save_arrays(path, maps=np.ascontiguousarray(maps), image_ids=np.asarray(image_ids).astype(str),
                **{_META: np.array(json_text(meta))})
    path.with_suffix(".json").unlink(missing_ok=True)
    return path


def read_maps(path: str | os.PathLike) -> MapSet:
    """The maps, ids and metadata of one file written by :func:`save_maps`, checksum verified.

    Raises:
        CorruptFileError: truncated or damaged file.
        StaleArtifactError: a file of the older layout (no metadata inside).
    """
    path = Path(path)
    arrays = load_arrays(path)
    if _META not in arrays:
        raise StaleArtifactError(f"{path} has no metadata inside (the older layout kept it in "
                                 f"{path.with_suffix('.json').name}, which a crash could leave out of step): "
                                 f"rerun {MAPS_STAGE} to store it again")
    return MapSet(arrays["image_ids"].astype(str), arrays["maps"], json.loads(str(arrays[_META])))


def _check_checkpoint(run: RunPaths, model: str, path: Path, meta: dict) -> None:
    """Raise :class:`StaleArtifactError` unless the maps were made by ``model``'s current checkpoint.

    Maps that record no checkpoint load only when the model has no ``best.pt`` (maps
    computed elsewhere), as :mod:`pneumoloc.models.outputs` treats predictions.
    """
    recorded = meta.get("checkpoint_sha256")
    ckpt = run.model_dir(model) / Path(meta.get("checkpoint") or "best.pt").name
    current = checkpoint_sha256(ckpt) if ckpt.exists() else None
    if recorded == current:
        return
    what = f"{path.name} of {model}"
    if recorded is None:
        why = (f"{what} records no checkpoint but {ckpt} exists ({current[:_SHOWN]}…), so which model made "
               f"them is unknown: rerun {MAPS_STAGE}")
    elif current is None:
        why = (f"{what} was made by checkpoint {recorded[:_SHOWN]}… but {ckpt} does not exist: rerun "
               f"{TRAIN_STAGE}[{model}], then {MAPS_STAGE}")
    else:
        why = (f"{what} was made by checkpoint {recorded[:_SHOWN]}… but {ckpt} is {current[:_SHOWN]}… "
               f"(retrained): rerun {MAPS_STAGE}")
    raise StaleArtifactError(f"{why} (file: {path})")


def load_maps(run: RunPaths, model: str, method: str) -> MapSet:
    """Read stored maps, refused unless made by the model's current checkpoint.

    Raises:
        FileNotFoundError: no such maps (the message names the call and notebook that write them).
        CorruptFileError: truncated or damaged file.
        StaleArtifactError: older layout, or maps of another checkpoint (the message names the stage to rerun).
    """
    path = map_file(run, model, method)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist: compute it with pneumoloc.explain.stored.compute_maps("
                                f"run, {model!r}, {method!r}) (notebook {MAPS_STAGE})")
    stored = read_maps(path)
    _check_checkpoint(run, model, path, stored.meta)
    return stored


def list_maps(run: RunPaths) -> pd.DataFrame:
    """One row per stored map file: ``model, method, n, map_size, target, path``.

    Files that cannot be read (damaged, or the older layout) are left out with a warning
    naming them; :func:`load_maps` refuses them with the stage to rerun.
    """
    rows = []
    for npz in sorted(run.maps.glob("*/*.npz")) if run.maps.exists() else []:
        try:
            meta = read_maps(npz).meta
        except (CorruptFileError, StaleArtifactError) as e:
            warnings.warn(f"stored maps skipped: {e}", stacklevel=2)
            continue
        rows.append({"model": meta.get("model", npz.parent.name), "method": meta.get("method", npz.stem),
                     "n": meta.get("n"), "map_size": meta.get("map_size"), "target": meta.get("target"),
                     "path": str(npz)})
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


_DIGESTS: dict[tuple, str] = {}
# (checkpoint SHA-256, input size, target layer, activation) -> (input size, outputs, resolved target layer,
# output names): enough to tell whether stored maps are up to date without loading the model again
_MODEL_FACTS: dict[tuple, tuple[int, int, str, list[str]]] = {}


def checkpoint_sha256(path: Path) -> str:
    """SHA-256 of the checkpoint file (:func:`pneumoloc.storage.sha256_of`), hashed once per version.

    A rewrite is an atomic rename, hence a new inode: the cache key changes with the file.
    """
    st = Path(path).stat()
    key = (str(path), st.st_ino, st.st_size, st.st_mtime_ns)
    if key not in _DIGESTS:
        _DIGESTS[key] = sha256_of(path)
    return _DIGESTS[key]


def require_maps(run: RunPaths, models: list[str] = (), methods: list[str] = ()) -> pd.DataFrame:
    """:func:`list_maps`, after checking that maps are stored at all and for every named model and
    method (empty lists: no constraint); the error says what is stored."""
    stored = list_maps(run)
    if stored.empty:
        raise ValueError(f"no stored maps under {run.maps}: run notebook 03 first")
    missing = sorted(set(models) - set(stored["model"])) + sorted(set(methods) - set(stored["method"]))
    if missing:
        raise ValueError(f"no stored maps for {missing}; stored: {stored[['model', 'method']].values.tolist()}")
    return stored


def require_trained(run, backbones: list[str]) -> None:
    """Every backbone has a ``best.pt`` in the run; the error names the missing ones."""
    untrained = [b for b in backbones if not run.best_checkpoint(b).exists()]
    if untrained:
        raise ValueError(f"backbones {untrained} have no best.pt under {run.root / 'models'}: "
                         "train them with notebook 02 first")


def model_input_size(model) -> int:
    """Input side S the model was trained on (its config), else its backbone's default."""
    cfg = getattr(model, "config", {}) or {}
    size = cfg.get("image_size") or getattr(getattr(model, "spec", None), "default_size", None)
    if not size:
        raise ValueError("cannot tell the model's input size: pass input_size=<S> to compute_maps")
    return int(size)


def map_parameters(method: str, *, split: str, map_size: int, input_size: int, target: str,
                   target_layer: str, activation: str = "as_produced") -> dict:
    """Everything that changes the maps besides the checkpoint (a change recomputes them)."""
    from .attributions import PARAMETERS

    return {"method": method, "split": split, "map_size": int(map_size), "input_size": int(input_size),
            "target": target, "target_layer": target_layer, "activation": activation,
            "method_parameters": PARAMETERS.get(method, {})}


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
        try:
            meta = read_maps(path).meta
        except (FileNotFoundError, CorruptFileError, StaleArtifactError):
            return False
        if meta.get("checkpoint_sha256") != sha or meta.get("parameters") != params:
            return False
        if meta.get("image_ids_sha256") != _ids_digest(image_ids):
            return False
    return True


def _ids_digest(image_ids: np.ndarray) -> str:
    import hashlib

    return hashlib.sha256("\n".join(map(str, image_ids)).encode()).hexdigest()


def select_maps(run: RunPaths, models: Sequence[str] = (), methods: Sequence[str] = ()) -> pd.DataFrame:
    """The :func:`list_maps` rows of ``models`` and ``methods`` (empty: all).

    Raises:
        ValueError: nothing stored matches; the message lists what is stored.
    """
    listing = list_maps(run)
    if models:
        listing = listing[listing["model"].isin(models)]
    if methods:
        listing = listing[listing["method"].isin(methods)]
    if listing.empty:
        raise ValueError(f"no stored maps in {run.maps} for models={list(models)} methods={list(methods)}: "
                         f"run notebook 03 first; stored: {list_maps(run)[['model', 'method']].values.tolist()}")
    return listing


def compute_maps(run: RunPaths, model_name: str, method: str, *, split: str | Sequence[str] = "test",
                 map_size: int = 64, batch_size: int = 16, target: str = "pneumonia", target_layer: str = "",
                 store_as: str = "", device: str = "cpu", checkpoint: str = "best.pt", input_size: int = 0,
                 activation: str = "as_produced", force: bool = False, progress: bool = True) -> dict[str, MapSet]:
    """Compute (or reuse) the maps of ``method`` for the ``split`` images of a trained model.

    Args:
        run: the run (needs notebook 01's tables and notebook 02's ``<model>/<checkpoint>``).
        model_name: folder name under ``run.model_dir``.
        method: a key of :data:`pneumoloc.explain.cams.METHODS`.
        split: which images (``"test"``, ``"val"``, ``"train"``, ``"all"``, or a list such
            as ``["val", "test"]``: one file, images in images-table order).
        map_size: stored side M.
        batch_size: images per forward pass.
        target: a key of :data:`pneumoloc.explain.cams.TARGETS`.
        target_layer: dotted module path; ``""`` = the backbone registry default; several
            joined by ``+`` average their maps (:func:`pneumoloc.explain.explainable.prepare_model`).
        store_as: stored method name; ``""`` = ``method`` (give variants their own name,
            e.g. ``"gradcam@layer3"``, so they sit beside the default maps).
        device: torch device string (``"auto"`` picks CUDA when present).
        checkpoint: file name inside the model folder.
        input_size: S; 0 = from the checkpoint's config.
        activation: ``"as_produced"`` or ``"as_library"``: which value of a target activation that
            the network changes in place (torchvision DenseNet-121's ReLU after ``features.norm5``)
            the gradient CAMs weight (:func:`pneumoloc.explain.explainable.prepare_model`).
        force: recompute even when up to date.
        progress: tqdm bar.

    Returns:
        stored method name -> :class:`MapSet` (one entry, or one per finding).
    """
    import torch
    from tqdm.auto import tqdm

    from ..data.cache import cached_images
    from .cams import explain, get_method, resolve_targets
    from .explainable import check_activation, feature_sizes, prepare_model
    from ..models.checkpoints import load_model
    from ..data.tables import load_tables
    from ..environment import pick_device
    from ..training.transforms import to_input

    get_method(method)  # unknown names fail before loading anything
    check_activation(activation, "compute_maps")
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
    clean_stale_temps(run.maps / safe_name(model_name))  # temp files of a killed run
    dev = pick_device(device)
    ids = images["image_id"].astype(str).to_numpy()
    sha = checkpoint_sha256(ckpt)
    facts_key = (sha, input_size, target_layer, activation)
    model = None
    if facts_key not in _MODEL_FACTS:  # what the stored maps' check needs from the model, read once per process
        model = load_model(ckpt, device=str(dev))
        size = input_size or model_input_size(model)
        ex = prepare_model(model, target_layer=target_layer, device=dev, activation=activation)
        with torch.no_grad():
            k = model(to_input(np.zeros((1, size, size), np.uint8)).to(dev)).shape[1]
        _MODEL_FACTS[facts_key] = (size, k, ex.layer_name, list(getattr(model, "config", {}).get("output_names") or []))
    size, k, layer_name, output_names = _MODEL_FACTS[facts_key]
    names = _stored_names(store_as or method, target, output_names or list(tables.findings), k)
    params = map_parameters(method, split="+".join(splits), map_size=map_size, input_size=size, target=target,
                            target_layer=layer_name, activation=activation)
    if not force and _up_to_date(run, model_name, names, sha, params, ids):
        return {n: load_maps(run, model_name, n) for n in names}
    if model is None:
        model = load_model(ckpt, device=str(dev))
        ex = prepare_model(model, target_layer=target_layer, device=dev, activation=activation)
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
        save_maps(map_file(run, model_name, name), out[:, t], ids, meta)
        result[name] = MapSet(ids.astype(str), out[:, t], meta)
    return result
