"""The recipe rule in notebook 05: the reference and the greedy picks skip undertrained members
and members of another recipe; every system carries its recipe."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from test_ensembles_combiners import synthetic_run

from pneumoloc.ensembles import summary
from pneumoloc.ensembles.combiners import fit_ensemble, member_auc
from pneumoloc.ensembles.report import load_predictions


@pytest.fixture
def preds(tmp_path):
    run, _ = synthetic_run(tmp_path, names=("m1", "m2", "m3", "m4"))
    return load_predictions(run, ["m1", "m2", "m3", "m4"])


def _recipes(preds, undertrained=(), other_recipe=()):
    return pd.DataFrame({"recipe": ["r-other" if m in other_recipe else "r-main" for m in preds.members],
                         "undertrained": [m in undertrained for m in preds.members],
                         "val_roc_auc": 0.9}, index=preds.members)


def _ranked(preds) -> list[str]:
    p, y = preds.probs("val"), preds.labels("val")
    return sorted(preds.members, key=lambda m: -member_auc(y, p[:, preds.members.index(m)]))


def test_reference_and_greedy_skip_undertrained_and_other_recipe_members(preds):
    best, second, third, fourth = _ranked(preds)
    plain = summary.fit_systems(preds, ["greedy"])
    assert plain.reference == best
    sy = summary.fit_systems(preds, ["mean", "greedy"], _recipes(preds, undertrained=[best], other_recipe=[second]))
    assert sy.reference == third
    greedy = sy.fitted["greedy"]
    assert greedy.weights[preds.members.index(best)] == 0 and greedy.weights[preds.members.index(second)] == 0
    assert greedy.weights.sum() == pytest.approx(1.0)
    alone = fit_ensemble("greedy", preds.probs("val")[:, [preds.members.index(m) for m in (third, fourth)]],
                         preds.labels("val"), [third, fourth])  # greedy on the two candidates only
    assert greedy.weights[preds.members.index(third)] == alone.weights[0]
    assert greedy.weights[preds.members.index(fourth)] == alone.weights[1]
    assert np.allclose(sy.fitted["mean"].weights, 1 / 4)  # the other combiners keep every member
    assert "undertrained" in sy.describe() and "recipe" in sy.describe()
    across = summary.fit_systems(preds, ["greedy"], _recipes(preds, undertrained=[best], other_recipe=[second]),
                                 compare_recipes=True)
    assert across.reference == second


def test_every_member_undertrained_names_a_reference_without_a_claim(preds):
    sy = summary.fit_systems(preds, ["greedy"], _recipes(preds, undertrained=preds.members))
    assert sy.reference == _ranked(preds)[0] and not sy.selection.claim
    assert "no best-model claim" in sy.describe()


def test_system_recipes_and_the_summary_carry_recipe_columns(preds):
    rec = _recipes(preds, undertrained=["m1"], other_recipe=["m3", "m4"])
    sy = summary.fit_systems(preds, ["mean", "greedy"], rec, compare_recipes=True)
    labels = summary.system_recipes(rec, sy.fitted, sy.members)
    assert labels.loc["m3", "recipe"] == "r-other" and labels.loc["m1", "undertrained"] == "yes"
    assert labels.loc["ens_mean", "recipe"] == "mixed: r-main + r-other"
    assert labels.loc["ens_mean", "undertrained"] == "members m1"
    systems = list(sy.test)
    cls = pd.DataFrame({"system": systems, "roc_auc": 0.9, "d_roc_auc": 0.0, "delong_p": 1.0, "pr_auc": 0.8, "f1": 0.7})
    cal = pd.DataFrame({"ece": 0.1}, index=systems)
    frontier = pd.DataFrame({"kind": "member", "params": 1e6, "latency_ms": 1.0}, index=systems)
    table, pretty = summary.summary_table(cls, cal, frontier, pd.DataFrame(columns=["system", "metric"]), "m2", labels)
    assert {"recipe", "undertrained"} <= set(pretty.columns)
    assert pretty.loc["ens_mean", "recipe"] == "mixed: r-main + r-other"
