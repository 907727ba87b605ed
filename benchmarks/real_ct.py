"""Accuracy, speed and memory of ``femurseg segment`` on real CT scans with reference masks, and the negatives.

Each positive case is a scan with one or more reference masks (1 right femur, 2 left femur).  Scores are taken over
the **proximal femur**: per side, from the top of the reference femoral head down to 110 mm below it (world z,
superior up), the same slab for prediction and reference, so a reference that runs further down the shaft than
the product's documented extent does not count against it.  Per side: Dice, sensitivity, HD95, ASSD [mm], volume
[mL] and volume error [%].

Negative and partial cases are derived from each positive scan (nothing is written into the repository):

- ``above_acetabulum``: the scan cropped 15 mm above the higher femoral head top (abdomen/pelvis, no femur): the
  product must exit 3;
- ``flipped_z``: the voxel array reversed head-to-foot, geometry kept (upside-down anatomy): no femur may be
  accepted;
- ``noise``: a pure-noise volume with the scan's geometry: exit 3;
- ``one_hip_right`` / ``one_hip_left``: the scan cut at the midline between the two heads: that hip only;
- ``ends_at_heads``: the scan cropped 10 mm below the lower head centre (an abdominal CT that ends in the femoral
  heads): both head caps expected, with a QC ``check`` (cut by the field of view).

``--negatives N`` adds N synthetic scans of each kind without a femur (:mod:`femurseg.phantom.negatives`: abdomen
with both arms beside the body, lower legs, chest with both arms): exit 3 expected.  A last table lists the quality-control values of
every side the fine model segmented, accepted or rejected, so true femurs and false detections are seen side by
side.

Every run is its own subprocess (time and peak RSS, VmHWM, are its own).  Usage::

    python benchmarks/real_ct.py --case ../shared/data/real/pelvicref_005/ct.nii.gz \\
        ../shared/data/real/pelvicref_005/femur_expert.nii.gz ../shared/data/real/pelvicref_005/femur_rt_contours.nii.gz \\
        [--model BUNDLE --locator BUNDLE] [--no-derived] [--negatives 2] [--out benchmarks/results/real_ct.json]

The first reference of a case is the primary one (its head top sets the slab and the derived cases).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: Scored extent below the top of the reference femoral head [mm].
EXTENT_MM = 110.0
#: Crop of the ``above_acetabulum`` negative above the higher head top [mm] (joint space and acetabular roof).
ABOVE_HEAD_MM = 15.0


def _peak_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


# ---------------------------------------------------------------------------------------------------- child run
def child(args: argparse.Namespace) -> dict:
    """Segment one scan in this process; report exit status, time, peak RSS and the summary."""
    import SimpleITK as sitk

    from femurseg.errors import FemursegError
    from femurseg.inference.segmenter import Segmenter

    t0 = time.perf_counter()
    seg = Segmenter(model=args.model, locator=args.locator, device="cpu")
    load_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    try:
        result = seg.segment(args.scan)
    except FemursegError as err:
        return {"exit": err.exit_code, "message": str(err), "total_s": time.perf_counter() - t0, "load_s": load_s,
                "peak_rss_mb": _peak_rss_mb(),
                "sides": {s: {"present": False, "qc": q} for s, q in (getattr(err, "qc", None) or {}).items()}}
    total = time.perf_counter() - t0
    sitk.WriteImage(result.mask, args.mask, True)
    sides = {s: {k: v for k, v in f.items() if k in ("present", "volume_ml", "confidence", "qc")}
             for s, f in result.summary["sides"].items()}
    return {"exit": 0, "total_s": total, "load_s": load_s, "peak_rss_mb": _peak_rss_mb(), "sides": sides,
            "timings_s": result.summary["timings_s"], "mask": args.mask}


def _run_child(scan: Path, mask: Path, args: argparse.Namespace) -> dict:
    argv = [sys.executable, __file__, "--child", "--scan", str(scan), "--mask", str(mask)]
    for name in ("model", "locator"):
        if getattr(args, name):
            argv += [f"--{name}", getattr(args, name)]
    out = subprocess.run(argv, capture_output=True, text=True)
    if out.returncode != 0:
        tail = out.stderr.strip().splitlines()
        return {"exit": "crash", "message": tail[-1] if tail else f"exit {out.returncode}"}
    return json.loads(out.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------------------------------------------- scoring
def _lps(image):
    import SimpleITK as sitk

    return sitk.DICOMOrient(image, "LPS")


def head_top_z(reference, value: int) -> float | None:
    """World z [mm] of the highest voxel of label ``value`` (the femoral head top), or None."""
    import numpy as np
    import SimpleITK as sitk

    ref = _lps(reference)
    arr = sitk.GetArrayViewFromImage(ref) == value
    zs = np.flatnonzero(arr.any(axis=(1, 2)))
    if zs.size == 0:
        return None
    return float(ref.TransformIndexToPhysicalPoint((0, 0, int(zs[-1])))[2])


def score(pred_path: Path, reference_path: Path, slab_top: dict[str, float | None]) -> dict:
    """Per side metrics over [top − 110 mm, top] of the primary reference's head."""
    import numpy as np
    import SimpleITK as sitk

    from femurseg.evaluation.metrics import compare_masks

    pred = _lps(sitk.ReadImage(str(pred_path)))
    ref = _lps(sitk.ReadImage(str(reference_path)))
    p, r = sitk.GetArrayViewFromImage(pred), sitk.GetArrayViewFromImage(ref)
    spacing_zyx = pred.GetSpacing()[::-1]
    z_world = np.array([pred.TransformIndexToPhysicalPoint((0, 0, k))[2] for k in range(pred.GetSize()[2])])
    out = {}
    for side, value in (("right", 1), ("left", 2)):
        top = slab_top.get(side)
        if top is None:
            continue
        keep = (z_world <= top + 0.5 * spacing_zyx[0]) & (z_world >= top - EXTENT_MM)
        pm, rm = (p[keep] == value), (r[keep] == value)
        if not rm.any():
            continue  # this reference lacks the side
        m = compare_masks(pm, rm, spacing_zyx)
        m["volume_error_pct"] = 100.0 * (m["volume_pred_ml"] - m["volume_true_ml"]) / m["volume_true_ml"]
        out[side] = m
    return out


