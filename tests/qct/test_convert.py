"""HU → density with a calibration; user-given calibrations; the result's units."""

from __future__ import annotations

import doctest
import importlib

import numpy as np
import pytest
import SimpleITK as sitk

from femurseg.errors import InputError
from femurseg.qct.calibration import DensityCalibration, hu_to_density, user_calibration
from femurseg.qct.units import Material


def test_arrays_scalars_and_round_trip() -> None:
    cal = user_calibration(slope=1.2, intercept=-4.0, material="K2HPO4")
    hu = np.array([[[-4.0, 116.0], [236.0, 356.0]]], dtype=np.int16)
    rho = hu_to_density(hu, calibration=cal)
    assert rho.dtype == np.float32 and rho.shape == hu.shape
    assert np.allclose(rho, [[[0.0, 100.0], [200.0, 300.0]]])
    assert float(hu_to_density(-4.0, calibration=cal)) == 0.0
    assert np.allclose(cal.hu(rho), hu)
    assert cal.method == "user" and cal.unit == "mg/cm³ K2HPO4" and cal.warnings


def test_images_keep_their_geometry_and_name_the_unit() -> None:
    img = sitk.Image(4, 3, 2, sitk.sitkInt16) + 130
    img.SetSpacing((0.7, 0.7, 2.5))
    img.SetOrigin((-10.0, 20.0, 30.0))
    cal = user_calibration(slope=1.25, intercept=5.0, material=Material.HA)
    out = hu_to_density(img, calibration=cal)
    assert out.GetSpacing() == img.GetSpacing() and out.GetOrigin() == img.GetOrigin()
    assert out.GetMetaData("unit") == "mg/cm³ HA"
    assert np.allclose(sitk.GetArrayViewFromImage(out), 100.0)


def test_bad_calibrations_are_refused() -> None:
    with pytest.raises(InputError, match="material"):
        user_calibration(slope=1.0, intercept=0.0, material="calcium")
    with pytest.raises(InputError, match="positive slope"):
        user_calibration(slope=0.0, intercept=0.0, material="HA")
    with pytest.raises(InputError, match="DensityCalibration"):
        hu_to_density(np.zeros(3), calibration=(1.0, 0.0))  # type: ignore[arg-type]
    with pytest.raises(InputError, match="method"):
        DensityCalibration(slope=1.0, intercept=0.0, material=Material.HA, method="guess", model="x")


def test_results_serialise_with_units() -> None:
    d = user_calibration(slope=1.1, intercept=2.0, material="HA").to_dict()
    assert d["unit"] == "mg/cm³ HA" and d["material"] == "HA" and d["method"] == "user"


@pytest.mark.parametrize("module", ["units", "phantoms", "fit", "internal", "calibration"])
def test_docstring_examples_run(module: str) -> None:
    mod = importlib.import_module(f"femurseg.qct.{module}")
    failures, _ = doctest.testmod(mod, extraglobs={"np": np}, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert failures == 0
