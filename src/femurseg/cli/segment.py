"""``femurseg segment``: both femur masks of one scan, or of many (a folder of scans, a CSV list)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path



def _scan_endings() -> tuple[str, ...]:
    """Endings of scan files collected from a folder of scans: the one list of what femurseg reads."""
    from femurseg.io.read import FILE_FORMATS  # lazily: `femurseg --help` must not load SimpleITK

    return tuple(FILE_FORMATS)


def _mask_endings() -> tuple[str, ...]:
    """Endings femurseg writes masks in: the one list of the writer."""
    from femurseg.io.write import WRITE_FORMATS

    return WRITE_FORMATS


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "segment",
        help="segment both proximal femurs (1 right, 2 left) of hip CT scans",
        description=(
            "Segment both proximal femurs of hip CT scans.  One INPUT (a NIfTI/NRRD/MetaImage file or a DICOM "
            "series folder): OUTPUT is the mask file (.nii.gz, .nii, .nrrd, .mha, .mhd, or .dcm for a DICOM SEG of "
            "a DICOM input).  Several INPUTs, a folder of scan files, or a CSV list (column 'path', optional "
            "'case_id'): OUTPUT is a folder that receives <case>.nii.gz masks and summary.json / summary.csv.  "
            "Labels: 0 background, 1 right femur, 2 left femur (patient's sides).  Exit codes: 0 done, 2 bad "
            "input, 3 no femur found."
        ),
    )
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="scan file, DICOM folder, folder of scans, or CSV list")
    p.add_argument("-o", "--output", required=True, metavar="OUTPUT", help="mask file (one input) or folder (many)")
    p.add_argument("--model", metavar="BUNDLE", help="fine femur model bundle folder (default: the bundled model)")
    p.add_argument("--locator", metavar="BUNDLE", help="locator model bundle folder (default: the bundled locator)")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"), help="where to run (default: auto)")
    p.add_argument("--extent", default=None, metavar="MM|full",
                   help="distal limit of the mask below the top of the femoral head [mm] (default 120), or 'full' "
                   "for the whole femur in view")
    p.add_argument("--fast", action="store_true",
                   help="no window overlap where an ROI needs several windows (faster on long or wide ROIs; the "
                   "same when one window holds the ROI, as for a hip scan at the default extent)")
    p.add_argument("--tta", action="store_true",
                   help="mirror-flip test-time augmentation over the mirror axes the model was trained with")
    p.add_argument("--probabilities", action="store_true",
                   help="also write the femur probability map (<output>_probabilities.<ext>)")
    p.add_argument("--summary", metavar="FILE.json", help="write the summary (volumes, confidence, timings) here")
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    p.add_argument("--series-uid", metavar="UID", help="for a DICOM folder with several series: the one to read")
    p.add_argument("--skip-existing", action="store_true",
                   help="batch: skip scans whose mask is already in OUTPUT (resume an interrupted batch)")
    p.add_argument("--dicom-seg", action="store_true", help="batch: write <case>.dcm DICOM SEG for DICOM inputs")
    p.add_argument("--qc-pictures", action="store_true",
                   help="batch: also write <case>_qc.png, slices through a femoral head with the mask")
    p.set_defaults(func=run)


def _ending(name: str, endings: tuple[str, ...]) -> str | None:
    low = name.lower()
    return next((e for e in endings if low.endswith(e) and len(low) > len(e)), None)


def _case_name(path: Path) -> str:
    ending = _ending(path.name, _scan_endings())
    return path.name[: -len(ending)] if ending else path.name


def _scan_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and _ending(p.name, _scan_endings()) and
                  not p.name.lower().endswith((".raw", ".zraw")))


def _series_subfolders(folder: Path) -> list[Path]:
    """Subfolders that each hold DICOM files, when ``folder`` itself holds none (a folder of patients or series)."""
    from femurseg.io.dicom import is_dicom_file

    def first_dicom(d: Path) -> bool:
        for f in sorted(d.rglob("*"))[:50]:
            if f.is_file() and is_dicom_file(f):
                return True
        return False

    if any(f.is_file() and is_dicom_file(f) for f in sorted(folder.iterdir())[:50]):
        return []
    return [d for d in sorted(folder.iterdir()) if d.is_dir() and not d.name.startswith(".") and first_dicom(d)]


def _cases(inputs: list[str]) -> tuple[list[tuple[str, Path]], bool]:
    """(case name, path) of every scan, and whether the run is a batch (output is a folder)."""
    from femurseg.errors import InputError

    paths = [Path(p) for p in inputs]
    for p in paths:
        if not p.exists():
            raise InputError(f"{p}: no such file or folder")
    if len(paths) == 1:
        p = paths[0]
        if p.is_file() and p.suffix.lower() == ".csv":
            from femurseg.io.case_list import read_case_list

            cases = [(r.case_id or _case_name(r.paths["path"]), r.paths["path"]) for r in read_case_list(p)]
            return _unique(cases), True
        if p.is_dir():
            files = _scan_files(p)
            if files:
                from femurseg.io.dicom import is_dicom_file

                if any(is_dicom_file(f) for f in sorted(p.iterdir())[:200] if f.is_file() and f not in files):
                    raise InputError(f"{p} holds DICOM files and image files ({files[0].name}, ...); give the DICOM "
                                     "series or the image files, each from a folder of its own")
                return _unique([(_case_name(f), f) for f in files]), True
            series_dirs = _series_subfolders(p)
            if len(series_dirs) >= 2:  # a folder of patients / series, one per subfolder: a batch
                return _unique([(d.name, d) for d in series_dirs]), True
        return [(_case_name(p), p)], False
    return _unique([(_case_name(p), p) for p in paths]), True


def _unique(cases: list[tuple[str, Path]]) -> list[tuple[str, Path]]:
    from femurseg.errors import InputError

    seen: set[str] = set()
    for name, path in cases:
        if name in seen:
            raise InputError(f"two inputs are named {name!r}; give the CSV a 'case_id' column to tell them apart")
        seen.add(name)
    if not cases:
        raise InputError("no scans to segment")
    return cases


def _probability_path(mask_path: Path) -> Path:
    ending = _ending(mask_path.name, _mask_endings())
    if ending is None:  # a DICOM SEG output: probabilities go to NIfTI beside it
        return mask_path.with_name(mask_path.stem + "_probabilities.nii.gz")
    return mask_path.with_name(mask_path.name[: -len(ending)] + "_probabilities" + ending)


def _same(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve() or (a.exists() and b.exists() and a.samefile(b))
    except OSError:
        return False


def _refuse_outputs_on_inputs(cases: list[tuple[str, Path]], output: Path, batch: bool, probabilities: bool,
                              summary: Path | None) -> None:
    """No output may be an input (or lie inside an input DICOM folder), with or without --overwrite."""
    from femurseg.errors import InputError

    if batch:
        planned = [output / f"{name}.nii.gz" for name, _ in cases] + [output / "summary.csv", output / "summary.json"]
        if probabilities:
            planned += [output / f"{name}_probabilities.nii.gz" for name, _ in cases]
    else:
        planned = [output] + ([_probability_path(output)] if probabilities else [])
    planned += [summary] if summary is not None else []
    if batch and any(_same(output, source.parent) for _, source in cases if source.is_file()):
        raise InputError(f"{output} holds input scans; write the masks to another folder (they would be read as "
                         "scans by the next run)")
    for target in planned:
        for _, source in cases:
            inside = source.is_dir() and target.resolve().parent == source.resolve()
            if _same(target, source) or inside:
                raise InputError(f"{target} would {'be written into the input folder' if inside else 'overwrite the input'}"
                                 f" {source}; choose another output")


def _check_single_output(output: Path, source: Path, overwrite: bool, probabilities: bool, summary: Path | None) -> None:
    from femurseg.errors import InputError

    if output.suffix.lower() == ".dcm":
        if not source.is_dir():
            raise InputError(f"{output}: a DICOM SEG output (.dcm) needs a DICOM series folder as input, not {source}")
    elif _ending(output.name, _mask_endings()) is None:
        raise InputError(f"{output}: unknown output type; end the name with one of {', '.join(_mask_endings())} or .dcm")
    if not output.parent.is_dir():
        raise InputError(f"{output}: the folder {output.parent} does not exist")
    targets = [output] + ([_probability_path(output)] if probabilities else []) + ([summary] if summary else [])
    for t in targets:
        if t.exists() and not overwrite:
            raise InputError(f"{t} exists; pass --overwrite to replace it")
        if t.is_dir():
            raise InputError(f"{t} is a folder; give a file name")


def _describe(summary: dict) -> str:
    parts = []
    for side in ("right", "left"):
        facts = summary["sides"][side]
        qc = facts.get("qc") or {}
        if facts["present"]:
            check = f"; QC check: {', '.join(qc['reasons'])}" if qc.get("verdict") == "check" else ""
            parts.append(f"{side} femur {facts['volume_ml']:.1f} mL (confidence {facts['confidence']:.2f}{check})")
        elif qc.get("verdict") == "reject":
            parts.append(f"no {side} femur (rejected by QC: {', '.join(qc['reasons'])})")
        else:
            parts.append(f"no {side} femur")
    return ", ".join(parts)


def run(args: argparse.Namespace) -> int:
    import json

    from femurseg.errors import InputError
    from femurseg.atomic import transaction

    cases, batch = _cases(args.inputs)
    output = Path(args.output)
    summary_path = Path(args.summary) if args.summary else None
    if summary_path is not None and summary_path.suffix.lower() != ".json":
        raise InputError(f"--summary {summary_path}: give a .json file name")
    if summary_path is not None and not summary_path.parent.is_dir():
        raise InputError(f"--summary {summary_path}: the folder {summary_path.parent} does not exist")
    if batch:
        if output.exists() and not output.is_dir():
            raise InputError(f"{output} is a file; with several inputs OUTPUT must be a folder")
        if not output.exists() and (_ending(output.name, _mask_endings()) or output.suffix.lower() == ".dcm"):
            raise InputError(f"{len(cases)} scans ({', '.join(n for n, _ in cases[:3])}{', ...' if len(cases) > 3 else ''})"
                             f" need an output folder, not the file name {output.name}; give one scan, or a folder")
        if output.is_dir() and any(output.iterdir()) and not (args.overwrite or args.skip_existing):
            raise InputError(f"{output} exists and is not empty; pass --overwrite to write into it, or "
                             "--skip-existing to resume a batch")
        if not output.parent.is_dir():
            raise InputError(f"{output}: the folder {output.parent} does not exist")
        if summary_path is not None and summary_path.exists() and not (args.overwrite or args.skip_existing):
            raise InputError(f"{summary_path} exists; pass --overwrite to replace it")
    else:
        _check_single_output(output, cases[0][1], args.overwrite, args.probabilities, summary_path)

    _refuse_outputs_on_inputs(cases, output, batch, args.probabilities, summary_path)

    from femurseg.inference import Segmenter
    from femurseg.io import write_image

    segmenter = Segmenter(model=args.model, locator=args.locator, device=args.device, fast=args.fast, tta=args.tta,
                          extent_mm=_extent(args.extent))

    if not batch:
        name, source = cases[0]
        with transaction(overwrite=args.overwrite) as tx:
            # Staging first: an unwritable folder or a missing DICOM SEG writer fails before the work.
            dicom = output.suffix.lower() == ".dcm"
            if dicom:
                from femurseg.io.dicom_seg import require_highdicom

                require_highdicom()
            tx.stage(output)
            summary_staged = tx.stage(summary_path) if summary_path is not None else None
            result = segmenter.segment(source, probabilities=args.probabilities, series_uid=args.series_uid)
            if dicom:
                from femurseg.io.dicom_seg import write_dicom_seg

                write_dicom_seg(result.mask, source, output, series_uid=args.series_uid, tx=tx)
            else:
                write_image(result.mask, output, tx=tx)
            written = [output]
            if result.probabilities is not None:
                written.append(write_image(result.probabilities, _probability_path(output), tx=tx))
            result.summary["outputs"] = {"mask": str(output),
                                         **({"probabilities": str(written[1])} if len(written) > 1 else {})}
            if summary_staged is not None:
                summary_staged.write_text(json.dumps(result.summary, indent=2) + "\n", encoding="utf-8")
                written.append(summary_path)
        print(f"{source}: {_describe(result.summary)} [{result.summary['timings_s']['total']:.1f} s]")
        print("wrote " + ", ".join(str(w) for w in written))
        return 0

    from femurseg.inference.batch import segment_many

    def progress(done: int, total: int, case) -> None:  # noqa: ANN001 (BatchCase)
        if case.status == "ok":
            line = f"[{done}/{total}] {case.name}: {_describe(case.summary)}"
        elif case.status == "skipped":
            line = f"[{done}/{total}] {case.name}: skipped (its mask exists)"
        else:
            line = f"[{done}/{total}] femurseg: error: {case.source}: {case.summary['error']}"
        print(line, file=sys.stderr, flush=True)

    results = segment_many(cases, output, segmenter=segmenter, probabilities=args.probabilities,
                           overwrite=args.overwrite, skip_existing=args.skip_existing, series_uid=args.series_uid,
                           dicom_seg=args.dicom_seg, qc_pictures=args.qc_pictures, progress=progress)
    rows = [_row(c) for c in results]
    with transaction(overwrite=True) as tx:  # the batch's own tables: rewritten on each run into the folder
        (tx.stage(summary_path or output / "summary.json")
         .write_text(json.dumps({"cases": [c.summary for c in results]}, indent=2) + "\n", encoding="utf-8"))
        _write_csv(rows, tx.stage(output / "summary.csv"))
    ok = sum(c.status in ("ok", "skipped") for c in results)
    print(f"segmented {ok} of {len(results)} scans; masks and summary.csv in {output}"
          + (f", summary in {summary_path}" if summary_path else ""))
    return max([c.exit_code for c in results] + [0])


def _row(case) -> dict:  # noqa: ANN001 (BatchCase)
    """One line of summary.csv."""
    row = {"case": case.name, "path": str(case.source), "status": case.status}
    if case.status != "ok":
        return row
    sides = case.summary["sides"]
    for s in ("right", "left"):
        present = sides[s]["present"]
        row[f"{s}_volume_ml"] = round(sides[s]["volume_ml"], 3) if present else ""
        row[f"{s}_confidence"] = round(sides[s]["confidence"], 4) if present else ""
        row[f"{s}_qc"] = (sides[s].get("qc") or {}).get("verdict", "")
    row["seconds"] = case.summary["timings_s"]["total"]
    return row


def _write_csv(rows: list[dict], path: Path) -> None:
    """The batch summary table (written to a staged path of a transaction)."""
    import csv

    columns = ["case", "path", "status", "right_volume_ml", "left_volume_ml", "right_confidence", "left_confidence",
               "right_qc", "left_qc", "seconds"]
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns, restval="")
        writer.writeheader()
        writer.writerows(rows)


def _extent(value: str | None) -> float | None:
    """``--extent``: a number of mm, 'full' (None), or the default."""
    from femurseg.errors import InputError
    from femurseg.inference.segmenter import DEFAULT_EXTENT_MM

    if value is None:
        return DEFAULT_EXTENT_MM
    if value.strip().lower() == "full":
        return None
    try:
        mm = float(value)
    except ValueError:
        raise InputError(f"--extent must be a number of mm below the head top or 'full', not {value!r}") from None
    if not 20.0 <= mm <= 1000.0:
        raise InputError(f"--extent must be 20–1000 mm (or 'full'), not {value}")
    return mm
