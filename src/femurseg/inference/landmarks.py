"""Femoral head centres from a femur mask (torch-free), to centre pictures and checks on each hip.

The head is the round, thick, superior end of the proximal femur: its centre is where the mask's distance to its
own surface peaks among the voxels near the femur's top.  (The trochanters are as high but thinner; the shaft is
thinner and lower.)  A rough landmark for views; the QCT frame computes the precise one.
"""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk

from femurseg.conventions import FEMUR_LABELS

#: How far below the femur's top the head centre is searched [mm]; a femoral head's radius is 18–28 mm.
HEAD_SEARCH_MM: float = 35.0


def femoral_head_centers(mask: sitk.Image) -> dict[str, np.ndarray | None]:
    """World centre of each femoral head of a label mask.

    Parameters
    ----------
    mask : SimpleITK.Image
        Labels (1 right femur, 2 left femur), any direction.

    Returns
    -------
    dict
        ``{"right": (3,) ndarray [mm, LPS] or None, "left": ...}``; None where the label is absent.
    """
    from scipy import ndimage

    labels = sitk.GetArrayViewFromImage(mask)
    spacing_zyx = np.asarray(mask.GetSpacing(), float)[::-1]
    direction = np.asarray(mask.GetDirection(), float).reshape(3, 3)
    origin = np.asarray(mask.GetOrigin(), float)
    out: dict[str, np.ndarray | None] = {}
    for side, value in FEMUR_LABELS.items():
        fg = labels == value
        if not fg.any():
            out[side] = None
            continue
        lo = [int(np.flatnonzero(fg.any(axis=tuple(a for a in range(3) if a != ax)))[0]) for ax in range(3)]
        hi = [int(np.flatnonzero(fg.any(axis=tuple(a for a in range(3) if a != ax)))[-1]) + 1 for ax in range(3)]
        crop = np.pad(fg[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]], 1)
        depth = ndimage.distance_transform_edt(crop, sampling=spacing_zyx)[1:-1, 1:-1, 1:-1]
        idx = np.argwhere(depth > 0) + np.asarray(lo)
        world = (idx[:, ::-1] * spacing_zyx[::-1]) @ direction.T + origin
        near_top = world[:, 2] >= world[:, 2].max() - HEAD_SEARCH_MM
        values = depth[tuple((idx[near_top] - np.asarray(lo)).T)]
        out[side] = world[near_top][int(np.argmax(values))]
    return out
