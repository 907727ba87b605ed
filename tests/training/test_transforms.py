"""The augmentation transforms do what they claim, in the units they claim."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from femurseg.training.config import AugmentationConfig
from femurseg.training.transforms import Augmenter

WINDOW = (-1000.0, 1000.0)  # 1 window unit = 1000 HU, so HU are easy to read back


def _aug(**p: object) -> Augmenter:
    return Augmenter(replace(AugmentationConfig.off(), **p), patch_size_zyx=(32, 32, 32), spacing_zyx=(1.0, 1.0, 1.0),
                     hu_window=WINDOW)


def test_noise_has_the_drawn_sd_in_hu() -> None:
    y = _aug(p_noise=1.0, noise_sd_hu=(30.0, 30.0)).intensity(torch.zeros(1, 32, 32, 32), np.random.default_rng(0))
    assert type(y) is torch.Tensor
    assert float(y.std()) * 1000 == pytest.approx(30.0, rel=0.03)


def test_thick_slices_spread_a_slice_and_keep_its_mass() -> None:
    x = torch.zeros(1, 32, 32, 32)
    x[:, 16] = 1000.0
    y = _aug(p_thick_slices=1.0, slice_thickness_mm=(4.0, 4.0)).intensity(x, np.random.default_rng(0))[0, :, 5, 5] * 1000
    assert float(y.max()) < 300 and int((y > 1).sum()) >= 4
    assert float(y.sum()) == pytest.approx(1000.0, rel=1e-3)


def test_calibration_is_linear_within_its_range() -> None:
    x = torch.full((1, 32, 32, 32), 500.0)
    x[:, :16] = 0.0
    for seed in range(5):
        y = _aug(p_calibration=1.0, hu_slope=0.1, hu_shift=30.0).intensity(x, np.random.default_rng(seed)) * 1000
        b = float(y[0, 0, 0, 0])
        a = (float(y[0, 20, 0, 0]) - b) / 500.0
        assert abs(b) <= 30.0 + 1e-3 and 0.9 - 1e-6 <= a <= 1.1 + 1e-6


def test_spatial_identity_resample_matches_the_crop() -> None:
    aug = _aug()
    draw = aug.draw_spatial(np.random.default_rng(0))
    assert draw.identity
    block = torch.randn(2, 40, 40, 40)
    out = aug.resample(block, draw, np.array([19.5, 19.5, 19.5]))  # the 32³ centre of the 40³ block
    torch.testing.assert_close(out, block[:, 4:36, 4:36, 4:36], atol=1e-4, rtol=0)  # float32 grid arithmetic


def test_rotation_keeps_the_centre_and_stays_in_the_source() -> None:
    aug = _aug(p_affine=1.0, rotate_deg=15.0, scale=(0.85, 0.85))
    draw = aug.draw_spatial(np.random.default_rng(3))
    lo, hi = aug.source_extent(draw)
    shape = hi - lo + 1
    block = torch.ones(1, *shape.tolist())
    out = aug.resample(block, draw, -lo.astype(float) + 0.0)
    # Every output voxel reads inside the extracted source block: no zero padding leaks in.
    assert float(out.min()) > 0.999
