"""The training recipe: one frozen dataclass, stored as JSON in every run folder.

The defaults are the recipe we train the bundled model with (Zhao et al. 2020: V-Net, Dice loss + λ·L2 weight
regulariser), adapted to a one-sided femur model on 1 mm regions of interest, with strong augmentation for scanner
variety.  Load and save with :func:`load_train_config` / :func:`save_train_config` (``femurseg.config`` JSON).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

from femurseg.config import from_dict, read_json, save_json
from femurseg.errors import InputError
from femurseg.models.preprocessing import Preprocessing
from femurseg.models.vnet import VNetConfig


@dataclass(frozen=True)
class AugmentationConfig:
    """Random transforms applied to every training patch; each has a probability ``p_*`` and a range.

    Attributes
    ----------
    p_affine : float
        Probability of a random rotation + scaling.
    rotate_deg : float
        Rotation about each axis, uniform in ±``rotate_deg`` [degrees].
    scale : (2,) tuple of float
        Isotropic zoom factor range (> 1 enlarges the anatomy).
    p_elastic : float
        Probability of a smooth elastic deformation.
    elastic_mm : float
        Largest displacement of the elastic deformation [mm] (coarse control grid, ~24 mm apart).
    p_calibration : float
        Probability of a scanner calibration change HU' = a·HU + b.
    hu_shift : float
        b uniform in ±``hu_shift`` [HU].
    hu_slope : float
        a uniform in 1 ± ``hu_slope``.
    p_noise : float
        Probability of additive Gaussian noise.
    noise_sd_hu : (2,) tuple of float
        Noise standard deviation range [HU].
    p_blur : float
        Probability of a Gaussian blur (reconstruction kernel variety).
    blur_sigma_mm : (2,) tuple of float
        Blur sigma range [mm].
    p_low_resolution : float
        Probability of MONAI's RandSimulateLowResolution (down-sample in-plane and back).
    low_resolution_zoom : (2,) tuple of float
        Down-sampling factor range (< 1).
    p_thick_slices : float
        Probability of thick-slice simulation: average along z over a slab, then interpolate back.
    slice_thickness_mm : (2,) tuple of float
        Slab thickness range [mm].
    p_gamma : float
        Probability of a gamma (contrast) change of the windowed image.
    gamma : (2,) tuple of float
        Gamma range.
    roi_jitter_mm : float
        Each face of a region of interest moves by up to ±``roi_jitter_mm`` [mm] (the inference locator is not
        exact); voxels outside the jittered box read as the window's low end, as padding does at inference.
    p_fov_cut : float
        Probability of a field-of-view cut: an in-plane straight edge through the femur (any direction) beyond which
        the patch is blank (the window's low end, as a scan's edge or its reconstruction circle reads at inference)
        and nothing is labelled. Targeted reconstructions of real hip scans often cut the greater trochanter or the
        soft tissue; the phantom's drawn fields of view never do.
    p_z_cut : float
        Probability of an axial field-of-view end: a plane across z, 5–60 mm under the top of the femur in the patch,
        beyond which the patch is blank and unlabelled; the kept side is above (an abdominal CT that ends in the
        femoral heads) or below (a thigh or knee CT that starts in them), half each. The phantoms' and label maps'
        fields of view always hold 40 mm of femur or more; real scans end anywhere.
    """

    p_affine: float = 0.8
    rotate_deg: float = 15.0
    scale: tuple[float, float] = (0.85, 1.2)
    p_elastic: float = 0.2
    elastic_mm: float = 3.0
    p_calibration: float = 0.8
    hu_shift: float = 30.0
    hu_slope: float = 0.10
    p_noise: float = 0.5
    noise_sd_hu: tuple[float, float] = (5.0, 40.0)
    p_blur: float = 0.25
    blur_sigma_mm: tuple[float, float] = (0.4, 1.2)
    p_low_resolution: float = 0.2
    low_resolution_zoom: tuple[float, float] = (0.5, 1.0)
    p_thick_slices: float = 0.3
    slice_thickness_mm: tuple[float, float] = (2.0, 5.0)
    p_gamma: float = 0.3
    gamma: tuple[float, float] = (0.7, 1.5)
    roi_jitter_mm: float = 8.0
    p_fov_cut: float = 0.15
    p_z_cut: float = 0.0

    def __post_init__(self) -> None:
        for name in ("p_affine", "p_elastic", "p_calibration", "p_noise", "p_blur", "p_low_resolution",
                     "p_thick_slices", "p_gamma", "p_fov_cut", "p_z_cut"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must lie in [0, 1]")
        for name in ("scale", "noise_sd_hu", "blur_sigma_mm", "low_resolution_zoom", "slice_thickness_mm", "gamma"):
            lo, hi = getattr(self, name)
            if not 0.0 <= lo <= hi:
                raise ValueError(f"{name} must be (low, high) with 0 <= low <= high")
        if self.roi_jitter_mm < 0 or self.elastic_mm < 0 or self.rotate_deg < 0:
            raise ValueError("roi_jitter_mm, elastic_mm and rotate_deg must be non-negative")

    @classmethod
    def off(cls) -> "AugmentationConfig":
        """No augmentation at all (for tests and ablations)."""
        return cls(p_affine=0.0, p_elastic=0.0, p_calibration=0.0, p_noise=0.0, p_blur=0.0, p_low_resolution=0.0,
                   p_thick_slices=0.0, p_gamma=0.0, roi_jitter_mm=0.0, p_fov_cut=0.0)


@dataclass(frozen=True)
class TrainConfig:
    """A training run.

    Attributes
    ----------
    network : VNetConfig
        The V-Net (``out_channels`` 2 for ``preprocessing.task == "femur"``, 3 for ``"locate"``).
    preprocessing : Preprocessing
        Spacing, HU window, patch size, ROI margin, mirroring: stored in the model bundle, reused at inference.
    loss : {"dice", "dice_ce"}
        Soft Dice (the paper) or Dice + cross-entropy.
    l2_lambda : float
        Weight of the L2 penalty on convolution kernels (the paper's regulariser).  When > 0 the optimiser's
        weight decay is 0 (the penalty replaces it).
    optimizer : {"adamw", "sgd"}
    lr : float
        Peak learning rate, reached after ``warmup_steps``.
    momentum : float
        SGD momentum (Nesterov); AdamW's beta1.
    weight_decay : float
        Decoupled weight decay; only allowed when ``l2_lambda`` is 0.
    schedule : {"poly", "cosine"}
        After a linear warm-up: lr·(1 − t)^0.9 (nnU-Net's poly) or a half cosine to 0.
    warmup_steps : int
    steps : int
        Optimiser steps in all.
    batch_size : int
        Global batch (split over data-parallel ranks; must be divisible by their number).
    grad_clip : float
        Gradient norm clipping (0: off).
    val_every : int
        Validate (and keep the best weights) every this many steps, and at the end.
    checkpoint_every : int
        Write a resumable checkpoint every this many steps, and at the end.
    val_fraction : float
        Fraction of cases held out for validation, stratified by sex (ignored when ``val_cases`` is given).
    val_cases : tuple of str
        Explicit validation case ids.
    train_cases : tuple of str
        Explicit training case ids (empty: every case that is not a validation case).  The protocol's folds use
        it: a fold trains on its training subjects only, never on the hold-out.
    foreground_fraction : float
        Fraction of patches centred on a femur voxel (half on its surface); the rest anywhere in the ROI.
    head_fraction : float
        Fraction of patches centred on the femoral head's surface (the top 40 mm of the femur, where the phantom
        hold-out's errors are densest), drawn before ``foreground_fraction`` applies to the others; 0 (default)
        leaves the sampling exactly as before.
    soft_targets : bool
        Femur model: train on the label linearly interpolated at each model voxel (a partial-volume estimate;
        soft Dice + cross-entropy against fractions) instead of that thresholded at 0.5.  A 1 mm
        model that outputs fractions places the edge within its voxels, and the 0.5 threshold after resampling to
        the scan's own (finer) grid recovers the label's edge: thresholded targets cost Dice 0.998 on the phantom
        hold-out's labels through the round trip alone (fractions 1.000).
    augmentation : AugmentationConfig
    sw_overlap : float
        Overlap of sliding windows at validation (Gaussian blending).
    seed : int
        Seeds the split, the weights, every patch and every augmentation.
    device : {"auto", "cpu", "cuda", "mps"}
        "auto": cuda if available, else mps, else cpu.
    amp : bool
        bf16 autocast on cuda (ignored elsewhere).
    num_workers : int
        Data-loading worker processes per rank (0: in the training process; patches stay deterministic either way).
    num_threads : int
        torch CPU threads (0: the machine's cores divided by the number of local ranks).
    init_weights : str, optional
        A model bundle folder whose weights start the run instead of a random initialisation (fine-tuning the
        bundled model on your own cohort, or continuing a run with a new schedule); its architecture must equal
        ``network``.
    """

    network: VNetConfig = field(default_factory=lambda: VNetConfig(base_width=8))
    preprocessing: Preprocessing = field(default_factory=Preprocessing)
    loss: Literal["dice", "dice_ce"] = "dice"
    l2_lambda: float = 1e-5
    optimizer: Literal["adamw", "sgd"] = "adamw"
    lr: float = 1e-3
    momentum: float = 0.9
    weight_decay: float = 0.0
    schedule: Literal["poly", "cosine"] = "poly"
    warmup_steps: int = 50
    steps: int = 3000
    batch_size: int = 2
    grad_clip: float = 12.0
    val_every: int = 250
    checkpoint_every: int = 250
    val_fraction: float = 0.2
    val_cases: tuple[str, ...] = ()
    train_cases: tuple[str, ...] = ()
    foreground_fraction: float = 0.5
    head_fraction: float = 0.0
    soft_targets: bool = False
    augmentation: AugmentationConfig = field(default_factory=AugmentationConfig)
    sw_overlap: float = 0.25
    seed: int = 0
    device: Literal["auto", "cpu", "cuda", "mps"] = "auto"
    amp: bool = True
    num_workers: int = 0
    num_threads: int = 0
    init_weights: str | None = None

    def __post_init__(self) -> None:
        if self.loss not in ("dice", "dice_ce"):
            raise ValueError(f"loss must be 'dice' or 'dice_ce', not {self.loss!r}")
        if self.optimizer not in ("adamw", "sgd"):
            raise ValueError(f"optimizer must be 'adamw' or 'sgd', not {self.optimizer!r}")
        if self.schedule not in ("poly", "cosine"):
            raise ValueError(f"schedule must be 'poly' or 'cosine', not {self.schedule!r}")
        if self.device not in ("auto", "cpu", "cuda", "mps"):
            raise ValueError(f"device must be auto, cpu, cuda or mps, not {self.device!r}")
        if self.l2_lambda < 0 or self.weight_decay < 0:
            raise ValueError("l2_lambda and weight_decay must be non-negative")
        if self.l2_lambda > 0 and self.weight_decay > 0:
            raise ValueError("use either l2_lambda (the paper's L2 penalty) or weight_decay, not both")
        if self.lr <= 0:
            raise ValueError("lr must be positive")
        for name in ("steps", "batch_size", "val_every", "checkpoint_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
        if self.warmup_steps < 0 or self.num_workers < 0 or self.num_threads < 0:
            raise ValueError("warmup_steps, num_workers and num_threads must be non-negative")
        if not 0.0 <= self.val_fraction < 1.0:
            raise ValueError("val_fraction must lie in [0, 1)")
        if set(self.train_cases) & set(self.val_cases):
            raise ValueError("a case cannot be in both train_cases and val_cases")
        if not 0.0 <= self.foreground_fraction <= 1.0:
            raise ValueError("foreground_fraction must lie in [0, 1]")
        if not 0.0 <= self.head_fraction <= 1.0:
            raise ValueError("head_fraction must lie in [0, 1]")
        if not 0.0 <= self.sw_overlap < 1.0:
            raise ValueError("sw_overlap must lie in [0, 1)")
        factor = 2 ** self.network.depth
        if any(p % factor for p in self.preprocessing.patch_size_zyx):
            raise ValueError(
                f"preprocessing.patch_size_zyx {tuple(self.preprocessing.patch_size_zyx)} must be divisible by "
                f"2**network.depth = {factor}"
            )
        classes = 2 if self.preprocessing.task == "femur" else 3
        if self.network.out_channels != classes:
            raise ValueError(
                f"network.out_channels must be {classes} for preprocessing.task {self.preprocessing.task!r}"
            )
        if (self.soft_targets or self.head_fraction > 0) and self.preprocessing.task != "femur":
            raise ValueError(
                "soft_targets and head_fraction are for the femur model (preprocessing.task 'femur') only"
            )

    def with_(self, **changes: object) -> "TrainConfig":
        """A copy with some fields changed (validated again; InputError on a bad value)."""
        try:
            return replace(self, **changes)
        except ValueError as err:
            raise InputError(f"training configuration: {err}") from None


def load_train_config(path: str | Path) -> TrainConfig:
    """A :class:`TrainConfig` from a JSON file; missing keys take their defaults, unknown keys are refused.

    Also reads a run folder's ``config.json`` (the config under its ``"config"`` key), so a run can be repeated.
    """
    path = Path(path)
    data = read_json(path)
    if isinstance(data, dict) and "femurseg_version" in data and isinstance(data.get("config"), dict):
        data = data["config"]
    return from_dict(TrainConfig, data, where=path.name)


def save_train_config(config: TrainConfig, path: str | Path) -> Path:
    """Write ``config`` as JSON (atomically)."""
    return save_json(config, path)
