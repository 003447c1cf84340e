"""The command line and the promise that importing pneumoloc stays light."""
import subprocess
import sys

import pytest

from pneumoloc.cli import _parse_sets, build_parser

HEAVY = ("torch", "timm", "pytorch_grad_cam", "captum", "torchxrayvision", "sklearn", "matplotlib")


def test_import_and_help_do_not_load_heavy_libraries():
    code = ("import sys, pneumoloc, pneumoloc.cli\n"
            "pneumoloc.cli.build_parser().format_help()\n"
            f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_help_runs():
    out = subprocess.run([sys.executable, "-m", "pneumoloc.cli", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "run" in out.stdout and "phantom" in out.stdout


def test_phantom_flags_come_from_the_config():
    import dataclasses

    from pneumoloc.phantom.config import PhantomConfig

    args = build_parser().parse_args(["phantom", "--n-images", "10", "--images-per-patient", "1", "2"])
    assert args.n_images == 10 and args.images_per_patient == [1, 2]
    flags = build_parser()._subparsers._group_actions[0].choices["phantom"].format_help()
    for f in dataclasses.fields(PhantomConfig):
        assert "--" + f.name.replace("_", "-") in flags


def test_set_values_are_yaml():
    assert _parse_sets(["epochs=3", "backbones=[a, b]", "name=x"]) == {"epochs": 3, "backbones": ["a", "b"], "name": "x"}
    with pytest.raises(SystemExit, match="KEY=VALUE"):
        _parse_sets(["epochs"])


def test_run_reports_spec_errors(tmp_path):
    spec = tmp_path / "bad.yaml"
    spec.write_text("name: bad\nnotebookz: []\n")
    out = subprocess.run([sys.executable, "-m", "pneumoloc.cli", "run", str(spec)], capture_output=True, text=True)
    assert out.returncode == 2 and "unknown keys" in out.stderr


@pytest.mark.parametrize("signum, code", [(15, 143), (2, 130)])
def test_run_stopped_by_a_signal_exits_128_plus_the_signal(monkeypatch, capsys, signum, code):
    from pneumoloc import cli
    from pneumoloc.runs import runner as runs

    def stopped(*args, **kwargs):
        raise runs.RunInterrupted(signum, "stage x interrupted")

    monkeypatch.setattr(runs, "run_spec", stopped)
    assert cli.main(["run", "whatever.yaml"]) == code
    assert "interrupted" in capsys.readouterr().err


def test_run_on_a_locked_folder_exits_75(monkeypatch, capsys):
    from pneumoloc import cli
    from pneumoloc.runs import lock as run_lock, runner as runs

    def locked(*args, **kwargs):
        raise run_lock.RunLocked("papermill_runs/x is in use by pneumoloc run pid 4242")

    monkeypatch.setattr(runs, "run_spec", locked)
    assert cli.main(["run", "whatever.yaml"]) == 75
    assert "pid 4242" in capsys.readouterr().err
