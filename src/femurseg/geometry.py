"""Image geometry without SimpleITK: a voxel grid's size, spacing, origin and direction.

A :class:`Grid` describes where an array's voxels lie in world space (LPS, millimetres).  Arrays are (z, y, x);
``origin`` and ``direction`` are given as ITK does, in (x, y, z) terms, so a grid converts to and from a
SimpleITK image without loss (see :func:`femurseg.io.grid_of` and :func:`femurseg.io.image_from_array`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


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

    def world_coordinates(self) -> np.ndarray:
        """World (x, y, z) of every voxel centre, shape (Z, Y, X, 3) [mm]; memory-hungry, for small grids."""
        zz, yy, xx = np.meshgrid(*(np.arange(n, dtype=float) for n in self.shape_zyx), indexing="ij")
        return self.index_to_world(np.stack([zz, yy, xx], axis=-1))
