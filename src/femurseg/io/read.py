"""Read a scan or a label map: an image file (NIfTI, NRRD, MetaImage) or a DICOM series folder."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import SimpleITK as sitk

from femurseg.errors import InputError
from femurseg.io.dicom import is_dicom_file, read_dicom_folder

__all__ = ["read_image", "format_of", "FILE_FORMATS"]

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
    format_of(path)  # raises for missing files and unsupported endings
    if series_uid is not None:
        log.warning("series_uid is ignored for %s, which is not a DICOM folder", path)
    try:
        image = sitk.ReadImage(str(path))
    except RuntimeError as err:
        lines = [ln.strip() for ln in str(err).strip().splitlines() if ln.strip()]
        detail = lines[-1] if lines else "unknown error"
        raise InputError(f"cannot read {path} as an image (damaged or not a {format_of(path)} file?): {detail}") from None
    return _checked(image, path)
