"""Fitting: the Mindways two-component model against the phantom generator's own truth, lines, plausibility."""

from __future__ import annotations

import math

import numpy as np
import pytest

from femurseg.errors import InputError
from femurseg.phantom.ct import Calibration
from femurseg.qct.calibration import fit_calibration
from femurseg.qct.fit import Plausible, fit_line, fit_rods
from femurseg.qct.phantoms import mindways_model3
from femurseg.qct.results import RodMeasurement
from femurseg.qct.units import Material


def _rods(spec, hu):
    nan3 = (math.nan,) * 3
    return [RodMeasurement(r.name, r.density, r.water_density, spec.material, float(h), 10.0, 20, 2000, nan3, 8.0)
            for r, h in zip(spec.rods, hu)]


def test_two_component_recovers_the_generators_calibration_exactly() -> None:
    truth = Calibration(rod_k2hpo4=(-51.0, -54.0, 59.5, 156.0, 377.0), rod_water=(1013.0, 1055.0, 1104.0, 1121.0, 921.0),
                        sigma_ref=1.47, beta_ref=-996.5)
    spec = mindways_model3(k2hpo4=truth.rod_k2hpo4, water=truth.rod_water)
    cal = fit_rods(_rods(spec, truth.rod_hu()), phantom=spec)
    assert cal.sigma_ref == pytest.approx(truth.sigma_ref, abs=1e-9)
    assert cal.beta_ref == pytest.approx(truth.beta_ref, abs=1e-6)
    assert cal.slope == pytest.approx(truth.sigma_ct, abs=1e-9)  # σ_CT = σ_ref − 0.2174
    assert cal.intercept == pytest.approx(truth.beta_ct, abs=1e-6)  # β_CT = β_ref + 999.6
    assert cal.r_squared == pytest.approx(1.0) and max(abs(r.residual_hu) for r in cal.rods) < 1e-6
    assert cal.unit == "mg/cm³ K2HPO4" and cal.method == "phantom" and not cal.warnings
    # Bone of 150 mg/cm³ K2HPO4 reads as the generator renders it, and back.
    assert float(cal.density(truth.hu_of_density(150.0))) == pytest.approx(150.0, abs=1e-6)


def test_residuals_name_the_odd_rod() -> None:
    spec = mindways_model3()
    hu = Calibration(sigma_ref=1.4, beta_ref=-1000.0).rod_hu().copy()
    hu[3] += 6.0
    cal = fit_rods(_rods(spec, hu), phantom=spec)
    worst = max(cal.rods, key=lambda r: abs(r.residual_hu))
    assert worst.name == "D" and worst.residual_hu > 3.0
    assert 0.99 < cal.r_squared < 1.0


def test_hand_measured_ha_rods_fit_a_line() -> None:
    cal = fit_calibration(hu_by_rod={"HA50": 48.0, "HA100": 96.0, "HA200": 192.0}, phantom="qrm_esp")
    assert cal.slope == pytest.approx(0.96) and cal.intercept == pytest.approx(0.0, abs=1e-9)
    assert cal.material is Material.HA and cal.model == "linear"
    assert float(cal.density(144.0)) == pytest.approx(150.0)
    with pytest.raises(InputError, match="no rod"):
        fit_calibration(hu_by_rod={"HA75": 70.0, "HA100": 96.0}, phantom="qrm_esp")


def test_two_rods_and_implausible_fits_are_flagged() -> None:
    cal = fit_calibration(hu_by_rod={"HA0": 0.0, "HA200": 200.0}, phantom="qrm_bdc")
    assert any("only 2 rods" in w for w in cal.warnings)
    odd = fit_calibration(hu_by_rod={"HA0": 400.0, "HA100": 500.0, "HA200": 600.0}, phantom="qrm_bdc")
    assert any("implausible" in w and "intercept" in w for w in odd.warnings)
    assert "σ_ref" in Plausible().check(fit_line([0, 100], [-1000, -1020]), "two-component")


def test_units_cannot_be_mixed() -> None:
    spec = mindways_model3()
    ha_rods = [RodMeasurement("A", 0.0, 1000.0, Material.HA, 0.0, 1.0, 1, 1, (0.0,) * 3, 8.0),
               RodMeasurement("B", 100.0, 1000.0, Material.HA, 100.0, 1.0, 1, 1, (0.0,) * 3, 8.0)]
    with pytest.raises(InputError, match="material"):
        fit_rods(ha_rods, phantom=spec)


def test_fit_line_needs_spread() -> None:
    f = fit_line(np.array([0.0, 1.0, 2.0]), np.array([1.0, 3.0, 5.0]))
    assert (f.slope, f.intercept, f.r_squared, f.rms) == pytest.approx((2.0, 1.0, 1.0, 0.0))
    with pytest.raises(InputError):
        fit_line([1.0, 1.0], [0.0, 1.0])
