"""Training patches: where they are taken, and the dataset that hands them to the trainer.

Sampling, per patch:

- a volume (a femur ROI, or a whole scan for the locator) uniformly at random;
- its ROI box, each face moved by up to ± ``roi_jitter_mm`` (the inference locator is not exact);
- a centre: with probability ``head_fraction`` a voxel of the femoral head's surface (the top
  :data:`~femurseg.training.data.HEAD_REGION_MM` of the femur, where the phantom hold-out's errors are densest);
  else with probability ``foreground_fraction`` a femur voxel inside the box (half of these on the femur's surface,
  where the errors are), otherwise anywhere in the box;
- a spatial/intensity augmentation (:mod:`femurseg.training.transforms`).

Patch ``i`` of the run is a pure function of ``(seed, i)`` (its own ``SeedSequence``), whatever process draws it:
data-parallel ranks each build their share of the same global batch, data-loading workers need no shared
state, and a resumed run draws exactly the patches the uninterrupted one would have.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from femurseg.models.preprocessing import crop_padded
from femurseg.training.config import AugmentationConfig
from femurseg.training.data import Volume
from femurseg.training.transforms import Augmenter


def patch_rng(seed: int, index: int) -> np.random.Generator:
    """The generator of patch ``index`` of a run seeded with ``seed``."""
    return np.random.default_rng(np.random.SeedSequence([int(seed), 0x9A7C4, int(index)]))


@dataclass(frozen=True)
class PatchPlace:
    """Where one patch is taken.

    Attributes
    ----------
    volume : int
        Index of the volume.
    centre : (3,) tuple of int
        Patch centre [voxels, (z, y, x)] in the volume.
    box_start, box_stop : (3,) tuple of int
        The jittered ROI box [voxels]; outside it the patch is padding.
    kind : {"head", "surface", "foreground", "random"}
    """

    volume: int
    centre: tuple[int, int, int]
    box_start: tuple[int, int, int]
    box_stop: tuple[int, int, int]
    kind: str


def jitter_box(volume: Volume, *, jitter_vox: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """The volume's ROI box with each face moved by up to ± ``jitter_vox`` [voxels], kept inside the arrays."""
    start = np.asarray(volume.roi_start, int)
    stop = np.asarray(volume.roi_stop, int)
    j = np.asarray(jitter_vox, int)
    if j.any():
        start = start + rng.integers(-j, j + 1)
        stop = stop + rng.integers(-j, j + 1)
    shape = np.asarray(volume.image.shape)
    start = np.clip(start, 0, shape - 1)
    stop = np.clip(stop, start + 1, shape)
    return start, stop


def _point_inside(points: np.ndarray, start: np.ndarray, stop: np.ndarray,
                  rng: np.random.Generator) -> np.ndarray | None:
    """One of ``points`` (N, 3) inside ``[start, stop)`` at random, or None."""
    if not len(points):
        return None
    candidates = np.flatnonzero(np.all((points >= start) & (points < stop), axis=1))
    return points[candidates[int(rng.integers(0, len(candidates)))]] if len(candidates) else None


def choose_place(
    volumes: Sequence[Volume], *, foreground_fraction: float, jitter_mm: float, rng: np.random.Generator,
    head_fraction: float = 0.0,
) -> PatchPlace:
    """Draw a volume, a jittered box and a patch centre (see the module's docstring).

    ``head_fraction`` 0 draws exactly what runs before it existed drew (no extra random number is taken)."""
    v = int(rng.integers(0, len(volumes)))
    vol = volumes[v]
    jitter_vox = np.floor(jitter_mm / np.asarray(vol.spacing_zyx)).astype(int)
    start, stop = jitter_box(vol, jitter_vox=jitter_vox, rng=rng)
    kind = "random"
    centre = None
    if head_fraction > 0 and rng.random() < head_fraction:
        kind = "head"
        centre = _point_inside(vol.head_surface, start, stop, rng)
    if centre is None and rng.random() < foreground_fraction:
        kind = "surface" if rng.random() < 0.5 else "foreground"
        centre = _point_inside(vol.surface if kind == "surface" else vol.foreground, start, stop, rng)
    if centre is None:
        kind = "random"
        centre = rng.integers(start, stop)
    return PatchPlace(v, tuple(int(c) for c in centre), tuple(int(s) for s in start), tuple(int(s) for s in stop), kind)


