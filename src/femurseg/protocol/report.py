"""The protocol's report: ``RUN_DIR/report/`` with ``index.html`` (self-contained: figures embedded),
``report.md`` (figures beside it), ``summary.json`` (every number in the tables) and ``figures/``.

Tables: the paper-style hold-out table per cohort (mean ± SD and bootstrap 95 % CI of Dice, sensitivity,
specificity over the whole scan and within the femur's box grown by 10 mm, HD95, ASSD; volume R² with p and the
Bland–Altman bias and limits) with Zhao et al.'s numbers beside ours; the cross-validation per cohort and grid point
(mean validation Dice, fold-to-fold spread, selected length); men against women (Mann–Whitney U).  Figures:
predicted against true volume, Bland–Altman, Dice per cohort, learning curves per fold, and contour overlays
(axial, coronal, sagittal through the femoral head; predicted against true) of the best, median and worst hold-out
cases.
"""

from __future__ import annotations

import html
import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from femurseg.atomic import transaction
from femurseg.protocol.profiles import PROFILES, ProtocolSettings, estimate_hours
from femurseg.protocol.units import read_rows
from femurseg.viz.html import html_figure, html_page, html_table

__all__ = ["write_report", "PAPER"]

#: Zhao et al. 2020, hold-out of the entire cohort.
PAPER: dict[str, float] = {"dice": 0.9815, "sensitivity": 0.9852, "specificity": 0.9992, "volume_r2": 0.9956}
_METRICS = ("dice", "sensitivity", "specificity", "specificity_near", "hd95", "assd")
_HEADS = {"dice": "Dice", "sensitivity": "Sensitivity", "specificity": "Specificity (scan)",
          "specificity_near": "Specificity (box + 10 mm)", "hd95": "HD95 mm", "assd": "ASSD mm"}


def _fmt(v: float | None, digits: int = 4) -> str:
    return "–" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{digits}f}"


def _cell(s: dict[str, float], metric: str) -> str:
    d = 2 if metric in ("hd95", "assd") else 4
    if not s or s.get("n", 0) == 0:
        return "–"
    return f"{_fmt(s['mean'], d)} ± {_fmt(s['sd'], d)} [{_fmt(s['ci_low'], d)}, {_fmt(s['ci_high'], d)}]"


def _collect(run_dir: Path, settings: ProtocolSettings, selection: dict) -> dict[str, Any]:
    from femurseg.evaluation.metrics import volume_agreement
    from femurseg.evaluation.stats import fold_spread, summarise_ci

    out: dict[str, Any] = {}
    for cohort in settings.cohorts:
        sel = selection[cohort]
        cv_rows = []
        for k in range(settings.folds):
            cv_rows += read_rows(run_dir / "units" / cohort / sel["chosen"] / f"fold{k}" / "metrics.csv")
        hold = read_rows(run_dir / "units" / cohort / "final" / "metrics.csv")
        chosen = next(g for g in sel["grid"] if g["name"] == sel["chosen"])
        entry = {"cv": summarise_ci(cv_rows, _METRICS, seed=settings.seed),
                 "holdout": summarise_ci(hold, _METRICS, seed=settings.seed),
                 "fold_spread": fold_spread(chosen["fold_dice"]), "holdout_rows": hold, "cv_rows": cv_rows,
                 "n_holdout_cases": len({r["case"] for r in hold})}
        if len(hold) >= 3:
            entry["volume"] = volume_agreement([r["volume_pred_ml"] for r in hold], [r["volume_true_ml"] for r in hold])
        out[cohort] = entry
    return out


def _sex_comparison(data: dict[str, Any]) -> dict[str, Any] | None:
    from femurseg.evaluation.stats import compare_groups

    first = next(iter(data.values()))
    rows = first["holdout_rows"]
    men = [r["dice"] for r in rows if r["sex"] == "M"]
    women = [r["dice"] for r in rows if r["sex"] == "F"]
    if not men or not women:
        return None
    return compare_groups(men, women, names=("men", "women"))


