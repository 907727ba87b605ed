"""Mesh helpers of the phantom's anatomy: bundled meshes, voxelisation, signed distance, sphere fits.

Meshes are turned into signed-distance volumes once per process (see ``_template``): a robust scan-line
voxelisation (ray parity along the three axes, majority vote, so the few small holes of the coarse OpenSim
pelvis do not leak), Euclidean distance transforms, and a light Gaussian smoothing of the distance.
"""

from __future__ import annotations

import importlib.resources
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from femurseg.geometry import fit_sphere as _fit_sphere

#: OpenSim body frame (x anterior, y superior, z right) → LPS (x left, y posterior, z superior): p_lps = A @ p_os.
OPENSIM_TO_LPS = np.array([[0.0, 0.0, -1.0], [-1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])


def load_bundled_mesh(name: str):  # -> trimesh.Trimesh
    """One of the bundled OpenSim Gait2392 meshes (``femur_r``, ``femur_l``, ``pelvis``, ``sacrum``) [mm, OpenSim frame]."""
    import trimesh

    ref = importlib.resources.files("femurseg") / "resources" / "meshes" / f"opensim_gait2392_{name}_mm.ply"
    with importlib.resources.as_file(ref) as path:
        return trimesh.load(str(path), file_type="ply", process=True, force="mesh")


def fit_sphere(points: np.ndarray) -> tuple[np.ndarray, float]:
    """Least-squares (algebraic) sphere through points (N, 3) [mm]: centre (3,) and radius [mm]
    (:func:`femurseg.geometry.fit_sphere` without its residual)."""
    centre, radius, _ = _fit_sphere(points)
    return centre, radius


@dataclass(frozen=True)
class SdfVolume:
    """A signed distance sampled on an axis-aligned grid of some frame: value at ``origin + index * spacing``.

    ``values`` is indexed (i, j, k) along the frame's (x, y, z) axes (the frame's own order, not an image's).
    """

    values: np.ndarray  # (NX, NY, NZ) float32 [mm], negative inside
    origin: np.ndarray  # (3,) frame coordinates of index (0, 0, 0) [mm]
    spacing: float  # [mm]

    def to_index(self, points: np.ndarray) -> np.ndarray:
        """Continuous indices (N, 3) of frame points (N, 3)."""
        return (np.asarray(points, dtype=float) - self.origin) / self.spacing


def _parity_along_last(tri: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    """Inside mask by crossing parity of rays along the last axis; ``tri`` (F, 3, 3) in index units."""
    nx, ny, nz = shape
    a, b, c = tri[:, 0], tri[:, 1], tri[:, 2]
    lo = np.maximum(np.ceil(np.minimum(np.minimum(a[:, :2], b[:, :2]), c[:, :2])).astype(np.int64), 0)
    hi = np.minimum(np.floor(np.maximum(np.maximum(a[:, :2], b[:, :2]), c[:, :2])).astype(np.int64),
                    [nx - 1, ny - 1])
    det = (b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (c[:, 0] - a[:, 0]) * (b[:, 1] - a[:, 1])
    n_i = np.maximum(hi[:, 0] - lo[:, 0] + 1, 0)
    n_j = np.maximum(hi[:, 1] - lo[:, 1] + 1, 0)
    n_cand = np.where(np.abs(det) > 1e-12, n_i * n_j, 0)
    counts = np.zeros((nx * ny, nz + 1), dtype=np.int16)
    total = int(n_cand.sum())
    if total:
        # Every (triangle, column) candidate pair at once: the columns of each triangle's bounding box.
        t = np.repeat(np.arange(len(tri)), n_cand)
        off = np.arange(total) - np.repeat(np.cumsum(n_cand) - n_cand, n_cand)
        ii = lo[t, 0] + off // n_j[t]
        jj = lo[t, 1] + off % n_j[t]
        at, bt, ct, dt = a[t], b[t], c[t], det[t]
        l1 = ((ii - at[:, 0]) * (ct[:, 1] - at[:, 1]) - (ct[:, 0] - at[:, 0]) * (jj - at[:, 1])) / dt
        l2 = ((bt[:, 0] - at[:, 0]) * (jj - at[:, 1]) - (ii - at[:, 0]) * (bt[:, 1] - at[:, 1])) / dt
        l0 = 1.0 - l1 - l2
        hit = (l0 >= 0) & (l1 >= 0) & (l2 >= 0)
        z = l0[hit] * at[hit, 2] + l1[hit] * bt[hit, 2] + l2[hit] * ct[hit, 2]
        k = np.clip(np.ceil(z).astype(np.int64), 0, nz)
        np.add.at(counts, (ii[hit] * ny + jj[hit], k), 1)
    return (np.cumsum(counts[:, :nz], axis=1) % 2).astype(bool).reshape(nx, ny, nz)


def voxelize(vertices: np.ndarray, faces: np.ndarray, origin: np.ndarray, spacing: float,
             shape: tuple[int, int, int], *, robust: bool = True) -> np.ndarray:
    """Inside mask (NX, NY, NZ) of a closed or nearly closed triangle mesh on a grid (frame axes order).

    Rays along each axis give a parity mask; the majority of the three is kept, so a ray through one of a
    coarse mesh's small holes (or along a non-manifold edge) does not flip a whole column. A watertight mesh
    needs one direction only (``robust=False``).
    """
    # An irrational sub-voxel shift keeps rays off vertices and edges (which would be counted twice or not at all).
    shift = np.array([0.1234567, 0.2345678, 0.3456789]) * 1e-3
    idx = (np.asarray(vertices, dtype=float) - origin) / spacing + shift
    tri = idx[np.asarray(faces)]
    if robust is False:
        return _parity_along_last(tri, shape)
    votes = np.zeros(shape, dtype=np.uint8)
    for axis in range(3):
        order = [a for a in range(3) if a != axis] + [axis]
        sub_shape = tuple(shape[a] for a in order)
        mask = _parity_along_last(tri[:, :, order], sub_shape)
        votes += np.transpose(mask, np.argsort(order)).astype(np.uint8)
    return votes >= 2


def sdf_from_mask(mask: np.ndarray, spacing: float, *, smooth_mm: float) -> np.ndarray:
    """Signed distance [mm] (negative inside) of a voxel mask, Gaussian-smoothed by ``smooth_mm`` (σ) [mm]."""
    # One distance transform to the boundary voxels (inside voxels with an outside face neighbour) serves both
    # sides; the surface lies half a voxel outside those voxels' centres.
    boundary = mask & ~ndimage.binary_erosion(mask, border_value=0)
    d = ndimage.distance_transform_edt(~boundary).astype(np.float32)
    sdf = np.where(mask, -d - 0.5, d - 0.5).astype(np.float32) * np.float32(spacing)
    if smooth_mm > 0:
        sdf = ndimage.gaussian_filter(sdf, smooth_mm / spacing, mode="nearest")
    return sdf


def mesh_sdf(vertices: np.ndarray, faces: np.ndarray, *, spacing: float, margin: float,
             smooth_mm: float, clip: tuple[np.ndarray, np.ndarray] | None = None,
             robust: bool = True) -> SdfVolume:
    """Signed distance volume of a mesh over its bounds (optionally clipped to ``clip`` = (lo, hi)) plus ``margin``."""
    v = np.asarray(vertices, dtype=float)
    lo, hi = v.min(axis=0) - margin, v.max(axis=0) + margin
    if clip is not None:
        lo, hi = np.maximum(lo, clip[0]), np.minimum(hi, clip[1])
    shape = tuple(int(n) for n in np.ceil((hi - lo) / spacing).astype(int) + 1)
    mask = voxelize(v, faces, lo, spacing, shape, robust=robust)
    return SdfVolume(sdf_from_mask(mask, spacing, smooth_mm=smooth_mm), lo, float(spacing))
