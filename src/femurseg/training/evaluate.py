"""How well a model bundle segments a labelled cohort, at the model's own resolution.

Each case is prepared as training prepares it (``femurseg.models.preprocessing``: each femur's region of interest
around its TRUE bounding box + ``roi_margin_mm``, resampled to the model spacing, left sides mirrored; or the whole
scan for a locator), predicted with Gaussian-blended sliding windows of the model's inference window, and compared
with the resampled truth.  This isolates the network from the locator and from resampling back to the scan grid
(``femurseg segment`` + ``femurseg evaluate PRED --truth`` measure the full pipeline).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from femurseg.evaluation.compare import CohortEvaluation, summarise
from femurseg.evaluation.metrics import compare_masks
from femurseg.models.preprocessing import Preprocessing
from femurseg.training.data import Volume, find_cases, prepare_volumes
from femurseg.training.patches import validation_crop

log = logging.getLogger(__name__)


def predict_volume(
    model: torch.nn.Module,
    volume: Volume,
    *,
    preprocessing: Preprocessing,
    device: torch.device,
    overlap: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Class predictions over a volume's nominal ROI.

    Parameters
    ----------
    model : torch.nn.Module
        The V-Net, in eval mode (the caller's business).
    volume : Volume
        A prepared volume (see :func:`femurseg.training.data.prepare_volumes`).
    preprocessing : Preprocessing
        The model's preprocessing: HU window and inference window.
    device : torch.device
    overlap : float
        Sliding-window overlap, a fraction of the window.

    Returns
    -------
    pred, target : (Z, Y, X) ndarray of uint8
        Predicted and true class indices over the ROI, at model resolution.
    """
    from femurseg.models.window import WindowOptions, sliding_window_probabilities

    image, target = validation_crop(volume, hu_window=preprocessing.hu_window)
    # The inference window (not the training patch) and the very code of ``femurseg segment``, so this measures
    # what inference will do.
    options = WindowOptions(patch_size_zyx=preprocessing.inference_window_zyx, overlap=overlap, batch_size=1)
    was_training = model.training
    model.eval()
    try:
        probs = sliding_window_probabilities(model, image, options=options, device=device)
    finally:
        model.train(was_training)
    pred = probs.argmax(0).astype(np.uint8)
    return pred, np.asarray(target, dtype=np.uint8)


def side_classes(volume: Volume) -> list[tuple[str, int]]:
    """(side, class index) pairs a volume holds: one femur for a femur model, both for a locator."""
    return [(volume.side, 1)] if volume.side != "both" else [("right", 1), ("left", 2)]


def evaluate_bundle(
    bundle: Any,
    *,
    data_dir: str | Path,
    device: str = "cpu",
    overlap: float = 0.5,
    cache_dir: str | Path | None = None,
    progress: bool = False,
) -> CohortEvaluation:
    """Metrics of a model bundle on every case of a labelled cohort, per femur side, at model resolution.

    Parameters
    ----------
    bundle : Bundle or path
        A model bundle (see :func:`femurseg.models.bundle.load_bundle`).
    data_dir : path
        A cohort folder or an nnU-Net raw dataset (see :func:`femurseg.training.data.find_cases`).
    device : str
        "cpu", "cuda" or "mps".
    overlap : float
        Sliding-window overlap.
    cache_dir : path, optional
        Where prepared volumes are cached.
    progress : bool
        Show a progress bar.

    Returns
    -------
    CohortEvaluation
        Rows per case and side (Dice, sensitivity, specificity over the ROI, HD, HD95, ASSD [mm], volumes [mL]
        inside the ROI; ``swapped`` for a locator whose right/left classes land on the wrong femur) and their
        summary (:func:`femurseg.evaluation.compare.summarise`).
    """
    from femurseg.models.bundle import Bundle, load_bundle

    if not isinstance(bundle, Bundle):
        bundle = load_bundle(bundle, device=device)
    pre = bundle.preprocessing
    volumes = prepare_volumes(find_cases(data_dir), preprocessing=pre, context_mm=0.0, cache_dir=cache_dir,
                              progress=progress)
    dev = torch.device(device)
    model = bundle.model.to(dev).eval()
    it: Iterable[Volume] = volumes
    if progress:
        from tqdm.auto import tqdm

        it = tqdm(volumes, desc="evaluating", unit="roi")
    rows: list[dict] = []
    for vol in it:
        pred, target = predict_volume(model, vol, preprocessing=pre, device=dev, overlap=overlap)
        for side, k in side_classes(vol):
            other = 3 - k if vol.side == "both" else None
            p = pred == k
            swapped = other is not None and bool(np.count_nonzero(p & (target == other)) > np.count_nonzero(p & (target == k)))
            rows.append({"case": vol.case_id, "side": side, **compare_masks(p, target == k, vol.spacing_zyx),
                         "swapped": swapped})
    return CohortEvaluation(rows=rows, summary=summarise(rows))
