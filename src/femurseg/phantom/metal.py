"""Metal in synthetic scans: hip arthroplasty (stem, head, cup), cannulated neck screws, and their streaks.

Real hip CTs of older patients often hold metal, and a femur with an implant is still that femur: the network must
keep metal inside a femur inside that femur's mask, and the quality control must say ``implant``.  This module
adds metal to a rendered image before the scanner model (:func:`femurseg.phantom.ct.apply_scanner` then blurs it,
so metal blooms, and clips it to the 12-bit CT range as scanners do):

- **arthroplasty**: a stem in the medullary canal from the neck down the shaft, a prosthetic head in the femoral
  head, both kept inside the femur label eroded by a millimetre, so they never change the label; and an
  acetabular cup, a hemispherical shell over the head's upper half with a polyethylene liner between it and the
  head, in the pelvis: cup and liner voxels are not femur;
- **screws**: two or three parallel cannulated screws along the neck axis from below the greater trochanter into
  the head; the part of a screw inside the femur stays femur, its head outside the bone is not labelled;
- **streaks**: per axial slice with metal, bright and dark rays from the metal (photon starvation, scatter) and a
  dark band between two metal objects (beam hardening), their strength growing with the metal's cross-section.

Geometry comes from the label map alone (head centre and radius from the largest inscribed sphere near the top
of the femur, the shaft axis from slice centroids), so it works on every anatomy source.  Axis order (z, y, x)
with z superior and x to the patient's left (LPS, identity direction), as every grid of the phantom.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from femurseg.conventions import LEFT_FEMUR, RIGHT_FEMUR

__all__ = ["METAL_HU", "FemurFrame", "femur_frame", "insert_metal"]

#: Metal before the scanner [HU] (cobalt-chrome and titanium are far above the 12-bit range the scanner clips to).
METAL_HU: tuple[float, float] = (6000.0, 14000.0)


@dataclass(frozen=True)
class FemurFrame:
    """Where one femur's parts are, in voxel index coordinates (z, y, x) of its label map.

    Attributes
    ----------
    head_zyx : (3,) ndarray of float
        Centre of the femoral head.
    head_radius_mm : float
        Radius of the largest sphere inside the head label [mm].
    shaft_top_zyx, shaft_bottom_zyx : (3,) ndarray of float
        Points on the shaft axis (slice centroids) 45 mm and ~110 mm below the head centre (or the lowest slice).
    lateral : float
        +1 when the patient's lateral direction is +x (left femur), −1 for the right femur.
    """

    head_zyx: np.ndarray
    head_radius_mm: float
    shaft_top_zyx: np.ndarray
    shaft_bottom_zyx: np.ndarray
    lateral: float


def femur_frame(femur: np.ndarray, spacing_zyx: tuple[float, float, float], side: str) -> FemurFrame | None:
    """Head and shaft of one femur's label (see :class:`FemurFrame`); None when the head or shaft is not in view.

    Parameters
    ----------
    femur : (Z, Y, X) ndarray of bool
        One femur's label.
    spacing_zyx : (3,) tuple of float
        Voxel spacing [mm].
    side : {"right", "left"}
    """
    zs = np.flatnonzero(femur.any(axis=(1, 2)))
    if zs.size == 0 or zs[-1] >= femur.shape[0] - 1:  # no femur, or its top is cut by the field of view
        return None
    dz = spacing_zyx[0]
    top = int(zs[-1])
    lo = max(0, top - int(round(60.0 / dz)))
    depth = ndimage.distance_transform_edt(np.pad(femur[lo:top + 1], 1), sampling=spacing_zyx)[1:-1, 1:-1, 1:-1]
    k = np.unravel_index(int(np.argmax(depth)), depth.shape)
    head = np.array([k[0] + lo, k[1], k[2]], float)
    radius = float(depth[k])
    centroids = {}
    for mm in (45.0, 110.0):
        z = int(round(head[0] - mm / dz))
        z = max(z, int(zs[0]))
        if z >= head[0] - 20.0 / dz:
            return None
        yy, xx = np.nonzero(femur[z])
        if yy.size == 0:
            return None
        centroids[mm] = np.array([z, yy.mean(), xx.mean()], float)
    return FemurFrame(head_zyx=head, head_radius_mm=radius, shaft_top_zyx=centroids[45.0],
                      shaft_bottom_zyx=centroids[110.0], lateral=1.0 if side == "left" else -1.0)


def _segment_distance(points_mm: np.ndarray, a_mm: np.ndarray, b_mm: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distance [mm] of points (N, 3) to the segment a–b, and the position along it (0 at a, 1 at b)."""
    ab = b_mm - a_mm
    t = np.clip(((points_mm - a_mm) @ ab) / max(float(ab @ ab), 1e-9), 0.0, 1.0)
    return np.linalg.norm(points_mm - (a_mm + t[:, None] * ab), axis=1), t


