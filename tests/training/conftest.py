"""Tiny synthetic cohorts for the training tests: two bright ellipsoid "femurs" left and right of the midline."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

SHAPE_ZYX = (40, 40, 48)
SPACING_XYZ = (1.5, 1.5, 2.0)


def make_case(*, seed: int, symmetric: bool = False, offset_mm: float = 0.0) -> tuple[sitk.Image, sitk.Image]:
    """A scan [HU] and its label map (1 right femur at smaller world x, 2 left femur), both 48×40×40 (x, y, z)."""
    rng = np.random.default_rng(seed)
    z, y, x = np.meshgrid(*(np.arange(n, dtype=float) for n in SHAPE_ZYX), indexing="ij")
    sx, sy, sz = SPACING_XYZ
    origin = (-(SHAPE_ZYX[2] - 1) / 2 * sx, -(SHAPE_ZYX[1] - 1) / 2 * sy, -(SHAPE_ZYX[0] - 1) / 2 * sz)
    wx, wy, wz = x * sx + origin[0], y * sy + origin[1], z * sz + origin[2]
    image = np.where((wx / 34) ** 2 + (wy / 28) ** 2 < 1, 40.0, -1000.0)  # soft tissue inside a body outline
    labels = np.zeros(SHAPE_ZYX, np.uint8)
    for value, cx in ((1, -18.0 + offset_mm), (2, 18.0 + offset_mm)):
        r = (6.5, 7.0, 14.0) if symmetric else tuple(rng.uniform([5.5, 6.0, 11.0], [7.5, 8.0, 16.0]))
        cy = 0.0 if symmetric else rng.uniform(-3, 3)
        inside = ((wx - cx) / r[0]) ** 2 + ((wy - cy) / r[1]) ** 2 + (wz / r[2]) ** 2 < 1
        labels[inside] = value
        image[inside] = 700.0
    if not symmetric:
        image += rng.normal(0, 20, SHAPE_ZYX)
    img = sitk.GetImageFromArray(image.astype(np.int16))
    img.SetSpacing(SPACING_XYZ)
    img.SetOrigin(origin)
    lab = sitk.GetImageFromArray(labels)
    lab.CopyInformation(img)
    return img, lab


def write_cohort(root: Path, n: int, *, seed: int = 0, fmt: str = "cohort", single_label: bool = False) -> Path:
    """Write ``n`` cases as a cohort folder or an nnU-Net dataset (optionally one unsided "femur" label)."""
    root.mkdir(parents=True, exist_ok=True)
    img_dir, lab_dir = (root / "images", root / "labels") if fmt == "cohort" else (root / "imagesTr", root / "labelsTr")
    img_dir.mkdir(exist_ok=True)
    lab_dir.mkdir(exist_ok=True)
    rows = []
    for i in range(n):
        cid = f"case{i:03d}"
        img, lab = make_case(seed=seed * 1000 + i)
        if single_label:
            lab = sitk.Cast(lab > 0, sitk.sitkUInt8)
        sitk.WriteImage(img, str(img_dir / (f"{cid}.nii.gz" if fmt == "cohort" else f"{cid}_0000.nii.gz")))
        sitk.WriteImage(lab, str(lab_dir / f"{cid}.nii.gz"))
        rows.append({"case_id": cid, "sex": "F" if i % 2 == 0 else "M"})
    if fmt == "cohort":
        with (root / "cohort.csv").open("w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=["case_id", "sex"])
            w.writeheader()
            w.writerows(rows)
    else:
        labels = {"background": 0, "femur": 1} if single_label else {"background": 0, "femur_right": 1, "femur_left": 2}
        (root / "dataset.json").write_text(
            json.dumps({"channel_names": {"0": "CT"}, "labels": labels, "numTraining": n, "file_ending": ".nii.gz"})
        )
    return root


@pytest.fixture(scope="session")
def tiny_cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three cases in the cohort-folder layout."""
    return write_cohort(tmp_path_factory.mktemp("cohort"), 3, seed=1)


def tiny_config(**changes: object):  # noqa: ANN201
    """A TrainConfig small enough for CPU tests: base width 4, depth 2, 16³ patches at 2 mm."""
    from femurseg.models.preprocessing import Preprocessing
    from femurseg.models.vnet import VNetConfig
    from femurseg.training.config import TrainConfig

    base = TrainConfig(
        network=VNetConfig(base_width=4, depth=2, convs_per_stage=(1, 1, 1)),
        preprocessing=Preprocessing(target_spacing_zyx=(2.0, 2.0, 2.0), patch_size_zyx=(16, 16, 16), roi_margin_mm=4.0),
        steps=6, batch_size=2, val_every=3, checkpoint_every=2, warmup_steps=2, val_fraction=0.34,
        device="cpu", num_threads=1, seed=7,
    )
    return base.with_(**changes)
