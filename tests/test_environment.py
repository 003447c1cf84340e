"""Paths, device and provenance: the cross-cutting environment every stage uses."""
from __future__ import annotations

import pytest

from pneumoloc.environment import PROJECT_ROOT, RunPaths, environment_line, pick_device, resolve


def test_relative_paths_are_taken_from_the_project_root_not_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert resolve("data/phantom") == PROJECT_ROOT / "data" / "phantom"


def test_a_models_predictions_live_in_its_model_folder(tmp_path):
    run = RunPaths.from_params(str(tmp_path / "run"), str(tmp_path / "figures"))
    assert run.model_predictions("resnet18") == run.model_dir("resnet18") / "predictions.csv"
    assert run.model_predictions("a/b").parent == run.model_dir("a/b")


def test_device_and_environment_line(monkeypatch):
    monkeypatch.setenv("PNEUMOLOC_DEVICE", "cpu")
    assert str(pick_device()) == "cpu"
    assert "device cpu" in environment_line()
    with pytest.raises(ValueError, match="run_dir is empty"):
        RunPaths.from_params("")
