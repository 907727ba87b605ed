"""One case of the femurseg phantom generator: its truth (sigma_ct, beta_ct) recovered, whole and cut by the view."""

from __future__ import annotations

import pytest
import SimpleITK as sitk
from scipy import ndimage

from femurseg.conventions import TISSUES
from femurseg.phantom import PhantomOptions, generate
from femurseg.qct.calibration import calibrate, calibrate_internal, mindways_model3


@pytest.fixture(scope="module")
def case():
    # A small, coarse case (256² at 1.6 mm, 3 mm slices): the whole phantom in view, a few seconds to make.
    return generate(21, options=PhantomOptions(matrix=256, spacing_xyz=(1.6, 1.6, 3.0), calibration_phantom=True,
                                               recon_circle=False))


def _certificate(facts):
    return mindways_model3(k2hpo4=[facts[f"rod_{n}_k2hpo4_mg_cm3"] for n in "ABCDE"],
                           water=[facts[f"rod_{n}_water_mg_cm3"] for n in "ABCDE"])


def _rod_columns(case) -> list[float]:
    """The true rods' x indices (middle slice of the tissue map)."""
    tissues = sitk.GetArrayViewFromImage(case.tissues)
    rods, n = ndimage.label(tissues[tissues.shape[0] // 2] == TISSUES["calibration_rod"])
    return sorted(c[1] for c in ndimage.center_of_mass(rods > 0, rods, range(1, n + 1)))


def test_generator_truth_is_recovered(case) -> None:
    facts = case.facts
    result = calibrate(case.scan, phantom=_certificate(facts))
    assert result.found and result.search.n_rods == 5 and not result.warnings
    cal = result.calibration
    assert cal.slope == pytest.approx(facts["sigma_ct"], rel=0.01)
    assert cal.sigma_ref == pytest.approx(facts["sigma_ref"], rel=0.01)
    assert cal.beta_ref == pytest.approx(facts["beta_ref"], rel=0.01)
    assert abs(cal.intercept - facts["beta_ct"]) < 1.0  # [HU]; β_CT is near 0, so compare in HU
    assert cal.r_squared >= 0.99


def test_generator_case_cut_by_the_view(case) -> None:
    cols = _rod_columns(case)
    assert len(cols) == 5
    cut = case.scan[int((cols[0] + cols[1]) / 2):, :, :]  # rod A's column falls outside
    result = calibrate(cut, phantom=_certificate(case.facts))
    assert result.found and result.search.missing == ("A",) and result.search.n_rods == 4
    assert any("outside the field of view" in w for w in result.warnings)
    assert result.calibration.slope == pytest.approx(case.facts["sigma_ct"], rel=0.01)


def test_generator_case_internal_calibration_is_flagged(case) -> None:
    cal = calibrate_internal(case.scan)
    assert cal.method == "internal" and {t.name for t in cal.tissues} == {"air", "fat", "muscle"}
    muscle = next(t for t in cal.tissues if t.name == "muscle")
    assert muscle.hu == pytest.approx(case.facts["muscle_hu"], abs=3.0)
