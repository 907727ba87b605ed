"""Post-processing: the largest component is kept, enclosed holes are filled, open cavities are not."""

from __future__ import annotations

import numpy as np

from femurseg.inference.postprocess import clean_femur, fill_holes, largest_component


def _ball(shape, centre, radius) -> np.ndarray:
    zz, yy, xx = np.meshgrid(*(np.arange(n) for n in shape), indexing="ij")
    return (zz - centre[0]) ** 2 + (yy - centre[1]) ** 2 + (xx - centre[2]) ** 2 <= radius**2


def test_largest_component_keeps_the_biggest_blob() -> None:
    big = _ball((30, 30, 30), (10, 10, 10), 6)
    small = _ball((30, 30, 30), (24, 24, 24), 3)
    out = largest_component(big | small)
    np.testing.assert_array_equal(out, big)
    assert not largest_component(np.zeros((4, 4, 4), bool)).any()


def test_diagonal_neighbours_are_connected() -> None:
    m = np.zeros((5, 5, 5), bool)
    m[1, 1, 1] = m[2, 2, 2] = m[3, 3, 3] = True
    m[0, 4, 0] = True
    out = largest_component(m)
    assert out.sum() == 3 and not out[0, 4, 0]


def test_fill_holes_fills_enclosed_cavities_only() -> None:
    shell = _ball((30, 30, 30), (15, 15, 15), 10) & ~_ball((30, 30, 30), (15, 15, 15), 6)
    filled = fill_holes(shell)
    np.testing.assert_array_equal(filled, _ball((30, 30, 30), (15, 15, 15), 10))
    opened = shell.copy()
    opened[15, 15, 15:] = False  # a channel from the cavity to the outside
    opened[14:17, 14:17, 15:] = False
    assert fill_holes(opened).sum() == opened.sum()


def test_clean_femur_combines_both() -> None:
    shape = (40, 40, 40)
    femur = _ball(shape, (20, 20, 20), 12) & ~_ball(shape, (20, 20, 20), 4)
    speck = _ball(shape, (3, 3, 3), 1)
    out = clean_femur(femur | speck)
    np.testing.assert_array_equal(out, _ball(shape, (20, 20, 20), 12))


def test_enclosed_metal_joins_the_mask_and_outside_metal_does_not() -> None:
    from femurseg.inference.postprocess import include_enclosed_metal

    mask = np.zeros((5, 40, 40), bool)
    yy, xx = np.mgrid[0:40, 0:40]
    ring = ((yy - 20) ** 2 + (xx - 20) ** 2 <= 100) & ((yy - 20) ** 2 + (xx - 20) ** 2 > 16)
    mask[:] = ring
    hu = np.full(mask.shape, 500.0)
    hu[:, 18:23, 18:23] = 3000.0  # a stem in the canal
    hu[:, 2:5, 2:5] = 3000.0  # metal outside the femur
    out = include_enclosed_metal(mask, hu, 2500.0)
    assert out[:, 20, 20].all() and out[:, 17, 20].all()  # the whole canal around the stem joins
    assert not out[:, 3, 3].any()
    np.testing.assert_array_equal(include_enclosed_metal(mask, np.full(mask.shape, 500.0), 2500.0), mask)
