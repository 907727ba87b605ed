"""write_image → read_image keeps geometry, values and pixel type in every format."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from femurseg.io import array_of, read_image, write_image

FORMATS = [".nii", ".nii.gz", ".nrrd", ".mha", ".mhd"]

#: Axis-aligned but flipped (x and z reversed), values exactly representable in float32, so every format,
#: NIfTI included, must return them bit for bit.
FLIPPED = (-1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, -1.0)
#: A permutation (sagittal-like stack): still exact in every format.
PERMUTED = (0.0, 0.0, 1.0, 1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
_c, _s = np.cos(0.3), np.sin(0.3)
#: Oblique: a rotation about z, with y and z flipped.  NIfTI stores geometry in float32, so it is exact only to
#: that precision; NRRD stores direction × spacing, which costs at most a few ulp.
OBLIQUE = tuple((np.array([[_c, -_s, 0.0], [_s, _c, 0.0], [0.0, 0.0, 1.0]]) @ np.diag([1.0, -1.0, -1.0])).ravel())


def _image(dtype: type, direction: tuple[float, ...], spacing: tuple[float, ...], origin: tuple[float, ...]) -> sitk.Image:
    z, y, x = np.meshgrid(np.arange(5), np.arange(6), np.arange(7), indexing="ij")
    if dtype is np.uint8:
        values = ((x + y + z) % 3).astype(np.uint8)  # a label map: 0, 1, 2
    else:
        values = (100 * z + 10 * y + x - 1024).astype(dtype)  # HU, negative and positive
    image = sitk.GetImageFromArray(values)
    image.SetSpacing(spacing)
    image.SetOrigin(origin)
    image.SetDirection(direction)
    return image


@pytest.mark.parametrize("dtype", [np.int16, np.uint8], ids=["int16", "uint8"])
@pytest.mark.parametrize("direction", [FLIPPED, PERMUTED], ids=["flipped", "permuted"])
@pytest.mark.parametrize("ending", FORMATS)
def test_exact_round_trip(tmp_path: Path, ending: str, direction: tuple[float, ...], dtype: type) -> None:
    image = _image(dtype, direction, spacing=(0.75, 0.5, 1.25), origin=(-120.5, 33.25, -1002.125))
    path = write_image(image, tmp_path / f"scan{ending}")
    assert path == tmp_path / f"scan{ending}" and path.is_file()
    back = read_image(path)
    assert back.GetSize() == image.GetSize()
    assert back.GetSpacing() == image.GetSpacing()
    assert back.GetOrigin() == image.GetOrigin()
    assert back.GetDirection() == image.GetDirection()
    assert back.GetPixelID() == image.GetPixelID()
    np.testing.assert_array_equal(array_of(back), array_of(image))


@pytest.mark.parametrize("ending", FORMATS)
def test_oblique_round_trip(tmp_path: Path, ending: str) -> None:
    image = _image(np.int16, OBLIQUE, spacing=(0.7, 0.3333333333333333, 2.1), origin=(-100.123456789, 3.14159265358979, 1e-3))
    back = read_image(write_image(image, tmp_path / f"scan{ending}"))
    if ending in (".mha", ".mhd"):
        tol = 0.0
    elif ending == ".nrrd":
        tol = 1e-14
    else:
        tol = 5e-6  # NIfTI: float32 storage, |origin| ~ 100 mm
    assert back.GetSize() == image.GetSize()
    np.testing.assert_allclose(back.GetSpacing(), image.GetSpacing(), rtol=tol, atol=0)
    np.testing.assert_allclose(back.GetOrigin(), image.GetOrigin(), rtol=tol, atol=tol)
    np.testing.assert_allclose(back.GetDirection(), image.GetDirection(), rtol=0, atol=max(tol, 1e-15))
    np.testing.assert_array_equal(array_of(back), array_of(image))
    # the same voxel lands at the same world point
    np.testing.assert_allclose(
        back.TransformIndexToPhysicalPoint((6, 5, 4)), image.TransformIndexToPhysicalPoint((6, 5, 4)), atol=max(tol, 1e-12) * 100
    )


@pytest.mark.parametrize("compress", [True, False])
def test_mhd_writes_header_and_data_file(tmp_path: Path, compress: bool) -> None:
    image = _image(np.int16, FLIPPED, spacing=(1.0, 1.0, 1.0), origin=(0.0, 0.0, 0.0))
    write_image(image, tmp_path / "scan.mhd", compress=compress)
    data = "scan.zraw" if compress else "scan.raw"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["scan.mhd", data])
    assert f"ElementDataFile = {data}" in (tmp_path / "scan.mhd").read_text()
    np.testing.assert_array_equal(array_of(read_image(tmp_path / "scan.mhd")), array_of(image))


def test_reference_geometry_is_copied(tmp_path: Path) -> None:
    scan = _image(np.int16, OBLIQUE, spacing=(0.7, 0.6, 2.0), origin=(-50.0, 10.0, 5.0))
    mask = _image(np.uint8, (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0), spacing=(1.0, 1.0, 1.0), origin=(0.0, 0.0, 0.0))
    back = read_image(write_image(mask, tmp_path / "mask.mha", reference=scan))
    assert back.GetSpacing() == scan.GetSpacing()
    assert back.GetOrigin() == scan.GetOrigin()
    assert back.GetDirection() == scan.GetDirection()
    assert back.GetPixelID() == sitk.sitkUInt8
    np.testing.assert_array_equal(array_of(back), array_of(mask))
    # the caller's image is left as it was
    assert mask.GetSpacing() == (1.0, 1.0, 1.0)


def test_overwrite_replaces_file(tmp_path: Path) -> None:
    first = _image(np.int16, FLIPPED, spacing=(1.0, 1.0, 1.0), origin=(0.0, 0.0, 0.0))
    second = sitk.Cast(first + 7, sitk.sitkInt16)
    write_image(first, tmp_path / "scan.nrrd")
    write_image(second, tmp_path / "scan.nrrd")
    assert [p.name for p in tmp_path.iterdir()] == ["scan.nrrd"]
    np.testing.assert_array_equal(array_of(read_image(tmp_path / "scan.nrrd")), array_of(first) + 7)


def test_creates_missing_parent_folders(tmp_path: Path) -> None:
    image = _image(np.uint8, FLIPPED, spacing=(1.0, 1.0, 1.0), origin=(0.0, 0.0, 0.0))
    path = write_image(image, tmp_path / "a" / "b" / "mask.nii.gz")
    assert path.is_file() and sorted(p.name for p in path.parent.iterdir()) == ["mask.nii.gz"]


def test_reads_detached_nrrd_header(tmp_path: Path) -> None:
    image = _image(np.int16, OBLIQUE, spacing=(0.75, 0.5, 1.25), origin=(-120.5, 33.25, -1002.125))
    sitk.WriteImage(image, str(tmp_path / "scan.nhdr"), useCompression=True)  # header + separate data file
    back = read_image(tmp_path / "scan.nhdr")
    assert back.GetSpacing() == image.GetSpacing() and back.GetOrigin() == image.GetOrigin()
    np.testing.assert_allclose(back.GetDirection(), image.GetDirection(), atol=1e-15)
    np.testing.assert_array_equal(array_of(back), array_of(image))
