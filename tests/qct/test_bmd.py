"""Volumetric BMD by compartment (`femurseg.qct.bmd`) on analytic shapes."""

from __future__ import annotations

import math

import numpy as np
import pytest

from femurseg.geometry import Grid
from femurseg.qct.bmd import CompartmentOptions, RegionDensity, compartments, depth_mm, region_densities
from femurseg.qct.regions import HEAD, INTERTROCHANTER, NECK, TROCHANTER
from femurseg.qct.units import Material

UNIT = Material.K2HPO4.unit


def ball_grid(radius: float, spacing_zyx: tuple[float, float, float], margin: float = 3.0) -> tuple[Grid, np.ndarray]:
    """A grid centred on the origin holding a ball of ``radius`` [mm]; returns the grid and each voxel's radius."""
    sp = np.asarray(spacing_zyx, float)
    n = np.ceil(2.0 * (radius + margin) / sp).astype(int)
    origin_zyx = -(n - 1) / 2.0 * sp + 0.17  # off-centre: no symmetric voxel ties
    grid = Grid(shape_zyx=tuple(int(v) for v in n), spacing_zyx=tuple(spacing_zyx),  # type: ignore[arg-type]
                origin_xyz=tuple(float(v) for v in origin_zyx[::-1]))  # type: ignore[arg-type]
    r = np.linalg.norm(grid.world_coordinates(), axis=-1)
    return grid, r


@pytest.mark.parametrize("spacing", [(0.5, 0.5, 0.5), (1.0, 0.5, 0.5)])
def test_compartment_volumes_of_a_ball_match_the_analytic_ones(spacing: tuple[float, float, float]) -> None:
    radius, peel = 15.0, 3.0
    grid, r = ball_grid(radius, spacing)
    mask = r <= radius
    density = np.where(mask, 600.0, 0.0)  # all above the cortical threshold
    trab, cort = compartments(mask, grid, density, CompartmentOptions(peel_mm=peel, slice_margin=0.0))
    voxel = float(np.prod(spacing))
    v_all, v_trab = 4.0 / 3.0 * math.pi * radius**3, 4.0 / 3.0 * math.pi * (radius - peel) ** 3
    assert mask.sum() * voxel == pytest.approx(v_all, rel=0.01)
    assert trab.sum() * voxel == pytest.approx(v_trab, rel=0.04)
    assert cort.sum() * voxel == pytest.approx(v_all - v_trab, rel=0.04)
    assert not (trab & cort).any() and not (trab & ~mask).any() and not (cort & ~mask).any()


def test_the_peel_grows_with_the_slices() -> None:
    """Half the largest spacing is added to the peel: 3 mm at fine resolution, 4.5 mm with 3 mm slices."""
    radius = 15.0
    fine, r_fine = ball_grid(radius, (0.5, 0.5, 0.5))
    thick, r_thick = ball_grid(radius, (3.0, 0.5, 0.5))
    opt = CompartmentOptions()
    assert opt.peel_for(fine) == pytest.approx(3.25) and opt.peel_for(thick) == pytest.approx(4.5)
    for grid, r in ((fine, r_fine), (thick, r_thick)):
        mask = r <= radius
        trab, _ = compartments(mask, grid, np.where(mask, 600.0, 0.0), opt)
        expected = 4.0 / 3.0 * math.pi * (radius - opt.peel_for(grid)) ** 3
        assert trab.sum() * float(np.prod(grid.spacing_zyx)) == pytest.approx(expected, rel=0.06)
    with pytest.raises(ValueError, match="slice_margin"):
        CompartmentOptions(slice_margin=-0.1)


def test_depth_below_the_surface_of_a_ball() -> None:
    radius = 12.0
    grid, r = ball_grid(radius, (0.5, 0.5, 0.5))
    mask = r <= radius
    depth = depth_mm(mask, grid)
    assert depth.dtype == np.float32 and not depth[~mask].any()
    inner = mask & (r < radius - 1.0)
    np.testing.assert_allclose(depth[inner], radius - r[inner], atol=0.3)


def test_cortical_needs_the_density_threshold_and_an_empty_compartment_is_nan() -> None:
    grid, r = ball_grid(10.0, (0.5, 0.5, 0.5))
    mask = r <= 10.0
    density = np.where(mask, 200.0, 0.0)  # trabecular-like everywhere: no voxel reaches 350
    trab, cort = compartments(mask, grid, density)
    assert trab.any() and not cort.any()
    regions = np.where(mask, NECK, 0)
    d = region_densities(density, mask, regions, grid, unit=UNIT)
    neck = d["neck"]
    assert neck.cortical_volume_cm3 == 0.0 and math.isnan(neck.cortical_vbmd)
    assert neck.trabecular_vbmd == pytest.approx(200.0) and neck.integral_vbmd == pytest.approx(200.0)
    assert neck.to_dict()["cortical_vbmd_mg_cm3"] is None


