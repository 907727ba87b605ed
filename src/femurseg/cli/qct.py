"""``femurseg qct``: calibrated bone density, hip regions, CTXA-like aBMD and T-scores, femur geometry."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "qct",
        help="bone density of the femurs in a mask: calibration, vBMD by region, CTXA-like aBMD and T-score",
        description=(
            "Calibrate the scan INPUT (a calibration phantom found in it; without one a phantomless calibration "
            "from air, fat and muscle, flagged), then for each femur of MASK (1 right, 2 left, e.g. from femurseg "
            "segment): head sphere, neck and shaft axes, neck-shaft angle, neck length; volumetric BMD (integral, "
            "trabecular, cortical) of the head, neck, trochanter, intertrochanter and total hip; a DXA-like "
            "projection with femoral-neck and total-hip aBMD and T-scores (an estimate). Writes OUT_DIR/qct.json, "
            "qct.csv, report.png and report.html. INPUT may be a CSV list with columns path, mask (and case_id): every "
            "row is analysed into OUT_DIR/<case>/ and one row per femur goes to OUT_DIR/qct_cohort.csv."
        ),
    )
    p.add_argument("input", metavar="INPUT", help="CT scan (file or DICOM folder), or a CSV list (columns path, mask, optional case_id)")
    p.add_argument("--mask", metavar="MASK", help="femur labels on the scan's grid (required unless INPUT is a CSV)")
    p.add_argument("-o", "--output", required=True, metavar="OUT_DIR", help="folder for the results")
    p.add_argument("--phantom", default="mindways", metavar="NAME|none|FILE.json",
                   help="calibration phantom to find: mindways (default; Mindways Model 3, example certificate), "
                        "qrm, cha, a preset name, a JSON certificate file, or none (phantomless calibration)")
    p.add_argument("--slope", type=float, metavar="HU_PER_MG_CM3", help="use this calibration slope instead")
    p.add_argument("--intercept", type=float, metavar="HU", help="... and this intercept (with --slope)")
    p.add_argument("--material", default="K2HPO4", choices=("K2HPO4", "HA"),
                   help="material of --slope/--intercept densities (default K2HPO4)")
    p.add_argument("--series-uid", metavar="UID", help="for a DICOM folder with several series: the one to read")
    p.add_argument("--overwrite", action="store_true", help="replace existing results")
    p.set_defaults(func=run)


def _calibration(args: argparse.Namespace):  # noqa: ANN202
    from femurseg.errors import InputError
    from femurseg.qct import user_calibration

    if (args.slope is None) != (args.intercept is None):
        raise InputError("--slope and --intercept go together (HU = intercept + slope · density)")
    if args.slope is None:
        return None
    return user_calibration(slope=args.slope, intercept=args.intercept, material=args.material)


def _one(image_path: str, mask_path: str, out_dir: Path, case: str, args: argparse.Namespace):  # noqa: ANN202
    from femurseg.io import read_image
    from femurseg.qct.analysis import analyse_scan
    from femurseg.qct.report import write_qct_outputs

    scan = read_image(image_path, series_uid=args.series_uid)
    mask = read_image(mask_path)
    phantom = None if args.phantom.lower() == "none" else args.phantom
    analysis = analyse_scan(scan, mask, phantom=phantom, calibration=_calibration(args), case=case,
                            mask_name=mask_path)
    paths = write_qct_outputs(analysis, out_dir, overwrite=args.overwrite)
    return analysis, paths


def _summary(analysis) -> str:  # noqa: ANN001
    parts = []
    for side, fem in analysis.femurs.items():
        neck, total = fem.areal.get("neck"), fem.areal.get("total_hip")
        t = "" if neck is None or neck.t_score is None else f", neck T {neck.t_score:+.1f}"
        th = "" if total is None or total.t_score is None else f", total hip T {total.t_score:+.1f}"
        parts.append(f"{side}: neck trabecular {fem.densities['neck'].trabecular_vbmd:.0f}{t}{th}")
    lines = [f"{analysis.case}: {analysis.calibration.method} calibration; " + "; ".join(parts) + f" [{analysis.unit}]"]
    lines += [f"  warning: {w}" for w in analysis.warnings]
    lines += [f"  warning: {side}: {w}" for side, fem in analysis.femurs.items() for w in fem.warnings]
    return "\n".join(lines)


def _cohort_rows(csv_path: Path) -> list[tuple[str, str, str]]:
    """(scan, mask, case) of every row of a QCT list (columns path, mask, optional case_id)."""
    from femurseg.errors import InputError
    from femurseg.io.case_list import read_case_list

    out = [(str(r.paths["path"]), str(r.paths["mask"]), r.case_id or r.paths["path"].name.split(".")[0])
           for r in read_case_list(csv_path, columns=("path", "mask"))]
    cases = [c for _, _, c in out]
    if len(set(cases)) != len(cases):
        raise InputError(f"{csv_path}: case names repeat; give a unique case_id column")
    return out


def _run_cohort(args: argparse.Namespace, out: Path) -> int:
    from femurseg.atomic import write_text
    from femurseg.errors import FemursegError
    from femurseg.qct.report import csv_text

    from femurseg.errors import InputError

    table = out / "qct_cohort.csv"
    if table.exists() and not args.overwrite:  # before any work, as every other output
        raise InputError(f"{table} exists; pass --overwrite to replace it")
    rows, failed = [], 0
    for image, mask, case in _cohort_rows(Path(args.input)):
        try:
            analysis, _ = _one(image, mask, out / case, case, args)
        except FemursegError as err:
            failed += 1
            rows.append({"case": case, "error": str(err)})
            print(f"{case}: error: {err}")
            continue
        rows += analysis.csv_rows()
        print(_summary(analysis))
    write_text(table, csv_text(rows), overwrite=args.overwrite)
    print(f"wrote {table} ({len(rows) - failed} femurs; {failed} case(s) failed)")
    return 2 if failed else 0


def run(args: argparse.Namespace) -> int:
    from femurseg.errors import InputError

    out = Path(args.output)
    if out.exists() and not out.is_dir():
        raise InputError(f"{out} exists and is not a folder")
    is_list = Path(args.input).suffix.lower() == ".csv"
    if not is_list and not args.mask:
        raise InputError("give the femur mask with --mask (or a CSV list with columns path, mask as INPUT)")
    if is_list and args.mask:
        raise InputError("--mask is for one scan; a CSV list names each scan's mask in its mask column")
    _calibration(args)  # refuse a half-given calibration before any work
    if is_list:
        return _run_cohort(args, out)
    case = Path(args.input).name.split(".")[0]
    analysis, paths = _one(args.input, args.mask, out, case, args)
    print(_summary(analysis))
    print(f"wrote {', '.join(str(p) for p in paths.values())}")
    return 0
