"""Phantomless (internal) calibration from air, fat and muscle."""

from __future__ import annotations


import pytest
import SimpleITK as sitk
from helpers.qct_phantom import SynthPhantom, synth_scan

from femurseg.errors import InputError
from femurseg.qct.calibration import InternalOptions, calibrate_internal, sample_reference_tissues

BODY = SynthPhantom(phantom=False, noise_hu=12.0, shape_zyx=(8, 200, 256), seed=5)


def test_tissues_are_sampled_where_they_are() -> None:
    tissues = {t.name: t for t in sample_reference_tissues(synth_scan(BODY))}
    assert set(tissues) == {"air", "fat", "muscle"}
    assert tissues["air"].hu == pytest.approx(-1000.0, abs=2.0)
    assert tissues["fat"].hu == pytest.approx(-100.0, abs=2.0)
    assert tissues["muscle"].hu == pytest.approx(50.0, abs=2.0)
    assert all(t.n_voxels > 1000 for t in tissues.values())


def test_reference_scan_gives_the_nominal_calibration_flagged_internal() -> None:
    cal = calibrate_internal(synth_scan(BODY))
    assert cal.method == "internal" and cal.unit == "mg/cm³ K2HPO4"
    assert cal.slope == pytest.approx(1.22, rel=0.005) and abs(cal.intercept) < 2.0
    assert cal.r_squared > 0.9999
    assert any("phantomless" in w and "not measured" in w for w in cal.warnings)


def test_a_shifted_hu_scale_moves_the_intercept() -> None:
    shifted = sitk.Cast(synth_scan(BODY), sitk.sitkFloat32) + 40.0
    cal = calibrate_internal(shifted)
    assert cal.intercept == pytest.approx(40.0, abs=2.0)
    assert cal.slope == pytest.approx(1.22, rel=0.005)
    assert any("differs from the reference" in w for w in cal.warnings)


def test_excluded_voxels_are_not_sampled() -> None:
    scan = synth_scan(BODY)
    everything = sitk.Image(scan.GetSize(), sitk.sitkUInt8) + 1
    everything.CopyInformation(scan)
    assert sample_reference_tissues(scan, exclude=everything) == ()


def test_measured_values_and_ha_nominal() -> None:
    opts = InternalOptions(nominal_slope=0.8, material="HA")
    cal = calibrate_internal(samples={"air": -990.0, "blood": 50.0}, options=opts)
    assert cal.unit == "mg/cm³ HA" and cal.tissues[1].name == "blood"
    assert cal.intercept == pytest.approx(10.0 - 0.0, abs=1e-9)  # gain 1: the offset is the water level's
    with pytest.raises(InputError, match="no reference value"):
        calibrate_internal(samples={"air": -1000.0, "bone": 700.0})
    with pytest.raises(InputError, match="at least 2"):
        calibrate_internal(samples={"air": -1000.0})
    with pytest.raises(InputError):
        calibrate_internal()
