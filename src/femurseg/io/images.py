"""Conversions between ``SimpleITK.Image``, numpy arrays (z, y, x) and :class:`femurseg.geometry.Grid`.

These keep the geometry exactly: the (x, y, z) tuples of SimpleITK are reversed to (z, y, x) for arrays and
spacings, while origin and direction stay in ITK's (x, y, z) terms, as :class:`~femurseg.geometry.Grid` holds them.
"""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk

from femurseg.errors import InputError
from femurseg.geometry import Grid

__all__ = ["grid_of", "image_from_array", "array_of"]


def _require_3d_scalar(image: sitk.Image, what: str) -> None:
    if not isinstance(image, sitk.Image):
        raise InputError(f"{what} must be a SimpleITK.Image, not {type(image).__name__}")
    if image.GetDimension() != 3:
        raise InputError(f"{what} is {image.GetDimension()}D; femurseg needs a 3D image")
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise InputError(
            f"{what} has {image.GetNumberOfComponentsPerPixel()} components per voxel (vector/RGB); "
            "femurseg needs a scalar (grey-value or label) image"
        )


def grid_of(image: sitk.Image) -> Grid:
    """The voxel grid of a 3D image.

    Parameters
    ----------
    image : SimpleITK.Image
        A 3D scalar image.

    Returns
    -------
    Grid
        ``shape_zyx`` and ``spacing_zyx`` [mm] in array order (z, y, x); ``origin_xyz`` [mm, LPS] and
        ``direction`` (row-major 3×3) as ITK gives them.

    Raises
    ------
    InputError
        If the image is not 3D or not scalar.
    """
    _require_3d_scalar(image, "the image")
    return Grid(
        shape_zyx=tuple(int(n) for n in image.GetSize()[::-1]),  # type: ignore[arg-type]
        spacing_zyx=tuple(float(s) for s in image.GetSpacing()[::-1]),  # type: ignore[arg-type]
        origin_xyz=tuple(float(o) for o in image.GetOrigin()),  # type: ignore[arg-type]
        direction=tuple(float(d) for d in image.GetDirection()),
    )


def require_same_grid(image: sitk.Image, reference: sitk.Image, *, what: str) -> None:
    """Refuse an image (a mask, say) that is not on the reference scan's grid.

    Parameters
    ----------
    image, reference : SimpleITK.Image
        3D images; ``image`` must have the reference's size, spacing, origin and direction (:meth:`Grid.same_as`).
    what : str
        How the message names ``image`` (e.g. its path).

    Raises
    ------
    InputError
        One line: what differs, and what to give instead.
    """
    a, b = grid_of(image), grid_of(reference)
    if a.same_as(b):
        return
    if a.shape_zyx != b.shape_zyx:
        diff = f"size {image.GetSize()} vs {reference.GetSize()}"
    elif not np.allclose(a.spacing_zyx, b.spacing_zyx, rtol=1e-4):
        diff = f"spacing {tuple(round(v, 4) for v in image.GetSpacing())} vs {tuple(round(v, 4) for v in reference.GetSpacing())}"
    elif not np.allclose(a.direction, b.direction, atol=1e-4):
        diff = "direction differs"
    else:
        diff = f"origin {tuple(round(v, 2) for v in image.GetOrigin())} vs {tuple(round(v, 2) for v in reference.GetOrigin())}"
    raise InputError(f"{what} is not on the scan's grid ({diff}); give the scan the mask was made from")


def image_from_array(array_zyx: np.ndarray, grid: Grid) -> sitk.Image:
    """A SimpleITK image holding ``array_zyx`` on ``grid``, with exactly the grid's geometry.

    Parameters
    ----------
    array_zyx : (Z, Y, X) ndarray
        Voxel values; must have ``grid.shape_zyx``.  ``bool`` becomes uint8 and ``float16`` becomes float32,
        as SimpleITK has neither.
    grid : Grid
        Spacing [mm], origin [mm, LPS] and direction of the image.

    Returns
    -------
    SimpleITK.Image
        3D scalar image, size ``grid.shape_zyx[::-1]`` (x, y, z).

    Raises
    ------
    InputError
        If the array is not 3D or its shape differs from the grid's.
    """
    array = np.asarray(array_zyx)
    if array.ndim != 3:
        raise InputError(f"array must be 3D (z, y, x), got shape {array.shape}")
    if tuple(array.shape) != tuple(grid.shape_zyx):
        raise InputError(f"array shape {array.shape} (z, y, x) does not match the grid's {tuple(grid.shape_zyx)}")
    if array.dtype == np.bool_:
        array = array.astype(np.uint8)
    elif array.dtype == np.float16:
        array = array.astype(np.float32)
    image = sitk.GetImageFromArray(np.ascontiguousarray(array), isVector=False)
    image.SetSpacing(tuple(float(s) for s in grid.spacing_zyx[::-1]))
    image.SetOrigin(tuple(float(o) for o in grid.origin_xyz))
    image.SetDirection(tuple(float(d) for d in grid.direction))
    return image


def array_of(image: sitk.Image) -> np.ndarray:
    """The voxel values of a 3D image as a new (Z, Y, X) ndarray (a copy; the image is left untouched).

    Parameters
    ----------
    image : SimpleITK.Image
        A 3D scalar image.

    Returns
    -------
    (Z, Y, X) ndarray
        Values in the image's pixel type (e.g. int16 [HU], uint8 labels).
    """
    _require_3d_scalar(image, "the image")
    return sitk.GetArrayFromImage(image)
