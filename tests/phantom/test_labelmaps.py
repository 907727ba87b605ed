"""Real label maps as anatomy: tissue classes, femur sides, fields of view; and the bundled subjects."""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk

from femurseg.conventions import LEFT_FEMUR, RIGHT_FEMUR, TISSUES
from femurseg.phantom import labelmaps as lm


def _subject() -> lm.LabelmapSubject:
    """A small two-hip label map: a body, a sacrum in the middle, a pelvis, two femurs with shafts."""
    z, y, x = np.meshgrid(np.arange(30), np.arange(60), np.arange(100), indexing="ij")
    labels = np.zeros((30, 60, 100), np.uint8)
    body = ((x - 50) / 48.0) ** 2 + ((y - 30) / 28.0) ** 2 <= 1.0
    labels[body & (((x - 50) / 30.0) ** 2 + ((y - 30) / 20.0) ** 2 <= 1.0)] = 5  # a muscle
    labels[(np.abs(x - 50) < 5) & (np.abs(y - 40) < 5) & (z > 20)] = lm.SACRUM
    for cx in (25, 75):
        head = (x - cx) ** 2 + (y - 30) ** 2 + ((z - 22) * 3) ** 2 <= 100
        shaft = ((x - cx - (4 if cx < 50 else -4)) ** 2 + (y - 30) ** 2 <= 36) & (z < 22)
        labels[head | shaft] = lm.FEMUR
        labels[((x - cx) ** 2 + (y - 30) ** 2 + ((z - 26) * 3) ** 2 <= 150) & (z > 25) & (labels == 0)] = lm.PELVIS
    return lm.LabelmapSubject(name="toy", labels=labels, body=body, spacing_xyz=(1.0, 1.0, 3.0),
                              origin_xyz=(0.0, 0.0, 0.0), prone=False)


def test_femur_labels_are_the_expert_femur_split_by_side() -> None:
    subj = _subject()
    tissues, labels = lm.tissues_from_labelmap(subj, np.random.default_rng(0))
    femur = subj.labels == lm.FEMUR
    np.testing.assert_array_equal(labels > 0, femur)
    xs_right = np.argwhere(labels == RIGHT_FEMUR)[:, 2]
    xs_left = np.argwhere(labels == LEFT_FEMUR)[:, 2]
    assert xs_right.max() < 50 < xs_left.min()  # LPS: the patient's right at smaller x
    femur_classes = {TISSUES["femur_cortical"], TISSUES["femur_trabecular"], TISSUES["marrow"]}
    assert set(np.unique(tissues[femur])) <= femur_classes
    assert TISSUES["femur_cortical"] in set(np.unique(tissues[femur]))
    assert not np.isin(tissues[~femur], list(femur_classes - {TISSUES["marrow"]})).any()
    assert (tissues[~subj.body & (tissues != TISSUES["table"])] == TISSUES["air"]).all()


def test_the_head_dome_has_a_cortex_and_the_shaft_end_does_not() -> None:
    subj = _subject()
    tissues, labels = lm.tissues_from_labelmap(subj, np.random.default_rng(0))
    for value in (RIGHT_FEMUR, LEFT_FEMUR):
        side = labels == value
        zs = np.flatnonzero(side.any(axis=(1, 2)))
        # The head's top slice: all cortex (the subchondral plate), though in-plane it is 3+ voxels deep.
        assert (tissues[zs.max()][side[zs.max()]] == TISSUES["femur_cortical"]).all()
        assert side[zs.max()].sum() >= 9
        # Under the head the interior stays trabecular bone or marrow.
        below = tissues[zs.max() - 3][side[zs.max() - 3]]
        assert (below != TISSUES["femur_cortical"]).any()


def test_a_joint_space_separates_the_acetabulum_from_the_head() -> None:
    from scipy import ndimage

    subj = _subject()
    femur = subj.labels == lm.FEMUR
    # An acetabulum hugging the heads in-plane, touching them as the real label maps draw it.
    cup = ndimage.binary_dilation(femur, structure=np.ones((1, 13, 13), bool)) & ~femur & (subj.labels == 0)
    cup[:20] = False
    subj.labels[cup] = lm.PELVIS
    tissues, labels = lm.tissues_from_labelmap(subj, np.random.default_rng(0))
    pelvis = subj.labels == lm.PELVIS
    dist = ndimage.distance_transform_edt(subj.labels != lm.FEMUR, sampling=(3.0, 1.0, 1.0))
    near, far = pelvis & (dist <= lm.JOINT_SPACE_MM[0]), pelvis & (dist > lm.JOINT_SPACE_MM[1])
    assert near.sum() > 20 and far.sum() > 20
    assert (tissues[near] == TISSUES["muscle"]).all()  # cartilage reads as soft tissue
    assert np.isin(tissues[far], [TISSUES["pelvis_cortical"], TISSUES["pelvis_trabecular"]]).all()
    np.testing.assert_array_equal(labels > 0, subj.labels == lm.FEMUR)  # the femur label is whole


def test_tissues_are_deterministic_per_seed() -> None:
    subj = _subject()
    a = lm.tissues_from_labelmap(subj, np.random.default_rng(4))
    b = lm.tissues_from_labelmap(subj, np.random.default_rng(4))
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])


def test_fields_of_view_keep_the_heads_and_sometimes_one_hip() -> None:
    subj = _subject()
    _, labels = lm.tissues_from_labelmap(subj, np.random.default_rng(0))
    top = int(np.flatnonzero((labels > 0).any(axis=(1, 2))).max())
    one_hip = 0
    for seed in range(40):
        zs, _, xs = lm.crop_field_of_view(labels, (3.0, 1.0, 1.0), np.random.default_rng(seed), p_one_hip=0.5)
        assert zs.start <= top - 13 and zs.stop > top  # at least 40 mm of femur and the head top
        crop = labels[zs, :, xs]
        sides = set(np.unique(crop)) - {0}
        assert sides, "a crop without femur"
        one_hip += len(sides) == 1
    assert 5 <= one_hip <= 35


def test_bundled_subjects_load_with_both_femurs() -> None:
    names = lm.bundled_subjects()
    assert names == ["pelvic_ref_001", "pelvic_ref_004"]
    subj = lm.load_subject(names[1])
    assert subj.labels.shape == subj.body.shape and subj.spacing_xyz == (1.0, 1.0, 3.0)
    assert (subj.labels == lm.FEMUR).sum() > 10000


def test_labelmap_case_is_deterministic_and_labels_match_the_source(tmp_path) -> None:
    from femurseg.phantom.synth import generate_labelmap_case

    a = generate_labelmap_case(3, subject="pelvic_ref_004", noise_sigma_hu=0.0, recon_circle=False)
    b = generate_labelmap_case(3, subject="pelvic_ref_004", noise_sigma_hu=0.0, recon_circle=False)
    la, lb = sitk.GetArrayFromImage(a.labels), sitk.GetArrayFromImage(b.labels)
    np.testing.assert_array_equal(la, lb)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(a.scan), sitk.GetArrayFromImage(b.scan))
    src = lm.load_subject("pelvic_ref_004")
    (z0, z1), _, (x0, x1) = [(c[0] or 0, c[1]) for c in a.facts["crop_zyx"]]
    crop = src.labels[z0:z1, :, x0:x1] if x1 is not None else src.labels[z0:z1, :, x0:]
    np.testing.assert_array_equal(la > 0, crop == lm.FEMUR)
    assert a.scan.GetSpacing() == (1.0, 1.0, 3.0)
    assert a.facts["anatomy_source"] == "labelmap:pelvic_ref_004"
