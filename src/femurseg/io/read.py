"""Read a scan or a label map: an image file (NIfTI, NRRD, MetaImage) or a DICOM series folder."""

from __future__ import annotations

import contextlib
import gzip
import logging
import os
import stat
import struct
import sys
import zlib
from pathlib import Path

import SimpleITK as sitk

from femurseg.errors import InputError
from femurseg.io.dicom import is_dicom_file, read_dicom_folder

__all__ = ["read_image", "format_of", "FILE_FORMATS", "MAX_VOXELS"]

#: Largest volume femurseg reads [voxels] (2³¹: 4 GiB of int16, far beyond any CT series); a header that
#: promises more is refused before anything is allocated.
MAX_VOXELS: int = 2**31

log = logging.getLogger(__name__)

#: File name endings femurseg reads and writes, and the format's name.  Longest ending first.
FILE_FORMATS: dict[str, str] = {
    ".nii.gz": "NIfTI",
    ".nii": "NIfTI",
    ".nrrd": "NRRD",
    ".nhdr": "NRRD",
    ".mha": "MetaImage",
    ".mhd": "MetaImage",
}


def _ending(path: Path) -> str | None:
    name = path.name.lower()
    for ending in FILE_FORMATS:
        if name.endswith(ending):
            return ending
    return None


def format_of(path: str | os.PathLike[str]) -> str:
    """The format of an input: ``"DICOM series"`` for a folder, else ``"NIfTI"``, ``"NRRD"`` or ``"MetaImage"``.

    Raises
    ------
    InputError
        If the path does not exist or its file name ending is not a supported format.
    """
    path = Path(path)
    if path.is_dir():
        return "DICOM series"
    if not path.exists():
        raise InputError(f"{path} does not exist")
    ending = _ending(path)
    if ending is None:
        if is_dicom_file(path):
            raise InputError(f"{path} is a single DICOM file; pass the folder that holds the whole series")
        raise InputError(f"{path}: unsupported file type; use {', '.join(FILE_FORMATS)} or a DICOM series folder")
    return FILE_FORMATS[ending]


#: NIfTI datatype code → bytes per voxel.
_NIFTI_BYTES: dict[int, int] = {2: 1, 4: 2, 8: 4, 16: 4, 32: 8, 64: 8, 128: 3, 256: 1, 512: 2, 768: 4, 1024: 8,
                                1280: 8, 1536: 16, 1792: 16, 2048: 32, 2304: 4}


def _nifti_promise(head: bytes, path: Path) -> tuple[int, int, tuple[float, ...]]:
    """From a NIfTI-1/2 header: (data offset [bytes], data size [bytes], pixdim x, y, z [mm]); InputError if bad."""
    for endian in ("<", ">"):
        (size,) = struct.unpack(endian + "i", head[:4])
        if size == 348 and len(head) >= 348:
            dim = struct.unpack(endian + "8h", head[40:56])
            (dtype,) = struct.unpack(endian + "h", head[70:72])
            pixdim = struct.unpack(endian + "8f", head[76:108])
            (offset,) = struct.unpack(endian + "f", head[108:112])
            break
        if size == 540 and len(head) >= 540:
            (dtype,) = struct.unpack(endian + "h", head[12:14])
            dim = struct.unpack(endian + "8q", head[16:80])
            pixdim = struct.unpack(endian + "8d", head[104:168])
            (offset,) = struct.unpack(endian + "q", head[168:176])
            break
    else:
        raise InputError(f"cannot read {path} as an image (damaged or not a NIfTI file?): no NIfTI header")
    n_dim = int(dim[0])
    if not 1 <= n_dim <= 7 or any(int(d) < 1 for d in dim[1:n_dim + 1]):
        raise InputError(f"{path}: the NIfTI header gives impossible dimensions {list(dim[1:max(n_dim, 1) + 1])}")
    voxels = 1
    for d in dim[1:n_dim + 1]:
        voxels *= int(d)
    if voxels > MAX_VOXELS:
        raise InputError(f"{path}: the header promises {voxels:,} voxels ({'×'.join(str(int(d)) for d in dim[1:n_dim + 1])}); "
                         f"femurseg reads at most {MAX_VOXELS:,} (damaged header?)")
    if dtype not in _NIFTI_BYTES:
        raise InputError(f"{path}: unknown NIfTI datatype code {dtype}")
    spacing = tuple(abs(float(v)) for v in pixdim[1:4])
    if n_dim >= 3 and any(not (v > 0.0) or v != v for v in spacing):
        raise InputError(f"{path}: the NIfTI header gives a voxel size of {list(spacing)} mm (zero or invalid); "
                         "fix pixdim in the header (e.g. with the scanner's spacing) before using it")
    return max(int(offset), 352 if size == 348 else 544), voxels * _NIFTI_BYTES[dtype], spacing


