"""Reading labelled cohorts (cohort folder, nnU-Net raw dataset) and refusing bad ones."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from femurseg.errors import InputError
from femurseg.training.data import CaseRecord, find_cases, load_case, split_cases, split_femur_by_side

from .conftest import make_case, write_cohort


def _centroid_x(labels: sitk.Image, value: int) -> float:
    arr = sitk.GetArrayFromImage(labels)
    idx = np.argwhere(arr == value).mean(axis=0)
    return labels.TransformContinuousIndexToPhysicalPoint(tuple(float(v) for v in idx[::-1]))[0]


def test_cohort_folder(tiny_cohort: Path) -> None:
    records = find_cases(tiny_cohort)
    assert [r.case_id for r in records] == ["case000", "case001", "case002"]
    assert [r.sex for r in records] == ["F", "M", "F"]
    image, labels = load_case(records[0])
    assert image.GetSize() == labels.GetSize() == (48, 40, 40)
    assert set(np.unique(sitk.GetArrayFromImage(labels))) == {0, 1, 2}
    # Patient's right is at smaller world x in LPS.
    assert _centroid_x(labels, 1) < _centroid_x(labels, 2)


@pytest.mark.parametrize("single_label", [False, True], ids=["sided", "single-femur-label"])
def test_nnunet_dataset(tmp_path: Path, single_label: bool) -> None:
    root = write_cohort(tmp_path / "Dataset001_Hip", 2, fmt="nnunet", single_label=single_label)
    records = find_cases(root)
    assert [r.case_id for r in records] == ["case000", "case001"]
    _, labels = load_case(records[1])
    _, truth = make_case(seed=1)  # what write_cohort wrote for case001 (seed 0 * 1000 + 1), with sides
    np.testing.assert_array_equal(sitk.GetArrayFromImage(labels), sitk.GetArrayFromImage(truth))


def test_nnunet_v1_label_mapping(tmp_path: Path) -> None:
    root = write_cohort(tmp_path / "ds", 1, fmt="nnunet")
    (root / "dataset.json").write_text(json.dumps({"labels": {"0": "background", "1": "Right Femur", "2": "Left Femur"}}))
    r = find_cases(root)[0]
    assert (r.right_values, r.left_values, r.femur_values) == ((1,), (2,), ())


def test_single_femur_split_when_only_one_femur() -> None:
    from femurseg.geometry import Grid

    mask = np.zeros((8, 8, 20), bool)
    mask[2:6, 2:6, 14:18] = True  # one femur at large x: the patient's left
    grid = Grid(shape_zyx=(8, 8, 20), spacing_zyx=(1.0, 1.0, 1.0), origin_xyz=(-10.0, 0.0, 0.0))
    out = split_femur_by_side(mask, grid)
    assert set(np.unique(out[mask])) == {2} and not out[~mask].any()


def test_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no such folder"):
        find_cases(tmp_path / "nope")


def test_not_a_dataset(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="neither a cohort folder"):
        find_cases(tmp_path)


def test_no_cases(tmp_path: Path) -> None:
    (tmp_path / "images").mkdir()
    (tmp_path / "labels").mkdir()
    with pytest.raises(InputError, match="no cases found"):
        find_cases(tmp_path)


def test_image_without_label(tmp_path: Path) -> None:
    root = write_cohort(tmp_path / "c", 2)
    (root / "labels" / "case001.nii.gz").unlink()
    with pytest.raises(InputError, match="without a label map.*case001"):
        find_cases(root)


def test_nnunet_image_without_label(tmp_path: Path) -> None:
    root = write_cohort(tmp_path / "c", 2, fmt="nnunet")
    (root / "labelsTr" / "case000.nii.gz").unlink()
    with pytest.raises(InputError, match="without a label map.*case000"):
        find_cases(root)


def test_geometry_mismatch(tmp_path: Path) -> None:
    root = write_cohort(tmp_path / "c", 1)
    path = root / "labels" / "case000.nii.gz"
    lab = sitk.ReadImage(str(path))
    lab.SetSpacing((1.0, 1.0, 1.0))
    sitk.WriteImage(lab, str(path))
    with pytest.raises(InputError, match="geometry differs"):
        load_case(find_cases(root)[0])


def test_no_femur_label_in_map(tmp_path: Path) -> None:
    root = write_cohort(tmp_path / "c", 1)
    path = root / "labels" / "case000.nii.gz"
    lab = sitk.ReadImage(str(path))
    sitk.WriteImage(lab * 0 + 5, str(path))
    with pytest.raises(InputError, match=r"label value\(s\) \[5\] mean nothing"):
        load_case(find_cases(root)[0])


def test_unknown_label_values_beside_femurs_are_refused(tmp_path: Path) -> None:
    root = write_cohort(tmp_path / "c", 1)
    path = root / "labels" / "case000.nii.gz"
    arr = sitk.GetArrayFromImage(sitk.ReadImage(str(path)))
    arr[0, 0, 0] = 7
    out = sitk.GetImageFromArray(arr)
    out.CopyInformation(sitk.ReadImage(str(path)))
    sitk.WriteImage(out, str(path))
    with pytest.raises(InputError, match=r"\[7\]"):
        load_case(find_cases(root)[0])


def test_unsided_labels_of_two_femurs_are_refused(tmp_path: Path) -> None:
    root = write_cohort(tmp_path / "c", 1)
    path = root / "labels" / "case000.nii.gz"
    ref = sitk.ReadImage(str(path))
    arr = sitk.GetArrayFromImage(ref)
    assert (arr == 1).any() and (arr == 2).any()
    out = sitk.GetImageFromArray((arr > 0).astype(np.uint8))  # both femurs 1
    out.CopyInformation(ref)
    sitk.WriteImage(out, str(path))
    with pytest.raises(InputError, match="unsided"):
        load_case(find_cases(root)[0])


def test_no_femur_label_in_dataset_json(tmp_path: Path) -> None:
    root = write_cohort(tmp_path / "c", 1, fmt="nnunet")
    (root / "dataset.json").write_text(json.dumps({"labels": {"background": 0, "pelvis": 1}}))
    with pytest.raises(InputError, match="no femur label"):
        find_cases(root)


def test_split_is_stratified_seeded_and_explicit() -> None:
    recs = [CaseRecord(f"c{i:02d}", Path("i"), Path("l"), sex="F" if i < 12 else "M") for i in range(20)]
    train, val = split_cases(recs, val_fraction=0.25, seed=3)
    assert len(val) == 5 and len(train) == 15
    assert sorted(r.sex for r in val) == ["F", "F", "F", "M", "M"]  # 12:8 of 20 -> 3:2 of 5
    assert [r.case_id for r in split_cases(recs, val_fraction=0.25, seed=3)[1]] == [r.case_id for r in val]
    assert [r.case_id for r in split_cases(recs, val_fraction=0.25, seed=4)[1]] != [r.case_id for r in val]
    _, val2 = split_cases(recs, val_fraction=0.25, val_cases=("c03", "c15"), seed=3)
    assert [r.case_id for r in val2] == ["c03", "c15"]
    with pytest.raises(InputError, match="unknown case"):
        split_cases(recs, val_fraction=0.0, val_cases=("zz",), seed=0)


def test_an_all_zero_label_map_is_a_negative_case(tmp_path: Path) -> None:
    """A scan without a femur: the locator learns background there; the femur model has no ROI to take."""
    from femurseg.models.preprocessing import Preprocessing
    from femurseg.training.data import prepare_volumes

    root = write_cohort(tmp_path / "c", 1)
    path = root / "labels" / "case000.nii.gz"
    sitk.WriteImage(sitk.ReadImage(str(path)) * 0, str(path))
    image, labels = load_case(find_cases(root)[0])
    assert not sitk.GetArrayViewFromImage(labels).any()
    loc = Preprocessing(task="locate", target_spacing_zyx=(4.0, 4.0, 4.0), patch_size_zyx=(8, 8, 8), roi_margin_mm=0.0,
                        mirror_left=False)
    [vol] = prepare_volumes(find_cases(root), preprocessing=loc, context_mm=0.0)
    assert vol.side == "both" and not np.asarray(vol.target).any() and len(vol.foreground) == 0
    fem = Preprocessing(task="femur", target_spacing_zyx=(1.5, 1.5, 2.0), patch_size_zyx=(8, 8, 8))
    assert prepare_volumes(find_cases(root), preprocessing=fem, context_mm=0.0) == []


def test_several_folders_train_together_with_prefixed_ids(tmp_path: Path) -> None:
    a = write_cohort(tmp_path / "phys", 2)
    b = write_cohort(tmp_path / "real", 1)
    records = find_cases([a, b])
    assert [r.case_id for r in records] == ["phys_case000", "phys_case001", "real_case000"]
    assert records[2].image.parent.parent == b
    assert [r.case_id for r in find_cases([a])] == ["case000", "case001"]
    (tmp_path / "x").mkdir()
    c = write_cohort(tmp_path / "x" / "phys", 1)
    with pytest.raises(InputError, match="collide"):
        find_cases([a, c])
