"""Cohort folders: layout, cohort.csv against the label files, same seed same bytes, the paper cohort's sexes."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from femurseg.errors import InputError
from femurseg.io import array_of, read_image
from femurseg.io.cohort_table import read_cohort_table
from femurseg.phantom.cohort import (
    COHORT_COLUMNS, case_id, case_seed, cohort_sexes, write_cohort,
)
from femurseg.phantom.generate import PhantomOptions

OPTS = PhantomOptions(spacing_xyz=(3.0, 3.0, 3.0), matrix=128)


def _digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> Path:
    return write_cohort(tmp_path_factory.mktemp("c") / "cohort", n=2, seed=21, options=OPTS)


def test_layout_and_metadata(cohort: Path) -> None:
    for sub in ("images", "labels", "tissues", "facts"):
        assert sorted(p.name for p in (cohort / sub).iterdir()) == [
            f"phantom_0000.{'json' if sub == 'facts' else 'nii.gz'}", f"phantom_0001.{'json' if sub == 'facts' else 'nii.gz'}"]
    meta = json.loads((cohort / "phantom.json").read_text())
    assert meta["seed"] == 21 and meta["n"] == 2 and meta["cohort"] == "random"
    assert meta["case_seeds"] == {case_id(0): case_seed(21, 0), case_id(1): case_seed(21, 1)}
    assert meta["options"]["spacing_xyz"] == [3.0, 3.0, 3.0]
    assert "femurseg_version" in meta
    assert not list(cohort.rglob(".tmp-*"))


def test_csv_agrees_with_the_files(cohort: Path) -> None:
    rows = read_cohort_table(cohort / "cohort.csv")
    assert list(rows[0].keys()) == list(COHORT_COLUMNS)
    assert [r["case_id"] for r in rows] == ["phantom_0000", "phantom_0001"]
    for r in rows:
        img = read_image(cohort / "images" / f"{r['case_id']}.nii.gz")
        lab = array_of(read_image(cohort / "labels" / f"{r['case_id']}.nii.gz"))
        voxel_ml = float(np.prod(img.GetSpacing())) / 1000.0
        assert float(r["femur_volume_right_ml"]) == pytest.approx((lab == 1).sum() * voxel_ml, rel=1e-5)
        assert float(r["femur_volume_left_ml"]) == pytest.approx((lab == 2).sum() * voxel_ml, rel=1e-5)
        assert tuple(float(r[f"spacing_{a}_mm"]) for a in "xyz") == img.GetSpacing()
        assert r["sex"] in ("F", "M") and 20 <= float(r["age"]) <= 90
        assert 36 < float(r["head_diameter_right_mm"]) < 58
        assert 40 < float(r["trabecular_vbmd_mg_cm3"]) < 300
        assert r["calibration_phantom"] in ("0", "1")
        assert float(r["sigma_ct"]) == pytest.approx(json.loads(
            (cohort / "facts" / f"{r['case_id']}.json").read_text())["sigma_ct"], rel=1e-5)
        assert int(r["seed"]) == case_seed(21, int(r["case_id"][-4:]))


def test_same_seed_same_bytes_whatever_n(cohort: Path, tmp_path: Path) -> None:
    again = write_cohort(tmp_path / "again", n=2, seed=21, options=OPTS)
    assert _digest(again) == _digest(cohort)
    one = write_cohort(tmp_path / "one", n=1, seed=21, options=OPTS)
    d1, d2 = _digest(one), _digest(cohort)
    for sub in ("images", "labels", "tissues"):
        assert d1[f"{sub}/phantom_0000.nii.gz"] == d2[f"{sub}/phantom_0000.nii.gz"]
    assert d2["images/phantom_0000.nii.gz"] != d2["images/phantom_0001.nii.gz"]


def test_paper_cohort_sexes() -> None:
    sexes = cohort_sexes(5)
    assert len(sexes) == 397 and sexes.count("F") == 216 and sexes.count("M") == 181
    assert sexes == cohort_sexes(5) and sexes != cohort_sexes(6)
    assert sexes[:20] != sorted(sexes[:20]) or sexes[:20] != cohort_sexes(6)[:20]  # shuffled


def test_bad_requests(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="397"):
        write_cohort(tmp_path / "p", n=5, seed=0, cohort="paper", options=OPTS)
    with pytest.raises(InputError, match="positive"):
        write_cohort(tmp_path / "p", n=0, seed=0, options=OPTS)
    with pytest.raises(InputError, match="cohort"):
        write_cohort(tmp_path / "p", n=1, seed=0, cohort="big", options=OPTS)
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(InputError, match="cannot write"):
        write_cohort(blocker / "sub", n=1, seed=0, options=OPTS)
    assert case_seed(3, 7) == case_seed(3, 7) and case_seed(3, 7) != case_seed(3, 8) != case_seed(4, 7)
