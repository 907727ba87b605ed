"""One scan's QCT analysis: calibration → density → per femur: frame, regions, vBMD by compartment, aBMD, T-score.

:func:`analyse_scan` is what ``femurseg qct`` runs.  It takes the CT [HU] and a femur label map on the same grid
(femurseg's labels: 1 right, 2 left femur; a map that marks both femurs with 1 is split by side), calibrates the
densities (a calibration phantom in the scan; without one the phantomless internal calibration, flagged; or a
calibration the caller gives) and analyses each femur in its own bounding box, so a whole-body scan costs what a
hip scan costs.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import SimpleITK as sitk

from femurseg.conventions import LEFT_FEMUR, RIGHT_FEMUR
from femurseg.errors import InputError
from femurseg.geometry import Grid, split_femur_by_side, unsided_two_femurs
from femurseg.io import array_of, grid_of, require_same_grid
from femurseg.qct.bmd import CompartmentOptions, RegionDensity, region_densities
from femurseg.qct.bmd import compartments as bmd_compartments
from femurseg.qct.calibration import calibrate, calibrate_internal
from femurseg.qct.dxa import ArealBMD, DXAProjection, areal_bmd, project_dxa
from femurseg.qct.frame import MIN_NSA_SHAFT_MM, FemurFrame, femur_frame
from femurseg.qct.phantoms import PhantomSpec
from femurseg.qct.regions import RegionOptions, region_labels
from femurseg.qct.results import CalibrationResult, DensityCalibration

__all__ = ["FemurAnalysis", "QCTAnalysis", "analyse_scan", "choose_calibration", "SIDE_LABELS", "PLAUSIBLE_VBMD"]

log = logging.getLogger(__name__)

#: femurseg's femur labels by side.
SIDE_LABELS: dict[str, int] = {"right": RIGHT_FEMUR, "left": LEFT_FEMUR}

#: Integral vBMD of a total hip outside this range [mg/cm³] points at a wrong calibration or mask (qct_facts:
#: calibrated femur densities outside about −100…1500 deserve a flag; a total hip integrates to 100–500).
PLAUSIBLE_VBMD: tuple[float, float] = (50.0, 700.0)

#: Margin around a femur's mask when it is cut out of the scan [mm]: room for the distance transform.
_BOX_MARGIN_MM = 6.0


@dataclass
class FemurAnalysis:
    """The QCT of one femur.

    Attributes
    ----------
    side : str
        ``"right"`` or ``"left"``.
    frame : FemurFrame
        Head sphere, neck and shaft axes and the measures derived from them [mm, deg].
    densities : dict of str to RegionDensity
        Per region (``head``, ``neck``, ``trochanter``, ``intertrochanter``, ``total_hip``): volume [cm³], BMC [mg],
        integral, trabecular and cortical vBMD [mg/cm³ of the calibration's material].
    areal : dict of str to ArealBMD
        CTXA-like areal BMD [g/cm²] per DXA region, with T-scores for the neck and total hip.
    projection : DXAProjection
        The DXA-like projection the areal values come from (for the report).
    grid : Grid
        Geometry of the femur's box within the scan.
    hu_zyx, mask_zyx, regions_zyx : ndarray
        CT values [HU], the femur's mask and region codes (:mod:`femurseg.qct.regions`) in that box (for the
        report).
    compartments_zyx : (ndarray, ndarray)
        The trabecular and cortical compartments (bool) the densities were counted in, in that box (for the
        report).
    warnings : list of str
    """

    side: str
    frame: FemurFrame
    densities: dict[str, RegionDensity]
    areal: dict[str, ArealBMD]
    projection: DXAProjection
    grid: Grid
    hu_zyx: np.ndarray
    mask_zyx: np.ndarray
    regions_zyx: np.ndarray
    compartments_zyx: tuple[np.ndarray, np.ndarray]
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able: frame, regions' volumetric and areal values (units in the keys), warnings."""
        return {
            "side": self.side,
            "frame": self.frame.to_dict(),
            "regions": {name: d.to_dict() for name, d in self.densities.items()},
            "areal": {name: a.to_dict() for name, a in self.areal.items()},
            "warnings": list(self.warnings),
        }


