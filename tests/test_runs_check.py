"""``pneumoloc run SPEC --check``: listing through the readers, weights availability, time estimates,
every tracked spec against real-layout fixtures, and the failures it must report together."""
from __future__ import annotations

from pathlib import Path

import pytest
from fixtures.registry import FIXTURES

from pneumoloc.data.readers import list_dataset, read_dataset, reader_names
from pneumoloc.environment import RUNS_DIR

REAL = [n for n in reader_names() if n != "phantom"]


def _no_decoding(monkeypatch) -> None:
    """Make any image probe or decode fail the test: listing must not open an image."""
    def refuse(*args, **kwargs):
        raise AssertionError("listing opened an image")

    import pneumoloc.data.images as images
    import pneumoloc.data.readers.base as base

    monkeypatch.setattr(base, "probe_images", refuse)
    monkeypatch.setattr(images, "probe_images", refuse)
    monkeypatch.setattr(images, "read_grayscale", refuse)
    import pydicom

    monkeypatch.setattr(pydicom, "dcmread", refuse)


@pytest.mark.parametrize("name", REAL)
def test_listing_lists_what_reading_loads_without_opening_an_image(tmp_path, monkeypatch, name):
    root = FIXTURES[name](tmp_path / "data")
    read = read_dataset(name, str(root), progress=False)
    _no_decoding(monkeypatch)
    listed = list_dataset(name, str(root), progress=False)
    # the fixtures' images are all readable: listing and reading agree on every image and box
    assert sorted(listed.images["image_id"]) == sorted(read.images["image_id"])
    assert len(listed.boxes) == len(read.boxes) and listed.findings == read.findings
    assert listed.images["width"].isna().all()  # sizes need a decode; listing leaves them unknown


def test_listing_the_phantom_reads_its_tables_only(tmp_path, monkeypatch):
    from pneumoloc.phantom.writer import generate_phantom

    root = generate_phantom(tmp_path / "phantom", n_images=12, size=32, workers=1)
    _no_decoding(monkeypatch)
    assert len(list_dataset("phantom", str(root)).images) == 12


def test_listing_skips_and_counts_a_missing_image(tmp_path):
    root = FIXTURES["rsna"](tmp_path / "data")  # images listed by a table, so a lost file is noticed
    full = list_dataset("rsna", str(root), progress=False)
    victim = Path(full.images["path"].iloc[0])
    victim.unlink()
    listed = list_dataset("rsna", str(root), progress=False, max_skipped_fraction=0.5)
    assert len(listed.images) == len(full.images) - 1
    assert listed.skipped["path"].tolist() == [str(victim.resolve())]
    assert "missing" in listed.skipped["reason"].iloc[0]


def test_listing_a_missing_file_gives_the_readers_message(tmp_path):
    root = FIXTURES["rsna"](tmp_path / "data")
    (Path(root) / "stage_2_detailed_class_info.csv").unlink()
    with pytest.raises(ValueError, match=r"stage_2_detailed_class_info.csv not found; expected layout"):
        list_dataset("rsna", str(root), progress=False)


# --- --check on every tracked spec -------------------------------------------------------------

SPECS = sorted((Path(__file__).parents[1] / "papermill_runs").glob("*.yaml"))


def _hub_cache(root: Path, monkeypatch, fill: bool) -> None:
    """Point timm's weight caches at ``root``; with ``fill``, a cached file for every registry backbone,
    laid out as huggingface_hub writes them (models--org--name/refs/main, snapshots/<rev>/file)."""
    import huggingface_hub.constants

    from pneumoloc.models.specs import BACKBONES
    import timm

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(root / "hf"))
    monkeypatch.setenv("TORCH_HOME", str(root / "torch"))
    for spec in BACKBONES.values() if fill else ():
        repo = timm.models.get_pretrained_cfg(spec.timm_name).hf_hub_id
        folder = root / "hf" / ("models--" + repo.replace("/", "--"))
        (folder / "refs").mkdir(parents=True, exist_ok=True)
        (folder / "refs" / "main").write_text("0" * 40)
        (folder / "snapshots" / ("0" * 40)).mkdir(parents=True, exist_ok=True)
        (folder / "snapshots" / ("0" * 40) / "model.safetensors").write_bytes(b"weights")


