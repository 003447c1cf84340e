"""Dataset readers: each turns a dataset folder into :class:`~pneumoloc.data.tables.DatasetTables`.

Readers register themselves by name with :func:`register_reader`; notebooks call
``read_dataset(name, root, **options)`` and never parse dataset files themselves.
Reader modules are imported lazily (on first use of the registry) so that
``import pneumoloc`` stays fast.
"""
from __future__ import annotations

from typing import Callable

from ...environment import resolve
from ...registry import Registry
from ..tables import DatasetTables

__all__ = ["register_reader", "read_dataset", "reader_names", "READERS"]

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
