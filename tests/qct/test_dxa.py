"""DXA-like projection, areal BMD and T-scores (`femurseg.qct.dxa`)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from femurseg.geometry import Grid
from femurseg.qct.dxa import NHANES_III, ArealBMD, areal_bmd, dxa_axes, project_dxa, t_score
from femurseg.qct.frame import FemurFrame
from femurseg.qct.regions import INTERTROCHANTER, NECK, TROCHANTER, RegionOptions, region_labels

# A right femur: shaft along −z through the origin, neck axis 40° above medial (+x); the neck–shaft plane is
# y = const, so the DXA view is +y (posterior), vertical +z and horizontal +x.
ELEV = math.radians(40.0)
U = np.array([math.cos(ELEV), 0.0, math.sin(ELEV)])
S = np.array([0.0, 0.0, -1.0])
C = 50.0 * U


def frame(side: str = "right") -> FemurFrame:
    m = np.array([1.0, 1.0, 1.0]) if side == "right" else np.array([-1.0, 1.0, 1.0])
    return FemurFrame(side=side, head_center_xyz=C * m, head_radius_mm=22.0, head_residual_mm=0.1,
                      neck_axis_xyz=U * m, neck_center_xyz=25.0 * U * m, neck_width_mm=28.0, shaft_axis_xyz=S,
                      shaft_point_xyz=np.array([0.0, 0.0, -30.0]))


def grid_around(half_xyz: tuple[float, float, float], h: float, direction: np.ndarray | None = None) -> Grid:
    """A grid of spacing ``h`` covering ±half around the origin (rotated by ``direction`` if given)."""
    n_xyz = [int(math.ceil(2 * a / h)) + 1 for a in half_xyz]
    d = np.eye(3) if direction is None else direction
    origin = -d @ ((np.asarray(n_xyz) - 1) / 2.0 * h) + np.array([0.13, -0.21, 0.07])
    return Grid(shape_zyx=tuple(n_xyz[::-1]), spacing_zyx=(h, h, h),  # type: ignore[arg-type]
                origin_xyz=tuple(float(v) for v in origin), direction=tuple(float(v) for v in d.ravel()))


def project_solid(inside, grid: Grid, rho: float, code: int = TROCHANTER):  # noqa: ANN001, ANN201
    p = grid.world_coordinates()
    mask = inside(p)
    density = np.where(mask, rho, 0.0).astype(np.float32)
    regions = np.where(mask, code, 0).astype(np.uint8)
    return project_dxa(density, mask, regions, grid, frame(), density_unit="mg/cm³ K2HPO4"), mask


def test_pose_axes_for_both_sides() -> None:
    hor, ver, view = dxa_axes(frame("right"))
    np.testing.assert_allclose(view, [0.0, 1.0, 0.0], atol=1e-12)  # seen from the front: looking posteriorly
    np.testing.assert_allclose(ver, [0.0, 0.0, 1.0], atol=1e-12)  # proximal up
    np.testing.assert_allclose(hor, [1.0, 0.0, 0.0], atol=1e-12)  # the patient's left on the image's right
    hor, ver, view = dxa_axes(frame("left"))
    np.testing.assert_allclose(view, [0.0, 1.0, 0.0], atol=1e-12)
    np.testing.assert_allclose(hor, [1.0, 0.0, 0.0], atol=1e-12)
    # Anteversion (neck rotated 15° anteriorly) is removed: the view stays orthogonal to the neck and the shaft.
    av = math.radians(15.0)
    u = np.array([math.cos(ELEV) * math.cos(av), -math.cos(ELEV) * math.sin(av), math.sin(ELEV)])
    f = FemurFrame(side="right", head_center_xyz=50 * u, head_radius_mm=22.0, head_residual_mm=0.0, neck_axis_xyz=u,
                   neck_center_xyz=25 * u, neck_width_mm=28.0, shaft_axis_xyz=S, shaft_point_xyz=np.zeros(3))
    hor, ver, view = dxa_axes(f)
    assert abs(view @ u) < 1e-12 and abs(view @ S) < 1e-12 and view[1] > 0.9
    np.testing.assert_allclose(np.cross(view, ver), hor, atol=1e-12)


def test_uniform_slab_gives_density_times_thickness() -> None:
    rho, t_mm = 250.0, 20.0  # mg/cm³, mm along the view (y)
    grid = grid_around((20.0, 14.0, 25.0), 0.5)

    def slab(p: np.ndarray) -> np.ndarray:
        return (np.abs(p[..., 0] - 1.3) <= 15.0) & (np.abs(p[..., 1]) <= t_mm / 2) & (np.abs(p[..., 2] + 2.2) <= 20.0)

    proj, mask = project_solid(slab, grid, rho)
    assert proj.unit == "g/cm² K2HPO4" and proj.image_g_cm2.shape == proj.regions.shape
    out = areal_bmd(proj)
    expected = rho * (t_mm / 10.0) / 1000.0  # 0.5 g/cm²
    troch = out["trochanter"]
    assert troch.abmd_g_cm2 == pytest.approx(expected, rel=0.01)
    assert troch.bmc_g == pytest.approx(float(mask.sum()) * 0.125 * rho / 1e6, rel=1e-6)  # all mineral projected
    assert troch.area_cm2 == pytest.approx(3.0 * 4.0, rel=0.02)
    assert np.median(proj.image_g_cm2[proj.regions == TROCHANTER]) == pytest.approx(expected, rel=1e-3)
    assert out["total_hip"].abmd_g_cm2 == pytest.approx(troch.abmd_g_cm2)
    assert out["total_hip"].t_score == pytest.approx(t_score(troch.abmd_g_cm2, "total_hip"))
    # Empty regions: NaN, no T-score, no crash.
    assert math.isnan(out["neck"].abmd_g_cm2) and out["neck"].t_score is None and out["neck"].area_cm2 == 0.0
    assert out["trochanter"].t_score is None
    # The slab's centre lands where world_to_pixel says.
    row, col = proj.world_to_pixel(np.array([1.3, 0.0, -2.2]))
    rows, cols = np.nonzero(proj.regions == TROCHANTER)
    assert 0.5 * (rows.min() + rows.max()) == pytest.approx(row, abs=0.6)
    assert 0.5 * (cols.min() + cols.max()) == pytest.approx(col, abs=0.6)


AXIS = np.array([math.cos(math.radians(20.0)), 0.0, math.sin(math.radians(20.0))])


def cylinder(p: np.ndarray) -> np.ndarray:
    """A cylinder (r 10 mm, 40 mm long) in the image plane, its axis 20° from the image's rows (so that its outline
    does not run along the pixels)."""
    q = p - np.array([0.0, 0.0, 3.0])
    t = q @ AXIS
    return (np.linalg.norm(q - t[..., None] * AXIS, axis=-1) <= 10.0) & (np.abs(t) <= 20.0)


def test_cylinder_abmd_is_analytic_and_does_not_depend_on_the_voxel_size() -> None:
    rho = 300.0
    expected = rho * math.pi * 1.0 / 2.0 / 1000.0  # ρ π r² L / (2 r L) with r = 1 cm
    values = {}
    for h in (1.0, 0.5):
        proj, _ = project_solid(cylinder, grid_around((25.0, 12.0, 20.0), h), rho)
        values[h] = areal_bmd(proj)["trochanter"]
        assert values[h].abmd_g_cm2 == pytest.approx(expected, rel=0.02)
        assert values[h].area_cm2 == pytest.approx(2.0 * 4.0, rel=0.02)
    assert values[1.0].abmd_g_cm2 == pytest.approx(values[0.5].abmd_g_cm2, rel=0.02)


def test_projection_does_not_depend_on_the_grid_orientation() -> None:
    rho = 300.0
    straight, _ = project_solid(cylinder, grid_around((25.0, 12.0, 20.0), 0.8), rho)
    a, b = math.radians(25.0), math.radians(-35.0)
    rz = np.array([[math.cos(a), -math.sin(a), 0], [math.sin(a), math.cos(a), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, math.cos(b), -math.sin(b)], [0, math.sin(b), math.cos(b)]])
    oblique, _ = project_solid(cylinder, grid_around((27.0, 27.0, 27.0), 0.8, rz @ rx), rho)
    s, o = areal_bmd(straight)["trochanter"], areal_bmd(oblique)["trochanter"]
    assert o.abmd_g_cm2 == pytest.approx(s.abmd_g_cm2, rel=0.02)
    assert o.area_cm2 == pytest.approx(s.area_cm2, rel=0.02)
    assert o.bmc_g == pytest.approx(s.bmc_g, rel=0.02)


def test_regions_project_to_a_neck_band_and_stop_at_the_distal_line() -> None:
    h = 1.0
    grid = grid_around((45.0, 25.0, 70.0), h)
    p = grid.world_coordinates()
    t = p @ U
    mask = ((np.hypot(p[..., 0], p[..., 1]) <= 14.0) & (p[..., 2] >= -65.0) & (p[..., 2] <= 12.0)) | (
        (np.linalg.norm(p - t[..., None] * U, axis=-1) <= 14.0) & (t >= 0.0) & (t <= 50.0)) | (
        np.linalg.norm(p - C, axis=-1) <= 22.0)
    opt = RegionOptions(neck_slab_mm=10.0, distal_mm=40.0)
    codes = region_labels(mask, grid, frame(), opt)
    density = np.where(mask, 400.0, 0.0)
    proj = project_dxa(density, mask, codes, grid, frame())
    assert proj.unit == "g/cm²"
    out = areal_bmd(proj)
    assert set(out) == {"neck", "trochanter", "intertrochanter", "total_hip"}
    assert all(isinstance(a, ArealBMD) and a.area_cm2 > 0 for a in out.values())
    # The neck band: its pixels span neck_slab_mm along the neck axis (in the image plane).
    rows, cols = np.nonzero(proj.regions == NECK)
    world = proj.pixel_to_world(rows, cols)
    along = (world - frame().neck_center_xyz) @ U
    assert along.max() - along.min() == pytest.approx(10.0 - h, abs=1.01 * h)
    # Nothing of the hip regions below the distal line (40 mm below the neck base).
    hip = np.isin(proj.regions, (NECK, TROCHANTER, INTERTROCHANTER))
    rows, cols = np.nonzero(hip)
    depth_below_base = -(proj.pixel_to_world(rows, cols)[:, 2])
    assert depth_below_base.max() <= 40.0 + h
    # The total hip's BMC is the sum of its parts; its area too.
    parts = [out[n] for n in ("neck", "trochanter", "intertrochanter")]
    assert out["total_hip"].bmc_g == pytest.approx(sum(a.bmc_g for a in parts))
    assert out["total_hip"].area_cm2 == pytest.approx(sum(a.area_cm2 for a in parts))
    assert out["neck"].t_score == pytest.approx(t_score(out["neck"].abmd_g_cm2, "neck"))
    # The neck box's aBMD: a cylinder of 400 mg/cm³ and r 1.4 cm seen side-on, ρ π r / 2.
    assert out["neck"].abmd_g_cm2 == pytest.approx(0.4 * math.pi * 1.4 / 2.0, rel=0.03)


def test_t_scores_against_nhanes_iii() -> None:
    assert NHANES_III["neck"] == (0.858, 0.120) and NHANES_III["total_hip"] == (0.942, 0.122)
    assert t_score(0.858, "neck") == 0.0
    assert t_score(0.738, "neck") == pytest.approx(-1.0)
    assert t_score(0.942, "total_hip") == 0.0
    assert t_score(0.942 - 2.5 * 0.122, "total hip") == pytest.approx(-2.5)
    assert t_score(0.6, "femoral_neck") == pytest.approx((0.6 - 0.858) / 0.120)
    assert math.isnan(t_score(float("nan"), "neck"))
    for bad in ("trochanter", "spine", ""):
        with pytest.raises(ValueError):
            t_score(0.8, bad)


def test_areal_to_dict_and_input_checks() -> None:
    a = ArealBMD(region="neck", bmc_g=3.1, area_cm2=4.9, abmd_g_cm2=3.1 / 4.9, t_score=-1.23)
    d = a.to_dict()
    assert d == {"region": "neck", "bmc_g": 3.1, "area_cm2": 4.9, "abmd_g_cm2": round(3.1 / 4.9, 4),
                 "t_score": -1.23}
    empty = ArealBMD(region="neck", bmc_g=0.0, area_cm2=0.0, abmd_g_cm2=float("nan"), t_score=None).to_dict()
    assert empty["abmd_g_cm2"] is None and empty["t_score"] is None
    grid = Grid(shape_zyx=(4, 4, 4), spacing_zyx=(1.0, 1.0, 1.0))
    with pytest.raises(ValueError, match="shape"):
        project_dxa(np.zeros((4, 4, 3)), np.zeros((4, 4, 4), bool), np.zeros((4, 4, 4)), grid, frame())
    proj = project_dxa(np.zeros((4, 4, 4)), np.zeros((4, 4, 4), bool), np.zeros((4, 4, 4)), grid, frame())
    assert not proj.regions.any() and all(math.isnan(v.abmd_g_cm2) for v in areal_bmd(proj).values())