def _dataset_of(spec_path: Path) -> str:
    from pneumoloc.runs.spec import load_spec

    first = next(s for s in load_spec(spec_path).stages if s.notebook.stem == "01_data_audit_and_patient_split")
    return first.parameters.get("dataset", "phantom")


def _data_root(tmp_path: Path, dataset: str) -> Path:
    """A real-layout fixture of ``dataset``; for the phantom an absent folder (notebook 01 generates it)."""
    return tmp_path / "phantom" if dataset == "phantom" else FIXTURES[dataset](tmp_path / "data")


def test_every_paper_protocol_has_a_spec():
    names = {p.stem for p in SPECS}
    assert {"kermany_paper", "rsna_wildcat", "mimic_multilabel", "chexpert_multilabel", "nih_boxes"} <= names


@pytest.mark.parametrize("spec", SPECS, ids=[p.stem for p in SPECS])
def test_every_tracked_spec_passes_check_on_its_fixture(tmp_path, monkeypatch, spec):
    from pneumoloc.runs.runner import check_run

    _hub_cache(tmp_path / "cache", monkeypatch, fill=True)
    dataset = _dataset_of(spec)
    plan = check_run(spec, overrides={"data_root": str(_data_root(tmp_path, dataset))})
    assert f"data: {dataset} at" in plan and "estimated time per stage" in plan
    assert "total, one stage after another" in plan and "not estimated" not in plan


def test_kermany_paper_asks_for_imagenet_weights_and_check_finds_them_in_the_cache(tmp_path, monkeypatch):
    from pneumoloc.runs.runner import check_run

    _hub_cache(tmp_path / "cache", monkeypatch, fill=True)
    plan = check_run(SPECS[0].parent / "kermany_paper.yaml",
                     overrides={"data_root": str(FIXTURES["kermany"](tmp_path / "data"))})
    weights = [line for line in plan.splitlines() if "weights: 02_train_backbone" in line]
    assert len(weights) == 7 and all("timm hub cache" in line for line in weights)


# --- what --check must refuse, all problems together --------------------------------------------

def test_wrong_layout_and_offline_weights_are_reported_together(tmp_path, monkeypatch):
    from pneumoloc.runs.check import CheckFailed
    from pneumoloc.runs.runner import check_run

    import socket

    def no_network(*args, **kwargs):
        raise AssertionError("--check tried to reach the network")

    _hub_cache(tmp_path / "cache", monkeypatch, fill=False)
    root = FIXTURES["rsna"](tmp_path / "data")
    (root / "stage_2_detailed_class_info.csv").unlink()
    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    with pytest.raises(CheckFailed) as err:
        check_run(SPECS[0].parent / "rsna_wildcat.yaml", overrides={"data_root": str(root)})
    problems = err.value.problems
    assert len(problems) == 1 + 6  # the layout, then each of the six backbones' weights
    assert "stage_2_detailed_class_info.csv not found; expected layout" in problems[0]
    offline = problems[1]
    assert "02_train_backbone[resnet18]" in offline and "'resnet18'" in offline
    assert "offline" in offline and "weights: <path" in offline and "pretrained: false" in offline
    assert str(err.value).count("\n  - ") == 7


def test_a_missing_local_weights_file_is_named(tmp_path, monkeypatch):
    from pneumoloc.runs.check import CheckFailed
    from pneumoloc.runs.runner import check_run

    root = FIXTURES["kermany"](tmp_path / "data")
    with pytest.raises(CheckFailed, match=r"weights='nowhere/resnet18.pth': no file at .*nowhere/resnet18.pth"):
        check_run(SPECS[0].parent / "tiny.yaml", overrides={"weights": "nowhere/resnet18.pth",
                                                          "dataset": "kermany", "data_root": str(root)})


