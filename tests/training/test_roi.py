"""ROI preparation (models.preprocessing functions as training uses them): crop, mirror, resample, normalise."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from femurseg.models.preprocessing import (
    Preprocessing,
    crop_padded,
    normalize_hu,
    reorient_to_lps,
    resample_image,
    roi_grid,
    world_box_of_mask,
)
from femurseg.training.data import CaseRecord, prepare_volumes

from .conftest import make_case


def _write_case(tmp_path, **kw):  # noqa: ANN001, ANN202
    img, lab = make_case(seed=0, **kw)
    (tmp_path / "i.nii.gz").parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(img, str(tmp_path / "i.nii.gz"))
    sitk.WriteImage(lab, str(tmp_path / "l.nii.gz"))
    return CaseRecord("sym", tmp_path / "i.nii.gz", tmp_path / "l.nii.gz")


PP = Preprocessing(target_spacing_zyx=(2.0, 2.0, 2.0), patch_size_zyx=(16, 16, 16), roi_margin_mm=4.0)


def test_left_roi_is_mirrored_right_roi_for_symmetric_case(tmp_path) -> None:  # noqa: ANN001
    vols = prepare_volumes([_write_case(tmp_path, symmetric=True)], preprocessing=PP, context_mm=6.0)
    right, left = vols
    assert (right.side, left.side) == ("right", "left")
    assert right.image.shape == left.image.shape
    assert (right.roi_start, right.roi_stop) == (left.roi_start, left.roi_stop)
    np.testing.assert_array_equal(left.target, right.target)
    np.testing.assert_allclose(left.image, right.image, atol=1)  # int16 HU, rounding of linear interpolation
    assert right.target.sum() > 100
    # Without mirroring the left ROI is the right one flipped.
    pp = Preprocessing(**{**PP.__dict__, "mirror_left": False})
    _, left_raw = prepare_volumes([_write_case(tmp_path, symmetric=True)], preprocessing=pp, context_mm=6.0)
    np.testing.assert_array_equal(left_raw.target[..., ::-1], right.target)


def test_roi_contains_femur_with_margin(tmp_path) -> None:  # noqa: ANN001
    (vol, _) = prepare_volumes([_write_case(tmp_path, offset_mm=3.0)], preprocessing=PP, context_mm=6.0)
    sl = tuple(slice(a, b) for a, b in zip(vol.roi_start, vol.roi_stop))
    inner = vol.target[sl]
    assert inner.sum() == vol.target.sum()  # the whole femur lies in the nominal ROI
    nz = np.argwhere(inner)
    # 4 mm margin at 2 mm spacing: at least 1 free voxel on each side (2 minus the half-voxel of the box).
    assert (nz.min(axis=0) >= 1).all() and (np.asarray(inner.shape) - 1 - nz.max(axis=0) >= 1).all()
    assert all(n >= 16 for n in inner.shape)  # never smaller than a patch, as at inference
    # 6 mm context at 2 mm spacing = 3 voxels of context on each side.
    assert vol.roi_start == (3, 3, 3)


def test_reorientation_does_not_change_the_roi(tmp_path) -> None:  # noqa: ANN001
    img, lab = make_case(seed=0)
    flipped_img = sitk.Flip(img, (True, False, True))  # RPI-like storage: same world, other array order
    flipped_lab = sitk.Flip(lab, (True, False, True))
    assert flipped_img.GetDirection() != img.GetDirection()
    box_a = world_box_of_mask(lab == 1)
    box_b = world_box_of_mask(flipped_lab == 1)
    np.testing.assert_allclose(box_a[0], box_b[0], atol=1e-6)
    np.testing.assert_allclose(box_a[1], box_b[1], atol=1e-6)
    grid = roi_grid(*box_a, spacing_zyx=(2.0, 2.0, 2.0), margin_mm=4.0)
    np.testing.assert_allclose(resample_image(img, grid, fill_hu=-250), resample_image(flipped_img, grid, fill_hu=-250), atol=1e-3)
    assert reorient_to_lps(flipped_img).GetDirection() == pytest.approx(img.GetDirection())


def test_normalize_and_crop() -> None:
    hu = np.array([-1000.0, -250.0, 750.0, 1750.0, 3000.0], np.float32)
    np.testing.assert_allclose(normalize_hu(hu, hu_window=(-250, 1750)), [-1, -1, 0, 1, 1])
    a = np.arange(27).reshape(3, 3, 3)
    out = crop_padded(a, (-1, 1, 2), (3, 3, 3), fill=-7)
    assert out[0].tolist() == [[-7] * 3] * 3
    assert out[1, 0, 0] == a[0, 1, 2] and out[1, 0, 1] == -7 and out[1, 2, 0] == -7


def test_resample_labels_reads_no_view_of_a_temporary(monkeypatch) -> None:
    """Regression: the label fractions were read through a view of a freed temporary image, so locator targets
    held random labels now and then (a negative case came out with femur voxels)."""
    import SimpleITK as sitk

    from femurseg.geometry import Grid
    from femurseg.models.preprocessing import resample_labels

    def no_view(image):  # noqa: ANN001, ANN202
        raise AssertionError("GetArrayViewFromImage of a temporary image dangles once the image is freed")

    monkeypatch.setattr(sitk, "GetArrayViewFromImage", no_view)
    labels = sitk.Image(40, 30, 20, sitk.sitkUInt8)
    labels.SetSpacing((1.5, 1.5, 2.0))
    labels[10:20, 10:20, 5:15] = 1
    grid = Grid(shape_zyx=(12, 14, 18), spacing_zyx=(4.0, 4.0, 4.0), origin_xyz=(0.0, 0.0, 0.0))
    out = resample_labels(labels, grid, values=(1, 2))
    assert out.any() and set(np.unique(out)) <= {0, 1}