# ---------------------------------------------------------------------------------------------------- derived cases
def derived_cases(scan_path: Path, reference_path: Path, folder: Path) -> dict[str, tuple[Path, dict]]:
    """The negatives and one-hip crops of one positive scan: name -> (path, what is expected)."""
    import numpy as np
    import SimpleITK as sitk

    scan = _lps(sitk.ReadImage(str(scan_path)))
    ref = _lps(sitk.ReadImage(str(reference_path)))
    arr = sitk.GetArrayViewFromImage(ref)
    out: dict[str, tuple[Path, dict]] = {}
    tops = [t for t in (head_top_z(ref, 1), head_top_z(ref, 2)) if t is not None]
    if not tops:
        return out
    z_world = np.array([scan.TransformIndexToPhysicalPoint((0, 0, k))[2] for k in range(scan.GetSize()[2])])
    above = np.flatnonzero(z_world >= max(tops) + ABOVE_HEAD_MM)
    if above.size >= 10:
        crop = scan[:, :, int(above[0]):]
        out["above_acetabulum"] = (folder / "above_acetabulum.nii.gz", {"exit": 3})
        sitk.WriteImage(crop, str(out["above_acetabulum"][0]), True)
    flipped = sitk.GetImageFromArray(sitk.GetArrayFromImage(scan)[::-1].copy())
    flipped.CopyInformation(scan)
    out["flipped_z"] = (folder / "flipped_z.nii.gz", {"exit": 3})
    sitk.WriteImage(flipped, str(out["flipped_z"][0]), True)
    rng = np.random.default_rng(0)
    noise = sitk.GetImageFromArray(rng.normal(0.0, 300.0, sitk.GetArrayViewFromImage(scan).shape).astype(np.int16))
    noise.CopyInformation(scan)
    out["noise"] = (folder / "noise.nii.gz", {"exit": 3})
    sitk.WriteImage(noise, str(out["noise"][0]), True)
    from femurseg.inference.landmarks import femoral_head_centers

    centres = [c for c in femoral_head_centers(ref).values() if c is not None]
    if len(centres) == 2:
        low = np.flatnonzero(z_world >= min(c[2] for c in centres) - 10.0)
        out["ends_at_heads"] = (folder / "ends_at_heads.nii.gz", {"exit": 0, "sides": ["right", "left"]})
        sitk.WriteImage(scan[:, :, int(low[0]):], str(out["ends_at_heads"][0]), True)
    # Midline between the heads' x centroids (LPS: x grows to the patient's left).
    xs = [np.flatnonzero((arr == v).any(axis=(0, 1))) for v in (1, 2)]
    if all(x.size for x in xs):
        mid = int(round((xs[0].mean() + xs[1].mean()) / 2))
        for side, part in (("right", scan[:mid]), ("left", scan[mid:])):
            out[f"one_hip_{side}"] = (folder / f"one_hip_{side}.nii.gz", {"exit": 0, "sides": [side]})
            sitk.WriteImage(part, str(out[f"one_hip_{side}"][0]), True)
    return out


