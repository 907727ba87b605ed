"""``femurseg evaluate``: Dice, sensitivity, specificity, HD95, ASSD and volumes per femur side.

``femurseg evaluate PRED_DIR --truth TRUTH`` compares predicted label maps (the full pipeline's output) with true
ones; ``femurseg evaluate --model BUNDLE --truth COHORT`` runs a model bundle on each true femur's region of
interest and scores it at the model's resolution (torch is imported only then).
"""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``evaluate`` verb."""
    parser = subparsers.add_parser(
        "evaluate",
        help="compare predicted femur masks with true label maps (per case and side, in mm)",
        description="Compare a folder of predicted label maps (1 right, 2 left femur) with true ones, matched by "
        "file name, or (--model) score a model bundle on a labelled cohort at the model's resolution; prints a "
        "per-side summary and writes per-case metrics.",
    )
    parser.add_argument("pred", metavar="PRED_DIR", nargs="?", default=None, help="folder of predicted label maps")
    parser.add_argument("--model", metavar="BUNDLE", default=None,
                        help="instead of PRED_DIR: run this model bundle on each true femur ROI of the cohort")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda", "mps"), help="device for --model (default cpu)")
    parser.add_argument("--truth", required=True, metavar="TRUTH_DIR", help="folder of true label maps, or a cohort folder")
    parser.add_argument("--by", metavar="COLUMN", default=None,
                        help="also summarise per value of this cohort.csv column, e.g. --by sex (needs TRUTH_DIR to be "
                        "a cohort folder with cohort.csv)")
    parser.add_argument("-o", "--output", metavar="CSV", default=None, help="write per-case metrics to this CSV")
    parser.add_argument("--summary", metavar="JSON", default=None, help="write the cohort summary to this JSON")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing CSV or summary")
    parser.set_defaults(func=run)


def _print_summary(s: dict) -> None:
    print(f"{'side':<6} {'n':>3} {'Dice':>15} {'sensitivity':>15} {'specificity':>15} {'HD95 [mm]':>13} {'ASSD [mm]':>13} {'vol R²':>7} {'swaps':>5}")
    for side in ("right", "left", "all"):
        e = s.get(side)
        if not e:
            continue
        r2 = f"{e['volume']['r2']:.4f}" if "volume" in e else "-"
        print(
            f"{side:<6} {e['n']:>3} {e['dice']['mean']:>8.4f}±{e['dice']['sd']:.4f} {e['sensitivity']['mean']:>8.4f}±{e['sensitivity']['sd']:.4f} "
            f"{e['specificity']['mean']:>8.5f}±{e['specificity']['sd']:.0e} {e['hd95']['mean']:>6.2f}±{e['hd95']['sd']:.2f} "
            f"{e['assd']['mean']:>6.2f}±{e['assd']['sd']:.2f} {r2:>7} {e['swapped']:>5}"
        )


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from femurseg.errors import InputError
    from femurseg.evaluation.compare import evaluate_folders, rows_csv_text, summarise_by
    from femurseg.io.cohort_table import case_column

    if (args.pred is None) == (args.model is None):
        raise InputError("give either PRED_DIR (predicted label maps) or --model BUNDLE, not both or neither")
    import json

    from femurseg.atomic import transaction

    outputs = [Path(p) for p in (args.output, args.summary) if p]
    for out in outputs:  # refuse before any work
        if out.exists() and not args.overwrite:
            raise InputError(f"{out} exists; pass --overwrite to replace it")
        if not out.parent.is_dir():
            raise InputError(f"{out}: the folder {out.parent} does not exist")
    group_of = None
    if args.by is not None:
        table = Path(args.truth) / "cohort.csv"
        if not table.is_file():
            raise InputError(f"--by {args.by} needs TRUTH_DIR to be a cohort folder with cohort.csv; {table} does not exist")
        group_of = case_column(table, args.by)  # read first: a wrong column fails before any work is done
    if args.model is not None:
        from femurseg.training.evaluate import evaluate_bundle

        result = evaluate_bundle(args.model, data_dir=args.truth, device=args.device, progress=True)
    else:
        result = evaluate_folders(pred_dir=args.pred, truth_dir=args.truth)
    s = result.summary
    missing = s.get("missing_predictions", [])
    print(f"cases: {s['n_cases']}" + (f" (no prediction for {len(missing)})" if missing else ""))
    _print_summary(s)
    if group_of is not None:
        s = {**s, "by": {"column": args.by, "groups": summarise_by(result.rows, group_of)}}
        for value, group in s["by"]["groups"].items():
            print(f"\n{args.by} = {value} ({group['n_cases']} cases)")
            _print_summary(group)
    with transaction(overwrite=args.overwrite) as tx:  # the CSV and the summary land together
        if args.output:
            tx.stage(args.output).write_text(rows_csv_text(result.rows), encoding="utf-8")
        if args.summary:
            tx.stage(args.summary).write_text(json.dumps(s, indent=2) + "\n", encoding="utf-8")
    if args.output:
        print(f"per-case metrics: {args.output}")
    if args.summary:
        print(f"summary: {args.summary}")
    return 0
