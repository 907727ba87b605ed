"""DICOM series: find them in a folder (recursively), choose one, read it as a 3D image in HU.

pydicom reads only the headers (fast, and lets us check a series before SimpleITK touches it, so the user gets a
clear message instead of an ITK traceback or, worse, a silently wrong geometry); SimpleITK's series reader reads
the pixels and applies RescaleSlope/RescaleIntercept.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
import SimpleITK as sitk
from pydicom.errors import InvalidDicomError

from femurseg.errors import InputError

__all__ = ["SeriesInfo", "read_series_info", "choose_series", "read_series", "is_dicom_file"]

log = logging.getLogger(__name__)

_HEADER_TAGS = [
    "SOPClassUID",
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "SeriesNumber",
    "SeriesDescription",
    "Modality",
    "InstanceNumber",
    "ImagePositionPatient",
    "ImageOrientationPatient",
    "PixelSpacing",
    "Rows",
    "Columns",
    "SamplesPerPixel",
    "NumberOfFrames",
    "RescaleSlope",
    "RescaleIntercept",
    "BitsAllocated",
    "PixelData",  # deferred: only its length and file offset are read, to catch truncated slices
]

_DICOMDIR_SOP_CLASS = "1.2.840.10008.1.3.10"


@dataclass(frozen=True)
class SeriesInfo:
    """One DICOM series found in a folder.

    Attributes
    ----------
    uid : str
        SeriesInstanceUID.
    modality : str
        Modality (``"CT"``, ``"MR"``, ...; ``""`` if absent).
    description : str
        SeriesDescription (``""`` if absent).
    number : int or None
        SeriesNumber.
    n_slices : int
        Number of image files (slices) in the series.
    files : tuple of Path
        The image files, in no particular order (:func:`read_series` sorts them along the slice normal).
    """

    uid: str
    modality: str
    description: str
    number: int | None
    n_slices: int
    files: tuple[Path, ...]

    def summary(self) -> str:
        """One line: UID, modality, description and slice count."""
        desc = f" '{self.description}'" if self.description else ""
        return f"{self.uid} ({self.modality or 'no modality'}{desc}, {self.n_slices} slice{'s' * (self.n_slices != 1)})"


def is_dicom_file(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a file that starts with the DICOM preamble (``DICM`` at byte 128)."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:132] == b"DICM"


def _read_header(path: Path) -> pydicom.Dataset:
    return pydicom.dcmread(path, specific_tags=_HEADER_TAGS, defer_size=1024)


def _pixel_data_problem(path: Path, ds: pydicom.Dataset) -> str | None:
    """Why the slice's pixel data cannot be complete, or None (checked for uncompressed transfer syntaxes)."""
    if "PixelData" not in ds:
        return "has no pixel data"
    element = ds.get_item("PixelData")
    length, tell = getattr(element, "length", None), getattr(element, "value_tell", None)
    syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    if length is None or tell is None or syntax is None or syntax.is_compressed or length == 0xFFFFFFFF:
        return None  # encapsulated (compressed) data: the decoder reports damage
    try:
        expected = int(ds.Rows) * int(ds.Columns) * int(ds.get("SamplesPerPixel", 1) or 1) * int(ds.BitsAllocated) // 8
        size = path.stat().st_size
    except (AttributeError, TypeError, ValueError, OSError):
        return None
    if length < expected or tell + length > size:
        return f"has truncated pixel data ({min(length, size - tell)} of {expected} bytes)"
    return None


def _walk_headers(folder: Path) -> list[tuple[Path, pydicom.Dataset]]:
    out = []
    for root, dirs, names in os.walk(folder):
        dirs.sort()  # deterministic walk order
        for name in sorted(names):
            path = Path(root) / name
            if not is_dicom_file(path):
                continue
            try:
                ds = _read_header(path)
            except (InvalidDicomError, OSError, ValueError, EOFError, KeyError, TypeError, AttributeError) as err:
                log.debug("skipping unreadable DICOM file %s: %s", path, err)
                continue
            if str(ds.get("SOPClassUID", "")) == _DICOMDIR_SOP_CLASS or "SeriesInstanceUID" not in ds:
                continue
            if "Rows" not in ds or "Columns" not in ds:
                continue  # not an image (structured report, RT structure set, presentation state...)
            out.append((path, ds))
    return out


def _scan(folder: Path) -> tuple[list[SeriesInfo], dict[Path, pydicom.Dataset]]:
    if not folder.exists():
        raise InputError(f"{folder} does not exist")
    if not folder.is_dir():
        raise InputError(f"{folder} is not a folder")
    groups: dict[str, list[tuple[Path, pydicom.Dataset]]] = {}
    headers: dict[Path, pydicom.Dataset] = {}
    for path, ds in _walk_headers(folder):
        groups.setdefault(str(ds.SeriesInstanceUID), []).append((path, ds))
        headers[path] = ds
    infos = []
    for uid, members in groups.items():
        first = members[0][1]
        number = first.get("SeriesNumber")
        infos.append(
            SeriesInfo(
                uid=uid,
                modality=str(first.get("Modality", "") or ""),
                description=str(first.get("SeriesDescription", "") or ""),
                number=int(number) if number not in (None, "") else None,
                n_slices=len(members),
                files=tuple(p for p, _ in members),
            )
        )
    infos.sort(key=lambda s: (-s.n_slices, s.uid))
    return infos, headers


