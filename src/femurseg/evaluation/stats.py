"""The statistics reviewers ask for, on top of the per-case metrics of :mod:`femurseg.evaluation.metrics`.

- :func:`bootstrap_ci`: a percentile bootstrap 95 % confidence interval of a mean (resampling cases);
- :func:`specificity_near`: specificity within the true femur's bounding box grown by a margin (whole-scan
  specificity is ~1 for any mask, because the background is huge: the paper's 0.9992 says little on its own);
- :func:`summarise_ci`: mean, SD and bootstrap CI of every metric of a list of per-case rows;
- :func:`fold_spread`: fold-to-fold spread of a cross-validation (mean, SD, min, max of the fold means);
- :func:`compare_groups`: men against women with a stated test (two-sided Mann–Whitney U: Dice is bounded and
  skewed, so no normality is assumed), with the medians and the effect as a difference of medians.

Volume R² with its p-value and the Bland–Altman bias and limits are :func:`femurseg.evaluation.metrics.
volume_agreement`.  Arrays are (z, y, x); spacings in mm.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import numpy as np
from scipy import stats

__all__ = ["bootstrap_ci", "specificity_near", "summarise_ci", "fold_spread", "compare_groups"]


def bootstrap_ci(values: Sequence[float], *, level: float = 0.95, n_resamples: int = 2000,
                 seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap confidence interval of the mean of ``values`` (NaN ignored).

    Returns
    -------
    (low, high) : tuple of float
        NaN when fewer than 2 finite values.
    """
    x = np.asarray([v for v in values if v is not None], float)
    x = x[np.isfinite(x)]
    if x.size < 2:
        return float("nan"), float("nan")
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0xB007]))
    means = x[rng.integers(0, x.size, (int(n_resamples), x.size))].mean(axis=1)
    a = (1.0 - level) / 2.0
    return float(np.quantile(means, a)), float(np.quantile(means, 1.0 - a))


def specificity_near(pred: np.ndarray, truth: np.ndarray, spacing_zyx: Sequence[float], *,
                     margin_mm: float = 10.0) -> float:
    """Specificity TN / (TN + FP) inside the true mask's bounding box grown by ``margin_mm`` on every side.

    Parameters
    ----------
    pred, truth : (Z, Y, X) ndarray of bool
    spacing_zyx : (3,) sequence of float
        Voxel spacing [mm].
    margin_mm : float
        Growth of the box [mm] (10 mm: the bone's neighbourhood, where a segmentation can err).

    Returns
    -------
    float
        NaN when the truth is empty or the grown box holds no background.
    """
    p, t = np.asarray(pred, bool), np.asarray(truth, bool)
    if p.shape != t.shape:
        raise ValueError(f"pred {p.shape} and truth {t.shape} differ in shape")
    idx = np.argwhere(t)
    if idx.size == 0:
        return float("nan")
    grow = np.ceil(margin_mm / np.asarray(spacing_zyx, float)).astype(int)
    lo = np.maximum(idx.min(axis=0) - grow, 0)
    hi = np.minimum(idx.max(axis=0) + grow + 1, t.shape)
    box = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))
    bg = ~t[box]
    n_bg = int(np.count_nonzero(bg))
    if n_bg == 0:
        return float("nan")
    fp = int(np.count_nonzero(p[box] & bg))
    return (n_bg - fp) / n_bg


def summarise_ci(rows: Iterable[Mapping[str, float]], metrics: Sequence[str], *, seed: int = 0) -> dict[str, dict]:
    """Per metric: ``n``, ``mean``, ``sd``, ``ci_low``, ``ci_high`` (bootstrap 95 %) over the rows' finite values."""
    rows = list(rows)
    out: dict[str, dict] = {}
    for m in metrics:
        x = np.asarray([r.get(m) for r in rows if r.get(m) is not None], float)
        x = x[np.isfinite(x)]
        low, high = bootstrap_ci(x, seed=seed)
        out[m] = {"n": int(x.size), "mean": float(x.mean()) if x.size else float("nan"),
                  "sd": float(x.std(ddof=1)) if x.size > 1 else float("nan"), "ci_low": low, "ci_high": high}
    return out


def fold_spread(fold_means: Sequence[float]) -> dict[str, float]:
    """Spread of a metric's per-fold means: ``n_folds``, ``mean``, ``sd`` (between folds), ``min``, ``max``."""
    x = np.asarray(fold_means, float)
    x = x[np.isfinite(x)]
    nan = float("nan")
    return {"n_folds": int(x.size), "mean": float(x.mean()) if x.size else nan,
            "sd": float(x.std(ddof=1)) if x.size > 1 else nan,
            "min": float(x.min()) if x.size else nan, "max": float(x.max()) if x.size else nan}


def compare_groups(a: Sequence[float], b: Sequence[float], *, names: tuple[str, str] = ("men", "women")) -> dict:
    """Two groups' values compared with a two-sided Mann–Whitney U test.

    Returns
    -------
    dict
        ``test`` (its name), ``n_<name>``, ``median_<name>``, ``difference_of_medians`` (first − second), ``u``,
        ``p_value`` (NaN when a group has fewer than 2 values).
    """
    x = np.asarray(a, float)
    y = np.asarray(b, float)
    x, y = x[np.isfinite(x)], y[np.isfinite(y)]
    out = {"test": "Mann-Whitney U, two-sided", f"n_{names[0]}": int(x.size), f"n_{names[1]}": int(y.size),
           f"median_{names[0]}": float(np.median(x)) if x.size else float("nan"),
           f"median_{names[1]}": float(np.median(y)) if y.size else float("nan")}
    out["difference_of_medians"] = out[f"median_{names[0]}"] - out[f"median_{names[1]}"]
    if x.size < 2 or y.size < 2:
        out.update(u=float("nan"), p_value=float("nan"))
        return out
    res = stats.mannwhitneyu(x, y, alternative="two-sided")
    out.update(u=float(res.statistic), p_value=float(res.pvalue))
    return out