@dataclass
class QCTAnalysis:
    """The QCT of one scan: its calibration and each femur analysed.

    Attributes
    ----------
    case : str
        The scan's name (reports and CSV rows).
    calibration : DensityCalibration
        The calibration used; ``method`` is ``phantom``, ``internal`` (phantomless) or ``user``.
    calibration_search : CalibrationResult or None
        The phantom search, when one was made (found or not: why not is in its ``reason``).
    femurs : dict of str to FemurAnalysis
        By side.
    skipped : dict of str to str
        Sides present in the mask that could not be analysed, with the reason.
    warnings : list of str
        Calibration and plausibility warnings of the whole scan.
    """

    case: str
    calibration: DensityCalibration
    calibration_search: CalibrationResult | None
    femurs: dict[str, FemurAnalysis]
    skipped: dict[str, str] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    @property
    def unit(self) -> str:
        """Unit of every volumetric density (e.g. ``mg/cm³ K2HPO4``)."""
        return self.calibration.unit

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form of everything measured, with units."""
        search = self.calibration_search
        return {
            "case": self.case,
            "density_unit": self.unit,
            "calibration": self.calibration.to_dict(),
            "phantom_search": None if search is None else {"found": search.found, "reason": search.reason},
            "femurs": {side: f.to_dict() for side, f in self.femurs.items()},
            "skipped": dict(self.skipped),
            "warnings": list(self.warnings),
        }

    def csv_rows(self) -> list[dict[str, Any]]:
        """One flat row per femur analysed (the cohort CSV): case, side, calibration, frame, regions, aBMD."""
        rows = []
        cal = self.calibration
        for side, fem in self.femurs.items():
            row: dict[str, Any] = {"case": self.case, "side": side, "density_unit": self.unit,
                                   "calibration_method": cal.method, "calibration_slope": round(cal.slope, 5),
                                   "calibration_intercept_hu": round(cal.intercept, 3)}
            frame = fem.frame.to_dict()
            for key in ("head_diameter_mm", "neck_shaft_angle_deg", "neck_length_mm", "neck_width_mm",
                        "axis_length_mm", "head_residual_mm"):
                row[key] = frame[key]
            for name, dens in fem.densities.items():
                for key, value in dens.to_dict().items():
                    if key not in ("region", "unit"):
                        row[f"{name}_{key}"] = value
            for name, a in fem.areal.items():
                for key, value in a.to_dict().items():
                    if key != "region":
                        row[f"dxa_{name}_{key}"] = value
            row["warnings"] = "; ".join(fem.warnings + self.warnings)
            rows.append(row)
        return rows


def choose_calibration(scan: sitk.Image, *, phantom: PhantomSpec | str | os.PathLike[str] | None,
                       calibration: DensityCalibration | None = None
                       ) -> tuple[DensityCalibration, CalibrationResult | None, list[str]]:
    """The calibration of a scan: the caller's, the phantom's, or (no phantom) the internal one, flagged.

    Parameters
    ----------
    scan : SimpleITK.Image
        CT [HU].
    phantom : PhantomSpec or str or PathLike or None
        The phantom to look for (spec, preset name such as ``mindways_model3``, or JSON file); ``None`` or
        ``"none"``: no phantom, calibrate internally.
    calibration : DensityCalibration, optional
        Use this one (e.g. :func:`femurseg.qct.user_calibration`); no search.

    Returns
    -------
    (DensityCalibration, CalibrationResult or None, list of str)
        The calibration, the phantom search made (if any) and warnings that say what was done.
    """
    if calibration is not None:
        return calibration, None, list(calibration.warnings)
    if phantom is None or (isinstance(phantom, str) and phantom.lower() == "none"):
        cal = calibrate_internal(scan)
        return cal, None, ["no calibration phantom requested: phantomless (internal) calibration from air, fat "
                           "and muscle; densities are estimates"] + list(cal.warnings)
    result = calibrate(scan, phantom=phantom)
    if result.found and result.calibration is not None:
        return result.calibration, result, list(result.warnings)
    cal = calibrate_internal(scan)
    return cal, result, [f"calibration phantom not found ({result.reason}); phantomless (internal) calibration "
                         "used instead: densities are estimates"] + list(cal.warnings)


def _side_labels(mask: sitk.Image, grid: Grid, what: str) -> np.ndarray:
    """The mask as side labels (0, 1 right, 2 left); a map marking both femurs with 1 is split by side."""
    labels = array_of(mask)
    values = set(np.unique(labels).tolist())
    if not values <= {0, RIGHT_FEMUR, LEFT_FEMUR}:
        raise InputError(f"{what}: labels {sorted(values - {0, 1, 2})} are not femurseg's femur labels (1 right, "
                         "2 left femur); give the mask femurseg segment wrote, or relabel")
    if unsided_two_femurs(labels, grid):
        log.info("%s marks both femurs with 1: split by side", what)
        return split_femur_by_side(labels > 0, grid)
    return labels.astype(np.uint8, copy=False)


def _box(mask_zyx: np.ndarray, grid: Grid) -> tuple[slice, slice, slice]:
    """The mask's bounding box grown by :data:`_BOX_MARGIN_MM`, clipped to the array."""
    idx = np.argwhere(mask_zyx)
    pad = np.ceil(_BOX_MARGIN_MM / np.asarray(grid.spacing_zyx)).astype(int)
    lo = np.maximum(idx.min(axis=0) - pad, 0)
    hi = np.minimum(idx.max(axis=0) + pad + 1, grid.shape_zyx)
    return tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))  # type: ignore[return-value]


