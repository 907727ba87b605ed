"""The phantom's anatomy: determinism, sides, head size, the hip joint space, cortex, variability, speed paths."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from scipy.spatial import cKDTree
from skimage.measure import marching_cubes

from femurseg.errors import InputError
from femurseg.geometry import Grid
from femurseg.phantom._meshes import fit_sphere
from femurseg.phantom.anatomy import (
    HEAD_DIAMETER_RANGE_MM,
    AnatomyParams,
    build_skeleton,
    sample_anatomy,
)
from femurseg.phantom.fields import BONE_NAMES


def _params(seed: int, sex: str = "F", age: float = 65.0) -> AnatomyParams:
    return sample_anatomy(np.random.default_rng(seed), sex=sex, age=age)


def _hip_grid(params: AnatomyParams, spacing: float = 2.0) -> Grid:
    """A coarse axial grid over both hips, from 50 mm above to 120 mm below the hip centres."""
    c = np.asarray(params.hip_center_xyz)
    n = (int(170 / spacing), int(200 / spacing), int(320 / spacing))
    return Grid(shape_zyx=n, spacing_zyx=(spacing,) * 3, origin_xyz=tuple(c + np.array([-160.0, -100.0, -120.0])))


def _box_grid(centre: np.ndarray, half: float, spacing: float) -> Grid:
    n = int(round(2 * half / spacing)) + 1
    return Grid(shape_zyx=(n, n, n), spacing_zyx=(spacing,) * 3, origin_xyz=tuple(np.asarray(centre) - half))


def _full(field, grid: Grid, fill: float = 1e3) -> np.ndarray:
    out = np.full(grid.shape_zyx, fill, dtype=np.float32)
    out[field.box] = field.sdf
    return out


def _surface(sdf: np.ndarray, grid: Grid) -> np.ndarray:
    """World points of the zero level set (marching cubes) of an axis-aligned grid's field."""
    verts, *_ = marching_cubes(sdf, level=0.0, spacing=grid.spacing_zyx)
    return verts[:, ::-1] + np.asarray(grid.origin_xyz)


@pytest.fixture(scope="module")
def skeleton():
    params = _params(7, "M", 55.0)
    return params, build_skeleton(params)


def test_same_seed_same_fields() -> None:
    p1, p2 = _params(11), _params(11)
    assert p1 == p2
    g = _hip_grid(p1, 3.0)
    f1, f2 = build_skeleton(p1).sample(g), build_skeleton(p2).sample(g)
    assert set(f1) == set(BONE_NAMES)
    for name in f1:
        assert f1[name].box == f2[name].box
        for attr in ("sdf", "cortex_mm", "trabecular"):
            a, b = getattr(f1[name], attr), getattr(f2[name], attr)
            assert a.dtype == np.float32 and a.shape == f1[name].sdf.shape
            np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("tilt", [(-4.0, 4.0, -4.0), (4.0, -4.0, 4.0), (0.0, 0.0, 0.0)])
def test_right_femur_at_smaller_world_x(tilt: tuple[float, float, float]) -> None:
    params = dataclasses.replace(_params(3), tilt_lr_deg=tilt[0], tilt_ap_deg=tilt[1], tilt_si_deg=tilt[2])
    sk = build_skeleton(params)
    heads = sk.landmarks.head_center_xyz
    assert heads["right"][0] < heads["left"][0] - 100.0
    g = _hip_grid(params, 3.0)
    fields = sk.sample(g, names=("femur_right", "femur_left"))
    xs = {}
    for name, f in fields.items():
        idx = np.argwhere(f.sdf < 0) + np.array([s.start for s in f.box])
        xs[name] = g.index_to_world(idx)[:, 0].mean()
    assert xs["femur_right"] < xs["femur_left"]


@pytest.mark.parametrize("sex", ["F", "M"])
def test_head_diameter_in_sex_range_and_realised(sex: str) -> None:
    lo, hi = HEAD_DIAMETER_RANGE_MM[sex]
    for seed in range(4):
        params = _params(100 + seed, sex, 40.0 + 10 * seed)
        facts = build_skeleton(params).facts()
        for side in ("right", "left"):
            d = facts[f"{side}_head_diameter_mm"]
            assert lo - 0.5 <= d <= hi + 0.5
            assert abs(d - 2.0 * getattr(params, side).head_radius_mm) < 0.5


@pytest.mark.parametrize("seed", [21, 22, 23])
def test_joint_space_measured_on_fine_grid(seed: int) -> None:
    """On a 0.5 mm grid around each head: the smallest femur–pelvis surface distance over the cup is the
    sampled joint space (±0.5 mm) and in [1.5, 5] mm; the femur and the pelvis never overlap; the head measured
    on the voxels is the parameter's sphere."""
    params = _params(seed, "M" if seed % 2 else "F", 70.0)
    sk = build_skeleton(params)
    for side in ("right", "left"):
        p = getattr(params, side)
        centre = sk.landmarks.head_center_xyz[side]
        grid = _box_grid(centre, p.head_radius_mm + p.joint_space_mm + 6.0, 0.5)
        fields = sk.sample(grid, names=(f"femur_{side}", f"pelvis_{side}"))
        fem, pel = _full(fields[f"femur_{side}"], grid), _full(fields[f"pelvis_{side}"], grid)
        assert not np.any((fem < 0) & (pel < 0))
        fs, ps = _surface(fem, grid), _surface(pel, grid)
        r_in = p.head_radius_mm + p.joint_space_mm
        cup = ps[np.linalg.norm(ps - centre, axis=1) < r_in + 1.0]
        assert len(cup) > 500, "no acetabular cup around the head"
        gap = cKDTree(fs).query(cup)[0].min()
        assert 1.5 <= gap <= 5.0
        assert abs(gap - p.joint_space_mm) < 0.5
        # The cup covers the upper half of the head: bone above the head centre over the joint space.
        top = centre + np.array([0.0, 0.0, r_in + 1.0])
        assert sk.evaluate(f"pelvis_{side}", top[None], fields=False)[0] < 0
        head = fs[np.linalg.norm(fs - centre, axis=1) < p.head_radius_mm + 0.5]
        head = head[(head - centre)[:, 2] > 0.3 * p.head_radius_mm]
        _, r = fit_sphere(head)
        assert abs(2 * r - 2 * p.head_radius_mm) < 0.5