def synthetic_negatives(n: int, folder: Path, args: argparse.Namespace) -> dict:
    """Segment ``n`` synthetic femur-free scans of each kind; exit 3 is expected of each."""
    from femurseg.io import write_image
    from femurseg.phantom.negatives import NEGATIVE_KINDS, negative_case

    out = {}
    for kind in NEGATIVE_KINDS:
        for seed in range(n):
            path = folder / f"negative_{kind}_{seed}.nii.gz"
            write_image(negative_case(kind, seed).scan, path)
            r = _run_child(path, folder / f"negative_{kind}_{seed}_mask.nii.gz", args)
            out[f"{kind}_{seed}"] = {"expect": {"exit": 3}, "run": r, "verdict": _verdict(r, {"exit": 3})}
    return out


def _verdict(result: dict, expect: dict) -> str:
    if result.get("exit") != expect["exit"]:
        return "FAIL"
    if "sides" in expect:
        found = sorted(s for s, f in result.get("sides", {}).items() if f.get("present"))
        return "ok" if found == sorted(expect["sides"]) else "FAIL"
    return "ok"


# ---------------------------------------------------------------------------------------------------- main
def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--case", nargs="+", action="append", metavar="PATH",
                        help="SCAN REFERENCE [REFERENCE ...]; repeat for more cases")
    parser.add_argument("--model", help="fine model bundle (default: bundled)")
    parser.add_argument("--locator", help="locator bundle (default: bundled)")
    parser.add_argument("--no-derived", action="store_true", help="skip the negative and one-hip cases")
    parser.add_argument("--negatives", type=int, default=0, metavar="N",
                        help="also N synthetic scans without a femur of each kind (abdomen with arms, lower legs, chest "
                        "with arms)")
    parser.add_argument("--out", help="write the results as JSON here")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--scan", help=argparse.SUPPRESS)
    parser.add_argument("--mask", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args)))
        return 0
    if (not args.case and not args.negatives) or any(len(c) < 2 for c in args.case or []):
        parser.error("give at least one --case SCAN REFERENCE (or --negatives N)")
    results: dict = {"cases": {}, "load_avg_before": os.getloadavg()[0]}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for scan, *refs in args.case or []:
            name = Path(scan).parent.name if Path(scan).name.startswith("ct.") else Path(scan).name.split(".")[0]
            import SimpleITK as sitk

            primary = sitk.ReadImage(refs[0])
            tops = {s: head_top_z(primary, v) for s, v in (("right", 1), ("left", 2))}
            run = _run_child(Path(scan), tmp / f"{name}_mask.nii.gz", args)
            entry = {"run": run, "scores": {}}
            if run.get("exit") == 0:
                for ref in refs:
                    entry["scores"][Path(ref).name.split(".")[0]] = score(Path(run["mask"]), Path(ref), tops)
            if not args.no_derived:
                entry["derived"] = {}
                for dname, (path, expect) in derived_cases(Path(scan), Path(refs[0]), tmp).items():
                    r = _run_child(path, tmp / f"{name}_{dname}_mask.nii.gz", args)
                    entry["derived"][dname] = {"expect": expect, "run": r, "verdict": _verdict(r, expect)}
            results["cases"][name] = entry
        if args.negatives:
            results["negatives"] = synthetic_negatives(args.negatives, tmp, args)
    results["load_avg_after"] = os.getloadavg()[0]
    _print(results)
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=1, default=float))
    return 0


