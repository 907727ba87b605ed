"""What the phantom's anatomy hands to its CT renderer: bones as fields sampled on a voxel grid.

The anatomy (``femurseg.phantom.anatomy``) poses the bones of one subject in world space (LPS, mm) and samples,
on any :class:`femurseg.geometry.Grid` the renderer asks for, each bone's signed distance and interior fields.
The renderer (``femurseg.phantom.ct``) turns them into tissue fractions, Hounsfield units and label maps.
Sampling a bone only inside its bounding box keeps a 512×512×250 case fast.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: Names of the bones an anatomy provides, in rendering order.
BONE_NAMES: tuple[str, ...] = ("femur_right", "femur_left", "pelvis_right", "pelvis_left", "sacrum")


@dataclass(frozen=True)
class BoneField:
    """One bone sampled on a box of a grid.

    Attributes
    ----------
    box : tuple of 3 slices
        Where the fields lie in the grid's (z, y, x) array; outside the box the bone is absent.
    sdf : (Z, Y, X) ndarray of float32
        Signed distance to the periosteal (outer) surface [mm]; negative inside the bone.
    cortex_mm : (Z, Y, X) ndarray of float32
        Local cortical thickness [mm]: the cortex is where ``-cortex_mm < sdf <= 0``.
    trabecular : (Z, Y, X) ndarray of float32
        In [0, 1]: 1 where the bone's interior is trabecular bone, 0 where it is a marrow canal (femoral shaft).
    """

    box: tuple[slice, slice, slice]
    sdf: np.ndarray
    cortex_mm: np.ndarray
    trabecular: np.ndarray


@dataclass(frozen=True)
class HipLandmarks:
    """World landmarks of a posed hip [mm, LPS], for choosing the field of view and placing soft tissue.

    Dictionaries are keyed by patient side, ``"right"`` and ``"left"``.
    """

    head_center_xyz: dict[str, np.ndarray]
    head_radius_mm: dict[str, float]
    joint_space_mm: dict[str, float]
    acetabulum_roof_z: float
    lesser_trochanter_z: dict[str, float]
    shaft_point_xyz: dict[str, np.ndarray]
    shaft_direction_xyz: dict[str, np.ndarray]
    bounds_min_xyz: np.ndarray
    bounds_max_xyz: np.ndarray