def _learning_curves(run_dir: Path, cohort: str, chosen: str, folds: int) -> dict[str, dict[str, list[float]]]:
    import csv

    curves = {}
    for k in range(folds):
        log = run_dir / "units" / cohort / chosen / f"fold{k}" / "train" / "log.csv"
        if not log.is_file():
            continue
        c: dict[str, list[float]] = {"step": [], "loss": [], "val_step": [], "val_dice": []}
        with log.open(newline="", encoding="utf-8") as fh:
            for r in csv.DictReader(fh):
                c["step"].append(float(r["step"]))
                c["loss"].append(float(r["loss"]))
                if r.get("val_dice"):
                    c["val_step"].append(float(r["step"]))
                    c["val_dice"].append(float(r["val_dice"]))
        curves[f"fold {k}"] = c
    return curves


def _overlays(run_dir: Path, data_dir: Path, cohort: str, rows: list[dict], folder: Path) -> list[tuple[str, Path]]:
    """Contour overlays of the best, median and worst hold-out case (mean Dice over its sides)."""
    from femurseg.inference.landmarks import femoral_head_centers
    from femurseg.io import read_image
    from femurseg.training.data import find_cases, load_case
    from femurseg.viz.overlay import save_overlay

    by_case: dict[str, list[float]] = {}
    for r in rows:
        by_case.setdefault(r["case"], []).append(r["dice"])
    ranked = sorted(by_case, key=lambda c: float(np.nanmean(by_case[c])))
    if not ranked:
        return []
    picks = {"worst": ranked[0], "median": ranked[len(ranked) // 2], "best": ranked[-1]}
    records = {r.case_id: r for r in find_cases(data_dir)}
    out = []
    for what, case in picks.items():
        image, truth = load_case(records[case])
        pred = read_image(run_dir / "units" / cohort / "final" / "predictions" / f"{case}.nii.gz")
        heads = femoral_head_centers(truth)
        centre = heads["right"] if heads["right"] is not None else heads["left"]
        dice = float(np.nanmean(by_case[case]))
        path = save_overlay(image, pred, folder / f"overlay_{what}.png", center_xyz=centre, reference=truth,
                            reference_name="true (dashed)", crop_mm=((90.0, 60.0), (70.0, 70.0), (110.0, 110.0))
                            if centre is not None else None,
                            title=f"{what} hold-out case {case}: Dice {dice:.4f} (predicted: colour; true: dashed)")
        out.append((f"{what.capitalize()} hold-out case {case} (mean Dice {dice:.4f})", path))
    return out


def _cost(run_dir: Path, settings: ProtocolSettings) -> dict[str, Any]:
    """Measured speeds of this run's units, and what the paper profile (397 subjects) would take at them."""
    done = [json.loads(p.read_text(encoding="utf-8")) for p in sorted((run_dir / "units").glob("**/done.json"))]
    train_s = sum(d["train_seconds"] for d in done)
    steps = sum(d["steps"] for d in done)
    cases = sum(d["eval_cases"] for d in done)
    seg_s = sum(d["segment_seconds"] for d in done)
    model = next((run_dir / "units").glob("*/final/train/model/model.json"), None)
    device = json.loads(model.read_text(encoding="utf-8"))["training"]["device"] if model else "?"
    per_step = train_s / max(1, steps)
    per_case = seg_s / max(1, cases)
    paper = estimate_hours(PROFILES["paper"], 397, seconds_per_step=per_step, seconds_per_case=per_case,
                           sex_fraction=216 / 397)
    return {"units": len(done), "train_seconds": train_s, "steps": steps, "seconds_per_step": per_step,
            "segment_seconds": seg_s, "cases": cases, "seconds_per_case": per_case, "device": device,
            "paper_estimate": paper}


def _tables(settings: ProtocolSettings, selection: dict, data: dict, sexes: dict | None,
            cost: dict[str, Any]) -> list[dict[str, Any]]:
    """Tables as {"title", "head", "rows", "note"}, rendered to Markdown and HTML alike."""
    head = ["Cohort", "Cases", *(_HEADS[m] for m in _METRICS), "Volume R² (p)", "Bland–Altman bias [LoA] mL"]
    rows = []
    for cohort, d in data.items():
        v = d.get("volume")
        vol = f"{_fmt(v['r2'])} (p = {v['p_value']:.1e})" if v else "–"
        ba = f"{v['bias_ml']:+.1f} [{v['loa_low_ml']:+.1f}, {v['loa_high_ml']:+.1f}]" if v else "–"
        rows.append([f"{cohort} (hold-out)", str(d["n_holdout_cases"]), *(_cell(d["holdout"][m], m) for m in _METRICS),
                     vol, ba])
    rows.append(["Zhao et al. 2020, entire cohort (hold-out: 10 % of 397 subjects)", "~40", f"{PAPER['dice']}",
                 f"{PAPER['sensitivity']}", f"{PAPER['specificity']}", "–", "–", "–",
                 f"{PAPER['volume_r2']} (p < 0.001)", "–"])
    tables = [{"title": "Hold-out: femurs of the held-out subjects, by the model retrained on the 90 % (per side; "
                        "mean ± SD [bootstrap 95 % CI])", "head": head, "rows": rows,
               "note": "Specificity over the whole scan is ~1 for any mask (the background dwarfs the femur); the "
                       "specificity within the true femur's box grown by 10 mm is the informative one."}]
    cv_head = ["Cohort", "Grid point", "Mean validation Dice", "Fold Dice SD", "Fold Dice min–max",
               "Best steps per fold", "Selected"]
    cv_rows = []
    for cohort, sel in selection.items():
        for g in sel["grid"]:
            f = [x for x in g["fold_dice"] if not math.isnan(x)]
            cv_rows.append([cohort, g["name"], _fmt(g["mean_val_dice"]), _fmt(float(np.std(f, ddof=1)) if len(f) > 1
                            else float("nan")), f"{_fmt(min(f))}–{_fmt(max(f))}" if f else "–",
                            ", ".join(str(s) for s in g["best_steps"]),
                            f"yes, {sel['steps']} steps" if g["name"] == sel["chosen"] else ""])
    tables.append({"title": f"{settings.folds}-fold cross-validation (validation folds, full pipeline)",
                   "head": cv_head, "rows": cv_rows,
                   "note": "Selected: the grid point with the best mean validation Dice; the retrained model's length "
                           "is the folds' median best validation step, rounded up to the validation interval."})
    if sexes:
        tables.append({"title": "Men against women (hold-out Dice of the entire-cohort model)",
                       "head": ["Test", "Men: femurs", "Women: femurs", "Median Dice men", "Median Dice women", "U",
                                "p"],
                       "rows": [[sexes["test"], str(sexes["n_men"]), str(sexes["n_women"]),
                                 _fmt(sexes["median_men"]), _fmt(sexes["median_women"]),
                                 _fmt(sexes.get("u"), 1), _fmt(sexes.get("p_value"), 3)]], "note": ""})
    p = cost["paper_estimate"]
    tables.append({"title": "Cost: this run, and the paper profile at the same speed",
                   "head": ["", "Units", "Training steps", "s per step", "Cases segmented", "s per case", "Hours"],
                   "rows": [[f"this run ({cost['device']})", str(cost["units"]), str(cost["steps"]),
                             _fmt(cost["seconds_per_step"], 2), str(cost["cases"]), _fmt(cost["seconds_per_case"], 1),
                             _fmt((cost["train_seconds"] + cost["segment_seconds"]) / 3600.0, 2)],
                            ["--profile paper, 397 subjects (estimate)", f"{p['units']:.0f}", f"{p['steps']:.0f}",
                             _fmt(cost["seconds_per_step"], 2), f"{p['cases_segmented']:.0f}",
                             _fmt(cost["seconds_per_case"], 1), _fmt(p["total_hours"], 1)]],
                   "note": "Seconds per step include the validations inside training. On a GPU, measure first with "
                           "one unit (--fold 0) and scale; units of different folds can run on different machines "
                           "(--fold K) and be collected with --resume."})
    return tables


def _md_table(t: dict[str, Any]) -> str:
    lines = [f"### {t['title']}", "", "| " + " | ".join(t["head"]) + " |", "|" + "---|" * len(t["head"])]
    lines += ["| " + " | ".join(r) + " |" for r in t["rows"]]
    if t["note"]:
        lines += ["", t["note"]]
    return "\n".join(lines) + "\n"


def write_report(run_dir: str | Path, data_dir: str | Path) -> Path:
    """Write ``RUN_DIR/report/`` from a finished protocol run (every unit done) on the cohort ``data_dir``;
    returns ``index.html``'s path."""
    from femurseg.evaluation.splits import read_splits
    from femurseg.viz.plots import bland_altman_plot, dice_box_plot, learning_curves_plot, volume_regression_plot

    run_dir = Path(run_dir)
    settings = ProtocolSettings.from_json((run_dir / "protocol.json").read_text(encoding="utf-8"))
    selection = json.loads((run_dir / "selection.json").read_text(encoding="utf-8"))
    splits = read_splits(run_dir / "splits.json")
    data_dir = Path(data_dir)
    command_file = run_dir / "command.txt"
    command = command_file.read_text(encoding="utf-8").strip() if command_file.is_file() else "femurseg protocol"
    data = _collect(run_dir, settings, selection)
    sexes = _sex_comparison(data)
    report = run_dir / "report"
    figs = report / "figures"
    figs.mkdir(parents=True, exist_ok=True)
    first = settings.cohorts[0]
    hold = data[first]["holdout_rows"]
    figures: list[tuple[str, Path]] = []
    if len(hold) >= 3:
        t, p = [r["volume_true_ml"] for r in hold], [r["volume_pred_ml"] for r in hold]
        volume_regression_plot(t, p, figs / "volume_regression.png", title=f"Hold-out ({first}): predicted vs true")
        bland_altman_plot(t, p, figs / "bland_altman.png", title=f"Hold-out ({first}): Bland–Altman")
        figures += [("Predicted against true volume (hold-out)", figs / "volume_regression.png"),
                    ("Bland–Altman (hold-out)", figs / "bland_altman.png")]
    groups = {f"{c} CV": [r["dice"] for r in d["cv_rows"]] for c, d in data.items()}
    groups.update({f"{c} hold-out": [r["dice"] for r in d["holdout_rows"]] for c, d in data.items()})
    dice_box_plot(groups, figs / "dice.png", reference=PAPER["dice"], title="Dice per cohort (per femur)")
    figures.append(("Dice per cohort: validation folds and hold-out", figs / "dice.png"))
    curves = _learning_curves(run_dir, first, selection[first]["chosen"], settings.folds)
    if curves:
        learning_curves_plot(curves, figs / "learning_curves.png", title=f"Learning curves per fold ({first})")
        figures.append(("Learning curves per fold", figs / "learning_curves.png"))
    overlays = _overlays(run_dir, data_dir, first, hold, figs)
    cost = _cost(run_dir, settings)
    tables = _tables(settings, selection, data, sexes, cost)
    n = len(splits["holdout"]) + len(splits["cohorts"][first]["train"])
    intro = (f"Protocol (profile {settings.profile}): {n} subjects from {data_dir}; hold-out "
             f"{len(splits['holdout'])} subjects ({settings.test_fraction:.0%}, stratified by sex and side count, "
             f"seed {settings.seed}); {settings.folds}-fold cross-validation on the rest; cohorts "
             f"{', '.join(settings.cohorts)}; grid {json.dumps(settings.grid)}; {settings.steps} steps per fold from "
             f"{settings.init} weights; masks by the full pipeline (locator + fine model"
             f"{'' if settings.extent_mm is None else f', {settings.extent_mm:g} mm extent'}). Command: {command}")
    summary = {"settings": json.loads(settings.to_json()), "paper": PAPER, "sex_comparison": sexes, "cost": cost,
               "cohorts": {c: {k: v for k, v in d.items() if not k.endswith("_rows")} for c, d in data.items()}}
    md = ["# femurseg protocol report", "", intro, ""] + [_md_table(t) for t in tables]
    md += ["## Figures", ""] + [f"![{c}](figures/{p.name})\n\n*{c}*\n" for c, p in figures + overlays]
    body = [f"<p>{html.escape(intro)}</p>"]
    body += [html_table(t["title"], t["head"], t["rows"], note=t["note"], emphasise=lambda r: r[0].startswith("Zhao"))
             for t in tables]
    body.append("<h2>Figures</h2>")
    body += [html_figure(path, caption, wide=path.name.startswith(("overlay", "learning")))
             for caption, path in figures + overlays]
    page = html_page("femurseg protocol report", body)
    with transaction(overwrite=True) as tx:
        tx.stage(report / "report.md").write_text("\n".join(md), encoding="utf-8")
        tx.stage(report / "summary.json").write_text(json.dumps(summary, indent=1, default=float) + "\n",
                                                     encoding="utf-8")
        tx.stage(report / "index.html").write_text(page, encoding="utf-8")
    return report / "index.html"
