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


def test_a_chest_has_lungs_ribs_and_humeral_heads_but_no_femur() -> None:
    from femurseg.phantom.negatives import _chest_arms

    tissues, spacing = _chest_arms(np.random.default_rng(5))
    again, _ = _chest_arms(np.random.default_rng(5))
    np.testing.assert_array_equal(tissues, again)
    assert 0.85 <= spacing[1] <= 1.0 and spacing[0] in (1.0, 1.25, 2.5, 3.0, 5.0)
    mid = tissues[tissues.shape[0] // 2]
    body = mid != TISSUES["air"]
    ys, xs = np.nonzero(body)
    centre = mid[int(ys.mean()) - 20:int(ys.mean()) + 20, int(xs.mean()) - 120:int(xs.mean()) + 120]
    assert (centre == TISSUES["air"]).mean() > 0.3  # lungs inside the body
    assert (mid == TISSUES["pelvis_cortical"]).sum() > 100  # ribs, vertebra, sternum, scapulae
    assert not np.isin(tissues, [TISSUES["femur_cortical"], TISSUES["femur_trabecular"]]).any()
    # The humeral heads: a ball of trabecular bone in each arm near the top, wider than the shaft below.
    width = [(tissues[k] == TISSUES["pelvis_trabecular"])[:, :60].sum() for k in range(tissues.shape[0])]
    assert max(width[-int(60 / spacing[0]):]) > 4 * max(width[:int(60 / spacing[0])] + [1])
