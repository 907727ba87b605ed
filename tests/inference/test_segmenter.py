"""The Segmenter end to end on synthetic hips with tiny trained bundles: geometry, sides, summary, errors."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import SimpleITK as sitk

from femurseg.errors import InputError, ModelError, NoFemurFound

from helpers.synthetic import synthetic_hip


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * float((a & b).sum()) / max(1.0, float(a.sum() + b.sum()))


def _rotation(ax: float, az: float) -> tuple[float, ...]:
    cx, sx, cz, sz = math.cos(ax), math.sin(ax), math.cos(az), math.sin(az)
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return tuple((rz @ rx).ravel())


DIRECTIONS = {
    "identity": (1, 0, 0, 0, 1, 0, 0, 0, 1),
    "flipped": (-1, 0, 0, 0, -1, 0, 0, 0, 1),  # RAS-stored, as NIfTI files from many tools
    "oblique": _rotation(math.radians(12), math.radians(20)),
    "permuted": (0, 1, 0, 1, 0, 0, 0, 0, -1),  # array x is world y, array z points inferior
}


def _same_geometry(a: sitk.Image, b: sitk.Image) -> None:
    assert a.GetSize() == b.GetSize()
    assert a.GetSpacing() == b.GetSpacing()
    assert a.GetOrigin() == b.GetOrigin()
    assert a.GetDirection() == b.GetDirection()


@pytest.mark.parametrize("name", sorted(DIRECTIONS))
def test_mask_has_the_scan_geometry_and_both_femurs(segmenter, name) -> None:
    image, truth = synthetic_hip(seed=11, direction=DIRECTIONS[name])
    result = segmenter.segment(image)
    _same_geometry(result.mask, image)
    assert result.mask.GetPixelID() == sitk.sitkUInt8
    mask, true = sitk.GetArrayFromImage(result.mask), sitk.GetArrayFromImage(truth)
    assert set(np.unique(mask)) == {0, 1, 2}
    for value in (1, 2):
        assert _dice(mask == value, true == value) > 0.9, (name, value)


def test_mirrored_scan_gives_the_mirrored_mask_with_sides_swapped(segmenter) -> None:
    image, _ = synthetic_hip(seed=12)
    arr = sitk.GetArrayFromImage(image)
    mirrored = sitk.GetImageFromArray(np.ascontiguousarray(arr[..., ::-1]))
    mirrored.CopyInformation(image)  # the grid is centred on x = 0: the array flip mirrors the world about x = 0
    a = sitk.GetArrayFromImage(segmenter.segment(image).mask)
    b = sitk.GetArrayFromImage(segmenter.segment(mirrored).mask)[..., ::-1]
    swapped = np.choose(b, [0, 2, 1]).astype(np.uint8)
    for value in (1, 2):
        assert _dice(a == value, swapped == value) > 0.97


@pytest.mark.parametrize("side", ["right", "left"])
def test_one_hip_scan_labels_only_that_side(segmenter, side) -> None:
    image, truth = synthetic_hip(seed=13, sides=(side,))
    result = segmenter.segment(image)
    mask = sitk.GetArrayFromImage(result.mask)
    value, other = (1, 2) if side == "right" else (2, 1)
    assert not (mask == other).any()
    assert _dice(mask == value, sitk.GetArrayFromImage(truth) == value) > 0.9
    sides = result.summary["sides"]
    other_side = "left" if side == "right" else "right"
    assert sides[side]["present"] and not sides[other_side]["present"]


@pytest.mark.parametrize("kind", ["soft tissue only", "pelvis without femurs"])
def test_scan_without_femur_raises_no_femur_found(segmenter, kind) -> None:
    if kind == "soft tissue only":
        arr = np.full((40, 48, 48), -1000, np.int16)  # air around a block of soft tissue
        arr[:, 8:40, 8:40] = 40
        image = sitk.GetImageFromArray(arr)
        image.SetSpacing((2.0, 2.0, 2.0))
    else:
        image, _ = synthetic_hip(seed=14, sides=())
    with pytest.raises(NoFemurFound) as err:
        segmenter.segment(image)
    assert err.value.exit_code == 3


def test_summary_volumes_confidence_and_provenance(segmenter, tiny_bundles) -> None:
    image, truth = synthetic_hip(seed=15)
    result = segmenter.segment(image, probabilities=True)
    s = json.loads(json.dumps(result.summary))  # JSON-able
    true = sitk.GetArrayFromImage(truth)
    voxel_ml = 8.0 / 1000.0
    mask = sitk.GetArrayFromImage(result.mask)
    for side, value in (("right", 1), ("left", 2)):
        f = s["sides"][side]
        assert f["present"] and f["label"] == value
        assert f["voxels"] == int((mask == value).sum())
        assert f["volume_ml"] == pytest.approx(f["voxels"] * voxel_ml)
        assert f["volume_ml"] == pytest.approx((true == value).sum() * voxel_ml, rel=0.1)
        assert 0.5 <= f["confidence"] <= 1.0
        zyx = np.argwhere(mask == value)
        assert f["bbox_index_xyz"]["start"] == zyx.min(axis=0)[::-1].tolist()
        assert f["bbox_index_xyz"]["end"] == zyx.max(axis=0)[::-1].tolist()
        lower, upper = np.array(f["bbox_world_xyz_mm"]["lower"]), np.array(f["bbox_world_xyz_mm"]["upper"])
        centre = image.TransformContinuousIndexToPhysicalPoint(zyx.mean(axis=0)[::-1].tolist())
        assert np.all(lower <= centre) and np.all(centre <= upper)
    assert s["sides"]["right"]["bbox_world_xyz_mm"]["upper"][0] < s["sides"]["left"]["bbox_world_xyz_mm"]["lower"][0]
    for kind in ("femur", "locator"):
        meta = json.loads((tiny_bundles["femur" if kind == "femur" else "locate"] / "model.json").read_text())
        assert s["models"][kind]["weights_sha256"] == meta["weights_sha256"]
        assert s["models"][kind]["name"] == meta["name"]
    assert s["input"]["size_xyz"] == list(image.GetSize())
    assert s["timings_s"]["total"] >= s["timings_s"]["locate"] > 0
    assert set(s["timings_s"]["right"]) == {"resample", "infer", "paste"}
    # Probabilities: on the scan's grid, in [0, 1], and the mask is their thresholded, cleaned version.
    prob = result.probabilities
    _same_geometry(prob, image)
    p = sitk.GetArrayFromImage(prob)
    assert p.min() >= 0.0 and p.max() <= 1.0
    assert _dice(mask > 0, p >= 0.5) > 0.98


def test_fast_and_tta_agree_with_the_default(tiny_bundles, segmenter) -> None:
    from femurseg.inference import Segmenter

    image, _ = synthetic_hip(seed=16, jitter=True)
    result = segmenter.segment(image)
    base = sitk.GetArrayFromImage(result.mask)
    normal = result.summary["sides"]["right"]
    assert normal["window_zyx"] == [32, 32, 32] and normal["windows"] > 1
    for options in ({"fast": True}, {"tta": True}):
        other = Segmenter(model=tiny_bundles["femur"], locator=tiny_bundles["locate"], device="cpu", **options)
        result = other.segment(image)
        mask = sitk.GetArrayFromImage(result.mask)
        for value in (1, 2):
            assert _dice(base == value, mask == value) > 0.95, options
        right = result.summary["sides"]["right"]
        if "fast" in options:  # the whole ROI (rounded up to a multiple of 2**depth = 4) in one window
            assert right["windows"] == 1
            assert right["window_zyx"] == [-(-n // 4) * 4 for n in right["roi_shape_zyx"]]
        else:  # the plain pass and one mirrored along y (the tiny femur model's trained mirror axis)
            assert right["windows"] == 2 * normal["windows"] and right["window_zyx"] == [32, 32, 32]


def test_tta_uses_the_trained_mirror_axes_and_refuses_a_model_without(tiny_bundles) -> None:
    from femurseg.inference.segmenter import Segmenter, tta_flips
    from femurseg.models.bundle import load_bundle

    assert tta_flips(load_bundle(tiny_bundles["femur"])) == ((1,),)
    fake = load_bundle(tiny_bundles["femur"])
    fake.meta["training"]["augmentation"]["mirror_axes"] = [2, 1]
    assert tta_flips(fake) == ((1,), (2,), (1, 2))
    fake.meta["training"]["augmentation"]["mirror_axes"] = []
    with pytest.raises(InputError, match="without mirror augmentation"):
        Segmenter(model=fake, locator=tiny_bundles["locate"], device="cpu", tta=True)
    Segmenter(model=fake, locator=tiny_bundles["locate"], device="cpu")  # fine without --tta


def test_public_segment_reads_a_path(tiny_bundles, tmp_path) -> None:
    import femurseg

    image, truth = synthetic_hip(seed=17)
    path = tmp_path / "hip.nrrd"
    sitk.WriteImage(image, str(path))
    mask = femurseg.segment(path, model=tiny_bundles["femur"], locator=tiny_bundles["locate"], device="cpu")
    _same_geometry(mask, image)
    assert _dice(sitk.GetArrayFromImage(mask) > 0, sitk.GetArrayFromImage(truth) > 0) > 0.9


def test_bad_images_and_models_are_refused(segmenter, tiny_bundles, tmp_path) -> None:
    from femurseg.inference import Segmenter

    flat = sitk.Image([32, 32], sitk.sitkInt16)
    with pytest.raises(InputError, match="3D"):
        segmenter.segment(flat)
    with pytest.raises(InputError):
        segmenter.segment(tmp_path / "missing.nii.gz")
    with pytest.raises(ModelError, match="locate"):
        Segmenter(model=tiny_bundles["locate"], locator=tiny_bundles["locate"], device="cpu")
    with pytest.raises(ModelError, match="femur"):
        Segmenter(model=tiny_bundles["femur"], locator=tiny_bundles["femur"], device="cpu")
    with pytest.raises(ModelError):
        Segmenter(model=tmp_path / "nothing", locator=tiny_bundles["locate"], device="cpu")
    with pytest.raises(InputError, match="device"):
        Segmenter(model=tiny_bundles["femur"], locator=tiny_bundles["locate"], device="tpu")


def test_fine_resampling_covers_only_the_femur_regions(segmenter, monkeypatch) -> None:
    # Memory for long scans: at the fine spacing only the ROIs are resampled, never the whole scan.
    import femurseg.inference.segmenter as seg_mod

    image, _ = synthetic_hip(seed=22, shape_zyx=(128, 48, 48))
    fine_grids = []
    real = seg_mod.resample_image

    def spy(img, grid, *, fill_hu):
        fine_grids.append(grid)
        return real(img, grid, fill_hu=fill_hu)

    monkeypatch.setattr(seg_mod, "resample_image", spy)
    result = segmenter.segment(image)
    assert len(fine_grids) == 2  # one ROI per side
    scan_mm = np.asarray(image.GetSize()) * np.asarray(image.GetSpacing())
    for grid in fine_grids:
        extent_mm = np.asarray(grid.shape_zyx[::-1]) * np.asarray(grid.spacing_zyx[::-1])
        assert extent_mm[2] < 0.6 * scan_mm[2]
    assert result.summary["sides"]["right"]["present"] and result.summary["sides"]["left"]["present"]


def _world_z_extent(mask: sitk.Image, value: int) -> float:
    idx = np.argwhere(sitk.GetArrayViewFromImage(mask) == value)[:, ::-1]
    z = np.array([mask.TransformIndexToPhysicalPoint([int(v) for v in i])[2] for i in idx[:: 7]])
    return float(z.max() - z.min())


def test_extent_cuts_the_mask_below_the_head_top(tiny_bundles) -> None:
    """The proximal femur ends ``extent_mm`` below the top of the head; ``None`` keeps the whole femur."""
    from femurseg.inference import Segmenter

    image, _ = synthetic_hip(seed=16)
    full = Segmenter(model=tiny_bundles["femur"], locator=tiny_bundles["locate"], device="cpu", extent_mm=None)
    short = Segmenter(model=tiny_bundles["femur"], locator=tiny_bundles["locate"], device="cpu", extent_mm=60.0)
    m_full, m_short = full.segment(image), short.segment(image)
    for value in (1, 2):
        assert _world_z_extent(m_full.mask, value) > 70.0  # the whole femur in view: 76 mm
        assert _world_z_extent(m_short.mask, value) <= 60.0 + 2.0
    assert m_short.summary["settings"]["extent_mm"] == 60.0
    assert m_short.summary["timings_s"]["right"]["infer"] > 0
    with pytest.raises(InputError):
        Segmenter(model=tiny_bundles["femur"], locator=tiny_bundles["locate"], device="cpu", extent_mm=5.0)


def test_sides_rejected_by_qc_are_not_written(tiny_bundles) -> None:
    """Limits no toy femur meets: both sides rejected, nothing written, exit 3 with the QC values and reasons."""
    from femurseg.inference import Segmenter
    from femurseg.inference.qc import QCLimits

    image, _ = synthetic_hip(seed=17)
    ok = Segmenter(model=tiny_bundles["femur"], locator=tiny_bundles["locate"], device="cpu").segment(image)
    for side in ("right", "left"):
        assert ok.summary["sides"][side]["qc"]["verdict"] in ("ok", "check")
        assert ok.summary["sides"][side]["qc"]["shape_side"] == side
    strict = Segmenter(model=tiny_bundles["femur"], locator=tiny_bundles["locate"], device="cpu",
                       qc_limits=QCLimits(head_radius_mm=(40.0, 60.0)))
    with pytest.raises(NoFemurFound) as err:
        strict.segment(image)
    assert set(err.value.qc) == {"right", "left"}
    assert all(q["verdict"] == "reject" and "femoral head" in q["reasons"][0] for q in err.value.qc.values())
    assert "rejected by quality control" in str(err.value)


def test_a_rejected_side_takes_no_voxel_from_the_other(segmenter) -> None:
    """Both ROIs on the right femur (the one-hip case): the left is rejected by its shape, the right stays whole."""
    from femurseg.inference.segmenter import _Side

    image, truth = synthetic_hip(seed=18, sides=("right",))
    right = sitk.GetArrayFromImage(truth) == 1
    size = np.asarray(image.GetSize())
    block = np.zeros(3, int), size - 1
    prob = right.astype(np.float32)
    sides = [_Side("right", *block, prob=prob.copy()), _Side("left", *block, prob=prob.copy())]
    mask, _, facts = segmenter._assemble(image, sides, False)
    assert facts["left"]["qc"]["verdict"] == "reject" and not facts["left"]["present"]
    assert facts["right"]["present"] and _dice(mask == 1, right) > 0.99
    assert not (mask == 2).any()


def test_metal_inside_a_femur_stays_inside_its_mask_and_qc_says_implant(segmenter) -> None:
    """A stem in the femur's canal (metal ≥ 3000 HU) is part of that femur's mask; the side's QC reports it."""
    from scipy import ndimage

    image, truth = synthetic_hip(seed=16)
    hu = sitk.GetArrayFromImage(image).astype(np.int16)
    lab = sitk.GetArrayFromImage(truth)
    inner = ndimage.binary_erosion(lab == 1, iterations=3)
    zs = np.flatnonzero(inner.any(axis=(1, 2)))
    stem = np.zeros_like(inner)
    for z in zs[: max(1, len(zs) * 2 // 3)]:  # the lower two thirds: a stem in the shaft
        yy, xx = np.nonzero(inner[z])
        cy, cx = int(round(yy.mean())), int(round(xx.mean()))
        stem[z, cy - 1:cy + 2, cx - 1:cx + 2] = inner[z, cy - 1:cy + 2, cx - 1:cx + 2]
    assert stem.sum() > 20
    hu[stem] = 3071
    metal_image = sitk.GetImageFromArray(hu)
    metal_image.CopyInformation(image)
    result = segmenter.segment(metal_image)
    mask = sitk.GetArrayFromImage(result.mask)
    assert np.all(mask[stem] == 1)
    qc = result.summary["sides"]["right"]["qc"]
    assert qc["metal_ml"] > 0 and any("implant" in r for r in qc["reasons"])


def _world_network(grid, *, head: bool):
    """A stand-in for the fine model on ``grid``: an 'ilium' slab (140 mm tall, no ball in it) high up, and a femur
    below (a 24 mm head at world z -300, a neck and a shaft down to the box's bottom) — or, without ``head``, a
    straight shaft only.  Returns (Z, Y, X) probabilities."""
    z, y, x = np.meshgrid(*[grid.origin_xyz[2 - a] + np.arange(n) * grid.spacing_zyx[a]
                            for a, n in enumerate(grid.shape_zyx)], indexing="ij")
    ilium = (np.abs(x) <= 30) & (np.abs(y) <= 10) & (z >= -200) & (z <= -60)
    shaft = (np.hypot(x - 35, y) <= 14) & (z <= -320)
    femur = shaft
    if head:
        ball = np.sqrt(x ** 2 + y ** 2 + (z + 300) ** 2) <= 24
        neck = (np.hypot(z + 310, y) <= 12) & (x >= 0) & (x <= 35)
        femur = shaft | ball | neck
    return (ilium | femur).astype(np.float32)


@pytest.mark.parametrize("head, metal", [(True, None), (False, None), (True, "spine"), (True, "at the piece")])
def test_a_box_reaching_far_above_the_femur_finds_its_head(tiny_bundles, monkeypatch, head, metal) -> None:
    """The located box starts 240 mm above the head (the one-hip case on real CT): the first ROI holds only bone the
    network mistook for femur, with no head.  ROIs further down find the head and the mask starts there; with no
    head anywhere the ROI grows to the box's bottom (nothing is lost)."""
    from femurseg.inference import Segmenter
    from femurseg.inference.locate import FemurBox
    from femurseg.inference.qc import QCLimits

    seg = Segmenter(model=tiny_bundles["femur"], locator=tiny_bundles["locate"], device="cpu", extent_mm=120.0,
                    qc_limits=QCLimits())  # adult heads (the tiny bundles' limits are for toy femurs)
    image = sitk.Image([60, 60, 200], sitk.sitkInt16) - 1000
    image.SetSpacing((2.0, 2.0, 2.5))
    image.SetOrigin((-60.0, -60.0, -480.0))  # world z -480 .. 17.5 mm
    if metal is not None:  # a metal block (3000 HU): spinal hardware 20 mm from the bone, or at the bone (an implant)
        x = (-52.0, -44.0) if metal == "spine" else (-34.0, -26.0)
        arr = sitk.GetArrayFromImage(image)
        arr[132:144, 25:35, int((x[0] + 60) / 2):int((x[1] + 60) / 2)] = 3000  # world z -150..-120, y -10..10
        metal_image = sitk.GetImageFromArray(arr)
        metal_image.CopyInformation(image)
        image = metal_image

    def fake(img, side, grid, t):  # noqa: ANN001, ANN202
        return _world_network(grid, head=head), seg._roi_options(grid.shape_zyx)

    monkeypatch.setattr(seg, "_infer_grid", fake)
    box = FemurBox(side="right", lower_xyz=np.array([-50.0, -50.0, -470.0]), upper_xyz=np.array([55.0, 50.0, -60.0]),
                   volume_ml=500.0)
    from femurseg.inference.postprocess import clean_femur

    s = seg._segment_side(image, box, {}, {})
    fg = clean_femur(s.prob >= 0.5) if head else s.prob >= 0.5  # as the assembly does / all the network marked
    z = np.asarray(image.GetOrigin())[2] + (s.lo_xyz[2] + np.flatnonzero(fg.any(axis=(1, 2)))) * 2.5
    if metal == "at the piece":  # an implant's head is no bone: the first ROI is the femur's top, as located
        assert z.max() > -70.0
    elif head:
        assert z.max() < -270.0  # the mask starts at the head (top -276), no ilium above it
        assert z.min() <= -276.0 - 120.0  # and reaches the extent below it
    else:
        assert z.max() > -70.0 and z.min() < -460.0  # the whole box: the first ROI grown to its bottom
