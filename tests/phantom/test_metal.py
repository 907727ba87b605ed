"""Metal in synthetic scans: implants stay inside their femur's label, cups do not; partial-volume rims."""

from __future__ import annotations

import numpy as np

from femurseg.conventions import LEFT_FEMUR, RIGHT_FEMUR
from femurseg.phantom.metal import METAL_HU, femur_frame, insert_metal
from femurseg.phantom.synth import periosteal_partial_volume

SPACING = (2.0, 1.0, 1.0)


def _two_femurs() -> np.ndarray:
    """Two femur-like labels (a ball on an oblique neck, a shaft 40 mm lateral) in a (90, 120, 260) grid, 2×1×1 mm."""
    z, y, x = np.meshgrid(np.arange(90) * 2.0, np.arange(120) * 1.0, np.arange(260) * 1.0, indexing="ij")
    labels = np.zeros(z.shape, np.uint8)
    for value, cx, lateral in ((RIGHT_FEMUR, 80.0, -1.0), (LEFT_FEMUR, 180.0, 1.0)):
        head = (x - cx) ** 2 + (y - 60) ** 2 + (z - 150) ** 2 <= 22.0**2
        t = np.clip((150 - z) / 35.0, 0, 1)  # the neck runs from the head down and out to the shaft
        neck = ((x - (cx + lateral * 40 * t)) ** 2 + (y - 60) ** 2 <= 16.0**2) & (z <= 150) & (z >= 105)
        shaft = ((x - cx - lateral * 40) ** 2 + (y - 60) ** 2 <= 15.0**2) & (z < 117)
        labels[head | neck | shaft] = value
    return labels


def test_frame_finds_the_head_and_the_lateral_shaft() -> None:
    labels = _two_femurs()
    f = femur_frame(labels == RIGHT_FEMUR, SPACING, "right")
    assert f is not None
    assert abs(f.head_zyx[0] * 2.0 - 150.0) <= 4.0 and abs(f.head_zyx[2] - 80.0) <= 3.0
    assert 18.0 <= f.head_radius_mm <= 23.0
    assert f.shaft_top_zyx[2] < f.head_zyx[2]  # the right shaft lies lateral, at smaller x
    cut = labels[:75]  # the head's top cut by the field of view: no frame
    assert femur_frame(cut == RIGHT_FEMUR, SPACING, "right") is None


def test_metal_inside_a_femur_stays_in_its_label_and_the_cup_leaves_it() -> None:
    for seed in range(6):
        labels = _two_femurs()
        before = labels.copy()
        hu = np.full(labels.shape, 40.0, np.float32)
        hu[labels > 0] = 700.0
        implants = insert_metal(hu, labels, SPACING, np.random.default_rng(seed), streaks=False)
        assert implants, "both heads are in view: an implant is placed"
        metal = hu >= METAL_HU[0]
        for imp in implants:
            value = RIGHT_FEMUR if imp["side"] == "right" else LEFT_FEMUR
            own = metal & (before == value)
            assert own.sum() * 2e-3 > 0.5 * imp["metal_ml"]  # most of the metal is in the femur
            if imp["kind"] == "arthroplasty":
                # Labels only lose the cup's and liner's voxels, never gain; metal in the label stays labelled.
                assert np.all(labels[own & (labels == 0)] == 0)
                lost = (before == value) & (labels != value)
                assert lost.any() and not (labels[before != value] == value).any()
                assert not (labels[lost] > 0).any()
            else:
                np.testing.assert_array_equal(labels, before)  # screws never change a label
        assert not (labels[before == 0] > 0).any()


def test_metal_is_deterministic_per_seed() -> None:
    outs = []
    for _ in range(2):
        labels = _two_femurs()
        hu = np.zeros(labels.shape, np.float32)
        info = insert_metal(hu, labels, SPACING, np.random.default_rng(5))
        outs.append((hu, labels, info))
    np.testing.assert_array_equal(outs[0][0], outs[1][0])
    np.testing.assert_array_equal(outs[0][1], outs[1][1])
    assert outs[0][2] == outs[1][2]


def test_periosteal_rim_is_partly_bone_and_labels_are_untouched() -> None:
    labels = _two_femurs()
    femur = labels > 0
    hu = np.where(femur, 1200.0, 50.0).astype(np.float32)
    periosteal_partial_volume(hu, femur, np.random.default_rng(0))
    from scipy import ndimage

    cross = np.zeros((1, 3, 3), bool)
    cross[0, 1, :] = cross[0, :, 1] = True
    rim = femur & ~ndimage.binary_erosion(femur, structure=cross, border_value=1)
    # The head's dome: voxels whose slice above (or below) leaves the femur, inside the in-plane rim.
    cap = femur & ~ndimage.binary_erosion(femur, structure=np.ones((3, 1, 1), bool), border_value=1) & ~rim
    assert cap.sum() > 100
    assert np.all(hu[~femur] == 50.0) and np.all(hu[femur & ~rim & ~cap] == 1200.0)
    for part in (rim, cap):
        assert 50.0 < float(hu[part].min()) and float(hu[part].max()) <= 1200.0
        assert 200.0 < float(np.median(hu[part])) < 1000.0
