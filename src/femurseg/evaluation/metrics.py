"""Segmentation metrics: overlap, surface distances in millimetres, volumes, and cohort statistics.

Every distance metric takes the voxel spacing as a required argument and returns millimetres (MONAI's distance
metrics silently return voxels when spacing is omitted; ours cannot).  Arrays are (z, y, x).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from scipy import ndimage, stats

from femurseg.conventions import LEFT_FEMUR, RIGHT_FEMUR


def _as_bool(a: np.ndarray, name: str) -> np.ndarray:
    a = np.asarray(a)
    if a.ndim != 3:
        raise ValueError(f"{name} must be a 3D (z, y, x) array, got shape {a.shape}")
    return a.astype(bool, copy=False)


def _check_pair(pred: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    p, t = _as_bool(pred, "pred"), _as_bool(truth, "truth")
    if p.shape != t.shape:
        raise ValueError(f"pred {p.shape} and truth {t.shape} differ in shape")
    return p, t


def confusion(pred: np.ndarray, truth: np.ndarray) -> tuple[int, int, int, int]:
    """Voxel counts (TP, FP, FN, TN) of two (Z, Y, X) masks."""
    p, t = _check_pair(pred, truth)
    tp = int(np.count_nonzero(p & t))
    fp = int(np.count_nonzero(p)) - tp
    fn = int(np.count_nonzero(t)) - tp
    tn = p.size - tp - fp - fn
    return tp, fp, fn, tn


def dice(pred: np.ndarray, truth: np.ndarray) -> float:
    """Dice coefficient 2|P∩T| / (|P| + |T|) of two (Z, Y, X) masks; 1.0 when both are empty."""
    tp, fp, fn, _ = confusion(pred, truth)
    denom = 2 * tp + fp + fn
    return 1.0 if denom == 0 else 2.0 * tp / denom


def sensitivity(pred: np.ndarray, truth: np.ndarray) -> float:
    """TP / (TP + FN); NaN when the truth is empty."""
    tp, _, fn, _ = confusion(pred, truth)
    return float("nan") if tp + fn == 0 else tp / (tp + fn)


def specificity(pred: np.ndarray, truth: np.ndarray) -> float:
    """TN / (TN + FP) over the whole array (it depends on the field of view: state which one you report)."""
    _, fp, _, tn = confusion(pred, truth)
    return float("nan") if tn + fp == 0 else tn / (tn + fp)


def volume_ml(mask: np.ndarray, spacing_zyx: Sequence[float]) -> float:
    """Volume of a (Z, Y, X) mask [mL] for voxel spacing ``spacing_zyx`` [mm]."""
    return float(np.count_nonzero(mask)) * float(np.prod(spacing_zyx)) / 1000.0


def _surface(mask: np.ndarray) -> np.ndarray:
    return mask & ~ndimage.binary_erosion(mask, structure=ndimage.generate_binary_structure(3, 1), border_value=0)


def surface_distances(pred: np.ndarray, truth: np.ndarray, spacing_zyx: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """Distances [mm] from each surface voxel of ``pred`` to the surface of ``truth``, and the reverse.

    Parameters
    ----------
    pred, truth : (Z, Y, X) ndarray of bool
        Non-empty masks of equal shape.
    spacing_zyx : (3,) sequence of float
        Voxel spacing [mm], (z, y, x).

    Returns
    -------
    d_pred_to_truth, d_truth_to_pred : 1-D ndarray of float [mm]
    """
    p, t = _check_pair(pred, truth)
    if not p.any() or not t.any():
        raise ValueError("surface distances need two non-empty masks")
    spacing = np.asarray(spacing_zyx, dtype=float)
    if spacing.shape != (3,) or np.any(spacing <= 0):
        raise ValueError(f"spacing_zyx must be three positive numbers [mm], got {spacing_zyx!r}")
    # Work on the joint bounding box (plus one voxel) so whole-scan masks stay cheap.
    both = p | t
    lo = [max(0, int(np.flatnonzero(both.any(axis=tuple(a for a in range(3) if a != ax))).min()) - 1) for ax in range(3)]
    hi = [int(np.flatnonzero(both.any(axis=tuple(a for a in range(3) if a != ax))).max()) + 2 for ax in range(3)]
    box = tuple(slice(a, b) for a, b in zip(lo, hi))
    sp, st = _surface(p[box]), _surface(t[box])
    dt_t = ndimage.distance_transform_edt(~st, sampling=spacing)
    dt_p = ndimage.distance_transform_edt(~sp, sampling=spacing)
    return dt_t[sp], dt_p[st]


def hausdorff(pred: np.ndarray, truth: np.ndarray, spacing_zyx: Sequence[float], *, percentile: float = 100.0) -> float:
    """Symmetric Hausdorff distance [mm]; ``percentile=95`` gives HD95 (the max of both directed 95th percentiles)."""
    a, b = surface_distances(pred, truth, spacing_zyx)
    return float(max(np.percentile(a, percentile), np.percentile(b, percentile)))


def assd(pred: np.ndarray, truth: np.ndarray, spacing_zyx: Sequence[float]) -> float:
    """Average symmetric surface distance [mm]."""
    a, b = surface_distances(pred, truth, spacing_zyx)
    return float((a.sum() + b.sum()) / (a.size + b.size))


def compare_masks(pred: np.ndarray, truth: np.ndarray, spacing_zyx: Sequence[float]) -> dict[str, float]:
    """All metrics of one binary structure: dice, sensitivity, specificity, hd, hd95, assd [mm], volumes [mL]."""
    p, t = _check_pair(pred, truth)
    out = {
        "dice": dice(p, t),
        "sensitivity": sensitivity(p, t),
        "specificity": specificity(p, t),
        "volume_pred_ml": volume_ml(p, spacing_zyx),
        "volume_true_ml": volume_ml(t, spacing_zyx),
    }
    if p.any() and t.any():
        a, b = surface_distances(p, t, spacing_zyx)
        out["hd"] = float(max(a.max(), b.max()))
        out["hd95"] = float(max(np.percentile(a, 95), np.percentile(b, 95)))
        out["assd"] = float((a.sum() + b.sum()) / (a.size + b.size))
    else:
        out["hd"] = out["hd95"] = out["assd"] = float("nan")
    return out


def compare_labels(
    pred: np.ndarray,
    truth: np.ndarray,
    spacing_zyx: Sequence[float],
    *,
    labels: Mapping[str, int] | None = None,
) -> dict[str, dict[str, float]]:
    """:func:`compare_masks` per labelled structure of two (Z, Y, X) label maps.

    ``labels`` maps a name to a label value (default: right femur 1, left femur 2).  A structure absent from both
    maps is skipped.
    """
    labels = dict(labels or {"right": RIGHT_FEMUR, "left": LEFT_FEMUR})
    pred, truth = np.asarray(pred), np.asarray(truth)
    out: dict[str, dict[str, float]] = {}
    for name, value in labels.items():
        p, t = pred == value, truth == value
        if p.any() or t.any():
            out[name] = compare_masks(p, t, spacing_zyx)
    return out


def volume_agreement(pred_ml: Sequence[float], true_ml: Sequence[float]) -> dict[str, float]:
    """Agreement of predicted and true volumes over a cohort [mL].

    Returns the coefficient of determination of the linear regression of predicted on true volume (R², as the
    paper reports it), its p-value, slope, intercept, and the Bland–Altman bias and 95 % limits of agreement.
    """
    x, y = np.asarray(true_ml, dtype=float), np.asarray(pred_ml, dtype=float)
    if x.shape != y.shape or x.size < 3:
        raise ValueError("volume_agreement needs two equal-length sequences of at least 3 volumes")
    diff = y - x
    bias, sd = float(diff.mean()), float(diff.std(ddof=1))
    nan = float("nan")
    # A regression needs spread in the true volumes; without it only the Bland–Altman figures are defined.
    fit = stats.linregress(x, y) if np.ptp(x) > 0 else None
    return {
        "n": int(x.size),
        "r2": float(fit.rvalue**2) if fit else nan,
        "p_value": float(fit.pvalue) if fit else nan,
        "slope": float(fit.slope) if fit else nan,
        "intercept_ml": float(fit.intercept) if fit else nan,
        "bias_ml": bias,
        "loa_low_ml": bias - 1.96 * sd,
        "loa_high_ml": bias + 1.96 * sd,
    }
