"""Find each femur in a whole scan with the coarse locator network.

The locator (a bundle whose preprocessing has ``task="locate"``) sees the whole scan at its coarse spacing on an
LPS grid and labels background / right femur / left femur.  The largest connected component of each class is that
femur; its world box tells the fine model where to look.  No intensity threshold is involved: what is bone is the
network's call.  Long scans (whole-body CT) are processed in overlapping slabs along z so memory stays bounded.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk
import torch

from femurseg.conventions import FEMUR_LABELS
from femurseg.errors import NoFemurFound
from femurseg.geometry import Grid
from femurseg.inference.postprocess import largest_component
from femurseg.models.window import WindowOptions, sliding_window_probabilities
from femurseg.models.preprocessing import Preprocessing, normalize_hu, resample_image, scan_grid

log = logging.getLogger(__name__)

#: Largest locator grid processed in one piece [voxels]; longer scans go in z-slabs (≈ 0.5 GB peak per slab).
SLAB_VOXELS: int = 24_000_000

#: A located component smaller than this is treated as a false alarm, not a femur [mL].  A proximal femur,
#: even cut by the field of view, is tens of millilitres; the locator's speckle is a few voxels.
MIN_FEMUR_ML: float = 2.0


@dataclass(frozen=True)
class FemurBox:
    """Where the locator found one femur.

    Attributes
    ----------
    side : {"right", "left"}
        Patient side.
    lower_xyz, upper_xyz : (3,) ndarray of float
        World box of the component's voxel centres [mm, LPS], (x, y, z).
    volume_ml : float
        Volume of the component at the locator's resolution [mL].
    """

    side: str
    lower_xyz: np.ndarray
    upper_xyz: np.ndarray
    volume_ml: float


def locator_labels(
    image: sitk.Image,
    model: torch.nn.Module,
    preprocessing: Preprocessing,
    *,
    options: WindowOptions,
    device: torch.device,
) -> tuple[np.ndarray, Grid]:
    """The locator's label map over the whole scan.

    Parameters
    ----------
    image : SimpleITK.Image
        The scan [HU], any direction.
    model : torch.nn.Module
        The locator (3 classes), prepared with :func:`femurseg.models.window.prepare_model`.
    preprocessing : Preprocessing
        The locator's preprocessing (``task="locate"``).
    options : WindowOptions
    device : torch.device

    Returns
    -------
    labels : (Z, Y, X) ndarray of uint8
        Argmax class (0 background, 1 right femur, 2 left femur) on ``grid``.
    grid : Grid
        LPS grid at the locator's spacing covering the scan.
    """
    grid = scan_grid(image, spacing_zyx=preprocessing.target_spacing_zyx)
    nz, ny, nx = grid.shape_zyx
    labels = np.zeros(grid.shape_zyx, np.uint8)
    patch_z = int(options.patch_size_zyx[0])
    core = max(2 * patch_z, SLAB_VOXELS // max(1, ny * nx))
    halo = patch_z // 2
    for z0 in range(0, nz, core):
        z1 = min(nz, z0 + core)
        a, b = (0, nz) if core >= nz else (max(0, z0 - halo), min(nz, z1 + halo))
        sub = Grid(
            shape_zyx=(b - a, ny, nx),
            spacing_zyx=grid.spacing_zyx,
            origin_xyz=tuple(grid.index_to_world(np.array([a, 0, 0], float))),
            direction=grid.direction,
        )
        hu = resample_image(image, sub, fill_hu=preprocessing.hu_window[0])
        x = normalize_hu(hu, hu_window=preprocessing.hu_window)
        del hu
        probs = sliding_window_probabilities(model, x, options=options, device=device)
        labels[z0:z1] = np.argmax(probs[:, z0 - a:z1 - a], axis=0).astype(np.uint8)
    return labels, grid


def femur_boxes(labels: np.ndarray, grid: Grid, *, min_volume_ml: float = MIN_FEMUR_ML) -> dict[str, FemurBox | None]:
    """Each side's femur box from a locator label map (largest component per class).

    Parameters
    ----------
    labels : (Z, Y, X) ndarray of uint8
        Locator classes on ``grid``.
    grid : Grid
    min_volume_ml : float
        Components smaller than this are ignored [mL].

    Returns
    -------
    dict
        ``{"right": FemurBox | None, "left": FemurBox | None}``.

    Raises
    ------
    NoFemurFound
        When neither side holds a femur.
    """
    voxel_ml = float(np.prod(grid.spacing_zyx)) / 1000.0
    out: dict[str, FemurBox | None] = {}
    for side, value in FEMUR_LABELS.items():
        comp = largest_component(labels == value)
        volume = float(comp.sum()) * voxel_ml
        if volume < min_volume_ml:
            log.info("locator: no %s femur (largest component %.2f mL)", side, volume)
            out[side] = None
            continue
        idx = [np.flatnonzero(comp.any(axis=tuple(a for a in range(3) if a != ax))) for ax in range(3)]
        lo = np.array([i[0] for i in idx], float)
        hi = np.array([i[-1] for i in idx], float)
        corners = np.array([[z, y, x] for z in (lo[0], hi[0]) for y in (lo[1], hi[1]) for x in (lo[2], hi[2])])
        world = grid.index_to_world(corners)
        out[side] = FemurBox(side=side, lower_xyz=world.min(axis=0), upper_xyz=world.max(axis=0), volume_ml=volume)
        log.info("locator: %s femur %.1f mL in [%s] .. [%s] mm", side, volume,
                 ", ".join(f"{v:.1f}" for v in out[side].lower_xyz), ", ".join(f"{v:.1f}" for v in out[side].upper_xyz))
    if all(b is None for b in out.values()):
        raise NoFemurFound("no femur found in this scan (the locator found neither hip); is it a hip or pelvis CT?")
    return out


def locate_femurs(
    image: sitk.Image,
    model: torch.nn.Module,
    preprocessing: Preprocessing,
    *,
    options: WindowOptions,
    device: torch.device,
) -> dict[str, FemurBox | None]:
    """Locate both femurs of a scan: :func:`locator_labels` then :func:`femur_boxes`.

    Returns
    -------
    dict
        ``{"right": FemurBox | None, "left": FemurBox | None}``; a one-hip scan gives one side.

    Raises
    ------
    NoFemurFound
        When the scan holds no femur.
    """
    labels, grid = locator_labels(image, model, preprocessing, options=options, device=device)
    return femur_boxes(labels, grid)
