"""femur_frame on analytic femurs: a sphere head, a cylinder neck at a known neck-shaft angle and anteversion, a
cylinder shaft and a greater-trochanter ball, labelled by femurseg's convention (a voxel is femur when at least
FEMUR_LABEL_FRACTION of it is bone), on isotropic, anisotropic, flipped and oblique grids."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np
import pytest

from femurseg.conventions import FEMUR_LABEL_FRACTION
from femurseg.errors import InputError
from femurseg.geometry import Grid
from femurseg.qct.frame import FemurFrame, femur_frame


def _unit(v) -> np.ndarray:  # noqa: ANN001
    v = np.asarray(v, float)
    return v / np.linalg.norm(v)


def _rotation(axis, deg: float) -> np.ndarray:  # noqa: ANN001
    """Rotation matrix about ``axis`` by ``deg`` degrees (Rodrigues)."""
    k = _unit(axis)
    kx = np.array([[0.0, -k[2], k[1]], [k[2], 0.0, -k[0]], [-k[1], k[0], 0.0]])
    a = math.radians(deg)
    return np.eye(3) + math.sin(a) * kx + (1.0 - math.cos(a)) * kx @ kx


def _cylinder_sdf(p: np.ndarray, a: np.ndarray, b: np.ndarray, r: float) -> np.ndarray:
    """Signed distance of points (..., 3) to the flat-ended cylinder of radius ``r`` on the segment a–b [mm]."""
    axis = b - a
    length = float(np.linalg.norm(axis))
    axis = axis / length
    rel = p - a
    t = rel @ axis
    radial = np.linalg.norm(rel - t[..., None] * axis, axis=-1) - r
    along = np.maximum(-t, t - length)
    outside = np.sqrt(np.maximum(radial, 0.0) ** 2 + np.maximum(along, 0.0) ** 2)
    return outside + np.minimum(np.maximum(radial, along), 0.0)


@dataclass(frozen=True)
class AnalyticFemur:
    """A right (or mirrored left) proximal femur made of simple solids, world LPS [mm]."""

    side: str = "right"
    head_center: tuple[float, float, float] = (-90.0, 10.0, -60.0)
    radius: float = 22.0
    nsa_deg: float = 128.0
    anteversion_deg: float = 12.0
    neck_length: float = 48.0  # head centre to the shaft axis
    neck_radius: float = 13.2  # 0.6 R
    shaft_radius: float = 14.0
    shaft_tilt: tuple[float, float, float] = (-0.08, -0.12, -1.0)  # distal, a little lateral and anterior
    shaft_below: float = 125.0  # how far the shaft reaches under the head centre [mm]
    trochanter: bool = True
    neck: bool = True
    head: bool = True

    @property
    def medial(self) -> float:
        return 1.0 if self.side == "right" else -1.0  # LPS: the right femur's medial side is +x

    @property
    def shaft_dir(self) -> np.ndarray:
        t = np.asarray(self.shaft_tilt, float)
        return _unit([t[0] * self.medial, t[1], t[2]])

    @property
    def neck_dir(self) -> np.ndarray:
        """Unit direction from the neck's base to the head."""
        s = self.shaft_dir
        med = np.array([self.medial, 0.0, 0.0]) - self.medial * s[0] * s
        med = _unit(med)
        ant = np.cross(s, med)
        ant = -ant if ant[1] > 0 else ant  # anterior is -y
        a, v = math.radians(self.nsa_deg), math.radians(self.anteversion_deg)
        return _unit(math.cos(a) * s + math.sin(a) * (math.cos(v) * med + math.sin(v) * ant))

    @property
    def base(self) -> np.ndarray:
        """Where the neck axis meets the shaft axis [mm]."""
        return np.asarray(self.head_center, float) - self.neck_length * self.neck_dir

    @property
    def axis_length(self) -> float:
        """Head apex to the lateral cortex along the neck axis [mm]."""
        sin = math.sin(math.radians(self.nsa_deg))
        return self.radius + self.neck_length + self.shaft_radius / sin

    def sdf(self, p: np.ndarray) -> np.ndarray:
        c, s, base = np.asarray(self.head_center, float), self.shaft_dir, self.base
        top = base - 10.0 * s  # the shaft ends just above the neck's base (sections near the head stay neck)
        bottom = base + (self.shaft_below + 40.0) * s  # the shaft axis runs through the neck base along s
        d = _cylinder_sdf(p, top, bottom, self.shaft_radius)
        if self.head:
            d = np.minimum(d, np.linalg.norm(p - c, axis=-1) - self.radius)
        if self.neck:
            d = np.minimum(d, _cylinder_sdf(p, c, base, self.neck_radius))
        if self.trochanter:
            lateral = _unit(-self.neck_dir + (self.neck_dir @ s) * s)
            gt = base - 20.0 * s + 14.0 * lateral  # the greater trochanter: above the shaft, lateral of the neck
            d = np.minimum(d, np.linalg.norm(p - gt, axis=-1) - 13.0)
        return d

    def extent(self) -> tuple[np.ndarray, np.ndarray]:
        """World box [mm] holding the femur's top ``shaft_below`` mm under its head centre and more."""
        c, s = np.asarray(self.head_center, float), self.shaft_dir
        pts = np.array([c + self.radius * np.sign(v) for v in np.eye(3)] + [c - self.radius * v for v in np.eye(3)]
                       + [self.base - 35.0 * s, c + self.shaft_below * s])
        return pts.min(axis=0) - 25.0, pts.max(axis=0) + 25.0


