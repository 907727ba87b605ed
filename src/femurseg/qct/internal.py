"""Phantomless (internal) calibration: air, fat and muscle sampled in the scan itself.

Mineral-free tissues tell how this scan's HU scale relates to a reference scanner's (a gain and an offset), not
how bone mineral reads: the mineral slope comes from a nominal calibration for the scanner and kVp, scaled by
the gain.  The model, with ``HU_ref`` the tissues' reference values (:data:`REFERENCE_HU`):

``HU_measured = g · HU_ref + o``  (least squares over the tissues), then
``slope = g · nominal_slope`` and ``intercept = o + g · nominal_intercept``.

This corrects offsets and scale drifts of the scanner's water calibration; it cannot know the scanner's true
mineral slope (which varies with kVp, filtration and patient size by ±10 % or more), so its densities carry that
uncertainty.  A synchronous phantom is the reference method.  Michalski et al. (Med Eng Phys 2020) estimate the
effective energy from air, adipose, blood, cortical bone and muscle and compute the slope from attenuation tables;
that is not done here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Mapping

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from femurseg.errors import InputError
from femurseg.qct.fit import fit_line
from femurseg.qct.results import DensityCalibration, TissueSample
from femurseg.qct.units import Material

__all__ = ["REFERENCE_HU", "InternalOptions", "sample_reference_tissues", "calibrate_internal"]

#: Reference CT values of mineral-free tissues on a water-calibrated scanner at 120 kVp [HU] (air by definition;
#: fat ≈ −100 and muscle +40 to +60 as typical values, docs/qct.md).  Individuals vary by ±10–20 HU.
REFERENCE_HU: Mapping[str, float] = MappingProxyType({"air": -1000.0, "fat": -100.0, "muscle": 50.0,
                                                      "blood": 40.0})

#: Windows [HU] in which each tissue's peak is looked for (after light smoothing).
_WINDOWS = {"fat": (-200.0, -40.0), "muscle": (0.0, 120.0)}


@dataclass(frozen=True)
class InternalOptions:
    """Settings of :func:`calibrate_internal`.

    Attributes
    ----------
    reference_hu : Mapping of str to float
        Each reference tissue's value on the reference scanner [HU] (default :data:`REFERENCE_HU`).
    nominal_slope : float
        Mineral slope of the reference scanner [HU per mg/cm³ of ``material``].  Default 1.22 HU per mg/cm³
        K2HPO4: a typical 120 kVp value (the middle of the femurseg phantom's 1.08–1.33; verify for your
        scanner).
    nominal_intercept : float
        CT value of zero mineral on the reference scanner [HU].
    material : Material
        The material of the nominal slope (and of the densities).
    max_slices : int
        Slices sampled (evenly spaced).
    min_voxels : int
        Least number of voxels for a tissue to count as found.
    """

    reference_hu: Mapping[str, float] = field(default_factory=lambda: dict(REFERENCE_HU))
    nominal_slope: float = 1.22
    nominal_intercept: float = 0.0
    material: Material = Material.K2HPO4
    max_slices: int = 16
    min_voxels: int = 200

    def __post_init__(self) -> None:
        try:
            object.__setattr__(self, "material", Material(self.material))
        except ValueError:
            raise InputError(f"material must be one of {', '.join(m.value for m in Material)}, "
                             f"not {self.material!r}") from None
        if not (math.isfinite(self.nominal_slope) and self.nominal_slope > 0):
            raise InputError(f"the nominal slope must be positive, not {self.nominal_slope}")


def _peak(values: np.ndarray, window: tuple[float, float]) -> tuple[float, float] | None:
    """Mode of ``values`` inside ``window`` (1 HU histogram, smoothed), refined as the mean around it."""
    v = values[(values >= window[0]) & (values <= window[1])]
    if v.size == 0:
        return None
    hist, edges = np.histogram(v, bins=int(window[1] - window[0]), range=window)
    mode = float(edges[int(np.argmax(ndimage.gaussian_filter1d(hist.astype(float), 3.0)))] + 0.5)
    near = v[np.abs(v - mode) <= 15.0]
    return float(near.mean()), float(near.std())


def _tissue_value(name: str, values: np.ndarray) -> tuple[float, float] | None:
    """(typical value, spread) [HU]: the median for air (its clipped noise stays symmetric about it up to half
    clipped), the peak of homogeneous soft tissue for fat and muscle."""
    if values.size == 0:
        return None
    if name in _WINDOWS:
        return _peak(values, _WINDOWS[name])
    return float(np.median(values)), float(values.std())


def _slice_samples(img: np.ndarray, spacing_yx: tuple[float, float], keep: np.ndarray
                   ) -> dict[str, np.ndarray]:
    """Homogeneous air, fat and muscle values (smoothed over ~3 mm) of one slice."""
    size = [max(1, int(round(3.0 / s))) for s in spacing_yx]
    smooth = ndimage.uniform_filter(img, size=size)
    sd = np.sqrt(np.maximum(ndimage.uniform_filter(img * img, size=size) - smooth * smooth, 0.0))
    body = smooth > -500.0
    # Air: at least 10 mm from anything denser than lung, inside the field of view.
    far = ndimage.distance_transform_edt(~body, sampling=spacing_yx) > 10.0
    out = {"air": smooth[far & keep & (smooth < -900.0)]}
    inner = ndimage.binary_erosion(ndimage.binary_fill_holes(body), iterations=max(1, int(3.0 / min(spacing_yx))))
    for name, (lo, hi) in _WINDOWS.items():
        cand = inner & keep & (smooth >= lo) & (smooth <= hi)
        if cand.any():
            cand &= sd <= np.percentile(sd[cand], 50.0)  # the more homogeneous half: away from edges
        out[name] = smooth[cand]
    return out


def sample_reference_tissues(scan: sitk.Image, *, exclude: sitk.Image | None = None,
                             options: InternalOptions | None = None) -> tuple[TissueSample, ...]:
    """Typical CT values of air, fat and muscle in a scan.

    Parameters
    ----------
    scan : SimpleITK.Image
        CT [HU].
    exclude : SimpleITK.Image, optional
        Non-zero where nothing may be sampled (e.g. a calibration phantom or metal), on the scan's grid.
    options : InternalOptions, optional
        Slices sampled, least voxels, reference values.

    Returns
    -------
    tuple of TissueSample
        The tissues found (air outside the body; fat and muscle as the peaks of homogeneous soft tissue).
    """
    options = options or InternalOptions()
    vol = sitk.GetArrayViewFromImage(scan)
    mask = None if exclude is None else sitk.GetArrayViewFromImage(exclude)
    if mask is not None and mask.shape != vol.shape:
        raise InputError(f"the exclusion mask's size {exclude.GetSize()} differs from the scan's {scan.GetSize()}")
    spacing = tuple(float(s) for s in scan.GetSpacing()[1::-1])
    ks = sorted({int(round(v)) for v in np.linspace(0, vol.shape[0] - 1, min(options.max_slices, vol.shape[0]))})
    lowest = min(float(vol[k].min()) for k in ks)
    padding = np.logical_and.reduce([vol[k] == lowest for k in ks]) if lowest <= -1024 else np.zeros(vol.shape[1:], bool)
    pooled: dict[str, list[np.ndarray]] = {"air": [], "fat": [], "muscle": []}
    for k in ks:
        keep = ~padding if mask is None else ~padding & (mask[k] == 0)
        for name, v in _slice_samples(vol[k].astype(np.float64), spacing, keep).items():  # type: ignore[arg-type]
            pooled[name].append(v)
    found = []
    for name, parts in pooled.items():
        v = np.concatenate(parts) if parts else np.zeros(0)
        stats = _tissue_value(name, v)
        if v.size >= options.min_voxels and stats is not None:
            found.append(TissueSample(name, stats[0], stats[1], int(v.size), float(options.reference_hu[name])))
    return tuple(found)


def calibrate_internal(scan: sitk.Image | None = None, *, samples: Mapping[str, float] | None = None,
                       options: InternalOptions | None = None) -> DensityCalibration:
    """A phantomless calibration from reference tissues sampled in the scan (or measured by you).

    Parameters
    ----------
    scan : SimpleITK.Image, optional
        CT [HU] to sample air, fat and muscle in.
    samples : Mapping of str to float, optional
        Tissue values you measured instead [HU], e.g. ``{"air": -995, "blood": 45}``; names of
        ``options.reference_hu``.
    options : InternalOptions, optional
        Reference values and the nominal calibration.

    Returns
    -------
    DensityCalibration
        ``method="internal"``, with the tissues, their residuals and a warning on its assumptions.

    Examples
    --------
    >>> cal = calibrate_internal(samples={"air": -1002.0, "fat": -98.0, "muscle": 52.0})
    >>> cal.method, cal.unit, round(cal.slope, 3)
    ('internal', 'mg/cm³ K2HPO4', 1.225)
    """
    options = options or InternalOptions()
    if samples is not None:
        unknown = set(samples) - set(options.reference_hu)
        if unknown:
            raise InputError(f"no reference value for tissue(s) {sorted(unknown)}; known: {sorted(options.reference_hu)}")
        tissues = tuple(TissueSample(n, float(v), math.nan, 0, float(options.reference_hu[n])) for n, v in samples.items())
    elif scan is not None:
        tissues = sample_reference_tissues(scan, options=options)
    else:
        raise InputError("give a scan to sample reference tissues in, or the tissues' measured values")
    if len(tissues) < 2:
        raise InputError(f"a phantomless calibration needs at least 2 reference tissues; found "
                         f"{[t.name for t in tissues] or 'none'} (is the body and some air in view?)")
    fit = fit_line([t.reference_hu for t in tissues], [t.hu for t in tissues])
    notes = [f"phantomless (internal) calibration: the mineral slope is the nominal {options.nominal_slope:g} HU "
             f"per {options.material.unit} scaled by the tissues' gain {fit.slope:.4f}; it is not measured"]
    if abs(fit.slope - 1.0) > 0.05 or abs(fit.intercept) > 30.0:
        notes.append(f"this scan's HU scale differs from the reference (gain {fit.slope:.3f}, offset "
                     f"{fit.intercept:+.1f} HU): check the scanner's water calibration")
    fitted = tuple(TissueSample(t.name, t.hu, t.hu_sd, t.n_voxels, t.reference_hu, float(e))
                   for t, e in zip(tissues, fit.residuals))
    return DensityCalibration(slope=fit.slope * options.nominal_slope,
                              intercept=fit.intercept + fit.slope * options.nominal_intercept,
                              material=options.material, method="internal", model="internal",
                              r_squared=fit.r_squared, tissues=fitted, warnings=tuple(notes))