def read_series_info(folder: str | os.PathLike[str]) -> list[SeriesInfo]:
    """The DICOM image series in ``folder`` and its sub-folders.

    Files without the DICOM preamble, DICOMDIR files and non-image objects are skipped.

    Parameters
    ----------
    folder : path
        Folder to search recursively.

    Returns
    -------
    list of SeriesInfo
        Most slices first (ties by UID); empty if the folder holds no DICOM images.

    Raises
    ------
    InputError
        If ``folder`` does not exist or is not a folder.
    """
    return _scan(Path(folder))[0]


def choose_series(infos: list[SeriesInfo], *, series_uid: str | None = None) -> SeriesInfo:
    """The series to read: the one with ``series_uid``, else the CT series with the most slices.

    Parameters
    ----------
    infos : list of SeriesInfo
        As :func:`read_series_info` returns them.
    series_uid : str, optional
        SeriesInstanceUID to pick.

    Returns
    -------
    SeriesInfo

    Raises
    ------
    InputError
        If ``infos`` is empty or no series has ``series_uid`` (the message lists the series that exist).
    """
    if not infos:
        raise InputError("no DICOM image series found")
    listing = "; ".join(s.summary() for s in infos)
    if series_uid is not None:
        for info in infos:
            if info.uid == series_uid.strip():
                return info
        raise InputError(f"no DICOM series with UID {series_uid}; series found: {listing}")
    ct = [s for s in infos if s.modality.upper() == "CT"]
    pool = ct or infos
    chosen = max(pool, key=lambda s: (s.n_slices, s.uid))
    if not ct:
        log.warning("no CT series found; reading %s, values may not be HU", chosen.summary())
    if len(infos) > 1:
        others = "; ".join(s.summary() for s in infos if s is not chosen)
        log.warning("%d DICOM series found; reading %s (others: %s); pass --series-uid to pick another", len(infos),
                    chosen.summary(), others)
    else:
        log.info("reading DICOM series %s", chosen.summary())
    return chosen


def _floats(value: object, n: int, tag: str, path: Path) -> np.ndarray:
    try:
        arr = np.asarray([float(v) for v in value], dtype=float)  # type: ignore[union-attr]
    except (TypeError, ValueError):
        arr = np.empty(0)
    if arr.shape != (n,) or not np.all(np.isfinite(arr)):
        raise InputError(f"DICOM file {path} has a missing or malformed {tag}; cannot place the slice in space")
    return arr


def _sorted_files(info: SeriesInfo, headers: dict[Path, pydicom.Dataset]) -> tuple[list[Path], bool]:
    """The series' files sorted along the slice normal, after checking they form one regular 3D grid.

    Returns the files and whether the rescale parameters vary (or are non-integer), which calls for a
    float32 read so that SimpleITK does not truncate values to the first slice's integer type.
    """
    where = f"DICOM series {info.uid}"
    datasets = [headers[p] for p in info.files]
    for path, ds in zip(info.files, datasets):
        if int(ds.get("SamplesPerPixel", 1) or 1) != 1:
            raise InputError(f"{where} holds colour (RGB) images (e.g. {path.name}); femurseg needs grey-value CT")
        if int(ds.get("NumberOfFrames", 1) or 1) > 1:
            raise InputError(
                f"{where} is a multi-frame (enhanced) DICOM ({path.name}); convert it to single-frame slices "
                "or NIfTI (e.g. with dcm2niix) first"
            )
    for path, ds in zip(info.files, datasets):
        problem = _pixel_data_problem(path, ds)
        if problem:
            raise InputError(f"{where} is damaged: {path} {problem}; copy the series again from its source")
    if info.n_slices < 2:
        raise InputError(f"{where} has a single slice ({info.files[0]}); femurseg needs a 3D series of at least 2 slices")
    sizes = {(int(ds.Rows), int(ds.Columns)) for ds in datasets}
    if len(sizes) > 1:
        shown = ", ".join(f"{c}×{r}" for r, c in sorted(sizes))
        raise InputError(f"{where} is inconsistent: its slices have different sizes ({shown} pixels)")
    iops = np.stack([_floats(ds.get("ImageOrientationPatient"), 6, "ImageOrientationPatient", p) for p, ds in zip(info.files, datasets)])
    if np.abs(iops - iops[0]).max() > 1e-4:
        raise InputError(f"{where} is inconsistent: its slices have different orientations (ImageOrientationPatient)")
    spacings = {tuple(_floats(ds.get("PixelSpacing"), 2, "PixelSpacing", p)) for p, ds in zip(info.files, datasets)}
    if len(spacings) > 1:
        raise InputError(f"{where} is inconsistent: its slices have different pixel spacings")
    row, col = iops[0, :3], iops[0, 3:]
    normal = np.cross(row, col)
    if np.linalg.norm(normal) < 0.5:
        raise InputError(f"{where} has an invalid ImageOrientationPatient {list(iops[0])}")
    normal /= np.linalg.norm(normal)
    positions = np.stack([_floats(ds.get("ImagePositionPatient"), 3, "ImagePositionPatient", p) for p, ds in zip(info.files, datasets)])
    depth = positions @ normal
    order = np.argsort(depth, kind="stable")
    depth, positions = depth[order], positions[order]
    gaps = np.diff(depth)
    if gaps.min() < 1e-3:
        raise InputError(
            f"{where} has several slices at the same position (several acquisitions, echoes or phases in one "
            "series?); split it or pass another series_uid"
        )
    mean_gap = (depth[-1] - depth[0]) / (len(depth) - 1)
    tolerance = max(0.02, 0.01 * mean_gap)  # positions are stored rounded (often to 0.01 mm)
    if np.abs(gaps - mean_gap).max() > tolerance:
        raise InputError(
            f"{where} has uneven slice spacing (gaps from {gaps.min():.3f} to {gaps.max():.3f} mm: missing slices?); "
            "femurseg needs a regularly spaced series"
        )
    # Slices that slide sideways as they stack (gantry tilt) form a sheared grid that an image cannot describe.
    lateral = positions - positions[0] - np.outer(depth - depth[0], normal)
    if np.linalg.norm(lateral, axis=1).max() > tolerance:
        raise InputError(
            f"{where} is sheared (gantry tilt: slice positions do not follow the slice normal); "
            "resample it to a regular grid first (e.g. dcm2niix corrects gantry tilt)"
        )
    rescale = {(float(ds.get("RescaleSlope", 1) or 1), float(ds.get("RescaleIntercept", 0) or 0)) for ds in datasets}
    needs_float = len(rescale) > 1 or any(not float(s).is_integer() or not float(i).is_integer() for s, i in rescale)
    return [info.files[i] for i in order], needs_float