def grid_around(lo: np.ndarray, hi: np.ndarray, spacing_zyx, direction=np.eye(3)) -> Grid:  # noqa: ANN001
    """A grid of the given spacing and direction that covers the world box lo–hi [mm]."""
    d = np.asarray(direction, float)
    corners = np.array([[x, y, z] for x in (lo[0], hi[0]) for y in (lo[1], hi[1]) for z in (lo[2], hi[2])])
    local = corners @ d  # coordinates along the index axes (x, y, z)
    spacing_xyz = np.asarray(spacing_zyx, float)[::-1]
    shape_xyz = np.ceil((local.max(axis=0) - local.min(axis=0)) / spacing_xyz).astype(int) + 1
    origin = d @ local.min(axis=0)
    return Grid(shape_zyx=tuple(int(n) for n in shape_xyz[::-1]), spacing_zyx=tuple(float(v) for v in spacing_zyx),
                origin_xyz=tuple(float(v) for v in origin), direction=tuple(float(v) for v in d.ravel()))


def label(shape_sdf, grid: Grid, cut_below_mm: float | None = None) -> np.ndarray:  # noqa: ANN001
    """femurseg's label of a solid: voxels at least FEMUR_LABEL_FRACTION full (2×2×2 sub-samples where the
    surface passes); world z under ``cut_below_mm`` cut off (a field of view)."""
    world = grid.world_coordinates()
    d = shape_sdf(world)
    spacing_xyz = np.asarray(grid.spacing_zyx, float)[::-1]
    half_diag = 0.5 * float(np.linalg.norm(spacing_xyz))
    band = np.abs(d) < half_diag
    frac = (d < 0).astype(np.float32)
    pts = world[band]
    offsets = [np.array([i, j, k]) * 0.25 * spacing_xyz for i in (-1, 1) for j in (-1, 1) for k in (-1, 1)]
    inside = sum((shape_sdf(pts + grid.direction_matrix @ o) < 0).astype(np.float32) for o in offsets)
    frac[band] = inside / len(offsets)
    mask = frac >= FEMUR_LABEL_FRACTION
    if cut_below_mm is not None:
        mask &= world[..., 2] >= cut_below_mm
    return mask


