"""CTXA-like regions of the proximal femur (`femurseg.qct.regions`) on a hand-made frame and a stick femur."""

from __future__ import annotations

import math

import numpy as np
import pytest

from femurseg.geometry import Grid
from femurseg.qct.frame import FemurFrame
from femurseg.qct.regions import (
    HEAD,
    INTERTROCHANTER,
    NECK,
    REGION_NAMES,
    TOTAL_HIP,
    TROCHANTER,
    RegionOptions,
    region_labels,
    region_of_points,
    split_normal,
)

# A right femur in LPS: shaft along −z through the origin, neck axis 40° above medial (+x), neck-shaft angle 130°,
# neck base at the origin, head centre 50 mm up the neck, narrowest neck 25 mm from the base.
ELEV = math.radians(40.0)
U = np.array([math.cos(ELEV), 0.0, math.sin(ELEV)])
S = np.array([0.0, 0.0, -1.0])
R = 22.0
B = np.zeros(3)
C = B + 50.0 * U
N = B + 25.0 * U


def frame(side: str = "right", mirror: bool = False) -> FemurFrame:
    m = np.array([-1.0, 1.0, 1.0]) if mirror else np.ones(3)
    return FemurFrame(side=side, head_center_xyz=C * m, head_radius_mm=R, head_residual_mm=0.1,
                      neck_axis_xyz=U * m, neck_center_xyz=N * m, neck_width_mm=28.0, shaft_axis_xyz=S,
                      shaft_point_xyz=np.array([0.0, 0.0, -30.0]))


def perp() -> np.ndarray:
    """A unit vector orthogonal to the neck axis (anterior–posterior)."""
    return np.array([0.0, 1.0, 0.0])


def stick_femur(grid: Grid) -> np.ndarray:
    """A stick femur: shaft cylinder (r 14) from 60 mm below the neck base up to 12 mm above it, neck cylinder
    (r 14) from the base to the head centre, head sphere (R), a greater-trochanter ball (r 13) lateral-superior."""
    p = grid.world_coordinates()
    radial_shaft = np.hypot(p[..., 0], p[..., 1])
    shaft = (radial_shaft <= 14.0) & (p[..., 2] >= -60.0) & (p[..., 2] <= 12.0)
    t = p @ U
    radial_neck = np.linalg.norm(p - t[..., None] * U, axis=-1)
    neck = (radial_neck <= 14.0) & (t >= 0.0) & (t <= 50.0)
    head = np.linalg.norm(p - C, axis=-1) <= R
    gt = np.linalg.norm(p - np.array([-10.0, 0.0, 18.0]), axis=-1) <= 13.0
    return shaft | neck | head | gt


def test_codes_and_names() -> None:
    assert (HEAD, NECK, TROCHANTER, INTERTROCHANTER) == (1, 2, 3, 4)
    assert REGION_NAMES == {1: "head", 2: "neck", 3: "trochanter", 4: "intertrochanter"}
    assert TOTAL_HIP == (NECK, TROCHANTER, INTERTROCHANTER) and HEAD not in TOTAL_HIP


def test_points_in_each_region_get_their_code() -> None:
    pts = np.array([
        N + 3.0 * U + 8.0 * perp(),          # in the neck slab
        N - 4.9 * U - 10.0 * perp(),         # neck, near the slab's lateral face
        N + 12.0 * U,                        # head-ward of the slab, inside the head sphere
        C + 0.95 * R * np.array([0, 0, 1.0]),  # top of the head
        [-20.0, 0.0, 30.0],                  # greater trochanter's tip, lateral and superior
        [-12.0, 5.0, 10.0],                  # trochanter, above the split line
        [0.0, 0.0, -25.0],                   # shaft below the neck base: intertrochanter
        [10.0, -6.0, -20.0],                 # lesser-trochanter-like, medial-posterior: intertrochanter
        [0.0, 0.0, -45.0],                   # below the distal limit (40 mm)
        N + 1.6 * R * perp(),                # in the slab's plane, beyond its radial limit
        C + 1.2 * R * U,                     # beyond the head sphere
        N + 10.0 * U + 20.0 * perp(),        # subcapital, outside the sphere: no region
    ])
    want = [NECK, NECK, HEAD, HEAD, TROCHANTER, TROCHANTER, INTERTROCHANTER, INTERTROCHANTER, 0, 0, 0, 0]
    got = region_of_points(pts, frame())
    assert got.dtype == np.uint8 and got.shape == (len(pts),)
    assert got.tolist() == want
    # A left femur (mirrored in x) gets the same codes at the mirrored points.
    mirrored = pts * np.array([-1.0, 1.0, 1.0])
    assert region_of_points(mirrored, frame("left", mirror=True)).tolist() == want