def test_bmc_is_density_times_volume_per_region_and_total_hip_is_their_union() -> None:
    radius = 12.0
    grid, r = ball_grid(radius, (0.5, 0.5, 0.5))
    mask = r <= radius
    density = np.where(r <= 8.0, 150.0, 800.0) * mask  # trabecular core, dense 4 mm shell
    x = grid.world_coordinates()[..., 0]
    regions = np.where(x < 0.0, NECK, np.where(x < 4.0, TROCHANTER, INTERTROCHANTER)) * mask
    regions[0, 0, 0] = HEAD  # outside the mask: ignored
    fixed = CompartmentOptions(slice_margin=0.0)  # the 3 mm peel alone, for the values by hand
    out = region_densities(density, mask, regions, grid, unit=UNIT, options=fixed)
    assert list(out) == ["head", "neck", "trochanter", "intertrochanter", "total_hip"]
    voxel_cm3 = 0.5**3 / 1000.0
    for name, code in (("neck", NECK), ("trochanter", TROCHANTER), ("intertrochanter", INTERTROCHANTER)):
        sel = mask & (regions == code)
        d = out[name]
        assert d.n_voxels == int(sel.sum())
        assert d.volume_cm3 == pytest.approx(sel.sum() * voxel_cm3)
        assert d.bmc_mg == pytest.approx(float(density[sel].sum()) * voxel_cm3)
        assert d.integral_vbmd == pytest.approx(d.bmc_mg / d.volume_cm3)
        assert d.unit == UNIT
    total = out["total_hip"]
    assert total.volume_cm3 == pytest.approx(4.0 / 3.0 * math.pi * radius**3 / 1000.0, rel=0.01)
    assert total.bmc_mg == pytest.approx(sum(out[n].bmc_mg for n in ("neck", "trochanter", "intertrochanter")))
    # By hand: 150 mg/cm³ in r ≤ 8 and 800 in the shell.
    v_core, v_all = 4.0 / 3.0 * math.pi * 8.0**3 / 1000.0, 4.0 / 3.0 * math.pi * radius**3 / 1000.0
    assert total.bmc_mg == pytest.approx(150.0 * v_core + 800.0 * (v_all - v_core), rel=0.01)
    # Trabecular compartment (deeper than 3 mm, r < 9): the core at 150 and a 1 mm rind at 800.
    v_trab = 4.0 / 3.0 * math.pi * 9.0**3 / 1000.0
    assert total.trabecular_volume_cm3 == pytest.approx(v_trab, rel=0.05)
    assert total.cortical_vbmd == pytest.approx(800.0)
    assert total.cortical_volume_cm3 == pytest.approx(v_all - v_trab, rel=0.05)
    # The empty head: zero volume, NaN densities, no crash.
    head = out["head"]
    assert head.n_voxels == 0 and head.volume_cm3 == 0.0 and head.bmc_mg == 0.0
    assert math.isnan(head.integral_vbmd) and math.isnan(head.trabecular_vbmd) and math.isnan(head.cortical_vbmd)


def test_to_dict_names_units_and_carries_the_unit() -> None:
    d = RegionDensity(region="neck", unit=Material.HA.unit, volume_cm3=5.0, bmc_mg=1500.0, integral_vbmd=300.0,
                      trabecular_volume_cm3=2.0, trabecular_vbmd=150.0, cortical_volume_cm3=0.0,
                      cortical_vbmd=float("nan"), n_voxels=10)
    got = d.to_dict()
    assert got["unit"] == "mg/cm³ HA" and got["region"] == "neck"
    assert got["volume_cm3"] == 5.0 and got["bmc_mg"] == 1500.0 and got["integral_vbmd_mg_cm3"] == 300.0
    assert got["trabecular_vbmd_mg_cm3"] == 150.0 and got["cortical_vbmd_mg_cm3"] is None
    assert {"trabecular_volume_cm3", "cortical_volume_cm3", "n_voxels"} <= set(got)


def test_cut_face_at_the_array_border_and_an_enclosed_cavity_are_not_peeled() -> None:
    # A cylinder (r 10) along z filling the array's length: its ends are cut by the array, not bone surfaces.
    grid = Grid(shape_zyx=(20, 50, 50), spacing_zyx=(2.0, 0.5, 0.5), origin_xyz=(-12.25, -12.25, 0.0))
    p = grid.world_coordinates()
    radial = np.hypot(p[..., 0], p[..., 1])
    mask = radial <= 10.0
    trab, _ = compartments(mask, grid, np.full(mask.shape, 600.0), CompartmentOptions(slice_margin=0.0))
    length_cm = 20 * 2.0 / 10.0
    assert trab.sum() * 0.5 * 0.5 * 2.0 / 1000.0 == pytest.approx(math.pi * 0.7**2 * length_cm, rel=0.04)
    assert trab[0].sum() == trab[10].sum()  # the end slices are as deep as the middle
    # A ball with an enclosed cavity (r 3) at its centre: the cavity is filled for the depth, not a surface.
    g2, r = ball_grid(12.0, (0.5, 0.5, 0.5))
    solid = r <= 12.0
    hollow = solid & (r > 3.0)
    t_solid, _ = compartments(solid, g2, np.full(solid.shape, 600.0))
    t_hollow, _ = compartments(hollow, g2, np.full(solid.shape, 600.0))
    np.testing.assert_array_equal(t_hollow, t_solid & hollow)


def test_shapes_options_and_an_empty_mask() -> None:
    grid = Grid(shape_zyx=(6, 6, 6), spacing_zyx=(1.0, 1.0, 1.0))
    empty = np.zeros((6, 6, 6), bool)
    out = region_densities(np.zeros((6, 6, 6)), empty, np.zeros((6, 6, 6), np.uint8), grid, unit=UNIT)
    assert all(d.n_voxels == 0 and math.isnan(d.integral_vbmd) for d in out.values())
    with pytest.raises(ValueError, match="shape"):
        region_densities(np.zeros((5, 6, 6)), empty, np.zeros((6, 6, 6), np.uint8), grid, unit=UNIT)
    with pytest.raises(ValueError):
        CompartmentOptions(peel_mm=-1.0)
    full = np.ones((6, 6, 6), bool)  # no surface in view: all trabecular
    trab, cort = compartments(full, grid, np.full((6, 6, 6), 900.0))
    assert trab.all() and not cort.any()
