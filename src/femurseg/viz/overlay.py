"""Slice pictures of a CT with label contours: axial, coronal and sagittal planes through a point.

Radiological display: the axial view shows the patient's right on the picture's left, anterior up; the coronal
view the patient's right on the left, superior up; the sagittal view anterior on the left, superior up.  Pixels
keep their physical aspect ratio (anisotropic spacing is drawn to scale).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from femurseg.conventions import LABEL_NAMES
from femurseg.errors import InputError
from femurseg.io import array_of, grid_of
from femurseg.atomic import transaction

__all__ = ["save_overlay", "LABEL_COLOURS"]

#: Contour colours by label value (1 right femur, 2 left femur, then more for other label maps).
LABEL_COLOURS: dict[int, str] = {1: "#ff3b30", 2: "#00c7ff", 3: "#ffd60a", 4: "#34c759", 5: "#bf5af2"}
#: Colour of a reference label map's dashed contours (the truth against a prediction).
_REFERENCE_COLOUR: str = "#ffd60a"


def _default_center(labels: np.ndarray | None, spacing_zyx: tuple[float, float, float]) -> np.ndarray:
    """(z, y, x) index near the centre of the right femoral head (label 1; else 2), else the volume's centre.

    The head is the femur's top: its centre lies about one head radius (~22 mm) below the label's highest voxel,
    and in-plane under the label's top 12 mm (where only the head is).
    """
    if labels is not None:
        for value in (1, 2):
            zs = np.flatnonzero((labels == value).any(axis=(1, 2)))
            if len(zs) == 0:
                continue
            ztop = int(zs.max())
            top = labels[max(0, ztop - int(round(12.0 / spacing_zyx[0]))) : ztop + 1] == value
            yx = np.argwhere(top)[:, 1:].mean(axis=0)
            zc = max(int(zs.min()), ztop - int(round(22.0 / spacing_zyx[0])))
            return np.round(np.array([zc, yx[0], yx[1]])).astype(int)
    return np.asarray(labels.shape if labels is not None else (1, 1, 1)) // 2


def save_overlay(
    image: sitk.Image,
    labels: sitk.Image | None,
    path: str | os.PathLike[str],
    *,
    center_xyz: Sequence[float] | None = None,
    title: str | None = None,
    window: tuple[float, float] = (250.0, 1400.0),
    label_names: dict[int, str] | None = None,
    dpi: int = 110,
    crop_mm: tuple[tuple[float, float], ...] | None = None,
    reference: sitk.Image | None = None,
    reference_name: str = "truth",
) -> Path:
    """Save a PNG of three orthogonal slices of ``image`` with the contours of ``labels``.

    Parameters
    ----------
    image : SimpleITK.Image
        CT [HU], 3D.
    labels : SimpleITK.Image, optional
        Label map on the same grid (0 background); each non-zero value gets a contour of its own colour.
    path : path
        Destination PNG (written atomically; parent folders are created).
    center_xyz : (3,) sequence of float, optional
        World point [mm, LPS] the three planes pass through; by default the right femoral head (label 1).
    title : str, optional
        Title above the panels.
    window : (2,) tuple of float
        Display window level and width [HU]; the default shows bone and soft tissue together.
    label_names : dict, optional
        Legend names by label value (default: femurseg's femur labels).
    dpi : int
        Resolution of the PNG.
    crop_mm : ((below, above) [mm] for z, y, x), optional
        Show only this region around the centre (e.g. the proximal femur), so it fills the picture; default: the
        whole scan.
    reference : SimpleITK.Image, optional
        A second label map on the same grid (e.g. the expert's), drawn as yellow dashed contours under ``labels``:
        predicted against true contours.
    reference_name : str
        Its legend name.

    Returns
    -------
    Path
        The written file.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    if image.GetDimension() != 3:
        raise InputError(f"the overlay needs a 3D image, not {image.GetDimension()}D")
    for what, other in (("labels", labels), ("reference", reference)):
        if other is not None and other.GetSize() != image.GetSize():
            raise InputError(f"{what} size {other.GetSize()} differs from the image's {image.GetSize()} (x, y, z)")
    # Draw in the radiological convention whatever the stored axis order: index axes to L, P, S (a permutation and
    # flips, exact; world points, and so center_xyz, are unchanged).
    image = sitk.DICOMOrient(image, "LPS")
    ct = array_of(image).astype(np.float32)
    grid = grid_of(image)
    lab = None
    if labels is not None:
        lab = array_of(sitk.DICOMOrient(labels, "LPS"))
    ref = None if reference is None else array_of(sitk.DICOMOrient(reference, "LPS"))
    if center_xyz is None:
        c = _default_center(lab, grid.spacing_zyx) if lab is not None else np.asarray(ct.shape) // 2
    else:
        c = np.round(grid.world_to_index(np.asarray(center_xyz, float))).astype(int)
    c = np.clip(c, 0, np.asarray(ct.shape) - 1)
    if crop_mm is not None:
        # Only the region around the centre: (below, above) [mm] per array axis z, y, x.
        box = []
        for axis, (before, after) in enumerate(crop_mm):
            sp = grid.spacing_zyx[axis]
            a = max(0, int(c[axis] - round(before / sp)))
            b = min(ct.shape[axis], int(c[axis] + round(after / sp)) + 1)
            box.append(slice(a, b))
        ct = ct[tuple(box)]
        lab = None if lab is None else lab[tuple(box)]
        ref = None if ref is None else ref[tuple(box)]
        c = c - np.array([s.start for s in box])
    dz, dy, dx = grid.spacing_zyx
    nz, ny, nx = ct.shape
    lo, hi = window[0] - window[1] / 2.0, window[0] + window[1] / 2.0
    names = label_names or {k: v for k, v in LABEL_NAMES.items() if k}

    def planes(a: np.ndarray | None) -> list[np.ndarray | None]:
        """The axial, coronal and sagittal slices of a volume as drawn."""
        return [None, None, None] if a is None else [a[c[0]], a[::-1, c[1], :], a[::-1, :, c[2]]]

    # (picture, labels, reference, extent (left, right, bottom, top) in mm, side letters (left, right), name)
    pics, labs, refs = planes(ct), planes(lab), planes(ref)
    axial = (pics[0], labs[0], refs[0], (0, nx * dx, ny * dy, 0), ("R", "L"), "axial")
    coronal = (pics[1], labs[1], refs[1], (0, nx * dx, 0, nz * dz), ("R", "L"), "coronal")
    sagittal = (pics[2], labs[2], refs[2], (0, ny * dy, 0, nz * dz), ("A", "P"), "sagittal")
    widths = [nx * dx, nx * dx, ny * dy]
    heights = [ny * dy, nz * dz, nz * dz]
    scale = 11.0 / sum(widths)  # inches per mm: the three panels side by side fill 11 inches
    fig_h = max(heights) * scale + 0.9
    fig, axes = plt.subplots(1, 3, figsize=(sum(widths) * scale + 0.4, fig_h),
                             gridspec_kw={"width_ratios": widths, "wspace": 0.03}, facecolor="black")
    fig.subplots_adjust(left=0.01, right=0.99, bottom=0.45 / fig_h, top=1.0 - 0.45 / fig_h)
    for ax, (pic, lb, rf, ext, letters, name) in zip(axes, (axial, coronal, sagittal)):
        ax.imshow(pic, cmap="gray", vmin=lo, vmax=hi, extent=ext, interpolation="nearest")
        if rf is not None and rf.any():
            ax.contour((rf > 0).astype(float), levels=[0.5], colors=[_REFERENCE_COLOUR], linewidths=1.3,
                       linestyles="dashed", origin="upper", extent=ext)
        if lb is not None:
            for value in sorted(int(v) for v in np.unique(lb) if v):
                colour = LABEL_COLOURS.get(value, "#ffffff")
                mask = (lb == value).astype(float)
                ax.contour(mask, levels=[0.5], colors=[colour], linewidths=0.9, origin="upper", extent=ext)
        ax.set_axis_off()
        ax.set_title(name, color="white", fontsize=9)
        ax.text(0.02, 0.5, letters[0], transform=ax.transAxes, color="yellow", fontsize=12, weight="bold", va="center")
        ax.text(0.98, 0.5, letters[1], transform=ax.transAxes, color="yellow", fontsize=12, weight="bold", va="center",
                ha="right")
    if lab is not None:
        handles = [Line2D([0], [0], color=LABEL_COLOURS.get(k, "#ffffff"), lw=2) for k in names]
        texts = list(names.values())
        if ref is not None:
            handles.append(Line2D([0], [0], color=_REFERENCE_COLOUR, lw=1.5, ls="--"))
            texts.append(reference_name)
        fig.legend(handles, texts, loc="lower center", ncol=len(texts), frameon=False, labelcolor="white",
                   fontsize=8)
    if title:
        fig.suptitle(title, color="white", fontsize=10)
    fig.text(0.99, 0.01, f"W {window[1]:.0f} L {window[0]:.0f}", color="gray", fontsize=7, ha="right")
    path = Path(path)
    try:
        with transaction(overwrite=True) as tx:
            try:
                fig.savefig(tx.stage(path), dpi=dpi, facecolor="black", bbox_inches="tight", format="png")
            except OSError as err:
                raise InputError(f"cannot write {path}: {err.strerror or err}") from None
    finally:
        plt.close(fig)
    return path
