"""Scans without a femur, for validating (and training) that nothing is reported where there is no femur.

Three kinds, rendered with a random appearance (:mod:`femurseg.phantom.appearance`) and the phantom's scanner:

- ``"abdomen_arms"``: a real label map (:mod:`femurseg.phantom.labelmaps`) cropped from 25 mm above the femoral
  heads upwards (iliac wings, sacrum, lumbar spine, psoas, abdominal wall), with both arms beside the body: a
  humerus (cortex and marrow) in each, which is a long bone but not a femur;
- ``"lower_legs"``: two calves, each with a tibia (thick cortex, marrow canal) and a fibula, in muscle and fat;
- ``"chest_arms"``: a thorax (lungs, ribs sloping through the slices, vertebrae with discs, sternum, scapulae, aorta)
  with both arms beside it, each humerus ending at the top in a humeral head (a ball on a long bone: what a femoral
  head looks like to a network; the shoulder has no femoral neck under it).

The label map of every case is empty.
"""

from __future__ import annotations

import numpy as np

from femurseg.conventions import TISSUES
from femurseg.geometry import Grid

__all__ = ["NEGATIVE_KINDS", "negative_case"]

NEGATIVE_KINDS: tuple[str, ...] = ("abdomen_arms", "lower_legs", "chest_arms")


def _long_bone(tissues: np.ndarray, inside: np.ndarray, depth_mm: np.ndarray, cortex_mm: float) -> None:
    """Cortex within ``cortex_mm`` of the bone's surface, marrow inside (in place)."""
    tissues[inside] = TISSUES["marrow"]
    tissues[inside & (depth_mm <= cortex_mm)] = TISSUES["pelvis_cortical"]  # cortical bone; "femur_*" is for femurs


