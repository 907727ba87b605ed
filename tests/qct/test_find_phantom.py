"""Finding the phantom's rods in synthetic scans: any orientation and place, cut by the field of view, none."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import SimpleITK as sitk
from helpers.qct_phantom import SynthPhantom, synth_scan

from femurseg.qct.calibration import SearchOptions, calibrate, find_phantom
from femurseg.qct.phantoms import mindways_model3, phantom_spec

BASE = SynthPhantom(sigma_ref=1.37, beta_ref=-1004.0, angle_deg=17.0, seed=3)
TRUE_SLOPE = 1.37 - 0.2174
TRUE_INTERCEPT = -1004.0 + 999.6


def _check_truth(result, n_rods: int, intercept_hu: float = 2.0) -> None:
    assert result.found, result.reason
    cal = result.calibration
    assert result.search.n_rods == n_rods == len(cal.rods)
    assert cal.slope == pytest.approx(TRUE_SLOPE, rel=0.01)
    assert abs(cal.intercept - TRUE_INTERCEPT) < intercept_hu  # [HU]
    assert cal.r_squared >= 0.99
    assert all(abs(r.residual_hu) < intercept_hu for r in cal.rods)


def test_finds_measures_and_fits_all_five_rods(mindways_scan) -> None:
    scan, p = mindways_scan
    result = calibrate(scan)
    _check_truth(result, 5)
    rods = result.search.rods
    assert [r.name for r in rods] == ["A", "B", "C", "D", "E"]
    assert np.allclose([r.hu for r in rods], p.true_rods_hu(), atol=1.5)
    assert all(r.n_slices == 20 and 10.0 < r.hu_sd < 20.0 and r.n_voxels > 1000 for r in rods)
    assert all(abs(r.radius_mm - 8.0) < 0.5 for r in rods)
    assert result.search.pitch_mm == pytest.approx(54.0, abs=0.5)
    # The row runs from A to E at 17° from +x towards +y (LPS, identity direction).
    u = np.radians(17.0)
    assert np.allclose(result.search.row_direction_xyz, (np.cos(u), np.sin(u), 0.0), atol=0.01)
    c = rods[2].centre_xyz
    assert np.allclose(c[:2], (128.0, 145.0), atol=0.7)  # [mm, LPS]
    assert not result.warnings and result.calibration.unit == "mg/cm³ K2HPO4"


def test_rod_without_contrast_is_placed_by_the_pitch() -> None:
    # Rod B reads exactly as the phantom's body: it cannot be seen, only placed between A and C.
    p = replace(BASE, block_hu=float(BASE.true_rods_hu()[1]))
    result = calibrate(synth_scan(p))
    _check_truth(result, 5)
    b = result.search.rods[1]
    assert b.name == "B" and not b.contrast and abs(b.hu - p.true_rods_hu()[1]) < 1.5


@pytest.mark.parametrize("angle", [-40.0, 90.0 + 3.0, 197.0])
def test_any_orientation(angle: float) -> None:
    p = replace(BASE, angle_deg=angle, shape_zyx=(12, 256, 256), centre_yx_mm=(128.0, 128.0), pitch_mm=48.0)
    result = calibrate(synth_scan(p))
    _check_truth(result, 5)
    u = np.radians(angle)
    assert np.allclose(result.search.row_direction_xyz[:2], (np.cos(u), np.sin(u)), atol=0.01)


def test_rods_outside_the_field_of_view_fit_fewer_with_a_warning() -> None:
    result = calibrate(synth_scan(replace(BASE, centre_yx_mm=(150.0, 60.0))))
    _check_truth(result, 3)
    assert result.search.missing == ("A", "B")
    assert [r.name for r in result.search.rods] == ["C", "D", "E"]
    assert any("outside the field of view" in w and "3 of 5" in w for w in result.warnings)


def test_reconstruction_circle_padding_is_outside_the_view() -> None:
    p = replace(BASE, pad_outside_circle=True, shape_zyx=(12, 256, 256), centre_yx_mm=(200.0, 128.0), angle_deg=0.0)
    result = calibrate(synth_scan(p))
    assert result.found, result.reason
    assert set(result.search.missing) == {"A", "E"}  # cut by the circle at the row's ends
    assert result.calibration.slope == pytest.approx(TRUE_SLOPE, rel=0.01)


def test_too_few_rods_is_said_not_guessed() -> None:
    result = calibrate(synth_scan(replace(BASE, centre_yx_mm=(150.0, -10.0))))
    assert not result.found and result.calibration is None
    assert "only 2 rod(s)" in result.reason and result.search.n_rods == 2
    relaxed = calibrate(synth_scan(replace(BASE, centre_yx_mm=(150.0, -10.0))), options=SearchOptions(min_rods=2))
    assert relaxed.found and any("only 2 rods" in w for w in relaxed.warnings)


def test_no_phantom_is_said_clearly() -> None:
    result = calibrate(synth_scan(replace(BASE, phantom=False)))
    assert not result.found and result.calibration is None
    assert result.reason.startswith("no calibration phantom") and result.search.n_rods == 0


def test_bright_vessels_in_a_row_are_not_a_phantom() -> None:
    vessels = ((60.0, 80.0, 6.0, 300.0), (60.0, 134.0, 6.0, 250.0), (60.0, 188.0, 6.0, 350.0))
    result = calibrate(synth_scan(replace(BASE, phantom=False, vessels=vessels)))
    assert not result.found and "no mindways_model3 phantom" in result.reason
    assert result.search.n_rods == 0


def test_hydroxyapatite_phantom_and_the_wrong_preset() -> None:
    scan = synth_scan(replace(BASE, rods_hu=(2.0, 97.0, 192.0), pitch_mm=40.0, block_hu=5.0))
    result = calibrate(scan, phantom="qrm_bdc")
    assert result.found, result.reason
    cal = result.calibration
    assert cal.unit == "mg/cm³ HA" and cal.model == "linear"
    assert cal.slope == pytest.approx(0.95, rel=0.01) and abs(cal.intercept - 2.0) < 1.5
    # The same scan is no Mindways phantom: said, not forced.
    wrong = calibrate(scan, phantom=mindways_model3())
    assert not wrong.found and wrong.calibration is None


def test_stacked_inserts_cannot_be_searched(mindways_scan) -> None:
    result = find_phantom(mindways_scan[0], phantom=phantom_spec("qrm_esp"))
    assert not result.found and "cannot be found automatically" in result.reason


def test_noisy_thick_scan_and_oblique_spacing() -> None:
    p = replace(BASE, noise_hu=40.0, shape_zyx=(6, 160, 200), spacing_zyx=(3.0, 1.3, 1.3),
                centre_yx_mm=(150.0, 130.0), pitch_mm=52.0)
    result = calibrate(synth_scan(p))
    _check_truth(result, 5, intercept_hu=4.0)  # 6 slices of 40 HU noise: rod means to about ±1.5 HU


def test_world_positions_follow_the_image_geometry(mindways_scan) -> None:
    scan, _ = mindways_scan
    moved = sitk.Image(scan)
    moved.SetOrigin((-100.0, 50.0, 300.0))
    base = calibrate(scan).search.rods
    shifted = calibrate(moved).search.rods
    for a, b in zip(base, shifted):
        assert np.allclose(np.subtract(b.centre_xyz, a.centre_xyz), (-100.0, 50.0, 300.0), atol=1e-6)
