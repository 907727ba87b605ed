"""Synthetic hip scans and tiny trained bundles for the inference and CLI tests (deterministic from seeds).

A scan is a soft-tissue body (air outside) holding two femur-like bones (head, neck, greater trochanter, shaft;
cortex bright, trabecular interior dimmer), acetabular shells and a sacrum-like blob as distractors.  The head
lies medial to the shaft, so a bone's side can be told from its shape as in real anatomy.  In LPS the patient's
right femur is at smaller x.  ``from helpers.synthetic import synthetic_hip, build_tiny_bundles``; a scan is written as
a DICOM series with :func:`helpers.dicom.write_ct_series`.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk

SHAPE_ZYX = (48, 64, 64)
SPACING_ZYX = (2.0, 2.0, 2.0)


def _segment_distance(p: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    ab = b - a
    t = np.clip(((p - a) @ ab) / float(ab @ ab), 0.0, 1.0)
    return np.linalg.norm(p - (a + t[..., None] * ab), axis=-1)


def synthetic_hip(
    *,
    seed: int = 0,
    sides: tuple[str, ...] = ("right", "left"),
    shape_zyx: tuple[int, int, int] = SHAPE_ZYX,
    spacing_zyx: tuple[float, float, float] = SPACING_ZYX,
    jitter: bool = False,
    direction: tuple[float, ...] = (1, 0, 0, 0, 1, 0, 0, 0, 1),
) -> tuple[sitk.Image, sitk.Image]:
    """A synthetic hip CT [HU] (int16) and its labels (uint8: 1 right femur, 2 left femur), same geometry.

    The anatomy is placed in world space around (0, 0, 0); the voxel grid (of ``direction``) is centred there,
    so an oblique or flipped grid samples the same anatomy.
    """
    rng = np.random.default_rng(seed)
    spacing_xyz = np.asarray(spacing_zyx, float)[::-1]
    size_xyz = np.asarray(shape_zyx)[::-1]
    dmat = np.asarray(direction, float).reshape(3, 3)
    origin = -dmat @ ((size_xyz - 1) / 2.0 * spacing_xyz)
    zz, yy, xx = np.meshgrid(*(np.arange(n, dtype=float) for n in shape_zyx), indexing="ij")
    idx_xyz = np.stack([xx, yy, zz], axis=-1) * spacing_xyz
    p = idx_xyz @ dmat.T + origin  # world (x, y, z) of every voxel [mm]

    shift = rng.uniform(-6, 6, 3) if jitter else np.zeros(3)
    scale = rng.uniform(0.9, 1.1) if jitter else 1.0
    hu_shift = rng.uniform(-40, 40) if jitter else 0.0
    q = (p - shift) / scale

    hu = np.full(p.shape[:3], -1000.0)
    body = (q[..., 0] / 62.0) ** 2 + (q[..., 1] / 45.0) ** 2 <= 1.0
    hu[body] = 40.0
    labels = np.zeros(p.shape[:3], np.uint8)
    bone_hu = np.zeros(p.shape[:3])
    sacrum = np.linalg.norm(q - np.array([0.0, 28.0, 22.0]), axis=-1) <= 12.0
    bone_hu[sacrum] = 450.0
    for side, s, value in (("right", -1.0, 1), ("left", 1.0, 2)):
        head = np.array([s * 22.0, 0.0, 18.0])
        shell = np.linalg.norm(q - head, axis=-1)
        acetabulum = (shell >= 12.5) & (shell <= 16.0) & (q[..., 2] > head[2] + 1.0)
        bone_hu[acetabulum] = 650.0
        if side not in sides:
            continue
        neck_end = np.array([s * 40.0, 0.0, 4.0])
        d = np.minimum.reduce([
            shell - 10.0,
            _segment_distance(q, head, neck_end) - 6.0,
            np.linalg.norm(q - np.array([s * 47.0, 4.0, 8.0]), axis=-1) - 8.0,
            _segment_distance(q, np.array([s * 42.0, 0.0, 6.0]), np.array([s * 38.0, 0.0, -80.0])) - 8.0,
        ])
        inside = d <= 0
        bone_hu[inside] = np.where(d[inside] > -2.5, 1300.0, 250.0)
        labels[inside] = value
    hu = np.where(bone_hu > 0, bone_hu, hu) + hu_shift
    hu += rng.normal(0.0, 25.0, hu.shape)
    image = sitk.GetImageFromArray(np.clip(np.round(hu), -1024, 3000).astype(np.int16))
    lab = sitk.GetImageFromArray(labels)
    for im in (image, lab):
        im.SetSpacing(tuple(float(v) for v in spacing_xyz))
        im.SetOrigin(tuple(float(v) for v in origin))
        im.SetDirection(tuple(float(v) for v in direction))
    return image, lab


def _train(model, inputs, targets, *, steps: int, lr: float, seed: int, patch=None, mirror_y: bool = False):
    import torch

    g = np.random.default_rng(seed)
    torch.manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    n_classes = model.config.out_channels
    # One thread: on the shared 2-core test machine, 2 OpenMP threads of a tiny net are 10x slower under load.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        _steps(model, opt, inputs, targets, steps=steps, g=g, patch=patch, n_classes=n_classes, mirror_y=mirror_y)
    finally:
        torch.set_num_threads(threads)
    model.eval()
    return model


def _steps(model, opt, inputs, targets, *, steps, g, patch, n_classes, mirror_y) -> None:
    import torch
    import torch.nn.functional as F

    for _ in range(steps):
        batch = g.choice(len(inputs), size=min(2, len(inputs)), replace=False)
        xs, ys = [], []
        for i in batch:
            x, y = inputs[i], targets[i]
            if patch is not None:
                start = [int(g.integers(0, s - p + 1)) for s, p in zip(x.shape, patch)]
                sl = tuple(slice(a, a + p) for a, p in zip(start, patch))
                x, y = x[sl], y[sl]
            if mirror_y and g.random() < 0.5:  # mirror augmentation along y (anterior-posterior)
                x, y = x[:, ::-1], y[:, ::-1]
            xs.append(np.ascontiguousarray(x))
            ys.append(np.ascontiguousarray(y))
        x = torch.from_numpy(np.stack(xs))[:, None]
        y = torch.from_numpy(np.stack(ys).astype(np.int64))
        logits = model(x)
        prob = torch.softmax(logits, 1)
        onehot = F.one_hot(y, n_classes).permute(0, 4, 1, 2, 3).float()
        inter = (prob * onehot).sum((2, 3, 4))[:, 1:]
        denom = (prob.square() + onehot).sum((2, 3, 4))[:, 1:]
        loss = F.cross_entropy(logits, y) + (1 - (2 * inter + 1) / (denom + 1)).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()


def _pad_to(x: np.ndarray, shape, fill: float) -> np.ndarray:
    """Centred padding to ``shape``, as the sliding window pads a volume smaller than its window."""
    pads = [((n - s) // 2, n - s - (n - s) // 2) for s, n in zip(x.shape, shape)]
    return np.pad(x, pads, constant_values=fill)


def _rotation_z(degrees: float) -> tuple[float, ...]:
    c, s = np.cos(np.radians(degrees)), np.sin(np.radians(degrees))
    return (c, -s, 0.0, s, c, 0.0, 0.0, 0.0, 1.0)


def build_tiny_bundles(folder: Path) -> dict[str, Path]:
    """Train (once; cached in ``folder``) a tiny locator and a tiny femur model on synthetic hips.

    Returns ``{"locate": path, "femur": path}`` of bundles written with ``save_bundle``.
    """
    from femurseg.models.bundle import save_bundle
    from femurseg.models.preprocessing import (
        Preprocessing, mirror_x, normalize_hu, resample_image, resample_labels, resample_mask, roi_grid, scan_grid,
        world_box_of_mask,
    )
    from femurseg.models.vnet import VNetConfig, build_vnet

    folder = Path(folder)
    paths = {"locate": folder / "locate", "femur": folder / "femur"}
    if all((p / "model.json").exists() for p in paths.values()):
        return paths
    folder.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    # Six two-hip, three one-hip cases; a third of them on rotated grids (the field of view's edge then crosses the
    # locator's grid, as in oblique scans).
    cases = [synthetic_hip(seed=100 + i, jitter=True,
                           sides=(("right", "left"), ("right",), ("left",))[i % 3] if i >= 6 else ("right", "left"),
                           direction=_rotation_z((-25.0, 0.0, 25.0)[i % 3] if i % 2 else 0.0))
             for i in range(9)]

    loc_pre = Preprocessing(task="locate", target_spacing_zyx=(4.0, 4.0, 4.0), hu_window=(-250.0, 1750.0),
                            patch_size_zyx=(28, 44, 44), roi_margin_mm=0.0, mirror_left=False)
    loc_cfg = VNetConfig(out_channels=3, base_width=4, depth=2, convs_per_stage=(1, 1, 1), kernel_size=3)
    xs, ys = [], []
    for image, labels in cases:
        grid = scan_grid(image, spacing_zyx=loc_pre.target_spacing_zyx)
        x = normalize_hu(resample_image(image, grid, fill_hu=loc_pre.hu_window[0]), hu_window=loc_pre.hu_window)
        y = resample_labels(labels, grid, values=(1, 2))
        xs.append(_pad_to(x, loc_pre.patch_size_zyx, -1.0))
        ys.append(_pad_to(y, loc_pre.patch_size_zyx, 0))
    locator = _train(build_vnet(loc_cfg, seed=1), xs, ys, steps=150, lr=5e-3, seed=1)

    fem_pre = Preprocessing(task="femur", target_spacing_zyx=(2.0, 2.0, 2.0), hu_window=(-250.0, 1750.0),
                            patch_size_zyx=(32, 32, 32), roi_margin_mm=6.0, mirror_left=True)
    fem_cfg = VNetConfig(out_channels=2, base_width=4, depth=2, convs_per_stage=(1, 1, 1), kernel_size=3)
    xs, ys = [], []
    for image, labels in cases:
        for value, mirror in ((1, False), (2, True)):
            side = sitk.Equal(labels, value)
            box = world_box_of_mask(side)
            if box is None:
                continue
            lo, hi = box
            jitter = np.random.default_rng(value).uniform(-4, 4, 3)
            grid = roi_grid(lo + jitter, hi + jitter, spacing_zyx=fem_pre.target_spacing_zyx,
                            margin_mm=fem_pre.roi_margin_mm, min_shape_zyx=fem_pre.patch_size_zyx)
            x = normalize_hu(resample_image(image, grid, fill_hu=fem_pre.hu_window[0]), hu_window=fem_pre.hu_window)
            y = resample_mask(side, grid).astype(np.uint8)
            if mirror:
                x, y = mirror_x(x), mirror_x(y)
            xs.append(x)
            ys.append(y)
    femur = _train(build_vnet(fem_cfg, seed=2), xs, ys, steps=100, lr=5e-3, seed=2, patch=(32, 32, 32), mirror_y=True)
    seconds = time.perf_counter() - t0
    for kind, model, cfg, pre in (("locate", locator, loc_cfg, loc_pre), ("femur", femur, fem_cfg, fem_pre)):
        save_bundle(paths[kind], model=model, config=cfg, preprocessing=pre,
                    labels={"background": 0, "right femur": 1, "left femur": 2} if kind == "locate"
                    else {"background": 0, "femur": 1},
                    training={"cases": len(cases), "seconds": seconds, "note": "tiny test model",
                              "augmentation": {"mirror_axes": [1] if kind == "femur" else []}},
                    metrics={}, name=f"tiny-{kind}-test",
                    # The toy femurs: head radius 10 mm, 15-25 mL in view, heads 44 mm apart.
                    qc_limits=None if kind == "locate" else {"head_radius_mm": [7.0, 14.0], "volume_ml": [8.0, 60.0],
                                                             "min_volume_ml": 1.0, "min_neck_offset_mm": 8.0,
                                                             "min_midline_offset_mm": 12.0,
                                                             "min_head_separation_mm": 30.0})
    return paths

