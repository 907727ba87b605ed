"""The protocol report's figures: predicted against true volume, Bland–Altman, Dice per cohort, learning curves.

Each function draws one PNG (written through :mod:`femurseg.atomic`) from plain numbers and returns the figures it
computed (regression line, bias and limits, ...) so the report's tables and its pictures come from one
computation.  Matplotlib with the Agg backend; no display needed.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

__all__ = ["volume_regression_plot", "bland_altman_plot", "dice_box_plot", "learning_curves_plot"]


def _figure(width: float, height: float):  # noqa: ANN202
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(width, height))
    return plt, fig, ax


def _save(plt, fig, path: str | os.PathLike[str]) -> Path:  # noqa: ANN001
    from femurseg.atomic import transaction

    path = Path(path)
    try:
        with transaction(overwrite=True) as tx:
            fig.savefig(tx.stage(path), dpi=120, bbox_inches="tight", format="png")
    finally:
        plt.close(fig)
    return path


def volume_regression_plot(true_ml: Sequence[float], pred_ml: Sequence[float], path: str | os.PathLike[str], *,
                           title: str = "Predicted against true femur volume") -> dict[str, float]:
    """Scatter of predicted against true volume [mL] with the identity and the least-squares line.

    Returns
    -------
    dict
        ``slope``, ``intercept_ml``, ``r2``, ``p_value`` (of the regression of predicted on true volume).
    """
    from scipy import stats

    x, y = np.asarray(true_ml, float), np.asarray(pred_ml, float)
    fit = stats.linregress(x, y)
    plt, fig, ax = _figure(4.6, 4.4)
    lo, hi = float(min(x.min(), y.min())), float(max(x.max(), y.max()))
    pad = 0.05 * (hi - lo or 1.0)
    line = np.array([lo - pad, hi + pad])
    ax.plot(line, line, color="0.6", lw=1, ls="--", label="identity")
    ax.plot(line, fit.intercept + fit.slope * line, color="C3", lw=1.5,
            label=f"y = {fit.slope:.3f}x {fit.intercept:+.1f} mL")
    ax.scatter(x, y, s=14, color="C0", zorder=3)
    ax.set_xlim(line)
    ax.set_ylim(line)
    ax.set_aspect("equal")
    ax.set_xlabel("true volume [mL]")
    ax.set_ylabel("predicted volume [mL]")
    p = "p < 0.001" if fit.pvalue < 1e-3 else f"p = {fit.pvalue:.3f}"
    ax.set_title(f"{title}\nR² = {fit.rvalue ** 2:.4f} ({p}), n = {x.size}", fontsize=9)
    ax.legend(fontsize=8, loc="upper left")
    _save(plt, fig, path)
    return {"slope": float(fit.slope), "intercept_ml": float(fit.intercept), "r2": float(fit.rvalue**2),
            "p_value": float(fit.pvalue)}


def bland_altman_plot(true_ml: Sequence[float], pred_ml: Sequence[float], path: str | os.PathLike[str], *,
                      title: str = "Bland–Altman: predicted − true volume") -> dict[str, float]:
    """Difference against mean of predicted and true volume, with the bias and the 95 % limits of agreement.

    Returns
    -------
    dict
        ``bias_ml``, ``loa_low_ml``, ``loa_high_ml``.
    """
    x, y = np.asarray(true_ml, float), np.asarray(pred_ml, float)
    diff, mean = y - x, (x + y) / 2.0
    bias, sd = float(diff.mean()), float(diff.std(ddof=1))
    low, high = bias - 1.96 * sd, bias + 1.96 * sd
    plt, fig, ax = _figure(5.2, 3.6)
    ax.scatter(mean, diff, s=14, color="C0", zorder=3)
    for v, name, style in ((bias, f"bias {bias:+.2f} mL", "-"), (low, f"−1.96 SD {low:+.2f}", "--"),
                           (high, f"+1.96 SD {high:+.2f}", "--")):
        ax.axhline(v, color="C3" if style == "-" else "0.5", ls=style, lw=1)
        ax.text(1.01, v, name, va="center", fontsize=7, transform=ax.get_yaxis_transform())  # right of the axes
    ax.axhline(0.0, color="0.8", lw=0.8)
    ax.set_xlabel("mean of predicted and true volume [mL]")
    ax.set_ylabel("predicted − true [mL]")
    ax.set_title(f"{title} (n = {x.size})", fontsize=9)
    _save(plt, fig, path)
    return {"bias_ml": bias, "loa_low_ml": low, "loa_high_ml": high}


def dice_box_plot(groups: Mapping[str, Sequence[float]], path: str | os.PathLike[str], *,
                  reference: float | None = None, title: str = "Dice per cohort") -> dict[str, float]:
    """Box plots of Dice per group (cohort, or validation folds and hold-out), optionally a reference line (the
    paper's 0.9815).  Returns each group's median."""
    names = list(groups)
    data = [np.asarray(groups[n], float) for n in names]
    plt, fig, ax = _figure(max(3.5, 1.1 * len(names) + 1.5), 3.6)
    ax.boxplot(data, tick_labels=names, showmeans=True)
    if len(names) > 4:
        ax.tick_params(axis="x", labelrotation=25)
    for i, d in enumerate(data, start=1):
        ax.scatter(np.full(d.size, i) + np.linspace(-0.08, 0.08, d.size), d, s=8, color="C0", alpha=0.6, zorder=3)
    if reference is not None:
        ax.axhline(reference, color="C3", ls="--", lw=1, label=f"Zhao et al. 2020: {reference}")
        ax.legend(fontsize=8, loc="lower right")
    ax.set_ylabel("Dice")
    ax.set_title(title, fontsize=9)
    _save(plt, fig, path)
    return {n: float(np.median(d)) for n, d in zip(names, data)}


def learning_curves_plot(curves: Mapping[str, Mapping[str, Sequence[float]]], path: str | os.PathLike[str], *,
                         title: str = "Learning curves") -> dict[str, float]:
    """Training loss and validation Dice against step, one line per run (e.g. per fold).

    ``curves[name]`` holds ``step``, ``loss`` and optionally ``val_step``/``val_dice``.  Returns each run's best
    validation Dice (NaN without validation).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a1, a2) = plt.subplots(1, 2, figsize=(9.0, 3.4))
    best: dict[str, float] = {}
    for i, (name, c) in enumerate(curves.items()):
        colour = f"C{i % 10}"
        step, loss = np.asarray(c["step"], float), np.asarray(c["loss"], float)
        if loss.size:
            k = max(1, loss.size // 50)  # a running mean keeps the lines readable
            smooth = np.convolve(loss, np.ones(k) / k, mode="valid")
            a1.plot(step[k - 1:], smooth, color=colour, lw=1, label=name)
        vs, vd = np.asarray(c.get("val_step", []), float), np.asarray(c.get("val_dice", []), float)
        if vd.size:
            a2.plot(vs, vd, marker="o", ms=3, color=colour, lw=1, label=name)
        best[name] = float(np.nanmax(vd)) if vd.size else float("nan")
    a1.set_xlabel("step")
    a1.set_ylabel("training loss (running mean)")
    a1.set_yscale("log")
    a2.set_xlabel("step")
    a2.set_ylabel("validation Dice")
    for a in (a1, a2):
        a.legend(fontsize=7)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    _save(plt, fig, path)
    return best
