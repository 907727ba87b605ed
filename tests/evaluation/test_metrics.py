from __future__ import annotations

import numpy as np
import pytest

from femurseg.evaluation import (
    assd, compare_labels, dice, hausdorff, sensitivity, specificity, surface_distances, volume_agreement, volume_ml,
)


def _ball(shape, center, radius, spacing=(1.0, 1.0, 1.0)):
    zz, yy, xx = np.meshgrid(*(np.arange(n) * s for n, s in zip(shape, spacing)), indexing="ij")
    c = np.asarray(center)
    return (zz - c[0]) ** 2 + (yy - c[1]) ** 2 + (xx - c[2]) ** 2 <= radius**2


def test_overlap_counts_by_hand():
    t = np.zeros((4, 4, 4), bool)
    t[1:3, 1:3, 1:3] = True  # 8 voxels
    p = np.zeros_like(t)
    p[1:3, 1:3, 1:2] = True  # 4 voxels, all inside t
    p[0, 0, 0] = True  # 1 false positive
    assert dice(p, t) == pytest.approx(2 * 4 / (5 + 8))
    assert sensitivity(p, t) == pytest.approx(4 / 8)
    assert specificity(p, t) == pytest.approx((64 - 8 - 1) / (64 - 8))
    assert dice(np.zeros_like(t), np.zeros_like(t)) == 1.0


def test_shifted_box_surface_distance_in_mm():
    t = np.zeros((20, 20, 20), bool)
    t[5:15, 5:15, 5:15] = True
    p = np.roll(t, 3, axis=2)  # shift by 3 voxels along x
    spacing = (2.0, 1.0, 0.5)  # x spacing 0.5 mm: the shift is 1.5 mm
    assert hausdorff(p, t, spacing) == pytest.approx(1.5)
    a, b = surface_distances(p, t, spacing)
    assert a.max() == pytest.approx(1.5) and b.max() == pytest.approx(1.5)
    assert 0 < assd(p, t, spacing) < 1.5
    assert hausdorff(t, t, spacing) == 0.0


def test_concentric_balls_hd_is_radius_difference():
    spacing = (0.5, 0.5, 0.5)
    t = _ball((60, 60, 60), (15, 15, 15), 10.0, spacing)
    p = _ball((60, 60, 60), (15, 15, 15), 12.0, spacing)
    assert hausdorff(p, t, spacing) == pytest.approx(2.0, abs=0.5)
    assert hausdorff(p, t, spacing, percentile=95) <= hausdorff(p, t, spacing)


def test_volume_ml_uses_spacing():
    m = np.ones((10, 10, 10), bool)
    assert volume_ml(m, (1.0, 2.0, 0.5)) == pytest.approx(1.0)


def test_compare_labels_per_side_and_skips_absent():
    truth = np.zeros((10, 10, 20), np.uint8)
    truth[2:8, 2:8, 2:8] = 1
    pred = truth.copy()
    pred[2:8, 2:8, 12:18] = 2  # a left femur in pred only
    out = compare_labels(pred, truth, (1.0, 1.0, 1.0))
    assert out["right"]["dice"] == 1.0 and out["right"]["hd95"] == 0.0
    assert out["left"]["dice"] == 0.0 and np.isnan(out["left"]["hd95"])
    assert set(compare_labels(truth, truth, (1, 1, 1))) == {"right"}


def test_surface_distances_refuse_missing_spacing_and_empty_masks():
    m = np.ones((3, 3, 3), bool)
    with pytest.raises(ValueError):
        surface_distances(m, m, (1.0, 1.0))
    with pytest.raises(ValueError):
        surface_distances(m, np.zeros_like(m), (1.0, 1.0, 1.0))


def test_volume_agreement_perfect_and_biased():
    true = [100.0, 120.0, 140.0, 160.0, 180.0]
    perfect = volume_agreement(true, true)
    assert perfect["r2"] == pytest.approx(1.0) and perfect["bias_ml"] == 0.0 and perfect["p_value"] < 1e-3
    rng = np.random.default_rng(0)
    noisy = np.asarray(true) + 5.0 + rng.normal(0, 1, 5)
    out = volume_agreement(noisy, true)
    assert out["bias_ml"] == pytest.approx(5.0, abs=1.5) and 0.9 < out["r2"] <= 1.0


def test_volume_agreement_without_spread_has_no_regression():
    out = volume_agreement([101.0, 99.0, 100.0], [100.0, 100.0, 100.0])
    assert np.isnan(out["r2"]) and out["bias_ml"] == pytest.approx(0.0)
