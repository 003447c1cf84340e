"""The one registry helper: names mapped to entries, filled by a decorator.

Every registry in pneumoloc (dataset readers, map methods and targets, lung-mask sources,
threshold rules, chance maps, model kinds, ensemble combiners) is a :class:`Registry`, so they
all behave alike (timm's ``_registry.py`` habit):

* ``@REG.register("name")`` adds an entry; a second, different definition under the same name
  is refused (re-running the same definition, as ``%autoreload`` does, replaces it);
* ``REG.lookup(name)`` returns an entry or raises :class:`UnknownNameError` listing the known
  names, so a typo in a parameter tells the user what to type instead;
* ``REG.names()`` is the choice list, in registration order (tables and figures keep the
  order in which a module lists its entries); choice lists and messages derive from it.

A registry whose entries live in several modules lists those modules (``modules=``); they are
imported on the first lookup, so importing the registry stays cheap and the list of places
that register entries is written once, next to the registry.
"""
from __future__ import annotations

import importlib
from typing import Callable, Generic, Iterator, TypeVar

__all__ = ["Registry", "UnknownNameError"]

T = TypeVar("T")


class UnknownNameError(KeyError, ValueError):
    """An unknown registry key. A ``KeyError`` (a lookup failed) and a ``ValueError`` (a bad
    parameter value), so callers catching either keep working."""

    def __str__(self) -> str:  # KeyError would print the message quoted
        return str(self.args[0])


class Registry(Generic[T]):
    """Names -> entries of one kind.

    Args:
        kind: what an entry is, singular (``"reader"``, ``"map method"``); used in messages.
        modules: absolute names of the modules whose import registers entries, imported on
            first use (a module that does not exist yet is skipped; any other import error
            is raised).
    """

    def __init__(self, kind: str, modules: tuple[str, ...] = ()):
        self.kind = kind
        self.modules = modules
        self._entries: dict[str, T] = {}
        self._sources: dict[str, object] = {}  # what was decorated, to recognise a re-run
        self._loaded = not modules

    def register(self, name: str, wrap: Callable[[Callable], T] | None = None) -> Callable:
        """Decorator adding the decorated object (or ``wrap(obj)``) under ``name``."""
        def add(obj):
            self.add(name, wrap(obj) if wrap else obj, source=obj)
            return obj
        return add

    def add(self, name: str, entry: T, source: object | None = None) -> None:
        """Add ``entry`` under ``name``; a different definition already there is an error."""
        source = entry if source is None else source
        if name in self._sources and not _same_definition(self._sources[name], source):
            raise ValueError(f"{self.kind} {name!r} is registered twice: {_where(self._sources[name])} "
                             f"and {_where(source)}; pick another name")
        self._entries[name] = entry
        self._sources[name] = source

    def _load(self) -> None:
        if self._loaded:
            return
        self._loaded = True
        for mod in self.modules:
            try:
                importlib.import_module(mod)
            except ModuleNotFoundError as e:
                if e.name != mod:
                    raise

    def lookup(self, name: str) -> T:
        """The entry registered as ``name``; :class:`UnknownNameError` lists the known names."""
        self._load()
        if name not in self._entries:
            known = ", ".join(sorted(self._entries))
            raise UnknownNameError(f"unknown {self.kind} {name!r}; known {self.kind}s: {known}")
        return self._entries[name]

    def names(self) -> list[str]:
        """Registered names in registration order."""
        self._load()
        return list(self._entries)

    def __contains__(self, name: object) -> bool:
        self._load()
        return name in self._entries

    def __getitem__(self, name: str) -> T:
        return self.lookup(name)

    def __setitem__(self, name: str, entry: T) -> None:
        """Replace or add an entry without the double-registration check (tests substitute
        entries this way, e.g. ``monkeypatch.setitem``)."""
        self._entries[name] = entry
        self._sources[name] = entry

    def __delitem__(self, name: str) -> None:
        del self._entries[name]
        del self._sources[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        self._load()
        return len(self._entries)

    def get(self, name: str, default: T | None = None) -> T | None:
        """The entry or ``default``, as ``dict.get`` (use :meth:`lookup` to fail loudly)."""
        self._load()
        return self._entries.get(name, default)

    def keys(self) -> list[str]:
        return self.names()

    def items(self) -> list[tuple[str, T]]:
        return [(n, self._entries[n]) for n in self.names()]

    def values(self) -> list[T]:
        return [self._entries[n] for n in self.names()]

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}: {', '.join(self.names())})"


def _same_definition(a: object, b: object) -> bool:
    """The same object, or the same function/class re-executed (a module reload)."""
    if a is b:
        return True
    key = lambda o: (getattr(o, "__module__", None), getattr(o, "__qualname__", None))  # noqa: E731
    return key(a)[1] is not None and key(a) == key(b)


def _where(obj: object) -> str:
    return f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', repr(obj))}"
