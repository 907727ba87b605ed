"""How a scan is turned into the network's input: the contract shared by training, model bundles and inference.

Torch-free.  The :class:`Preprocessing` of a model is stored in its bundle's ``model.json``; training and
inference both call the functions of this module so that they prepare images identically.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from femurseg.geometry import Grid

if TYPE_CHECKING:
    import SimpleITK as sitk


@dataclass(frozen=True)
class Preprocessing:
    """Preprocessing of a one-sided femur model.

    Attributes
    ----------
    task : {"femur", "locate"}
        ``"femur"``: the fine, one-sided model; it sees one femur's region of interest and predicts
        background/femur (2 classes).  ``"locate"``: the coarse locator; it sees the whole scan and predicts
        background/right femur/left femur (3 classes, patient sides), so regions of interest can be cropped.
    target_spacing_zyx : (3,) tuple of float
        Isotropic or anisotropic spacing the network works at [mm], (z, y, x).
    hu_window : (2,) tuple of float
        Intensities are clipped to this window [HU] and mapped linearly to [-1, 1].
    patch_size_zyx : (3,) tuple of int
        Training patch and sliding-window size [voxels], each divisible by ``2 ** depth`` of the network.
    window_size_zyx : (3,) tuple of int, optional
        Sliding-window size at inference [voxels], each divisible by ``2 ** depth``; ``None`` uses
        ``patch_size_zyx``.  The V-Net is fully convolutional, so a model trained on small patches (cheap on a CPU)
        can run over larger windows: fewer window seams and far fewer overlapping evaluations.
    roi_margin_mm : float
        Margin added around a femur's bounding box when cropping its region of interest [mm].
    mirror_left : bool
        The network sees right femurs; left-side regions are mirrored along the patient's left–right axis
        (``task="femur"`` only; a locator sees the scan as it is).
    """

    task: str = "femur"
    target_spacing_zyx: tuple[float, float, float] = (1.0, 1.0, 1.0)
    hu_window: tuple[float, float] = (-250.0, 1750.0)
    patch_size_zyx: tuple[int, int, int] = (96, 96, 96)
    window_size_zyx: tuple[int, int, int] | None = None
    roi_margin_mm: float = 12.0
    mirror_left: bool = True

    def __post_init__(self) -> None:
        if self.task not in ("femur", "locate"):
            raise ValueError(f"task must be 'femur' or 'locate', not {self.task!r}")
        if any(s <= 0 for s in self.target_spacing_zyx):
            raise ValueError("target_spacing_zyx must be positive")
        if not self.hu_window[0] < self.hu_window[1]:
            raise ValueError("hu_window must be (low, high) with low < high")
        if any(p <= 0 for p in self.patch_size_zyx):
            raise ValueError("patch_size_zyx must be positive")
        if self.window_size_zyx is not None and any(w <= 0 for w in self.window_size_zyx):
            raise ValueError("window_size_zyx must be positive")

    @property
    def inference_window_zyx(self) -> tuple[int, int, int]:
        """The sliding-window size used at inference [voxels]: ``window_size_zyx``, else ``patch_size_zyx``."""
        return tuple(self.window_size_zyx or self.patch_size_zyx)  # type: ignore[return-value]


# ----------------------------------------------------------------------------------------------------------------
# Region-of-interest preparation, shared by training and inference (torch-free: numpy + SimpleITK).
#
# The network works on grids with identity direction in LPS at the target spacing, so the array's x axis is the
# patient's right→left axis whatever the scan's orientation (oblique scans included), and mirroring a left ROI is
# a flip of the last array axis.

#: ITK's default tolerance for "same geometry" is relative to the spacing; we use the same idea.
_GEOMETRY_TOLERANCE = 1e-4


def reorient_to_lps(image: "sitk.Image") -> "sitk.Image":
    """The image with its axes permuted/flipped so that its direction is as close to LPS as possible.

    Only a permutation and flips of the voxel array (SimpleITK ``DICOMOrient``): no interpolation, exact values.
    """
    import SimpleITK as sitk

    return sitk.DICOMOrient(image, "LPS")


def world_box_of_mask(mask: "sitk.Image") -> tuple[np.ndarray, np.ndarray] | None:
    """World bounding box of a mask's non-zero voxel centres.

    Parameters
    ----------
    mask : SimpleITK.Image
        A 3D label or mask image of any direction.

    Returns
    -------
    (lower_xyz, upper_xyz) : two (3,) ndarrays [mm, LPS], or None when the mask is empty.
        For oblique images, the box encloses the mask's index-space box, so it may be slightly larger than tight.
    """
    import SimpleITK as sitk

    arr = sitk.GetArrayViewFromImage(mask)
    nz = [np.flatnonzero(arr.any(axis=tuple(a for a in range(3) if a != ax))) for ax in range(3)]
    if any(len(n) == 0 for n in nz):
        return None
    lo_zyx = [int(n[0]) for n in nz]
    hi_zyx = [int(n[-1]) for n in nz]
    corners = np.array([[z, y, x] for z in (lo_zyx[0], hi_zyx[0]) for y in (lo_zyx[1], hi_zyx[1]) for x in (lo_zyx[2], hi_zyx[2])], float)
    world = np.array([mask.TransformContinuousIndexToPhysicalPoint(tuple(c[::-1])) for c in corners])
    return world.min(axis=0), world.max(axis=0)


def roi_grid(
    lower_xyz: Sequence[float],
    upper_xyz: Sequence[float],
    *,
    spacing_zyx: Sequence[float],
    margin_mm: float,
    min_shape_zyx: Sequence[int] = (1, 1, 1),
) -> Grid:
    """An LPS, identity-direction voxel grid covering a world box plus a margin.

    The grid is centred on the box, so the grids of two mirror-image boxes are mirror images of each other
    (a left femur's ROI is then exactly the mirrored right one in a symmetric scan).

    Parameters
    ----------
    lower_xyz, upper_xyz : (3,) sequence of float
        The box's corners [mm, LPS], (x, y, z).
    spacing_zyx : (3,) sequence of float
        The grid's spacing [mm], (z, y, x).
    margin_mm : float
        Added on every side of the box [mm].
    min_shape_zyx : (3,) sequence of int
        Smallest grid shape [voxels] (e.g. the patch size, so a small ROI is never smaller than a patch).

    Returns
    -------
    Grid
    """
    lo = np.asarray(lower_xyz, float) - margin_mm
    hi = np.asarray(upper_xyz, float) + margin_mm
    spacing_xyz = np.asarray(spacing_zyx, float)[::-1]
    shape_xyz = np.ceil((hi - lo) / spacing_xyz - 1e-6).astype(int) + 1
    shape_xyz = np.maximum(shape_xyz, np.asarray(min_shape_zyx, int)[::-1])
    origin = (lo + hi) / 2.0 - (shape_xyz - 1) / 2.0 * spacing_xyz
    return Grid(
        shape_zyx=tuple(int(n) for n in shape_xyz[::-1]),
        spacing_zyx=tuple(float(s) for s in spacing_zyx),
        origin_xyz=tuple(float(o) for o in origin),
    )


def scan_grid(image: "sitk.Image", *, spacing_zyx: Sequence[float]) -> Grid:
    """An LPS, identity-direction grid at ``spacing_zyx`` covering the whole scan (the locator's view)."""
    size = image.GetSize()
    corners = [
        image.TransformContinuousIndexToPhysicalPoint((float(i), float(j), float(k)))
        for i in (0, size[0] - 1) for j in (0, size[1] - 1) for k in (0, size[2] - 1)
    ]
    c = np.array(corners)
    return roi_grid(c.min(axis=0), c.max(axis=0), spacing_zyx=spacing_zyx, margin_mm=0.0)


def _reference(grid: Grid) -> "sitk.Image":
    import SimpleITK as sitk

    ref = sitk.Image([int(n) for n in grid.shape_zyx[::-1]], sitk.sitkUInt8)
    ref.SetSpacing([float(s) for s in grid.spacing_zyx[::-1]])
    ref.SetOrigin([float(o) for o in grid.origin_xyz])
    ref.SetDirection([float(d) for d in grid.direction])
    return ref


def resample_image(image: "sitk.Image", grid: Grid, *, fill_hu: float) -> np.ndarray:
    """The scan linearly interpolated onto ``grid``.

    Parameters
    ----------
    image : SimpleITK.Image
        The scan [HU], any direction.
    grid : Grid
        The target grid (e.g. from :func:`roi_grid`).
    fill_hu : float
        Value outside the scan [HU]; use the window's low end so padding looks like the padding of a patch.

    Returns
    -------
    (Z, Y, X) ndarray of float32 [HU]
    """
    import SimpleITK as sitk

    out = sitk.Resample(image, _reference(grid), sitk.Transform(), sitk.sitkLinear, float(fill_hu), sitk.sitkFloat32)
    return sitk.GetArrayFromImage(out)


def resample_fraction(mask: "sitk.Image", grid: Grid) -> np.ndarray:
    """A binary mask linearly interpolated at each ``grid`` voxel centre: a partial-volume estimate of the fraction
    of the voxel it covers (exact only where the mask's grid is near ``grid``'s).

    Parameters
    ----------
    mask : SimpleITK.Image
        Non-zero inside.
    grid : Grid

    Returns
    -------
    (Z, Y, X) ndarray of float32
        In [0, 1]; 0 outside the mask's image.
    """
    import SimpleITK as sitk

    m = sitk.Cast(sitk.NotEqual(mask, 0), sitk.sitkFloat32)
    out = sitk.Resample(m, _reference(grid), sitk.Transform(), sitk.sitkLinear, 0.0, sitk.sitkFloat32)
    return sitk.GetArrayFromImage(out)


def resample_mask(mask: "sitk.Image", grid: Grid) -> np.ndarray:
    """A binary mask on ``grid``: :func:`resample_fraction` at least 0.5 (smoother than nearest at a new spacing).

    Returns
    -------
    (Z, Y, X) ndarray of bool
    """
    return resample_fraction(mask, grid) >= 0.5


def resample_labels(labels: "sitk.Image", grid: Grid, *, values: Sequence[int]) -> np.ndarray:
    """A label map on ``grid``: each label interpolated linearly as a fraction; a voxel takes the label of
    largest fraction if that fraction is at least 0.5, else background.

    Returns
    -------
    (Z, Y, X) ndarray of uint8
    """
    import SimpleITK as sitk

    best = np.zeros(grid.shape_zyx, np.float32)
    out = np.zeros(grid.shape_zyx, np.uint8)
    for v in values:
        m = sitk.Cast(sitk.Equal(labels, int(v)), sitk.sitkFloat32)
        # GetArrayFromImage, not a view: a view of the temporary resampled image would dangle once it is freed.
        frac = sitk.GetArrayFromImage(
            sitk.Resample(m, _reference(grid), sitk.Transform(), sitk.sitkLinear, 0.0, sitk.sitkFloat32)
        )
        take = (frac >= 0.5) & (frac > best)
        out[take] = v
        np.maximum(best, frac, out=best)
    return out


def normalize_hu(array_hu: np.ndarray, *, hu_window: Sequence[float]) -> np.ndarray:
    """Intensities clipped to ``hu_window`` [HU] and mapped linearly to [-1, 1] (float32, same shape)."""
    lo, hi = float(hu_window[0]), float(hu_window[1])
    out = np.clip(np.asarray(array_hu, np.float32), lo, hi)
    out -= (lo + hi) / 2.0
    out *= 2.0 / (hi - lo)
    return out


def mirror_x(array_zyx: np.ndarray) -> np.ndarray:
    """The array flipped along x (its last axis), as a contiguous copy: a left femur looks like a right one."""
    return np.ascontiguousarray(np.asarray(array_zyx)[..., ::-1])


def crop_padded(array_zyx: np.ndarray, start_zyx: Sequence[int], shape_zyx: Sequence[int], *, fill: float) -> np.ndarray:
    """The block ``array[start : start + shape]``, padded with ``fill`` where it leaves the array.

    Parameters
    ----------
    array_zyx : (Z, Y, X) ndarray
    start_zyx : (3,) sequence of int
        First voxel of the block, may be negative [voxels].
    shape_zyx : (3,) sequence of int
        Block shape [voxels].
    fill : float
        Value outside the array.

    Returns
    -------
    ndarray of ``shape_zyx``, the array's dtype
    """
    out = np.full(tuple(int(s) for s in shape_zyx), fill, dtype=array_zyx.dtype)
    src, dst = [], []
    for a in range(3):
        s0, n, size = int(start_zyx[a]), int(shape_zyx[a]), array_zyx.shape[a]
        lo, hi = max(s0, 0), min(s0 + n, size)
        if hi <= lo:
            return out
        src.append(slice(lo, hi))
        dst.append(slice(lo - s0, hi - s0))
    out[tuple(dst)] = array_zyx[tuple(src)]
    return out