def _check_nifti(path: Path) -> None:
    """Refuse a NIfTI file whose data are shorter than its header promises (SimpleITK would zero-fill them)."""
    gz = path.name.lower().endswith(".gz")
    try:
        with (gzip.open(path, "rb") if gz else open(path, "rb")) as fh:
            head = fh.read(544)
            offset, need, _ = _nifti_promise(head, path)
            if not gz:
                have = path.stat().st_size - offset
            else:
                have = len(head) - offset
                chunk = 1 << 22
                while have < need:
                    block = fh.read(min(chunk, need - have))
                    if not block:
                        break
                    have += len(block)
    except gzip.BadGzipFile:
        raise InputError(f"cannot read {path} as an image (damaged or not a NIfTI file?): not gzip data") from None
    except (EOFError, zlib.error) as err:
        raise InputError(f"{path} is truncated or damaged ({err}); copy it again from its source") from None
    except struct.error:
        raise InputError(f"cannot read {path} as an image (damaged or not a NIfTI file?): too short") from None
    except OSError as err:
        raise InputError(f"cannot read {path}: {err.strerror or err}") from None
    if have < need:
        raise InputError(f"{path} is truncated: its header promises {need:,} bytes of voxel data, the file holds "
                         f"{max(have, 0):,}; copy it again from its source")


def _checked(image: sitk.Image, path: Path) -> sitk.Image:
    dim = image.GetDimension()
    if dim == 4 and image.GetSize()[3] == 1:
        # A 3D volume saved with a trailing time axis of length 1 (common in NIfTI): drop that axis.
        image = sitk.Extract(image, [*image.GetSize()[:3], 0], [0, 0, 0, 0], sitk.ExtractImageFilter.DIRECTIONCOLLAPSETOSUBMATRIX)
        dim = 3
    if dim == 2:
        raise InputError(f"{path} is a 2D image; femurseg needs a 3D volume")
    if dim != 3:
        raise InputError(f"{path} is a {dim}D image (size {image.GetSize()}); femurseg needs a single 3D volume")
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise InputError(
            f"{path} is a vector/RGB image ({image.GetNumberOfComponentsPerPixel()} components per voxel); "
            "femurseg needs a grey-value or label volume"
        )
    if "complex" in image.GetPixelIDTypeAsString():
        raise InputError(f"{path} holds complex values; femurseg needs a real-valued volume")
    if min(image.GetSize()) < 2:
        raise InputError(f"{path} holds a single slice (size {image.GetSize()}); femurseg needs a 3D volume")
    return image


def read_image(path: str | os.PathLike[str], *, series_uid: str | None = None) -> sitk.Image:
    """Read a 3D scan or label map with its exact geometry.

    Parameters
    ----------
    path : path
        An image file (``.nii``, ``.nii.gz``, ``.nrrd``, ``.nhdr``, ``.mha``, ``.mhd``) or a folder holding a
        DICOM series (searched recursively).
    series_uid : str, optional
        For a DICOM folder: the SeriesInstanceUID to read.  By default the CT series with the most slices
        is read, and the choice (with the other series) is logged at INFO.

    Returns
    -------
    SimpleITK.Image
        A 3D scalar image.  Files keep their stored pixel type (scaling such as NIfTI's scl_slope applied);
        DICOM comes out in [HU] (RescaleSlope/RescaleIntercept applied) as int16 when the values fit, else
        int32, or float32 for non-integer rescaling.  Size, spacing [mm], origin [mm, LPS] and direction are
        exactly those stored.

    Raises
    ------
    InputError
        If the path is missing, not a supported or readable image, not a 3D scalar volume, or a DICOM folder
        without a usable series (none, single slice, inconsistent, ``series_uid`` not found).
    """
    path = Path(path)
    if path.is_dir():
        return read_dicom_folder(path, series_uid=series_uid)
    fmt = format_of(path)  # raises for missing files and unsupported endings
    try:
        mode = path.stat().st_mode
    except OSError as err:
        raise InputError(f"cannot read {path}: {err.strerror or err}") from None
    if not stat.S_ISREG(mode):
        raise InputError(f"{path} is not a regular file (a pipe, device or socket?); give an image file")
    if not os.access(path, os.R_OK):
        raise InputError(f"cannot read {path}: permission denied")
    if fmt == "NIfTI":
        _check_nifti(path)
    if series_uid is not None:
        log.warning("series_uid is ignored for %s, which is not a DICOM folder", path)
    with _captured_stderr() as said:
        try:
            image = sitk.ReadImage(str(path))
        except RuntimeError as err:
            image, lines = None, [ln.strip() for ln in str(err).strip().splitlines() if ln.strip()]
    if image is None:
        native = " ".join(ln.strip() for ln in said() if ln.strip())
        if "not read completely" in native:
            import re

            m = re.search(r"ideal\s*=\s*(\d+)\s*:\s*actual\s*=\s*(\d+)", native)
            sizes = (f"its header promises {int(m.group(1)):,} bytes of voxel data, the file holds "
                     f"{int(m.group(2)):,}") if m else "the voxel data end early"
            raise InputError(f"{path} is truncated: {sizes}; copy it again from its source")
        detail = lines[-1] if lines else "unknown error"
        raise InputError(f"cannot read {path} as an image (damaged or not a {fmt} file?): {detail}") from None
    return _checked(image, path)


@contextlib.contextmanager
def _captured_stderr():
    """Capture what C++ readers print on file descriptor 2 (MetaIO reports short data there, not in the exception):
    yields a function returning the captured lines, so a failure becomes one line of ours and success stays quiet."""
    import tempfile

    lines: list[str] = []
    try:
        saved = os.dup(2)
    except OSError:  # no stderr to redirect
        yield lambda: lines
        return
    with tempfile.TemporaryFile(mode="w+b") as sink:
        try:
            sys.stderr.flush()
            os.dup2(sink.fileno(), 2)
            yield lambda: lines
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            lines.extend(sink.read().decode("utf-8", "replace").splitlines())