def _angle(a, b) -> float:  # noqa: ANN001
    return math.degrees(math.acos(float(np.clip(np.dot(_unit(a), _unit(b)), -1.0, 1.0))))


OBLIQUE = _rotation([1.0, 0.4, 0.2], 15.0)
FLIPPED = np.diag([-1.0, -1.0, 1.0])  # x and y reversed, as in many DICOM exports read without reorientation
CASES = {
    "iso-1mm": (AnalyticFemur(), (1.0, 1.0, 1.0), np.eye(3)),
    "aniso-0.7x0.7x3": (AnalyticFemur(nsa_deg=134.0, anteversion_deg=20.0, radius=24.0, neck_radius=14.4),
                        (3.0, 0.7, 0.7), np.eye(3)),
    "left-flipped-xy": (AnalyticFemur(side="left", head_center=(85.0, -5.0, 40.0), nsa_deg=122.0,
                                      anteversion_deg=5.0, radius=21.0, neck_radius=12.6), (1.2, 0.9, 0.9), FLIPPED),
    "oblique-15deg": (AnalyticFemur(nsa_deg=126.0, trochanter=False), (1.0, 1.0, 1.0), OBLIQUE),
}


@pytest.fixture(scope="module", params=sorted(CASES))
def case(request) -> tuple[AnalyticFemur, Grid, np.ndarray, FemurFrame]:  # noqa: ANN001
    femur, spacing, direction = CASES[request.param]
    grid = grid_around(*femur.extent(), spacing, direction)
    mask = label(femur.sdf, grid)
    return femur, grid, mask, femur_frame(mask, grid, femur.side)


def test_head_sphere(case) -> None:  # noqa: ANN001
    femur, grid, _, frame = case
    assert np.linalg.norm(frame.head_center_xyz - np.asarray(femur.head_center)) < 1.0
    assert abs(frame.head_radius_mm - femur.radius) < 0.5
    assert frame.head_residual_mm < 0.3 * max(grid.spacing_zyx)  # voxel steps
    assert frame.side == femur.side


def test_neck_and_shaft_axes(case) -> None:  # noqa: ANN001
    femur, _, _, frame = case
    assert abs(frame.neck_shaft_angle_deg - femur.nsa_deg) < 2.0
    assert _angle(frame.neck_axis_xyz, femur.neck_dir) < 2.0
    assert _angle(frame.shaft_axis_xyz, femur.shaft_dir) < 1.5
    # the shaft point lies on the true shaft axis
    rel = frame.shaft_point_xyz - femur.base
    assert np.linalg.norm(rel - (rel @ femur.shaft_dir) * femur.shaft_dir) < 1.0
    assert abs(frame.neck_length_mm - femur.neck_length) < 2.0


def test_neck_width_and_axis_length(case) -> None:  # noqa: ANN001
    femur, _, _, frame = case
    assert abs(frame.neck_width_mm - 2.0 * femur.neck_radius) < 1.5
    t = (np.asarray(femur.head_center) - frame.neck_center_xyz) @ femur.neck_dir  # along the neck from the head
    assert 0.8 * femur.radius - 0.5 <= t <= 2.5 * femur.radius + 0.5
    assert abs(frame.axis_length_mm - femur.axis_length) < 2.0
    assert frame.to_dict()["axis_length_mm"] is not None


def test_holes_in_the_head_are_filled() -> None:
    """An osteoporotic head segmented hollow (its interior left out) still fits the same sphere."""
    femur = AnalyticFemur(trochanter=False)
    grid = grid_around(*femur.extent(), (1.5, 1.0, 1.0))
    mask = label(femur.sdf, grid)
    world = grid.world_coordinates()
    mask &= np.linalg.norm(world - np.asarray(femur.head_center), axis=-1) > 0.7 * femur.radius
    frame = femur_frame(mask, grid, "right")
    assert np.linalg.norm(frame.head_center_xyz - np.asarray(femur.head_center)) < 1.0
    assert abs(frame.head_radius_mm - femur.radius) < 0.5


