"""``pneumoloc status``'s table gives each stage's wall seconds from its stamps."""
from __future__ import annotations

from pneumoloc.runs.manifest import describe


def test_status_table_shows_each_stage_wall_seconds():
    manifest = {"run": "demo", "status": "ok", "stages": [
        {"name": "01_audit", "status": "ok", "started": "2026-11-26T13:54:30+00:00",
         "ended": "2026-11-26T13:55:08+00:00", "log": "logs/01.log"},
        {"name": "02_train[resnet18]", "status": "ok", "started": "2026-11-26T23:59:50+00:00",
         "ended": "2026-11-27T00:05:20+00:00", "log": "logs/02.log"},
        {"name": "03_maps", "status": "pending", "started": None, "ended": None}]}
    lines = describe(manifest).splitlines()
    at = lines[1].index("seconds")  # fixed-width columns: read each row's seconds under the header
    rows = {line.split()[0]: line for line in lines[2:]}
    assert rows["01_audit"][at:].split()[0] == "38"
    assert rows["02_train[resnet18]"][at:].split()[0] == "330"  # across midnight
    assert rows["03_maps"].split() == ["03_maps", "pending"]  # not run yet: no times, no seconds
