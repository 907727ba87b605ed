"""Per-side quality control: a femur passes, what is not a femur (or not of its side) is rejected."""

from __future__ import annotations

import numpy as np
import pytest

from femurseg.inference.qc import QCLimits, SideQC, assess_side, fit_sphere, neck_reason, verdict

SPACING = 1.5  # mm, isotropic
ORIGIN = np.array([20.0, 20.0, 10.0])  # world (x, y, z) of voxel 0 [mm]
SHAPE_ZYX = (114, 54, 80)


def _world_grid() -> np.ndarray:
    z, y, x = np.meshgrid(*(np.arange(n) for n in SHAPE_ZYX), indexing="ij")
    return np.stack([x, y, z], axis=-1) * SPACING + ORIGIN


def _to_world(idx_zyx: np.ndarray) -> np.ndarray:
    return np.asarray(idx_zyx, float)[:, ::-1] * SPACING + ORIGIN


def _capsule(p: np.ndarray, a, b, r: float) -> np.ndarray:
    a, b = np.asarray(a, float), np.asarray(b, float)
    t = np.clip(((p - a) @ (b - a)) / float((b - a) @ (b - a)), 0.0, 1.0)
    return np.linalg.norm(p - (a + t[..., None] * (b - a)), axis=-1) <= r


def right_femur() -> np.ndarray:
    """A right proximal femur (LPS): the head medial (+x) of the trochanter and shaft."""
    p = _world_grid()
    head = np.linalg.norm(p - np.array([100.0, 60.0, 150.0]), axis=-1) <= 22.0
    neck = _capsule(p, (100, 60, 150), (65, 60, 125), 14.0)
    trochanter = np.linalg.norm(p - np.array([55.0, 60.0, 130.0]), axis=-1) <= 15.0
    shaft = _capsule(p, (60, 60, 125), (62, 60, 20), 14.0)
    return head | neck | trochanter | shaft


def _assess(fg: np.ndarray, side: str = "right", confidence: float = 0.95, border=None) -> SideQC:
    return assess_side(fg, _to_world, spacing_zyx=(SPACING,) * 3, side=side, confidence=confidence, border_idx=border)


def test_fit_sphere_recovers_centre_and_radius() -> None:
    rng = np.random.default_rng(0)
    v = rng.normal(size=(500, 3))
    pts = np.array([3.0, -2.0, 7.0]) + 21.5 * v / np.linalg.norm(v, axis=1, keepdims=True)
    centre, radius, resid = fit_sphere(pts[pts[:, 2] > 3.0])  # a cap, as a femoral head
    np.testing.assert_allclose(centre, [3.0, -2.0, 7.0], atol=1e-6)
    assert radius == pytest.approx(21.5) and resid < 1e-6
    with pytest.raises(ValueError):
        fit_sphere(pts[:3])


def test_a_femur_passes_with_its_head_and_side() -> None:
    qc = _assess(right_femur())
    assert qc.verdict == "ok", qc.reasons
    assert qc.head_found and abs(qc.head_radius_mm - 22.0) < 1.5 and qc.head_residual_mm < 1.0
    np.testing.assert_allclose(qc.head_center_xyz_mm, [100.0, 60.0, 150.0], atol=1.5)
    assert qc.shape_side == "right" and qc.neck_offset_mm > 30.0


def test_the_other_sides_femur_is_rejected() -> None:
    qc = _assess(right_femur(), side="left")
    assert qc.verdict == "reject" and any("right femur" in r for r in qc.reasons)


def test_a_straight_bone_is_rejected() -> None:
    """A shaft, a humerus end-on, a flipped scan's femur: no head with a neck below it."""
    p = _world_grid()
    qc = _assess(_capsule(p, (80, 60, 170), (80, 60, 20), 14.0))
    assert qc.verdict == "reject", qc
    rod = np.zeros(SHAPE_ZYX, bool)
    rod[10:100, 20:34, 30:44] = True  # flat-ended, box-shaped
    assert _assess(rod).verdict == "reject"


def test_specks_and_unsure_masks_are_rejected() -> None:
    speck = np.zeros(SHAPE_ZYX, bool)
    speck[50:53, 20:23, 30:33] = True
    assert _assess(speck).verdict == "reject"
    assert _assess(right_femur(), confidence=0.4).verdict == "reject"
    unsure = _assess(right_femur(), confidence=0.8)
    assert unsure.verdict == "check" and "confidence" in unsure.reasons[0]


def test_a_femur_cut_near_its_top_by_the_field_of_view_is_flagged_but_not_its_shaft() -> None:
    fg = right_femur()
    idx = np.argwhere(fg)
    shaft_end = idx[idx[:, 0] == idx[:, 0].min()]  # the distal cut: the normal hip scan
    assert _assess(fg, border=shaft_end).verdict == "ok"
    head_side = idx[idx[:, 2] == idx[:, 2].max()]  # the head at the scan's side edge
    qc = _assess(fg, border=head_side)
    assert qc.touches_border and qc.verdict == "check"


