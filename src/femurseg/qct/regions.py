"""CTXA-like regions of the proximal femur: head, neck, trochanter, intertrochanter; total hip.

The regions follow the conventions of hip DXA as CT-based hip analyses reproduce them: Mindways CTXA Hip reports
the femoral neck, trochanter, intertrochanter, Ward's triangle and the total hip, the union of the first three
(FDA device listing); Lang et al. 1997 (Bone 21:101–108) measure volumetric QCT regions of the neck and trochanter
defined from the neck axis.  In DXA the femoral-neck region is a narrow box across the neck, orthogonal to its
axis (Hologic's default box is 49 × 15 pixels); a shorter line from the inferior neck (Ward's area) to the base of
the greater trochanter separates the trochanteric from the intertrochanteric region; the total-hip box ends about
1 cm below the lesser trochanter (Hologic: 10 pixels; ISCD DXA atlas; Radiology 2003;228:620, fig. 4); the
total hip excludes the head.  Ward's triangle (a search for the least dense small square) is not made here.

Here every region is a solid of space defined by the :class:`~femurseg.qct.frame.FemurFrame` alone, so that
:func:`region_of_points` can label any points (the phantom's sub-voxel samples as well as a mask's voxels).  With
``u`` the neck axis (neck base → head), ``N`` the neck centre (narrowest section), ``C``/``R`` the head sphere,
``s`` the shaft axis (distal), ``B`` the neck base (:attr:`FemurFrame.neck_shaft_point_xyz`) and
``t = (p − N)·u`` the position of a point ``p`` along the neck axis:

neck (2)
    ``|t| ≤ neck_slab_mm / 2`` and distance from the neck axis ``≤ neck_radius_factor · R`` (default 1.5 R, about
    32 mm: the whole neck section, never the trochanters).  A slab orthogonal to the neck axis at its narrowest
    section, as DXA's neck box; in the DXA pose of :mod:`femurseg.qct.dxa` it projects to a band.
head (1)
    ``|p − C| ≤ head_radius_factor · R`` (default 1.05 R) and ``t > neck_slab_mm / 2`` (head-ward of the neck
    slab).  The subcapital neck between the slab and the sphere is in no region, as in DXA.
trochanter (3) and intertrochanter (4)
    ``t < −neck_slab_mm / 2`` (lateral/distal of the neck slab) and ``(p − B)·s ≤ distal_mm`` (down to
    ``distal_mm`` below the neck base along the shaft).  Split by the plane through ``B`` that contains the view
    normal ``n = u × s`` of the neck–shaft plane (so it projects to a line in the DXA image) and the direction
    ``d = cos(a)·lateral + sin(a)·s``, ``a = split_angle_deg``, ``lateral`` the direction in the neck–shaft plane
    orthogonal to the shaft, away from the head: a line through the neck base descending laterally towards the
    base of the greater trochanter.  Trochanter above it (proximal side), intertrochanter below.

Defaults.  ``distal_mm = 40``: the lesser trochanter's centre lies about 20 mm below the neck base (the phantom's
anatomy: 19–21 mm) and spans roughly ±10 mm, so 1 cm below its lower edge is about 40 mm below the neck base.
``split_angle_deg = 15``: in the DXA pose of adult femurs (estimated on the phantom's anatomy) the inferior corner
of the neck slab lies about level with ``B`` and the greater trochanter's base 5–10 mm lower on the lateral cortex,
a line descending laterally by roughly 10–20°; 0 makes the split orthogonal to the shaft, ``neck_shaft_angle − 90``
makes it the neck axis.  ``neck_slab_mm = 10``: a 1 cm box across the narrowest neck.

Total hip (:data:`TOTAL_HIP`) = neck ∪ trochanter ∪ intertrochanter.  Region codes are uint8, 0 = in no region.
Points are world LPS millimetres, (x, y, z); arrays are (z, y, x).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from femurseg.geometry import Grid
from femurseg.qct.frame import FemurFrame

__all__ = ["HEAD", "NECK", "TROCHANTER", "INTERTROCHANTER", "REGION_NAMES", "TOTAL_HIP", "RegionOptions",
           "region_of_points", "region_labels", "split_normal"]

HEAD, NECK, TROCHANTER, INTERTROCHANTER = 1, 2, 3, 4

#: Region code → name.
REGION_NAMES: dict[int, str] = {HEAD: "head", NECK: "neck", TROCHANTER: "trochanter",
                                INTERTROCHANTER: "intertrochanter"}

#: The codes of DXA's total hip (the head is not part of it).
TOTAL_HIP: tuple[int, ...] = (NECK, TROCHANTER, INTERTROCHANTER)


@dataclass(frozen=True)
class RegionOptions:
    """Sizes of the CTXA-like regions (see the module text for the definitions).

    Attributes
    ----------
    neck_slab_mm : float
        Thickness of the neck slab along the neck axis [mm], centred at the narrowest section.
    distal_mm : float
        Distal limit of the trochanteric regions below the neck base, along the shaft axis [mm].
    neck_radius_factor : float
        Radial limit of the neck slab around the neck axis, in head radii.
    head_radius_factor : float
        Radius of the head region about the head centre, in head radii.
    split_angle_deg : float
        Descent of the trochanter/intertrochanter line below the lateral direction orthogonal to the shaft [deg].
    """

    neck_slab_mm: float = 10.0
    distal_mm: float = 40.0
    neck_radius_factor: float = 1.5
    head_radius_factor: float = 1.05
    split_angle_deg: float = 15.0

    def __post_init__(self) -> None:
        for name in ("neck_slab_mm", "distal_mm", "neck_radius_factor", "head_radius_factor"):
            value = float(getattr(self, name))
            if not (math.isfinite(value) and value > 0.0):
                raise ValueError(f"RegionOptions.{name} must be a positive number, not {value!r}")
        if not -90.0 < float(self.split_angle_deg) < 90.0:
            raise ValueError(f"RegionOptions.split_angle_deg must lie in (-90, 90), not {self.split_angle_deg!r}")


def _neck_shaft_normal(frame: FemurFrame) -> np.ndarray:
    """Unit normal u × s of the plane of the neck and shaft axes; raises if they are parallel."""
    n = np.cross(frame.neck_axis_xyz, frame.shaft_axis_xyz)
    norm = float(np.linalg.norm(n))
    if norm < 1e-6:
        raise ValueError("the neck and shaft axes are parallel: no neck–shaft plane")
    return n / norm


def split_normal(frame: FemurFrame, split_angle_deg: float = 15.0) -> np.ndarray:
    """Unit normal of the trochanter/intertrochanter plane, pointing to the trochanter's (proximal) side.

    Parameters
    ----------
    frame : FemurFrame
    split_angle_deg : float
        Descent of the split line laterally below the direction orthogonal to the shaft [deg].

    Returns
    -------
    (3,) ndarray
        ``m = sin(a)·lateral − cos(a)·s``: orthogonal to the split line and to the neck–shaft plane's normal.
    """
    s, u = frame.shaft_axis_xyz, frame.neck_axis_xyz
    _neck_shaft_normal(frame)  # raises for parallel axes
    lateral = float(u @ s) * s - u  # in the neck–shaft plane, orthogonal to s, away from the head
    lateral /= float(np.linalg.norm(lateral))
    a = math.radians(split_angle_deg)
    return math.sin(a) * lateral - math.cos(a) * s


def region_of_points(points_xyz: np.ndarray, frame: FemurFrame, options: RegionOptions | None = None) -> np.ndarray:
    """The CTXA-like region of each world point (codes :data:`HEAD` … :data:`INTERTROCHANTER`, 0 = none).

    A pure function of the points and the frame: it labels points of space, not of a femur, so callers restrict it
    to the bone (a mask, or the phantom's bone samples).

    Parameters
    ----------
    points_xyz : (N, 3) ndarray
        World points, LPS millimetres, (x, y, z).
    frame : FemurFrame
        The femur's anatomical frame.
    options : RegionOptions, optional
        Region sizes (defaults: :class:`RegionOptions`).

    Returns
    -------
    (N,) ndarray of uint8
    """
    opt = options or RegionOptions()
    p = np.asarray(points_xyz, dtype=float).reshape(-1, 3)
    u, s = frame.neck_axis_xyz, frame.shaft_axis_xyz
    half = 0.5 * float(opt.neck_slab_mm)
    rel = p - frame.neck_center_xyz
    t = rel @ u
    radial2 = np.einsum("ij,ij->i", rel, rel) - t * t
    in_neck = (np.abs(t) <= half) & (radial2 <= (opt.neck_radius_factor * frame.head_radius_mm) ** 2)
    dh = p - frame.head_center_xyz
    in_head = (t > half) & (np.einsum("ij,ij->i", dh, dh) <= (opt.head_radius_factor * frame.head_radius_mm) ** 2)
    rb = p - frame.neck_shaft_point_xyz
    in_hip = (t < -half) & (rb @ s <= float(opt.distal_mm))
    upper = rb @ split_normal(frame, opt.split_angle_deg) > 0.0
    out = np.zeros(len(p), dtype=np.uint8)
    out[in_hip & upper] = TROCHANTER
    out[in_hip & ~upper] = INTERTROCHANTER
    out[in_head] = HEAD
    out[in_neck] = NECK
    return out


def region_labels(mask_zyx: np.ndarray, grid: Grid, frame: FemurFrame,
                  options: RegionOptions | None = None) -> np.ndarray:
    """Region codes of a femur mask's voxels (by their centres).

    Parameters
    ----------
    mask_zyx : (Z, Y, X) ndarray of bool
        The femur's mask.
    grid : Grid
        Its geometry (any spacing and direction).
    frame : FemurFrame
        The femur's frame, world LPS mm.
    options : RegionOptions, optional

    Returns
    -------
    (Z, Y, X) ndarray of uint8
        :data:`HEAD` … :data:`INTERTROCHANTER`; 0 outside the mask or the regions.
    """
    mask = np.asarray(mask_zyx, dtype=bool)
    if tuple(mask.shape) != tuple(grid.shape_zyx):
        raise ValueError(f"mask shape {mask.shape} is not the grid's {tuple(grid.shape_zyx)}")
    out = np.zeros(mask.shape, dtype=np.uint8)
    idx = np.nonzero(mask)
    if idx[0].size:
        world = grid.index_to_world(np.stack(idx, axis=-1).astype(float))
        out[idx] = region_of_points(world, frame, options)
    return out
