"""Small synthetic QCT scans with a calibration phantom, built directly (fast and exact truth): the QCT tests' scans."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from femurseg.qct.phantoms import MINDWAYS_K2HPO4, MINDWAYS_WATER


@dataclass(frozen=True)
class SynthPhantom:
    """What to draw: a body and (optionally) a block with rods in a row at any angle and place."""

    shape_zyx: tuple[int, int, int] = (20, 200, 256)
    spacing_zyx: tuple[float, float, float] = (2.0, 1.0, 1.0)
    angle_deg: float = 0.0  # row direction in-plane, from +x towards +y
    centre_yx_mm: tuple[float, float] = (145.0, 128.0)
    pitch_mm: float = 54.0
    radius_mm: float = 8.0
    rods_hu: tuple[float, ...] | None = None  # default: Mindways rods at sigma_ref, beta_ref
    sigma_ref: float = 1.40
    beta_ref: float = -1000.0
    block_hu: float = 10.0
    phantom: bool = True
    noise_hu: float = 15.0
    seed: int = 0
    vessels: tuple[tuple[float, float, float, float], ...] = field(default=())  # y, x, radius [mm], HU
    pad_outside_circle: bool = False

    def true_rods_hu(self) -> np.ndarray:
        if self.rods_hu is not None:
            return np.asarray(self.rods_hu, float)
        return np.asarray(MINDWAYS_WATER) + self.sigma_ref * np.asarray(MINDWAYS_K2HPO4) + self.beta_ref


def _coords(shape_yx: tuple[int, int], spacing_yx: tuple[float, float], sub: int) -> tuple[np.ndarray, np.ndarray]:
    """Sub-sample centres (Y*sub, X*sub) [array mm]."""
    off = (np.arange(sub) + 0.5) / sub - 0.5
    ys = (np.arange(shape_yx[0])[:, None] + off[None, :]).ravel() * spacing_yx[0]
    xs = (np.arange(shape_yx[1])[:, None] + off[None, :]).ravel() * spacing_yx[1]
    return ys[:, None], xs[None, :]


def _slice(p: SynthPhantom) -> np.ndarray:
    sub = 3
    ny, nx = p.shape_zyx[1:]
    Y, X = _coords((ny, nx), p.spacing_zyx[1:], sub)
    img = np.full((ny * sub, nx * sub), -1000.0)
    body = ((X - nx * p.spacing_zyx[2] / 2) / 110.0) ** 2 + ((Y - 70.0) / 60.0) ** 2 <= 1.0
    inner = ((X - nx * p.spacing_zyx[2] / 2) / 95.0) ** 2 + ((Y - 70.0) / 48.0) ** 2 <= 1.0
    img[body] = -100.0
    img[inner] = 50.0
    for vy, vx, vr, vhu in p.vessels:
        img[np.hypot(Y - vy, X - vx) <= vr] = vhu
    if p.phantom:
        u = np.array([np.cos(np.radians(p.angle_deg)), np.sin(np.radians(p.angle_deg))])  # (x, y)
        cy, cx = p.centre_yx_mm
        along = (X - cx) * u[0] + (Y - cy) * u[1]
        across = -(X - cx) * u[1] + (Y - cy) * u[0]
        n = len(p.true_rods_hu())
        img[(np.abs(along) <= (n - 1) / 2 * p.pitch_mm + 25.0) & (np.abs(across) <= 21.0)] = p.block_hu
        for i, hu in enumerate(p.true_rods_hu()):
            t = (i - (n - 1) / 2) * p.pitch_mm
            img[np.hypot(along - t, across) <= p.radius_mm] = hu
    img = img.reshape(ny, sub, nx, sub).mean(axis=(1, 3))
    return ndimage.gaussian_filter(img, sigma=0.45 / np.asarray(p.spacing_zyx[1:]))


def synth_scan(p: SynthPhantom) -> sitk.Image:
    """An int16 CT [HU] of the drawing, with white noise; identity direction, origin (0, 0, 0)."""
    rng = np.random.default_rng(p.seed)
    base = _slice(p)
    vol = base[None] + rng.normal(0.0, p.noise_hu, size=p.shape_zyx) if p.noise_hu > 0 else np.repeat(
        base[None], p.shape_zyx[0], axis=0)
    vol = np.clip(np.rint(vol), -1024, 3071).astype(np.int16)
    if p.pad_outside_circle:
        ny, nx = p.shape_zyx[1:]
        yy, xx = np.ogrid[:ny, :nx]
        vol[:, (yy - (ny - 1) / 2) ** 2 + (xx - (nx - 1) / 2) ** 2 > (min(ny, nx) / 2) ** 2] = -1024
    img = sitk.GetImageFromArray(vol)
    img.SetSpacing(tuple(float(s) for s in p.spacing_zyx[::-1]))
    return img
