"""Finding a calibration phantom's rods in a CT, identifying them and measuring their CT values.

The search, step by step:

1. **Discs per slice** (:func:`femurseg.qct._discs.slice_discs`) on up to ``max_slices`` evenly spaced slices:
   homogeneous discs of a plausible radius that differ from a ring around them.
2. **Tracks**: discs at the same place in at least ``min_slice_fraction`` of those slices (rods run along z).
3. **Rows**: tracks of similar radius lying on a line at integer multiples of one pitch (any in-plane direction
   and position), at most as many slots as the phantom has rods.  A rod whose HU equals the phantom body's has no
   contrast and no track; the row's pitch tells where it is.
4. **Identification**: each way of laying the certificate's rods on the row's slots (either direction; with
   rods missing at an end when the row is cut by the field of view) is measured and fitted; the one with the
   fewest non-rod slots whose fit is plausible (:class:`femurseg.qct.fit.Plausible`) wins.  When two ways fit
   equally well the search says so instead of choosing.
5. **Measurement**: per slice, the mean inside the rod eroded by ``erosion_mm`` (clear of partial volume and
   blur); slices far from the median of those means (past the phantom's end, artefacts) are dropped, and the
   rod's value is the mean over the remaining slices.

Rods must run along the image's slice axis (array z) within about a millimetre over the scan.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Iterator

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from femurseg.qct._discs import DiscTrack, slice_discs, track_discs
from femurseg.qct.fit import LineFit, Plausible, rods_fit
from femurseg.qct.phantoms import PhantomSpec
from femurseg.qct.results import PhantomSearch, RodMeasurement

__all__ = ["SearchOptions", "find_phantom"]


@dataclass(frozen=True)
class SearchOptions:
    """How :func:`find_phantom` searches.

    Attributes
    ----------
    max_slices : int
        Slices searched for discs (evenly spaced over the scan).
    min_slice_fraction : float
        Least fraction of those slices a rod must show in.
    min_contrast_hu : float
        Least difference between a rod and its surroundings for it to be seen [HU] (rods with less are placed by
        the row's pitch).
    max_sd_hu : float
        Largest standard deviation inside a rod in one slice, at the search's 1.2–2 mm pixels [HU].
    erosion_mm : float
        How far inside the rod's edge the measurement stays [mm] (partial volume, point-spread function).
    min_rods : int
        Least number of rods measured for a calibration.
    tolerance_mm : float
        Largest distance of a rod from its place in the row [mm].
    plausible : Plausible
        Ranges a fit must fall in (identification and the final check).
    max_mean_slices : int
        Slices averaged for the image that places and checks the rods.
    """

    max_slices: int = 24
    min_slice_fraction: float = 0.3
    min_contrast_hu: float = 30.0
    max_sd_hu: float = 60.0
    erosion_mm: float = 2.0
    min_rods: int = 3
    tolerance_mm: float = 3.0
    plausible: Plausible = field(default_factory=Plausible)
    max_mean_slices: int = 64


@dataclass
class _Row:
    """Tracks on a line: slot k lies at ``origin + k·step`` [array mm, (y, x)]."""

    origin: np.ndarray
    step: np.ndarray
    members: dict[int, DiscTrack]

    @property
    def radius(self) -> float:
        return float(np.median([t.radius_mm for t in self.members.values()]))


@dataclass
class _Scene:
    """The scan as the search sees it: values, geometry, the averaged image and the padding outside the view."""

    volume: np.ndarray  # (Z, Y, X), a view of the image's buffer
    spacing_zyx: tuple[float, float, float]
    sampled: list[int]
    z_range: tuple[int, int] = (0, 0)
    mean: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))
    padding: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), bool))


# ---------------------------------------------------------------------------------------------------------------
# Rows of tracks


def _row_through(tracks: list[DiscTrack], i: int, j: int, m: int, n_rods: int, tol: float) -> _Row | None:
    """The row in which tracks i and j are m slots apart, with every track that fits it."""
    pi = tracks[i].yx
    step = (tracks[j].yx - pi) / m
    hits: dict[int, tuple[float, DiscTrack]] = {}
    for t in tracks:
        if abs(t.radius_mm - tracks[i].radius_mm) > 2.5:
            continue
        rel = t.yx - pi
        s = int(round(float(rel @ step) / float(step @ step)))
        dist = float(np.hypot(*(rel - s * step)))
        if dist <= tol and (s not in hits or dist < hits[s][0]):
            hits[s] = (dist, t)
    slots = sorted(hits)
    # At most n_rods consecutive slots: the window holding most tracks.
    best = max(range(len(slots)), key=lambda a: sum(1 for s in slots if slots[a] <= s < slots[a] + n_rods))
    members = {s - slots[best]: hits[s][1] for s in slots if slots[best] <= s < slots[best] + n_rods}
    if len(members) < 2:
        return None
    return _fit_row(members)


def _fit_row(members: dict[int, DiscTrack]) -> _Row:
    """Least-squares origin and step of the row through its members' positions."""
    k = np.array(sorted(members), dtype=float)
    p = np.array([members[int(s)].yx for s in k])
    a = np.stack([np.ones_like(k), k], axis=1)
    (origin, step), *_ = np.linalg.lstsq(a, p, rcond=None)
    return _Row(origin=origin, step=step, members=members)


def _candidate_rows(tracks: list[DiscTrack], spec: PhantomSpec, tol: float, keep: int = 5) -> list[_Row]:
    """Distinct rows of at least two tracks at a pitch in the phantom's range, most rods first."""
    n = len(spec.rods)
    rows: dict[frozenset[int], tuple[tuple[float, ...], _Row]] = {}
    for i in range(len(tracks)):
        for j in range(i + 1, len(tracks)):
            d = float(np.hypot(*(tracks[j].yx - tracks[i].yx)))
            for m in range(1, n):
                if not spec.pitch_mm[0] <= d / m <= spec.pitch_mm[1]:
                    continue
                row = _row_through(tracks, i, j, m, n, tol)
                if row is None:
                    continue
                key = frozenset(id(t) for t in row.members.values())
                span = max(row.members) - min(row.members) + 1
                score = (len(row.members), -span, sum(len(t.slices) for t in row.members.values()))
                if key not in rows or score > rows[key][0]:
                    rows[key] = (score, row)
    ranked = sorted(rows.values(), key=lambda sr: sr[0], reverse=True)
    return [r for _, r in ranked[:keep]]


# ---------------------------------------------------------------------------------------------------------------
# The averaged image, rods' centres and their measurement


def _prepare(scene: _Scene, rows: list[_Row], max_mean: int) -> None:
    """Fix the rows' slice range and average the image over it (reduces noise; rods are constant along z)."""
    slices = sorted({s for r in rows for t in r.members.values() for s in t.slices})
    sampled = scene.sampled
    a, b = sampled.index(slices[0]), sampled.index(slices[-1])
    z0 = sampled[a - 1] + 1 if a > 0 else 0
    z1 = sampled[b + 1] - 1 if b + 1 < len(sampled) else scene.volume.shape[0] - 1
    scene.z_range = (z0, z1)
    ks = np.unique(np.linspace(z0, z1, min(max_mean, z1 - z0 + 1)).round().astype(int))
    acc = np.zeros(scene.volume.shape[1:])
    for k in ks:
        acc += scene.volume[k]
    scene.mean = acc / len(ks)
    lowest = min(float(scene.volume[k].min()) for k in sampled)
    scene.padding = np.zeros(scene.volume.shape[1:], bool)
    if lowest <= -1024:  # reconstruction circle or other padding: the same lowest value in every slice
        scene.padding = np.logical_and.reduce([scene.volume[k] == lowest for k in sampled])


def _disc_mask(shape: tuple[int, int], spacing_yx: tuple[float, float], centre: np.ndarray, radius: float
               ) -> tuple[tuple[slice, slice], np.ndarray] | None:
    """The box and mask of a disc [array mm]; None if the disc leaves the array."""
    lo = np.floor((centre - radius) / spacing_yx).astype(int)
    hi = np.ceil((centre + radius) / spacing_yx).astype(int) + 1
    if (lo < 0).any() or hi[0] > shape[0] or hi[1] > shape[1]:
        return None
    yy = np.arange(lo[0], hi[0])[:, None] * spacing_yx[0] - centre[0]
    xx = np.arange(lo[1], hi[1])[None, :] * spacing_yx[1] - centre[1]
    return (slice(lo[0], hi[0]), slice(lo[1], hi[1])), (yy * yy + xx * xx) <= radius * radius


def _refine(scene: _Scene, track: DiscTrack) -> tuple[np.ndarray, float]:
    """Centre and radius of a track's rod from the averaged image: centroid and area at the half-contrast level."""
    sp = scene.spacing_zyx[1:]
    r = track.radius_mm
    outer = _disc_mask(scene.mean.shape, sp, track.yx, r + 4.0)
    if outer is None:
        return track.yx, r
    box, disc = outer
    img = scene.mean[box]
    yy, xx = np.meshgrid(*(np.arange(s.start, s.stop) * d for s, d in zip(box, sp)), indexing="ij")
    dist = np.hypot(yy - track.y_mm, xx - track.x_mm)
    inside = float(np.median(img[dist <= 0.5 * r]))
    ring = float(np.median(img[(dist > r + 2.0) & disc]))
    sel = np.sign(inside - ring) * (img - 0.5 * (inside + ring)) > 0
    labels, _ = ndimage.label(sel & (dist <= r + 2.0))
    core = labels[dist <= 0.5 * r]
    if core.size == 0 or not core.any():
        return track.yx, r
    lab = np.bincount(core[core > 0]).argmax()
    comp = labels == lab
    if (comp & (dist > r + 1.0)).any():  # leaks to the window's edge: not a clean disc, keep the track's values
        return track.yx, r
    centre = np.array([yy[comp].mean(), xx[comp].mean()])
    return centre, float(math.sqrt(comp.sum() * sp[0] * sp[1] / math.pi))


def _slot_state(scene: _Scene, centre: np.ndarray, radius: float, erosion: float) -> str:
    """``"out"`` (beyond the field of view), ``"rod"`` (homogeneous, rod-like values) or ``"no"``."""
    sp = scene.spacing_zyx[1:]
    whole = _disc_mask(scene.mean.shape, sp, centre, radius + 1.0)
    if whole is None or scene.padding[whole[0]][whole[1]].any():
        return "out"
    box, mask = _disc_mask(scene.mean.shape, sp, centre, max(radius - erosion, 1.5))  # type: ignore[misc]
    vals = scene.mean[box][mask]
    per_slice = float(np.std(scene.volume[scene.z_range[0]][box][mask]))
    n = min(scene.z_range[1] - scene.z_range[0] + 1, 64)
    if vals.mean() < -500.0 or vals.std() > 10.0 + 2.0 * per_slice / math.sqrt(n):
        return "no"
    return "rod"


def _measure(scene: _Scene, centre: np.ndarray, radius: float, erosion: float) -> tuple[float, float, int, int]:
    """(HU, pooled SD [HU], slices, voxels) inside the eroded rod over the slice range.

    Slices whose mean lies far from the median of all slices' means (past the phantom's end, an artefact) are
    dropped; the rod's value is the mean of the remaining slices' means (as robust as their median once outliers
    are gone, and less noisy on scans of few slices).
    """
    box, mask = _disc_mask(scene.mean.shape, scene.spacing_zyx[1:], centre, max(radius - erosion, 1.5))  # type: ignore[misc]
    z0, z1 = scene.z_range
    vals = scene.volume[z0 : z1 + 1, box[0], box[1]][:, mask].astype(np.float64)
    means, var = vals.mean(axis=1), vals.var(axis=1)
    med = float(np.median(means))
    mad = 1.4826 * float(np.median(np.abs(means - med)))
    se = math.sqrt(float(np.median(var)) / mask.sum())  # a slice mean's noise
    keep = np.abs(means - med) <= 4.0 * max(mad, se) + 2.0
    return float(means[keep].mean()), float(np.sqrt(var[keep].mean())), int(keep.sum()), int(keep.sum() * mask.sum())


# ---------------------------------------------------------------------------------------------------------------
# Identification: which certificate rod sits in which slot


@dataclass
class _Slot:
    """What one slot of the row holds: ``state`` out / rod / no, its centre [array mm], radius and values."""

    state: str
    centre: np.ndarray
    radius: float
    contrast: bool
    values: tuple[float, float, int, int] = (math.nan, math.nan, 0, 0)


@dataclass
class _Layout:
    """One way of laying the certificate on the row, measured and fitted."""

    direction: int
    rods: list[RodMeasurement]
    centres: dict[str, np.ndarray]
    missing: list[str]
    not_rod: list[str]
    fit: LineFit | None
    why: str

    @property
    def key(self) -> tuple[bool, int, int, float]:
        """Sort key: plausible first, then fewest non-rod slots, most rods, smallest residual."""
        return (bool(self.why), len(self.not_rod), -len(self.rods), self.fit.rms if self.fit else math.inf)


class _RowSlots:
    """The slots of one row, refined on the averaged image and measured on demand (cached)."""

    def __init__(self, scene: _Scene, row: _Row, erosion: float) -> None:
        refined = {s: _refine(scene, t) for s, t in row.members.items()}
        fitted = _fit_row({s: _Point(c) for s, (c, _) in refined.items()}) if len(refined) >= 2 else row
        self.scene, self.erosion, self.refined = scene, erosion, refined
        self.origin, self.step = fitted.origin, fitted.step
        self.radius = float(np.median([r for _, r in refined.values()]))
        self.shift = min(row.members)
        self.length = max(row.members) - self.shift + 1
        self._cache: dict[int, _Slot] = {}

    def __getitem__(self, s: int) -> _Slot:
        if s not in self._cache:
            k = s + self.shift
            if k in self.refined:
                centre, radius = self.refined[k]
                slot = _Slot("rod", centre, radius, True)
            else:
                centre = self.origin + k * self.step
                slot = _Slot(_slot_state(self.scene, centre, self.radius, self.erosion), centre, self.radius, False)
            if slot.state == "rod":
                slot.values = _measure(self.scene, slot.centre, slot.radius, self.erosion)
            self._cache[s] = slot
        return self._cache[s]


@dataclass(frozen=True)
class _Point:
    """A bare position, for refitting a row through refined centres."""

    position: np.ndarray

    @property
    def yx(self) -> np.ndarray:
        return self.position


def _layouts(n_rods: int, length: int) -> Iterator[tuple[int, int]]:
    """(direction, offset): rod i sits in slot ``direction · (i − offset)``; every visible slot gets a rod."""
    for a in range(0, n_rods - length + 1):
        yield 1, a
    for a in range(length - 1, n_rods):
        yield -1, a


def _evaluate(slots: _RowSlots, spec: PhantomSpec, direction: int, offset: int, scan: sitk.Image,
              options: SearchOptions) -> _Layout:
    rods: list[RodMeasurement] = []
    centres: dict[str, np.ndarray] = {}
    missing: list[str] = []
    not_rod: list[str] = []
    dz, dy, dx = slots.scene.spacing_zyx
    zmid = 0.5 * sum(slots.scene.z_range)
    for i, rod in enumerate(spec.rods):
        slot = slots[direction * (i - offset)]
        if slot.state != "rod":
            (missing if slot.state == "out" else not_rod).append(rod.name)
            continue
        hu, sd, n_sl, n_vox = slot.values
        world = scan.TransformContinuousIndexToPhysicalPoint((slot.centre[1] / dx, slot.centre[0] / dy, zmid))
        rods.append(RodMeasurement(rod.name, rod.density, rod.water_density, spec.material, hu, sd, n_sl, n_vox,
                                   tuple(float(v) for v in world), slot.radius, slot.contrast))  # type: ignore[arg-type]
        centres[rod.name] = slot.centre
    fit, why = None, "fewer than 2 rods"
    if len({r.density for r in rods}) >= 2:
        fit = rods_fit(rods, spec)
        why = options.plausible.check(fit, spec.model)
    if not_rod:  # a slot in view without a rod contradicts the phantom's layout
        why = f"no rod where rod(s) {', '.join(not_rod)} should be" + (f"; {why}" if why else "")
    return _Layout(direction, rods, centres, missing, not_rod, fit, why)


def _same_assignment(a: _Layout, b: _Layout, tol: float) -> bool:
    common = set(a.centres) & set(b.centres)
    return bool(common) and all(float(np.hypot(*(a.centres[n] - b.centres[n]))) <= tol for n in common)


def _identify(scene: _Scene, rows: list[_Row], spec: PhantomSpec, scan: sitk.Image, options: SearchOptions
              ) -> tuple[_Layout, _RowSlots, _Layout | None]:
    """The best layout over all candidate rows, its row, and a rival that explains the scan as well (or None)."""
    found: list[tuple[_Layout, _RowSlots]] = []
    for row in rows:
        slots = _RowSlots(scene, row, options.erosion_mm)
        for direction, offset in _layouts(len(spec.rods), slots.length):
            found.append((_evaluate(slots, spec, direction, offset, scan, options), slots))
    found.sort(key=lambda ls: ls[0].key)
    best, best_slots = found[0]
    rival = None
    for lay, _ in found[1:]:
        if lay.why or best.why or lay.key[:3] != best.key[:3] or _same_assignment(lay, best, options.tolerance_mm):
            continue
        if lay.fit is not None and best.fit is not None and lay.fit.rms <= 2.0 * best.fit.rms + 3.0:
            rival = lay
            break
    return best, best_slots, rival


# ---------------------------------------------------------------------------------------------------------------
# The search


def _tracks(volume: np.ndarray, spacing_zyx: tuple[float, float, float], sampled: list[int], spec: PhantomSpec,
            options: SearchOptions) -> list[DiscTrack]:
    discs = []
    kernels: dict = {}
    for k in sampled:
        discs += slice_discs(volume[k], spacing_zyx[1:], slice_index=k, radius_mm=spec.rod_radius_mm,
                             min_contrast_hu=options.min_contrast_hu, max_sd_hu=options.max_sd_hu, kernels=kernels)
    need = max(1, math.ceil(options.min_slice_fraction * len(sampled)))
    return track_discs(discs, tolerance_mm=options.tolerance_mm, min_slices=need)


def _not_found(spec: PhantomSpec, reason: str, **kw: object) -> PhantomSearch:
    kw.setdefault("phantom", spec.name)
    return PhantomSearch(found=False, reason=reason, **kw)  # type: ignore[arg-type]


def _outcome(best: _Layout, slots: _RowSlots, rival: _Layout | None, spec: PhantomSpec, scan: sitk.Image,
             options: SearchOptions) -> PhantomSearch:
    """The search's result from the chosen layout: found or not, and why."""
    step = best.direction * slots.step  # from the certificate's first rod to its last
    dy, dx = slots.scene.spacing_zyx[1:]
    world = np.asarray(scan.GetDirection(), float).reshape(3, 3) @ np.array([step[1], step[0], 0.0])
    warnings = []
    if best.missing:
        warnings.append(f"rod(s) {', '.join(best.missing)} outside the field of view: {len(best.rods)} of "
                        f"{len(spec.rods)} rods found")
    common = dict(phantom=spec.name, rods=tuple(best.rods), missing=tuple(best.missing),
                  pitch_mm=float(np.hypot(*slots.step)), slices=slots.scene.z_range,
                  row_direction_xyz=tuple(float(v) for v in world / np.linalg.norm(world)), warnings=tuple(warnings))
    if best.why:  # the discs are not this phantom's rods: report none of them as rods
        return _not_found(spec, f"no {spec.name} phantom: rod-like discs in a row were found, but no assignment of "
                          f"its rods to them fits ({best.why})")
    if rival is not None:
        names = ", ".join(r.name for r in rival.rods)
        return _not_found(spec, f"the rods' identity is ambiguous: rods {names} in another order fit as well; "
                          "calibrate with rods measured by hand (fit_calibration)", **common)
    if len(best.rods) < options.min_rods:
        return _not_found(spec, f"only {len(best.rods)} rod(s) of {spec.name} in view; a calibration needs "
                          f"{options.min_rods}", **common)
    return PhantomSearch(found=True, reason="", **common)  # type: ignore[arg-type]


def find_phantom(scan: sitk.Image, *, phantom: PhantomSpec, options: SearchOptions | None = None) -> PhantomSearch:
    """Find, identify and measure a calibration phantom's rods in a CT.

    Parameters
    ----------
    scan : SimpleITK.Image
        3D CT [HU]; the rods run along its slice axis (array z).
    phantom : PhantomSpec
        The phantom looked for (certificate, model, layout).
    options : SearchOptions, optional
        Search settings.

    Returns
    -------
    PhantomSearch
        ``found=False`` with a reason when there is no phantom, too few rods in view or rods that cannot be
        identified: the search never guesses.
    """
    options = options or SearchOptions()
    if not phantom.detectable:
        return _not_found(phantom, f"{phantom.name} cannot be found automatically (its inserts are not rods "
                          "along z); measure the inserts and use fit_calibration")
    volume = sitk.GetArrayViewFromImage(scan)
    spacing = tuple(float(s) for s in scan.GetSpacing()[::-1])
    sampled = sorted({int(round(v)) for v in np.linspace(0, volume.shape[0] - 1, min(options.max_slices,
                                                                                   volume.shape[0]))})
    tracks = _tracks(volume, spacing, sampled, phantom, options)  # type: ignore[arg-type]
    if not tracks:
        return _not_found(phantom, "no calibration phantom: no homogeneous rod-like discs along z in the scan")
    rows = _candidate_rows(tracks, phantom, options.tolerance_mm)
    if not rows:
        return _not_found(phantom, f"no calibration phantom: {len(tracks)} rod-like disc(s) along z, but no two in "
                          f"a row at a pitch of {phantom.pitch_mm[0]:g}–{phantom.pitch_mm[1]:g} mm")
    scene = _Scene(volume=volume, spacing_zyx=spacing, sampled=sampled)  # type: ignore[arg-type]
    _prepare(scene, rows[:1], options.max_mean_slices)
    best, slots, rival = _identify(scene, rows, phantom, scan, options)
    return _outcome(best, slots, rival, phantom, scan, options)
