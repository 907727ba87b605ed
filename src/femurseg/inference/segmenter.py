"""The Segmenter: any hip CT in, both femur masks out, on the scan's own grid.

For each scan: the coarse locator finds each femur (:mod:`femurseg.inference.locate`); for each side found, the
region of interest (the femur's box plus the fine model's margin plus two locator voxels) is resampled ONCE, directly from the scan, onto
an LPS grid at the fine model's spacing (so any direction cosines work and the whole scan is never resampled at
fine resolution); a left ROI is mirrored so it looks like a right one, as in training; the fine model's foreground
probability is computed with Gaussian-blended sliding windows, un-mirrored, and resampled back (linear) onto the
scan's grid over the ROI's footprint only; it is thresholded at 0.5, cleaned (largest component, holes filled)
and labelled 1 (right) or 2 (left).  The mask has exactly the scan's size, spacing, origin and direction.

The proximal femur, defined: the femoral head, neck, trochanters and shaft from the top of the head down to
``extent_mm`` below it (:data:`DEFAULT_EXTENT_MM`; ``None`` keeps the whole femur in view).  The region of interest
stops 20 mm under that limit, so a long scan costs what a hip scan costs; the mask is cut at the limit (a plane
perpendicular to the world z axis, LPS).  Each side then passes quality control (:mod:`femurseg.inference.qc`): a
rejected side is not written, and a scan without an accepted side raises :class:`NoFemurFound`.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk
import torch

from femurseg.conventions import FEMUR_LABELS
from femurseg.errors import InputError, ModelError, NoFemurFound
from femurseg.geometry import Grid
from femurseg.inference.locate import FemurBox, locate_femurs
from femurseg.inference.postprocess import clean_femur, include_enclosed_metal, largest_component
from femurseg.inference.qc import QCLimits, SideQC, assess_side, body_midline_x, neck_reason, pair_heads, verdict
from femurseg.models.window import (
    WindowOptions, prepare_model, resolve_device, sliding_window_probabilities, window_starts,
)
from femurseg.models.preprocessing import mirror_x, normalize_hu, resample_image, roi_grid

log = logging.getLogger(__name__)

#: Window overlap of the normal mode (fraction of the patch), as nnU-Net.
OVERLAP: float = 0.5
#: ``fast`` mode: the fine model sees the whole ROI in as few windows as possible (no overlap), each window at most
#: this many voxels per axis (a 160³ window of the base-width-8 V-Net needs ~1.5 GB).  Every voxel is computed once
#: instead of ~3 times with the trained patch at 0.5 overlap; a fully convolutional net takes a larger window.
FAST_MAX_WINDOW: int = 160
#: Mirror-flip test-time augmentation: the extra passes are the model's trained mirror axes (array axes, 0 = z,
#: 1 = y, 2 = x) and their combinations, read from ``model.json`` ``training.augmentation.mirror_axes``.  A model
#: trained without mirroring is refused: on phantom cases, mirrored passes of such a model LOWERED Dice by 0.6 (y)
#: to 1.9 (y, x, xy) points (docs/segment.md).


def tta_flips(bundle) -> tuple[tuple[int, ...], ...]:
    """The flips of ``--tta`` for a bundle: every non-empty combination of its trained mirror axes.

    Raises
    ------
    InputError
        When the bundle's training used no mirror augmentation.
    """
    from itertools import combinations

    aug = (bundle.meta.get("training") or {}).get("augmentation") or {}
    axes = sorted({int(a) for a in aug.get("mirror_axes") or () if int(a) in (0, 1, 2)})
    if not axes:
        raise InputError(
            f"--tta: the model {bundle.meta.get('name')!r} was trained without mirror augmentation, so mirrored "
            "passes would lower its accuracy; run without --tta (or use a model trained with mirror_axes)"
        )
    return tuple(c for n in range(1, len(axes) + 1) for c in combinations(axes, n))
#: Windows per forward pass.
BATCH_SIZE: int = 2
#: Default distal limit of the mask below the top of the femoral head [mm]: the head, neck, trochanters and the
#: subtrochanteric shaft (CTXA's total hip and the FE models of the proximal femur need about 100 mm).
DEFAULT_EXTENT_MM: float = 120.0
#: Values at or below this [HU] are padding (outside the reconstruction circle; air is −1000): an edge of the
#: field of view inside the array.
_PADDING_HU: float = -1500.0
#: How far the region of interest reaches under the distal limit [mm] (the locator's box top is not exact).
_EXTENT_ROI_SLACK_MM: float = 20.0
#: Smallest bone [mL] in a first, extent-limited ROI taken as the femur's top (a head alone is ~50 mL); less means
#: the located box reached far above the femur and the ROI grows to the box's bottom.
_FIRST_ROI_FEMUR_ML: float = 30.0
#: When a first, extent-limited ROI shows no femoral head (the located box reached far above the femur: ilium,
#: sacrum or spine marked by mistake), the next ROI down starts this far above its bottom [mm] (a head straddling
#: the boundary lies whole in the next one: adult heads are under 60 mm across).
_SLIDE_OVERLAP_MM: float = 60.0
#: A femur found only in an ROI further down than the locator said needs a sure network: mean probability over
#: the piece at least this (true femurs ~0.96; the acetabulum of a scan upside down, seen as a head, 0.88).
_SLID_MIN_CONFIDENCE: float = 0.92
#: Metal within this distance of a first ROI's piece [mm] makes it a femur's top without a head (an implant).
_METAL_NEAR_MM: float = 10.0
#: How far an ROI's downward extension reaches up into the part already run [mm] (context for the network).
_EXTENSION_CONTEXT_MM: float = 32.0


@dataclass
class SegmentationResult:
    """What :meth:`Segmenter.segment` returns.

    Attributes
    ----------
    mask : SimpleITK.Image
        uint8 labels (0 background, 1 right femur, 2 left femur) with exactly the scan's geometry.
    probabilities : SimpleITK.Image or None
        float32 femur probability (either side) on the scan's grid, 0 outside the regions of interest of the sides
        written (a side rejected by QC contributes nothing); only when asked for.
    summary : dict
        JSON-able: per side volume [mL], voxels, bounding boxes, confidence; models; timings [s]; input geometry.
    """

    mask: sitk.Image
    probabilities: sitk.Image | None
    summary: dict[str, Any] = field(default_factory=dict)


def _load(source: Any, kind: str, device: torch.device):
    from femurseg.models.bundle import Bundle, bundled_model_path, load_bundle

    if isinstance(source, Bundle):
        bundle = source
    else:
        path = bundled_model_path(kind) if source is None else Path(source)
        bundle = load_bundle(path, device=str(device))
    task = bundle.preprocessing.task
    if task != kind:
        which = "--model" if kind == "femur" else "--locator"
        raise ModelError(f"{bundle.path}: a '{task}' model where a '{kind}' model is needed ({which})")
    want = 2 if kind == "femur" else 3
    if bundle.config.out_channels != want:
        raise ModelError(f"{bundle.path}: a {kind} model must have {want} output classes, not {bundle.config.out_channels}")
    return bundle


def _bundle_qc_limits(bundle) -> QCLimits:  # noqa: ANN001
    from femurseg.config import from_dict

    data = bundle.meta.get("qc_limits")
    if data is None:
        return QCLimits()
    try:
        return from_dict(QCLimits, data, where=f"{bundle.path}/model.json qc_limits")
    except InputError as err:
        raise ModelError(str(err)) from None


def _model_facts(bundle) -> dict[str, Any]:
    return {
        "name": bundle.meta.get("name"),
        "weights_sha256": bundle.meta.get("weights_sha256"),
        "path": str(bundle.path),
        "spacing_zyx_mm": list(bundle.preprocessing.target_spacing_zyx),
        "patch_size_zyx": list(bundle.preprocessing.patch_size_zyx),
    }


#: Voxel spacing femurseg accepts [mm], per axis.
MIN_SPACING_MM: float = 0.05
MAX_SPACING_MM: float = 8.0
#: Largest physical extent of a scan along any index axis [mm] (a whole body is under 2 m).
MAX_EXTENT_MM: float = 2500.0
#: A CT in HU always holds air (−1000) or at least fat (about −100): a scan whose lowest value is above this is
#: not in HU (stored with an offset, or another modality).
MAX_LOWEST_HU: float = -50.0


def _check_image(image: sitk.Image) -> None:
    """Refuse what is not a CT in HU on a plausible grid (one actionable line; see the limits above)."""
    if image.GetDimension() != 3 or image.GetNumberOfComponentsPerPixel() != 1:
        raise InputError(
            f"expected a 3D scalar CT image, got a {image.GetDimension()}D image with "
            f"{image.GetNumberOfComponentsPerPixel()} component(s) per voxel"
        )
    if min(image.GetSize()) < 2:
        raise InputError(f"expected a 3D CT volume, got size {image.GetSize()} (a single slice?)")
    spacing = np.asarray(image.GetSpacing(), float)
    if not np.all((spacing >= MIN_SPACING_MM) & (spacing <= MAX_SPACING_MM)):
        raise InputError(f"voxel spacing {tuple(round(float(v), 4) for v in spacing)} mm (x, y, z) is outside "
                         f"{MIN_SPACING_MM}–{MAX_SPACING_MM} mm; is the header's spacing right (metres or "
                         "micrometres instead of mm?)")
    extent = spacing * np.asarray(image.GetSize(), float)
    if np.any(extent > MAX_EXTENT_MM):
        raise InputError(f"the scan spans {tuple(round(float(v)) for v in extent)} mm (x, y, z), more than a body "
                         f"({MAX_EXTENT_MM:.0f} mm); is the header's spacing right?")
    if "float" in image.GetPixelIDTypeAsString() and not np.isfinite(sitk.GetArrayViewFromImage(image)).all():
        raise InputError("the scan holds NaN or infinite values; it is not a CT in Hounsfield units")
    stats = sitk.MinimumMaximumImageFilter()
    stats.Execute(image)
    lo, hi = stats.GetMinimum(), stats.GetMaximum()
    if lo > MAX_LOWEST_HU:
        raise InputError(f"values run from {lo:g} to {hi:g}: no voxel below {MAX_LOWEST_HU:g} (no air, no fat), so "
                         "this is not a CT in Hounsfield units; if it was stored with an offset (e.g. HU + 1024), "
                         "apply the DICOM rescale intercept (e.g. -1024) first")


def _footprint(image: sitk.Image, grid: Grid) -> tuple[np.ndarray, np.ndarray] | None:
    """Index box (lo, hi inclusive, (x, y, z)) of the scan's voxels inside ``grid``'s world extent, or None."""
    shape = np.asarray(grid.shape_zyx)
    corners = np.array([[z, y, x] for z in (-0.5, shape[0] - 0.5) for y in (-0.5, shape[1] - 0.5)
                        for x in (-0.5, shape[2] - 0.5)])
    world = grid.index_to_world(corners)
    idx = np.array([image.TransformPhysicalPointToContinuousIndex(tuple(float(v) for v in p)) for p in world])
    size = np.asarray(image.GetSize())
    lo = np.maximum(np.ceil(idx.min(axis=0) - 1e-6), 0).astype(int)
    hi = np.minimum(np.floor(idx.max(axis=0) + 1e-6), size - 1).astype(int)
    if np.any(hi < lo):
        return None
    return lo, hi


@dataclass
class _Side:
    side: str
    lo_xyz: np.ndarray
    hi_xyz: np.ndarray
    prob: np.ndarray  # (Z, Y, X) float32 on the scan's grid over [lo, hi]
    fg: np.ndarray | None = None
    qc: SideQC | None = None

    @property
    def block(self) -> tuple[slice, slice, slice]:
        return tuple(slice(int(self.lo_xyz[a]), int(self.hi_xyz[a]) + 1) for a in (2, 1, 0))


class Segmenter:
    """Load the models once, segment many scans.

    Parameters
    ----------
    model : path or Bundle, optional
        The fine, one-sided femur model bundle (``task="femur"``); default: the bundled one.
    locator : path or Bundle, optional
        The coarse locator bundle (``task="locate"``); default: the bundled one.
    device : {"auto", "cpu", "cuda"}
        Where the networks run; ``"auto"`` takes CUDA when available.
    fast : bool
        The fine model sees each ROI whole (windows up to :data:`FAST_MAX_WINDOW` voxels per axis, no overlap)
        instead of trained-size windows at 0.5 overlap: each voxel is computed once instead of ~3 times.
    tta : bool
        Mirror-flip test-time augmentation of the fine model over the mirror axes it was trained with (e.g. 2
        passes averaged for one axis); refused (InputError) for a model trained without mirroring.
    extent_mm : float or None
        Distal limit of the mask below the top of the femoral head [mm]; None: the whole femur in view.
    qc_limits : QCLimits, optional
        Thresholds of the per-side quality control; default: the fine model bundle's ``qc_limits`` (the anatomy
        of the population it is for), or adult human hips when it has none.

    Examples
    --------
    >>> seg = Segmenter()                                  # doctest: +SKIP
    >>> result = seg.segment(read_image("hip.nii.gz"))    # doctest: +SKIP
    >>> result.summary["sides"]["right"]["volume_ml"]      # doctest: +SKIP
    """

    def __init__(self, *, model: Any = None, locator: Any = None, device: str = "auto", fast: bool = False,
                 tta: bool = False, extent_mm: float | None = DEFAULT_EXTENT_MM,
                 qc_limits: QCLimits | None = None) -> None:
        if extent_mm is not None and not 20.0 <= float(extent_mm) <= 1000.0:
            raise InputError(f"the extent must be 20–1000 mm below the head top (or 'full'), not {extent_mm}")
        self.extent_mm = None if extent_mm is None else float(extent_mm)
        self.device = resolve_device(device)
        self.fast = bool(fast)
        self.tta = bool(tta)
        self.model_bundle = _load(model, "femur", self.device)
        self.qc_limits = qc_limits or _bundle_qc_limits(self.model_bundle)
        self.locator_bundle = _load(locator, "locate", self.device)
        self._model = prepare_model(self.model_bundle.model, self.device)
        self._locator = prepare_model(self.locator_bundle.model, self.device)
        overlap = 0.0 if self.fast else OVERLAP
        # The bundle's inference window (which may exceed its training patch: the net is fully convolutional);
        # large windows go one at a time to bound memory.
        window = self.model_bundle.preprocessing.inference_window_zyx
        self.model_options = WindowOptions(
            patch_size_zyx=window, overlap=overlap,
            batch_size=BATCH_SIZE if window == tuple(self.model_bundle.preprocessing.patch_size_zyx) else 1,
            flips=tta_flips(self.model_bundle) if self.tta else (),
        )
        self.locator_options = WindowOptions(
            patch_size_zyx=self.locator_bundle.preprocessing.inference_window_zyx, overlap=overlap,
            batch_size=BATCH_SIZE,
        )

    def _roi_options(self, shape_zyx: tuple[int, ...]) -> WindowOptions:
        """The fine model's windows over an ROI: the bundle's inference window, shrunk along every axis where the ROI
        is smaller (rounded up to the network's stride, never under the training patch: padding an ROI up to the
        window would only compute padding).  ``fast`` mode takes windows at least :data:`FAST_MAX_WINDOW` wide and
        no overlap."""
        m = 2 ** self.model_bundle.config.depth
        trained = self.model_bundle.preprocessing.patch_size_zyx
        window = self.model_options.patch_size_zyx
        if self.fast:  # as large as the bundle's window allows, and at least FAST_MAX_WINDOW
            cap = max(m, FAST_MAX_WINDOW // m * m)
            window = tuple(max(cap, int(w)) for w in window)
        patch = tuple(max(int(p), min(int(w), -(-int(s) // m) * m)) for s, w, p in zip(shape_zyx, window, trained))
        if self.fast or patch != tuple(trained):
            return replace(self.model_options, patch_size_zyx=patch, batch_size=1)
        return self.model_options

    def segment(self, image: sitk.Image | str | os.PathLike[str], *, probabilities: bool = False,
                series_uid: str | None = None) -> SegmentationResult:
        """Segment both femurs of one scan.

        Parameters
        ----------
        image : SimpleITK.Image or path
            A 3D CT scan [HU] of any orientation, or a file / DICOM folder that :func:`femurseg.io.read_image`
            reads.
        probabilities : bool
            Also return the femur probability map on the scan's grid.
        series_uid : str, optional
            For a DICOM folder with several series, the one to read.

        Returns
        -------
        SegmentationResult

        Raises
        ------
        InputError
            The image is not a readable 3D scalar volume.
        NoFemurFound
            The scan holds no femur.
        """
        t_start = time.perf_counter()
        timings: dict[str, Any] = {}
        path = None
        if not isinstance(image, sitk.Image):
            from femurseg.io import read_image

            path = str(image)
            image = read_image(image, series_uid=series_uid)
            timings["read"] = time.perf_counter() - t_start
        _check_image(image)

        t0 = time.perf_counter()
        pre_loc = self.locator_bundle.preprocessing
        boxes = locate_femurs(image, self._locator, pre_loc, options=self.locator_options, device=self.device)
        timings["locate"] = time.perf_counter() - t0

        sides: list[_Side] = []
        rois: dict[str, Any] = {}
        for side, box in boxes.items():
            if box is None:
                continue
            s = self._segment_side(image, box, timings, rois)
            if s is not None:
                sides.append(s)

        t0 = time.perf_counter()
        mask_arr, prob_arr, facts = self._assemble(image, sides, probabilities)
        timings["postprocess"] = time.perf_counter() - t0
        if not any(f["present"] for f in facts.values()):
            why = "; ".join(f"{side}: {', '.join(f['qc']['reasons'])}" for side, f in facts.items() if "qc" in f)
            raise NoFemurFound("no femur found in this scan" + (f" (rejected by quality control: {why})" if why else
                               " (the femur model marked no voxel)") + "; is it a hip CT?",
                               qc={side: f["qc"] for side, f in facts.items() if "qc" in f})

        mask = sitk.GetImageFromArray(mask_arr)
        mask.CopyInformation(image)
        prob_img = None
        if prob_arr is not None:
            prob_img = sitk.GetImageFromArray(prob_arr)
            prob_img.CopyInformation(image)
        timings["total"] = time.perf_counter() - t_start
        for side, roi in rois.items():
            facts[side].update(roi)
        summary = self._summary(image, path, facts, boxes, timings)
        return SegmentationResult(mask=mask, probabilities=prob_img, summary=summary)

    @property
    def locator_uncertainty_mm(self) -> float:
        """Extra ROI margin for the locator's own error [mm]: two of its voxels.

        A located box can miss the femur's true extent by a voxel or two of the coarse grid (measured on phantom
        hold-out cases: up to ~12 mm per face at 5 mm); a tight ROI would cut the femur, a wider one only costs time
        (the fine model was trained with jittered margins and is fully convolutional).
        """
        return 2.0 * max(self.locator_bundle.preprocessing.target_spacing_zyx)

    @property
    def _roi_margin_mm(self) -> float:
        """Margin around a located box [mm]: the fine model's ROI margin plus the locator's uncertainty."""
        return self.model_bundle.preprocessing.roi_margin_mm + self.locator_uncertainty_mm

    def _roi_of_box(self, lower_xyz: np.ndarray, upper_xyz: np.ndarray) -> Grid:
        """The fine model's grid over a world box, grown by :attr:`_roi_margin_mm`."""
        pre = self.model_bundle.preprocessing
        return roi_grid(lower_xyz, upper_xyz, spacing_zyx=pre.target_spacing_zyx, margin_mm=self._roi_margin_mm,
                        min_shape_zyx=pre.patch_size_zyx)

    def _infer_grid(self, image: sitk.Image, side: str, grid: Grid,
                    t: dict[str, float]) -> tuple[np.ndarray, WindowOptions]:
        """The fine model's femur probability on a grid: ((Z, Y, X) float32, the windows used)."""
        pre = self.model_bundle.preprocessing
        t0 = time.perf_counter()
        x = normalize_hu(resample_image(image, grid, fill_hu=pre.hu_window[0]), hu_window=pre.hu_window)
        mirrored = side == "left" and pre.mirror_left
        if mirrored:
            x = mirror_x(x)
        t["resample"] = t.get("resample", 0.0) + time.perf_counter() - t0
        t0 = time.perf_counter()
        options = self._roi_options(x.shape)
        fg = sliding_window_probabilities(self._model, x, options=options, device=self.device)[1]
        del x
        if mirrored:
            fg = mirror_x(fg)
        t["infer"] = t.get("infer", 0.0) + time.perf_counter() - t0
        return fg, options

    def _extend_down(self, image: sitk.Image, side: str, grid: Grid, fg: np.ndarray, bottom_z_mm: float,
                     t: dict[str, float]) -> tuple[Grid, np.ndarray, int]:
        """Grow an ROI downwards to world z ``bottom_z_mm`` by running the fine model on the missing slab only.

        The slab reaches :data:`_EXTENSION_CONTEXT_MM` into the ROI above so the network sees the femur it
        continues; in that overlap the lower half comes from the slab and the upper half from the first run.
        Returns the grown grid, its probabilities and the number of windows the slab took.
        """
        dz = grid.spacing_zyx[0]
        n_new = int(np.ceil((grid.origin_xyz[2] - bottom_z_mm) / dz - 1e-6))
        ctx = min(int(round(_EXTENSION_CONTEXT_MM / dz)), fg.shape[0])
        origin = (grid.origin_xyz[0], grid.origin_xyz[1], grid.origin_xyz[2] - n_new * dz)
        slab = replace(grid, shape_zyx=(n_new + ctx, *grid.shape_zyx[1:]), origin_xyz=origin)
        fg_slab, options = self._infer_grid(image, side, slab, t)
        half = ctx // 2
        grown = np.concatenate([fg_slab[:n_new + half], fg[half:]], axis=0)
        return replace(grid, shape_zyx=(int(grown.shape[0]), *grid.shape_zyx[1:]), origin_xyz=origin), grown, \
            _n_windows(fg_slab.shape, options)

    def _extent_roi(self, image: sitk.Image, box: FemurBox, grid: Grid, fg: np.ndarray, options: WindowOptions,
                    n_windows: int, t: dict[str, float]) -> tuple[Grid, np.ndarray, WindowOptions, int]:
        """Fit an extent-limited first ROI (run from the LOCATED top) to the femur's top.

        - The ROI's largest piece is a femur's top (a head, or metal, or the scan's top edge): when the femur's top
          lies lower than the located one, the ROI grows down to the extent (the slab only).
        - It shows no head (the box reached far up; the network marks ilium, sacrum or spine there): ROIs further
          down the box, overlapping by :data:`_SLIDE_OVERLAP_MM`, until one shows the head; that one is kept.
        - None does (or the first ROI holds no femur-sized bone): the first ROI grows to the box's bottom.
        Returns the grid, its probabilities, the windows of the last run and the number of windows run.
        """
        voxel_ml = float(np.prod(grid.spacing_zyx)) / 1000.0
        piece = largest_component(fg >= 0.5)  # the femur, not specks above it
        found = float(piece.sum()) * voxel_ml >= _FIRST_ROI_FEMUR_ML
        if found and not self._is_femur_top(image, grid, piece):
            found, below = False, grid
            box_bottom = float(box.lower_xyz[2]) - self._roi_margin_mm
            while not found and below.origin_xyz[2] > box_bottom:
                upper = np.asarray(box.upper_xyz, float).copy()
                upper[2] = below.origin_xyz[2] + _SLIDE_OVERLAP_MM - self._roi_margin_mm
                lower = np.asarray(box.lower_xyz, float).copy()
                lower[2] = max(lower[2], upper[2] - self.extent_mm - _EXTENT_ROI_SLACK_MM)
                below = self._roi_of_box(lower, upper)
                fg_below, options_below = self._infer_grid(image, box.side, below, t)
                n_windows += _n_windows(fg_below.shape, options_below)
                piece = largest_component(fg_below >= 0.5)
                found = float(piece.sum()) * voxel_ml >= _FIRST_ROI_FEMUR_ML \
                    and float(fg_below[piece].mean()) >= _SLID_MIN_CONFIDENCE \
                    and self._is_femur_top(image, below, piece)
            if found:
                grid, fg, options = below, fg_below, options_below
        need: float | None = float(box.lower_xyz[2])
        if found:
            zs = np.flatnonzero(piece.any(axis=(1, 2)))
            top = grid.origin_xyz[2] + float(zs[-1]) * grid.spacing_zyx[0]  # identity-direction LPS grid
            ends_above_cut = grid.origin_xyz[2] > top - self.extent_mm
            need = max(need, top - self.extent_mm - _EXTENT_ROI_SLACK_MM) if ends_above_cut else None
        if need is not None and need - self._roi_margin_mm < grid.origin_xyz[2] - 1e-6:
            grid, fg, extra = self._extend_down(image, box.side, grid, fg, need - self._roi_margin_mm, t)
            n_windows += extra
        return grid, fg, options, n_windows

    def _is_femur_top(self, image: sitk.Image, grid: Grid, piece: np.ndarray) -> bool:
        """Whether ``piece`` (a bool mask on ``grid``) can be a femur's top: a femoral head fits (QC's sphere fit,
        on a 2 mm subsample: ~20 ms) with no straight bone or wide plate under it, or the piece reaches the scan's top edge (the head is out of view), or metal
        lies within :data:`_METAL_NEAR_MM` of it (an implant's head is no bone)."""
        step = max(1, int(round(2.0 / min(grid.spacing_zyx))))
        sub = piece[::step, ::step, ::step]
        spacing = np.asarray(grid.spacing_zyx, float) * step
        origin = np.asarray(grid.origin_xyz, float)

        def to_world(idx_zyx: np.ndarray) -> np.ndarray:  # identity-direction LPS grid
            return np.asarray(idx_zyx, float)[:, ::-1] * spacing[::-1] + origin

        lim = self.qc_limits
        qc = assess_side(sub, to_world, spacing_zyx=spacing, side="right", confidence=1.0, limits=lim)
        if qc.head_found:  # a head with no straight bone or wide plate under it (a vertebral body fits a sphere too)
            return neck_reason(qc, lim) is None and (
                qc.shaft_width_mm is None or qc.shaft_width_mm <= lim.max_shaft_width_mm)
        zs = np.flatnonzero(piece.any(axis=(1, 2)))
        size = image.GetSize()
        scan_top = max(image.TransformIndexToPhysicalPoint([i, j, k])[2] for i in (0, size[0] - 1)
                       for j in (0, size[1] - 1) for k in (0, size[2] - 1))
        if zs.size and grid.origin_xyz[2] + float(zs[-1]) * grid.spacing_zyx[0] >= scan_top - 2.0 * max(
                image.GetSpacing()):
            return True
        foot = _footprint(image, grid)
        if foot is None:
            return False
        lo, hi = foot
        block = sitk.GetArrayViewFromImage(image)[lo[2]:hi[2] + 1, lo[1]:hi[1] + 1, lo[0]:hi[0] + 1]
        metal = np.argwhere(block >= self.qc_limits.metal_hu)
        if len(metal) * float(np.prod(image.GetSpacing())) / 1e3 < self.qc_limits.min_metal_ml:
            return False
        # Metal at the piece (an implant's head or stem), not anywhere in the ROI (spinal hardware above a hip).
        from scipy import ndimage

        near = ndimage.binary_dilation(piece, iterations=int(np.ceil(_METAL_NEAR_MM / min(grid.spacing_zyx))))
        sample = metal[::max(1, len(metal) // 4000)]
        world = np.array([image.TransformIndexToPhysicalPoint([int(v) for v in (i[::-1] + lo)]) for i in sample])
        idx = np.round(grid.world_to_index(world)).astype(int)
        ok = np.all((idx >= 0) & (idx < np.asarray(near.shape)), axis=1)
        return bool(near[tuple(idx[ok].T)].any())

    def _segment_side(self, image: sitk.Image, box: FemurBox, timings: dict[str, Any],
                      rois: dict[str, Any]) -> _Side | None:
        t: dict[str, float] = {}
        lower = np.asarray(box.lower_xyz, float).copy()
        if self.extent_mm is not None:
            lower[2] = max(lower[2], float(box.upper_xyz[2]) - self.extent_mm - _EXTENT_ROI_SLACK_MM)
        grid = self._roi_of_box(lower, box.upper_xyz)
        fg, options = self._infer_grid(image, box.side, grid, t)
        n_windows = _n_windows(fg.shape, options)
        if self.extent_mm is not None and lower[2] > float(box.lower_xyz[2]):
            grid, fg, options, n_windows = self._extent_roi(image, box, grid, fg, options, n_windows, t)
        rois[box.side] = {"roi_shape_zyx": [int(n) for n in fg.shape], "window_zyx": list(options.patch_size_zyx),
                          "windows": n_windows}

        t0 = time.perf_counter()
        foot = _footprint(image, grid)
        if foot is None:
            timings[box.side] = t
            return None
        lo, hi = foot
        prob_roi = sitk.GetImageFromArray(fg)
        prob_roi.SetSpacing([float(s) for s in grid.spacing_zyx[::-1]])
        prob_roi.SetOrigin([float(o) for o in grid.origin_xyz])
        prob_roi.SetDirection([float(d) for d in grid.direction])
        ref = sitk.Image([int(n) for n in hi - lo + 1], sitk.sitkUInt8)
        ref.SetSpacing(image.GetSpacing())
        ref.SetDirection(image.GetDirection())
        ref.SetOrigin(image.TransformIndexToPhysicalPoint([int(v) for v in lo]))
        back = sitk.Resample(prob_roi, ref, sitk.Transform(), sitk.sitkLinear, 0.0, sitk.sitkFloat32)
        t["paste"] = time.perf_counter() - t0
        timings[box.side] = t
        return _Side(side=box.side, lo_xyz=lo, hi_xyz=hi, prob=sitk.GetArrayFromImage(back))

    def _assemble(self, image: sitk.Image, sides: list[_Side], probabilities: bool):
        """Threshold, clean, cut to the extent and QC each side on its own; then share the voxels that two accepted
        sides both claim (a rejected side takes nothing from the other); write the mask and the per-side facts."""
        size = image.GetSize()
        mask = np.zeros(size[::-1], np.uint8)
        prob = np.zeros(size[::-1], np.float32) if probabilities else None
        facts: dict[str, dict[str, Any]] = {side: {"present": False, "label": v} for side, v in FEMUR_LABELS.items()}
        accepted: list[_Side] = []
        for s in sides:
            fg = include_enclosed_metal(clean_femur(s.prob >= 0.5), sitk.GetArrayViewFromImage(image)[s.block],
                                        self.qc_limits.metal_hu)
            if self.extent_mm is not None and fg.any():
                fg = _cut_extent(fg, image, s.lo_xyz, self.extent_mm)
            s.fg, s.qc = fg, _side_qc(image, s, fg, self.qc_limits)
            if s.qc.verdict == "reject":
                facts[s.side]["qc"] = s.qc.to_dict()
            else:
                accepted.append(s)
        if len(accepted) == 2:
            by_side = {s.side: s for s in accepted}
            pair_heads(by_side["right"].qc, by_side["left"].qc, self.qc_limits)
            for twin in [s for s in accepted if s.qc.verdict == "reject"]:
                facts[twin.side]["qc"] = twin.qc.to_dict()
                accepted.remove(twin)
        if len(accepted) == 2:
            _share_overlap(*accepted)
        voxel_ml = float(np.prod(image.GetSpacing())) / 1000.0
        for s in accepted:
            label = FEMUR_LABELS[s.side]
            view = mask[s.block]
            fg = s.fg & (view == 0)
            n = int(fg.sum())
            qc = s.qc
            qc.volume_ml, qc.confidence = n * voxel_ml, float(s.prob[fg].mean()) if n else 0.0
            verdict(qc, s.side, self.qc_limits)  # the shared voxels changed the volume and confidence
            if qc.verdict == "reject" or n == 0:
                facts[s.side]["qc"] = qc.to_dict()
                continue
            view[fg] = label
            if prob is not None:  # the probability map holds the written sides only, as the mask
                np.maximum(prob[s.block], s.prob, out=prob[s.block])
            idx = [np.flatnonzero(fg.any(axis=tuple(a for a in range(3) if a != ax))) for ax in range(3)]
            start_xyz = [int(s.lo_xyz[k] + idx[2 - k][0]) for k in range(3)]
            end_xyz = [int(s.lo_xyz[k] + idx[2 - k][-1]) for k in range(3)]
            corners = [image.TransformIndexToPhysicalPoint([(start_xyz, end_xyz)[i][0], (start_xyz, end_xyz)[j][1],
                                                             (start_xyz, end_xyz)[k][2]])
                       for i in (0, 1) for j in (0, 1) for k in (0, 1)]
            c = np.array(corners)
            facts[s.side] = {
                "present": True,
                "label": label,
                "voxels": n,
                "volume_ml": n * voxel_ml,
                "confidence": float(s.prob[fg].mean()),
                "bbox_index_xyz": {"start": start_xyz, "end": end_xyz},
                "bbox_world_xyz_mm": {"lower": c.min(axis=0).tolist(), "upper": c.max(axis=0).tolist()},
                "qc": qc.to_dict(),
            }
        return mask, prob, facts

    def _summary(self, image: sitk.Image, path: str | None, facts: dict, boxes: dict, timings: dict) -> dict[str, Any]:
        from femurseg._version import __version__

        def _round(v: Any) -> Any:
            return {k: _round(x) for k, x in v.items()} if isinstance(v, dict) else round(float(v), 4)

        for side, box in boxes.items():
            if box is not None:
                facts[side]["located_box_world_xyz_mm"] = {"lower": box.lower_xyz.tolist(), "upper": box.upper_xyz.tolist()}
        return {
            "femurseg_version": __version__,
            "input": {
                "path": path,
                "size_xyz": list(image.GetSize()),
                "spacing_xyz_mm": list(image.GetSpacing()),
                "origin_xyz_mm": list(image.GetOrigin()),
                "direction": list(image.GetDirection()),
            },
            "sides": facts,
            "models": {"femur": _model_facts(self.model_bundle), "locator": _model_facts(self.locator_bundle)},
            "settings": {"device": str(self.device), "fast": self.fast, "tta": self.tta, "extent_mm": self.extent_mm,
                         "overlap": self.model_options.overlap, "threshold": 0.5},
            "timings_s": _round(timings),
        }


def _n_windows(shape_zyx: tuple[int, ...], options: WindowOptions) -> int:
    """Network passes over a volume of this shape: windows per axis multiplied, times the test-time flips."""
    n = 1
    for size, patch in zip(shape_zyx, options.patch_size_zyx):
        n *= len(window_starts(max(int(size), patch), patch, options.overlap))
    return n * (1 + len(options.flips))


def _share_overlap(a: _Side, b: _Side) -> None:
    """Where two sides' blocks overlap, a voxel stays with the side that is more sure of it; each keeps its largest
    piece."""
    lo = np.maximum(a.lo_xyz, b.lo_xyz)
    hi = np.minimum(a.hi_xyz, b.hi_xyz)
    if np.any(hi < lo):
        return
    ia = tuple(slice(int(lo[k] - a.lo_xyz[k]), int(hi[k] - a.lo_xyz[k]) + 1) for k in (2, 1, 0))
    ib = tuple(slice(int(lo[k] - b.lo_xyz[k]), int(hi[k] - b.lo_xyz[k]) + 1) for k in (2, 1, 0))
    pa, pb = a.prob[ia], b.prob[ib]
    both = a.fg[ia] & b.fg[ib]
    a.fg[ia] &= ~both | (pa >= pb)
    b.fg[ib] &= ~both | (pb > pa)
    a.fg, b.fg = largest_component(a.fg), largest_component(b.fg)


def _block_world(image: sitk.Image, lo_xyz: np.ndarray):  # noqa: ANN202
    """A function mapping (N, 3) block indices (z, y, x) of a block starting at ``lo_xyz`` to world points [mm]."""
    spacing = np.asarray(image.GetSpacing(), float)
    direction = np.asarray(image.GetDirection(), float).reshape(3, 3)
    origin = np.asarray(image.GetOrigin(), float)
    lo = np.asarray(lo_xyz, float)

    def to_world(idx_zyx: np.ndarray) -> np.ndarray:
        return ((np.asarray(idx_zyx, float)[:, ::-1] + lo) * spacing) @ direction.T + origin

    return to_world


def _cut_extent(fg: np.ndarray, image: sitk.Image, lo_xyz: np.ndarray, extent_mm: float) -> np.ndarray:
    """``fg`` without what lies more than ``extent_mm`` below its top (world z), then its largest piece."""
    spacing = np.asarray(image.GetSpacing(), float)
    d = np.asarray(image.GetDirection(), float).reshape(3, 3)[2] * spacing  # world z per index step (x, y, z)
    lo = np.asarray(lo_xyz, float)
    nz, ny, nx = fg.shape
    zw = (float(image.GetOrigin()[2]) + d[0] * (lo[0] + np.arange(nx))[None, None, :]
          + d[1] * (lo[1] + np.arange(ny))[None, :, None] + d[2] * (lo[2] + np.arange(nz))[:, None, None])
    top = float(zw[fg].max()) if fg.any() else 0.0
    cut = fg & (zw >= top - extent_mm)
    return largest_component(cut) if cut.any() else cut


def _side_qc(image: sitk.Image, s: _Side, fg: np.ndarray, limits: QCLimits) -> SideQC:
    """QC of one side's mask over its block (:func:`femurseg.inference.qc.assess_side`)."""
    size = np.asarray(image.GetSize())
    edge = np.zeros(fg.shape, bool)
    for k, axis in ((0, 2), (1, 1), (2, 0)):  # (x, y, z) index k is array axis 2 - k
        first = [slice(None)] * 3
        if s.lo_xyz[k] == 0:
            first[axis] = 0
            edge[tuple(first)] = True
        if s.hi_xyz[k] == size[k] - 1:
            first[axis] = -1
            edge[tuple(first)] = True
    hu = sitk.GetArrayViewFromImage(image)[s.block]
    padding = hu <= _PADDING_HU
    if padding.any():  # outside the reconstruction circle: the field of view's edge inside the array
        from scipy import ndimage

        edge |= ndimage.binary_dilation(padding)
    confidence = float(s.prob[fg].mean()) if fg.any() else 0.0
    spacing_zyx = tuple(float(v) for v in image.GetSpacing()[::-1])
    whole = sitk.GetArrayViewFromImage(image)
    to_world = _block_world(image, np.zeros(3, int))

    def midline_x_at(centre_xyz: np.ndarray) -> float | None:
        k = int(round(image.TransformPhysicalPointToContinuousIndex([float(v) for v in centre_xyz])[2]))
        return body_midline_x(whole, to_world, k) if 0 <= k < whole.shape[0] else None

    return assess_side(fg, _block_world(image, s.lo_xyz), spacing_zyx=spacing_zyx, side=s.side,
                       confidence=confidence, border_idx=np.argwhere(fg & edge), limits=limits, hu=hu,
                       midline_x_at=midline_x_at)


def segment(image_or_path: sitk.Image | str | os.PathLike[str], *, model: Any = None, locator: Any = None,
            device: str = "auto", fast: bool = False, tta: bool = False) -> sitk.Image:
    """Segment both proximal femurs of a hip CT scan.

    Parameters
    ----------
    image_or_path : SimpleITK.Image or path
        The scan [HU] (any orientation), or a NIfTI/NRRD/MetaImage file or DICOM series folder.
    model, locator : path or Bundle, optional
        Model bundles; default: the bundled ones.
    device : {"auto", "cpu", "cuda"}
    fast, tta : bool
        See :class:`Segmenter`.

    Returns
    -------
    SimpleITK.Image
        uint8 mask, 0 background, 1 right femur, 2 left femur (patient's sides), on exactly the scan's grid.

    Raises
    ------
    InputError, ModelError, NoFemurFound
    """
    return Segmenter(model=model, locator=locator, device=device, fast=fast, tta=tta).segment(image_or_path).mask