def _plausibility(dens: dict[str, RegionDensity], unit: str) -> list[str]:
    """Warnings for densities a right calibration and mask do not give."""
    out = []
    total = dens.get("total_hip")
    if total is not None and math.isfinite(total.integral_vbmd):
        lo, hi = PLAUSIBLE_VBMD
        if not lo <= total.integral_vbmd <= hi:
            out.append(f"total hip integral vBMD {total.integral_vbmd:.0f} {unit} is outside {lo:.0f}–{hi:.0f}: "
                       "check the calibration and the mask")
    return out


def analyse_femur(hu_zyx: np.ndarray, mask_zyx: np.ndarray, grid: Grid, side: str, *,
                  calibration: DensityCalibration, regions: RegionOptions | None = None,
                  compartments: CompartmentOptions | None = None) -> FemurAnalysis:
    """Analyse one femur given its CT values and mask on one grid (e.g. the femur's box).

    Parameters
    ----------
    hu_zyx : (Z, Y, X) ndarray
        CT values [HU].
    mask_zyx : (Z, Y, X) ndarray of bool
        This femur's mask.
    grid : Grid
        Geometry of both arrays.
    side : str
        ``"right"`` or ``"left"``.
    calibration : DensityCalibration
        HU → mg/cm³ of its material.
    regions, compartments : optional
        Region and compartment settings.

    Returns
    -------
    FemurAnalysis

    Raises
    ------
    InputError
        The mask holds no recognisable proximal femur (no head, say).
    """
    frame = femur_frame(mask_zyx, grid, side)
    density = calibration.density(hu_zyx).astype(np.float32)
    codes = region_labels(mask_zyx, grid, frame, regions)
    parts = bmd_compartments(mask_zyx, grid, density, compartments)
    dens = region_densities(density, mask_zyx, codes, grid, unit=calibration.unit, compartments_zyx=parts)
    projection = project_dxa(density, mask_zyx, codes, grid, frame, density_unit=calibration.unit)
    areal = areal_bmd(projection)
    warnings = _plausibility(dens, calibration.unit)
    if not math.isfinite(frame.neck_shaft_angle_deg):
        warnings.append(f"no neck-shaft angle: the shaft axis rests on {frame.shaft_length_mm:.0f} mm of shaft, it "
                        f"needs {MIN_NSA_SHAFT_MM:.0f} mm: about 5 cm of femur under the lesser trochanter, in the scan and "
                        "in the mask (femurseg segment --extent full)")
    return FemurAnalysis(side=side, frame=frame, densities=dens, areal=areal, projection=projection, grid=grid,
                         hu_zyx=hu_zyx, mask_zyx=mask_zyx, regions_zyx=codes, compartments_zyx=parts,
                         warnings=warnings)


def analyse_scan(scan: sitk.Image, mask: sitk.Image, *, phantom: PhantomSpec | str | os.PathLike[str] | None =
                 "mindways_model3", calibration: DensityCalibration | None = None, case: str = "",
                 mask_name: str = "the mask", regions: RegionOptions | None = None,
                 compartments: CompartmentOptions | None = None) -> QCTAnalysis:
    """Calibrate a scan and analyse each femur of its mask.

    Parameters
    ----------
    scan : SimpleITK.Image
        CT [HU].
    mask : SimpleITK.Image
        Femur labels on the scan's grid (1 right, 2 left femur).
    phantom : PhantomSpec or str or PathLike or None
        The calibration phantom to find (see :func:`choose_calibration`); ``None``/``"none"``: phantomless.
    calibration : DensityCalibration, optional
        A calibration to use instead of any search.
    case : str
        Name of the scan in the results.
    mask_name : str
        How errors name the mask (its path).
    regions, compartments : optional
        Region and compartment settings.

    Returns
    -------
    QCTAnalysis

    Raises
    ------
    InputError
        Mask not on the scan's grid, labels that are not femur sides, or no femur that can be analysed.
    """
    require_same_grid(mask, scan, what=mask_name)
    grid = grid_of(scan)
    labels = _side_labels(mask, grid, mask_name)
    cal, search, warnings = choose_calibration(scan, phantom=phantom, calibration=calibration)
    hu_all = sitk.GetArrayViewFromImage(scan)
    femurs: dict[str, FemurAnalysis] = {}
    skipped: dict[str, str] = {}
    for side, value in SIDE_LABELS.items():
        fem = labels == value
        if not fem.any():
            continue
        box = _box(fem, grid)
        sub = grid.crop(tuple(s.start for s in box), tuple(s.stop for s in box))  # type: ignore[arg-type]
        try:
            femurs[side] = analyse_femur(np.asarray(hu_all[box], dtype=np.float32), fem[box], sub, side,
                                         calibration=cal, regions=regions, compartments=compartments)
        except InputError as err:
            skipped[side] = str(err)
    if not femurs:
        why = "; ".join(f"{s}: {r}" for s, r in skipped.items()) or "it holds no femur label (1 right, 2 left)"
        raise InputError(f"{mask_name}: no femur to analyse ({why})")
    return QCTAnalysis(case=case, calibration=cal, calibration_search=search, femurs=femurs, skipped=skipped,
                       warnings=warnings)