def test_limits_are_the_policy() -> None:
    qc = _assess(right_femur())
    strict = QCLimits(head_radius_mm=(25.0, 34.0))
    verdict(qc, "right", strict)
    assert qc.verdict == "ok"  # verdict() reads the values; head_found was decided by assess_side's limits
    small = assess_side(right_femur(), _to_world, spacing_zyx=(SPACING,) * 3, side="right", confidence=0.95,
                        limits=strict)
    assert not small.head_found and small.verdict == "reject"


def test_metal_inside_the_femur_is_reported_as_an_implant() -> None:
    fg = right_femur()
    hu = np.where(fg, 400.0, 40.0)
    assert _assess(fg).metal_ml == 0.0
    qc = assess_side(fg, _to_world, spacing_zyx=(SPACING,) * 3, side="right", confidence=0.95, hu=hu)
    assert qc.verdict == "ok" and qc.metal_ml == 0.0
    stem = np.zeros(SHAPE_ZYX, bool)
    stem[20:70, 25:29, 22:26] = True  # a stem down the shaft
    hu[stem & fg] = 3000.0
    qc = assess_side(fg, _to_world, spacing_zyx=(SPACING,) * 3, side="right", confidence=0.95, hu=hu)
    assert qc.metal_ml > 1.0 and qc.verdict == "check" and any(r.startswith("implant") for r in qc.reasons)


def test_a_hollow_head_open_to_the_outside_is_still_a_head() -> None:
    """An osteoporotic head the network left hollow, with a channel to the outside that hole filling cannot close."""
    p = _world_grid()
    fg = right_femur()
    d = np.linalg.norm(p - np.array([100.0, 60.0, 150.0]), axis=-1)
    fg &= ~((d < 19.0) | ((np.abs(p[..., 1] - 60.0) < 1.5) & (np.abs(p[..., 0] - 100.0) < 1.5) & (p[..., 2] > 150)))
    qc = _assess(fg)
    assert qc.head_found and abs(qc.head_radius_mm - 22.0) < 2.0, qc
    assert qc.verdict == "ok" and qc.shape_side == "right"


def test_a_head_cut_by_the_top_of_the_scan_is_checked_not_rejected() -> None:
    fg = right_femur()
    top = int(round((150.0 + 10.0 - 10.0) / SPACING))  # the scan ends 10 mm above the head centre
    fg[top + 1:] = False
    border = np.argwhere(fg)
    border = border[border[:, 0] == top]
    qc = _assess(fg, border=border)
    assert qc.touches_border and qc.verdict == "check", qc.reasons


def test_a_ball_without_a_femur_below_and_a_cut_straight_bone_are_rejected() -> None:
    """What the QC table of benchmarks/real_ct.py showed: an iliac-wing blob above the hips, a tibia through the scan."""
    p = _world_grid()
    ball = np.linalg.norm(p - np.array([80.0, 60.0, 150.0]), axis=-1) <= 22.0
    qc = _assess(ball)
    assert qc.head_found and qc.neck_offset_mm is None and qc.verdict == "reject"
    rod = _capsule(p, (80, 60, 200), (80, 60, 0), 13.0)  # leaves the scan at the top and the bottom
    idx = np.argwhere(rod)
    border = idx[(idx[:, 0] == 0) | (idx[:, 0] == SHAPE_ZYX[0] - 1)]
    qc = _assess(rod, border=border)
    assert qc.touches_border and qc.verdict == "reject" and any("neck" in r for r in qc.reasons)


def test_a_cut_piece_without_a_head_is_checked_only_when_the_network_is_sure() -> None:
    """Bone cut by the field of view with no head: a check when the network is sure of it, else nothing to report
    (a piece of pelvis at the cut of a one-hip crop read as 'femur' at confidence 0.80)."""
    fg = right_femur()
    ix = int(round((92.0 - ORIGIN[0]) / SPACING))
    fg[:, :, ix:] = False  # the scan's side edge cuts the head away
    border = np.argwhere(fg)
    border = border[border[:, 2] == border[:, 2].max()]
    sure = _assess(fg, border=border, confidence=0.93)
    assert not sure.head_found and sure.verdict == "check", sure.reasons
    unsure = _assess(fg, border=border, confidence=0.80)
    assert unsure.verdict == "reject" and any("unsure" in r for r in unsure.reasons)


