"""Image geometry without SimpleITK: a voxel grid's size, spacing, origin and direction.

A :class:`Grid` describes where an array's voxels lie in world space (LPS, millimetres).  Arrays are (z, y, x);
``origin`` and ``direction`` are given as ITK does, in (x, y, z) terms, so a grid converts to and from a
SimpleITK image without loss (see :func:`femurseg.io.grid_of` and :func:`femurseg.io.image_from_array`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from femurseg.conventions import LEFT_FEMUR as _LEFT
from femurseg.conventions import RIGHT_FEMUR as _RIGHT


@dataclass(frozen=True)
class Grid:
    """A voxel grid in world space.

    Attributes
    ----------
    shape_zyx : (3,) tuple of int
        Array shape, (z, y, x).
    spacing_zyx : (3,) tuple of float
        Voxel spacing along the array's axes [mm], (z, y, x).
    origin_xyz : (3,) tuple of float
        World position of voxel (0, 0, 0) [mm, LPS], (x, y, z) as ITK.
    direction : (9,) tuple of float
        Direction cosines, row-major 3×3 as ITK: column j is the world direction of index axis j (x, y, z).
    """

    shape_zyx: tuple[int, int, int]
    spacing_zyx: tuple[float, float, float]
    origin_xyz: tuple[float, float, float] = (0.0, 0.0, 0.0)
    direction: tuple[float, ...] = field(default=(1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0))

    @property
    def direction_matrix(self) -> np.ndarray:
        """(3, 3) direction matrix; column j is the world axis of ITK index axis j (x, y, z)."""
        return np.asarray(self.direction, dtype=float).reshape(3, 3)

    def index_to_world(self, index_zyx: np.ndarray) -> np.ndarray:
        """World points [mm, LPS] (..., 3) as (x, y, z) of continuous array indices (..., 3) given as (z, y, x)."""
        idx_xyz = np.asarray(index_zyx, dtype=float)[..., ::-1]
        spacing_xyz = np.asarray(self.spacing_zyx, dtype=float)[::-1]
        return (idx_xyz * spacing_xyz) @ self.direction_matrix.T + np.asarray(self.origin_xyz, dtype=float)

    def world_to_index(self, points_xyz: np.ndarray) -> np.ndarray:
        """Continuous array indices (..., 3) as (z, y, x) of world points (..., 3) given as (x, y, z) [mm, LPS]."""
        rel = np.asarray(points_xyz, dtype=float) - np.asarray(self.origin_xyz, dtype=float)
        spacing_xyz = np.asarray(self.spacing_zyx, dtype=float)[::-1]
        idx_xyz = (rel @ self.direction_matrix) / spacing_xyz
        return idx_xyz[..., ::-1]

    def same_as(self, other: "Grid") -> bool:
        """Whether ``other`` is this grid: same shape, and spacing, origin and direction equal within rounding
        (spacing to 1e-4 relative, origin to a thousandth of the smallest voxel, direction cosines to 1e-4)."""
        tol = 1e-3 * min(self.spacing_zyx)
        return (
            tuple(self.shape_zyx) == tuple(other.shape_zyx)
            and np.allclose(self.spacing_zyx, other.spacing_zyx, rtol=1e-4, atol=0.0)
            and np.allclose(self.origin_xyz, other.origin_xyz, rtol=0.0, atol=tol)
            and np.allclose(self.direction, other.direction, rtol=0.0, atol=1e-4)
        )

    def crop(self, start_zyx: tuple[int, int, int], stop_zyx: tuple[int, int, int]) -> "Grid":
        """The grid of the sub-array ``[start:stop]`` (array indices, z, y, x): same spacing and direction, the
        origin moved to the first voxel of the crop."""
        start = np.asarray(start_zyx, dtype=float)
        origin = self.index_to_world(start)
        return Grid(shape_zyx=tuple(int(b - a) for a, b in zip(start_zyx, stop_zyx)),  # type: ignore[arg-type]
                    spacing_zyx=self.spacing_zyx, origin_xyz=tuple(float(v) for v in origin),  # type: ignore[arg-type]
                    direction=self.direction)

    def world_coordinates(self) -> np.ndarray:
        """World (x, y, z) of every voxel centre, shape (Z, Y, X, 3) [mm]; memory-hungry, for small grids."""
        zz, yy, xx = np.meshgrid(*(np.arange(n, dtype=float) for n in self.shape_zyx), indexing="ij")
        return self.index_to_world(np.stack([zz, yy, xx], axis=-1))


def split_femur_by_side(mask_zyx: np.ndarray, grid: Grid) -> np.ndarray:
    """A side label map (0, 1 right, 2 left) from an unsided femur mask.

    The two largest connected components are the two femurs; the one at smaller world x is the patient's right
    (LPS).  Smaller pieces join the side whose femur's centroid is nearer in x.  With a single femur, its side is
    decided by the scan's centre in x.

    Parameters
    ----------
    mask_zyx : (Z, Y, X) ndarray of bool
    grid : Grid
        The mask's geometry.

    Returns
    -------
    (Z, Y, X) ndarray of uint8
    """
    from scipy import ndimage

    comp, n = ndimage.label(mask_zyx)
    out = np.zeros(mask_zyx.shape, np.uint8)
    if n == 0:
        return out
    sizes = np.bincount(comp.ravel())[1:]
    centroids = np.array(ndimage.center_of_mass(mask_zyx, comp, range(1, n + 1)), float).reshape(n, 3)
    world_x = grid.index_to_world(centroids)[:, 0]
    order = np.argsort(-sizes, kind="stable")
    if n >= 2 and sizes[order[1]] >= 0.1 * sizes[order[0]]:
        a, b = order[0], order[1]
        right_x, left_x = sorted((world_x[a], world_x[b]))
        side_of = np.where(np.abs(world_x - right_x) <= np.abs(world_x - left_x), _RIGHT, _LEFT)
    else:
        centre_x = grid.index_to_world((np.asarray(grid.shape_zyx, float) - 1) / 2.0)[0]
        side_of = np.where(world_x < centre_x, _RIGHT, _LEFT)
    lut = np.concatenate([[0], side_of]).astype(np.uint8)
    return lut[comp]


def unsided_two_femurs(labels_zyx: np.ndarray, grid: Grid) -> bool:
    """Whether a label map marks both femurs with the one value 1 (an unsided "femur" label).

    femurseg's labels are 1 right, 2 left; a map holding only 1 whose femur splits into two large pieces on
    either side (:func:`split_femur_by_side`) used 1 for "femur", and reading it as "right femur" would be wrong.
    """
    values = np.unique(labels_zyx)
    if 2 in values or 1 not in values:
        return False
    sides = split_femur_by_side(labels_zyx == 1, grid)
    n_right, n_left = int(np.count_nonzero(sides == _RIGHT)), int(np.count_nonzero(sides == _LEFT))
    return min(n_right, n_left) >= 0.2 * max(n_right, n_left)


def fit_sphere(points: np.ndarray) -> tuple[np.ndarray, float, float]:
    """Least-squares sphere through points (algebraic fit): (centre (3,), radius, RMS residual) [input units].

    Raises
    ------
    ValueError
        Fewer than 4 points or a degenerate configuration.
    """
    p = np.asarray(points, float)
    if len(p) < 4:
        raise ValueError("a sphere needs at least 4 points")
    a = np.column_stack([2.0 * p, np.ones(len(p))])
    b = (p**2).sum(axis=1)
    sol, *_ = np.linalg.lstsq(a, b, rcond=None)
    centre = sol[:3]
    r2 = sol[3] + float(centre @ centre)
    if not np.isfinite(r2) or r2 <= 0:
        raise ValueError("degenerate sphere fit")
    radius = float(np.sqrt(r2))
    resid = float(np.sqrt(np.mean((np.linalg.norm(p - centre, axis=1) - radius) ** 2)))
    return centre, radius, resid
