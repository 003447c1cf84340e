"""The one registry helper every registry uses: same decorator, same refusals, same messages."""
from __future__ import annotations

import sys
import types

import pytest

from pneumoloc.registry import Registry, UnknownNameError


def test_register_lookup_and_names_in_registration_order():
    reg = Registry("widget")

    @reg.register("b")
    def make_b():
        return "b"

    reg.add("a", make_b)
    assert reg.lookup("b") is make_b and reg["a"] is make_b
    assert reg.names() == ["b", "a"] and list(reg) == ["b", "a"] and "a" in reg and len(reg) == 2


def test_unknown_name_lists_the_known_ones_and_is_a_key_and_value_error():
    reg = Registry("widget")
    reg.register("alpha")(lambda: 1)
    with pytest.raises(UnknownNameError, match=r"unknown widget 'alfa'; known widgets: alpha$"):
        reg.lookup("alfa")
    with pytest.raises(KeyError):
        reg["alfa"]
    with pytest.raises(ValueError):
        reg.lookup("alfa")


def test_a_second_definition_under_one_name_is_refused():
    reg = Registry("widget")

    @reg.register("x")
    def first():
        pass

    def second():
        pass

    with pytest.raises(ValueError, match="widget 'x' is registered twice: .*first and .*second"):
        reg.register("x")(second)
    assert reg.lookup("x") is first


def test_rerunning_the_same_definition_replaces_it():
    """%autoreload re-executes a module: its decorators register new objects of the same name."""
    reg = Registry("widget")
    code = "def make():\n    return {n}\n"
    for n in (1, 2):
        ns: dict = {"__name__": "some.module"}
        exec(code.format(n=n), ns)
        reg.register("m")(ns["make"])
    assert reg.lookup("m")() == 2


def test_wrap_stores_a_built_entry_and_still_recognises_the_function():
    reg = Registry("method")

    def fn():
        pass

    reg.register("m", wrap=lambda f: ("entry", f))(fn)
    reg.register("m", wrap=lambda f: ("entry", f))(fn)
    assert reg.lookup("m") == ("entry", fn)


def test_listed_modules_are_imported_on_first_use_only(monkeypatch):
    module = types.ModuleType("pneumoloc_test_plugin")
    reg = Registry("plugin", modules=("pneumoloc_test_plugin", "pneumoloc_test_not_written_yet"))
    imported = []

    def fake_import(name, *a, **k):
        if name == "pneumoloc_test_plugin":
            imported.append(name)
            reg.add("p", 1)
            sys.modules[name] = module
            return module
        raise ModuleNotFoundError(name=name)

    monkeypatch.setattr("importlib.import_module", fake_import)
    assert imported == []
    assert reg.names() == ["p"] and reg.lookup("p") == 1
    assert imported == ["pneumoloc_test_plugin"]


def test_a_broken_listed_module_is_not_silenced(monkeypatch):
    reg = Registry("plugin", modules=("pneumoloc_test_plugin",))

    def fake_import(name, *a, **k):
        raise ModuleNotFoundError("No module named 'missing_dependency'", name="missing_dependency")

    monkeypatch.setattr("importlib.import_module", fake_import)
    with pytest.raises(ModuleNotFoundError, match="missing_dependency"):
        reg.names()
