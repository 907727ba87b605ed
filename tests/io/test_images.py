"""grid_of / image_from_array / array_of keep the geometry and the values exactly."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from femurseg.errors import InputError
from femurseg.geometry import Grid
from femurseg.io import array_of, grid_of, image_from_array

OBLIQUE = tuple(
    (np.array([[np.cos(0.3), -np.sin(0.3), 0.0], [np.sin(0.3), np.cos(0.3), 0.0], [0.0, 0.0, 1.0]]) @ np.diag([1.0, -1.0, -1.0])).ravel()
)
GRID = Grid(shape_zyx=(4, 5, 6), spacing_zyx=(2.5, 0.7, 0.3333333333333333), origin_xyz=(-100.123, 3.14159, 0.001), direction=OBLIQUE)


def test_array_and_grid_round_trip_exactly() -> None:
    array = np.arange(4 * 5 * 6, dtype=np.int16).reshape(4, 5, 6) - 60
    image = image_from_array(array, GRID)
    assert image.GetSize() == (6, 5, 4)
    assert image.GetSpacing() == (0.3333333333333333, 0.7, 2.5)
    assert image.GetOrigin() == GRID.origin_xyz
    assert image.GetDirection() == GRID.direction
    assert grid_of(image) == GRID
    back = array_of(image)
    assert back.dtype == np.int16
    np.testing.assert_array_equal(back, array)
    # voxel (z, y, x) in numpy is ITK index (x, y, z): the same world point either way
    np.testing.assert_allclose(
        GRID.index_to_world(np.array([3, 1, 2])), image.TransformIndexToPhysicalPoint((2, 1, 3)), rtol=0, atol=1e-12
    )


def test_array_of_returns_a_copy() -> None:
    image = image_from_array(np.zeros((2, 3, 4), np.float32), Grid(shape_zyx=(2, 3, 4), spacing_zyx=(1.0, 1.0, 1.0)))
    array_of(image)[:] = 5
    assert array_of(image).max() == 0


def test_bool_becomes_uint8() -> None:
    mask = np.zeros((2, 3, 4), bool)
    mask[1, 2, 3] = True
    image = image_from_array(mask, Grid(shape_zyx=(2, 3, 4), spacing_zyx=(1.0, 1.0, 1.0)))
    assert image.GetPixelID() == sitk.sitkUInt8
    assert image[3, 2, 1] == 1 and int(array_of(image).sum()) == 1


def test_shape_mismatch_raises() -> None:
    with pytest.raises(InputError, match="does not match"):
        image_from_array(np.zeros((4, 5, 7)), GRID)
    with pytest.raises(InputError, match="3D"):
        image_from_array(np.zeros((5, 7)), GRID)


def test_grid_of_refuses_2d() -> None:
    with pytest.raises(InputError, match="2D"):
        grid_of(sitk.Image(4, 4, sitk.sitkInt16))
