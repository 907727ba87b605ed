"""Round, homogeneous blobs in CT slices, and the ones that persist along z: candidate calibration rods.

A rod parallel to the scanner's z axis shows in every slice as a disc of constant radius whose inside is
homogeneous and differs from a thin ring around it.  :func:`slice_discs` finds such discs in one slice with a
bank of disc and ring means (computed by FFT), :func:`track_discs` keeps those found at the same place in many
slices.  Positions are in array millimetres: ``(row · dy, column · dx)``, (y, x).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import fft as sfft
from scipy import ndimage

__all__ = ["Disc", "DiscTrack", "slice_discs", "track_discs"]


@dataclass(frozen=True)
class Disc:
    """A disc found in one slice: position (y, x) [array mm], radius [mm], inside and ring means [HU]."""

    slice_index: int
    y_mm: float
    x_mm: float
    radius_mm: float
    inside_hu: float
    contrast_hu: float
    inside_sd: float


@dataclass(frozen=True)
class DiscTrack:
    """Discs at one place in several slices (medians over them)."""

    y_mm: float
    x_mm: float
    radius_mm: float
    inside_hu: float
    contrast_hu: float
    slices: tuple[int, ...]

    @property
    def yx(self) -> np.ndarray:
        """(2,) position [array mm], (y, x)."""
        return np.array([self.y_mm, self.x_mm])


def _block_mean(img: np.ndarray, f: int) -> np.ndarray:
    if f == 1:
        return img.astype(np.float64)
    ny, nx = (img.shape[0] // f) * f, (img.shape[1] // f) * f
    return img[:ny, :nx].astype(np.float64).reshape(ny // f, f, nx // f, f).mean(axis=(1, 3))


class _DiscSums:
    """Sums of a padded image and its square over centred discs of any radius [mm], by FFT, cached per radius."""

    def __init__(self, img: np.ndarray, spacing_yx: tuple[float, float], pad: int,
                 kernels: dict[tuple, tuple[np.ndarray, int]]) -> None:
        # Padded to a fast FFT size; the padding (zeros) keeps discs from wrapping round to the far edge.
        self.shape = (sfft.next_fast_len(img.shape[0] + 2 * pad, real=True),
                      sfft.next_fast_len(img.shape[1] + 2 * pad, real=True))
        padded = np.zeros(self.shape)
        padded[pad : pad + img.shape[0], pad : pad + img.shape[1]] = img
        self.pad, self.spacing, self.size = pad, spacing_yx, img.shape
        self.f1 = sfft.rfft2(padded)
        self.f2 = sfft.rfft2(padded * padded)
        self.kernels = kernels
        self._cache: dict[float, tuple[np.ndarray, np.ndarray, int]] = {}

    def _kernel(self, radius_mm: float) -> tuple[np.ndarray, int]:
        """Fourier transform and size of a centred disc; shared by every slice of a scan (same grid)."""
        key = (self.shape, self.spacing, round(radius_mm, 3))
        if key not in self.kernels:
            ny, nx = self.shape
            yy = np.minimum(np.arange(ny), ny - np.arange(ny))[:, None] * self.spacing[0]
            xx = np.minimum(np.arange(nx), nx - np.arange(nx))[None, :] * self.spacing[1]
            kernel = (yy * yy + xx * xx <= radius_mm * radius_mm).astype(np.float64)
            self.kernels[key] = (sfft.rfft2(kernel), int(kernel.sum()))
        return self.kernels[key]

    def disc(self, radius_mm: float) -> tuple[np.ndarray, np.ndarray, int]:
        """(sum, sum of squares, voxel count) over the disc centred on each pixel of the unpadded image."""
        key = round(radius_mm, 3)
        if key not in self._cache:
            kf, n = self._kernel(radius_mm)
            crop = (slice(self.pad, self.pad + self.size[0]), slice(self.pad, self.pad + self.size[1]))
            s1 = sfft.irfft2(self.f1 * kf, s=self.shape)[crop]
            s2 = sfft.irfft2(self.f2 * kf, s=self.shape)[crop]
            self._cache[key] = (s1, s2, n)
        return self._cache[key]

    def ring(self, r0: float, r1: float) -> tuple[np.ndarray, np.ndarray]:
        """Mean and standard deviation over the ring r0 < d ≤ r1 [mm] around each pixel."""
        a1, a2, na = self.disc(r0)
        b1, b2, nb = self.disc(r1)
        n = max(nb - na, 1)
        mean = (b1 - a1) / n
        return mean, np.sqrt(np.maximum((b2 - a2) / n - mean * mean, 0.0))


def _radius_scores(sums: _DiscSums, r: float, edge: float, ring_w: float, min_contrast: float,
                   max_sd: float, hu_range: tuple[float, float]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """|contrast| where a disc of radius r [mm] qualifies (else 0), with its inside mean, contrast and SD."""
    s1, s2, n = sums.disc(max(r - edge, 0.5 * r))
    inside = s1 / max(n, 1)
    sd = np.sqrt(np.maximum(s2 / max(n, 1) - inside * inside, 0.0))
    ring, ring_sd = sums.ring(r + edge, r + edge + ring_w)
    contrast = inside - ring
    # A rod's ring is as homogeneous as its inside (both noise); an edge between tissues is not.
    ok = (np.abs(contrast) >= min_contrast) & (sd <= max_sd) & (ring_sd <= 1.5 * sd + 10.0)
    ok &= (inside >= hu_range[0]) & (inside <= hu_range[1]) & (np.abs(contrast) >= 3.0 * sd)
    return np.where(ok, np.abs(contrast), 0.0), inside, contrast, sd


def slice_discs(slice_yx: np.ndarray, spacing_yx: tuple[float, float], *, slice_index: int,
                radius_mm: tuple[float, float], min_contrast_hu: float = 30.0, max_sd_hu: float = 60.0,
                hu_range: tuple[float, float] = (-400.0, 2500.0), max_count: int = 40,
                kernels: dict | None = None) -> list[Disc]:
    """Homogeneous discs of a radius in ``radius_mm`` that differ from a ring around them, in one slice.

    Parameters
    ----------
    slice_yx : (Y, X) ndarray
        One slice [HU].
    spacing_yx : (2,) tuple of float
        Pixel spacing [mm], (y, x).
    slice_index : int
        The slice's z index (recorded in each disc).
    radius_mm : (2,) tuple of float
        Range of radii searched [mm].
    min_contrast_hu : float
        Least difference between the disc's inside and the ring around it [HU].
    max_sd_hu : float
        Largest standard deviation inside the disc [HU] (its ring may have 1.5 × the inside's + 10), at the search resolution
        (slices are averaged to about 1.2–2 mm pixels first).
    hu_range : (2,) tuple of float
        Range of the disc's inside mean [HU].
    max_count : int
        Most discs returned (the strongest contrasts).
    kernels : dict, optional
        A cache of disc kernels to share between the slices of one scan (pass the same empty dict to each call).

    Returns
    -------
    list of Disc
        Positions in array millimetres of the full-resolution slice.
    """
    f = max(1, int(round(1.6 / min(spacing_yx))))
    img = _block_mean(np.asarray(slice_yx), f)
    sp = (spacing_yx[0] * f, spacing_yx[1] * f)
    edge = max(1.5, 0.75 * max(sp))
    ring_w = max(3.0, 1.5 * max(sp))
    reach = radius_mm[1] + edge + ring_w
    pad = int(math.ceil(reach / min(sp))) + 1
    sums = _DiscSums(img, sp, pad, {} if kernels is None else kernels)
    step = max(0.5 * min(sp), 0.5)
    radii = np.arange(radius_mm[0], radius_mm[1] + 1e-6, step)
    best = np.zeros(img.shape)
    best_r = np.zeros(img.shape)
    stats = [np.zeros(img.shape) for _ in range(3)]
    for r in radii:
        score, inside, contrast, sd = _radius_scores(sums, float(r), edge, ring_w, min_contrast_hu, max_sd_hu,
                                                     hu_range)
        # Only centres whose disc and ring lie wholly inside the slice.
        my, mx = (int(math.ceil((r + edge + ring_w) / s)) for s in sp)
        score[:my], score[-my:], score[:, :mx], score[:, -mx:] = 0.0, 0.0, 0.0, 0.0
        better = score > best
        best[better], best_r[better] = score[better], r
        for acc, v in zip(stats, (inside, contrast, sd)):
            acc[better] = v[better]
    return _peaks(best, [best_r, *stats], slice_index=slice_index, factor=f, spacing_yx=spacing_yx,
                  min_distance_mm=radius_mm[0], max_count=max_count)


def _peaks(score: np.ndarray, maps: list[np.ndarray], *, slice_index: int, factor: int,
           spacing_yx: tuple[float, float], min_distance_mm: float, max_count: int) -> list[Disc]:
    """The strongest local maxima of ``score`` at least ``min_distance_mm`` apart, as discs (radius, inside,
    contrast and SD read from ``maps`` there); positions in full-resolution array millimetres."""
    f = factor
    size = max(3, int(2 * min_distance_mm / (f * max(spacing_yx))) | 1)
    iy, ix = np.nonzero((score > 0) & (score == ndimage.maximum_filter(score, size=size, mode="constant")))
    found: list[Disc] = []
    for k in np.argsort(-score[iy, ix], kind="stable"):
        y, x = iy[k], ix[k]
        d = Disc(slice_index, float((y * f + (f - 1) / 2) * spacing_yx[0]), float((x * f + (f - 1) / 2) * spacing_yx[1]),
                 *(float(m[y, x]) for m in maps))
        # A flat-topped response gives several maxima in one disc: keep the strongest.
        if all(math.hypot(d.y_mm - e.y_mm, d.x_mm - e.x_mm) > min_distance_mm for e in found):
            found.append(d)
        if len(found) == max_count:
            break
    return found


def _summary(discs: list[Disc]) -> DiscTrack:
    a = np.array([(d.y_mm, d.x_mm, d.radius_mm, d.inside_hu, d.contrast_hu) for d in discs])
    med = np.median(a, axis=0)
    return DiscTrack(*(float(v) for v in med), slices=tuple(sorted({d.slice_index for d in discs})))


def track_discs(discs: list[Disc], *, tolerance_mm: float, min_slices: int) -> list[DiscTrack]:
    """Group discs found at the same place (within ``tolerance_mm``) with the same contrast sign across slices.

    Parameters
    ----------
    discs : list of Disc
        Discs of all slices searched.
    tolerance_mm : float
        Largest distance between a disc and its group's median position [mm].
    min_slices : int
        Least number of slices a group must span to be kept.

    Returns
    -------
    list of DiscTrack
        Most-supported first.
    """
    groups: list[list[Disc]] = []
    centres: list[np.ndarray] = []
    for d in sorted(discs, key=lambda d: -abs(d.contrast_hu)):
        p = np.array([d.y_mm, d.x_mm])
        best, best_dist = -1, tolerance_mm
        for g, (members, c) in enumerate(zip(groups, centres)):
            if np.sign(members[0].contrast_hu) != np.sign(d.contrast_hu):
                continue
            dist = float(np.hypot(*(p - c)))
            if dist <= best_dist and all(m.slice_index != d.slice_index for m in members):
                best, best_dist = g, dist
        if best < 0:
            groups.append([d])
            centres.append(p)
        else:
            groups[best].append(d)
            centres[best] = np.median([[m.y_mm, m.x_mm] for m in groups[best]], axis=0)
    tracks = [_summary(g) for g in groups if len({m.slice_index for m in g}) >= min_slices]
    return sorted(tracks, key=lambda t: (-len(t.slices), -abs(t.contrast_hu)))
