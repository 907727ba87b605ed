"""``femurseg qct`` end to end on a phantom case with a calibration phantom: every figure against the generator's
truth, the outputs a user gets, and the refusals."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from femurseg.cli.main import main
from femurseg.phantom import PhantomOptions, generate, true_frames


@pytest.fixture(scope="module")
def case(tmp_path_factory):
    # A hip case at 1.4 mm in-plane, 2 mm slices, the calibration phantom in view (seconds to make), and the
    # phantom's certificate as a user would give it (each case's rods are varied).
    # 70–90 mm of femur under the lesser trochanters: enough shaft for the neck-shaft angle (a hip scan that
    # ends sooner gets none; see test_frame).
    options = PhantomOptions(matrix=288, spacing_xyz=(1.4, 1.4, 2.0), calibration_phantom=True, recon_circle=False,
                             z_margins_mm=((10.0, 40.0), (70.0, 90.0)))
    c = generate(7, options=options)
    folder = tmp_path_factory.mktemp("qct_case")
    sitk.WriteImage(c.scan, str(folder / "scan.nii.gz"))
    sitk.WriteImage(c.labels, str(folder / "mask.nii.gz"))
    f = c.facts
    rods = [{"name": n, "density": f[f"rod_{n}_k2hpo4_mg_cm3"], "water": f[f"rod_{n}_water_mg_cm3"]} for n in "ABCDE"]
    (folder / "certificate.json").write_text(json.dumps({"name": "mindways_model3", "material": "K2HPO4",
                                                         "model": "two-component", "rods": rods}))
    facts = dict(c.facts)
    for side, frame in true_frames(7, options=options).items():
        facts[f"true_{side}_neck_shaft_angle_deg"] = frame.neck_shaft_angle_deg
    return folder, facts


@pytest.fixture(scope="module")
def result(case, tmp_path_factory):
    folder, _ = case
    out = tmp_path_factory.mktemp("qct_out") / "res"
    code = main(["qct", str(folder / "scan.nii.gz"), "--mask", str(folder / "mask.nii.gz"), "-o", str(out),
                 "--phantom", str(folder / "certificate.json")])
    assert code == 0
    return out, json.loads((out / "qct.json").read_text())


def test_calibration_and_geometry_match_the_truth(case, result) -> None:
    _, facts = case
    _, data = result
    cal = data["calibration"]
    assert cal["method"] == "phantom" and cal["unit"] == "mg/cm³ K2HPO4"
    assert cal["slope_hu_per_mg_cm3"] == pytest.approx(facts["sigma_ct"], rel=0.01)
    assert cal["intercept_hu"] == pytest.approx(facts["beta_ct"], abs=1.0)
    assert cal["r_squared"] >= 0.99
    for side in ("right", "left"):
        frame = data["femurs"][side]["frame"]
        assert frame["head_diameter_mm"] == pytest.approx(facts[f"skeleton_{side}_head_diameter_mm"], abs=1.0)
        assert frame["neck_shaft_angle_deg"] == pytest.approx(facts[f"true_{side}_neck_shaft_angle_deg"], abs=3.0)


def test_trabecular_density_of_head_and_neck_match_the_truth(case, result) -> None:
    _, facts = case
    _, data = result
    for side in ("right", "left"):
        regions = data["femurs"][side]["regions"]
        for region in ("head", "neck"):
            truth = facts[f"trabecular_vbmd_{side}_{region}_mg_cm3"]
            measured = regions[region]["trabecular_vbmd_mg_cm3"]
            assert measured == pytest.approx(truth, rel=0.05), (side, region, measured, truth)


def test_outputs_a_user_gets(result) -> None:
    out, data = result
    assert sorted(p.name for p in out.iterdir()) == ["qct.csv", "qct.json", "report.html", "report.png"]
    assert (out / "report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    page = (out / "report.html").read_text()
    assert "data:image/png;base64," in page and "Volumetric BMD by region" in page and "T-score" in page
    rows = list(csv.DictReader((out / "qct.csv").open()))
    assert [r["side"] for r in rows] == ["right", "left"]
    for side in ("right", "left"):
        areal = data["femurs"][side]["areal"]
        assert set(areal) == {"neck", "trochanter", "intertrochanter", "total_hip"}
        neck = areal["neck"]
        assert 0.2 < neck["abmd_g_cm2"] < 2.0
        assert neck["t_score"] == pytest.approx((neck["abmd_g_cm2"] - 0.858) / 0.120, abs=0.01)
        dens = data["femurs"][side]["regions"]
        total = dens["total_hip"]
        parts = sum(dens[r]["volume_cm3"] for r in ("neck", "trochanter", "intertrochanter"))
        assert total["volume_cm3"] == pytest.approx(parts, rel=1e-6)


def test_phantomless_calibration_is_flagged(case, tmp_path) -> None:
    folder, facts = case
    out = tmp_path / "none"
    assert main(["qct", str(folder / "scan.nii.gz"), "--mask", str(folder / "mask.nii.gz"), "-o", str(out),
                 "--phantom", "none"]) == 0
    data = json.loads((out / "qct.json").read_text())
    assert data["calibration"]["method"] == "internal"
    assert any("phantomless" in w for w in data["warnings"])


def test_cohort_list_fills_one_csv(case, tmp_path) -> None:
    folder, _ = case
    listing = tmp_path / "list.csv"
    listing.write_text(f"case_id,path,mask\na,{folder / 'scan.nii.gz'},{folder / 'mask.nii.gz'}\n"
                       f"b,{folder / 'scan.nii.gz'},{folder / 'mask.nii.gz'}\n")
    out = tmp_path / "cohort"
    assert main(["qct", str(listing), "-o", str(out), "--slope", "1.2", "--intercept", "0"]) == 0
    rows = list(csv.DictReader((out / "qct_cohort.csv").open()))
    assert [(r["case"], r["side"]) for r in rows] == [("a", "right"), ("a", "left"), ("b", "right"), ("b", "left")]
    assert {r["calibration_method"] for r in rows} == {"user"}
    assert (out / "a" / "report.png").is_file() and (out / "b" / "qct.json").is_file()
    before = (out / "qct_cohort.csv").read_bytes()
    assert main(["qct", str(listing), "-o", str(out), "--slope", "1.2", "--intercept", "0"]) == 2  # no --overwrite
    assert (out / "qct_cohort.csv").read_bytes() == before


def test_refusals_are_one_line_and_leave_nothing(case, tmp_path, capsys) -> None:
    folder, _ = case
    scan = sitk.ReadImage(str(folder / "scan.nii.gz"))
    moved = sitk.ReadImage(str(folder / "mask.nii.gz"))
    moved.SetOrigin(tuple(o + 5.0 for o in moved.GetOrigin()))
    sitk.WriteImage(moved, str(tmp_path / "moved.nii.gz"))
    bad = sitk.GetImageFromArray(np.full(sitk.GetArrayViewFromImage(scan).shape, 3, np.uint8))
    bad.CopyInformation(scan)
    sitk.WriteImage(bad, str(tmp_path / "three.nii.gz"))
    for mask, words in (("moved.nii.gz", "not on the scan's grid"), ("three.nii.gz", "not femurseg's femur labels")):
        out = tmp_path / f"out_{mask}"
        assert main(["qct", str(folder / "scan.nii.gz"), "--mask", str(tmp_path / mask), "-o", str(out)]) == 2
        err = capsys.readouterr().err.strip()
        assert words in err and len(err.splitlines()) == 1
        assert not out.exists()
    assert main(["qct", str(folder / "scan.nii.gz"), "-o", str(tmp_path / "x")]) == 2
    assert "--mask" in capsys.readouterr().err


def test_no_phantom_in_the_scan_is_said_and_phantomless_used(tmp_path, capsys) -> None:
    """``--phantom mindways`` (the default) on a scan without one: the search says so, the phantomless calibration
    is used, flagged in the JSON, the CSV and on the terminal."""
    c = generate(11, options=PhantomOptions(matrix=128, spacing_xyz=(3.0, 3.0, 3.0), calibration_phantom=False,
                                            recon_circle=False))
    sitk.WriteImage(c.scan, str(tmp_path / "scan.nii.gz"))
    sitk.WriteImage(c.labels, str(tmp_path / "mask.nii.gz"))
    out = tmp_path / "res"
    assert main(["qct", str(tmp_path / "scan.nii.gz"), "--mask", str(tmp_path / "mask.nii.gz"), "-o", str(out)]) == 0
    data = json.loads((out / "qct.json").read_text())
    assert data["calibration"]["method"] == "internal"
    assert any("calibration phantom not found" in w for w in data["warnings"])
    assert "calibration phantom not found" in capsys.readouterr().out
    rows = list(csv.DictReader((out / "qct.csv").open()))
    assert {r["calibration_method"] for r in rows} == {"internal"}
    assert all("phantomless" in r["warnings"] for r in rows)
