"""The locator's boxes: largest component per side, small speckle ignored, no femur → NoFemurFound; z-slabs."""

from __future__ import annotations

import numpy as np
import pytest

from femurseg.errors import NoFemurFound
from femurseg.geometry import Grid
from femurseg.inference import locate

from helpers.synthetic import synthetic_hip


def test_boxes_of_the_largest_component_per_side() -> None:
    grid = Grid(shape_zyx=(20, 30, 40), spacing_zyx=(4.0, 4.0, 4.0), origin_xyz=(-80.0, -60.0, -40.0))
    labels = np.zeros(grid.shape_zyx, np.uint8)
    labels[2:12, 5:15, 3:13] = 1          # right femur: 10×10×10 voxels of 64 mm³ = 64 mL
    labels[15, 25, 30] = 1                # speckle of the same class
    labels[4:16, 10:20, 25:33] = 2        # left femur
    boxes = locate.femur_boxes(labels, grid)
    right, left = boxes["right"], boxes["left"]
    assert right.side == "right" and left.side == "left"
    assert right.volume_ml == pytest.approx(64.0)
    np.testing.assert_allclose(right.lower_xyz, grid.index_to_world(np.array([2, 5, 3])))
    np.testing.assert_allclose(right.upper_xyz, grid.index_to_world(np.array([11, 14, 12])))
    np.testing.assert_allclose(left.lower_xyz, grid.index_to_world(np.array([4, 10, 25])))
    np.testing.assert_allclose(left.upper_xyz, grid.index_to_world(np.array([15, 19, 32])))


def test_speckle_alone_is_no_femur() -> None:
    grid = Grid(shape_zyx=(10, 10, 10), spacing_zyx=(4.0, 4.0, 4.0))
    labels = np.zeros(grid.shape_zyx, np.uint8)
    labels[2:6, 2:6, 2:6] = 2  # 64 voxels = 4.1 mL: a femur
    labels[8, 8, 8] = 1        # 0.064 mL: not one
    boxes = locate.femur_boxes(labels, grid)
    assert boxes["right"] is None and boxes["left"] is not None
    labels[2:6, 2:6, 2:6] = 0
    with pytest.raises(NoFemurFound):
        locate.femur_boxes(labels, grid)


def test_long_scans_in_slabs_match_one_piece(segmenter, monkeypatch) -> None:
    # A 256 mm long scan is 64 locator slices; a small slab budget forces 2 slabs of 56 (2 × patch) + halo.
    image, _ = synthetic_hip(seed=21, shape_zyx=(128, 48, 48))
    model, pre = segmenter._locator, segmenter.locator_bundle.preprocessing
    opts, dev = segmenter.locator_options, segmenter.device
    whole, grid = locate.locator_labels(image, model, pre, options=opts, device=dev)
    monkeypatch.setattr(locate, "SLAB_VOXELS", 1)
    slabs, grid2 = locate.locator_labels(image, model, pre, options=opts, device=dev)
    assert grid2 == grid and slabs.shape == whole.shape == grid.shape_zyx
    # Slabs place their windows differently near the seams: near-identical, not bit-identical.
    assert np.mean(slabs == whole) > 0.995
    for value in (1, 2):
        a, b = whole == value, slabs == value
        assert 2 * (a & b).sum() / (a.sum() + b.sum()) > 0.95