def test_no_femur_pelvis_overlap_over_the_hips(skeleton) -> None:
    params, sk = skeleton
    g = _hip_grid(params, 1.5)
    f = sk.sample(g)
    for fem in ("femur_right", "femur_left"):
        for pel in ("pelvis_right", "pelvis_left", "sacrum"):
            assert not np.any((_full(f[fem], g) < 0) & (_full(f[pel], g) < 0)), (fem, pel)


def test_cortex_thicker_in_shaft_than_head(skeleton) -> None:
    params, sk = skeleton
    lm = sk.landmarks
    head = lm.head_center_xyz["right"]
    shaft = lm.shaft_point_xyz["right"] + 80.0 * lm.shaft_direction_xyz["right"]
    out = {}
    for name, c in (("head", head + np.array([0.0, 0.0, 10.0])), ("shaft", shaft)):
        g = _box_grid(c, 16.0, 1.0)
        f = sk.sample(g, names=("femur_right",))["femur_right"]
        skin = (f.sdf < 0) & (f.sdf > -0.8)
        out[name] = float(np.median(f.cortex_mm[skin]))
        if name == "shaft":
            deep = f.sdf < -8.0
            assert deep.any() and float(f.trabecular[deep].max()) < 0.05  # marrow canal
        else:
            assert float(f.trabecular[f.sdf < -5.0].min()) > 0.95
    assert out["head"] < 1.2
    assert out["shaft"] > 3.0 * out["head"]
    assert out["shaft"] > 3.0


def test_shapes_differ_between_seeds() -> None:
    masks = []
    for seed in (31, 32):
        params = _params(seed, "M")
        sk = build_skeleton(params)
        g = _box_grid(sk.landmarks.head_center_xyz["right"] + np.array([-30.0, 0.0, -40.0]), 60.0, 2.0)
        f = sk.sample(g, names=("femur_right",))["femur_right"]
        masks.append(_full(f, g) < 0)
    a, b = masks
    dice = 2 * (a & b).sum() / (a.sum() + b.sum())
    assert dice < 0.95


def test_grid_far_away_gives_no_bones(skeleton) -> None:
    params, sk = skeleton
    g = _box_grid(np.asarray(params.hip_center_xyz) + np.array([0.0, 0.0, 900.0]), 20.0, 2.0)
    assert sk.sample(g) == {}


def test_oblique_anisotropic_grid_matches_exact_evaluation(skeleton) -> None:
    params, sk = skeleton
    c = sk.landmarks.head_center_xyz["left"]
    rot = np.array([[0.94, -0.34, 0.0], [0.34, 0.94, 0.0], [0.0, 0.0, 1.0]])
    rot /= np.linalg.norm(rot, axis=0)
    g = Grid(shape_zyx=(40, 60, 70), spacing_zyx=(1.7, 0.9, 0.8), origin_xyz=tuple(c - 30.0),
             direction=tuple(rot.ravel()))
    for name, f in sk.sample(g, names=("femur_left", "pelvis_left")).items():
        idx = np.argwhere(np.ones(f.sdf.shape, bool)) + np.array([s.start for s in f.box])
        exact = sk.evaluate(name, g.index_to_world(idx), fields=False).reshape(f.sdf.shape)
        near = (exact < 1.0) & (exact > -(f.cortex_mm + 0.5))
        assert near.any()
        np.testing.assert_allclose(f.sdf[near], exact[near], atol=1e-3)
        assert np.array_equal(f.sdf < 0, exact < 0)


def test_params_to_dict_flat_and_json_able(skeleton) -> None:
    import json

    params, sk = skeleton
    d = params.to_dict()
    json.dumps(d)
    assert d["right_head_radius_mm"] == params.right.head_radius_mm
    assert all(not isinstance(v, (dict, list, tuple)) for v in d.values())
    facts = sk.facts()
    json.dumps(facts)
    assert abs(facts["right_joint_space_mm"] - params.right.joint_space_mm) < 0.2


def test_bad_sex_is_an_input_error() -> None:
    with pytest.raises(InputError):
        sample_anatomy(np.random.default_rng(0), sex="X", age=50.0)


def test_shaft_continues_below_the_template(skeleton) -> None:
    """No cut end in any field of view: far down the shaft (beyond the voxelised template) the femur goes on with
    the cross-section it has higher up."""
    params, sk = skeleton
    lm = sk.landmarks
    areas = []
    for below in (120.0, 300.0):
        c = lm.shaft_point_xyz["right"] + below * lm.shaft_direction_xyz["right"]
        g = _box_grid(c, 30.0, 1.0)
        f = sk.sample(g, names=("femur_right",))["femur_right"]
        full = _full(f, g)
        areas.append([(full[k] < 0).sum() for k in (20, 30, 40)])
    a_mid, a_far = np.mean(areas[0]), np.mean(areas[1])
    assert a_far > 200  # mm² of shaft in each slice
    assert min(areas[1]) > 0.6 * a_mid