def test_axis_length_nan_when_the_lateral_cortex_is_out_of_view() -> None:
    # The shaft leans medially going down, so that the cut takes the lateral cortex where the neck axis leaves
    # the bone but leaves whole shaft sections lower down for the shaft axis.
    femur = AnalyticFemur(trochanter=False, shaft_tilt=(0.2, -0.12, -1.0))
    lo, hi = femur.extent()
    lo = lo.copy()
    lo[0] = femur.base[0] - 0.5 * femur.shaft_radius  # the field of view cuts the shaft's lateral side off
    grid = grid_around(lo, hi, (1.5, 1.0, 1.0))
    frame = femur_frame(label(femur.sdf, grid), grid, "right")
    assert math.isnan(frame.axis_length_mm)
    assert frame.to_dict()["axis_length_mm"] is None


def test_empty_mask_is_refused() -> None:
    grid = Grid(shape_zyx=(20, 30, 30), spacing_zyx=(1.0, 1.0, 1.0))
    with pytest.raises(InputError, match="empty"):
        femur_frame(np.zeros(grid.shape_zyx, bool), grid, "left")


def test_a_cylinder_has_no_head() -> None:
    femur = AnalyticFemur(head=False, neck=False, trochanter=False, shaft_tilt=(0.0, 0.0, -1.0))
    grid = grid_around(*femur.extent(), (2.0, 1.0, 1.0))
    with pytest.raises(InputError, match="no femoral head in the right femur's mask"):
        femur_frame(label(femur.sdf, grid), grid, "right")


def test_a_head_on_a_bare_shaft_has_no_neck() -> None:
    """A ball on the shaft's axis (a rounded bone end) is no proximal femur."""
    femur = AnalyticFemur(neck=False, trochanter=False, nsa_deg=180.0, neck_length=20.0, shaft_tilt=(0, 0, -1.0))
    grid = grid_around(*femur.extent(), (2.0, 1.0, 1.0))
    with pytest.raises(InputError, match="right femur"):
        femur_frame(label(femur.sdf, grid), grid, "right")


def test_refuses_a_speck_and_a_wrong_grid() -> None:
    grid = Grid(shape_zyx=(20, 30, 30), spacing_zyx=(1.0, 1.0, 1.0))
    speck = np.zeros(grid.shape_zyx, bool)
    speck[5:10, 5:10, 5:10] = True
    with pytest.raises(InputError, match="too little"):
        femur_frame(speck, grid, "right")
    with pytest.raises(InputError, match="shape"):
        femur_frame(speck[:, :, :10], grid, "right")


def test_no_shaft_in_view_is_refused() -> None:
    femur = AnalyticFemur(trochanter=False)
    grid = grid_around(*femur.extent(), (1.5, 1.0, 1.0))
    mask = label(femur.sdf, grid, cut_below_mm=femur.head_center[2] - 35.0)
    with pytest.raises(InputError, match="no femoral shaft in the right femur's mask"):
        femur_frame(mask, grid, "right")


def test_too_little_shaft_gives_no_neck_shaft_angle(caplog) -> None:  # noqa: ANN001
    """A hip scan that ends soon under the trochanters: the frame is made, the neck-shaft angle is not given."""
    caplog.set_level(logging.INFO, logger="femurseg.qct.frame")
    femur = AnalyticFemur()
    grid = grid_around(*femur.extent(), (1.5, 1.0, 1.0))
    mask = label(femur.sdf, grid, cut_below_mm=femur.head_center[2] - 85.0)
    frame = femur_frame(mask, grid, "right")
    assert frame.shaft_length_mm < 30.0
    assert math.isnan(frame.neck_shaft_angle_deg) and frame.to_dict()["neck_shaft_angle_deg"] is None
    assert abs(frame.head_radius_mm - femur.radius) < 0.5
    assert "neck-shaft angle is not reported" in caplog.text