@pytest.mark.parametrize("slab", [10.0, 6.0, 15.0])
def test_neck_slab_is_neck_slab_mm_thick_and_centred_at_the_narrowest_section(slab: float) -> None:
    t = np.arange(-20.0, 20.0, 0.05)
    for radial in (0.0, 12.0):
        pts = N + t[:, None] * U + radial * perp()
        neck_t = t[region_of_points(pts, frame(), RegionOptions(neck_slab_mm=slab)) == NECK]
        assert neck_t.max() - neck_t.min() == pytest.approx(slab, abs=0.1)
        assert 0.5 * (neck_t.max() + neck_t.min()) == pytest.approx(0.0, abs=0.06)


def test_neck_radial_limit_and_distal_limit_follow_the_options() -> None:
    opt = RegionOptions(neck_radius_factor=1.0, distal_mm=30.0)
    inside, outside = N + 0.95 * R * perp(), N + 1.05 * R * perp()
    assert region_of_points(np.stack([inside, outside]), frame(), opt).tolist() == [NECK, 0]
    depth = np.arange(0.0, 50.0, 0.1)
    pts = np.stack([np.zeros_like(depth), np.zeros_like(depth), -depth], axis=-1) + [0.0, 0.0, -1e-3]
    in_hip = depth[region_of_points(pts, frame(), opt) > 0]
    assert in_hip.max() == pytest.approx(30.0, abs=0.11)


def test_split_plane_passes_through_the_neck_base_descending_laterally() -> None:
    for angle in (0.0, 15.0, 30.0):
        m = split_normal(frame(), angle)
        assert np.linalg.norm(m) == pytest.approx(1.0)
        assert abs(m @ np.array([0.0, 1.0, 0.0])) < 1e-12  # contains the view normal
        lateral = np.array([-1.0, 0.0, 0.0])
        d = math.cos(math.radians(angle)) * lateral + math.sin(math.radians(angle)) * S  # the split line
        assert abs(m @ d) < 1e-12 and m @ -S > 0  # orthogonal to it, pointing proximally
        line = B + 15.0 * d
        pts = np.stack([line + 0.5 * m, line - 0.5 * m])
        got = region_of_points(pts, frame(), RegionOptions(split_angle_deg=angle))
        assert got.tolist() == [TROCHANTER, INTERTROCHANTER]


def test_region_labels_label_mask_voxels_by_their_centres_only() -> None:
    grid = Grid(shape_zyx=(130, 50, 100), spacing_zyx=(1.0, 1.0, 1.0), origin_xyz=(-28.0, -25.0, -70.0))
    mask = stick_femur(grid)
    labels = region_labels(mask, grid, frame())
    assert labels.dtype == np.uint8 and labels.shape == mask.shape
    assert not labels[~mask].any()
    idx = np.argwhere(mask)
    np.testing.assert_array_equal(labels[mask], region_of_points(grid.index_to_world(idx), frame()))
    counts = np.bincount(labels[mask], minlength=5)
    assert all(counts[c] > 500 for c in (HEAD, NECK, TROCHANTER, INTERTROCHANTER))
    # The neck slab cuts the neck cylinder (r 14, inside the radial limit): π r² × 10 mm.
    assert counts[NECK] == pytest.approx(math.pi * 14.0**2 * 10.0, rel=0.03)


def test_region_labels_do_not_depend_on_the_grid_direction() -> None:
    shape, spacing = (80, 40, 60), (1.0, 1.0, 1.0)
    g1 = Grid(shape_zyx=shape, spacing_zyx=spacing, origin_xyz=(-20.0, -20.0, -50.0))
    # The same voxels, x index running the other way (direction flipped, origin at the other end).
    g2 = Grid(shape_zyx=shape, spacing_zyx=spacing, origin_xyz=(-20.0 + (shape[2] - 1), -20.0, -50.0),
              direction=(-1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0))
    m1 = stick_femur(g1)
    m2 = stick_femur(g2)
    np.testing.assert_array_equal(m2, m1[:, :, ::-1])
    np.testing.assert_array_equal(region_labels(m2, g2, frame()), region_labels(m1, g1, frame())[:, :, ::-1])


def test_bad_options_and_inputs_are_refused() -> None:
    with pytest.raises(ValueError):
        RegionOptions(neck_slab_mm=0.0)
    with pytest.raises(ValueError):
        RegionOptions(distal_mm=-5.0)
    with pytest.raises(ValueError):
        RegionOptions(split_angle_deg=95.0)
    grid = Grid(shape_zyx=(4, 4, 4), spacing_zyx=(1.0, 1.0, 1.0))
    with pytest.raises(ValueError, match="shape"):
        region_labels(np.ones((3, 4, 4), bool), grid, frame())
    straight = FemurFrame(side="right", head_center_xyz=C, head_radius_mm=R, head_residual_mm=0.0,
                          neck_axis_xyz=-S, neck_center_xyz=N, neck_width_mm=28.0, shaft_axis_xyz=S,
                          shaft_point_xyz=B)
    with pytest.raises(ValueError, match="parallel"):
        region_of_points(np.zeros((1, 3)), straight)
    assert region_labels(np.zeros((4, 4, 4), bool), grid, frame()).sum() == 0
