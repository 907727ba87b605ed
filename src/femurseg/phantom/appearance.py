"""Random CT appearance of a tissue map: the SynthSeg idea applied to CT.

A network trained on one renderer's look learns that look (bright trabecular bone, one scanner's contrast) rather
than the femur's shape; on a real osteoporotic head whose interior reads near soft tissue it leaves holes.  Here a
tissue map (:data:`femurseg.conventions.TISSUES`) is rendered with intensities drawn from wide, CT-plausible
ranges, independently per scan:

- a mean per class, from :data:`CLASS_HU` (trabecular femur from soft-tissue level, as in osteoporotic heads, up
  to dense young bone; cortex always brighter than the trabecular bone it encloses);
- contrast media with their probabilities: IV contrast in vessels, oral contrast or gas in the bowel, excreted
  contrast in the bladder;
- variation inside each class: a coarse smooth field (tens of mm: density gradients, organs) and a fine one (about
  a millimetre: trabecular texture), with per-class amplitudes;
- organ-like blobs of soft tissue inside the fat class (real label maps call everything unlabelled "fat": bowel,
  bladder, vessels, organs);
- a smooth additive field over the whole scan (beam hardening, cupping).

The scanner (point-spread function, noise, quantisation) is applied afterwards by :func:`femurseg.phantom.ct.
apply_scanner`, as for the physics mode.  The label map is never an input here: appearance cannot change a label.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from femurseg.conventions import TISSUES

__all__ = ["CLASS_HU", "AppearanceDraw", "sample_appearance", "render_appearance", "smooth_field"]

#: Range [HU] of each tissue class's mean (uniform draws), and range of its within-class variation [HU] (SD).
CLASS_HU: dict[str, tuple[tuple[float, float], tuple[float, float]]] = {
    "air": ((-1010.0, -985.0), (0.0, 5.0)),
    "fat": ((-130.0, -60.0), (3.0, 20.0)),
    "muscle": ((15.0, 75.0), (3.0, 20.0)),
    "skin": ((-20.0, 90.0), (3.0, 20.0)),
    "femur_cortical": ((450.0, 1700.0), (20.0, 200.0)),
    "femur_trabecular": ((15.0, 400.0), (10.0, 90.0)),
    "pelvis_cortical": ((400.0, 1500.0), (20.0, 200.0)),
    "pelvis_trabecular": ((30.0, 350.0), (10.0, 90.0)),
    "sacrum": ((60.0, 380.0), (10.0, 90.0)),
    "marrow": ((-100.0, 90.0), (5.0, 40.0)),
    "table": ((-400.0, 400.0), (0.0, 30.0)),
    "calibration_phantom": ((-20.0, 90.0), (0.0, 10.0)),
    "calibration_rod": ((30.0, 350.0), (0.0, 10.0)),
    "bladder": ((-5.0, 45.0), (2.0, 10.0)),
    "bowel_gas": ((-1000.0, -500.0), (10.0, 100.0)),
    "vessel": ((20.0, 70.0), (2.0, 15.0)),
}
#: Contrast media: (class, probability, mean range [HU]).
CONTRAST: tuple[tuple[str, float, tuple[float, float]], ...] = (
    ("vessel", 0.35, (150.0, 450.0)),
    ("bowel_gas", 0.2, (120.0, 600.0)),
    ("bladder", 0.15, (100.0, 900.0)),
)
#: Smallest difference [HU] between a bone's cortex and its trabecular interior.
MIN_CORTEX_CONTRAST_HU = 120.0


@dataclass(frozen=True)
class AppearanceDraw:
    """The intensities drawn for one scan (JSON-able via :meth:`to_dict`).

    Attributes
    ----------
    mean_hu, coarse_sd_hu, fine_sd_hu : dict of str to float
        Per tissue class: mean [HU], amplitude of the coarse and of the fine variation [HU].
    coarse_mm, fine_mm : float
        Correlation lengths of the two variation fields [mm].
    blob_fraction : float
        Fraction of the fat class turned into soft-tissue blobs (0: none).
    blob_hu : float
        Their mean [HU].
    bias_hu : float
        Amplitude of the whole-scan smooth field [HU].
    """

    mean_hu: dict[str, float]
    coarse_sd_hu: dict[str, float]
    fine_sd_hu: dict[str, float]
    coarse_mm: float
    fine_mm: float
    blob_fraction: float
    blob_hu: float
    bias_hu: float

    def to_dict(self) -> dict:
        """JSON-able form, for a case's facts."""
        return {k: (dict(v) if isinstance(v, dict) else float(v)) for k, v in self.__dict__.items()}


