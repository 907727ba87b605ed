"""Cases from real anatomy with a random appearance: :func:`generate_labelmap_case`.

The anatomy source is a bundled real label map (:mod:`femurseg.phantom.labelmaps`), the appearance random
(:mod:`femurseg.phantom.appearance`), the scanner the physics phantom's (:func:`femurseg.phantom.ct.
apply_scanner`: PSF, band-limited noise, reconstruction circle, quantisation).  The label map is the expert's,
cropped with the field of view; it never depends on the drawn appearance.
"""

from __future__ import annotations

import time
from functools import lru_cache
from typing import Any

import numpy as np

from femurseg.conventions import LEFT_FEMUR, RIGHT_FEMUR
from femurseg.geometry import Grid
from femurseg.io import image_from_array
from femurseg.phantom import appearance as _app
from femurseg.phantom import ct as _ct
from femurseg.phantom import labelmaps as _lm
from femurseg.phantom import metal as _metal

__all__ = ["generate_labelmap_case", "periosteal_partial_volume"]

#: Range of the bone fraction of the femur label's outermost voxels (uniform per case, ±0.1 per voxel).
RIM_FRACTION: tuple[float, float] = (0.2, 0.7)


@lru_cache(maxsize=4)
def _subject(name: str) -> _lm.LabelmapSubject:
    return _lm.load_subject(name)


def periosteal_partial_volume(hu: np.ndarray, femur: np.ndarray, rng: np.random.Generator) -> None:
    """Render the femur label's outermost in-plane voxels as partly bone (in place; the label is not touched).

    An expert label map marks every voxel that visibly holds bone (:data:`femurseg.conventions.
    FEMUR_LABEL_FRACTION`), so on the real scan its outermost voxels were only partly bone: they read between the
    surrounding soft tissue and the cortex.  Filling them with full cortex would teach a network that the femur
    ends one voxel outside its surface.  Each rim voxel becomes ``soft + f·(bone − soft)``, with ``soft`` the mean
    of its non-femur in-plane neighbours and ``f`` drawn from :data:`RIM_FRACTION`.  The voxels whose slice above
    or below is outside the femur (the head's dome on 3 mm slices) are blended the same way with their non-femur
    neighbours in z.

    Parameters
    ----------
    hu : (Z, Y, X) ndarray of float32
        The rendered image before the scanner [HU]; modified in place.
    femur : (Z, Y, X) ndarray of bool
        Both femurs' labels.
    rng : numpy.random.Generator
    """
    from scipy import ndimage

    if not femur.any():
        return
    cross = np.zeros((1, 3, 3), bool)
    cross[0, 1, :] = cross[0, :, 1] = True
    rim = femur & ~ndimage.binary_erosion(femur, structure=cross, border_value=1)
    cap = _lm.z_surface(femur) & ~rim
    out = (~femur).astype(np.float32)
    level = rng.uniform(*RIM_FRACTION)
    for where, box in ((rim, (1, 3, 3)), (cap, (3, 1, 1))):
        num = ndimage.uniform_filter(hu * out, size=box, mode="nearest")
        den = ndimage.uniform_filter(out, size=box, mode="nearest")
        idx = np.nonzero(where & (den > 0))
        soft = num[idx] / den[idx]
        f = np.clip(level + rng.normal(0.0, 0.1, soft.shape), 0.05, 1.0).astype(np.float32)
        hu[idx] = soft + f * (hu[idx] - soft)


def generate_labelmap_case(seed: int, *, subject: str | None = None, noise_sigma_hu: float | None = None,
                           recon_circle: bool | None = None, metal: float = 0.0):  # noqa: ANN201 (PhantomCase; imported lazily)
    """One case rendered from a bundled real label map.

    Parameters
    ----------
    seed : int
        Non-negative; the same seed gives the same case.
    subject : str, optional
        A name from :func:`femurseg.phantom.labelmaps.bundled_subjects`; drawn from the seed by default.
    noise_sigma_hu : float, optional
        Fixed image noise [HU] (0: none); drawn by default.
    recon_circle : bool, optional
        Force the reconstruction circle; drawn by default.
    metal : float
        Probability [0, 1] of a hip implant or neck screws (:func:`femurseg.phantom.metal.insert_metal`).

    Returns
    -------
    femurseg.phantom.generate.PhantomCase
    """
    from femurseg.phantom.generate import PhantomCase, _jsonable

    t0 = time.perf_counter()
    ss = np.random.SeedSequence([int(seed), 0x1AB3])
    r_pick, r_tissue, r_fov, r_look, r_field, r_scan, r_noise, r_metal = (
        np.random.default_rng(s) for s in ss.spawn(8))  # the first seven as spawn(7) of earlier versions
    names = _lm.bundled_subjects()
    name = subject if subject is not None else names[int(r_pick.integers(0, len(names)))]
    subj = _subject(name)
    tissues, labels = _lm.tissues_from_labelmap(subj, r_tissue)
    spacing_zyx = tuple(float(s) for s in subj.spacing_xyz[::-1])
    crop = _lm.crop_field_of_view(labels, spacing_zyx, r_fov)
    tissues, labels = np.ascontiguousarray(tissues[crop]), np.ascontiguousarray(labels[crop])
    start = [s.start or 0 for s in crop]
    origin = tuple(o + st * sp for o, st, sp in zip(subj.origin_xyz, start[::-1], subj.spacing_xyz))
    grid = Grid(shape_zyx=tuple(int(n) for n in tissues.shape), spacing_zyx=spacing_zyx, origin_xyz=origin)

    draw = _app.sample_appearance(r_look)
    hu = _app.render_appearance(tissues, spacing_zyx, draw, r_field)
    periosteal_partial_volume(hu, labels > 0, r_field)
    implants = _metal.insert_metal(hu, labels, spacing_zyx, r_metal) if r_metal.random() < metal else []
    body_x = np.flatnonzero((tissues > 0).any(axis=(0, 1)))
    width = float((body_x.max() - body_x.min() + 1) * spacing_zyx[2]) if len(body_x) else 300.0
    scan = _ct.sample_scan(r_scan, body_width_mm=width, fat_mm=20.0, spacing_xyz=subj.spacing_xyz,
                           matrix=max(grid.shape_zyx[1:]), calibration_phantom=False, noise_sigma_hu=noise_sigma_hu,
                           recon_circle=recon_circle)
    ct = _ct.apply_scanner(hu, grid, scan, rng=r_noise)
    del hu
    if scan.recon_circle:
        _ct.blank_outside_circle(grid, tissues, labels)

    voxel_ml = float(np.prod(spacing_zyx)) / 1000.0
    counts = np.bincount(labels.ravel(), minlength=3)
    facts: dict[str, Any] = {
        "seed": int(seed), "anatomy_source": f"labelmap:{name}", "sex": None, "age": None,
        "femur_volume_right_ml": float(counts[RIGHT_FEMUR]) * voxel_ml,
        "femur_volume_left_ml": float(counts[LEFT_FEMUR]) * voxel_ml,
        "crop_zyx": [[s.start, s.stop] for s in crop], "implants": implants,
        "size_xyz": [grid.shape_zyx[2], grid.shape_zyx[1], grid.shape_zyx[0]], "origin_xyz": list(origin),
    }
    facts.update({f"appearance_{k}": v for k, v in draw.to_dict().items()})
    facts.update(scan.to_dict())
    facts = _jsonable(facts)
    timings = {"total": time.perf_counter() - t0}
    return PhantomCase(scan=image_from_array(ct, grid), labels=image_from_array(labels, grid),
                       tissues=image_from_array(tissues, grid), facts=facts, timings=timings)