def _box(centre: np.ndarray, half_mm: float, spacing: np.ndarray, shape: tuple[int, ...]) -> tuple[slice, ...]:
    half = np.ceil(half_mm / spacing).astype(int)
    return tuple(slice(max(0, int(c) - h), min(n, int(c) + h + 1)) for c, h, n in zip(centre, half, shape))


def _points(box: tuple[slice, ...], spacing: np.ndarray) -> np.ndarray:
    """(N, 3) positions [mm] of a box's voxels, (z, y, x) index × spacing."""
    grids = np.meshgrid(*[np.arange(s.start, s.stop) for s in box], indexing="ij")
    return np.stack([g.ravel() for g in grids], axis=1) * spacing


def _arthroplasty(metal: np.ndarray, liner: np.ndarray, labels: np.ndarray, femur: np.ndarray, inner: np.ndarray, f: FemurFrame,
                  spacing: np.ndarray, rng: np.random.Generator) -> dict:
    head = f.head_zyx * spacing
    r_ball = float(np.clip(f.head_radius_mm * rng.uniform(0.75, 0.9), 10.0, 20.0))
    # The stem: from the neck (towards the shaft, laterally and down from the head centre) into the canal.
    neck = head + 0.45 * (f.shaft_top_zyx * spacing - head)
    path = [neck, f.shaft_top_zyx * spacing, f.shaft_bottom_zyx * spacing]
    r_top, r_tip = float(rng.uniform(6.0, 9.0)), float(rng.uniform(3.5, 5.5))
    box = _box(f.head_zyx, 140.0, spacing, metal.shape)
    pts = _points(box, spacing)
    stem = np.zeros(len(pts), bool)
    for i, (a, b) in enumerate(zip(path[:-1], path[1:])):
        d, t = _segment_distance(pts, a, b)
        s = (i + t) / (len(path) - 1)
        stem |= d <= r_top + (r_tip - r_top) * s
    ball = np.linalg.norm(pts - head, axis=1) <= r_ball
    # A short neck (trunnion) joins the head to the stem.
    d, _ = _segment_distance(pts, head, neck)
    stem |= d <= 5.0
    sub_inner = inner[box].ravel()
    m = np.zeros(len(pts), bool)
    m[(stem | ball) & sub_inner] = True
    # The cup: a shell over the head's upper half, outside the ball, in the pelvis (never femur).
    rel = pts - head
    r = np.linalg.norm(rel, axis=1)
    cup_out = r_ball + float(rng.uniform(3.5, 6.0))
    upper = rel[:, 0] >= -0.15 * r_ball
    liner_out = r_ball + float(rng.uniform(1.5, 3.0))  # the polyethylene liner between head and cup
    cup = (r >= liner_out) & (r <= cup_out) & upper
    shell = (r > r_ball) & (r < liner_out) & upper
    view = metal[box].reshape(-1)
    view[m | cup] = True
    metal[box] = view.reshape(metal[box].shape)
    view = liner[box].reshape(-1)
    view[shell & ~m] = True
    liner[box] = view.reshape(liner[box].shape)
    lab = labels[box].reshape(-1)
    lab[(cup | (shell & ~m)) & femur[box].ravel()] = 0
    labels[box] = lab.reshape(labels[box].shape)
    return {"kind": "arthroplasty", "ball_radius_mm": r_ball, "cup_outer_radius_mm": cup_out}


def _screws(metal: np.ndarray, femur: np.ndarray, f: FemurFrame, spacing: np.ndarray,
            rng: np.random.Generator) -> dict:
    head = f.head_zyx * spacing
    # The neck axis, roughly: from the head centre to the lateral shaft surface ~45 mm down.
    lateral_point = f.shaft_top_zyx * spacing + np.array([0.0, 0.0, f.lateral * 25.0])
    axis = lateral_point - head
    axis /= np.linalg.norm(axis)
    n = int(rng.integers(2, 4))
    r = float(rng.uniform(3.0, 3.6))
    box = _box(f.head_zyx, 110.0, spacing, metal.shape)
    pts = _points(box, spacing)
    sel = np.zeros(len(pts), bool)
    u = np.cross(axis, [1.0, 0.0, 0.0])
    u /= max(np.linalg.norm(u), 1e-9)
    v = np.cross(axis, u)
    for k in range(n):
        ang = 2.0 * np.pi * k / n + rng.uniform(0, 2 * np.pi)
        off = 0.35 * f.head_radius_mm * (np.cos(ang) * u + np.sin(ang) * v)
        tip = head + off + axis * 0.25 * f.head_radius_mm
        end = head + off + axis * (_exit_mm(femur, head + off, axis, spacing) + float(rng.uniform(2.0, 8.0)))
        d, _ = _segment_distance(pts, tip, end)
        sel |= d <= r
    view = metal[box].reshape(-1)
    view[sel] = True
    metal[box] = view.reshape(metal[box].shape)
    return {"kind": "screws", "count": n, "radius_mm": r}


