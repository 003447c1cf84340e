"""Run-spec validation: names and foreach values become paths, timeouts must be seconds."""
from __future__ import annotations

import pytest
from notebook_factory import notebook_dir, write_spec

from pneumoloc.runs import spec as runspec

PARAMS = 'run_dir = "x"  # run\nfigures_dir = ""  # figures\nvalue = 1  # a number\nname = "a"  # a name\n'


@pytest.fixture
def nbdir(tmp_path, monkeypatch):
    return notebook_dir(tmp_path, monkeypatch, PARAMS, {
        "a_ok": ("x = 1",),
    })


def _foreach(values: str) -> str:
    return f"name: t\nnotebooks:\n  - notebook: a_ok\n    foreach: {{name: {values}}}\n"


@pytest.mark.parametrize("name", ["../escape", "a/b", "a\\\\b", "..", "run one", "dé", "a:b", ".", "..."])
def test_unsafe_run_name_is_an_error(tmp_path, nbdir, name):
    with pytest.raises(ValueError, match=r"spec\.yaml.*'name'.*A-Za-z0-9\._-"):
        runspec.load_spec(write_spec(tmp_path, f'name: "{name}"\nnotebooks:\n  - notebook: a_ok\n'))


@pytest.mark.parametrize("values", ["[ok, ../up]", "[a/b]", "['..']", "[x y]", "[[1, 2]]", "['a;rm']"])
def test_unsafe_foreach_value_is_an_error(tmp_path, nbdir, values):
    with pytest.raises(ValueError, match=r"spec\.yaml.*foreach.*'name'.*A-Za-z0-9\._-"):
        runspec.load_spec(write_spec(tmp_path, _foreach(values)))


def test_safe_names_and_values_load(tmp_path, nbdir):
    s = runspec.load_spec(write_spec(tmp_path, _foreach("[resnet18, vit_b.16, mobilenet-v3]").replace(
        "name: t", "name: demo_2.v-1")))
    assert s.name == "demo_2.v-1"
    assert [x.output_name for x in s.stages] == ["a_ok__resnet18.ipynb", "a_ok__vit_b.16.ipynb",
                                                  "a_ok__mobilenet-v3.ipynb"]
    numbers = runspec.load_spec(write_spec(tmp_path, "notebooks:\n  - notebook: a_ok\n    foreach: {value: [1, 2]}\n"))
    assert [x.output_name for x in numbers.stages] == ["a_ok__1.ipynb", "a_ok__2.ipynb"]


def test_file_stem_used_as_name_is_checked_too(tmp_path, nbdir):
    p = tmp_path / "my run.yaml"
    p.write_text("notebooks:\n  - notebook: a_ok\n")
    with pytest.raises(ValueError, match=r"my run\.yaml.*'name'"):
        runspec.load_spec(p)


@pytest.mark.parametrize("value", ["0", "-5", "true", "false", "'60'", ".nan", "[1]", "null"])
@pytest.mark.parametrize("where", ["top", "stage"])
def test_timeout_must_be_a_positive_number(tmp_path, nbdir, value, where):
    body = (f"name: t\ntimeout: {value}\nnotebooks:\n  - notebook: a_ok\n" if where == "top"
            else f"name: t\nnotebooks:\n  - notebook: a_ok\n    timeout: {value}\n")
    with pytest.raises(ValueError, match=r"spec\.yaml.*timeout.*positive number of seconds"):
        runspec.load_spec(write_spec(tmp_path, body))


def test_valid_timeouts(tmp_path, nbdir):
    s = runspec.load_spec(write_spec(tmp_path, "name: t\ntimeout: 90\nnotebooks:\n  - notebook: a_ok\n"
                                          "    timeout: 2.5\n  - notebook: a_ok\n    foreach: {name: [b]}\n"))
    assert s.timeout == 90.0 and [x.timeout for x in s.stages] == [2.5, 90.0]


def _names(groups):
    return [[stage.name for stage in group] for group in groups]


def test_foreach_entries_of_one_notebook_in_a_row_form_one_step(tmp_path, nbdir):
    s = runspec.load_spec(write_spec(tmp_path, "name: t\nnotebooks:\n  - notebook: a_ok\n    foreach: {name: [p, q]}\n"
                                          "  - notebook: a_ok\n    foreach: {name: [r]}\n"))
    assert _names(runspec.steps(s.stages)) == [["a_ok[p]", "a_ok[q]", "a_ok[r]"]]


def test_a_plain_entry_after_a_foreach_of_its_notebook_is_a_step_of_its_own(tmp_path, nbdir):
    """Per-backbone map jobs (03 foreach) then the gallery over all of them (plain 03): the plain
    entry reads what the foreach stages wrote, so it must wait for them and rerun when they change."""
    body = ("name: t\nnotebooks:\n  - notebook: a_ok\n    foreach: {name: [p, q]}\n    parameters: {value: 1}\n"
            "  - notebook: a_ok\n  - notebook: a_ok\n    foreach: {name: [r]}\n")
    s = runspec.load_spec(write_spec(tmp_path, body))
    assert _names(runspec.steps(s.stages)) == [["a_ok[p]", "a_ok[q]"], ["a_ok"], ["a_ok[r]"]]
    changed = runspec.load_spec(write_spec(tmp_path, body.replace("value: 1", "value: 2")))
    assert [a.fingerprint != b.fingerprint for a, b in zip(s.stages, changed.stages)] == [True, True, True, True]


def test_stages_of_one_step_do_not_depend_on_each_other(tmp_path, nbdir):
    body = "name: t\nnotebooks:\n  - notebook: a_ok\n    foreach: {name: [p, q]}\n    overrides: {q: {value: 1}}\n"
    s = runspec.load_spec(write_spec(tmp_path, body))
    changed = runspec.load_spec(write_spec(tmp_path, body.replace("value: 1", "value: 2")))
    assert s.stages[0].fingerprint == changed.stages[0].fingerprint
    assert s.stages[1].fingerprint != changed.stages[1].fingerprint
