"""Statistics for the protocol's report: bootstrap CIs, specificity near the femur, fold spread, group tests."""

from __future__ import annotations

import numpy as np
import pytest

from femurseg.evaluation.stats import bootstrap_ci, compare_groups, fold_spread, specificity_near, summarise_ci


def test_bootstrap_ci_covers_the_mean_and_narrows_with_n() -> None:
    rng = np.random.default_rng(0)
    small = rng.normal(0.98, 0.01, 10)
    big = rng.normal(0.98, 0.01, 400)
    lo_s, hi_s = bootstrap_ci(small)
    lo_b, hi_b = bootstrap_ci(big)
    assert lo_s < small.mean() < hi_s and lo_b < big.mean() < hi_b
    assert (hi_b - lo_b) < (hi_s - lo_s) / 3
    assert abs((hi_b - lo_b) - 2 * 1.96 * 0.01 / np.sqrt(400)) < 0.0005  # the normal-theory width
    assert np.isnan(bootstrap_ci([0.9])[0])
    assert bootstrap_ci(small, seed=1) == bootstrap_ci(small, seed=1)


def test_specificity_near_the_femur_sees_what_whole_scan_specificity_hides() -> None:
    truth = np.zeros((60, 60, 60), bool)
    truth[20:40, 20:40, 20:40] = True
    pred = truth.copy()
    pred[18:20, 20:40, 20:40] = True  # 800 false voxels next to the bone
    whole = 1 - 800 / (truth.size - truth.sum())
    near = specificity_near(pred, truth, (1.0, 1.0, 1.0), margin_mm=10.0)
    box_bg = 40 ** 3 - 20 ** 3
    assert whole > 0.996 and near == pytest.approx(1 - 800 / box_bg)
    assert specificity_near(truth, truth, (1.0, 1.0, 1.0)) == 1.0
    assert np.isnan(specificity_near(pred, np.zeros_like(truth), (1.0, 1.0, 1.0)))


def test_summaries_folds_and_groups() -> None:
    rows = [{"dice": 0.98, "hd95_mm": 1.0}, {"dice": 0.99, "hd95_mm": float("nan")}, {"dice": 0.97}]
    s = summarise_ci(rows, ["dice", "hd95_mm"])
    assert s["dice"]["n"] == 3 and s["dice"]["mean"] == pytest.approx(0.98)
    assert s["hd95_mm"]["n"] == 1 and np.isnan(s["hd95_mm"]["ci_low"])
    f = fold_spread([0.98, 0.97, 0.99, float("nan")])
    assert f["n_folds"] == 3 and f["min"] == 0.97 and f["sd"] == pytest.approx(0.01)
    rng = np.random.default_rng(1)
    same = compare_groups(rng.normal(0.98, 0.01, 40), rng.normal(0.98, 0.01, 40))
    differ = compare_groups(rng.normal(0.99, 0.005, 40), rng.normal(0.97, 0.005, 40))
    assert same["p_value"] > 0.05 and differ["p_value"] < 1e-6 and differ["difference_of_medians"] > 0.015
    assert "Mann-Whitney" in differ["test"] and np.isnan(compare_groups([0.9], [0.8, 0.7])["p_value"])
