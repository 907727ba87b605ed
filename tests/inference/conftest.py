"""Fixtures of the inference tests: synthetic hips and tiny locator/femur bundles trained once per session."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch


def load_synthetic():
    """tests/inference/synthetic.py, loaded by path (the tests folder is not a package)."""
    spec = importlib.util.spec_from_file_location("femurseg_test_synthetic", Path(__file__).with_name("synthetic.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def synthetic():
    return load_synthetic()


@pytest.fixture(scope="session")
def tiny_bundles(synthetic, tmp_path_factory) -> dict[str, Path]:
    return synthetic.build_tiny_bundles(tmp_path_factory.getbasetemp() / "femurseg-tiny-bundles")


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
