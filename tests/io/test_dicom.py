"""DICOM series written with pydicom read back with the right HU values and geometry."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from femurseg.errors import InputError
from femurseg.io import array_of, choose_series, grid_of, read_image, read_series, read_series_info

ORIGIN = (-10.0, 20.0, 30.0)
SPACING = (0.75, 0.5, 1.25)  # (x, y, z) [mm]


@pytest.mark.parametrize("storage", ["int16", "uint16"])
@pytest.mark.parametrize("reverse_files", [False, True], ids=["files-in-order", "files-reversed"])
def test_axial_series_hu_and_geometry(tmp_path: Path, ct_series_writer, hu_ramp, storage: str, reverse_files: bool) -> None:
    hu = hu_ramp((5, 6, 7))
    assert hu.min() < -900 and hu.max() > 1000  # negative HU: the uint16 case needs the −1024 intercept
    ct_series_writer(tmp_path / "ct", hu, storage=storage, spacing_xyz=SPACING, origin_xyz=ORIGIN, reverse_files=reverse_files)
    image = read_image(tmp_path / "ct")
    assert image.GetSize() == (7, 6, 5)
    assert image.GetSpacing() == pytest.approx(SPACING, abs=1e-9)
    assert image.GetOrigin() == pytest.approx(ORIGIN, abs=1e-9)
    assert image.GetDirection() == pytest.approx((1, 0, 0, 0, 1, 0, 0, 0, 1), abs=1e-12)
    values = array_of(image)
    assert values.dtype in (np.int16, np.int32, np.float32)
    np.testing.assert_array_equal(values, hu)


def test_oblique_series_places_voxels_in_world(tmp_path: Path, ct_series_writer, hu_ramp) -> None:
    angle = 0.4
    row = (np.cos(angle), np.sin(angle), 0.0)
    col = (0.0, 0.0, -1.0)  # a tilted coronal stack
    normal = np.cross(row, col)
    hu = hu_ramp((5, 6, 7))
    ct_series_writer(tmp_path / "ct", hu, row_dir=row, col_dir=col, spacing_xyz=SPACING, origin_xyz=ORIGIN, reverse_files=True)
    image = read_image(tmp_path / "ct")
    np.testing.assert_array_equal(array_of(image), hu)
    direction = np.asarray(image.GetDirection()).reshape(3, 3)
    np.testing.assert_allclose(direction[:, 0], row, atol=1e-6)
    np.testing.assert_allclose(direction[:, 1], col, atol=1e-6)
    np.testing.assert_allclose(direction[:, 2], normal, atol=1e-6)
    # voxel (z, y, x) = (3, 2, 4) holds 600·3 + 10·2 + 4 − 1000 HU and lies at origin + 4·dx·row + 2·dy·col + 3·dz·normal
    expected = np.asarray(ORIGIN) + 4 * SPACING[0] * np.asarray(row) + 2 * SPACING[1] * np.asarray(col) + 3 * SPACING[2] * normal
    np.testing.assert_allclose(grid_of(image).index_to_world(np.array([3, 2, 4])), expected, atol=1e-4)
    idx_xyz = image.TransformPhysicalPointToIndex(tuple(expected))
    assert idx_xyz == (4, 2, 3)
    assert image[idx_xyz] == 600 * 3 + 10 * 2 + 4 - 1000


def test_two_series_most_slices_chosen_and_uid_selects(tmp_path: Path, ct_series_writer, hu_ramp, caplog) -> None:
    big = hu_ramp((6, 4, 5))
    small = (hu_ramp((3, 4, 5)) + 500).astype(np.int16)
    ct_series_writer(tmp_path / "study" / "a", big, series="big", description="big")
    ct_series_writer(tmp_path / "study" / "b" / "deeper", small, series="small", description="small", storage="uint16")
    (tmp_path / "study" / "README.txt").write_text("not DICOM")
    infos = read_series_info(tmp_path / "study")
    assert [(s.description, s.n_slices, s.modality) for s in infos] == [("big", 6, "CT"), ("small", 3, "CT")]
    with caplog.at_level(logging.INFO, logger="femurseg.io"):
        chosen = read_image(tmp_path / "study")
    np.testing.assert_array_equal(array_of(chosen), big)
    assert infos[0].uid in caplog.text and infos[1].uid in caplog.text
    other = read_image(tmp_path / "study", series_uid=infos[1].uid)
    np.testing.assert_array_equal(array_of(other), small)
    np.testing.assert_array_equal(array_of(read_series(infos[1])), small)


def test_ct_preferred_over_bigger_non_ct(tmp_path: Path, ct_series_writer, hu_ramp) -> None:
    ct_series_writer(tmp_path / "mr", hu_ramp((6, 4, 5)), series="mr", modality="MR")
    ct_series_writer(tmp_path / "ct", hu_ramp((3, 4, 5)), series="ct", modality="CT")
    chosen = choose_series(read_series_info(tmp_path))
    assert chosen.modality == "CT" and chosen.n_slices == 3


def test_unknown_series_uid_lists_existing(tmp_path: Path, ct_series_writer, hu_ramp) -> None:
    ct_series_writer(tmp_path, hu_ramp((3, 4, 5)), series="only")
    uid = read_series_info(tmp_path)[0].uid
    with pytest.raises(InputError, match=rf"no DICOM series with UID 1\.2\.3; series found: {uid} \(CT 'test series', 3 slices\)"):
        read_image(tmp_path, series_uid="1.2.3")


def _set_rescale(files: list[Path], slopes: list[float], intercepts: list[float]) -> None:
    import pydicom

    for path, slope, intercept in zip(files, slopes, intercepts):
        ds = pydicom.dcmread(path)
        ds.RescaleSlope = f"{slope:g}"
        ds.RescaleIntercept = f"{intercept:g}"
        ds.save_as(path)


def test_fractional_slope_reads_as_float32(tmp_path: Path, ct_series_writer, hu_ramp) -> None:
    stored = hu_ramp((3, 4, 5))
    files = ct_series_writer(tmp_path, stored)
    _set_rescale(files, [0.5] * 3, [-10.0] * 3)
    image = read_image(tmp_path)
    values = array_of(image)
    assert values.dtype == np.float32
    np.testing.assert_array_equal(values, stored.astype(np.float32) * 0.5 - 10.0)


def test_per_slice_rescale_is_applied_per_slice(tmp_path: Path, ct_series_writer, hu_ramp) -> None:
    stored = hu_ramp((3, 4, 5))
    files = ct_series_writer(tmp_path, stored)
    slopes, intercepts = [1.0, 2.0, 1.0], [0.0, -1024.0, 24.0]
    _set_rescale(files, slopes, intercepts)
    values = array_of(read_image(tmp_path))
    expected = stored.astype(np.float64) * np.array(slopes)[:, None, None] + np.array(intercepts)[:, None, None]
    np.testing.assert_array_equal(values, expected)


def test_large_hu_range_keeps_int32(tmp_path: Path, ct_series_writer, hu_ramp) -> None:
    stored = hu_ramp((3, 4, 5))
    files = ct_series_writer(tmp_path, stored)
    _set_rescale(files, [1.0] * 3, [40000.0] * 3)  # beyond int16: must not wrap around
    values = array_of(read_image(tmp_path))
    assert values.dtype == np.int32
    np.testing.assert_array_equal(values, stored.astype(np.int32) + 40000)
