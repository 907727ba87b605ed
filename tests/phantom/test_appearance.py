"""Random appearance: deterministic per seed, CT-plausible per class, and never a change of label."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from femurseg.conventions import TISSUES
from femurseg.phantom.appearance import CLASS_HU, render_appearance, sample_appearance, smooth_field


def _tissue_block() -> np.ndarray:
    t = np.full((20, 40, 40), TISSUES["fat"], np.uint8)
    t[:, :, :4] = TISSUES["air"]
    t[5:15, 10:30, 10:30] = TISSUES["muscle"]
    t[8:12, 15:25, 15:25] = TISSUES["femur_cortical"]
    t[9:11, 17:23, 17:23] = TISSUES["femur_trabecular"]
    return t


def test_same_seed_same_image_other_seed_other_image() -> None:
    t = _tissue_block()
    a = render_appearance(t, (1.0, 1.0, 1.0), sample_appearance(np.random.default_rng(1)), np.random.default_rng(2))
    b = render_appearance(t, (1.0, 1.0, 1.0), sample_appearance(np.random.default_rng(1)), np.random.default_rng(2))
    c = render_appearance(t, (1.0, 1.0, 1.0), sample_appearance(np.random.default_rng(3)), np.random.default_rng(2))
    assert a.shape == t.shape and a.dtype == np.float32
    np.testing.assert_array_equal(a, b)
    assert np.abs(a - c).max() > 10.0


@pytest.mark.parametrize("seed", range(30))
def test_draws_are_in_range_and_cortex_is_brighter_than_its_interior(seed) -> None:
    d = sample_appearance(np.random.default_rng(seed))
    assert d.mean_hu["femur_cortical"] >= d.mean_hu["femur_trabecular"] + 100.0
    assert d.mean_hu["pelvis_cortical"] >= d.mean_hu["pelvis_trabecular"] + 100.0
    lo, hi = CLASS_HU["femur_trabecular"][0]
    assert lo <= d.mean_hu["femur_trabecular"] <= hi
    assert d.mean_hu["fat"] < d.mean_hu["muscle"]


def test_osteoporotic_heads_are_drawn() -> None:
    """Trabecular femur as dark as soft tissue must occur, or the network never sees an osteoporotic head."""
    means = [sample_appearance(np.random.default_rng(s)).mean_hu["femur_trabecular"] for s in range(200)]
    assert min(means) < 60.0 and max(means) > 300.0


def test_smooth_field_is_standardised_and_has_the_shape() -> None:
    f = smooth_field((17, 33, 29), (3.0, 0.8, 0.8), 20.0, np.random.default_rng(0))
    assert f.shape == (17, 33, 29)
    assert abs(float(f.mean())) < 1e-4 and abs(float(f.std()) - 1.0) < 1e-3


def test_random_appearance_never_changes_a_label() -> None:
    """The same seed in physics and random mode: identical labels and tissues, different images."""
    from femurseg.phantom.generate import PhantomOptions, generate

    base = dict(spacing_xyz=(2.0, 2.0, 3.0), matrix=128, noise_sigma_hu=0.0)
    physics = generate(11, options=PhantomOptions(**base))
    random = generate(11, options=PhantomOptions(**base, appearance="random"))
    np.testing.assert_array_equal(sitk.GetArrayFromImage(physics.labels), sitk.GetArrayFromImage(random.labels))
    np.testing.assert_array_equal(sitk.GetArrayFromImage(physics.tissues), sitk.GetArrayFromImage(random.tissues))
    a = sitk.GetArrayFromImage(physics.scan).astype(float)
    b = sitk.GetArrayFromImage(random.scan).astype(float)
    assert np.abs(a - b).mean() > 5.0
    assert "appearance_mean_hu" in random.facts and np.isnan(random.facts["trabecular_vbmd_mg_cm3"])
