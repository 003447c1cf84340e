"""Stored files are one unit with their checksum; a crash at any write leaves a loadable file; temp files are cleaned."""
from __future__ import annotations

import hashlib
import io
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from pneumoloc import storage
from pneumoloc.storage import CorruptFileError, load_arrays, load_torch, save_arrays, save_torch


class Killed(BaseException):
    """Stands for a kill at an exact instant (BaseException: no handler in the library catches it)."""


def _crash_after_first_replace(monkeypatch):
    """Let the first rename of a save through, then 'kill' the process at the next one."""
    real, calls = os.replace, []

    def replace(src, dst):
        calls.append(dst)
        if len(calls) > 1:
            raise Killed(f"killed before renaming onto {dst}")
        return real(src, dst)
    monkeypatch.setattr(os, "replace", replace)
    return calls


def test_torch_file_is_one_unit_with_its_checksum(tmp_path, monkeypatch):
    path = save_torch(tmp_path / "last.pt", {"w": torch.zeros(3), "epoch": 1})
    _crash_after_first_replace(monkeypatch)
    try:
        save_torch(path, {"w": torch.ones(3), "epoch": 2})
    except Killed:
        pass  # a two-write save dies here with the new file beside the old checksum
    monkeypatch.undo()
    assert load_torch(path)["epoch"] in (1, 2)  # old or new, never "corrupt"
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"], "no sidecar, no temp file"


def test_arrays_file_is_one_unit_with_its_checksum(tmp_path, monkeypatch):
    path = save_arrays(tmp_path / "m.npz", a=np.zeros(2))
    _crash_after_first_replace(monkeypatch)
    try:
        save_arrays(path, a=np.ones(2))
    except Killed:
        pass
    monkeypatch.undo()
    assert load_arrays(path)["a"].tolist() in ([0, 0], [1, 1])


@pytest.mark.parametrize("cut", [10, 60, -1])
def test_truncated_or_altered_file_is_refused(tmp_path, cut):
    path = save_torch(tmp_path / "a.pt", {"w": torch.arange(100.0)})
    data = bytearray(path.read_bytes())
    if cut > 0:
        path.write_bytes(bytes(data[:cut]))
    else:
        data[-20] ^= 1  # one flipped bit past the header
        path.write_bytes(bytes(data))
    with pytest.raises(CorruptFileError, match="a.pt"):
        load_torch(path)
    with pytest.raises(CorruptFileError):
        storage.verify(path)


def test_files_with_a_sidecar_checksum_still_load_and_bare_ones_are_refused(tmp_path):
    buf = io.BytesIO()
    torch.save({"w": torch.ones(2)}, buf)
    old = tmp_path / "old.pt"
    old.write_bytes(buf.getvalue())
    old.with_name("old.pt.sha256").write_text(hashlib.sha256(buf.getvalue()).hexdigest() + "\n")
    assert torch.equal(load_torch(old)["w"], torch.ones(2))
    old.with_name("old.pt.sha256").write_text("0" * 64 + "\n")
    with pytest.raises(CorruptFileError, match="does not match"):
        load_torch(old)
    bare = tmp_path / "bare.pt"
    bare.write_bytes(buf.getvalue())
    with pytest.raises(CorruptFileError, match="no checksum"):
        load_torch(bare)
    assert torch.equal(load_torch(bare, check=False)["w"], torch.ones(2))  # foreign files, still weights_only


def test_saving_over_a_sidecar_file_removes_the_stale_sidecar(tmp_path):
    side = tmp_path / "a.pt.sha256"
    side.write_text("0" * 64 + "\n")
    save_torch(tmp_path / "a.pt", {"w": torch.ones(1)})
    assert not side.exists()
    assert torch.equal(load_torch(tmp_path / "a.pt")["w"], torch.ones(1))


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_temp_files_of_dead_writers_are_removed_on_the_next_write(tmp_path):
    host = storage._host_tag()
    dead = tmp_path / f".last.pt.{_dead_pid()}@{host}.abc123.tmp"
    other = tmp_path / f".history.csv.{_dead_pid()}@{host}.x_9.tmp"
    live = tmp_path / f".best.pt.{os.getpid()}@{host}.def456.tmp"  # a writer still at work
    remote = tmp_path / f".best.pt.{_dead_pid()}@elsewhere.ghi789.tmp"  # pid means nothing here
    unowned = tmp_path / ".last.pt.k2j3h4.tmp"  # named without a writer: removed once old
    fresh_unowned = tmp_path / ".best.pt.a1b2c3.tmp"
    for p in (dead, other, live, remote, unowned, fresh_unowned):
        p.write_bytes(b"partial")
    old = time.time() - 2 * storage.STALE_TEMP_SECONDS
    os.utime(unowned, (old, old))
    unrelated = tmp_path / ".notes.tmp"
    unrelated.write_text("not ours")
    storage.save_json(tmp_path / "x.json", {"a": 1})
    left = {p.name for p in tmp_path.iterdir()}
    assert left == {"x.json", live.name, remote.name, fresh_unowned.name, unrelated.name}


def test_clean_stale_temps_reports_what_it_removed(tmp_path):
    dead = tmp_path / f".m.npz.{_dead_pid()}@{storage._host_tag()}.q.tmp"
    dead.write_bytes(b"")
    assert storage.clean_stale_temps(tmp_path) == [dead]
    assert storage.clean_stale_temps(tmp_path / "missing") == []
