"""Every kind of bad input raises InputError with a one-line message naming the problem."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

from femurseg.errors import InputError
from femurseg.io import read_image


def _raises(path: Path, pattern: str, **kwargs: object) -> str:
    with pytest.raises(InputError, match=pattern) as info:
        read_image(path, **kwargs)
    message = str(info.value)
    assert "\n" not in message and "Traceback" not in message
    return message


def test_missing_path(tmp_path: Path) -> None:
    _raises(tmp_path / "nope.nii.gz", "does not exist")


def test_not_an_image(tmp_path: Path) -> None:
    (tmp_path / "notes.nii.gz").write_text("these are not voxels")
    _raises(tmp_path / "notes.nii.gz", r"cannot read .*notes\.nii\.gz as an image")


def test_truncated_file(tmp_path: Path) -> None:
    sitk.WriteImage(sitk.Image(8, 8, 8, sitk.sitkInt16), str(tmp_path / "scan.nrrd"), useCompression=False)
    data = (tmp_path / "scan.nrrd").read_bytes()
    (tmp_path / "scan.nrrd").write_bytes(data[: len(data) // 2])
    _raises(tmp_path / "scan.nrrd", r"cannot read .*scan\.nrrd")


def test_unsupported_extension(tmp_path: Path) -> None:
    (tmp_path / "scan.png").write_bytes(b"\x89PNG")
    _raises(tmp_path / "scan.png", r"unsupported file type; use \.nii\.gz")


def test_2d_image(tmp_path: Path) -> None:
    sitk.WriteImage(sitk.Image(8, 8, sitk.sitkInt16), str(tmp_path / "slice.nii.gz"))
    _raises(tmp_path / "slice.nii.gz", "is a 2D image")


def test_single_slice_3d_image(tmp_path: Path) -> None:
    sitk.WriteImage(sitk.Image(8, 8, 1, sitk.sitkInt16), str(tmp_path / "slice.mha"))
    _raises(tmp_path / "slice.mha", "single slice")


def test_4d_image(tmp_path: Path) -> None:
    sitk.WriteImage(sitk.Image([4, 4, 4, 3], sitk.sitkInt16), str(tmp_path / "cine.nii.gz"))
    _raises(tmp_path / "cine.nii.gz", r"is a 4D image")


def test_4d_image_with_one_volume_reads_as_3d(tmp_path: Path) -> None:
    values = np.arange(4 * 5 * 6, dtype=np.int16).reshape(4, 5, 6)
    volume = sitk.GetImageFromArray(values)
    volume.SetSpacing((0.5, 0.75, 1.5))
    image = sitk.JoinSeries([volume])  # (6, 5, 4, 1): a time axis of length 1
    assert image.GetDimension() == 4
    sitk.WriteImage(image, str(tmp_path / "one.nii.gz"))
    back = read_image(tmp_path / "one.nii.gz")
    assert back.GetDimension() == 3 and back.GetSpacing() == (0.5, 0.75, 1.5)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(back), values)


def test_vector_image(tmp_path: Path) -> None:
    sitk.WriteImage(sitk.Image([4, 4, 4], sitk.sitkVectorUInt8, 3), str(tmp_path / "rgb.mha"))
    _raises(tmp_path / "rgb.mha", "vector/RGB")


def test_empty_folder(tmp_path: Path) -> None:
    _raises(tmp_path, "holds no DICOM image files")


def test_folder_without_dicom(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("hello")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.dcm").write_bytes(b"\0" * 300)  # named .dcm but no DICM preamble
    _raises(tmp_path, "holds no DICOM image files")


def test_single_dicom_file(tmp_path: Path, ct_series_writer, hu_ramp) -> None:
    files = ct_series_writer(tmp_path, hu_ramp((2, 4, 5)))
    _raises(files[0], "single DICOM file; pass the folder")


def test_single_slice_series(tmp_path: Path, ct_series_writer, hu_ramp) -> None:
    ct_series_writer(tmp_path, hu_ramp((1, 4, 5)))
    _raises(tmp_path, "has a single slice")


def test_slices_of_different_sizes(tmp_path: Path, ct_series_writer, hu_ramp) -> None:
    ct_series_writer(tmp_path / "a", hu_ramp((3, 4, 5)), series="mixed")
    ct_series_writer(tmp_path / "b", hu_ramp((3, 6, 5)), series="mixed", origin_xyz=(-10.0, 20.0, 40.0))
    _raises(tmp_path, r"inconsistent: its slices have different sizes \(5×4, 5×6 pixels\)")


def test_missing_slice(tmp_path: Path, ct_series_writer, hu_ramp) -> None:
    files = ct_series_writer(tmp_path, hu_ramp((5, 4, 5)))
    files[2].unlink()
    _raises(tmp_path, "uneven slice spacing")


def test_duplicate_positions(tmp_path: Path, ct_series_writer, hu_ramp) -> None:
    ct_series_writer(tmp_path / "a", hu_ramp((3, 4, 5)), series="dup")
    ct_series_writer(tmp_path / "b", hu_ramp((3, 4, 5)), series="dup")
    _raises(tmp_path, "several slices at the same position")


def test_gantry_tilt(tmp_path: Path, ct_series_writer, hu_ramp) -> None:
    files = ct_series_writer(tmp_path, hu_ramp((3, 4, 5)))
    for k, path in enumerate(files):  # each slice shifted 1 mm further in y: a tilted gantry
        ds = pydicom.dcmread(path)
        x, y, z = (float(v) for v in ds.ImagePositionPatient)
        ds.ImagePositionPatient = [x, y + k, z]
        ds.save_as(path)
    _raises(tmp_path, "sheared")


def test_damaged_pixel_data(tmp_path: Path, ct_series_writer, hu_ramp) -> None:
    files = ct_series_writer(tmp_path, hu_ramp((3, 4, 5)))
    ds = pydicom.dcmread(files[1])
    ds.PixelData = ds.PixelData[:10]
    ds.save_as(files[1])
    _raises(tmp_path, r"is damaged: .*IM0001\.dcm has truncated pixel data \(10 of 40 bytes\)")


def test_truncated_dicom_file(tmp_path: Path, ct_series_writer, hu_ramp) -> None:
    files = ct_series_writer(tmp_path, hu_ramp((3, 4, 5)))
    data = files[2].read_bytes()
    files[2].write_bytes(data[:-15])  # an interrupted copy
    _raises(tmp_path, r"IM0002\.dcm has truncated pixel data \(25 of 40 bytes\)")
