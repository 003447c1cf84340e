"""Cluster resources in run specs: defaults at the top, overrides per notebook entry, checked."""
from __future__ import annotations

import pytest
from notebook_factory import notebook_dir, write_spec

from pneumoloc.runs import spec as runspec

PARAMS = 'run_dir = "x"  # run\nfigures_dir = ""  # figures\nname = "a"  # a name\n'


@pytest.fixture
def nbdir(tmp_path, monkeypatch):
    return notebook_dir(tmp_path, monkeypatch, PARAMS, {
        "a_ok": ("x = 1",),
        "b_ok": ("x = 2",),
    })


def test_defaults_and_per_entry_overrides(tmp_path, nbdir):
    s = runspec.load_spec(write_spec(tmp_path, (
        "name: t\nresources: {partition: gpu, cpus_per_task: 4, mem_gb: 16, timeout_min: 60}\nnotebooks:\n"
        "  - notebook: a_ok\n"
        "  - notebook: b_ok\n    foreach: {name: [p, q]}\n    resources: {gpus_per_node: 2, timeout_min: 600}\n")))
    first, *trained = s.stages
    assert first.resources == {"partition": "gpu", "cpus_per_task": 4, "mem_gb": 16, "timeout_min": 60}
    assert [t.resources for t in trained] == [{"partition": "gpu", "cpus_per_task": 4, "mem_gb": 16,
                                              "timeout_min": 600, "gpus_per_node": 2}] * 2
    assert [st.entry for st in s.stages] == [0, 1, 1]


def test_resources_do_not_change_fingerprints(tmp_path, nbdir):
    plain = runspec.load_spec(write_spec(tmp_path, "name: t\nnotebooks:\n  - notebook: a_ok\n"))
    asked = runspec.load_spec(write_spec(tmp_path, "name: t\nresources: {gpus_per_node: 8}\n"
                                              "notebooks:\n  - notebook: a_ok\n"))
    assert plain.stages[0].fingerprint == asked.stages[0].fingerprint


@pytest.mark.parametrize("resources, message", [
    ("{gpus: 1}", r"unknown keys \['gpus'\].*gpus_per_node"),
    ("{gpus_per_node: -1}", r"gpus_per_node=-1 must be an integer >= 0"),
    ("{cpus_per_task: 0}", r"cpus_per_task=0 must be an integer >= 1"),
    ("{cpus_per_task: 2.5}", r"cpus_per_task=2.5 must be an integer"),
    ("{mem_gb: '16G'}", r"mem_gb='16G' must be a number >= 0"),
    ("{timeout_min: true}", r"timeout_min=True must be an integer >= 1"),
    ("{partition: ''}", r"partition='' must be a non-empty string"),
    ("[gpu]", r"must be a mapping"),
])
@pytest.mark.parametrize("where", ["top", "entry"])
def test_bad_resources_name_the_spec_and_key(tmp_path, nbdir, resources, message, where):
    body = (f"name: t\nresources: {resources}\nnotebooks:\n  - notebook: a_ok\n" if where == "top" else
            f"name: t\nnotebooks:\n  - notebook: a_ok\n    resources: {resources}\n")
    with pytest.raises(ValueError, match=r"spec\.yaml: " + ("notebook entry 'a_ok': " if where == "entry" else "")
                       + r"resources\b.*" + message):
        runspec.load_spec(write_spec(tmp_path, body))


def test_two_entries_with_the_same_stage_name_are_an_error(tmp_path, nbdir):
    """Entries of one notebook in a row run side by side (one step); each needs its own stage name,
    hence its own output notebook and manifest record."""
    ok = runspec.load_spec(write_spec(tmp_path, "name: t\nnotebooks:\n  - notebook: a_ok\n    foreach: {name: [p]}\n"
                                           "  - notebook: a_ok\n    foreach: {name: [q]}\n"))
    assert [st.name for st in ok.stages] == ["a_ok[p]", "a_ok[q]"]
    with pytest.raises(ValueError, match=r"spec\.yaml: stage 'a_ok\[p\]' appears twice.*foreach"):
        runspec.load_spec(write_spec(tmp_path, "name: t\nnotebooks:\n  - notebook: a_ok\n    foreach: {name: [p]}\n"
                                          "  - notebook: a_ok\n    foreach: {name: [p]}\n"))
    with pytest.raises(ValueError, match=r"stage 'a_ok' appears twice"):
        runspec.load_spec(write_spec(tmp_path, "name: t\nnotebooks:\n  - notebook: a_ok\n  - notebook: a_ok\n"))
