"""DICOM SEG writing: read back with highdicom and pydicom, frames match the mask slice by slice."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

from femurseg.errors import InputError
from femurseg.io import read_image
from femurseg.io.dicom_seg import write_dicom_seg

hd = pytest.importorskip("highdicom")


def _mask_on(image: sitk.Image) -> sitk.Image:
    z, y, x = np.meshgrid(*(np.arange(n) for n in image.GetSize()[::-1]), indexing="ij")
    labels = np.zeros(z.shape, np.uint8)
    labels[(x < 3) & (y > 1) & (z >= 1)] = 1
    labels[(x >= 4) & (y < 4) & (z <= 3)] = 2
    mask = sitk.GetImageFromArray(labels)
    mask.CopyInformation(image)
    return mask


@pytest.mark.parametrize("reverse_files", [False, True])
@pytest.mark.parametrize("orientation", ["axial", "oblique"])
def test_seg_read_back_matches_mask(tmp_path: Path, ct_series_writer, hu_ramp, reverse_files, orientation) -> None:
    row, col = ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0)) if orientation == "axial" else (
        (0.8, 0.6, 0.0), (0.0, 0.0, -1.0))
    files = ct_series_writer(tmp_path / "ct", hu_ramp((5, 6, 7)), row_dir=row, col_dir=col,
                             reverse_files=reverse_files)
    image = read_image(tmp_path / "ct")
    mask = _mask_on(image)
    out = write_dicom_seg(mask, tmp_path / "ct", tmp_path / "seg.dcm")
    assert out == tmp_path / "seg.dcm"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ct", "seg.dcm"]

    seg = hd.seg.segread(out)
    assert seg.Modality == "SEG"
    labels = {int(s.SegmentNumber): s.SegmentLabel for s in seg.SegmentSequence}
    assert labels == {1: "Right femur", 2: "Left femur"}
    for s in seg.SegmentSequence:
        assert s.SegmentedPropertyTypeCodeSequence[0].CodeValue == "71341001"  # SNOMED CT femur
        modifier = s.SegmentedPropertyTypeCodeSequence[0].SegmentedPropertyTypeModifierCodeSequence[0].CodeValue
        assert modifier == {1: "24028007", 2: "7771000"}[int(s.SegmentNumber)]
    series_uid = pydicom.dcmread(files[0]).SeriesInstanceUID
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == series_uid

    # Every source slice's frame equals the mask's slice at that slice's position.
    truth = sitk.GetArrayFromImage(mask)
    for f in files:
        ds = pydicom.dcmread(f)
        k = image.TransformPhysicalPointToIndex([float(v) for v in ds.ImagePositionPatient])[2]
        frames = seg.get_pixels_by_source_instance(
            source_sop_instance_uids=[ds.SOPInstanceUID], segment_numbers=[1, 2], combine_segments=True,
            skip_overlap_checks=True,
        )
        np.testing.assert_array_equal(frames[0], truth[k])


def test_refuses_non_dicom_source(tmp_path: Path) -> None:
    image = sitk.Image([4, 4, 4], sitk.sitkUInt8)
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="DICOM"):
        write_dicom_seg(image, tmp_path / "empty", tmp_path / "seg.dcm")
    with pytest.raises(InputError, match="not a folder"):
        write_dicom_seg(image, tmp_path / "scan.nii.gz", tmp_path / "seg.dcm")
    assert not (tmp_path / "seg.dcm").exists()


def test_refuses_mask_off_the_source_grid(tmp_path: Path, ct_series_writer, hu_ramp) -> None:
    ct_series_writer(tmp_path / "ct", hu_ramp((5, 6, 7)))
    image = read_image(tmp_path / "ct")
    shifted = _mask_on(image)
    shifted.SetOrigin([o + 3.0 for o in image.GetOrigin()])
    with pytest.raises(InputError, match="grid"):
        write_dicom_seg(shifted, tmp_path / "ct", tmp_path / "seg.dcm")
    wrong_size = sitk.Image([7, 6, 4], sitk.sitkUInt8)
    wrong_size.CopyInformation(image[:, :, :4])
    with pytest.raises(InputError, match="grid"):
        write_dicom_seg(wrong_size, tmp_path / "ct", tmp_path / "seg.dcm")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ct"]


def test_missing_highdicom_says_how_to_install(tmp_path: Path, monkeypatch, ct_series_writer, hu_ramp) -> None:
    ct_series_writer(tmp_path / "ct", hu_ramp((5, 6, 7)))
    image = read_image(tmp_path / "ct")
    monkeypatch.setitem(sys.modules, "highdicom", None)
    with pytest.raises(InputError, match=r"pip install femurseg\[dicomseg\]"):
        write_dicom_seg(_mask_on(image), tmp_path / "ct", tmp_path / "seg.dcm")
    assert not (tmp_path / "seg.dcm").exists()
