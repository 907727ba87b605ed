"""The phantom's subjects: ranges, determinism, and the density trends of ageing and the menopause."""

from __future__ import annotations

import numpy as np
import pytest

from femurseg.errors import InputError
from femurseg.phantom.body import sample_subject


def _subjects(n: int, **kw) -> list:
    return [sample_subject(np.random.default_rng(s), **kw) for s in range(n)]


def test_subject_ranges() -> None:
    subs = _subjects(400)
    assert {s.sex for s in subs} == {"F", "M"}
    assert 0.4 < np.mean([s.sex == "F" for s in subs]) < 0.6
    ages = np.array([s.age for s in subs])
    assert ages.min() >= 20 and ages.max() <= 90 and ages.max() - ages.min() > 60
    fat = np.array([s.fat_mm for s in subs])
    assert fat.min() >= 5 and fat.max() <= 60 and np.percentile(fat, 90) > 30 and np.percentile(fat, 10) < 15
    vbmd = np.array([s.trabecular_vbmd for s in subs])
    assert vbmd.min() >= 45 and vbmd.max() <= 260 and vbmd.min() < 90 and vbmd.max() > 220
    for s in subs:
        assert -120 <= s.fat_hu <= -80 and 35 <= s.muscle_hu <= 60 and -50 <= s.marrow_hu <= 20
        assert 980 <= s.cortical_density <= 1250


def test_density_falls_with_age_and_faster_in_women_after_menopause() -> None:
    young_f = np.mean([s.trabecular_vbmd for s in _subjects(150, sex="F", age=30.0)])
    old_f = np.mean([s.trabecular_vbmd for s in _subjects(150, sex="F", age=80.0)])
    old_m = np.mean([s.trabecular_vbmd for s in _subjects(150, sex="M", age=80.0)])
    assert young_f - old_f > 60
    assert old_m - old_f > 25


def test_same_seed_same_subject_and_overrides() -> None:
    a = sample_subject(np.random.default_rng(9))
    assert a == sample_subject(np.random.default_rng(9))
    assert a != sample_subject(np.random.default_rng(10))
    f = sample_subject(np.random.default_rng(9), sex="F", age=71.0)
    assert f.sex == "F" and f.age == 71.0
    with pytest.raises(InputError, match="sex"):
        sample_subject(np.random.default_rng(0), sex="X")
    with pytest.raises(InputError, match="age"):
        sample_subject(np.random.default_rng(0), age=5.0)
