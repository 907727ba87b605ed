"""What calibration returns: measured rods and tissues, the calibration line, the phantom search's outcome.

Every density here carries its material (:class:`~femurseg.qct.units.Material`): a calibration maps HU to
mg/cm³ of that material and nothing else.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from femurseg.errors import InputError
from femurseg.qct.units import Material

__all__ = ["RodMeasurement", "TissueSample", "DensityCalibration", "PhantomSearch", "CalibrationResult"]

#: How a calibration was obtained.
METHODS: tuple[str, ...] = ("phantom", "internal", "user")


@dataclass(frozen=True)
class RodMeasurement:
    """One calibration rod found in a scan and measured.

    Attributes
    ----------
    name : str
        The rod's certificate name (``"A"`` … ``"E"`` for a Mindways phantom).
    density : float
        Certificate density [mg/cm³ of ``material``].
    water_density : float or None
        Certificate water-equivalent density [mg/cm³] (two-component phantoms).
    material : Material
        The material of ``density``.
    hu : float
        Mean CT value inside the rod, eroded away from its edge, averaged over slices after dropping slices far
        from the median slice [HU].
    hu_sd : float
        Standard deviation of the voxels inside the eroded rod, pooled over slices [HU] (mostly image noise).
    n_slices : int
        Slices the rod was measured on.
    n_voxels : int
        Voxels measured, over all those slices.
    centre_xyz : (3,) tuple of float
        Rod axis at the middle measured slice [mm, LPS].
    radius_mm : float
        The rod's radius as found [mm] (measured inside ``radius_mm`` minus the erosion).
    contrast : bool
        Whether the rod stood out from its surroundings (False: placed by the row's pitch, e.g. a rod whose HU
        equals the phantom body's).
    residual_hu : float
        Measured minus fitted value of the calibration model [HU] (NaN before a fit).
    """

    name: str
    density: float
    water_density: float | None
    material: Material
    hu: float
    hu_sd: float
    n_slices: int
    n_voxels: int
    centre_xyz: tuple[float, float, float]
    radius_mm: float
    contrast: bool = True
    residual_hu: float = math.nan

    def to_dict(self) -> dict[str, Any]:
        """JSON-able, with the density's unit spelled out."""
        d = asdict(self)
        d["material"] = self.material.value
        d["unit"] = self.material.unit
        d["centre_xyz"] = list(self.centre_xyz)
        return d


@dataclass(frozen=True)
class TissueSample:
    """A reference tissue sampled in the scan for a phantomless (internal) calibration.

    Attributes
    ----------
    name : str
        ``"air"``, ``"fat"``, ``"muscle"`` or ``"blood"``.
    hu : float
        Its typical CT value in this scan [HU].
    hu_sd : float
        Spread of the sampled values [HU].
    n_voxels : int
        Voxels sampled (0 when the value was given by the user).
    reference_hu : float
        The value it has on the reference scanner the nominal calibration belongs to [HU].
    residual_hu : float
        Measured minus fitted value [HU] (NaN before a fit).
    """

    name: str
    hu: float
    hu_sd: float
    n_voxels: int
    reference_hu: float
    residual_hu: float = math.nan


@dataclass(frozen=True)
class DensityCalibration:
    """A CT density calibration: ``HU = intercept + slope · ρ``, ρ in mg/cm³ of ``material``.

    For a Mindways phantom, ``slope`` is σ_CT and ``intercept`` β_CT of the two-component model (``sigma_ref`` and
    ``beta_ref`` hold the rods' fit they derive from).

    Attributes
    ----------
    slope : float
        [HU per mg/cm³ of ``material``].
    intercept : float
        CT value of zero density [HU].
    material : Material
        The density's material; :attr:`unit` spells it out.
    method : {"phantom", "internal", "user"}
        Synchronous phantom in the scan, phantomless from reference tissues, or values given by the user.
    model : str
        ``"two-component"``, ``"linear"``, ``"internal"`` or ``"user"``.
    r_squared : float
        Coefficient of determination of the fit (NaN where there is no fit).
    sigma_ref, beta_ref : float or None
        Two-component model only: the rods' fit ``HU − ρ_water = σ_ref·ρ + β_ref`` [HU per mg/cm³, HU].
    phantom : str
        The phantom's name (phantom method).
    rods : tuple of RodMeasurement
        The rods fitted, with their residuals.
    tissues : tuple of TissueSample
        The reference tissues fitted (internal method).
    warnings : tuple of str
        Everything a reader of the result should know (rods missing, assumptions).
    """

    slope: float
    intercept: float
    material: Material
    method: str
    model: str
    r_squared: float = math.nan
    sigma_ref: float | None = None
    beta_ref: float | None = None
    phantom: str = ""
    rods: tuple[RodMeasurement, ...] = ()
    tissues: tuple[TissueSample, ...] = ()
    warnings: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "material", Material(self.material))
        if self.method not in METHODS:
            raise InputError(f"method must be one of {METHODS}, not {self.method!r}")
        if not (math.isfinite(self.slope) and self.slope > 0 and math.isfinite(self.intercept)):
            raise InputError(f"a calibration needs a finite positive slope and finite intercept, "
                             f"not {self.slope}, {self.intercept}")

    @property
    def unit(self) -> str:
        """The unit of the densities this calibration gives, e.g. ``"mg/cm³ K2HPO4"``."""
        return self.material.unit

    def density(self, hu: Any) -> np.ndarray:
        """Density [mg/cm³ of :attr:`material`] of CT values ``hu`` [HU]; float64, same shape."""
        return (np.asarray(hu, dtype=np.float64) - self.intercept) / self.slope

    def hu(self, density: Any) -> np.ndarray:
        """CT value [HU] of density ``density`` [mg/cm³ of :attr:`material`]; float64, same shape."""
        return self.intercept + self.slope * np.asarray(density, dtype=np.float64)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able facts, with the unit spelled out."""
        return {
            "slope_hu_per_mg_cm3": self.slope, "intercept_hu": self.intercept, "material": self.material.value,
            "unit": self.unit, "method": self.method, "model": self.model, "r_squared": self.r_squared,
            "sigma_ref": self.sigma_ref, "beta_ref": self.beta_ref, "phantom": self.phantom,
            "rods": [r.to_dict() for r in self.rods], "tissues": [asdict(t) for t in self.tissues],
            "warnings": list(self.warnings),
        }


@dataclass(frozen=True)
class PhantomSearch:
    """The outcome of looking for a calibration phantom's rods in a scan.

    Attributes
    ----------
    found : bool
        Whether enough rods were found and identified to calibrate.
    reason : str
        Why not, in one sentence (empty when found).
    phantom : str
        The phantom looked for.
    rods : tuple of RodMeasurement
        The rods found, identified and measured, in certificate order.
    missing : tuple of str
        Certificate rods not measured (outside the field of view, or not rod-like where they should be).
    pitch_mm : float
        Centre-to-centre distance of neighbouring rods [mm] (NaN when no row was found).
    row_direction_xyz : (3,) tuple of float
        Unit vector along the row, from the certificate's first rod to its last [LPS].
    slices : (2,) tuple of int
        First and last slice (array z index) the rods were measured on.
    warnings : tuple of str
        Things to know (fewer rods than the phantom has, ambiguous identification, ...).
    """

    found: bool
    reason: str
    phantom: str
    rods: tuple[RodMeasurement, ...] = ()
    missing: tuple[str, ...] = ()
    pitch_mm: float = math.nan
    row_direction_xyz: tuple[float, float, float] = (math.nan, math.nan, math.nan)
    slices: tuple[int, int] = (-1, -1)
    warnings: tuple[str, ...] = ()

    @property
    def n_rods(self) -> int:
        """How many rods were found and measured."""
        return len(self.rods)


@dataclass(frozen=True)
class CalibrationResult:
    """What :func:`~femurseg.qct.calibration.calibrate` returns.

    Attributes
    ----------
    found : bool
        Whether a phantom was found and fitted; when False, ``calibration`` is None and ``reason`` says why.
    reason : str
        Why no calibration (empty when found).
    calibration : DensityCalibration or None
        The calibration (never a guess: None when no phantom was found).
    search : PhantomSearch
        The rods found and measured.
    warnings : tuple of str
        The search's and the fit's warnings.
    """

    found: bool
    reason: str
    calibration: DensityCalibration | None
    search: PhantomSearch
    warnings: tuple[str, ...] = field(default=())
