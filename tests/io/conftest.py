"""Fixtures for the io tests: the DICOM series writer and HU ramp of :mod:`helpers.dicom`."""

from __future__ import annotations

import pytest

from helpers.dicom import ramp_hu, write_ct_series


@pytest.fixture
def ct_series_writer():
    """The :func:`helpers.dicom.write_ct_series` function."""
    return write_ct_series


@pytest.fixture
def hu_ramp():
    """The :func:`helpers.dicom.ramp_hu` function."""
    return ramp_hu
