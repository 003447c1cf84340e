"""Dataset readers: each turns a dataset folder into :class:`~pneumoloc.data.tables.DatasetTables`.

Readers register themselves by name with :func:`register_reader`; notebooks call
``read_dataset(name, root, **options)`` and never parse dataset files themselves.
Reader modules are imported lazily (on first use of the registry) so that
``import pneumoloc`` stays fast.
"""
from __future__ import annotations

import importlib
from typing import Callable

from ...environment import resolve
from ..tables import DatasetTables

__all__ = ["register_reader", "read_dataset", "reader_names", "READERS"]

READERS: dict[str, Callable[..., DatasetTables]] = {}

# Modules that hold readers; importing one fills READERS through the decorator.
_READER_MODULES = ("phantom", "kermany", "rsna", "nih", "chexpert", "mimic")


def register_reader(name: str):
    """Decorator: ``@register_reader("kermany")`` on ``def read(root, **options) -> DatasetTables``."""
    def deco(fn: Callable[..., DatasetTables]) -> Callable[..., DatasetTables]:
        if name in READERS and READERS[name] is not fn:
            raise ValueError(f"reader {name!r} registered twice")
        READERS[name] = fn
        return fn
    return deco


def _load_all() -> None:
    for mod in _READER_MODULES:
        try:
            importlib.import_module(f"{__name__}.{mod}")
        except ModuleNotFoundError as e:  # a reader module not written yet
            if e.name != f"{__name__}.{mod}":
                raise


def reader_names() -> list[str]:
    _load_all()
    return sorted(READERS)


def read_dataset(name: str, root: str, **options) -> DatasetTables:
    """Read dataset ``name`` from folder ``root`` (relative paths are from the project root).

    Raises:
        KeyError: unknown reader; the message lists the known ones.
    """
    _load_all()
    if name not in READERS:
        raise KeyError(f"unknown dataset {name!r}; known readers: {', '.join(sorted(READERS))}")
    return READERS[name](str(resolve(root)), **options)
