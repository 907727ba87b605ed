"""CT density calibration for QCT: HU → mg/cm³ of a reference material (K2HPO4 or hydroxyapatite).

Three ways to a :class:`DensityCalibration` (``HU = intercept + slope · ρ``):

- :func:`calibrate`: find a calibration phantom's rods in the scan (synchronous calibration, the reference
  method), measure them and fit the phantom's model (Mindways two-component or a line).  Never guesses: without
  a phantom the result says ``found=False`` and why.
- :func:`fit_calibration`: the same fit to rod values you measured yourself.
- :func:`calibrate_internal`: phantomless, from air, fat and muscle in the scan (flagged ``method="internal"``);
  :func:`user_calibration`: a slope and intercept you give.

Then :func:`hu_to_density` converts CT values (an array or an image) with any of them.  Models, presets, units and
limits: docs/qct.md.
"""

from __future__ import annotations

import logging
import math
import os
from typing import Any, Mapping, overload

import numpy as np
import SimpleITK as sitk

from femurseg.errors import InputError
from femurseg.qct.fit import Plausible, fit_rods
from femurseg.qct.internal import REFERENCE_HU, InternalOptions, calibrate_internal, sample_reference_tissues
from femurseg.qct.phantoms import PRESETS, PhantomSpec, RodSpec, load_phantom_spec, mindways_model3, phantom_spec
from femurseg.qct.results import CalibrationResult, DensityCalibration, PhantomSearch, RodMeasurement, TissueSample
from femurseg.qct.rods import SearchOptions, find_phantom
from femurseg.qct.units import Material

__all__ = [
    "calibrate",
    "fit_calibration",
    "calibrate_internal",
    "user_calibration",
    "hu_to_density",
    "find_phantom",
    "sample_reference_tissues",
    "CalibrationResult",
    "DensityCalibration",
    "PhantomSearch",
    "RodMeasurement",
    "TissueSample",
    "SearchOptions",
    "InternalOptions",
    "Plausible",
    "PhantomSpec",
    "RodSpec",
    "Material",
    "PRESETS",
    "REFERENCE_HU",
    "mindways_model3",
    "load_phantom_spec",
]

log = logging.getLogger(__name__)


def calibrate(scan: sitk.Image, *, phantom: PhantomSpec | str | os.PathLike[str] = "mindways_model3",
              options: SearchOptions | None = None) -> CalibrationResult:
    """Find the calibration phantom in a CT and fit its calibration.

    Parameters
    ----------
    scan : SimpleITK.Image
        3D CT [HU] holding the phantom (rods along the slice axis, in one row, anywhere in-plane).
    phantom : PhantomSpec or str or PathLike
        The phantom: a spec (e.g. :func:`mindways_model3` with your certificate), a preset's name
        (:data:`PRESETS`) or a JSON file (:func:`load_phantom_spec`).
    options : SearchOptions, optional
        Search settings and the plausible ranges of a fit.

    Returns
    -------
    CalibrationResult
        ``found``; the calibration (slope [HU per mg/cm³ of the phantom's material], intercept [HU], R², residual
        per rod); the rods found (HU, SD, slices); warnings (e.g. rods outside the field of view).  ``found=False``
        with a ``reason`` when there is no phantom, too few rods in view or rods that cannot be identified.
    """
    if not isinstance(scan, sitk.Image) or scan.GetDimension() != 3:
        raise InputError("calibrate needs a 3D SimpleITK image of the CT [HU]")
    spec = phantom_spec(phantom)
    options = options or SearchOptions()
    search = find_phantom(scan, phantom=spec, options=options)
    if not search.found:
        log.info("no calibration: %s", search.reason)
        return CalibrationResult(found=False, reason=search.reason, calibration=None, search=search,
                                 warnings=search.warnings)
    cal = fit_rods(search.rods, phantom=spec, warnings=search.warnings, plausible=options.plausible)
    log.info("calibration from %d rods of %s: slope %.4f HU per %s, intercept %.2f HU, R² %.5f", len(search.rods),
             spec.name, cal.slope, cal.unit, cal.intercept, cal.r_squared)
    return CalibrationResult(found=True, reason="", calibration=cal, search=search, warnings=cal.warnings)