def sample_appearance(rng: np.random.Generator) -> AppearanceDraw:
    """Draw one scan's intensities (see the module's docstring)."""
    mean, coarse, fine = {}, {}, {}
    for name, ((lo, hi), (slo, shi)) in CLASS_HU.items():
        mean[name] = float(rng.uniform(lo, hi))
        coarse[name] = float(rng.uniform(slo, shi))
        fine[name] = float(rng.uniform(slo, shi))
    for name, p, (lo, hi) in CONTRAST:
        if rng.random() < p:
            mean[name] = float(rng.uniform(lo, hi))
    for cortex, interior in (("femur_cortical", "femur_trabecular"), ("pelvis_cortical", "pelvis_trabecular")):
        mean[cortex] = max(mean[cortex], mean[interior] + MIN_CORTEX_CONTRAST_HU)
    # Osteoporotic bone: the marrow canal and the trabecular bone are often alike.
    if rng.random() < 0.3:
        mean["marrow"] = float(rng.uniform(mean["marrow"], max(mean["marrow"], mean["femur_trabecular"])))
    blob = float(rng.uniform(0.15, 0.6)) if rng.random() < 0.8 else 0.0
    return AppearanceDraw(
        mean_hu=mean, coarse_sd_hu=coarse, fine_sd_hu=fine,
        coarse_mm=float(rng.uniform(8.0, 30.0)), fine_mm=float(rng.uniform(0.6, 1.5)),
        blob_fraction=blob, blob_hu=float(rng.uniform(0.0, 70.0)), bias_hu=float(rng.uniform(0.0, 30.0)),
    )


def smooth_field(shape_zyx: tuple[int, ...], spacing_zyx: tuple[float, ...], scale_mm: float,
                 rng: np.random.Generator) -> np.ndarray:
    """A zero-mean, unit-SD Gaussian random field with correlation length ``scale_mm`` [mm], float32 (Z, Y, X).

    Coarse fields are drawn on a grid of about ``scale_mm / 2`` and interpolated up, so their cost is that of the
    final interpolation whatever the scale.
    """
    from scipy import ndimage

    spacing = np.asarray(spacing_zyx, float)
    shape = np.asarray(shape_zyx, int)
    step = np.maximum(1, np.floor(scale_mm / 2.0 / spacing)).astype(int)
    small = np.where(step > 1, np.maximum(2, -(-shape // step) + 1), shape)
    sigma = scale_mm / (spacing * step)
    f = ndimage.gaussian_filter(rng.standard_normal(tuple(small)).astype(np.float32), sigma, mode="wrap")
    if np.any(step > 1):
        f = ndimage.zoom(f, shape / small, order=1, mode="nearest", grid_mode=True)
    f = f[: shape[0], : shape[1], : shape[2]]
    if f.shape != tuple(shape):  # zoom's rounding: pad the last row/column
        f = np.pad(f, [(0, s - n) for s, n in zip(shape, f.shape)], mode="edge")
    sd = float(f.std())
    return ((f - float(f.mean())) / (sd if sd > 0 else 1.0)).astype(np.float32)


def render_appearance(tissues_zyx: np.ndarray, spacing_zyx: tuple[float, float, float], draw: AppearanceDraw,
                      rng: np.random.Generator) -> np.ndarray:
    """Noise-free intensities [HU] of a tissue map, before the scanner's PSF and noise.

    Parameters
    ----------
    tissues_zyx : (Z, Y, X) ndarray of uint8
        Tissue classes (:data:`femurseg.conventions.TISSUES`); unknown values render as soft tissue.
    spacing_zyx : (3,) tuple of float
        Voxel spacing [mm].
    draw : AppearanceDraw
        The intensities (:func:`sample_appearance`).
    rng : numpy.random.Generator
        Draws the variation fields.

    Returns
    -------
    (Z, Y, X) ndarray of float32
    """
    tissues = np.asarray(tissues_zyx)
    shape = tissues.shape
    names = {v: k for k, v in TISSUES.items()}
    lut_mean = np.full(256, draw.mean_hu["muscle"], np.float32)
    lut_coarse = np.zeros(256, np.float32)
    lut_fine = np.zeros(256, np.float32)
    for value, name in names.items():
        lut_mean[value] = draw.mean_hu[name]
        lut_coarse[value] = draw.coarse_sd_hu[name]
        lut_fine[value] = draw.fine_sd_hu[name]
    coarse = smooth_field(shape, spacing_zyx, draw.coarse_mm, rng)
    fine = smooth_field(shape, spacing_zyx, draw.fine_mm, rng)
    hu = lut_mean[tissues]
    hu += lut_coarse[tissues] * coarse
    hu += lut_fine[tissues] * fine
    del fine
    if draw.blob_fraction > 0:
        blobs = smooth_field(shape, spacing_zyx, 12.0, rng)
        cut = float(np.quantile(blobs[:: 4, :: 4, :: 4], 1.0 - draw.blob_fraction))
        organ = (tissues == TISSUES["fat"]) & (blobs > cut)
        hu[organ] = draw.blob_hu + draw.coarse_sd_hu["muscle"] * coarse[organ]
        del blobs, organ
    if draw.bias_hu > 0:
        body = tissues != TISSUES["air"]
        hu[body] += draw.bias_hu * smooth_field(shape, spacing_zyx, 80.0, rng)[body]
    return hu
