"""Scans without a femur, for validating (and training) that nothing is reported where there is no femur.

Two kinds, rendered with a random appearance (:mod:`femurseg.phantom.appearance`) and the phantom's scanner:

- ``"abdomen_arms"``: a real label map (:mod:`femurseg.phantom.labelmaps`) cropped from 25 mm above the femoral
  heads upwards (iliac wings, sacrum, lumbar spine, psoas, abdominal wall), with both arms beside the body: a
  humerus (cortex and marrow) in each, which is a long bone but not a femur;
- ``"lower_legs"``: two calves, each with a tibia (thick cortex, marrow canal) and a fibula, in muscle and fat.

The label map of every case is empty.
"""

from __future__ import annotations

import numpy as np

from femurseg.conventions import TISSUES
from femurseg.geometry import Grid

__all__ = ["NEGATIVE_KINDS", "negative_case"]

NEGATIVE_KINDS: tuple[str, ...] = ("abdomen_arms", "lower_legs")


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
    tissues, spacing = (_lower_legs if kind == "lower_legs" else _abdomen_arms)(r_anat)
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
