"""Clean-up of a one-femur probability map once thresholded: keep the largest piece, fill enclosed holes.

A femur is one connected solid, so everything else the network marks (a piece of the other hip that entered the
region of interest, speckle in the pelvis) is removed, and enclosed cavities (marrow that the network read as soft
tissue) are filled.  cc3d and fill_voids do this several times faster than scipy.ndimage on a 300³ region.
"""

from __future__ import annotations

import numpy as np


def largest_component(mask: np.ndarray, *, connectivity: int = 26) -> np.ndarray:
    """The largest connected component of a binary mask.

    Parameters
    ----------
    mask : (Z, Y, X) ndarray of bool
        Foreground.
    connectivity : {6, 18, 26}
        Voxel neighbourhood that connects two foreground voxels.

    Returns
    -------
    (Z, Y, X) ndarray of bool
        Only the largest component (all False if ``mask`` is empty).
    """
    import cc3d

    mask = np.asarray(mask, dtype=bool)
    if not mask.any():
        return np.zeros_like(mask)
    labels, n = cc3d.connected_components(mask, connectivity=connectivity, return_N=True)
    if n == 1:
        return labels > 0
    counts = np.bincount(labels.ravel())
    counts[0] = 0
    return labels == int(np.argmax(counts))


def fill_holes(mask: np.ndarray) -> np.ndarray:
    """Fill every background cavity that does not touch the array's border.

    Parameters
    ----------
    mask : (Z, Y, X) ndarray of bool

    Returns
    -------
    (Z, Y, X) ndarray of bool
    """
    import fill_voids

    return fill_voids.fill(np.asarray(mask, dtype=bool), in_place=False)


def clean_femur(mask: np.ndarray) -> np.ndarray:
    """Largest connected component (26-connectivity), then enclosed holes filled.

    Parameters
    ----------
    mask : (Z, Y, X) ndarray of bool
        One femur's thresholded probability.

    Returns
    -------
    (Z, Y, X) ndarray of bool
    """
    return fill_holes(largest_component(mask))
