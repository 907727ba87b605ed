"""One resumable unit of the protocol: train a model on some subjects, segment others with it, score them.

A unit's folder holds ``train/`` (a :func:`femurseg.training.trainer.fit` run folder: resumed from its last
checkpoint when a unit was killed), ``predictions/<case>.nii.gz`` (full-pipeline masks, kept), ``metrics.csv`` (a row
per case and side) and, last, ``done.json``: a unit with ``done.json`` is never run again.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from femurseg.atomic import write_text
from femurseg.conventions import FEMUR_LABELS

__all__ = ["run_unit", "score_case", "read_rows", "ROW_FIELDS", "DONE_FILE"]

log = logging.getLogger(__name__)

DONE_FILE = "done.json"
#: Per case and side: what the report's tables and figures are made of.
ROW_FIELDS: tuple[str, ...] = ("case", "side", "sex", "dice", "sensitivity", "specificity", "specificity_near",
                               "hd95", "assd", "volume_pred_ml", "volume_true_ml", "qc")


def score_case(pred: np.ndarray, truth: np.ndarray, spacing_zyx: Sequence[float]) -> dict[str, dict[str, float]]:
    """Metrics per side present in ``truth`` of two (Z, Y, X) label maps (1 right, 2 left femur).

    Dice, sensitivity, specificity (whole scan), specificity within the true femur's box grown by 10 mm, HD95 and
    ASSD [mm] (NaN when either mask is empty), volumes [mL].
    """
    from femurseg.evaluation.metrics import compare_masks
    from femurseg.evaluation.stats import specificity_near

    out: dict[str, dict[str, float]] = {}
    for side, value in FEMUR_LABELS.items():
        t = truth == value
        if not t.any():
            continue
        p = pred == value
        m = compare_masks(p, t, spacing_zyx)
        m["specificity_near"] = specificity_near(p, t, spacing_zyx)
        out[side] = m
    return out


def read_rows(path: Path) -> list[dict[str, Any]]:
    """The rows of a unit's ``metrics.csv`` (numbers as floats)."""
    rows = []
    with Path(path).open(newline="", encoding="utf-8") as fh:
        for r in csv.DictReader(fh):
            row: dict[str, Any] = dict(r)
            for k in ROW_FIELDS[3:-1]:
                row[k] = float(r[k]) if r[k] not in ("", "nan") else float("nan")
            rows.append(row)
    return rows


def _rows_text(rows: list[dict[str, Any]]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(ROW_FIELDS), lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: (f"{r[k]:.6g}" if isinstance(r[k], float) else r[k]) for k in ROW_FIELDS})
    return buf.getvalue()


def _train(config, data_dir: Path, train_dir: Path, cache: Path, progress: bool) -> Path:  # noqa: ANN001
    """Train (or finish training) into ``train_dir``; the bundle folder."""
    from femurseg.training.trainer import fit

    bundle = train_dir / "model"
    if (bundle / "model.json").is_file():
        return bundle
    resume = (train_dir / "checkpoints" / "last.pt").is_file()
    if train_dir.exists() and not resume:
        shutil.rmtree(train_dir)  # killed before its first checkpoint: nothing to keep
    return fit(config, data_dir=data_dir, run_dir=train_dir, resume=resume, progress=progress, cache_dir=cache)


def _segment_all(bundle: Path, records: list, pred_dir: Path, *, locator: str | None, extent_mm: float | None,
                 device: str) -> list[dict[str, Any]]:
    """Full-pipeline masks of ``records`` (kept in ``pred_dir``; a mask already there is reused) and their rows."""
    import SimpleITK as sitk

    from femurseg.errors import NoFemurFound
    from femurseg.inference import Segmenter
    from femurseg.io import read_image, write_image
    from femurseg.training.data import load_case

    seg = Segmenter(model=bundle, locator=locator, device=device, extent_mm=extent_mm)
    rows: list[dict[str, Any]] = []
    for rec in records:
        image, truth = load_case(rec)
        path = pred_dir / f"{rec.case_id}.nii.gz"
        qc: dict[str, str] = {}
        if path.is_file():
            mask = read_image(path)
        else:
            try:
                result = seg.segment(image)
                mask = result.mask
                qc = {s: f["qc"]["verdict"] for s, f in result.summary["sides"].items() if "qc" in f}
            except NoFemurFound as err:
                mask = sitk.Image(image.GetSize(), sitk.sitkUInt8)
                mask.CopyInformation(image)
                qc = {s: q["verdict"] for s, q in (err.qc or {}).items()}
            write_image(mask, path)
        spacing = image.GetSpacing()[::-1]
        for side, m in score_case(sitk.GetArrayViewFromImage(mask), sitk.GetArrayViewFromImage(truth),
                                  spacing).items():
            rows.append({"case": rec.case_id, "side": side, "sex": rec.sex or "", **m,
                         "qc": qc.get(side, "")})
    return rows


def run_unit(unit_dir: Path, *, config, data_dir: Path, eval_records: list, cache: Path,  # noqa: ANN001
             locator: str | None, extent_mm: float | None, device: str, progress: bool) -> dict[str, Any]:
    """Run one unit (train on ``config.train_cases``, validate inside training on ``config.val_cases``, then segment
    and score ``eval_records``) unless it is done; its ``done.json``.

    ``done.json``: best validation step and Dice (inside training), steps, training and segmentation seconds and
    the seconds per training step (for estimating longer runs).
    """
    done = unit_dir / DONE_FILE
    if done.is_file():
        return json.loads(done.read_text(encoding="utf-8"))
    unit_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    bundle = _train(config, data_dir, unit_dir / "train", cache, progress)
    t1 = time.perf_counter()
    pred_dir = unit_dir / "predictions"
    pred_dir.mkdir(exist_ok=True)
    rows = _segment_all(bundle, eval_records, pred_dir, locator=locator, extent_mm=extent_mm, device=device)
    t2 = time.perf_counter()
    write_text(unit_dir / "metrics.csv", _rows_text(rows))
    meta = json.loads((bundle / "model.json").read_text(encoding="utf-8"))
    metrics = meta.get("metrics", {})
    trained_s = float(meta.get("training", {}).get("seconds", t1 - t0))
    info = {
        "best_step": int(metrics.get("best_step") or config.steps),
        "val_dice_in_training": metrics.get("dice"),
        "steps": int(config.steps),
        "train_cases": len(config.train_cases),
        "val_cases": len(config.val_cases),
        "eval_cases": len(eval_records),
        "train_seconds": round(trained_s, 1),
        "seconds_per_step": round(trained_s / max(1, config.steps), 4),
        "segment_seconds": round(t2 - t1, 1),
        "mean_dice": float(np.nanmean([r["dice"] for r in rows])) if rows else float("nan"),
    }
    write_text(done, json.dumps(info, indent=1) + "\n")
    return info
