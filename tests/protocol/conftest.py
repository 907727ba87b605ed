"""Fixtures of the protocol tests: the tiny bundles of the inference tests and a small synthetic cohort."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import SimpleITK as sitk

from helpers.synthetic import build_tiny_bundles, synthetic_hip


@pytest.fixture(scope="session")
def tiny_bundles(tmp_path_factory) -> dict[str, Path]:
    return build_tiny_bundles(tmp_path_factory.getbasetemp() / "femurseg-tiny-bundles")


@pytest.fixture(scope="session")
def hip_cohort(tmp_path_factory) -> Path:
    """Eight synthetic hips (four women, four men; two with one femur) in the cohort-folder layout."""
    root = tmp_path_factory.mktemp("hips")
    (root / "images").mkdir()
    (root / "labels").mkdir()
    rows = []
    for i in range(8):
        image, labels = synthetic_hip(seed=300 + i, jitter=True, sides=("right",) if i in (2, 5) else ("right", "left"))
        sitk.WriteImage(image, str(root / "images" / f"hip{i:02d}.nii.gz"))
        sitk.WriteImage(labels, str(root / "labels" / f"hip{i:02d}.nii.gz"))
        rows.append({"case_id": f"hip{i:02d}", "sex": "F" if i % 2 else "M"})
    with (root / "cohort.csv").open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=["case_id", "sex"])
        w.writeheader()
        w.writerows(rows)
    return root