def test_a_bad_parameter_is_a_check_failure_naming_it(tmp_path):
    from pneumoloc.runs.check import CheckFailed
    from pneumoloc.runs.runner import check_run

    with pytest.raises(CheckFailed, match=r"epochs=0 is outside \[1, inf\)"):
        check_run(SPECS[0].parent / "tiny.yaml", overrides={"epochs": 0, "data_root": str(tmp_path / "ph")})


def test_cli_check_prints_the_plan_and_exits_non_zero_on_problems(tmp_path, monkeypatch, capsys):
    from pneumoloc import cli

    _hub_cache(tmp_path / "cache", monkeypatch, fill=False)
    root = FIXTURES["nih"](tmp_path / "data")
    spec = str(SPECS[0].parent / "nih_boxes.yaml")
    assert cli.main(["run", spec, "--check", "--set", f"data_root={root}", "pretrained=false"]) == 0
    out = capsys.readouterr().out
    assert "data: nih at" in out and "weights: 02_train_backbone[resnet50]: from scratch" in out
    assert "03_gradcam_gallery" in out and "14 target(s)" in out  # one map per finding
    (root / "BBox_List_2017.csv").rename(root / "boxes.csv")  # optional file: still passes
    (root / "test_list.txt").unlink()  # official_split: true needs it
    assert cli.main(["run", spec, "--check", "--set", f"data_root={root}"]) == 2
    err = capsys.readouterr().err
    assert "test_list.txt not found" in err and "offline" in err


# --- the estimate ------------------------------------------------------------------------------

def test_every_map_method_and_registry_backbone_has_a_cost():
    from pneumoloc.explain.cams import method_names
    from pneumoloc.models.specs import BACKBONES
    from pneumoloc.runs import costs

    assert sorted(costs.METHOD_PASSES) == method_names()
    assert sorted(costs.BACKBONE_COSTS) == sorted(BACKBONES)


def test_estimate_hand_computed(tmp_path):
    """Kermany-sized split of 1,000 images; ResNet-18, 2 epochs at 112 px (a quarter of the 224 px pixels)."""
    from pneumoloc.runs import costs
    from pneumoloc.runs.check import DataSummary, estimate_stages
    from pneumoloc.runs.spec import load_spec

    spec = tmp_path / "s.yaml"
    spec.write_text("notebooks:\n"
                    "  - {notebook: 01_data_audit_and_patient_split, parameters: {near_duplicate_distance: -1}}\n"
                    "  - {notebook: 02_train_backbone, parameters: {backbone: resnet18, epochs: 2, image_size: 112}}\n"
                    "  - {notebook: 03_gradcam_gallery, parameters: {backbones: [resnet18], methods: [gradcam, "
                    "smoothgrad], layer_variants: {}}}\n")
    stages = load_spec(spec).stages
    est = estimate_stages(stages, DataSummary(1000, (0.7, 0.15, 0.15)))
    c, up = costs.BACKBONE_COSTS["resnet18"], costs.STAGE_STARTUP_SECONDS
    train = (2 * (700 * c.train + 150 * c.predict) + 300 * c.predict) / 4
    decode = 1000 * costs.DECODE_SECONDS
    assert est[0].cpu == pytest.approx(up)
    assert est[1].cpu == pytest.approx(train + decode + up)
    assert est[1].gpu == pytest.approx(train / 424 + decode + up)
    maps = 300 * (c.gradcam + 16 * c.train) / 4  # val + test; SmoothGrad's 16 noisy gradients
    assert est[2].cpu == pytest.approx(maps + up)


def test_a_phantom_already_generated_is_listed_by_check(tmp_path):
    """After notebook 01 has generated the phantom, --check lists it like any dataset folder."""
    from pneumoloc.phantom.writer import generate_phantom
    from pneumoloc.runs.runner import check_run

    root = generate_phantom(tmp_path / "phantom", n_images=12, size=32, workers=1)
    plan = check_run(RUNS_DIR / "tiny.yaml", overrides={"data_root": str(root)})
    assert "data: phantom at" in plan and "12 images" in plan
