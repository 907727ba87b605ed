"""How a scan is turned into the network's input: the contract shared by training, model bundles and inference.

Torch-free.  The :class:`Preprocessing` of a model is stored in its bundle's ``model.json``; training and
inference both call the functions of this module so that they prepare images identically.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Preprocessing:
    """Preprocessing of a one-sided femur model.

    Attributes
    ----------
    task : {"femur", "locate"}
        ``"femur"``: the fine, one-sided model; it sees one femur's region of interest and predicts
        background/femur (2 classes).  ``"locate"``: the coarse locator; it sees the whole scan and predicts
        background/right femur/left femur (3 classes, patient sides), so regions of interest can be cropped.
    target_spacing_zyx : (3,) tuple of float
        Isotropic or anisotropic spacing the network works at [mm], (z, y, x).
    hu_window : (2,) tuple of float
        Intensities are clipped to this window [HU] and mapped linearly to [-1, 1].
    patch_size_zyx : (3,) tuple of int
        Training patch and sliding-window size [voxels], each divisible by ``2 ** depth`` of the network.
    roi_margin_mm : float
        Margin added around a femur's bounding box when cropping its region of interest [mm].
    mirror_left : bool
        The network sees right femurs; left-side regions are mirrored along the patient's left–right axis
        (``task="femur"`` only; a locator sees the scan as it is).
    """

    task: str = "femur"
    target_spacing_zyx: tuple[float, float, float] = (1.0, 1.0, 1.0)
    hu_window: tuple[float, float] = (-250.0, 1750.0)
    patch_size_zyx: tuple[int, int, int] = (96, 96, 96)
    roi_margin_mm: float = 12.0
    mirror_left: bool = True

    def __post_init__(self) -> None:
        if self.task not in ("femur", "locate"):
            raise ValueError(f"task must be 'femur' or 'locate', not {self.task!r}")
        if any(s <= 0 for s in self.target_spacing_zyx):
            raise ValueError("target_spacing_zyx must be positive")
        if not self.hu_window[0] < self.hu_window[1]:
            raise ValueError("hu_window must be (low, high) with low < high")
        if any(p <= 0 for p in self.patch_size_zyx):
            raise ValueError("patch_size_zyx must be positive")
