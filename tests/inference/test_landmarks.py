"""Femoral head centres of a mask, in world coordinates, for any grid direction."""

from __future__ import annotations

import math

import numpy as np
import pytest
import SimpleITK as sitk

from femurseg.inference.landmarks import femoral_head_centers

from helpers.synthetic import synthetic_hip


@pytest.mark.parametrize("direction", [(1, 0, 0, 0, 1, 0, 0, 0, 1), (-1, 0, 0, 0, -1, 0, 0, 0, 1),
                                       (0, 1, 0, 1, 0, 0, 0, 0, -1)])
def test_head_centres_of_the_synthetic_hip(direction) -> None:
    _, labels = synthetic_hip(seed=0, spacing_zyx=(1.5, 1.5, 1.5), shape_zyx=(64, 64, 64), direction=direction)
    centres = femoral_head_centers(labels)
    # helpers/synthetic.py puts the heads (radius 10 mm) at (∓22, 0, 18) mm.
    np.testing.assert_allclose(centres["right"], [-22.0, 0.0, 18.0], atol=2.5)
    np.testing.assert_allclose(centres["left"], [22.0, 0.0, 18.0], atol=2.5)


def test_absent_side_is_none() -> None:
    _, labels = synthetic_hip(seed=0, sides=("left",))
    centres = femoral_head_centers(labels)
    assert centres["right"] is None and centres["left"] is not None
    assert math.isfinite(float(centres["left"][0]))
    empty = sitk.Image([8, 8, 8], sitk.sitkUInt8)
    assert femoral_head_centers(empty) == {"right": None, "left": None}
