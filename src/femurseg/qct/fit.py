"""Fitting a calibration to measured rods: the Mindways two-component model and a plain line.

Two-component model (Mindways QCT Pro; as documented by the open-source Bonelab Ogo tool).  A rod of K2HPO4
density ρ_K and water-equivalent density ρ_W reads ``HU = ρ_W + σ_ref·ρ_K + β_ref``; least squares of
``HU − ρ_W`` on ``ρ_K`` over the rods gives σ_ref and β_ref.  Bone is modelled as K2HPO4 in water-equivalent
tissue whose water-equivalent density falls as mineral displaces it, ``ρ_W = 999.6 − 0.2174·ρ_K`` [mg/cm³], so
bone reads ``HU = β_CT + σ_CT·ρ_K`` with ``σ_CT = σ_ref − 0.2174`` and ``β_CT = β_ref + 999.6``.

Linear model (hydroxyapatite phantoms, any one-component phantom): least squares of HU on ρ.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Sequence

import numpy as np

from femurseg.errors import InputError
from femurseg.qct.phantoms import PhantomSpec
from femurseg.qct.results import DensityCalibration, RodMeasurement

__all__ = ["LineFit", "fit_line", "Plausible", "fit_rods", "rods_fit"]


@dataclass(frozen=True)
class LineFit:
    """Least-squares line ``y = slope·x + intercept``.

    Attributes
    ----------
    slope, intercept : float
        The line.
    r_squared : float
        Coefficient of determination (1 − SS_res / SS_tot); NaN when y does not vary.
    residuals : (N,) ndarray of float
        ``y − fitted``.
    """

    slope: float
    intercept: float
    r_squared: float
    residuals: np.ndarray

    @property
    def rms(self) -> float:
        """Root-mean-square residual."""
        return float(np.sqrt(np.mean(self.residuals**2)))


def fit_line(x: Sequence[float], y: Sequence[float]) -> LineFit:
    """Ordinary least-squares line through the points (x, y).

    Examples
    --------
    >>> f = fit_line([0.0, 100.0, 200.0], [2.0, 102.0, 202.0])
    >>> round(f.slope, 6), round(f.intercept, 6), f.r_squared
    (1.0, 2.0, 1.0)
    """
    xa, ya = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if xa.shape != ya.shape or xa.ndim != 1 or xa.size < 2:
        raise InputError(f"a line needs at least 2 points of x and y, got shapes {xa.shape}, {ya.shape}")
    if np.ptp(xa) <= 0:
        raise InputError("the rods' densities are all equal: no line can be fitted")
    slope, intercept = np.polyfit(xa, ya, 1)
    res = ya - (slope * xa + intercept)
    ss_tot = float(np.sum((ya - ya.mean()) ** 2))
    r2 = 1.0 - float(np.sum(res**2)) / ss_tot if ss_tot > 0 else math.nan
    return LineFit(float(slope), float(intercept), r2, res)


@dataclass(frozen=True)
class Plausible:
    """Ranges a calibration must fall in to be believed (a fit outside them means wrong rods or no phantom).

    Attributes
    ----------
    sigma_ref : (2,) tuple of float
        Two-component model: σ_ref [HU per mg/cm³ K2HPO4].
    beta_ref : (2,) tuple of float
        Two-component model: β_ref [HU] (the CT value of zero water-equivalent density: about −1000 on a
        water-calibrated scanner).
    slope : (2,) tuple of float
        Linear model: slope [HU per mg/cm³].
    intercept : (2,) tuple of float
        Linear model: CT value of zero mineral [HU] (about water's).
    max_rms_hu : float
        Largest root-mean-square residual of the rods about the fitted model [HU] (a phantom's rods fit it within
        a few HU; wrong rods or a rod read off the phantom's body do not).
    min_r_squared : float
        Least coefficient of determination of the fit (with 3 rods or more).
    """

    sigma_ref: tuple[float, float] = (0.9, 3.0)
    beta_ref: tuple[float, float] = (-1100.0, -900.0)
    slope: tuple[float, float] = (0.2, 3.0)
    intercept: tuple[float, float] = (-150.0, 150.0)
    max_rms_hu: float = 15.0
    min_r_squared: float = 0.99

    def check(self, fit: LineFit, model: str) -> str:
        """Empty when plausible, else why not."""
        names = ("σ_ref", "β_ref") if model == "two-component" else ("slope", "intercept")
        ranges = (self.sigma_ref, self.beta_ref) if model == "two-component" else (self.slope, self.intercept)
        for name, value, (lo, hi) in zip(names, (fit.slope, fit.intercept), ranges):
            if not lo <= value <= hi:
                return f"{name} = {value:.4g} is outside the plausible {lo:g} to {hi:g}"
        if fit.rms > self.max_rms_hu:
            return f"the rods scatter about the fit by {fit.rms:.1f} HU RMS (at most {self.max_rms_hu:g} expected)"
        if fit.residuals.size >= 3 and not fit.r_squared >= self.min_r_squared:
            return f"R² = {fit.r_squared:.4f} is below {self.min_r_squared:g}"
        return ""


def rods_fit(rods: Sequence[RodMeasurement], phantom: PhantomSpec) -> LineFit:
    """The phantom model's line through measured rods: (ρ, HU − ρ_W) for two-component, (ρ, HU) for linear."""
    x = [r.density for r in rods]
    if phantom.model == "two-component":
        y = [r.hu - float(r.water_density) for r in rods]  # type: ignore[arg-type]
    else:
        y = [r.hu for r in rods]
    return fit_line(x, y)


def fit_rods(rods: Sequence[RodMeasurement], *, phantom: PhantomSpec, warnings: Sequence[str] = (),
             plausible: Plausible | None = None) -> DensityCalibration:
    """Fit the phantom's model to measured rods.

    Parameters
    ----------
    rods : sequence of RodMeasurement
        At least 2 rods with their certificate densities (the phantom's material).
    phantom : PhantomSpec
        Model, material and (two-component) the bone model's constants.
    warnings : sequence of str
        Warnings to carry into the result (from the search).
    plausible : Plausible, optional
        Ranges checked; a fit outside them gets a warning.

    Returns
    -------
    DensityCalibration
        ``method="phantom"``; slope and intercept of bone [HU per mg/cm³, HU]; residuals per rod [HU].
    """
    if len(rods) < 2:
        raise InputError(f"a calibration needs at least 2 rods, got {len(rods)}")
    if any(r.material != phantom.material for r in rods):
        raise InputError(f"rods and phantom {phantom.name!r} differ in material; densities in different units "
                         "cannot be fitted together")
    fit = rods_fit(rods, phantom)
    notes = list(warnings)
    if len(rods) == 2:
        notes.append("only 2 rods: the line passes through both exactly (R² and residuals say nothing)")
    why = (plausible or Plausible()).check(fit, phantom.model)
    if why:
        notes.append(f"implausible calibration: {why}")
    fitted = tuple(replace(r, residual_hu=float(e)) for r, e in zip(rods, fit.residuals))
    common = dict(material=phantom.material, method="phantom", model=phantom.model, r_squared=fit.r_squared,
                  phantom=phantom.name, rods=fitted, warnings=tuple(notes))
    if phantom.model == "two-component":
        return DensityCalibration(slope=fit.slope - phantom.water_displacement,
                                  intercept=fit.intercept + phantom.water_density,
                                  sigma_ref=fit.slope, beta_ref=fit.intercept, **common)  # type: ignore[arg-type]
    return DensityCalibration(slope=fit.slope, intercept=fit.intercept, **common)  # type: ignore[arg-type]