def fit_calibration(*, hu_by_rod: Mapping[str, float], phantom: PhantomSpec | str | os.PathLike[str]
                    ) -> DensityCalibration:
    """Fit a phantom's model to rod values measured by hand (e.g. ROIs on the QRM European Spine Phantom).

    Parameters
    ----------
    hu_by_rod : Mapping of str to float
        Mean CT value of each rod [HU], by its certificate name; at least 2 rods.
    phantom : PhantomSpec or str or PathLike
        The phantom (spec, preset's name or JSON file).

    Returns
    -------
    DensityCalibration
        ``method="phantom"``.

    Examples
    --------
    >>> cal = fit_calibration(hu_by_rod={"HA0": 3.0, "HA100": 98.0, "HA200": 193.0}, phantom="qrm_bdc")
    >>> round(cal.slope, 3), round(cal.intercept, 2), cal.unit
    (0.95, 3.0, 'mg/cm³ HA')
    """
    spec = phantom_spec(phantom)
    by_name = {r.name: r for r in spec.rods}
    unknown = set(hu_by_rod) - set(by_name)
    if unknown:
        raise InputError(f"phantom {spec.name!r} has no rod(s) {sorted(unknown)}; its rods: {sorted(by_name)}")
    nan3 = (math.nan, math.nan, math.nan)
    rods = [RodMeasurement(n, by_name[n].density, by_name[n].water_density, spec.material, float(hu_by_rod[n]),
                           math.nan, 0, 0, nan3, math.nan) for n in by_name if n in hu_by_rod]
    return fit_rods(rods, phantom=spec)


def user_calibration(*, slope: float, intercept: float, material: Material | str) -> DensityCalibration:
    """A calibration from a slope and intercept you know (``HU = intercept + slope · ρ``).

    Parameters
    ----------
    slope : float
        [HU per mg/cm³ of ``material``]; positive.
    intercept : float
        [HU].
    material : Material or str
        ``"K2HPO4"`` or ``"HA"``: the unit of the densities.

    Returns
    -------
    DensityCalibration
        ``method="user"``.

    Examples
    --------
    >>> user_calibration(slope=1.2, intercept=-5.0, material="K2HPO4").unit
    'mg/cm³ K2HPO4'
    """
    try:
        mat = Material(material)
    except ValueError:
        raise InputError(f"material must be one of {', '.join(m.value for m in Material)}, not {material!r}") from None
    return DensityCalibration(slope=float(slope), intercept=float(intercept), material=mat, method="user",
                              model="user", warnings=("calibration given by the user; not checked against the scan",))


@overload
def hu_to_density(hu: sitk.Image, *, calibration: DensityCalibration) -> sitk.Image: ...
@overload
def hu_to_density(hu: Any, *, calibration: DensityCalibration) -> np.ndarray: ...


def hu_to_density(hu: Any, *, calibration: DensityCalibration) -> Any:
    """Density [mg/cm³ of ``calibration.material``] of CT values: ``(HU − intercept) / slope``.

    Parameters
    ----------
    hu : (Z, Y, X) ndarray or array-like or SimpleITK.Image
        CT values [HU], any shape.
    calibration : DensityCalibration
        The calibration; ``calibration.unit`` is the unit of the result.

    Returns
    -------
    ndarray of float32 or SimpleITK.Image
        Same shape (an image keeps the scan's geometry and gets a ``unit`` metadata entry).

    Examples
    --------
    >>> cal = user_calibration(slope=1.25, intercept=5.0, material="K2HPO4")
    >>> hu_to_density(np.array([[5.0, 130.0]]), calibration=cal)
    array([[  0., 100.]], dtype=float32)
    """
    if not isinstance(calibration, DensityCalibration):
        raise InputError("hu_to_density needs a DensityCalibration (from calibrate, fit_calibration, "
                         "calibrate_internal or user_calibration)")
    if isinstance(hu, sitk.Image):
        arr = hu_to_density(sitk.GetArrayViewFromImage(hu), calibration=calibration)
        out = sitk.GetImageFromArray(arr)
        out.CopyInformation(hu)
        out.SetMetaData("unit", calibration.unit)
        return out
    values = np.asarray(hu, dtype=np.float32)
    return ((values - np.float32(calibration.intercept)) / np.float32(calibration.slope)).astype(np.float32)