def test_a_head_above_a_wide_plate_is_no_femur() -> None:
    """A scan upside down: its acetabulum seen from below looks like a head, the iliac wing under it like a bone
    with a neck offset; 70–95 mm under the head a femur is a ~30 mm tube, the wing a plate ~80 mm wide."""
    p = _world_grid()
    femur = right_femur()
    qc = _assess(femur)
    assert qc.shaft_width_mm == pytest.approx(28.0, abs=4.0)  # the 14 mm-radius shaft
    head = np.linalg.norm(p - np.array([100.0, 60.0, 150.0]), axis=-1) <= 22.0
    neck = _capsule(p, (100, 60, 150), (65, 60, 125), 14.0)
    wing = (np.abs(p[..., 0] - 70.0) <= 38.0) & (np.abs(p[..., 1] - 60.0) <= 5.0) & (p[..., 2] >= 20.0) & (
        p[..., 2] <= 130.0)
    qc = _assess(head | neck | wing)
    assert qc.head_found and qc.neck_offset_mm > 15.0  # what the older checks see: a femur
    assert qc.shaft_width_mm > 70.0
    assert qc.verdict == "reject" and any("no femoral shaft" in r for r in qc.reasons)


def test_a_short_bone_leaving_the_scan_at_the_bottom_is_no_cut_femur() -> None:
    """A chest scan's humerus ending at the scan's bottom edge (46 mm of shaft, confidence 0.95): it leaves the
    scan where a femur's shaft would, so its top is in view and a femur would show its head there."""
    p = _world_grid()
    rod = _capsule(p, (80, 60, 55), (80, 60, -20), 11.0) & (p[..., 2] >= ORIGIN[2])  # from the scan's floor up
    idx = np.argwhere(rod)
    floor = idx[idx[:, 0] == 0]
    qc = _assess(rod, border=floor, confidence=0.95)
    assert not qc.touches_border and not qc.head_found
    assert qc.verdict == "reject" and any("femoral head" in r for r in qc.reasons)
    # A femoral head cap at the floor of an abdominal scan that ends in it is still found by its sphere.
    ball = np.linalg.norm(p - np.array([80.0, 60.0, 22.0]), axis=-1) <= 22.0
    cap = ball & (p[..., 2] >= ORIGIN[2] + 2.0)
    idx = np.argwhere(cap)
    qc = _assess(cap, border=idx[idx[:, 0] == idx[:, 0].min()])
    assert qc.head_found and abs(qc.head_radius_mm - 22.0) < 2.0
    assert qc.touches_border and qc.verdict == "check", qc.reasons  # the floor cuts the femur below its head


def test_a_ball_on_a_tilted_straight_bone_has_no_neck_whatever_its_tilt() -> None:
    """A humerus-like bone leaning 0.25 mm/mm: its centroid 40–100 mm under the head lies ~18 mm aside, the line
    through its layers passes under the head: no neck."""
    p = _world_grid()
    head = np.linalg.norm(p - np.array([70.0, 60.0, 150.0]), axis=-1) <= 22.0
    shaft = _capsule(p, (70, 60, 150), (70 + 0.25 * 140, 60, 10), 12.0)
    qc = _assess(head | shaft)
    assert qc.neck_centroid_offset_mm > 15.0 and qc.neck_offset_mm < 5.0
    assert qc.verdict == "reject" and any("no femoral neck" in r for r in qc.reasons)


@pytest.mark.parametrize(("line", "centroid", "femur"), [
    (43.0, 26.0, True),    # an adult femur (pelvicref_005)
    (22.0, 9.0, True),     # coxa valga with the shaft leaning medially: the line says femur
    (17.0, 16.0, True),    # grey zone, both agree
    (17.2, 13.5, False),   # grey zone, the centroid disagrees (an upside-down pelvis)
    (5.0, 18.0, False),    # a leaning straight bone
    (None, None, True),    # not measured: other checks decide
])
def test_neck_offsets_in_the_grey_zone_must_agree(line, centroid, femur) -> None:  # noqa: ANN001
    qc = SideQC(neck_offset_mm=line, neck_centroid_offset_mm=centroid)
    reason = neck_reason(qc, QCLimits())
    assert (reason is None) == femur, reason


def _body_scan(half_width_mm: float, centre_x_mm: float, nx: int = 200) -> np.ndarray:
    """(6, 120, nx) HU at 2 mm in-plane: air, a table, and an elliptic body (40 HU) centred at world x ``centre_x_mm``
    (voxel 0 at x = 0)."""
    y, x = np.meshgrid(np.arange(120) * 2.0, np.arange(nx) * 2.0, indexing="ij")
    sl = np.full(y.shape, -1000.0)
    sl[((x - centre_x_mm) / half_width_mm) ** 2 + ((y - 110.0) / 90.0) ** 2 <= 1.0] = 40.0
    sl[104:107, :] = -300.0  # a thin table under the back, across the array: its own component
    return np.repeat(sl[None], 6, axis=0)