def _exit_mm(femur: np.ndarray, start_mm: np.ndarray, axis: np.ndarray, spacing: np.ndarray) -> float:
    """How far [mm] along ``axis`` from ``start_mm`` the line last lies inside ``femur`` (the lateral cortex)."""
    steps = np.arange(0.0, 160.0, 0.5)
    idx = np.rint((start_mm[None, :] + steps[:, None] * axis[None, :]) / spacing).astype(int)
    ok = np.all((idx >= 0) & (idx < np.asarray(femur.shape)), axis=1)
    inside = np.zeros(len(steps), bool)
    inside[ok] = femur[tuple(idx[ok].T)]
    return float(steps[np.flatnonzero(inside)[-1]]) if inside.any() else 60.0


def _streaks(hu: np.ndarray, metal: np.ndarray, spacing: np.ndarray, rng: np.random.Generator) -> None:
    """Bright/dark rays from each slice's metal, and a dark band between two metal objects (in place)."""
    ny, nx = hu.shape[1:]
    yy, xx = np.mgrid[0:ny, 0:nx].astype(np.float32)
    yy *= spacing[1]
    xx *= spacing[2]
    strength = float(rng.uniform(0.2, 1.0))
    angles = rng.uniform(0.0, np.pi, 8)
    signs = rng.choice([-1.0, 1.0], 8, p=[0.6, 0.4])
    for z in np.flatnonzero(metal.any(axis=(1, 2))):
        comp, n = ndimage.label(metal[z])
        centres = ndimage.center_of_mass(metal[z], comp, range(1, n + 1))
        areas = ndimage.sum_labels(metal[z], comp, range(1, n + 1)) * spacing[1] * spacing[2]
        add = np.zeros((ny, nx), np.float32)
        for (cy, cx), area in zip(centres, areas):
            cy, cx = cy * spacing[1], cx * spacing[2]
            amp = strength * min(600.0, 4.0 * float(area))
            r = np.hypot(yy - cy, xx - cx)
            for a, s in zip(angles, signs):
                d = np.abs((yy - cy) * np.cos(a) - (xx - cx) * np.sin(a))
                add += s * amp * np.exp(-0.5 * (d / 1.5) ** 2) / (1.0 + r / 40.0)
        if n >= 2:  # beam hardening between the two largest pieces
            big = np.argsort(areas)[-2:]
            (y1, x1), (y2, x2) = (np.array(centres[i]) * spacing[1:] for i in big)
            length = max(float(np.hypot(y2 - y1, x2 - x1)), 1e-6)
            t = ((yy - y1) * (y2 - y1) + (xx - x1) * (x2 - x1)) / length**2
            d = np.abs((yy - y1) * (x2 - x1) - (xx - x1) * (y2 - y1)) / length
            band = np.exp(-0.5 * (d / 6.0) ** 2) * ((t > 0) & (t < 1))
            add -= strength * min(400.0, 2.0 * float(areas[big].min())) * band
        hu[z] += add


def insert_metal(hu: np.ndarray, labels: np.ndarray, spacing_zyx: tuple[float, float, float],
                 rng: np.random.Generator, *, streaks: bool = True) -> list[dict]:
    """Add an implant to one or both femurs of a rendered case, in place (see the module's docstring).

    Parameters
    ----------
    hu : (Z, Y, X) ndarray of float32
        The image before the scanner [HU]; metal and streaks are written into it.
    labels : (Z, Y, X) ndarray of uint8
        Femur labels (1 right, 2 left); an acetabular cup's voxels are removed from the femur they overlap.
    spacing_zyx : (3,) tuple of float
        Voxel spacing [mm].
    rng : numpy.random.Generator
    streaks : bool
        Add the metal's streak artefacts.

    Returns
    -------
    list of dict
        One entry per implant: ``side``, ``kind`` ("arthroplasty" or "screws") and its sizes, ``metal_ml``.
    """
    spacing = np.asarray(spacing_zyx, float)
    metal = np.zeros(hu.shape, bool)
    liner = np.zeros(hu.shape, bool)
    out: list[dict] = []
    sides = [("right", RIGHT_FEMUR), ("left", LEFT_FEMUR)]
    rng.shuffle(sides)
    n_sides = 2 if rng.random() < 0.25 else 1
    for side, value in sides:
        if len(out) >= n_sides:
            break
        femur = labels == value
        frame = femur_frame(femur, spacing_zyx, side)
        if frame is None:
            continue
        before = int(metal.sum())
        if rng.random() < 0.65:
            inner = ndimage.binary_erosion(femur, iterations=1)
            info = _arthroplasty(metal, liner, labels, femur, inner, frame, spacing, rng)
        else:
            info = _screws(metal, femur, frame, spacing, rng)
        info.update(side=side, metal_ml=float(metal.sum() - before) * float(np.prod(spacing)) / 1000.0)
        out.append(info)
    if out:
        hu[liner] = rng.uniform(-120.0, 60.0)  # polyethylene
        hu[metal] = rng.uniform(*METAL_HU)
        if streaks:
            _streaks(hu, metal, spacing, rng)
    return out