class PatchDataset(torch.utils.data.Dataset):
    """Augmented training patches; item ``i`` is patch ``i`` of the run.

    Parameters
    ----------
    volumes : sequence of Volume
        Prepared training volumes.
    patch_size_zyx : (3,) tuple of int
    hu_window : (2,) tuple of float
        [HU]
    augmentation : AugmentationConfig
    foreground_fraction : float
    num_classes : int
        2 (femur model) or 3 (locator).
    seed : int
    length : int
        Number of patches (steps × global batch).
    roi_jitter_mm : float, optional
        ROI box jitter [mm]; default ``augmentation.roi_jitter_mm`` (0 for a whole-scan locator, whose "box" is
        the scan).
    head_fraction : float, optional
        Fraction of patches centred on the femoral head's surface (see :func:`choose_place`).
    soft_targets : bool, optional
        Targets are the femur label interpolated at each voxel centre (``Volume.soft``, a partial-volume estimate,
        carried through the same spatial augmentation as the image) instead of class indices, so the network can
        say where inside a voxel the bone's edge lies for the 0.5 threshold on the scan's own grid.  Two classes
        only.

    Items are ``(image, target)``: (1, Z, Y, X) float32 in [-1, 1] and (Z, Y, X) int64 class indices (float32
    fractions in [0, 1] with ``soft_targets``).
    """

    def __init__(
        self,
        volumes: Sequence[Volume],
        *,
        patch_size_zyx: tuple[int, int, int],
        hu_window: tuple[float, float],
        augmentation: AugmentationConfig,
        foreground_fraction: float,
        num_classes: int,
        seed: int,
        length: int,
        roi_jitter_mm: float | None = None,
        head_fraction: float = 0.0,
        soft_targets: bool = False,
    ) -> None:
        if not volumes:
            raise ValueError("no training volumes")
        if soft_targets and (num_classes != 2 or any(v.soft is None for v in volumes)):
            raise ValueError("soft_targets needs femur volumes (two classes, with their femur fractions)")
        spacings = {tuple(v.spacing_zyx) for v in volumes}
        if len(spacings) != 1:
            raise ValueError(f"volumes must share one spacing, got {sorted(spacings)}")
        self.volumes = list(volumes)
        self.patch = tuple(int(p) for p in patch_size_zyx)
        self.hu_window = (float(hu_window[0]), float(hu_window[1]))
        self.augmentation = augmentation
        self.foreground_fraction = float(foreground_fraction)
        self.head_fraction = float(head_fraction)
        self.soft_targets = bool(soft_targets)
        self.num_classes = int(num_classes)
        self.seed = int(seed)
        self.length = int(length)
        self.roi_jitter_mm = float(augmentation.roi_jitter_mm if roi_jitter_mm is None else roi_jitter_mm)
        self.augmenter = Augmenter(
            augmentation, patch_size_zyx=self.patch, spacing_zyx=spacings.pop(), hu_window=self.hu_window
        )
        #: Seconds spent in the last item's sampling/cropping and augmentation (for the benchmark).
        self.last_timing: dict[str, float] = {}

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        import time

        t0 = time.perf_counter()
        rng = patch_rng(self.seed, index)
        place = choose_place(
            self.volumes, foreground_fraction=self.foreground_fraction, jitter_mm=self.roi_jitter_mm, rng=rng,
            head_fraction=self.head_fraction,
        )
        vol = self.volumes[place.volume]
        draw = self.augmenter.draw_spatial(rng)
        centre = np.asarray(place.centre)
        patch = np.asarray(self.patch)
        fill = self.hu_window[0]
        if draw.identity:
            start = centre - patch // 2
            image = torch.from_numpy(crop_padded(np.asarray(vol.image), start, patch, fill=fill).astype(np.float32))[None]
            if self.soft_targets:
                target = torch.from_numpy(crop_padded(np.asarray(vol.soft), start, patch, fill=0) / np.float32(255))
            else:
                target = torch.from_numpy(crop_padded(np.asarray(vol.target), start, patch, fill=0).astype(np.int64))
            t1 = time.perf_counter()
        else:
            lo, hi = self.augmenter.source_extent(draw)
            # The patch centre in index terms is centre - patch//2 + (patch-1)/2, exactly as without augmentation.
            c_cont = centre - patch // 2 + (patch - 1) / 2.0
            start = np.floor(c_cont).astype(int) + lo
            shape = hi - lo + 1
            img = crop_padded(np.asarray(vol.image), start, shape, fill=int(round(fill))).astype(np.float32)
            # Channels are shifted so that zero is their fill value (grid_sample pads with zeros).
            if self.soft_targets:
                femur = crop_padded(np.asarray(vol.soft), start, shape, fill=0) / np.float32(255)
                chans = [img - np.float32(fill), femur.astype(np.float32)]
            else:
                tgt = crop_padded(np.asarray(vol.target), start, shape, fill=0)
                chans = [img - np.float32(fill)] + [(tgt == k).astype(np.float32) for k in range(1, self.num_classes)]
            block = torch.from_numpy(np.stack(chans))
            t1 = time.perf_counter()
            out = self.augmenter.resample(block, draw, c_cont - start)
            image = out[:1] + fill
            fractions = out[1:]
            if self.soft_targets:
                target = fractions[0].clamp(0.0, 1.0)
            else:
                background = 1.0 - fractions.sum(0, keepdim=True)
                target = torch.cat([background, fractions]).argmax(0)
        # Outside the jittered box the network sees what inference pads with; there is nothing to segment there.
        idx = [torch.arange(n) + int(c - p // 2) for n, c, p in zip(self.patch, centre, patch)]
        inside = [(i >= s) & (i < e) for i, s, e in zip(idx, place.box_start, place.box_stop)]
        valid = inside[0].view(-1, 1, 1) & inside[1].view(1, -1, 1) & inside[2].view(1, 1, -1)
        t2 = time.perf_counter()
        image = self.augmenter.intensity(image, rng)
        labels = (target >= 0.5).long() if self.soft_targets else target  # the femur voxels, for the cuts
        p_cut = self.augmenter.config.p_fov_cut
        if p_cut > 0 and rng.random() < p_cut:  # the patch's last draws: the cut leaves the others unchanged
            valid = valid & fov_cut_mask(labels, rng)
        p_z = self.augmenter.config.p_z_cut
        if p_z > 0 and rng.random() < p_z:
            valid = valid & z_cut_mask(labels, rng, spacing_z_mm=float(self.augmenter.spacing[0]))
        image = torch.where(valid[None], image, torch.tensor(-1.0))
        target = torch.where(valid, target, torch.tensor(0, dtype=target.dtype))
        t3 = time.perf_counter()
        self.last_timing = {"crop": t1 - t0, "spatial": t2 - t1, "intensity": t3 - t2}
        return image, (target.float() if self.soft_targets else target.long())


def fov_cut_mask(target: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    """(Z, Y, X) bool: the side of a random in-plane straight edge that stays in the field of view.

    The edge is parallel to z (scan edges and reconstruction circles are), in any in-plane direction, and passes
    within ±8 voxels of a random foreground voxel of ``target`` (of the patch centre when there is none), so it cuts
    the bone. Three draws from ``rng``: the direction, the voxel, the offset.
    """
    angle = rng.uniform(0.0, 2.0 * np.pi)
    fg = torch.nonzero(target > 0)
    pick = rng.integers(0, max(len(fg), 1))
    point = fg[int(pick)].numpy()[1:] if len(fg) else (np.asarray(target.shape[1:]) - 1) / 2.0
    offset = rng.uniform(-8.0, 8.0)
    ny, nx = target.shape[1:]
    yy = torch.arange(ny, dtype=torch.float32).view(-1, 1) - float(point[0])
    xx = torch.arange(nx, dtype=torch.float32).view(1, -1) - float(point[1])
    keep = (yy * float(np.sin(angle)) + xx * float(np.cos(angle))) <= offset
    return keep.unsqueeze(0).expand(target.shape)


#: Where an axial field-of-view end falls: this far under the top of the femur in the patch [mm] (from the head's
#: cap to below the lesser trochanter).
Z_CUT_DEPTH_MM: tuple[float, float] = (5.0, 60.0)


def z_cut_mask(target: torch.Tensor, rng: np.random.Generator, *, spacing_z_mm: float) -> torch.Tensor:
    """(Z, Y, X) bool: the side of a random axial plane that stays in the field of view (a scan's first or last slice).

    The plane lies ``Z_CUT_DEPTH_MM`` under the highest foreground voxel of ``target`` (z index grows superior,
    LPS), or across the middle of the patch when there is none; the kept side is above or below it, half each.
    Two draws from ``rng``: the depth, the side.
    """
    nz = target.shape[0]
    depth = rng.uniform(*Z_CUT_DEPTH_MM) / spacing_z_mm
    keep_above = rng.random() < 0.5
    zs = torch.nonzero((target > 0).flatten(1).any(1)).flatten()
    plane = float(zs.max()) - depth if len(zs) else (nz - 1) / 2.0
    z = torch.arange(nz, dtype=torch.float32)
    keep = z >= plane if keep_above else z < plane
    return keep.view(-1, 1, 1).expand(target.shape)


def validation_crop(volume: Volume, *, hu_window: tuple[float, float]) -> tuple[np.ndarray, np.ndarray]:
    """A volume's nominal ROI, as the network sees it at inference: ((Z, Y, X) float32 in [-1, 1], (Z, Y, X) uint8)."""
    from femurseg.models.preprocessing import normalize_hu

    sl = tuple(slice(a, b) for a, b in zip(volume.roi_start, volume.roi_stop))
    return normalize_hu(np.asarray(volume.image[sl]), hu_window=hu_window), np.asarray(volume.target[sl])