def _fit_type(image: sitk.Image) -> sitk.Image:
    """HU in the smallest exact type: int16 when the values fit, int32 otherwise; floats as float32."""
    pid = image.GetPixelID()
    if pid in (sitk.sitkFloat64, sitk.sitkFloat32):
        return sitk.Cast(image, sitk.sitkFloat32) if pid == sitk.sitkFloat64 else image
    stats = sitk.MinimumMaximumImageFilter()
    stats.Execute(image)
    lo, hi = stats.GetMinimum(), stats.GetMaximum()
    if -32768 <= lo and hi <= 32767:
        return image if pid == sitk.sitkInt16 else sitk.Cast(image, sitk.sitkInt16)
    if -(2**31) <= lo and hi <= 2**31 - 1:
        return image if pid == sitk.sitkInt32 else sitk.Cast(image, sitk.sitkInt32)
    return sitk.Cast(image, sitk.sitkFloat32)


def read_series(info: SeriesInfo) -> sitk.Image:
    """Read one DICOM series as a 3D image in HU with its exact geometry.

    Parameters
    ----------
    info : SeriesInfo
        A series from :func:`read_series_info`.

    Returns
    -------
    SimpleITK.Image
        3D image [HU] (RescaleSlope/RescaleIntercept applied): int16 when the values fit, else int32, or
        float32 for non-integer rescaling.  Spacing [mm], origin [mm, LPS] and direction from the headers.

    Raises
    ------
    InputError
        If the series is a single slice, multi-frame, colour, inconsistent (slice sizes, orientations, pixel
        spacings), irregular (duplicate or missing slices, gantry tilt) or unreadable.
    """
    headers = {}
    for path in info.files:
        try:
            headers[path] = _read_header(path)
        except (InvalidDicomError, OSError, ValueError, EOFError, KeyError, TypeError, AttributeError) as err:
            raise InputError(f"cannot read DICOM file {path}: {err}") from None
    return _read_series(info, headers)


def _read_series(info: SeriesInfo, headers: dict[Path, pydicom.Dataset]) -> sitk.Image:
    files, needs_float = _sorted_files(info, headers)
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames([str(p) for p in files])
    if needs_float:
        reader.SetOutputPixelType(sitk.sitkFloat32)
    try:
        image = reader.Execute()
    except RuntimeError as err:
        first = str(err).strip().splitlines()[-1] if str(err).strip() else "unknown error"
        raise InputError(f"cannot read the pixels of DICOM series {info.uid}: {first}") from None
    if image.GetDimension() != 3 or image.GetNumberOfComponentsPerPixel() != 1:
        raise InputError(f"DICOM series {info.uid} did not read as a 3D grey-value image")
    return _fit_type(image)


def read_dicom_folder(folder: str | os.PathLike[str], *, series_uid: str | None = None) -> sitk.Image:
    """Find the series in ``folder``, choose one (see :func:`choose_series`) and read it (see :func:`read_series`)."""
    folder = Path(folder)
    infos, headers = _scan(folder)
    if not infos:
        raise InputError(f"{folder} holds no DICOM image files; pass a DICOM series folder or an image file (.nii.gz, .nrrd, .mha)")
    chosen = choose_series(infos, series_uid=series_uid)
    return _read_series(chosen, headers)
