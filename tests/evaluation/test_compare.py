from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from femurseg.cli.main import main
from femurseg.errors import InputError
from femurseg.evaluation.compare import evaluate_folders
from femurseg.geometry import Grid
from femurseg.io import image_from_array, write_image

GRID = Grid(shape_zyx=(12, 16, 40), spacing_zyx=(2.0, 1.0, 0.5), origin_xyz=(-10.0, 5.0, 3.0))


def _labels(shift_right: int = 0, swap: bool = False) -> np.ndarray:
    a = np.zeros(GRID.shape_zyx, np.uint8)
    a[3:9, 4:12, 4 + shift_right:14 + shift_right] = 2 if swap else 1  # patient's right: small x
    a[3:9, 4:12, 26:36] = 1 if swap else 2
    return a


def _cohort(tmp_path, cases: dict[str, tuple[np.ndarray, np.ndarray]]):
    pred, truth = tmp_path / "pred", tmp_path / "cohort" / "labels"
    pred.mkdir()
    truth.mkdir(parents=True)
    for name, (p, t) in cases.items():
        write_image(image_from_array(p, GRID), pred / f"{name}.nii.gz")
        write_image(image_from_array(t, GRID), truth / f"{name}.nii.gz")
    return pred, tmp_path / "cohort"


def test_perfect_shifted_and_swapped_cases(tmp_path):
    truth = _labels()
    pred_dir, truth_dir = _cohort(tmp_path, {
        "a": (truth, truth), "b": (_labels(shift_right=2), truth), "c": (_labels(swap=True), truth),
    })
    result = evaluate_folders(pred_dir=pred_dir, truth_dir=truth_dir)
    rows = {(r["case"], r["side"]): r for r in result.rows}
    assert rows["a", "right"]["dice"] == 1.0 and rows["a", "left"]["hd95"] == 0.0
    assert rows["b", "right"]["dice"] == pytest.approx(2 * 8 / 20)  # 10-wide box shifted by 2 of 10 columns
    assert rows["b", "right"]["hd"] == pytest.approx(1.0)  # 2 voxels of 0.5 mm along x
    assert rows["b", "left"]["dice"] == 1.0
    assert rows["c", "right"]["swapped"] and rows["c", "left"]["swapped"] and not rows["a", "right"]["swapped"]
    assert result.summary["n_cases"] == 3 and result.summary["all"]["swapped"] == 2
    assert result.summary["right"]["volume"]["n"] == 3


def test_cli_writes_csv_and_summary(tmp_path, capsys):
    truth = _labels()
    pred_dir, truth_dir = _cohort(tmp_path, {"a": (truth, truth), "b": (_labels(shift_right=1), truth)})
    code = main(["evaluate", str(pred_dir), "--truth", str(truth_dir), "-o", str(tmp_path / "m.csv"),
                 "--summary", str(tmp_path / "s.json")])
    assert code == 0
    rows = list(csv.DictReader(open(tmp_path / "m.csv")))
    assert len(rows) == 4 and {r["side"] for r in rows} == {"right", "left"}
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["left"]["dice"]["mean"] == 1.0
    assert "right" in capsys.readouterr().out


def test_grid_mismatch_and_missing_folders(tmp_path, capsys):
    pred_dir, truth_dir = _cohort(tmp_path, {"a": (_labels(), _labels())})
    other = Grid(shape_zyx=GRID.shape_zyx, spacing_zyx=(2.0, 1.0, 0.6), origin_xyz=GRID.origin_xyz)
    write_image(image_from_array(_labels(), other), pred_dir / "a.nii.gz")
    with pytest.raises(InputError, match="grids differ"):
        evaluate_folders(pred_dir=pred_dir, truth_dir=truth_dir)
    assert main(["evaluate", str(tmp_path / "nope"), "--truth", str(truth_dir)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("femurseg: error:")


def test_cli_by_sex_summarises_each_group(tmp_path, capsys):
    truth = _labels()
    pred_dir, truth_dir = _cohort(tmp_path, {
        "a": (truth, truth), "b": (_labels(shift_right=2), truth), "c": (truth, truth),
    })
    (truth_dir / "cohort.csv").write_text("case_id,sex,age\na,F,60\nb,M,70\nc,,55\n", encoding="utf-8")
    code = main(["evaluate", str(pred_dir), "--truth", str(truth_dir), "--by", "sex", "--summary", str(tmp_path / "s.json")])
    assert code == 0
    out = capsys.readouterr().out
    assert "sex = F (1 cases)" in out and "sex = M (1 cases)" in out and "sex = (none) (1 cases)" in out
    groups = json.loads((tmp_path / "s.json").read_text())["by"]["groups"]
    assert set(groups) == {"F", "M", "(none)"}
    assert groups["F"]["right"]["dice"]["mean"] == 1.0
    assert groups["M"]["right"]["dice"]["mean"] == pytest.approx(2 * 8 / 20)  # only the shifted case
    # The whole-cohort summary is unchanged by grouping.
    assert json.loads((tmp_path / "s.json").read_text())["right"]["n"] == 3


def test_cli_by_refuses_unknown_column_and_missing_table(tmp_path, capsys):
    pred_dir, truth_dir = _cohort(tmp_path, {"a": (_labels(), _labels())})
    assert main(["evaluate", str(pred_dir), "--truth", str(truth_dir), "--by", "sex"]) == 2
    assert "needs TRUTH_DIR to be a cohort folder with cohort.csv" in capsys.readouterr().err
    (truth_dir / "cohort.csv").write_text("case_id,sex\na,F\n", encoding="utf-8")
    assert main(["evaluate", str(pred_dir), "--truth", str(truth_dir), "--by", "scanner"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no column 'scanner'; it has sex" in err[0]