def _derived_table(title: str, cases: dict) -> None:
    print(f"\n| {title} | expected | exit | sides found (volume mL, QC) | time s | verdict |")
    print("|---|---|---|---|---|---|")
    for dname, d in cases.items():
        r = d["run"]
        found = ", ".join(f"{s} {f.get('volume_ml', 0):.1f} {f.get('qc', {}).get('verdict', '')}"
                          for s, f in r.get("sides", {}).items() if f.get("present")) or r.get("message", "")[:90]
        print(f"| {dname} | exit {d['expect']['exit']} {d['expect'].get('sides', '')} | {r.get('exit')} | "
              f"{found} | {r.get('total_s', float('nan')):.1f} | {d['verdict']} |")


def _qc_rows(results: dict):
    """(case, side, qc) of every side the fine model segmented, from each run's summary or its rejection."""
    runs = []
    for name, entry in results["cases"].items():
        runs.append((name, entry["run"]))
        runs += [(f"{name}/{d}", v["run"]) for d, v in (entry.get("derived") or {}).items()]
    runs += [(f"negative/{d}", v["run"]) for d, v in (results.get("negatives") or {}).items()]
    for name, run in runs:
        for side, f in (run.get("sides") or {}).items():
            if f.get("qc"):
                yield name, side, f["qc"]


def _print(results: dict) -> None:
    for name, entry in results["cases"].items():
        run = entry["run"]
        print(f"\n## {name}: exit {run.get('exit')}, {run.get('total_s', float('nan')):.1f} s, "
              f"peak RSS {run.get('peak_rss_mb', float('nan')):.0f} MB {run.get('message', '')}")
        print("| reference | side | Dice | sens | HD95 mm | ASSD mm | vol pred mL | vol ref mL | vol err % |")
        print("|---|---|---|---|---|---|---|---|---|")
        for ref, sides in entry["scores"].items():
            for side, m in sides.items():
                print(f"| {ref} | {side} | {m['dice']:.4f} | {m['sensitivity']:.4f} | {m['hd95']:.2f} | "
                      f"{m['assd']:.2f} | {m['volume_pred_ml']:.1f} | {m['volume_true_ml']:.1f} | "
                      f"{m['volume_error_pct']:+.1f} |")
        if entry.get("derived"):
            _derived_table("derived case", entry["derived"])
    if results.get("negatives"):
        _derived_table("synthetic negative", results["negatives"])
    print("\n| QC of | side | verdict | head r mm | head resid mm | neck offset mm | midline mm | other head mm | "
          "shape side | vol mL | conf | cut | reasons |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for name, side, q in _qc_rows(results):
        def f(v, fmt="{:.1f}"):
            return "–" if v is None else fmt.format(v)
        print(f"| {name} | {side} | {q['verdict']} | {f(q.get('head_radius_mm'))} | {f(q.get('head_residual_mm'), '{:.2f}')} | "
              f"{f(q.get('neck_offset_mm'))} | {f(q.get('midline_offset_mm'))} | {f(q.get('other_head_mm'))} | "
              f"{q.get('shape_side') or '–'} | "
              f"{q['volume_ml']:.1f} | {q['confidence']:.2f} | {'yes' if q.get('touches_border') else 'no'} | {'; '.join(q['reasons'])[:80]} |")


if __name__ == "__main__":
    sys.exit(main())
