"""One phantom case end to end: determinism, geometry, sides, labels, tissue HU in the literature's ranges."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage

from femurseg.conventions import LEFT_FEMUR, RIGHT_FEMUR, TISSUES
from femurseg.errors import InputError
from femurseg.io import array_of, grid_of
from femurseg.phantom.generate import PhantomOptions, generate

OPTS = PhantomOptions(spacing_xyz=(1.6, 1.6, 2.0), matrix=256, calibration_phantom=True)


@pytest.fixture(scope="module")
def case():
    return generate(11, options=OPTS)


def test_same_seed_same_case_and_other_seed_differs(case) -> None:
    again = generate(11, options=OPTS)
    for a, b in ((case.scan, again.scan), (case.labels, again.labels), (case.tissues, again.tissues)):
        np.testing.assert_array_equal(array_of(a), array_of(b))
        assert a.GetOrigin() == b.GetOrigin() and a.GetSpacing() == b.GetSpacing()
    assert case.facts == again.facts
    other = generate(12, options=OPTS)
    assert not np.array_equal(array_of(other.scan)[: 5], array_of(case.scan)[: 5])


def test_types_and_geometry(case) -> None:
    assert case.scan.GetPixelID() == sitk.sitkInt16
    assert case.labels.GetPixelID() == sitk.sitkUInt8 and case.tissues.GetPixelID() == sitk.sitkUInt8
    assert case.scan.GetSize()[:2] == (256, 256)
    assert case.scan.GetSpacing() == (1.6, 1.6, 2.0)
    assert case.scan.GetDirection() == (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)
    for img in (case.labels, case.tissues):
        assert img.GetSize() == case.scan.GetSize() and img.GetOrigin() == case.scan.GetOrigin()
    ct = array_of(case.scan)
    assert ct.min() >= -1024 and ct.max() <= 3071


def test_field_of_view_spans_roof_to_below_lesser_trochanters(case) -> None:
    labels = array_of(case.labels)
    grid = grid_of(case.labels)
    # The femurs leave the field of view at its bottom (the FOV ends below the lesser trochanters) ...
    assert (labels[0] == RIGHT_FEMUR).any() and (labels[0] == LEFT_FEMUR).any()
    # ... and their heads lie inside, below the top slices (the FOV starts above the acetabular roof).
    top = [np.flatnonzero((labels == v).any(axis=(1, 2))).max() for v in (RIGHT_FEMUR, LEFT_FEMUR)]
    assert max(top) < labels.shape[0] - 3
    height = labels.shape[0] * grid.spacing_zyx[0]
    assert 100 < height < 260


def test_label_sides_match_world(case) -> None:
    labels = array_of(case.labels)
    grid = grid_of(case.labels)
    xs = {}
    for v in (RIGHT_FEMUR, LEFT_FEMUR):
        idx = np.argwhere(labels == v).mean(axis=0)
        xs[v] = grid.index_to_world(idx)[0]
    assert xs[RIGHT_FEMUR] < xs[LEFT_FEMUR]  # LPS: the patient's right is at smaller x
    assert case.facts["femur_volume_right_ml"] == pytest.approx((labels == 1).sum() * np.prod(grid.spacing_zyx) / 1000)


def test_tissue_map_agrees_with_labels(case) -> None:
    labels = array_of(case.labels)
    tissues = array_of(case.tissues)
    femur = np.isin(tissues, [TISSUES["femur_cortical"], TISSUES["femur_trabecular"], TISSUES["marrow"]])
    # Tissue classes go by majority, the label also takes the partly filled rim the scanner shows (conventions.
    # FEMUR_LABEL_FRACTION): every femur tissue voxel is labelled, and the rim is a thin shell.
    assert not (femur & (labels == 0)).any()
    assert 0 < (labels > 0).sum() - femur.sum() < 0.2 * femur.sum()
    present = set(np.unique(tissues).tolist())
    for name in ("air", "fat", "muscle", "skin", "femur_cortical", "femur_trabecular", "pelvis_cortical",
                 "pelvis_trabecular", "table", "calibration_phantom", "calibration_rod", "vessel"):
        assert TISSUES[name] in present, name


@pytest.mark.parametrize("name,lo,hi", [
    ("femur_cortical", 700, 3071), ("femur_trabecular", 50, 400), ("muscle", 20, 80), ("fat", -150, -50),
    ("air", -1024, -900), ("pelvis_trabecular", 30, 400),
])
def test_tissue_hu_in_literature_ranges(case, name, lo, hi) -> None:
    ct = array_of(case.scan).astype(float)
    tissues = array_of(case.tissues)
    mask = tissues == TISSUES[name]
    if name not in ("femur_cortical",):
        # Interior voxels, away from boundaries (partial volume and blur).
        mask = ndimage.binary_erosion(mask, iterations=1 if name.startswith("femur") or name.startswith("pelvis") else 2)
    assert mask.sum() > 50
    mean = ct[mask].mean()
    assert lo < mean < hi, f"{name}: {mean:.0f} HU"


def test_rods_match_their_calibration(case) -> None:
    ct = array_of(case.scan).astype(float)
    tissues = array_of(case.tissues)
    rods = ndimage.binary_erosion(tissues == TISSUES["calibration_rod"], iterations=2)
    lab, n = ndimage.label(rods)
    assert n == 5
    grid = grid_of(case.scan)
    centres = ndimage.center_of_mass(rods, lab, range(1, n + 1))
    order = np.argsort([grid.index_to_world(np.asarray(c))[0] for c in centres])
    measured = np.array(ndimage.mean(ct, lab, range(1, n + 1)))[order]
    names = "ABCDE"
    f = case.facts
    expected = np.array([f[f"rod_{r}_water_mg_cm3"] + f["sigma_ref"] * f[f"rod_{r}_k2hpo4_mg_cm3"] + f["beta_ref"]
                         for r in names])
    np.testing.assert_allclose(measured, expected, atol=8.0)


def test_options_are_validated() -> None:
    with pytest.raises(InputError, match="spacing"):
        PhantomOptions(spacing_xyz=(0.0, 1.0, 1.0))
    with pytest.raises(InputError, match="sex"):
        PhantomOptions(sex="male")
    with pytest.raises(InputError, match="mesh file"):
        PhantomOptions(femur_mesh="/nonexistent/femur.stl")
    with pytest.raises(InputError, match="seed"):
        generate(-1)


def test_bundled_sample_is_a_consistent_labelled_hip_qct() -> None:
    import json

    from femurseg.io import read_image
    from femurseg.phantom import sample_path

    paths = [sample_path(k) for k in ("ct", "labels", "facts")]
    assert sum(p.stat().st_size for p in paths) < 10 * 1024 * 1024
    ct, lab = read_image(paths[0]), read_image(paths[1])
    facts = json.loads(paths[2].read_text())
    assert ct.GetPixelID() == sitk.sitkInt16 and ct.GetSize() == lab.GetSize() and ct.GetOrigin() == lab.GetOrigin()
    labels = array_of(lab)
    grid = grid_of(lab)
    vox_ml = float(np.prod(grid.spacing_zyx)) / 1000
    assert facts["femur_volume_right_ml"] == pytest.approx((labels == RIGHT_FEMUR).sum() * vox_ml, rel=1e-6)
    assert facts["femur_volume_left_ml"] == pytest.approx((labels == LEFT_FEMUR).sum() * vox_ml, rel=1e-6)
    x = {v: grid.index_to_world(np.argwhere(labels == v).mean(axis=0))[0] for v in (RIGHT_FEMUR, LEFT_FEMUR)}
    assert x[RIGHT_FEMUR] < x[LEFT_FEMUR]
    with pytest.raises(InputError, match="sample kind"):
        sample_path("mask")


def test_package_exposes_the_functions_not_the_modules() -> None:
    import types

    import femurseg.phantom.cohort  # noqa: F401  (importing submodules must not shadow the functions)
    import femurseg.phantom.generate  # noqa: F401
    from femurseg import phantom

    assert not isinstance(phantom.generate, types.ModuleType) and callable(phantom.generate)
    assert phantom.PhantomOptions is PhantomOptions and callable(phantom.write_cohort)


def test_nothing_is_labelled_outside_the_reconstruction_circle() -> None:
    from femurseg.phantom.ct import outside_circle

    # A 210 mm field of view cuts both greater trochanters (~120 mm either side of the midline): each is labelled up
    # to the circle and not beyond, where the image is blank.
    case = generate(11, options=PhantomOptions(spacing_xyz=(1.5, 1.5, 2.5), matrix=140, recon_circle=True))
    labels, tissues, ct = array_of(case.labels), array_of(case.tissues), array_of(case.scan)
    outside = outside_circle(grid_of(case.scan))
    assert case.facts["recon_circle"] is True
    assert not labels[:, outside].any() and not tissues[:, outside].any()
    assert (ct[:, outside] == ct.min()).all()
    inside_ring = ndimage.binary_dilation(outside, iterations=2) & ~outside
    for side in (RIGHT_FEMUR, LEFT_FEMUR):
        assert (labels[:, inside_ring] == side).any(), side  # cut by the circle, labelled up to it
    assert case.facts["femur_volume_right_ml"] == pytest.approx((labels == RIGHT_FEMUR).sum() * 1.5 * 1.5 * 2.5 / 1000)
    off = generate(11, options=PhantomOptions(spacing_xyz=(1.5, 1.5, 2.5), matrix=140, recon_circle=False))
    assert off.facts["recon_circle"] is False and array_of(off.labels)[:, outside].any()
    # Only the circle changed: the same subject and calibration.
    assert off.facts["rod_C_k2hpo4_mg_cm3"] == case.facts["rod_C_k2hpo4_mg_cm3"]
