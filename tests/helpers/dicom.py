"""The tests' one writer of small single-frame CT DICOM series (pydicom) with known geometry, and its UIDs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

UID_ROOT = "1.2.826.0.1.3680043.10.9999."  # a private test root; UIDs are derived deterministically from names


def uid(name: str) -> str:
    """The UID of ``name`` under the test root: the same name gives the same UID in every folder and run."""
    return generate_uid(prefix=UID_ROOT, entropy_srcs=[name])


def write_ct_series(
    folder: Path,
    hu_zyx: np.ndarray,
    *,
    spacing_xyz: tuple[float, float, float] = (0.75, 0.5, 1.25),
    origin_xyz: tuple[float, float, float] = (-10.0, 20.0, 30.0),
    row_dir: tuple[float, float, float] = (1.0, 0.0, 0.0),
    col_dir: tuple[float, float, float] = (0.0, 1.0, 0.0),
    storage: str = "int16",
    series: str = "ct",
    modality: str = "CT",
    description: str = "test series",
    reverse_files: bool = False,
) -> list[Path]:
    """Write ``hu_zyx`` [HU] (z, y, x) as a single-frame CT series, one file per z slice; returns the files.

    Slice k lies at ``origin_xyz`` + k·dz·(row × col) [mm, LPS], so a SimpleITK image (whose direction columns are
    right-handed, as every scanner's are) is written with ``spacing_xyz=image.GetSpacing()``,
    ``origin_xyz=image.GetOrigin()`` and ``row_dir``/``col_dir`` its direction's first two columns.

    ``storage`` "int16" stores HU directly (intercept 0); "uint16" stores HU + 1024 with intercept −1024.
    ``series`` names the series: its UID is ``uid(series)``, so two folders written with the same name hold one
    series.  ``reverse_files`` numbers the files against the slice order, so readers must sort by position.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    row = np.asarray(row_dir, float)
    col = np.asarray(col_dir, float)
    normal = np.cross(row, col)
    paths = []
    n = hu_zyx.shape[0]
    for k in range(n):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        meta.MediaStorageSOPInstanceUID = uid(f"{series}-{k}")
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        name = f"IM{(n - 1 - k) if reverse_files else k:04d}.dcm"
        ds = FileDataset(str(folder / name), {}, file_meta=meta, preamble=b"\0" * 128)
        ds.SOPClassUID = CTImageStorage
        ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
        ds.StudyInstanceUID = uid("study")
        ds.SeriesInstanceUID = uid(series)
        ds.FrameOfReferenceUID = uid("frame")
        ds.Modality = modality
        ds.SeriesDescription = description
        ds.SeriesNumber = 1
        ds.InstanceNumber = k + 1
        ds.PatientName = "Phantom^Test"
        ds.PatientID = "TEST"
        position = np.asarray(origin_xyz, float) + k * spacing_xyz[2] * normal
        ds.ImagePositionPatient = [f"{v:.6f}" for v in position]
        ds.ImageOrientationPatient = [f"{v:.6f}" for v in (*row, *col)]
        ds.PixelSpacing = [f"{spacing_xyz[1]:g}", f"{spacing_xyz[0]:g}"]  # (row spacing = dy, column spacing = dx)
        ds.SliceThickness = f"{spacing_xyz[2]:g}"
        ds.Rows, ds.Columns = hu_zyx.shape[1], hu_zyx.shape[2]
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsAllocated = 16
        ds.BitsStored = 16
        ds.HighBit = 15
        ds.RescaleSlope = "1"
        if storage == "int16":
            ds.PixelRepresentation = 1
            ds.RescaleIntercept = "0"
            pixels = hu_zyx[k].astype(np.int16)
        elif storage == "uint16":
            ds.PixelRepresentation = 0
            ds.RescaleIntercept = "-1024"
            pixels = (hu_zyx[k].astype(np.int32) + 1024).astype(np.uint16)
        else:
            raise ValueError(storage)
        ds.RescaleType = "HU"
        ds.PixelData = pixels.tobytes()
        ds.save_as(folder / name, enforce_file_format=True)
        paths.append(folder / name)
    return paths


def ramp_hu(shape_zyx: tuple[int, int, int] = (5, 6, 7)) -> np.ndarray:
    """Distinct HU values per voxel spanning negative and positive: voxel (z, y, x) = 600z + 10y + x − 1000 (x < 10, y < 60)."""
    z, y, x = np.meshgrid(*(np.arange(n) for n in shape_zyx), indexing="ij")
    return (600 * z + 10 * y + x - 1000).astype(np.int16)
