"""The anatomical frame of one proximal femur: head sphere, neck axis, shaft axis, and the measures derived from them.

Everything is in world coordinates, LPS millimetres, (x, y, z).  :class:`FemurFrame` holds the frame; the derived
measures (head diameter, neck-shaft angle, neck length, femoral axis length) are properties so that a frame made by
hand (tests, the phantom's truth) and one estimated from a mask (:func:`femur_frame`) report them the same way.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from femurseg.conventions import FEMUR_LABEL_FRACTION
from femurseg.errors import InputError
from femurseg.geometry import Grid, fit_sphere

__all__ = ["FemurFrame", "femur_frame"]

log = logging.getLogger(__name__)


def _unit(v: np.ndarray) -> np.ndarray:
    v = np.asarray(v, dtype=float)
    n = float(np.linalg.norm(v))
    if n == 0.0:
        raise ValueError("zero-length axis")
    return v / n


@dataclass(frozen=True)
class FemurFrame:
    """Anatomical frame of one proximal femur (world coordinates, LPS mm).

    Attributes
    ----------
    side : str
        ``"right"`` or ``"left"`` (the patient's side).
    head_center_xyz : (3,) ndarray
        Centre of the sphere fitted to the femoral head's articular surface [mm].
    head_radius_mm : float
        Radius of that sphere [mm].
    head_residual_mm : float
        RMS distance of the fitted surface points from the sphere [mm].
    neck_axis_xyz : (3,) ndarray
        Unit direction of the neck axis, pointing from the neck's base towards the head.
    neck_center_xyz : (3,) ndarray
        The point of the neck axis at the neck's narrowest cross-section [mm].
    neck_width_mm : float
        Equivalent diameter of the narrowest cross-section, sqrt(4·area/π) [mm].
    shaft_axis_xyz : (3,) ndarray
        Unit direction of the shaft axis, pointing distally (towards the knee).
    shaft_point_xyz : (3,) ndarray
        A point on the shaft axis [mm].
    shaft_length_mm : float
        Length of shaft the shaft axis was fitted to [mm] (``inf`` for an exact axis, as the phantom's truth).
        Under ``MIN_NSA_SHAFT_MM`` the neck-shaft angle is not reported: a hip scan that ends within a few
        centimetres of the lesser trochanter leaves only the flaring subtrochanteric region, whose axis is off by
        up to 20° (measured on phantoms with a known, deformed shaft).
    axis_length_mm : float
        Femoral axis length: along the neck axis, from the lateral surface of the femur below the greater
        trochanter to the apex of the head [mm] (the femoral part of DXA's hip axis length, which also crosses the
        acetabulum to the inner pelvic brim; a femur mask has no pelvis).  NaN when the axis leaves the mask.
    """

    side: str
    head_center_xyz: np.ndarray
    head_radius_mm: float
    head_residual_mm: float
    neck_axis_xyz: np.ndarray
    neck_center_xyz: np.ndarray
    neck_width_mm: float
    shaft_axis_xyz: np.ndarray
    shaft_point_xyz: np.ndarray
    shaft_length_mm: float = math.inf
    axis_length_mm: float = float("nan")

    def __post_init__(self) -> None:
        if self.side not in ("right", "left"):
            raise ValueError(f"side must be 'right' or 'left', not {self.side!r}")
        for name in ("head_center_xyz", "neck_center_xyz", "shaft_point_xyz"):
            object.__setattr__(self, name, np.asarray(getattr(self, name), dtype=float).reshape(3))
        object.__setattr__(self, "neck_axis_xyz", _unit(self.neck_axis_xyz).reshape(3))
        object.__setattr__(self, "shaft_axis_xyz", _unit(self.shaft_axis_xyz).reshape(3))

    @property
    def head_diameter_mm(self) -> float:
        """Femoral head diameter [mm]: twice the fitted radius."""
        return 2.0 * float(self.head_radius_mm)

    @property
    def neck_shaft_angle_deg(self) -> float:
        """Neck-shaft angle [deg]: the 3-D angle between the neck axis (towards the head) and the shaft axis
        (distally), as in femurseg's phantom; about 125–135° in adults.  NaN when the shaft axis rests on less
        than ``MIN_NSA_SHAFT_MM`` of shaft."""
        if not self.shaft_length_mm >= MIN_NSA_SHAFT_MM:
            return float("nan")
        c = float(np.clip(self.neck_axis_xyz @ self.shaft_axis_xyz, -1.0, 1.0))
        return math.degrees(math.acos(c))

    @property
    def neck_shaft_point_xyz(self) -> np.ndarray:
        """Where the neck axis passes closest to the shaft axis [mm] (on the neck axis): the neck's base."""
        u, s = self.neck_axis_xyz, self.shaft_axis_xyz
        w0 = self.head_center_xyz - self.shaft_point_xyz
        b = float(u @ s)
        denom = 1.0 - b * b
        if denom < 1e-9:  # parallel axes: no neck
            return self.head_center_xyz.copy()
        t = (b * float(w0 @ s) - float(w0 @ u)) / denom
        return self.head_center_xyz + t * u

    @property
    def neck_length_mm(self) -> float:
        """Neck length [mm]: from the head centre along the neck axis to the neck's base (the point of the neck
        axis closest to the shaft axis); the femoral offset's neck component."""
        return float(np.linalg.norm(self.head_center_xyz - self.neck_shaft_point_xyz))

    @property
    def head_apex_xyz(self) -> np.ndarray:
        """Where the neck axis leaves the head sphere medially [mm]."""
        return self.head_center_xyz + self.head_radius_mm * self.neck_axis_xyz

    def to_dict(self) -> dict:
        """JSON-able form: every quantity with its unit in the key (mm, deg), vectors as lists (x, y, z)."""
        return {
            "side": self.side,
            "head_center_xyz_mm": [round(float(v), 2) for v in self.head_center_xyz],
            "head_radius_mm": round(float(self.head_radius_mm), 2),
            "head_residual_mm": round(float(self.head_residual_mm), 3),
            "head_diameter_mm": round(self.head_diameter_mm, 2),
            "neck_axis_xyz": [round(float(v), 4) for v in self.neck_axis_xyz],
            "neck_center_xyz_mm": [round(float(v), 2) for v in self.neck_center_xyz],
            "neck_width_mm": round(float(self.neck_width_mm), 2),
            "shaft_axis_xyz": [round(float(v), 4) for v in self.shaft_axis_xyz],
            "shaft_point_xyz_mm": [round(float(v), 2) for v in self.shaft_point_xyz],
            "neck_shaft_angle_deg": None if not math.isfinite(self.neck_shaft_angle_deg)
            else round(self.neck_shaft_angle_deg, 2),
            "shaft_length_mm": None if not math.isfinite(self.shaft_length_mm) else round(float(self.shaft_length_mm), 1),
            "neck_length_mm": round(self.neck_length_mm, 2),
            "axis_length_mm": None if not math.isfinite(self.axis_length_mm) else round(float(self.axis_length_mm), 2),
        }


# ------------------------------------------------------------------------------------------------ estimation
#: Height of the femur's top part [mm] (world z under the mask's highest point) that holds the head, neck and
#: trochanters; the solid mask, the planes and the axis-length ray are taken there.
_TOP_MM = 130.0
#: The head's centre is looked for this far under the mask's top [mm] (a head radius is 17–30 mm).
_HEAD_SEARCH_MM = 45.0
#: Smallest mask [mL] that can be a proximal femur (a femoral head alone is ~40 mL).
_MIN_VOLUME_ML = 5.0
#: Plausible femoral head radius [mm] (adults 17–30; children and mask errors on either side).
_HEAD_RADIUS_MM = (8.0, 40.0)
#: The articular cap: surface points within this angle of the neck axis (seen from the head centre) [deg].
_CAP_DEG = 70.0
#: Largest RMS residual of the head's sphere fit, as a fraction of its radius (a real head fits to ~3 %).
_HEAD_RMS_FRACTION = 0.08
#: Where the bone's surface lies between a mask voxel's centre and its outside neighbour's, as a fraction of the
#: way: femurseg's masks hold every voxel at least FEMUR_LABEL_FRACTION full of bone, so the surface runs that
#: fraction of a voxel out from the outermost mask voxels' centres on average (0.5 for a half-volume mask).
_SURFACE_FRACTION = FEMUR_LABEL_FRACTION
#: Neck centroids for the neck axis, along it from the head centre [head radii].
_NECK_AXIS_T = (0.9, 1.3)
#: Where the narrowest neck section is looked for, along the neck axis from the head centre [head radii].
_NECK_WIDTH_T = (0.8, 2.5)
#: Sampling step of the cross-section planes [mm].
_PLANE_STEP_MM = 0.5
#: Thickness of the shaft's cross-section slabs [mm].
_SLAB_MM = 2.0
#: A slab whose farthest point lies this many equivalent radii from its centroid holds the lesser trochanter.
_TROCHANTER_ROUNDNESS = 1.25
#: The shaft starts this many head radii under the lowest slab with the lesser trochanter.
_BELOW_TROCHANTER = 0.75
#: Length of the proximal shaft the shaft axis is fitted to [mm], from its start under the lesser trochanter:
#: a fixed anatomical window, so that a long field of view and a hip scan measure the same axis (the diaphysis
#: bows; an axis through 200 mm of it differs by degrees from the proximal one).
_SHAFT_WINDOW_MM = 60.0
#: Slabs are looked at down to this distance under the head centre [mm].
_SHAFT_END_MM = 250.0
#: A larger angle between the neck and shaft axes [deg] means no neck (coxa valga reaches ~150°).
_MAX_NECK_SHAFT_DEG = 165.0
#: Least length of shaft [mm] the axis is fitted to; a shorter shaft in view is extended upwards.
_MIN_SHAFT_MM = 10.0
#: The neck-shaft angle is reported only when the shaft axis rests on this much shaft [mm] (see FemurFrame).
MIN_NSA_SHAFT_MM = 30.0


class _NoHead(Exception):
    """Internal: the mask holds no head-like sphere (turned into an InputError with the side's name)."""


@dataclass(frozen=True)
class _Top:
    """The femur's top part: the solid mask on a padded crop of the scan, its grid, and its outline's points.

    Attributes
    ----------
    values : (Z, Y, X) ndarray of float32
        The solid mask (1 inside, 0 outside) on the crop, for linear interpolation.
    grid : Grid
        The crop's geometry.
    surface : (N, 3) ndarray
        Points of the solid mask's outline [mm, LPS], one per pair of face-neighbouring voxels inside and outside,
        none at the scan's border.
    z_floor : float
        World z [mm] above which the crop holds all of the mask.
    full_shape_zyx : (3,) ndarray of int
        Shape of the whole scan; the crop's index ``lo`` is ``start_zyx`` in it.
    start_zyx : (3,) ndarray of int
    """

    values: np.ndarray
    grid: Grid
    surface: np.ndarray
    z_floor: float
    full_shape_zyx: np.ndarray
    start_zyx: np.ndarray

    def sample(self, points_xyz: np.ndarray) -> np.ndarray:
        """The solid mask linearly interpolated at world points (..., 3) [mm]; 0 outside the crop."""
        pts = np.asarray(points_xyz, dtype=float)
        idx = self.grid.world_to_index(pts.reshape(-1, 3)).T
        v = ndimage.map_coordinates(self.values, idx, order=1, mode="constant", cval=0.0, prefilter=False)
        return v.reshape(pts.shape[:-1])

    def in_scan(self, points_xyz: np.ndarray) -> np.ndarray:
        """Whether world points (..., 3) lie strictly between the scan's outermost voxel centres (a crossing of
        the mask's outline there is the bone's surface, not the field of view's cut)."""
        idx = self.grid.world_to_index(np.asarray(points_xyz, float)) + self.start_zyx
        return np.all((idx > 0.0) & (idx < self.full_shape_zyx - 1.0), axis=-1)


def _plane_basis(normal: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Two unit vectors (3,) perpendicular to ``normal`` and to each other."""
    e1 = np.cross(normal, [0.0, 0.0, 1.0] if abs(normal[2]) < 0.9 else [1.0, 0.0, 0.0])
    e1 /= np.linalg.norm(e1)
    return e1, np.cross(normal, e1)


def _checked_mask(mask_zyx: np.ndarray, grid: Grid, side: str) -> np.ndarray:
    """The mask as a bool array, after checking it against its grid and its size; raises InputError."""
    if side not in ("right", "left"):
        raise InputError(f"side must be 'right' or 'left', not {side!r}")
    mask = np.asarray(mask_zyx) != 0
    if mask.ndim != 3 or mask.shape != tuple(grid.shape_zyx):
        raise InputError(f"the {side} femur's mask has shape {mask.shape} but its grid {tuple(grid.shape_zyx)}: "
                         "pass the mask with the grid of the image it was read from")
    n = int(np.count_nonzero(mask))
    if n == 0:
        raise InputError(f"the {side} femur's mask is empty: check its label value (1 right, 2 left femur)")
    volume_ml = n * float(np.prod(grid.spacing_zyx)) / 1000.0
    if volume_ml < _MIN_VOLUME_ML:
        raise InputError(f"the {side} femur's mask holds {volume_ml:.1f} mL, too little for a proximal femur "
                         f"(at least {_MIN_VOLUME_ML:.0f} mL): check the mask's label and the image's spacing")
    return mask


def _solid(mask: np.ndarray) -> np.ndarray:
    """``mask`` closed (two 6-connected steps) and filled, slice by slice and in 3-D: a head segmented hollow
    (osteoporotic interior) and open to the outside becomes a ball again (as ``femurseg.inference.qc``)."""
    out = ndimage.binary_closing(mask, structure=ndimage.generate_binary_structure(3, 1), iterations=2)
    out = np.stack([ndimage.binary_fill_holes(sl) for sl in out])
    return ndimage.binary_fill_holes(out)


def _outline(solid: np.ndarray, start_zyx: np.ndarray, full_shape_zyx: np.ndarray) -> np.ndarray:
    """Scan indices (N, 3) (z, y, x) of the outline points of ``solid`` (a crop starting at ``start_zyx``): one
    per pair of face neighbours inside/outside, ``_SURFACE_FRACTION`` of the way from the inside voxel's centre;
    pairs that reach out of the scan (the field of view's cut) are left out."""
    points = []
    for axis in range(3):
        step = np.diff(solid.astype(np.int8), axis=axis)
        idx = np.argwhere(step != 0).astype(float)
        sign = step[step != 0].astype(float)  # -1: inside before the face, +1: inside after it
        idx[:, axis] += 0.5 - (_SURFACE_FRACTION - 0.5) * sign
        idx += start_zyx
        keep = (idx[:, axis] > 0.0) & (idx[:, axis] < full_shape_zyx[axis] - 1.0)
        points.append(idx[keep])
    return np.concatenate(points)


def _top_part(mask: np.ndarray, index_zyx: np.ndarray, world: np.ndarray, grid: Grid) -> _Top:
    """Cut the top ``_TOP_MM`` of the femur (world z) out of the scan, padded, make it solid and find its
    outline."""
    z_floor = float(world[:, 2].max()) - _TOP_MM
    sel = index_zyx[world[:, 2] >= z_floor]
    pad = 3
    lo, hi = sel.min(axis=0) - pad, sel.max(axis=0) + 1 + pad
    shape = np.asarray(mask.shape)
    src_lo, src_hi = np.maximum(lo, 0), np.minimum(hi, shape)
    crop = np.zeros(tuple(hi - lo), bool)
    crop[tuple(slice(a - o, b - o) for a, b, o in zip(src_lo, src_hi, lo))] = \
        mask[tuple(slice(a, b) for a, b in zip(src_lo, src_hi))]
    solid = _solid(crop)
    in_scan = np.zeros_like(solid)
    in_scan[tuple(slice(a - o, b - o) for a, b, o in zip(src_lo, src_hi, lo))] = True
    solid &= in_scan  # closing grows a mask cut by the field of view into the padding: take that back
    surface = grid.index_to_world(_outline(solid, lo, shape))
    return _Top(values=solid.astype(np.float32), grid=grid.crop(tuple(lo), tuple(hi)), surface=surface,
                z_floor=z_floor, full_shape_zyx=shape, start_zyx=lo)


def _deepest_point(top: _Top) -> tuple[np.ndarray, float]:
    """World point [mm] of the solid mask farthest from its outline within ``_HEAD_SEARCH_MM`` of its top, and
    that distance [mm]: the head centre's first estimate and a lower bound of its radius."""
    values = top.values
    idx = np.argwhere(values > 0)
    world_z = top.grid.index_to_world(idx)[:, 2]
    z_top = float(world_z.max())
    band = world_z >= z_top - _HEAD_SEARCH_MM - 20.0
    near, near_z = idx[band], world_z[band]
    lo, hi = near.min(axis=0), near.max(axis=0) + 1
    box = np.pad(values[tuple(slice(a, b) for a, b in zip(lo, hi))] > 0, 1)  # cut by background: no depth gained
    depth = ndimage.distance_transform_edt(box, sampling=top.grid.spacing_zyx)
    cand = near[near_z >= z_top - _HEAD_SEARCH_MM]
    d = depth[tuple((cand - lo + 1).T)]
    k = int(np.argmax(d))
    return top.grid.index_to_world(cand[k].astype(float)), float(d[k])


def _sections(top: _Top, centre: np.ndarray, direction: np.ndarray, ts: np.ndarray,
              half_mm: float) -> tuple[np.ndarray, np.ndarray]:
    """Cross-sections of the solid mask by planes perpendicular to ``direction`` at ``centre + t·direction``.

    Only the piece of each section that holds the plane's centre (or, when it falls outside, the nearest piece)
    counts.  Returns the areas (K,) [mm²] and the centroids (K, 3) [mm, LPS] (the plane's centre where empty).
    """
    e1, e2 = _plane_basis(direction)
    g = np.arange(-half_mm, half_mm + 1e-9, _PLANE_STEP_MM)
    g -= g[len(g) // 2]
    pts = (centre + ts[:, None, None, None] * direction + g[None, :, None, None] * e1
           + g[None, None, :, None] * e2)
    inside = top.sample(pts) >= 1.0 - _SURFACE_FRACTION
    structure = np.zeros((3, 3, 3), bool)
    structure[1] = True  # 8-connected within a plane, never across planes
    lab, _ = ndimage.label(inside, structure=structure)
    r2 = g[:, None] ** 2 + g[None, :] ** 2
    nearest = np.argmin(np.where(lab > 0, r2, np.inf).reshape(len(ts), -1), axis=1)
    chosen = lab.reshape(len(ts), -1)[np.arange(len(ts)), nearest]
    keep = (lab == chosen[:, None, None]) & (chosen[:, None, None] > 0)
    count = keep.sum(axis=(1, 2))
    m1 = (keep * g[None, :, None]).sum(axis=(1, 2)) / np.maximum(count, 1)
    m2 = (keep * g[None, None, :]).sum(axis=(1, 2)) / np.maximum(count, 1)
    cents = centre + ts[:, None] * direction + m1[:, None] * e1 + m2[:, None] * e2
    return count * _PLANE_STEP_MM**2, cents


def _initial_neck(top: _Top, centre: np.ndarray, radius: float) -> np.ndarray:
    """Unit direction [LPS] from the neck's base towards the head: away from the outline points in a shell of
    1.15–1.5 head radii around the head centre (the neck's surface there)."""
    d = top.surface - centre
    dist = np.linalg.norm(d, axis=1)
    shell = d[(dist >= 1.15 * radius) & (dist <= 1.5 * radius)]
    if len(shell) < 20:
        raise _NoHead("nothing leaves the head sphere (no femoral neck)")
    m = shell.mean(axis=0)
    if np.linalg.norm(m) < 0.3 * radius:
        raise _NoHead("bone leaves the head sphere on all sides (no single neck)")
    return -m / np.linalg.norm(m)


def _neck_axis(top: _Top, centre: np.ndarray, radius: float, toward_head: np.ndarray) -> np.ndarray:
    """Unit neck axis through the head centre, pointing towards the head, refined so that it passes through the
    centroids of the neck's cross-sections perpendicular to it (``_NECK_AXIS_T`` head radii from the centre)."""
    u = toward_head
    ts = np.linspace(_NECK_AXIS_T[0] * radius, _NECK_AXIS_T[1] * radius, 6)
    for _ in range(4):
        area, cents = _sections(top, centre, -u, ts, 1.2 * radius)
        q = cents[area > 0] - centre
        if len(q) < 2:
            raise _NoHead("no neck cross-sections next to the head")
        v = np.linalg.svd(q, full_matrices=False)[2][0]  # line through the head centre
        new = -v if v @ q.mean(axis=0) > 0 else v
        done = float(new @ u) > math.cos(math.radians(0.05))
        u = new
        if done:
            break
    return u


def _cap_sphere(surface: np.ndarray, centre: np.ndarray, radius: float, toward_head: np.ndarray,
                tol_mm: float) -> tuple[np.ndarray, float, float]:
    """Sphere fitted to the outline points of the head's articular cap: within ``_CAP_DEG`` of the neck axis
    (towards the head) seen from the centre, and within ``tol_mm`` of the current sphere."""
    d = surface - centre
    dist = np.linalg.norm(d, axis=1)
    cos = (d @ toward_head) / np.maximum(dist, 1e-9)
    sel = (np.abs(dist - radius) <= tol_mm) & (cos >= math.cos(math.radians(_CAP_DEG)))
    if np.count_nonzero(sel) < 50:
        raise _NoHead(f"only {np.count_nonzero(sel)} outline points on a head-like sphere")
    try:
        return fit_sphere(surface[sel])
    except ValueError as err:
        raise _NoHead(str(err)) from None


def _head(top: _Top) -> tuple[np.ndarray, float, float, np.ndarray]:
    """Head sphere (centre [mm], radius [mm], RMS residual [mm]) and the unit neck axis towards the head.

    The deepest point near the top seeds a sphere fit to the outline above the head's equator; then, in turn,
    the neck axis is refined through the neck's centroids and the sphere refitted to the articular cap around it.
    Raises ``_NoHead`` when no plausible head sphere fits.
    """
    c0, r0 = _deepest_point(top)
    if r0 < 0.5 * _HEAD_RADIUS_MM[0]:
        raise _NoHead(f"its thickest part near the top is only {2.0 * r0:.0f} mm across")
    d = top.surface - c0
    first = top.surface[(np.linalg.norm(d, axis=1) <= 1.3 * r0) & (d[:, 2] >= -0.25 * r0)]
    try:
        centre, radius, rms = fit_sphere(first)
    except ValueError as err:
        raise _NoHead(str(err)) from None
    tol = max(1.5, 0.75 * max(top.grid.spacing_zyx))
    u = _initial_neck(top, centre, radius)
    for _ in range(8):
        u = _neck_axis(top, centre, radius, u)
        new, radius, rms = _cap_sphere(top.surface, centre, radius, u, max(tol, 0.12 * radius))
        moved = float(np.linalg.norm(new - centre))
        centre = new
        if moved < 0.02:
            break
    if not (_HEAD_RADIUS_MM[0] <= radius <= _HEAD_RADIUS_MM[1]) or rms > _HEAD_RMS_FRACTION * radius:
        raise _NoHead(f"the best sphere has radius {radius:.1f} mm and residual {rms:.1f} mm (a head: "
                      f"{_HEAD_RADIUS_MM[0]:.0f}–{_HEAD_RADIUS_MM[1]:.0f} mm, residual under "
                      f"{100 * _HEAD_RMS_FRACTION:.0f} % of it)")
    return centre, radius, rms, _neck_axis(top, centre, radius, u)


def _narrowest_neck(top: _Top, centre: np.ndarray, radius: float, toward_head: np.ndarray) -> tuple[np.ndarray, float]:
    """Point of the neck axis [mm] at the neck's narrowest cross-section (``_NECK_WIDTH_T`` head radii from the
    centre, every 0.5 mm) and that section's equivalent diameter sqrt(4·area/π) [mm]."""
    ts = np.arange(_NECK_WIDTH_T[0] * radius, _NECK_WIDTH_T[1] * radius + 1e-9, 0.5)
    area, _ = _sections(top, centre, -toward_head, ts, 1.6 * radius)
    area = np.where(area > 0, area, np.inf)
    k = int(np.argmin(area))
    if not np.isfinite(area[k]):
        raise _NoHead("no neck cross-section next to the head")
    return centre - ts[k] * toward_head, math.sqrt(4.0 * float(area[k]) / math.pi)


def _exit(top: _Top, start: np.ndarray, direction: np.ndarray, reach_mm: float) -> float:
    """Distance [mm] from ``start`` along ``direction`` to where the ray first leaves the solid mask (linear
    interpolation of the crossing); NaN when it does not leave it inside the scan and the top part."""
    step = 0.2
    t = np.arange(0.0, reach_mm, step)
    v = top.sample(start + t[:, None] * direction)
    level = 1.0 - _SURFACE_FRACTION
    out = np.flatnonzero(v < level)
    if len(out) == 0 or out[0] == 0:
        return float("nan")
    i = int(out[0])
    t_exit = t[i - 1] + step * (v[i - 1] - level) / max(v[i - 1] - v[i], 1e-6)
    p = start + t_exit * direction
    if not top.in_scan(p) or p[2] < top.z_floor:
        return float("nan")  # the field of view or the top part's floor, not the bone's surface
    return float(t_exit)


def _axis_length(top: _Top, centre: np.ndarray, radius: float, toward_head: np.ndarray) -> float:
    """Femoral axis length [mm]: along the neck axis from the lateral surface (below the greater trochanter) to
    the head's apex; NaN when the axis does not leave the femur laterally in view."""
    medial = _exit(top, centre, toward_head, 2.0 * radius + 10.0)
    lateral = _exit(top, centre, -toward_head, 12.0 * radius)
    return medial + lateral


@dataclass(frozen=True)
class _Slabs:
    """Cross-sections of the mask by slabs ``_SLAB_MM`` thick perpendicular to a direction, from the head centre.

    Attributes
    ----------
    depth_mm : (K,) ndarray
        Distance of each slab's middle under the head centre along the direction [mm].
    centroid_xyz : (K, 3) ndarray
        Centroid of the mask's voxels in the slab [mm, LPS].
    roundness : (K,) ndarray
        Farthest voxel from the centroid, across the direction, over sqrt(2·mean squared distance) (a disc's
        radius): 1 for a disc, 1.1 for an ellipse of axes 1 : 0.8; more for a section with the lesser trochanter.
    whole : (K,) ndarray of bool
        The slab holds voxels and none where the mask is cut (the scan's border, the mask's lowest slice).
    """

    depth_mm: np.ndarray
    centroid_xyz: np.ndarray
    roundness: np.ndarray
    whole: np.ndarray


def _slabs(world: np.ndarray, cut: np.ndarray, centre: np.ndarray, direction: np.ndarray,
           first_mm: float) -> _Slabs:
    """The mask's slabs (see :class:`_Slabs`) from ``first_mm`` under the head centre on."""
    h = (world - centre) @ direction
    keep = h >= first_mm
    b = np.floor((h[keep] - first_mm) / _SLAB_MM).astype(np.int64)
    pts = world[keep]
    n = int(b.max()) + 1 if len(b) else 0
    count = np.bincount(b, minlength=n).astype(float)
    cents = np.stack([np.bincount(b, pts[:, i], minlength=n) for i in range(3)], axis=1) / np.maximum(count, 1)[:, None]
    rel = pts - cents[b]
    rel -= (rel @ direction)[:, None] * direction
    dist2 = (rel**2).sum(axis=1)
    far = np.zeros(n)
    np.maximum.at(far, b, dist2)
    # A disc's radius is sqrt(2 · mean squared distance from its centre) (not the count of voxels: a slab aligned
    # with thick slices holds one or two of them).
    radius = np.sqrt(2.0 * np.bincount(b, dist2, minlength=n) / np.maximum(count, 1))
    bad = np.zeros(n, bool)
    bad[b[cut[keep]]] = True  # a slab the cut takes a part of holds voxels of the cut
    return _Slabs(depth_mm=first_mm + _SLAB_MM * (np.arange(n) + 0.5), centroid_xyz=cents,
                  roundness=np.sqrt(far) / np.maximum(radius, 1e-9), whole=(count > 0) & ~bad)


def _shaft_range(slabs: _Slabs, radius: float) -> np.ndarray:
    """Which slabs are shaft: ``_SHAFT_WINDOW_MM`` from ``_BELOW_TROCHANTER`` head radii under the lesser
    trochanter (the lowest slab 1.5–4 head radii under the head centre whose section is not round) on; at least
    the lowest ``_MIN_SHAFT_MM`` in view."""
    h = slabs.depth_mm
    cand = slabs.whole & (h <= _SHAFT_END_MM)
    trochanter = cand & (h >= 1.5 * radius) & (h <= 4.0 * radius) & (slabs.roundness >= _TROCHANTER_ROUNDNESS)
    trochanter_end = float(h[trochanter].max()) if trochanter.any() else 2.25 * radius
    last = float(h[cand].max())
    # Little shaft in view: the lowest _MIN_SHAFT_MM there is, whatever the trochanter leaves of it.
    start = min(trochanter_end + _BELOW_TROCHANTER * radius, last - _MIN_SHAFT_MM)
    return cand & (h >= start) & (h <= start + _SHAFT_WINDOW_MM)


def _shaft_axis(world: np.ndarray, cut: np.ndarray, centre: np.ndarray, radius: float,
                side: str) -> tuple[np.ndarray, np.ndarray, float]:
    """Shaft axis: unit direction (distal), a point [mm] and the length of shaft it rests on [mm]; the line
    through the centroids of the shaft's cross-sections perpendicular to it (three rounds, starting from world
    inferior)."""
    s = np.array([0.0, 0.0, -1.0])
    for _ in range(3):
        slabs = _slabs(world, cut, centre, s, 1.5 * radius)
        reach = float(slabs.depth_mm[slabs.whole].max()) if slabs.whole.any() else 0.0
        use = _shaft_range(slabs, radius) if reach >= 2.5 * radius else np.zeros(len(slabs.whole), bool)
        if np.count_nonzero(use) < 3:
            raise InputError(f"no femoral shaft in the {side} femur's mask: it shows whole cross-sections only "
                             f"{reach:.0f} mm under the head centre (the field of view or the mask ends there); "
                             f"the shaft axis needs the femur down to below the lesser trochanter "
                             f"(~{3.0 * radius:.0f} mm)")
        q = slabs.centroid_xyz[use]
        point = q.mean(axis=0)
        v = np.linalg.svd(q - point, full_matrices=False)[2][0]
        s = v if v @ s > 0 else -v
    length = float(np.ptp(slabs.depth_mm[use])) + _SLAB_MM
    if length < MIN_NSA_SHAFT_MM:
        log.info("the %s femur's shaft axis rests on %.0f mm of shaft (the mask shows little under the lesser "
                    "trochanter): the neck-shaft angle is not reported (it needs %.0f mm, about %.0f mm of femur "
                    "under the lesser trochanter in view)", side, length, MIN_NSA_SHAFT_MM,
                    MIN_NSA_SHAFT_MM + _BELOW_TROCHANTER * radius)
    return s, point, length


def _cut_voxels(index_zyx: np.ndarray, world: np.ndarray, grid: Grid) -> np.ndarray:
    """Which mask voxels lie where the mask is cut: on the scan's outermost layer, or on the mask's lowest
    (world z) slice, where a mask that stops short of the bone's end ends."""
    shape = np.asarray(grid.shape_zyx)
    border = np.any((index_zyx == 0) | (index_zyx == shape - 1), axis=1)
    return border | (world[:, 2] <= float(world[:, 2].min()) + max(grid.spacing_zyx))


def femur_frame(mask_zyx: np.ndarray, grid: Grid, side: str) -> FemurFrame:
    """Estimate the anatomical frame of one femur from its mask.

    Parameters
    ----------
    mask_zyx : (Z, Y, X) ndarray of bool
        One femur (its proximal part: head, neck, trochanters and some shaft; or the whole bone).  Holes (an
        osteoporotic interior left out) are closed and filled first.
    grid : Grid
        The mask's geometry: any spacing and direction.  Everything is measured in world coordinates (LPS mm);
        world +z must be the patient's superior (the head is the femur's top), whatever the array's axes.
    side : {"right", "left"}
        The patient's side (for the frame and the messages).

    Returns
    -------
    FemurFrame
        Head sphere fitted to the articular cap (outline points within 70° of the neck axis); neck axis through
        the head centre and the centroids of the neck's cross-sections 0.9–1.3 head radii from it (the neck next
        to the head); narrowest neck section 0.8–2.5 head radii from it; shaft axis through the centroids of the
        cross-sections of the 60 mm of shaft from 0.75 head radii under the lesser trochanter on,
        pointing distally; femoral axis length.  All from the mask's outline taken
        ``femurseg.conventions.FEMUR_LABEL_FRACTION`` of a voxel outside its outermost voxels' centres.

    Notes
    -----
    The shaft axis is the proximal diaphysis's.  A scan that shows less than ``MIN_NSA_SHAFT_MM`` of shaft under
    the start of the window (a hip scan cut short) leaves only the subtrochanteric region, whose centroids lean
    towards the trochanters: on phantoms its axis was off by 4–21°, so the frame keeps it (the regions need only
    a rough one) but reports no neck-shaft angle, and a warning says so.  With 70–90 mm of femur under the lesser
    trochanter the angle came within 1.4° of the phantom's truth.

    Raises
    ------
    InputError
        Empty or tiny mask, a mask whose shape is not the grid's, no head-like sphere at its top, no neck (the
        head sits on the shaft's axis), or no femur below the lesser trochanter's level in view.
    """
    mask = _checked_mask(mask_zyx, grid, side)
    index = np.argwhere(mask)
    world = grid.index_to_world(index)
    top = _top_part(mask, index, world, grid)
    try:
        centre, radius, rms, u = _head(top)
        neck_point, neck_width = _narrowest_neck(top, centre, radius, u)
    except _NoHead as err:
        raise InputError(f"no femoral head in the {side} femur's mask: {err}; check that the mask is a proximal "
                         "femur with its head in view") from None
    shaft_dir, shaft_point, shaft_length = _shaft_axis(world, _cut_voxels(index, world, grid), centre, radius, side)
    if float(u @ shaft_dir) < math.cos(math.radians(_MAX_NECK_SHAFT_DEG)):
        raise InputError(f"no femoral neck in the {side} femur's mask: the axis from its head runs along its shaft "
                         f"(neck-shaft angle over {_MAX_NECK_SHAFT_DEG:.0f}°); check that the mask is a femur")
    return FemurFrame(side=side, head_center_xyz=centre, head_radius_mm=radius, head_residual_mm=rms,
                      neck_axis_xyz=u, neck_center_xyz=neck_point, neck_width_mm=neck_width,
                      shaft_axis_xyz=shaft_dir, shaft_point_xyz=shaft_point, shaft_length_mm=shaft_length,
                      axis_length_mm=_axis_length(top, centre, radius, u))
