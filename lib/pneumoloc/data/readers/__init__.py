"""Dataset readers: each turns a dataset folder into :class:`~pneumoloc.data.tables.DatasetTables`.

Readers register themselves by name with :func:`register_reader`; notebooks call
``read_dataset(name, root, **options)`` and never parse dataset files themselves.
Reader modules are imported lazily (on first use of the registry) so that
``import pneumoloc`` stays fast.

``list_dataset(name, root, **options)`` runs the same reader in listing mode: tables and
folders are read and checked exactly as ``read_dataset`` does, but no image is decoded or probed
(files are only checked to exist, ``width``/``height`` stay unknown; RSNA with ``views`` still
reads the DICOM headers, where the view is recorded), so ``pneumoloc run SPEC --check`` can
verify a 100,000-image layout in seconds.
"""
from __future__ import annotations

import contextvars
from typing import Callable

from ...environment import resolve
from ...registry import Registry
from ..tables import DatasetTables

__all__ = ["register_reader", "read_dataset", "list_dataset", "listing", "reader_names", "READERS"]

# The modules that hold readers, imported on first use of the registry.
READERS: Registry[Callable[..., DatasetTables]] = Registry(
    "reader", modules=tuple(f"{__name__}.{m}" for m in ("phantom", "kermany", "rsna", "nih", "chexpert", "mimic")))


def register_reader(name: str):
    """Decorator: ``@register_reader("kermany")`` on ``def read(root, **options) -> DatasetTables``."""
    return READERS.register(name)


def reader_names() -> list[str]:
    return sorted(READERS.names())


def read_dataset(name: str, root: str, **options) -> DatasetTables:
    """Read dataset ``name`` from folder ``root`` (relative paths are from the project root).

    Raises:
        KeyError: unknown reader; the message lists the known ones.
    """
    return READERS.lookup(name)(str(resolve(root)), **options)


# Set while list_dataset runs: readers then skip every image probe and header read.
_LISTING: contextvars.ContextVar[bool] = contextvars.ContextVar("pneumoloc_listing", default=False)


def listing() -> bool:
    """Whether the current read is a listing (:func:`list_dataset`): open no image."""
    return _LISTING.get()


def list_dataset(name: str, root: str, **options) -> DatasetTables:
    """The tables of ``read_dataset(name, root, **options)`` without decoding or probing any image.

    Every reader's layout checks run (missing folder, CSV, column or value: the reader's own
    error naming what it expected); a listed image whose file is missing is skipped and
    counted as in a read; ``width`` and ``height`` are NaN (they need a decode).
    """
    token = _LISTING.set(True)
    try:
        return read_dataset(name, root, **options)
    finally:
        _LISTING.reset(token)
