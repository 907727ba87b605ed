"""``femurseg protocol``: Zhao et al.'s experiment on a user's labelled cohort, as resumable units.

Layout of ``RUN_DIR``::

    protocol.json                      the settings (a resumed run must match them)
    config.json                        the training recipe every unit starts from
    splits.json                        hold-out and folds per cohort (written first; never changed)
    cache/                             prepared cases, shared by every unit
    units/<cohort>/<grid point>/fold<k>/   train on the cohort's other folds, validate on fold k
    units/<cohort>/final/              retrained on the cohort's whole 90 % with the selected parameters,
                                       then run on the cohort's hold-out
    selection.json                     per cohort: mean validation Dice per grid point, the choice, its length
    report/                            index.html, report.md, figures (:mod:`femurseg.protocol.report`)

The hold-out is scored by the model **retrained on the whole 90 %** with the parameters and training length the
folds selected — the model one would ship and the paper's final step; the fold models' ensemble would cost K
inferences per scan and describe no single model.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

import numpy as np

from femurseg.atomic import write_text
from femurseg.errors import InputError
from femurseg.protocol.profiles import ProtocolSettings, grid_points, point_name
from femurseg.protocol.units import DONE_FILE, read_rows, run_unit

__all__ = ["run_protocol", "subjects_of", "select"]

log = logging.getLogger(__name__)


def subjects_of(records: list) -> list:
    """:class:`~femurseg.evaluation.splits.Subject` per case: sex from the cohort table, labelled sides counted
    from the label map (0 sides: a negative case, counted as 1 so it is still dealt)."""
    import SimpleITK as sitk

    from femurseg.evaluation.splits import Subject, normalise_sex
    from femurseg.io import read_image
    from femurseg.training.data import load_case

    out = []
    for r in records:
        if r.femur_values:  # unsided femur labels: split by side as training does
            present = {int(v) for v in np.unique(sitk.GetArrayFromImage(load_case(r)[1]))}
            right, left = {1}, {2}
        else:
            present = {int(v) for v in np.unique(sitk.GetArrayFromImage(read_image(r.labels)))}
            right, left = set(r.right_values), set(r.left_values)
        sides = int(bool(present & right)) + int(bool(present & left))
        out.append(Subject(r.case_id, normalise_sex(r.sex), max(1, sides)))
    return out


def _open_run(run_dir: Path, settings: ProtocolSettings, config_json: str, *, resume: bool,
              command: str | None) -> None:
    """Create ``run_dir`` with its settings, or check that an existing run has the same ones."""
    proto = run_dir / "protocol.json"
    if proto.is_file():
        if not resume:
            raise InputError(f"{run_dir} holds a protocol run; add --resume to continue it, or choose a new folder")
        if ProtocolSettings.from_json(proto.read_text(encoding="utf-8")) != settings:
            raise InputError(f"{run_dir}: its protocol.json differs from these settings; resume it with the same "
                             "options (or --profile), or start a new folder")
        if (run_dir / "config.json").read_text(encoding="utf-8") != config_json:
            raise InputError(f"{run_dir}: its config.json differs from this training configuration")
        return
    if run_dir.exists() and any(run_dir.iterdir()):
        raise InputError(f"{run_dir} exists and is not a protocol run; choose a new or empty folder")
    run_dir.mkdir(parents=True, exist_ok=True)
    write_text(run_dir / "config.json", config_json)
    if command:
        write_text(run_dir / "command.txt", command + "\n")
    write_text(proto, settings.to_json())  # last: a folder with protocol.json is a complete start


def _splits(run_dir: Path, records: list, settings: ProtocolSettings) -> dict[str, Any]:
    from femurseg.evaluation.splits import protocol_splits, read_splits, write_splits

    path = run_dir / "splits.json"
    if path.is_file():
        return read_splits(path)
    splits = protocol_splits(subjects_of(records), folds=settings.folds, test_fraction=settings.test_fraction,
                             seed=settings.seed, cohorts=settings.cohorts)
    write_splits(splits, path)
    return splits


def _unit_config(base, settings: ProtocolSettings, point: dict[str, float], *, train: list[str],  # noqa: ANN001
                 val: list[str], steps: int):
    """The TrainConfig of one unit: the base recipe, the grid point, the profile's length and start."""
    from femurseg.models.bundle import bundled_model_path

    init = {"bundled": str(bundled_model_path("femur")), "scratch": None}.get(settings.init, settings.init)
    changes: dict[str, Any] = {"train_cases": tuple(train), "val_cases": tuple(val), "steps": int(steps),
                               "val_every": settings.val_every if val else int(steps),
                               "checkpoint_every": min(base.checkpoint_every, settings.val_every),
                               "warmup_steps": min(base.warmup_steps, max(0, int(steps) // 10)),
                               "val_fraction": 0.0, "seed": settings.seed, "init_weights": init}
    if settings.lr is not None:
        changes["lr"] = settings.lr
    changes.update(point)
    return base.with_(**changes)


def select(run_dir: Path, cohort: str, settings: ProtocolSettings) -> dict[str, Any]:
    """The grid point with the best mean validation Dice over the cohort's folds (all cases and sides pooled),
    and the training length for the retrained model: the folds' median best validation step, rounded up to the
    validation interval.

    Raises
    ------
    InputError
        A fold unit of this cohort is not done (run it, e.g. with ``--fold K``).
    """
    table = []
    for point in grid_points(settings.grid):
        name = point_name(point)
        rows, best_steps, fold_means = [], [], []
        for k in range(settings.folds):
            unit = run_dir / "units" / cohort / name / f"fold{k}"
            if not (unit / DONE_FILE).is_file():
                raise InputError(f"{unit} is not done; run the protocol for fold {k} first (--fold {k})")
            r = read_rows(unit / "metrics.csv")
            rows += r
            fold_means.append(float(np.nanmean([x["dice"] for x in r])) if r else float("nan"))
            best_steps.append(json.loads((unit / DONE_FILE).read_text(encoding="utf-8"))["best_step"])
        mean = float(np.nanmean([x["dice"] for x in rows])) if rows else float("nan")
        length = int(math.ceil(float(np.median(best_steps)) / settings.val_every) * settings.val_every)
        table.append({"point": point, "name": name, "mean_val_dice": mean, "fold_dice": fold_means,
                      "best_steps": best_steps, "steps": max(settings.val_every, min(length, settings.steps))})
    best = max(table, key=lambda t: -1.0 if math.isnan(t["mean_val_dice"]) else t["mean_val_dice"])
    return {"grid": table, "chosen": best["name"], "point": best["point"], "steps": best["steps"]}


def run_protocol(data_dir: str | Path, run_dir: str | Path, settings: ProtocolSettings, *, config,  # noqa: ANN001
                 resume: bool = False, fold: int | None = None, locator: str | None = None,
                 device: str = "auto", progress: bool = True, command: str | None = None) -> dict[str, Any]:
    """Run (or continue) the protocol (``config``: the training recipe every unit starts from, kept as
    ``config.json``); with ``fold`` only that fold's units (for spreading folds over machines:
    a later run without ``fold`` skips them and finishes).  ``command`` (the command line) is kept in
    ``command.txt`` for the report.  Returns ``{"done": [unit folders run or found done],
    "selection": {...}, "report": path or None}``.
    """
    from femurseg.training.data import find_cases

    from femurseg.config import to_dict

    data_dir, run_dir = Path(data_dir), Path(run_dir)
    config_json = json.dumps(to_dict(config), indent=1, sort_keys=True) + "\n"
    if fold is not None and not 0 <= fold < settings.folds:
        raise InputError(f"--fold must be 0–{settings.folds - 1}, not {fold}")
    records = find_cases(data_dir)
    _open_run(run_dir, settings, config_json, resume=resume or fold is not None, command=command)
    splits = _splits(run_dir, records, settings)
    by_id = {r.case_id: r for r in records}
    missing = sorted({c for c in splits["holdout"]} - set(by_id))
    if missing:
        raise InputError(f"{data_dir}: splits.json names case(s) not in the cohort: {', '.join(missing[:5])}")
    common = {"data_dir": data_dir, "cache": run_dir / "cache", "locator": locator, "extent_mm": settings.extent_mm,
              "device": device, "progress": progress}
    done: list[str] = []
    for cohort in settings.cohorts:
        c = splits["cohorts"][cohort]
        for point in grid_points(settings.grid):
            for k in range(settings.folds) if fold is None else [fold]:
                val = c["folds"][k]
                train = [x for x in c["train"] if x not in set(val)]
                unit = run_dir / "units" / cohort / point_name(point) / f"fold{k}"
                cfg = _unit_config(config, settings, point, train=train, val=val, steps=settings.steps)
                log.info("unit %s", unit.relative_to(run_dir))
                run_unit(unit, config=cfg, eval_records=[by_id[x] for x in val], **common)
                done.append(str(unit.relative_to(run_dir)))
    if fold is not None:
        return {"done": done, "selection": None, "report": None}
    selection: dict[str, Any] = {}
    for cohort in settings.cohorts:
        c = splits["cohorts"][cohort]
        sel = select(run_dir, cohort, settings)
        selection[cohort] = sel
        unit = run_dir / "units" / cohort / "final"
        cfg = _unit_config(config, settings, sel["point"], train=c["train"], val=[], steps=sel["steps"])
        run_unit(unit, config=cfg, eval_records=[by_id[x] for x in c["holdout"]], **common)
        done.append(str(unit.relative_to(run_dir)))
    write_text(run_dir / "selection.json", json.dumps(selection, indent=1) + "\n")
    from femurseg.protocol.report import write_report

    report = write_report(run_dir, data_dir)
    return {"done": done, "selection": selection, "report": str(report)}
