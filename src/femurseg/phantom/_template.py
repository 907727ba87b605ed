"""Template bones of the phantom: signed-distance volumes, landmarks and interior fields, built once per process.

Frames (all LPS-oriented, mm):

- femur template: the bundled right femur (OpenSim Gait2392) turned into LPS axes, translated so that the
  femoral head centre (sphere fit) is the origin; only its proximal part is voxelised, and below the cut the
  shaft is continued by repeating the last cross-section (so no cut end shows in any field of view).
- pelvis template: the bundled right hemipelvis and the sacrum in LPS axes, translated so that the midpoint
  between the two hip joint centres of the model (OpenSim: (−70.7, −66.1, ±83.5) mm) is the origin.

A user's own femur mesh (phase 2) goes through :func:`femur_template_from_mesh` after it has been brought
into the template frame (see ``femurseg.phantom.meshes``).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from femurseg.errors import InputError
from femurseg.phantom._meshes import OPENSIM_TO_LPS, SdfVolume, fit_sphere, load_bundled_mesh, mesh_sdf

#: Right hip joint centre of the Gait2392 pelvis frame [mm, OpenSim axes] (model's joint definition).
OPENSIM_RIGHT_HIP = np.array([-70.7, -66.1, 83.5])
#: How far the template femur is voxelised below its head centre [mm]; the shaft is continued below it.
FEMUR_CUT_BELOW_HEAD_MM = 262.0
FEMUR_VOXEL_MM = 0.6
#: Outward growth of the template's shaft below the lesser trochanter [mm] (see femur_template_from_lps).
SHAFT_GROWTH_MM = 3.5
PELVIS_VOXEL_MM = 0.8
SACRUM_VOXEL_MM = 1.0


def smoothstep(x: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """0 below ``lo``, 1 above ``hi``, C¹ in between (cubic Hermite)."""
    t = np.clip((np.asarray(x, dtype=np.float32) - lo) / max(hi - lo, 1e-6), 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def trilinear(values: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """Trilinear interpolation of ``values`` (NX, NY, NZ) at continuous indices (N, 3), clamped to the volume."""
    upper = np.asarray(values.shape, dtype=np.float32) - 1.0
    i = np.clip(np.asarray(idx, dtype=np.float32), 0.0, upper)
    return ndimage.map_coordinates(values, i.T, order=1, mode="nearest", prefilter=False)


@dataclass(frozen=True)
class FemurTemplate:
    """A right femur in the template frame (head centre at the origin, LPS axes) with its landmarks.

    Attributes
    ----------
    sdf : SdfVolume
        Signed distance of the proximal femur [mm], the head replaced by its exact fitted sphere.
    head_radius_mm : float
        Radius of the sphere fitted to the head [mm].
    neck_dir : (3,) ndarray
        Unit neck axis, from the head centre towards the neck base (lateral, inferior).
    neck_base : (3,) ndarray
        Point of the neck axis closest to the shaft axis [mm]; its norm is the neck length.
    shaft_point, shaft_dir : (3,) ndarray
        A point on the proximal shaft axis at the lesser trochanter's level [mm] and the unit axis, distal.
    greater_trochanter, lesser_trochanter : (3,) ndarray
        Tips of the trochanters [mm].
    neck_shaft_angle_deg, anteversion_deg : float
        Angles of this template (anteversion against the frame's medio-lateral axis, i.e. the knee axis).
    cortex, trabecular : SdfVolume-like (values on a coarse grid of the same frame)
        Cortical thickness [mm] and trabecular fraction in [0, 1] on ``coarse_origin`` + index × ``coarse_mm``.
    volume_ml : float
        Volume of the voxelised proximal femur above the cut [mL].
    """

    sdf: SdfVolume
    head_radius_mm: float
    neck_dir: np.ndarray
    neck_base: np.ndarray
    shaft_point: np.ndarray
    shaft_dir: np.ndarray
    greater_trochanter: np.ndarray
    lesser_trochanter: np.ndarray
    neck_shaft_angle_deg: float
    anteversion_deg: float
    cortex: np.ndarray
    trabecular: np.ndarray
    coarse_origin: np.ndarray
    coarse_mm: float
    surface_points: np.ndarray
    volume_ml: float

    @property
    def neck_length_mm(self) -> float:
        """Distance from the head centre to the neck base [mm]."""
        return float(np.linalg.norm(self.neck_base))

    @property
    def z_cut(self) -> float:
        """Template z from which the shaft is extruded [mm]: 22 mm above the voxel box's floor, where neither
        the box's edge nor the cap of a proximal femur mesh reaches the shaft's distance field."""
        return float(self.sdf.origin[2] + 22.0)


def neck_angles(head_dir: np.ndarray, shaft_dir: np.ndarray) -> tuple[float, float]:
    """Neck-shaft angle and anteversion [deg] of a right femur in LPS-oriented axes.

    ``head_dir`` points from the neck base to the head, ``shaft_dir`` along the shaft, distally. Anteversion is
    the angle, seen along the shaft, between the neck and the medio-lateral axis (+x, the knee axis of the
    frame), positive when the head points anteriorly (−y).
    """
    h = head_dir / np.linalg.norm(head_dir)
    s = shaft_dir / np.linalg.norm(shaft_dir)
    nsa = float(np.degrees(np.arccos(np.clip(h @ s, -1.0, 1.0))))
    med, ant = _shaft_frame(s)
    hp = h - (h @ s) * s
    return nsa, float(np.degrees(np.arctan2(hp @ ant, hp @ med)))


def _shaft_frame(shaft_dir: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Medial (+x) and anterior (−y) unit directions perpendicular to a right femur's shaft axis."""
    s = shaft_dir / np.linalg.norm(shaft_dir)
    med = np.array([1.0, 0.0, 0.0]) - s[0] * s
    med /= np.linalg.norm(med)
    ant = np.cross(s, med)
    if ant[1] > 0:  # anterior is −y in LPS
        ant = -ant
    return med, ant


def head_direction(nsa_deg: float, anteversion_deg: float, shaft_dir: np.ndarray) -> np.ndarray:
    """Unit direction from the neck base to the head for given angles [deg]; inverse of :func:`neck_angles`."""
    s = shaft_dir / np.linalg.norm(shaft_dir)
    med, ant = _shaft_frame(s)
    a, v = np.radians(nsa_deg), np.radians(anteversion_deg)
    return np.cos(a) * s + np.sin(a) * (np.cos(v) * med + np.sin(v) * ant)


def _sphere_head(vertices: np.ndarray) -> tuple[np.ndarray, float]:
    """Robust sphere fit of a femoral head whose centre is near the origin: trimmed, iterated."""
    centre, radius = fit_sphere(vertices[np.linalg.norm(vertices, axis=1) < 30.0])
    for _ in range(4):
        d = np.linalg.norm(vertices - centre, axis=1)
        sel = np.abs(d - radius) < max(0.12 * radius, 1.0)
        if sel.sum() < 20:
            break
        centre, radius = fit_sphere(vertices[sel])
    return centre, radius


def _section_stats(sdf: SdfVolume, centre: np.ndarray, normal: np.ndarray, *, half: float = 30.0,
                   step: float = 0.6) -> tuple[float, np.ndarray]:
    """Area [mm²] and centroid of the bone's cross-section by the plane (centre, normal)."""
    n = normal / np.linalg.norm(normal)
    a = np.cross(n, [0.0, 0.0, 1.0] if abs(n[2]) < 0.9 else [1.0, 0.0, 0.0])
    a /= np.linalg.norm(a)
    b = np.cross(n, a)
    u = np.arange(-half, half + step / 2, step)
    uu, vv = np.meshgrid(u, u, indexing="ij")
    pts = centre + uu.reshape(-1, 1) * a + vv.reshape(-1, 1) * b
    inside = trilinear(sdf.values, sdf.to_index(pts)) < 0
    if not inside.any():
        return 0.0, centre
    # Only the connected piece that contains (or is nearest to) the plane's centre counts.
    lab, _ = ndimage.label(inside.reshape(uu.shape))
    k = len(u) // 2
    if lab[k, k] == 0:
        dist = np.where(lab > 0, (uu**2 + vv**2), np.inf)
        k0, k1 = np.unravel_index(np.argmin(dist), dist.shape)
        keep = lab == lab[k0, k1]
    else:
        keep = lab == lab[k, k]
    keep = keep.ravel()
    return float(keep.sum() * step * step), pts[keep].mean(axis=0)


def femur_template_from_lps(vertices: np.ndarray, faces: np.ndarray, *, watertight: bool = False) -> FemurTemplate:
    """Build the template of a smooth right femur given in LPS-oriented axes with its head centre near the origin.

    Raises
    ------
    InputError
        If no femoral head or shaft is found.
    """
    v = np.asarray(vertices, dtype=float)
    centre, radius = _sphere_head(v)
    if not (12.0 < radius < 40.0):
        raise InputError(f"no femoral head found on the femur mesh (sphere fit radius {radius:.1f} mm); "
                         "check the mesh is a femur in millimetres")
    v = v - centre
    lo = np.maximum(v.min(axis=0) - 7.0, [-np.inf, -np.inf, -FEMUR_CUT_BELOW_HEAD_MM])
    hi = v.max(axis=0) + 7.0
    if -v[:, 2].min() < 130.0:
        raise InputError(f"the femur mesh reaches only {-v[:, 2].min():.0f} mm below the head centre; a proximal "
                         "femur with at least 130 mm (lesser trochanter and 60 mm of shaft) is needed")
    sdf_mesh = mesh_sdf(v, faces, spacing=FEMUR_VOXEL_MM, margin=7.0, smooth_mm=0.4, clip=(lo, hi),
                        robust=not watertight)
    shape = sdf_mesh.values.shape
    axes = [sdf_mesh.origin[i] + FEMUR_VOXEL_MM * np.arange(shape[i], dtype=np.float32) for i in range(3)]

    # Shaft axis: a line through the centroids of cross-sections well below the trochanters.
    zs = np.arange(-85.0, max(-200.0, lo[2] + 12.0), -4.0)
    cents = []
    for z in zs:
        k = int(round((z - sdf_mesh.origin[2]) / FEMUR_VOXEL_MM))
        if 0 <= k < shape[2]:
            m = sdf_mesh.values[:, :, k] < 0
            lab, nlab = ndimage.label(m)
            if nlab:
                big = np.argmax(np.bincount(lab.ravel())[1:]) + 1
                ii, jj = np.nonzero(lab == big)
                cents.append([axes[0][ii].mean(), axes[1][jj].mean(), z])
    if len(cents) < 5:
        raise InputError("no femoral shaft found below the head of the femur mesh; is it a femur in millimetres?")
    cents = np.asarray(cents)
    mean = cents.mean(axis=0)
    shaft_dir = np.linalg.svd(cents - mean)[2][0]
    if shaft_dir[2] > 0:
        shaft_dir = -shaft_dir

    # Lesser trochanter: the most postero-medial prominence from the shaft axis, 30–90 mm below the head.
    def axis_point(p: np.ndarray) -> np.ndarray:
        return mean + ((p - mean) @ shaft_dir)[..., None] * shaft_dir

    med, ant = _shaft_frame(shaft_dir)
    band = (v[:, 2] < -30.0) & (v[:, 2] > -95.0)
    rel = v[band] - axis_point(v[band])
    score = rel @ (med - ant) / np.sqrt(2.0)
    lesser = v[band][np.argmax(score)]
    # Greater trochanter: the highest point lateral of the shaft axis (further than 20 mm from the head centre).
    lat = (v - axis_point(v)) @ -med
    cand = (lat > 0) & (np.linalg.norm(v, axis=1) > radius + 8.0) & (v[:, 2] > -60.0)
    greater = v[cand][np.argmax(v[cand, 2])]
    shaft_point = axis_point(lesser)

    # Neck axis: the direction from the head centre through the narrowest cross-section of the neck.
    to_axis = axis_point(np.zeros(3))
    lateral = to_axis / np.linalg.norm(to_axis)
    d0 = lateral * np.cos(np.radians(35.0)) + shaft_dir * np.sin(np.radians(35.0))
    d0 /= np.linalg.norm(d0)
    e1 = np.cross(d0, shaft_dir)
    e1 /= np.linalg.norm(e1)
    e2 = np.cross(d0, e1)
    best = (np.inf, d0)
    for ang in np.radians(np.arange(0.0, 31.0, 5.0)):
        for phi in np.radians(np.arange(0.0, 360.0, 30.0 if ang > 0 else 360.0)):
            d = np.cos(ang) * d0 + np.sin(ang) * (np.cos(phi) * e1 + np.sin(phi) * e2)
            area, _ = _section_stats(sdf_mesh, 1.35 * radius * d, d, step=1.0)
            if 0 < area < best[0]:
                best = (area, d)
    neck_dir = best[1]
    for _ in range(3):
        _, cen = _section_stats(sdf_mesh, 1.35 * radius * neck_dir, neck_dir)
        neck_dir = cen / np.linalg.norm(cen)
    # Neck base: the point of the neck axis closest to the shaft axis.
    w0 = -mean
    b = neck_dir @ shaft_dir
    denom = 1.0 - b * b
    t_neck = (b * (w0 @ shaft_dir) - (w0 @ neck_dir)) / denom
    neck_base = t_neck * neck_dir

    # The head: an exact sphere where the neck coordinate is below ~0.6 R, blended into the mesh by 0.85 R.
    # (only the sub-box around the head is touched: elsewhere the weight is 0)
    sdf_vals = sdf_mesh.values.copy()
    reach = radius + 8.0
    sub = []
    for i in range(3):
        a = max(int(np.floor((-reach - sdf_mesh.origin[i]) / FEMUR_VOXEL_MM)), 0)
        b = min(int(np.ceil((reach - sdf_mesh.origin[i]) / FEMUR_VOXEL_MM)) + 1, shape[i])
        sub.append(slice(a, b))
    gx, gy, gz = np.meshgrid(*(axes[i][sub[i]] for i in range(3)), indexing="ij", sparse=True)
    dist_c = np.sqrt(gx * gx + gy * gy + gz * gz).astype(np.float32)
    nu = (gx * neck_dir[0] + gy * neck_dir[1] + gz * neck_dir[2]).astype(np.float32)
    w_sphere = 1.0 - smoothstep(nu, 0.6 * radius, 0.85 * radius)
    box = tuple(sub)
    sdf_vals[box] = w_sphere * (dist_c - np.float32(radius)) + (1.0 - w_sphere) * sdf_vals[box]
    # The Gait2392 shaft is slender (≈21 mm wide below the lesser trochanter, after smoothing) against adult
    # femora (≈27–31 mm; e.g. Noble 1988): grow the shaft outwards by up to SHAFT_GROWTH_MM, from nothing at the
    # lesser trochanter to all of it 40 mm below (an offset of the distance field is a smooth dilation).
    below = np.zeros(shape, dtype=np.float32)
    for i in range(3):
        below += (axes[i] - np.float32(shaft_point[i])).reshape([-1 if j == i else 1 for j in range(3)]) \
            * np.float32(shaft_dir[i])
    sdf_vals -= np.float32(SHAFT_GROWTH_MM) * smoothstep(below, 0.0, 40.0)
    sdf = SdfVolume(sdf_vals, sdf_mesh.origin, FEMUR_VOXEL_MM)

    nsa, av = neck_angles(-neck_dir, shaft_dir)
    cortex, trab, corigin, cmm = _femur_interior(sdf, radius, neck_dir, neck_base, shaft_point, shaft_dir)
    volume = float((sdf_vals < 0).sum() * FEMUR_VOXEL_MM**3 / 1000.0)
    surf = v[v[:, 2] > lo[2] + 3.0]
    return FemurTemplate(sdf=sdf, head_radius_mm=float(radius), neck_dir=neck_dir, neck_base=neck_base,
                         shaft_point=shaft_point, shaft_dir=shaft_dir, greater_trochanter=greater,
                         lesser_trochanter=lesser, neck_shaft_angle_deg=nsa, anteversion_deg=av, cortex=cortex,
                         trabecular=trab, coarse_origin=corigin, coarse_mm=cmm, surface_points=surf,
                         volume_ml=volume)


def _femur_interior(sdf: SdfVolume, radius: float, neck_dir: np.ndarray, neck_base: np.ndarray,
                    shaft_point: np.ndarray, shaft_dir: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """Cortical thickness [mm] and trabecular fraction of the template femur on a 2 mm grid of its frame.

    Thickness follows the literature on the proximal femur (Treece et al. 2010 cortical maps; Bousson 2001):
    ~0.8 mm over the head, 1.0 (superior) to 2.4 mm (inferior, calcar) along the neck, ~1.2 mm over the
    trochanters, rising to ~5.5 mm in the diaphysis 40 mm below the lesser trochanter. The marrow canal starts
    20–40 mm below the lesser trochanter.
    """
    step = 2.0
    lo = sdf.origin
    n = np.ceil((np.asarray(sdf.values.shape) - 1) * sdf.spacing / step).astype(int) + 1
    axes = [lo[i] + step * np.arange(n[i]) for i in range(3)]
    g = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, 3)
    nu = g @ neck_dir
    length = float(np.linalg.norm(neck_base))
    radial = g - nu[:, None] * neck_dir
    inf_dir = shaft_dir - (shaft_dir @ neck_dir) * neck_dir
    inf_dir /= np.linalg.norm(inf_dir)
    rn = np.linalg.norm(radial, axis=1)
    k = np.where(rn > 1e-6, (radial @ inf_dir) / np.maximum(rn, 1e-6), 0.0)
    neck = 1.7 + 0.7 * k
    w_head = 1.0 - smoothstep(nu, 0.45 * radius, 0.8 * radius)
    w_neck = 1.0 - smoothstep(nu, length - 14.0, length + 4.0)
    proximal = w_head * 0.8 + (1.0 - w_head) * (w_neck * neck + (1.0 - w_neck) * 1.2)
    below = (g - shaft_point) @ shaft_dir  # distance below the lesser trochanter [mm]
    shaft = 4.0 + 1.5 * smoothstep(below, 20.0, 60.0)
    a = smoothstep(below, -5.0, 35.0)
    cortex = ((1.0 - a) * proximal + a * shaft).astype(np.float32).reshape(tuple(n))
    trab = (1.0 - smoothstep(below, 18.0, 40.0)).astype(np.float32).reshape(tuple(n))
    return cortex, trab, np.asarray(lo, dtype=float), step


@functools.lru_cache(maxsize=1)
def femur_template() -> FemurTemplate:
    """The bundled right femur as a template (smoothed by two Loop subdivisions), cached per process."""
    mesh = load_bundled_mesh("femur_r").subdivide_loop(iterations=2)
    return femur_template_from_lps(mesh.vertices @ OPENSIM_TO_LPS.T, mesh.faces, watertight=mesh.is_watertight)


@dataclass(frozen=True)
class PelvisTemplate:
    """Right hemipelvis and sacrum in the pelvis template frame (hip-centre midpoint at the origin, LPS axes)."""

    hemipelvis: SdfVolume
    sacrum: SdfVolume
    right_hip: np.ndarray  # (3,) [mm]
    acetabulum_radius_mm: float  # sphere fitted to the mesh's acetabulum [mm]


@functools.lru_cache(maxsize=1)
def pelvis_template() -> PelvisTemplate:
    """The bundled hemipelvis and sacrum as signed-distance volumes, cached per process."""
    hip = OPENSIM_TO_LPS @ OPENSIM_RIGHT_HIP
    mid = hip * np.array([0.0, 1.0, 1.0])
    pel = load_bundled_mesh("pelvis").subdivide_loop(iterations=2)
    pv = pel.vertices @ OPENSIM_TO_LPS.T - mid
    sac = load_bundled_mesh("sacrum").subdivide_loop(iterations=2)
    sv = sac.vertices @ OPENSIM_TO_LPS.T - mid
    near = np.linalg.norm(pv - (hip - mid), axis=1) < 34.0
    _, acet_r = fit_sphere(pv[near]) if near.sum() >= 10 else (None, float("nan"))
    return PelvisTemplate(
        hemipelvis=mesh_sdf(pv, pel.faces, spacing=PELVIS_VOXEL_MM, margin=8.0, smooth_mm=0.6),
        sacrum=mesh_sdf(sv, sac.faces, spacing=SACRUM_VOXEL_MM, margin=6.0, smooth_mm=0.7),
        right_hip=hip - mid,
        acetabulum_radius_mm=float(acet_r),
    )
