"""The protocol's parts against hand-computed values: per-case scores (empty masks, masks at the border), grid
parsing, selection of the grid point and training length."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from femurseg.errors import InputError
from femurseg.protocol.profiles import PROFILES, ProtocolSettings, grid_points, parse_grid, point_name
from femurseg.protocol.runner import select
from femurseg.protocol.units import ROW_FIELDS, _rows_text, read_rows, score_case


def test_score_case_by_hand_with_a_mask_at_the_border_and_an_empty_side() -> None:
    truth = np.zeros((10, 10, 10), np.uint8)
    truth[0:4, 0:5, 0:5] = 1  # touches the array's border: 100 voxels
    truth[5:9, 5:9, 5:9] = 2  # 64 voxels
    pred = np.zeros_like(truth)
    pred[0:4, 0:5, 0:4] = 1  # 80 of the 100, none outside
    s = score_case(pred, truth, (2.0, 1.0, 1.0))
    r, left = s["right"], s["left"]
    assert r["dice"] == pytest.approx(2 * 80 / 180) and r["sensitivity"] == pytest.approx(0.8)
    assert r["specificity"] == 1.0 and r["specificity_near"] == 1.0
    assert r["volume_true_ml"] == pytest.approx(100 * 2.0 / 1000) and r["volume_pred_ml"] == pytest.approx(0.16)
    assert r["hd95"] == pytest.approx(1.0)  # the missing column is one voxel (1 mm in x) from the prediction
    # The left femur was not found: Dice 0, sensitivity 0, distances undefined (NaN), not an error.
    assert left["dice"] == 0.0 and left["sensitivity"] == 0.0 and math.isnan(left["hd95"])
    assert left["volume_pred_ml"] == 0.0
    # A side absent from the truth is not scored, even if predicted.
    only_right = truth.copy()
    only_right[only_right == 2] = 0
    assert set(score_case(truth, only_right, (1.0, 1.0, 1.0))) == {"right"}


def test_rows_round_trip_through_metrics_csv(tmp_path: Path) -> None:
    row = {"case": "c1", "side": "left", "sex": "F", "dice": 0.0, "sensitivity": 0.0, "specificity": 1.0,
           "specificity_near": 0.99, "hd95": float("nan"), "assd": float("nan"), "volume_pred_ml": 0.0,
           "volume_true_ml": 12.5, "qc": "reject"}
    (tmp_path / "m.csv").write_text(_rows_text([row]))
    back = read_rows(tmp_path / "m.csv")[0]
    assert list(back) == list(ROW_FIELDS) and back["volume_true_ml"] == 12.5 and math.isnan(back["hd95"])


def test_grids_and_profiles() -> None:
    g = parse_grid(["l2=1e-5,1e-4", "lr=3e-4"])
    assert g == {"l2_lambda": (1e-5, 1e-4), "lr": (3e-4,)}
    pts = grid_points(g)
    assert pts == [{"l2_lambda": 1e-5, "lr": 3e-4}, {"l2_lambda": 1e-4, "lr": 3e-4}]
    assert point_name(pts[0]) == "l2_lambda=1e-05_lr=0.0003"
    for bad in (["beta=1"], ["l2="], ["l2=abc"], ["l2=-1"]):
        with pytest.raises(InputError):
            parse_grid(bad)
    paper = PROFILES["paper"]
    assert (paper.folds, paper.test_fraction, paper.cohorts) == (10, 0.1, ("all", "male", "female"))
    assert ProtocolSettings.from_json(paper.to_json()) == paper
    with pytest.raises(InputError):
        ProtocolSettings(folds=1)


def _unit(root: Path, point: str, k: int, dices: list[float], best_step: int) -> None:
    unit = root / "units" / "all" / point / f"fold{k}"
    unit.mkdir(parents=True)
    rows = [{"case": f"c{k}{i}", "side": "right", "sex": "M", "dice": d, "sensitivity": d, "specificity": 1.0,
             "specificity_near": 1.0, "hd95": 1.0, "assd": 0.2, "volume_pred_ml": 100.0, "volume_true_ml": 100.0,
             "qc": "ok"} for i, d in enumerate(dices)]
    (unit / "metrics.csv").write_text(_rows_text(rows))
    (unit / "done.json").write_text(json.dumps({"best_step": best_step}))


def test_selection_takes_the_best_mean_validation_dice_and_the_median_best_step(tmp_path: Path) -> None:
    s = ProtocolSettings(folds=3, cohorts=("all",), grid={"l2_lambda": (1e-5, 1e-4)}, steps=1000, val_every=100)
    _unit(tmp_path, "l2_lambda=1e-05", 0, [0.90, 0.92], 300)
    _unit(tmp_path, "l2_lambda=1e-05", 1, [0.94], 500)
    _unit(tmp_path, "l2_lambda=1e-05", 2, [0.96, 0.96], 1000)
    _unit(tmp_path, "l2_lambda=0.0001", 0, [0.95, 0.95], 200)
    _unit(tmp_path, "l2_lambda=0.0001", 1, [0.95], 250)  # between validations: rounded up
    _unit(tmp_path, "l2_lambda=0.0001", 2, [0.94, 0.96], 800)
    sel = select(tmp_path, "all", s)
    by = {g["name"]: g for g in sel["grid"]}
    assert by["l2_lambda=1e-05"]["mean_val_dice"] == pytest.approx((0.90 + 0.92 + 0.94 + 0.96 + 0.96) / 5)
    assert by["l2_lambda=1e-05"]["fold_dice"] == pytest.approx([0.91, 0.94, 0.96])
    assert sel["chosen"] == "l2_lambda=0.0001" and sel["point"] == {"l2_lambda": 1e-4}
    assert sel["steps"] == 300  # median of 200, 250, 800 is 250 -> the next validation step
    (tmp_path / "units" / "all" / "l2_lambda=0.0001" / "fold2" / "done.json").unlink()
    with pytest.raises(InputError, match="--fold 2"):
        select(tmp_path, "all", s)


def test_the_paper_profile_estimate_by_hand() -> None:
    from femurseg.protocol.profiles import estimate_hours

    e = estimate_hours(PROFILES["paper"], 397, seconds_per_step=0.5, seconds_per_case=10.0, sex_fraction=216 / 397)
    assert e["units"] == 3 * (10 * 2 + 1) and e["steps"] == 63 * 8000
    # Each subject is in "all" and in one sex: 794 memberships, 10 % held out (scored once), 90 % validated once
    # per grid point (2).
    assert e["cases_segmented"] == round((794 - 79.4) * 2 + 79.4)
    assert e["train_hours"] == pytest.approx(63 * 8000 * 0.5 / 3600)
    assert e["total_hours"] == pytest.approx(e["train_hours"] + 1508.6 * 10 / 3600)
