"""Fixtures of the inference tests: synthetic hips and tiny locator/femur bundles trained once per session."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from helpers.synthetic import build_tiny_bundles


@pytest.fixture(scope="session")
def tiny_bundles(tmp_path_factory) -> dict[str, Path]:
    return build_tiny_bundles(tmp_path_factory.getbasetemp() / "femurseg-tiny-bundles")


@pytest.fixture(scope="session", autouse=True)
def _one_torch_thread():
    # Tiny nets on the shared 2-core machine: two OpenMP threads are several times slower under load than one.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def segmenter(tiny_bundles):
    from femurseg.inference import Segmenter

    return Segmenter(model=tiny_bundles["femur"], locator=tiny_bundles["locate"], device="cpu")
