"""Patch sampling and augmentation: foreground oversampling, determinism, padding, label/image alignment."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from femurseg.models.preprocessing import Preprocessing, normalize_hu
from femurseg.training.config import AugmentationConfig
from femurseg.training.data import find_cases, prepare_volumes
from femurseg.training.patches import PatchDataset, choose_place, patch_rng

PP = Preprocessing(target_spacing_zyx=(2.0, 2.0, 2.0), patch_size_zyx=(16, 16, 16), roi_margin_mm=4.0)


@pytest.fixture(scope="module")
def volumes(tiny_cohort: Path):  # noqa: ANN201
    return prepare_volumes(find_cases(tiny_cohort), preprocessing=PP, context_mm=12.0)


def _dataset(volumes, augmentation: AugmentationConfig, *, seed: int = 0, fg: float = 0.5) -> PatchDataset:  # noqa: ANN001
    return PatchDataset(volumes, patch_size_zyx=PP.patch_size_zyx, hu_window=PP.hu_window, augmentation=augmentation,
                        foreground_fraction=fg, num_classes=2, seed=seed, length=1000)


def _centre_is_foreground(volumes, fg: float, n: int = 300) -> float:  # noqa: ANN001
    hits = 0
    for i in range(n):
        p = choose_place(volumes, foreground_fraction=fg, jitter_mm=0.0, rng=patch_rng(0, i))
        hits += int(volumes[p.volume].target[p.centre] > 0)
    return hits / n


def test_foreground_oversampling(volumes) -> None:  # noqa: ANN001
    uniform = _centre_is_foreground(volumes, 0.0)
    half = _centre_is_foreground(volumes, 0.5)
    always = _centre_is_foreground(volumes, 1.0)
    assert always == 1.0
    # Half of the patches are centred on the femur; the other half hit it as often as uniform sampling does.
    assert half == pytest.approx(0.5 + 0.5 * uniform, abs=0.08)
    assert uniform < 0.5


def test_head_fraction_centres_patches_on_the_femoral_head(volumes) -> None:  # noqa: ANN001
    from femurseg.training.data import HEAD_REGION_MM, _with_points

    # A 100 mm "femur" at 1 mm: a shaft (z 10..89) under a ball (the head, top at z 109); z points to the head.
    z, y, x = np.mgrid[:120, :40, :40]
    target = (((y - 20) ** 2 + (x - 20) ** 2 <= 36) & (z >= 10) & (z < 90)) | (
        (z - 87) ** 2 + (y - 20) ** 2 + (x - 20) ** 2 <= 22 ** 2)
    image = np.where(target, 700, 40).astype(np.int16)
    femur = _with_points("bone", "right", image, target.astype(np.uint8), (0, 0, 0), (120, 40, 40), (1.0, 1.0, 1.0))
    hz = femur.head_surface[:, 0]
    assert (target[tuple(femur.head_surface.T)]).all() and hz.max() == 109 and hz.min() == 109 - HEAD_REGION_MM + 1
    assert len(femur.head_surface) < len(femur.surface)
    kinds = [choose_place([femur], foreground_fraction=0.5, jitter_mm=0.0, rng=patch_rng(0, i), head_fraction=0.7)
             for i in range(300)]
    assert sum(k.kind == "head" for k in kinds) / 300 == pytest.approx(0.7, abs=0.08)
    assert all(k.centre[0] >= 109 - HEAD_REGION_MM for k in kinds if k.kind == "head")


#: What the sampler drew before head_fraction and soft_targets existed (recorded with the code of 29013a8 on the
#: tiny cohort): (volume, centre, jittered box start, kind) of patches 0..11 of seed 3, jitter 4 mm; and (image sum,
#: femur voxels) of items 0..3 of a seed-3 PatchDataset with the default augmentation.
_PINNED_PLACES = [
    (2, (17, 14, 11), (4, 7, 7), "foreground"), (2, (18, 4, 13), (6, 4, 7), "random"),
    (0, (6, 21, 16), (4, 6, 4), "random"), (4, (21, 18, 11), (6, 4, 7), "random"),
    (2, (14, 14, 13), (5, 7, 8), "foreground"), (3, (15, 15, 14), (6, 8, 5), "foreground"),
    (0, (24, 23, 23), (6, 8, 8), "random"), (4, (12, 11, 12), (5, 7, 6), "surface"),
    (4, (20, 14, 15), (5, 4, 4), "surface"), (4, (16, 12, 12), (8, 6, 7), "foreground"),
    (3, (11, 12, 13), (5, 7, 6), "foreground"), (2, (14, 11, 13), (4, 6, 5), "surface"),
]
_PINNED_ITEMS = [(-3316.947, 175), (-3846.401, 17), (-3623.982, 17), (-3702.226, 244)]


def test_default_sampling_draws_what_it_drew_before_the_new_options(volumes) -> None:  # noqa: ANN001
    for i, expected in enumerate(_PINNED_PLACES):
        p = choose_place(volumes, foreground_fraction=0.5, jitter_mm=4.0, rng=patch_rng(3, i))
        assert (p.volume, p.centre, p.box_start, p.kind) == expected
    ds = _dataset(volumes, AugmentationConfig(), seed=3)
    for i, (image_sum, femur) in enumerate(_PINNED_ITEMS):
        x, y = ds[i]
        assert float(x.double().sum()) == pytest.approx(image_sum, abs=0.01) and int(y.sum()) == femur


def test_patches_are_a_function_of_seed_and_index(volumes) -> None:  # noqa: ANN001
    a, b = _dataset(volumes, AugmentationConfig()), _dataset(volumes, AugmentationConfig())
    for i in (0, 7, 123):
        xa, ya = a[i]
        xb, yb = b[i]
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    other = _dataset(volumes, AugmentationConfig(), seed=1)
    assert not torch.equal(a[5][0], other[5][0])
    x, y = a[3]
    assert x.shape == (1, 16, 16, 16) and x.dtype == torch.float32
    assert y.shape == (16, 16, 16) and y.dtype == torch.int64
    assert float(x.min()) >= -1.0 and float(x.max()) <= 1.0


def test_unaugmented_patch_is_the_normalised_crop(volumes) -> None:  # noqa: ANN001
    ds = _dataset(volumes, AugmentationConfig.off())
    for i in range(20):
        x, y = ds[i]
        p = choose_place(volumes, foreground_fraction=0.5, jitter_mm=0.0, rng=patch_rng(0, i))
        vol = volumes[p.volume]
        start = np.asarray(p.centre) - 8
        if (start < 0).any() or (start + 16 > vol.image.shape).any():
            continue
        sl = tuple(slice(s, s + 16) for s in start)
        inside = np.zeros(vol.image.shape, bool)
        inside[tuple(slice(a, b) for a, b in zip(p.box_start, p.box_stop))] = True
        expect = np.where(inside[sl], normalize_hu(vol.image[sl], hu_window=PP.hu_window), -1.0)
        np.testing.assert_allclose(x[0].numpy(), expect, atol=1e-6)
        np.testing.assert_array_equal(y.numpy(), np.where(inside[sl], vol.target[sl], 0))


def test_outside_jittered_box_is_window_low(volumes) -> None:  # noqa: ANN001
    ds = _dataset(volumes, replace(AugmentationConfig.off(), roi_jitter_mm=4.0), fg=0.0)
    saw_padding = False
    for i in range(30):
        x, y = ds[i]
        p = choose_place(volumes, foreground_fraction=0.0, jitter_mm=4.0, rng=patch_rng(0, i))
        idx = [np.arange(16) + c - 8 for c in p.centre]
        inside = [(i_ >= s) & (i_ < e) for i_, s, e in zip(idx, p.box_start, p.box_stop)]
        mask = inside[0][:, None, None] & inside[1][None, :, None] & inside[2][None, None, :]
        assert (x[0].numpy()[~mask] == -1.0).all() and not y.numpy()[~mask].any()
        saw_padding |= bool((~mask).any())
    assert saw_padding


def test_augmented_labels_stay_on_the_bone(volumes) -> None:  # noqa: ANN001
    aug = replace(AugmentationConfig.off(), p_affine=1.0, p_elastic=1.0, p_calibration=1.0, p_noise=1.0,
                  p_blur=1.0, p_low_resolution=1.0, p_thick_slices=1.0, p_gamma=1.0, roi_jitter_mm=4.0)
    ds = _dataset(volumes, aug, fg=1.0)
    plain = _dataset(volumes, AugmentationConfig.off(), fg=1.0)
    contrast = []
    for i in range(12):
        x, y = ds[i]
        x0, _ = plain[i]
        assert not torch.equal(x, x0)
        fg, bg = y > 0, (y == 0) & (x[0] > -1.0)
        assert fg.any() and bg.any()
        contrast.append(float(x[0][fg].mean() - x[0][bg].mean()))
    # The synthetic femur is ~700 HU in ~40 HU tissue: 0.33 in window units; augmentation blurs but keeps it.
    assert np.median(contrast) > 0.15


def test_fov_cut_blanks_a_half_plane_through_the_bone(volumes) -> None:  # noqa: ANN001
    from femurseg.training.patches import fov_cut_mask

    plain = _dataset(volumes, AugmentationConfig.off(), fg=1.0)
    cut = _dataset(volumes, replace(AugmentationConfig.off(), p_fov_cut=1.0), fg=1.0)
    cut_bone = 0
    for i in range(12):
        (x0, y0), (x, y) = plain[i], cut[i]
        blank = (x[0] == -1.0) & (x0[0] != -1.0)
        # The same patch, blanked beyond an edge parallel to z: the blank set is one in-plane mask repeated in z,
        # and nothing there is labelled; on this side of the edge the patch is untouched.
        plane = blank.any(0, keepdim=True).expand_as(blank)
        assert torch.equal(blank, plane & (x0[0] != -1.0))
        assert not y[blank].any() and torch.equal(x[0][~blank], x0[0][~blank]) and torch.equal(y[~blank], y0[~blank])
        cut_bone += int((y0[blank] > 0).any())
    assert cut_bone >= 3  # the edge passes within 8 voxels of a bone voxel: it often cuts the (here tiny) femur
    # The mask: a half-plane whose edge passes near the chosen foreground voxel.
    target = torch.zeros(4, 32, 32, dtype=torch.long)
    target[:, 10:20, 10:20] = 1
    keep = fov_cut_mask(target, np.random.default_rng(3))
    assert keep.any() and (~keep).any() and torch.equal(keep, keep[:1].expand_as(keep))



def test_z_cut_ends_the_field_of_view_in_the_top_of_the_femur(volumes) -> None:  # noqa: ANN001
    from femurseg.training.patches import Z_CUT_DEPTH_MM, z_cut_mask

    plain = _dataset(volumes, AugmentationConfig.off(), fg=1.0)
    cut = _dataset(volumes, replace(AugmentationConfig.off(), p_z_cut=1.0), fg=1.0)
    for i in range(8):
        (x0, y0), (x, y) = plain[i], cut[i]
        blank = (x[0] == -1.0) & (x0[0] != -1.0)
        # Whole axial slices are blanked (a scan's end), nothing there is labelled, the rest is untouched.
        rows = blank.flatten(1).any(1)
        assert torch.equal(blank, rows.view(-1, 1, 1).expand_as(blank) & (x0[0] != -1.0))
        assert not y[blank].any() and torch.equal(x[0][~blank], x0[0][~blank]) and torch.equal(y[~blank], y0[~blank])
    # The plane: 5–60 mm under the femur's top, one side kept; both sides occur.
    target = torch.zeros(80, 8, 8, dtype=torch.long)
    target[10:70, 2:6, 2:6] = 1  # top slice 69
    sides = set()
    for seed in range(40):
        keep = z_cut_mask(target, np.random.default_rng(seed), spacing_z_mm=1.0)
        k = torch.nonzero(keep[:, 0, 0]).flatten()
        assert torch.equal(keep, keep[:, :1, :1].expand_as(keep)) and 0 < len(k) < 80
        above = int(k.max()) == 79
        edge = int(k.min()) if above else int(k.max()) + 1
        assert 69 - Z_CUT_DEPTH_MM[1] - 1 <= edge <= 69 - Z_CUT_DEPTH_MM[0] + 1
        assert torch.equal(k, torch.arange(int(k.min()), int(k.max()) + 1))
        sides.add(above)
    assert sides == {True, False}


def test_soft_targets_are_the_femur_fraction(volumes) -> None:  # noqa: ANN001
    """Partial-volume targets: the prepared fraction thresholded at 0.5 is the label; patches carry it through
    the same crops and augmentation, fractional only along the bone's edge."""
    for v in volumes:
        np.testing.assert_array_equal(np.asarray(v.soft) >= 128, np.asarray(v.target) > 0)
    kw = dict(patch_size_zyx=PP.patch_size_zyx, hu_window=PP.hu_window, foreground_fraction=1.0, num_classes=2,
              seed=0, length=100)
    aug = replace(AugmentationConfig.off(), p_affine=1.0, p_elastic=1.0, p_noise=1.0, roi_jitter_mm=4.0)
    for augmentation in (AugmentationConfig.off(), aug):
        hard = PatchDataset(volumes, augmentation=augmentation, **kw)
        soft = PatchDataset(volumes, augmentation=augmentation, soft_targets=True, **kw)
        fractional = 0
        for i in range(10):
            (xh, yh), (xs, ys) = hard[i], soft[i]
            assert ys.dtype == torch.float32 and float(ys.min()) >= 0.0 and float(ys.max()) <= 1.0
            assert torch.equal(xh, xs)  # the image and every random draw are the same
            agree = float(((ys >= 0.5).long() == yh).float().mean())
            assert agree == 1.0 if augmentation is not aug else agree > 0.97
            fractional += int(((ys > 0.02) & (ys < 0.98)).sum())
        assert fractional > 0
    # The field-of-view cuts blank image and fractions alike.
    cut = PatchDataset(volumes, augmentation=replace(aug, p_fov_cut=1.0, p_z_cut=1.0), soft_targets=True, **kw)
    blanked = 0
    for i in range(10):
        x, y = cut[i]
        gone = x[0] == -1.0
        assert not y[gone].any()
        blanked += int(gone.sum())
    assert blanked > 0
    with pytest.raises(ValueError, match="soft_targets"):
        PatchDataset(volumes, augmentation=AugmentationConfig.off(), **{**kw, "num_classes": 3}, soft_targets=True)


def test_cached_volumes_read_back_with_their_fractions(tiny_cohort: Path, tmp_path: Path,
                                                       volumes) -> None:  # noqa: ANN001
    """The cache holds each femur volume's fractions; a locator volume has none, and reads back without."""
    cached = prepare_volumes(find_cases(tiny_cohort), preprocessing=PP, context_mm=12.0, cache_dir=tmp_path)
    again = prepare_volumes(find_cases(tiny_cohort), preprocessing=PP, context_mm=12.0, cache_dir=tmp_path)
    assert len(cached) == len(again) == len(volumes)
    for fresh, first, second in zip(volumes, cached, again):
        assert isinstance(second.soft, np.memmap)  # read from the cache
        for a in (first, second):
            np.testing.assert_array_equal(np.asarray(a.soft), fresh.soft)
            np.testing.assert_array_equal(np.asarray(a.target), fresh.target)
    loc = replace(PP, task="locate", target_spacing_zyx=(4.0, 4.0, 4.0))
    for _ in range(2):
        located = prepare_volumes(find_cases(tiny_cohort)[:1], preprocessing=loc, context_mm=0.0, cache_dir=tmp_path)
        assert located[0].soft is None and not len(located[0].head_surface)