def _scan_world(idx_zyx: np.ndarray) -> np.ndarray:
    return np.asarray(idx_zyx, float)[:, ::-1] * np.array([2.0, 2.0, 3.0])


def test_body_midline_is_the_outline_centre_and_unknown_when_the_outline_is_cut() -> None:
    from femurseg.inference.qc import body_midline_x

    assert body_midline_x(_body_scan(170.0, 210.0), _scan_world, 3) == pytest.approx(210.0, abs=1.5)
    # A one-hip or small-field reconstruction: the body leaves the array, its centre is not the midline.
    assert body_midline_x(_body_scan(170.0, 60.0), _scan_world, 3) is None
    # Outside the reconstruction circle (padding) touching the body: cut too.
    scan = _body_scan(170.0, 210.0)
    scan[:, :, 30:45] = -2000.0
    assert body_midline_x(scan, _scan_world, 3) is None
    assert body_midline_x(np.full((6, 20, 20), -1000.0), _scan_world, 3) is None  # no body at all


def test_a_head_on_the_body_midline_is_rejected() -> None:
    fg = right_femur()
    ok = assess_side(fg, _to_world, spacing_zyx=(SPACING,) * 3, side="right", confidence=0.95,
                     midline_x_at=lambda c: float(c[0]) + 85.0)
    assert ok.verdict == "ok" and ok.midline_offset_mm == pytest.approx(85.0)
    sacrum = assess_side(fg, _to_world, spacing_zyx=(SPACING,) * 3, side="right", confidence=0.95,
                         midline_x_at=lambda c: float(c[0]) + 5.0)
    assert sacrum.verdict == "reject" and any("midline" in r for r in sacrum.reasons)
    unknown = assess_side(fg, _to_world, spacing_zyx=(SPACING,) * 3, side="right", confidence=0.95,
                          midline_x_at=lambda c: None)
    assert unknown.verdict == "ok" and unknown.midline_offset_mm is None


def test_two_heads_closer_than_two_hips_reject_the_less_sure_side() -> None:
    from femurseg.inference.qc import pair_heads

    def side(centre, confidence: float) -> SideQC:
        qc = SideQC(head_found=True, head_center_xyz_mm=list(centre), head_radius_mm=23.0, head_residual_mm=1.0,
                    neck_offset_mm=40.0, volume_ml=150.0, confidence=confidence)
        verdict(qc, "right")
        return qc

    right, left = side((-85.0, 0.0, 0.0), 0.96), side((88.0, 0.0, 0.0), 0.95)
    pair_heads(right, left)  # two hips 173 mm apart: both stay
    assert right.verdict == left.verdict == "ok" and right.other_head_mm == pytest.approx(173.0)
    right, left = side((-98.0, -49.0, 301.0), 0.96), side((-88.0, -44.0, 338.0), 0.87)
    pair_heads(right, left)  # one hip marked twice (a one-hip scan): the side the network is less sure of goes
    assert right.verdict == "ok" and right.twin_of is None
    assert left.verdict == "reject" and left.twin_of == "right" and any("marked twice" in r for r in left.reasons)
    right, left = side((-98.0, -49.0, 301.0), 0.80), side((-88.0, -44.0, 338.0), 0.87)
    pair_heads(right, left)
    assert right.verdict == "reject" and left.twin_of is None
    right, left = side((-98.0, 0.0, 0.0), 0.96), SideQC(volume_ml=150.0, confidence=0.9)
    pair_heads(right, left)  # no fitted head on one side: nothing to compare
    assert right.other_head_mm is None and right.verdict == "ok"


def test_two_femurs_of_very_different_volume_ask_for_a_check() -> None:
    from femurseg.inference.qc import pair_heads

    def side(x: float, volume: float, **kw) -> SideQC:
        qc = SideQC(head_found=True, head_center_xyz_mm=[x, 0.0, 0.0], head_radius_mm=23.0, head_residual_mm=1.0,
                    neck_offset_mm=40.0, volume_ml=volume, confidence=0.95, **kw)
        verdict(qc, "right" if x < 0 else "left")
        return qc

    right, left = side(-85.0, 176.0), side(88.0, 171.0)
    pair_heads(right, left)  # mirror images
    assert right.verdict == left.verdict == "ok" and right.mirror_volume_ratio == pytest.approx(176.0 / 171.0)
    right, left = side(-85.0, 321.0), side(88.0, 222.0)
    pair_heads(right, left)  # one mask ran into the thigh muscles
    for q in (right, left):
        assert q.verdict == "check" and any("volumes differ 1.45×" in r for r in q.reasons), q.reasons
    right, left = side(-85.0, 321.0), side(88.0, 122.0, touches_border=True)
    pair_heads(right, left)  # one femur cut by the field of view: volumes say nothing
    assert right.mirror_volume_ratio is None and right.verdict == "ok"
