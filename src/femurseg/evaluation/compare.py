"""Compare a folder of predicted label maps with a folder of true ones: per-case metrics and a cohort summary.

Cases are matched by file name (``<case>.nii.gz`` etc.).  Each pair must share its grid exactly; metrics are
computed per femur side with :func:`femurseg.evaluation.metrics.compare_labels`, in millimetres.
"""

from __future__ import annotations

import csv
import io as _io
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from femurseg.conventions import LEFT_FEMUR, RIGHT_FEMUR
from femurseg.errors import InputError
from femurseg.evaluation.metrics import compare_labels, volume_agreement
from femurseg.geometry import unsided_two_femurs
from femurseg.io import FILE_FORMATS, array_of, grid_of, read_image

SIDES = {"right": RIGHT_FEMUR, "left": LEFT_FEMUR}
METRICS = ("dice", "sensitivity", "specificity", "hd", "hd95", "assd", "volume_pred_ml", "volume_true_ml")


@dataclass(frozen=True)
class CohortEvaluation:
    """Per-case rows (one per case and side) and the cohort summary."""

    rows: list[dict]
    summary: dict


def case_id(path: Path) -> str:
    """The case id of an image file: its name without the image extension."""
    name = path.name
    for ext in sorted(FILE_FORMATS, key=len, reverse=True):
        if name.lower().endswith(ext):
            return name[: -len(ext)]
    return path.stem


def _images_in(folder: Path) -> dict[str, Path]:
    if not folder.is_dir():
        raise InputError(f"{folder}: no such folder")
    sub = folder / "labels"
    if sub.is_dir():  # a cohort folder: compare against its labels/
        folder = sub
    found = {
        case_id(p): p for p in sorted(folder.iterdir())
        if p.is_file() and any(p.name.lower().endswith(ext) for ext in FILE_FORMATS) and not p.name.endswith(".raw")
    }
    return found


def evaluate_folders(*, pred_dir: str | Path, truth_dir: str | Path) -> CohortEvaluation:
    """Metrics of every predicted label map in ``pred_dir`` against its namesake in ``truth_dir``.

    Parameters
    ----------
    pred_dir : path
        Folder of predicted label maps (0 background, 1 right femur, 2 left femur).
    truth_dir : path
        Folder of true label maps, or a cohort folder (its ``labels/`` is used).

    Returns
    -------
    CohortEvaluation
        ``rows``: one dict per case and side present in the truth, with the metrics of
        :func:`~femurseg.evaluation.metrics.compare_masks` and ``swapped`` (the prediction's label for this side
        overlaps the other side's truth more than this side's). ``summary``: per side and pooled mean, standard
        deviation, median and range of each metric, volume agreement (R², p, Bland–Altman), the number of swaps
        and the cases missing a prediction.
    """
    preds, truths = _images_in(Path(pred_dir)), _images_in(Path(truth_dir))
    if not truths:
        raise InputError(f"{truth_dir}: no label maps found (.nii.gz, .nii, .nrrd, .mha, .mhd)")
    common = sorted(set(preds) & set(truths))
    if not common:
        raise InputError(f"{pred_dir}: no prediction has the name of a label map in {truth_dir}")
    rows: list[dict] = []
    for case in common:
        p_img, t_img = read_image(preds[case]), read_image(truths[case])
        gp, gt = grid_of(p_img), grid_of(t_img)
        if not gp.same_as(gt):
            raise InputError(f"{case}: prediction and truth grids differ (size, spacing, origin or direction)")
        p, t = array_of(p_img), array_of(t_img)
        for what, arr, path in (("truth", t, truths[case]), ("prediction", p, preds[case])):
            if unsided_two_femurs(arr, gt):
                raise InputError(f"{path}: both femurs carry the value 1 (unsided {what} labels); femurseg's labels "
                                 "are 1 right, 2 left femur (patient's sides): relabel by side")
        per_side = compare_labels(p, t, gt.spacing_zyx, labels=SIDES)
        for side, value in SIDES.items():
            if not (t == value).any():
                continue
            other = SIDES["left" if side == "right" else "right"]
            pm = p == value
            swapped = bool(np.count_nonzero(pm & (t == other)) > np.count_nonzero(pm & (t == value)))
            rows.append({"case": case, "side": side, **per_side[side], "swapped": swapped})
    summary = summarise(rows)
    summary["missing_predictions"] = sorted(set(truths) - set(preds))
    return CohortEvaluation(rows=rows, summary=summary)


def _stats(values: list[float]) -> dict[str, float]:
    v = np.asarray([x for x in values if not math.isnan(x)], dtype=float)
    if v.size == 0:
        return {"mean": float("nan"), "sd": float("nan"), "median": float("nan"), "min": float("nan"), "max": float("nan")}
    return {"mean": float(v.mean()), "sd": float(v.std(ddof=1)) if v.size > 1 else 0.0, "median": float(np.median(v)),
            "min": float(v.min()), "max": float(v.max())}


def summarise(rows: list[dict]) -> dict:
    """Cohort summary of per-case rows (see :func:`evaluate_folders`)."""
    out: dict = {"n_cases": len({r["case"] for r in rows})}
    groups = {"all": rows, **{s: [r for r in rows if r["side"] == s] for s in SIDES}}
    for name, group in groups.items():
        if not group:
            continue
        entry: dict = {"n": len(group), "swapped": int(sum(r["swapped"] for r in group))}
        for m in METRICS:
            entry[m] = _stats([float(r[m]) for r in group])
        if len(group) >= 3:
            entry["volume"] = volume_agreement([r["volume_pred_ml"] for r in group], [r["volume_true_ml"] for r in group])
        out[name] = entry
    return out


def summarise_by(rows: list[dict], group_of: Mapping[str, str]) -> dict[str, dict]:
    """Cohort summaries per group (the paper reports the entire cohort, then men and women separately).

    Parameters
    ----------
    rows
        Per-case rows of :func:`evaluate_folders` or :func:`femurseg.training.evaluate.evaluate_bundle`.
    group_of
        Group value by case id, e.g. ``case_column(cohort_csv, "sex")``; a case that is missing or empty there
        falls in the group ``"(none)"``.

    Returns
    -------
    dict
        ``{group value: summarise(rows of that group)}``, groups sorted by name.
    """
    groups: dict[str, list[dict]] = {}
    for r in rows:
        groups.setdefault(group_of.get(r["case"], "") or "(none)", []).append(r)
    return {name: summarise(groups[name]) for name in sorted(groups)}


def rows_csv_text(rows: list[dict]) -> str:
    """Per-case rows as CSV text (case, side, every metric, swapped)."""
    buf = _io.StringIO()
    fields = ["case", "side", *METRICS, "swapped"]
    writer = csv.DictWriter(buf, fieldnames=fields, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for r in rows:
        writer.writerow({k: (f"{r[k]:.6g}" if isinstance(r[k], float) else r[k]) for k in fields})
    return buf.getvalue()
