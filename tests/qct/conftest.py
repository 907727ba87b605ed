"""Fixtures of the QCT tests (the scans are drawn by :mod:`helpers.qct_phantom`)."""

from __future__ import annotations

import pytest
import SimpleITK as sitk

from helpers.qct_phantom import SynthPhantom, synth_scan


@pytest.fixture(scope="session")
def mindways_scan() -> tuple[sitk.Image, SynthPhantom]:
    p = SynthPhantom(sigma_ref=1.37, beta_ref=-1004.0, angle_deg=17.0, seed=3)
    return synth_scan(p), p
