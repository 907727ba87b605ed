"""The protocol report's figures: PNGs written, and the numbers they show computed right."""

from __future__ import annotations

import matplotlib.image as mpimg
import numpy as np
import pytest

from femurseg.viz.plots import bland_altman_plot, dice_box_plot, learning_curves_plot, volume_regression_plot


def _png(path) -> np.ndarray:
    img = mpimg.imread(path)
    assert img.ndim == 3 and img.shape[0] > 200 and img.shape[1] > 200
    assert img[..., :3].std() > 0.05  # not blank
    return img


def test_volume_and_bland_altman_figures(tmp_path) -> None:
    rng = np.random.default_rng(0)
    true = rng.uniform(120, 260, 40)
    pred = 0.98 * true + 2.0 + rng.normal(0, 1.5, 40)
    reg = volume_regression_plot(true, pred, tmp_path / "vol.png")
    assert reg["slope"] == pytest.approx(0.98, abs=0.02) and reg["r2"] > 0.99 and reg["p_value"] < 1e-10
    ba = bland_altman_plot(true, pred, tmp_path / "ba.png")
    diff = pred - true
    assert ba["bias_ml"] == pytest.approx(diff.mean())
    assert ba["loa_high_ml"] - ba["loa_low_ml"] == pytest.approx(2 * 1.96 * diff.std(ddof=1))
    _png(tmp_path / "vol.png")
    _png(tmp_path / "ba.png")


def test_dice_boxes_and_learning_curves(tmp_path) -> None:
    med = dice_box_plot({"all": [0.97, 0.98, 0.99], "male": [0.98, 0.985], "female": [0.96, 0.97, 0.975]},
                        tmp_path / "box.png", reference=0.9815)
    assert med == {"all": 0.98, "male": pytest.approx(0.9825), "female": 0.97}
    steps = np.arange(1, 201)
    best = learning_curves_plot({"fold 0": {"step": steps, "loss": 1.0 / steps, "val_step": [100, 200],
                                            "val_dice": [0.95, 0.97]},
                                 "fold 1": {"step": steps, "loss": 2.0 / steps}}, tmp_path / "lc.png")
    assert best["fold 0"] == 0.97 and np.isnan(best["fold 1"])
    _png(tmp_path / "box.png")
    _png(tmp_path / "lc.png")
