"""Sliding windows: exact for a pointwise net, probabilities sum to 1, padding, flips, window placement."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from femurseg.models.window import (
    WindowOptions, gaussian_importance, prepare_model, sliding_window_probabilities, window_starts,
)


def _pointwise(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return prepare_model(torch.nn.Conv3d(1, 3, 1), torch.device("cpu"))


@pytest.mark.parametrize("overlap", [0.0, 0.5])
@pytest.mark.parametrize("shape", [(10, 50, 37), (40, 20, 33)])
def test_pointwise_net_equals_whole_volume_forward(shape, overlap) -> None:
    model = _pointwise()
    volume = np.random.default_rng(0).normal(size=shape).astype(np.float32)
    options = WindowOptions(patch_size_zyx=(16, 32, 32), overlap=overlap, batch_size=3)
    probs = sliding_window_probabilities(model, volume, options=options, device=torch.device("cpu"))
    with torch.inference_mode():
        ref = torch.softmax(model(torch.from_numpy(volume)[None, None]), 1)[0].numpy()
    assert probs.shape == (3, *shape)
    # bf16 autocast (when the CPU has it) rounds logits to ~3 significant digits.
    np.testing.assert_allclose(probs, ref, atol=2e-2)
    np.testing.assert_allclose(probs.sum(axis=0), 1.0, atol=1e-5)


def test_flip_passes_of_a_pointwise_net_change_nothing() -> None:
    model = _pointwise(1)
    volume = np.random.default_rng(1).normal(size=(20, 24, 40)).astype(np.float32)
    plain = sliding_window_probabilities(model, volume, options=WindowOptions((16, 16, 16)), device=torch.device("cpu"))
    flipped = sliding_window_probabilities(
        model, volume, options=WindowOptions((16, 16, 16), flips=((0,), (1, 2))), device=torch.device("cpu"))
    np.testing.assert_allclose(flipped, plain, atol=1e-5)


def test_flip_passes_average_mirrored_predictions() -> None:
    # A net that sees position (a 3-voxel x-gradient kernel) is not mirror-symmetric: the x-flip pass differs.
    torch.manual_seed(0)
    conv = torch.nn.Conv3d(1, 2, (1, 1, 3), padding=(0, 0, 1))
    model = prepare_model(conv, torch.device("cpu"))
    volume = np.random.default_rng(2).normal(size=(16, 16, 16)).astype(np.float32)
    opts = WindowOptions((16, 16, 16))
    plain = sliding_window_probabilities(model, volume, options=opts, device=torch.device("cpu"))
    mirrored = sliding_window_probabilities(model, volume[..., ::-1].copy(), options=opts, device=torch.device("cpu"))
    tta = sliding_window_probabilities(model, volume, options=WindowOptions((16, 16, 16), flips=((2,),)),
                                       device=torch.device("cpu"))
    np.testing.assert_allclose(tta, (plain + mirrored[..., ::-1]) / 2, atol=2e-2)
    assert np.abs(plain - mirrored[..., ::-1]).max() > 0.05


def test_small_volume_is_padded_with_the_window_low() -> None:
    # A net whose output depends on the padding value through a 3³ kernel: padding with -1 must look like -1 voxels.
    torch.manual_seed(3)
    model = prepare_model(torch.nn.Conv3d(1, 2, 3, padding=1), torch.device("cpu"))
    small = np.random.default_rng(3).uniform(-1, 1, (6, 9, 12)).astype(np.float32)
    out = sliding_window_probabilities(model, small, options=WindowOptions((16, 16, 16)), device=torch.device("cpu"))
    big = np.full((16, 16, 16), -1.0, np.float32)
    big[5:11, 3:12, 2:14] = small  # the same centring as the function's padding
    with torch.inference_mode():
        ref = torch.softmax(model(torch.from_numpy(big)[None, None]), 1)[0].numpy()[:, 5:11, 3:12, 2:14]
    np.testing.assert_allclose(out, ref, atol=2e-2)


def test_window_starts_cover_the_axis() -> None:
    for size, patch, overlap in [(50, 32, 0.5), (37, 32, 0.0), (100, 32, 0.5), (32, 32, 0.5), (20, 32, 0.5)]:
        starts = window_starts(size, patch, overlap)
        covered = np.zeros(max(size, patch), bool)
        for s in starts:
            covered[s:s + patch] = True
        assert covered[:size].all()
        assert starts[0] == 0 and starts[-1] == max(0, size - patch)
        if len(starts) > 1:
            assert max(np.diff(starts)) <= int(patch * (1 - overlap))
    assert len(window_starts(100, 32, 0.0)) == 4
    assert len(window_starts(100, 32, 0.5)) == 6


def test_gaussian_importance_is_positive_and_peaks_at_the_centre() -> None:
    g = gaussian_importance((8, 16, 16))
    assert g.shape == (8, 16, 16) and g.min() > 0 and g.max() == pytest.approx(1.0)
    assert g[4, 8, 8] > g[0, 0, 0]
    np.testing.assert_allclose(g, g[::-1, ::-1, ::-1])