def _ellipse_depth(yy: np.ndarray, xx: np.ndarray, cy: float, cx: float, ry: float, rx: float) -> tuple[np.ndarray, np.ndarray]:
    """Inside an axis-aligned ellipse, and an approximate depth below its outline [mm] (exact for a circle)."""
    rho = np.sqrt(((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2)
    return rho <= 1.0, (1.0 - rho) * min(ry, rx)


def _lower_legs(rng: np.random.Generator) -> tuple[np.ndarray, tuple[float, float, float]]:
    spacing = (float(rng.uniform(1.0, 3.0)), 0.8, 0.8)  # (z, y, x) [mm]
    nz = int(round(rng.uniform(150.0, 300.0) / spacing[0]))
    n = 512
    yy, xx = np.meshgrid((np.arange(n) - n / 2) * spacing[1], (np.arange(n) - n / 2) * spacing[2], indexing="ij")
    sl = np.zeros((n, n), np.uint8)
    for side in (-1.0, 1.0):
        cx = side * rng.uniform(70.0, 110.0)
        ry, rx = rng.uniform(45.0, 65.0), rng.uniform(45.0, 65.0)
        leg, depth = _ellipse_depth(yy, xx, 0.0, cx, ry, rx)
        sl[leg] = TISSUES["fat"]
        muscle, _ = _ellipse_depth(yy, xx, 5.0, cx, ry - rng.uniform(5.0, 15.0), rx - rng.uniform(5.0, 15.0))
        sl[muscle] = TISSUES["muscle"]
        sl[leg & (depth <= 2.0)] = TISSUES["skin"]
        tib, tdepth = _ellipse_depth(yy, xx, -ry * 0.45, cx - side * 5.0, rng.uniform(11.0, 16.0), rng.uniform(13.0, 18.0))
        _long_bone(sl, tib, tdepth, float(rng.uniform(3.0, 7.0)))
        fib, fdepth = _ellipse_depth(yy, xx, ry * 0.1, cx + side * rx * 0.45, 6.0, 6.0)
        _long_bone(sl, fib, fdepth, 2.5)
    table = (yy > 70.0) & (yy < 70.0 + rng.uniform(8.0, 25.0)) & (np.abs(xx) < 220.0)
    sl[table & (sl == TISSUES["air"])] = TISSUES["table"]
    return np.repeat(sl[None], nz, axis=0), spacing


def _abdomen_arms(rng: np.random.Generator) -> tuple[np.ndarray, tuple[float, float, float]]:
    from femurseg.phantom import labelmaps as _lm

    names = _lm.bundled_subjects()
    subj = _lm.load_subject(names[int(rng.integers(0, len(names)))])
    tissues, labels = _lm.tissues_from_labelmap(subj, rng)
    top = int(np.flatnonzero((labels > 0).any(axis=(1, 2))).max())
    z0 = top + 1 + int(np.ceil(25.0 / subj.spacing_xyz[2]))
    tissues = np.ascontiguousarray(tissues[z0:])
    spacing = tuple(float(s) for s in subj.spacing_xyz[::-1])
    nz, ny, nx = tissues.shape
    body = (tissues != TISSUES["air"]) & (tissues != TISSUES["table"])
    xs = np.flatnonzero(body.any(axis=(0, 1)))
    ys = np.flatnonzero(body.any(axis=(0, 2)))
    yy, xx = np.meshgrid(np.arange(ny) * spacing[1], np.arange(nx) * spacing[2], indexing="ij")
    cy = 0.5 * (ys.min() + ys.max()) * spacing[1]
    sl = np.zeros((ny, nx), np.uint8)
    for edge, side in ((xs.min(), -1.0), (xs.max(), 1.0)):
        r = float(rng.uniform(38.0, 50.0))
        cx = edge * spacing[2] + side * (r + rng.uniform(3.0, 20.0))
        arm, depth = _ellipse_depth(yy, xx, cy, cx, r, r * 0.9)
        sl[arm] = TISSUES["fat"]
        sl[arm & (depth > rng.uniform(4.0, 12.0))] = TISSUES["muscle"]
        sl[arm & (depth <= 1.5)] = TISSUES["skin"]
        hum, hdepth = _ellipse_depth(yy, xx, cy, cx - side * rng.uniform(0.0, 8.0), rng.uniform(9.0, 13.0),
                                     rng.uniform(9.0, 13.0))
        _long_bone(sl, hum, hdepth, float(rng.uniform(2.5, 5.0)))
    put = (sl > 0)[None] & (tissues == TISSUES["air"])
    tissues[put] = np.broadcast_to(sl[None], tissues.shape)[put]
    return tissues, spacing


def _bone(sl: np.ndarray, inside: np.ndarray, depth_mm: np.ndarray, cortex_mm: float, interior: str) -> None:
    """A flat or short bone's section: ``interior`` tissue with a cortical rim of ``cortex_mm`` (in place)."""
    sl[inside] = TISSUES[interior]
    sl[inside & (depth_mm <= cortex_mm)] = TISSUES["pelvis_cortical"]


def _thorax_slice(yy: np.ndarray, xx: np.ndarray, z: float, g: dict) -> np.ndarray:
    """One axial slice [tissue codes] of the chest at height ``z`` [mm] with the shape draws ``g``."""
    rx, ry, f = g["rx"], g["ry"], g["fat"]
    sl = np.zeros(yy.shape, np.uint8)
    body, depth = _ellipse_depth(yy, xx, 0.0, 0.0, ry, rx)
    sl[body] = TISSUES["fat"]
    sl[body & (depth > f)] = TISSUES["muscle"]
    sl[body & (depth <= 2.0)] = TISSUES["skin"]
    grow = 0.85 + 0.15 * np.sin(np.pi * min(1.0, z / g["height"]))  # the lungs widen towards the middle
    for side in (-1.0, 1.0):
        lung, _ = _ellipse_depth(yy, xx, -0.05 * ry, side * 0.45 * rx, 0.62 * ry * grow, 0.33 * rx * grow)
        sl[lung] = TISSUES["air"]
        scap, sdepth = _ellipse_depth(yy, xx, 0.62 * ry, side * 0.55 * rx, 4.0, 0.22 * rx)
        _bone(sl, scap, sdepth, 1.5, "pelvis_trabecular")
    for theta, phase in zip(g["rib_angles"], g["rib_phases"]):  # ribs slope: each shows in part of the slices
        if ((z + phase) / g["rib_pitch"]) % 1.0 < 0.4:
            cy, cx = (ry - f - 9.0) * np.sin(theta), (rx - f - 11.0) * np.cos(theta)
            rib, rdepth = _ellipse_depth(yy, xx, cy, cx, 5.0, 7.0)
            _bone(sl, rib, rdepth, 1.5, "marrow")
    in_disc = ((z + g["disc_phase"]) % g["vertebra_mm"]) < 5.0
    vert, vdepth = _ellipse_depth(yy, xx, 0.42 * ry, 0.0, 14.0, 18.0)
    if in_disc:
        sl[vert] = TISSUES["muscle"]
    else:
        _bone(sl, vert, vdepth, 1.5, "pelvis_trabecular")
    canal, _ = _ellipse_depth(yy, xx, 0.42 * ry + 22.0, 0.0, 7.0, 8.0)
    sl[canal] = TISSUES["fat"]
    spinous, spdepth = _ellipse_depth(yy, xx, 0.42 * ry + 40.0, 0.0, 9.0, 4.0)
    _bone(sl, spinous, spdepth, 1.5, "pelvis_trabecular")
    sternum, stdepth = _ellipse_depth(yy, xx, -ry + f + 9.0, 0.0, 6.0, 13.0)
    _bone(sl, sternum, stdepth, 1.5, "pelvis_trabecular")
    aorta, _ = _ellipse_depth(yy, xx, 0.25 * ry, 22.0, g["aorta"], g["aorta"])
    sl[aorta] = TISSUES["vessel"]
    return sl


def _arm_slice(sl: np.ndarray, yy: np.ndarray, xx: np.ndarray, z: float, g: dict) -> None:
    """Both arms beside the chest at height ``z`` [mm]; the humerus ends at the top in its head (in place)."""
    for side, arm in ((-1.0, g["arms"][0]), (1.0, g["arms"][1])):
        cx = side * (g["rx"] + arm["gap"] + arm["r"])
        limb, depth = _ellipse_depth(yy, xx, 0.0, cx, arm["r"], arm["r"] * 0.9)
        free = limb & (sl == TISSUES["air"])
        sl[free] = TISSUES["fat"]
        sl[free & (depth > arm["fat"])] = TISSUES["muscle"]
        sl[free & (depth <= 1.5)] = TISSUES["skin"]
        hx = cx - side * arm["offset"]
        dz = z - g["head_z"]
        if dz < 0.0:  # the shaft, up to the head
            hum, hdepth = _ellipse_depth(yy, xx, 0.0, hx, arm["shaft"], arm["shaft"])
            _long_bone(sl, hum & free, hdepth, arm["cortex"])
        if abs(dz) < arm["head"]:  # the humeral head: a ball of trabecular bone in a thin cortex
            r = float(np.sqrt(arm["head"] ** 2 - dz ** 2))
            head, hdepth = _ellipse_depth(yy, xx, 0.0, hx - side * 6.0, r, r)
            _bone(sl, head & free, hdepth, 1.5, "pelvis_trabecular")


def _chest_arms(rng: np.random.Generator) -> tuple[np.ndarray, tuple[float, float, float]]:
    s = float(rng.uniform(0.85, 1.0))  # a 435-512 mm field: the arms beside the chest fit, or nearly
    spacing = (float(rng.choice([1.0, 1.25, 2.5, 3.0, 5.0])), s, s)  # (z, y, x) [mm]
    height = float(rng.uniform(200.0, 320.0))
    nz, n = int(round(height / spacing[0])), 512
    yy, xx = np.meshgrid((np.arange(n) - n / 2) * s, (np.arange(n) - n / 2) * s, indexing="ij")
    rx, ry = float(rng.uniform(120.0, 150.0)), float(rng.uniform(95.0, 120.0))
    n_ribs = 9
    g = {"rx": rx, "ry": ry, "fat": float(rng.uniform(6.0, 25.0)), "height": height,
         "rib_angles": np.concatenate([np.linspace(-2.6, -0.5, n_ribs), np.linspace(0.5, 2.6, n_ribs)]) + np.pi,
         "rib_phases": rng.uniform(0.0, 30.0, 2 * n_ribs), "rib_pitch": float(rng.uniform(22.0, 30.0)),
         "vertebra_mm": float(rng.uniform(24.0, 30.0)), "disc_phase": float(rng.uniform(0.0, 30.0)),
         "aorta": float(rng.uniform(11.0, 16.0)), "head_z": height - float(rng.uniform(15.0, 45.0)),
         "arms": [{"r": float(rng.uniform(38.0, 50.0)), "gap": float(rng.uniform(3.0, 20.0)),
                   "fat": float(rng.uniform(4.0, 12.0)), "offset": float(rng.uniform(0.0, 8.0)),
                   "shaft": float(rng.uniform(9.0, 13.0)), "cortex": float(rng.uniform(2.5, 5.0)),
                   "head": float(rng.uniform(20.0, 25.0))} for _ in range(2)]}
    tissues = np.zeros((nz, n, n), np.uint8)
    table = (yy > ry + 2.0) & (yy < ry + 2.0 + rng.uniform(8.0, 25.0)) & (np.abs(xx) < 220.0)
    for k in range(nz):
        z = (k + 0.5) * spacing[0]
        sl = _thorax_slice(yy, xx, z, g)
        _arm_slice(sl, yy, xx, z, g)
        sl[table & (sl == TISSUES["air"])] = TISSUES["table"]
        tissues[k] = sl
    return tissues, spacing


def negative_case(kind: str, seed: int):  # noqa: ANN201 (femurseg.phantom.generate.PhantomCase)
    """A scan of ``kind`` (:data:`NEGATIVE_KINDS`) with an empty label map, the same for the same seed.

    Returns
    -------
    femurseg.phantom.generate.PhantomCase
    """
    from femurseg.errors import InputError
    from femurseg.io import image_from_array
    from femurseg.phantom import appearance as _app
    from femurseg.phantom import ct as _ct
    from femurseg.phantom.generate import PhantomCase, _jsonable

    if kind not in NEGATIVE_KINDS:
        raise InputError(f"unknown negative scan kind {kind!r}; choose one of {', '.join(NEGATIVE_KINDS)}")
    ss = np.random.SeedSequence([int(seed), 0x0E6A, NEGATIVE_KINDS.index(kind)])
    r_anat, r_look, r_field, r_scan, r_noise = (np.random.default_rng(s) for s in ss.spawn(5))
    tissues, spacing = {"lower_legs": _lower_legs, "abdomen_arms": _abdomen_arms, "chest_arms": _chest_arms}[kind](r_anat)
    grid = Grid(shape_zyx=tuple(int(n) for n in tissues.shape), spacing_zyx=spacing,
                origin_xyz=(-0.5 * tissues.shape[2] * spacing[2], -0.5 * tissues.shape[1] * spacing[1], 0.0))
    draw = _app.sample_appearance(r_look)
    hu = _app.render_appearance(tissues, spacing, draw, r_field)
    scan = _ct.sample_scan(r_scan, body_width_mm=400.0, fat_mm=20.0, spacing_xyz=spacing[::-1],
                           matrix=max(tissues.shape[1:]), calibration_phantom=False, recon_circle=False)
    ct = _ct.apply_scanner(hu, grid, scan, rng=r_noise)
    facts = _jsonable({"seed": int(seed), "anatomy_source": f"negative:{kind}", **scan.to_dict()})
    labels = np.zeros(tissues.shape, np.uint8)
    return PhantomCase(scan=image_from_array(ct, grid), labels=image_from_array(labels, grid),
                       tissues=image_from_array(tissues, grid), facts=facts)
