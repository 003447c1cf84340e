"""The page of pneumoloc browse: recipe line and headline table."""
import json

import pandas as pd

from pneumoloc.environment import RunPaths
from pneumoloc.plots.app import headline_table


def test_headline_table_reads_metrics_and_says_what_is_missing(tmp_path):
    run = RunPaths(root=tmp_path, figures=tmp_path / "fig")
    d = run.model_dir("resnet18")
    d.mkdir(parents=True)
    (d / "metrics.json").write_text(json.dumps(
        {"operating_points": {"default": {"roc_auc": 0.9, "ci95": {"roc_auc": [0.8, 0.95]}}}}))
    run.localization.mkdir()
    pd.DataFrame([
        {"model": "resnet18", "method": "gradcam", "variant": "maps", "metric": "hit", "value": 0.5, "low": 0.4, "high": 0.6},
        {"model": "resnet18", "method": "gradcam", "variant": "shuffled_boxes", "metric": "hit", "value": 0.1, "low": 0, "high": 0.2},
        {"model": "chance", "method": "box_prior", "variant": "maps", "metric": "hit", "value": 0.3, "low": 0.2, "high": 0.4},
    ]).to_csv(run.localization / "metrics.csv", index=False)
    table = headline_table(run, [("resnet18", "gradcam"), ("resnet18", "hirescam")]).set_index(["model", "method"])
    assert table.loc[("resnet18", "gradcam"), "ROC-AUC [95% CI]"] == "0.900 [0.800, 0.950]"
    assert table.loc[("resnet18", "gradcam"), "hit rate [95% CI]"] == "0.500 [0.400, 0.600]"
    assert table.loc[("resnet18", "hirescam"), "hit rate [95% CI]"] == "n/a"
    assert table.loc[("resnet18", "gradcam"), "recipe"] == "recipe not recorded"
    assert table.loc[("resnet18", "gradcam"), "undertrained"] == "yes"  # no validation ROC-AUC recorded
    assert "nan" not in table.to_string().lower()
    assert table.loc[("chance", "box_prior"), "hit rate [95% CI]"] == "0.300 [0.200, 0.400]"
