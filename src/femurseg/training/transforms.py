"""Augmentation of training patches, for scanner and anatomy variety.

The network must work on real scans we never see: other scanners (calibration, noise, kernels, slice thickness),
other patients (pose, size) and an imperfect locator (ROI jitter).  Each patch gets:

1. spatial: rotation (±15° about each axis) and isotropic scaling (0.85–1.2), and a smooth elastic deformation,
   composed into ONE resampling (trilinear image, thresholded-linear labels) straight from the stored volume, so
   the patch has real image content in its corners rather than padding;
2. slice thickness: averaging along z over a 2–5 mm slab, then linear interpolation back (thick-slice protocols);
3. reconstruction kernel: Gaussian blur (MONAI ``GaussianSmooth``);
4. resolution: MONAI ``RandSimulateLowResolution`` (down-sample, then up-sample);
5. calibration: HU' = a·HU + b with a in 1 ± 10 %, b in ±30 HU (scanners and calibration phantoms disagree);
6. Gaussian noise [HU] (MONAI ``RandGaussianNoise``);
7. HU window clip and map to [-1, 1]; then gamma (MONAI ``RandAdjustContrast``);
8. voxels outside the (jittered) ROI box read −1, the window's low end, as the padding at inference does.

Randomness: each patch has its own ``numpy.random.Generator``; it draws every parameter and seeds the MONAI
transforms (``set_random_state``), so a patch is a pure function of the seed and its index.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from femurseg.training.config import AugmentationConfig

#: Spacing of the elastic deformation's control points [mm]: smooth, bone-scale bending rather than texture.
_ELASTIC_CONTROL_MM = 24.0


def _rotation(angles_rad: np.ndarray) -> np.ndarray:
    """3×3 rotation (z, y, x axis order) composed of rotations about z, y and x."""
    out = np.eye(3)
    for axis, a in enumerate(angles_rad):
        c, s = math.cos(a), math.sin(a)
        i, j = [k for k in range(3) if k != axis]
        r = np.eye(3)
        r[i, i], r[i, j], r[j, i], r[j, j] = c, -s, s, c
        out = r @ out
    return out


@dataclass(frozen=True)
class SpatialDraw:
    """The spatial part of one patch's augmentation.

    Attributes
    ----------
    matrix : (3, 3) ndarray
        Maps a patch offset [mm] (z, y, x) to a source offset [mm]; identity when no affine was drawn.
    elastic : (3, Kz, Ky, Kx) ndarray of float32 or None
        Control-point displacements [mm], interpolated trilinearly over the patch.
    """

    matrix: np.ndarray
    elastic: np.ndarray | None

    @property
    def identity(self) -> bool:
        return self.elastic is None and bool(np.allclose(self.matrix, np.eye(3)))


class Augmenter:
    """Draws and applies the augmentation of training patches.

    Parameters
    ----------
    config : AugmentationConfig
    patch_size_zyx : (3,) tuple of int
    spacing_zyx : (3,) tuple of float
        The model's voxel spacing [mm].
    hu_window : (2,) tuple of float
        [HU].
    """

    def __init__(
        self,
        config: AugmentationConfig,
        *,
        patch_size_zyx: tuple[int, int, int],
        spacing_zyx: tuple[float, float, float],
        hu_window: tuple[float, float],
    ) -> None:
        from monai.transforms import GaussianSmooth, RandAdjustContrast, RandGaussianNoise, RandSimulateLowResolution

        self.config = config
        self.patch = tuple(int(p) for p in patch_size_zyx)
        self.spacing = np.asarray(spacing_zyx, float)
        self.hu_window = (float(hu_window[0]), float(hu_window[1]))
        self._smooth = GaussianSmooth
        self._low_res = RandSimulateLowResolution(prob=1.0, zoom_range=config.low_resolution_zoom)
        self._gamma = RandAdjustContrast(prob=1.0, gamma=config.gamma)
        self._noise = RandGaussianNoise(prob=1.0, mean=0.0, std=1.0, sample_std=False)
        offsets = [(np.arange(n) - (n - 1) / 2.0) * s for n, s in zip(self.patch, self.spacing)]
        # Patch voxel offsets from its centre [mm], (3, Z, Y, X): the affine and elastic maps act on these.
        self._offsets_mm = torch.from_numpy(np.stack(np.meshgrid(*offsets, indexing="ij")).astype(np.float32))

    # -- spatial ------------------------------------------------------------------------------------------------

    def draw_spatial(self, rng: np.random.Generator) -> SpatialDraw:
        """The rotation/scale and elastic deformation of one patch."""
        c = self.config
        matrix = np.eye(3)
        if rng.random() < c.p_affine:
            angles = np.deg2rad(rng.uniform(-c.rotate_deg, c.rotate_deg, 3))
            scale = rng.uniform(*c.scale)
            # Zoom > 1 enlarges the anatomy: the patch samples a smaller source region.
            matrix = _rotation(angles) / scale
        elastic = None
        if rng.random() < c.p_elastic and c.elastic_mm > 0:
            k = [max(2, math.ceil(n * s / _ELASTIC_CONTROL_MM) + 1) for n, s in zip(self.patch, self.spacing)]
            elastic = rng.uniform(-c.elastic_mm, c.elastic_mm, (3, *k)).astype(np.float32)
        return SpatialDraw(matrix=matrix, elastic=elastic)

    def source_extent(self, draw: SpatialDraw) -> tuple[np.ndarray, np.ndarray]:
        """(low, high) source offsets [voxels, (z, y, x)] from the patch centre that ``draw`` reads."""
        half = (np.asarray(self.patch) - 1) / 2.0 * self.spacing
        corners = np.array([[a, b, c] for a in (-half[0], half[0]) for b in (-half[1], half[1]) for c in (-half[2], half[2])])
        mm = corners @ draw.matrix.T
        pad = self.config.elastic_mm if draw.elastic is not None else 0.0
        lo = (mm.min(axis=0) - pad) / self.spacing
        hi = (mm.max(axis=0) + pad) / self.spacing
        return np.floor(lo).astype(int) - 1, np.ceil(hi).astype(int) + 1

    def resample(self, block: torch.Tensor, draw: SpatialDraw, centre_in_block: np.ndarray) -> torch.Tensor:
        """Sample a (C, Zs, Ys, Xs) float block on the patch grid mapped by ``draw``.

        Parameters
        ----------
        block : (C, Zs, Ys, Xs) tensor of float32
            Source channels; zero outside (shift channels so that zero is their fill value).
        draw : SpatialDraw
        centre_in_block : (3,) ndarray
            The patch centre's continuous index in the block, (z, y, x).

        Returns
        -------
        (C, Z, Y, X) tensor of float32
        """
        mm = torch.einsum("ij,jzyx->izyx", torch.from_numpy(draw.matrix.astype(np.float32)), self._offsets_mm)
        if draw.elastic is not None:
            field = F.interpolate(torch.from_numpy(draw.elastic)[None], size=self.patch, mode="trilinear", align_corners=True)[0]
            mm = mm + field
        spacing = torch.from_numpy(self.spacing.astype(np.float32)).view(3, 1, 1, 1)
        idx = mm / spacing + torch.from_numpy(centre_in_block.astype(np.float32)).view(3, 1, 1, 1)
        size = torch.tensor(block.shape[1:], dtype=torch.float32).view(3, 1, 1, 1)
        norm = 2.0 * idx / (size - 1).clamp(min=1) - 1.0
        grid = norm.flip(0).permute(1, 2, 3, 0)[None]  # grid_sample wants (x, y, z) last
        return F.grid_sample(block[None], grid, mode="bilinear", padding_mode="zeros", align_corners=True)[0]

    # -- intensity ----------------------------------------------------------------------------------------------

    def _seed(self, rng: np.random.Generator) -> int:
        return int(rng.integers(0, 2**31 - 1))

    def intensity(self, image_hu: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
        """Scanner-variety transforms of a (1, Z, Y, X) patch [HU], then window to [-1, 1] and gamma.

        Returns
        -------
        (1, Z, Y, X) tensor of float32 in [-1, 1]
        """
        c = self.config
        x = image_hu
        lo, hi = self.hu_window
        if rng.random() < c.p_thick_slices:
            thick = rng.uniform(*c.slice_thickness_mm)
            k = max(1, int(round(thick / self.spacing[0])))
            if k > 1:
                phase = int(rng.integers(0, k))
                z = x.shape[1]
                padded = F.pad(x[None], (0, 0, 0, 0, phase, 0), mode="replicate")
                slabs = F.avg_pool3d(padded, kernel_size=(k, 1, 1), stride=(k, 1, 1), ceil_mode=True)
                back = F.interpolate(slabs, size=(slabs.shape[2] * k, *x.shape[2:]), mode="trilinear", align_corners=False)
                x = back[0, :, phase : phase + z]
        if rng.random() < c.p_blur:
            sigma_mm = rng.uniform(*c.blur_sigma_mm)
            x = torch.as_tensor(self._smooth(sigma=tuple(float(sigma_mm / s) for s in self.spacing))(x))
        if rng.random() < c.p_low_resolution:
            self._low_res.set_random_state(seed=self._seed(rng))
            x = torch.as_tensor(self._low_res(x))
        if rng.random() < c.p_calibration:
            a = 1.0 + rng.uniform(-c.hu_slope, c.hu_slope)
            b = rng.uniform(-c.hu_shift, c.hu_shift)
            x = x * a + b
        if rng.random() < c.p_noise:
            sd = rng.uniform(*c.noise_sd_hu)
            self._noise.set_random_state(seed=self._seed(rng))
            self._noise.std = float(sd)
            x = torch.as_tensor(self._noise(x))
        x = (x.clamp(lo, hi) - (lo + hi) / 2.0) * (2.0 / (hi - lo))
        if rng.random() < c.p_gamma:
            self._gamma.set_random_state(seed=self._seed(rng))
            x = torch.as_tensor(self._gamma(x))
        if hasattr(x, "as_tensor"):  # MONAI's MetaTensor: plain tensors batch and run faster
            x = x.as_tensor()
        return x.float().contiguous()
