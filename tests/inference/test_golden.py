"""Golden end-to-end test: the bundled models on the bundled sample scan, against its stored truth.

Skipped until the bundled models (src/femurseg/resources/model/{locate,femur}) are installed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

RESOURCES = Path(__file__).resolve().parents[2] / "src" / "femurseg" / "resources"
MODELS = RESOURCES / "model"
SAMPLE = RESOURCES / "sample"

pytestmark = pytest.mark.skipif(
    not ((MODELS / "femur" / "model.json").is_file() and (MODELS / "locate" / "model.json").is_file()),
    reason="no bundled models yet",
)

#: Floors the bundled models must reach on the sample (patient sides; see docs/segment.md for the measured values).
MIN_DICE = 0.96
MAX_VOLUME_ERROR = 0.05


def test_bundled_models_segment_the_sample() -> None:
    import femurseg
    from femurseg.io import read_image

    image = read_image(SAMPLE / "sample_ct.nii.gz")
    truth = sitk.GetArrayFromImage(read_image(SAMPLE / "sample_labels.nii.gz"))
    result = femurseg.Segmenter(device="cpu").segment(image)
    mask = sitk.GetArrayFromImage(result.mask)
    assert result.mask.GetSize() == image.GetSize() and result.mask.GetOrigin() == image.GetOrigin()
    voxel_ml = float(np.prod(image.GetSpacing())) / 1000.0
    for side, value in (("right", 1), ("left", 2)):
        p, t = mask == value, truth == value
        dice = 2.0 * (p & t).sum() / (p.sum() + t.sum())
        assert dice >= MIN_DICE, (side, dice)
        true_ml = t.sum() * voxel_ml
        assert abs(result.summary["sides"][side]["volume_ml"] - true_ml) <= MAX_VOLUME_ERROR * true_ml
