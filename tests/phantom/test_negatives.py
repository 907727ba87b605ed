"""Femur-free scans: empty labels, long bones that are not femurs, the same scan for the same seed."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from femurseg.conventions import TISSUES
from femurseg.errors import InputError
from femurseg.phantom.negatives import negative_case


def test_lower_legs_have_long_bones_and_no_label() -> None:
    a = negative_case("lower_legs", 3)
    b = negative_case("lower_legs", 3)
    np.testing.assert_array_equal(sitk.GetArrayViewFromImage(a.scan), sitk.GetArrayViewFromImage(b.scan))
    assert not sitk.GetArrayViewFromImage(a.labels).any()
    tissues = sitk.GetArrayViewFromImage(a.tissues)
    assert (tissues == TISSUES["pelvis_cortical"]).sum() > 1000  # tibiae and fibulae
    assert not np.isin(tissues, [TISSUES["femur_cortical"], TISSUES["femur_trabecular"]]).any()
    hu = sitk.GetArrayViewFromImage(a.scan)
    assert hu.max() > 300 and hu.min() <= -900  # bone and air
    assert a.facts["anatomy_source"] == "negative:lower_legs"


def test_unknown_kind_is_refused() -> None:
    with pytest.raises(InputError, match="lower_legs"):
        negative_case("chest", 0)
