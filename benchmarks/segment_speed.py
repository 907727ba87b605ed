"""End-to-end speed and memory of ``femurseg segment`` on a full-size hip CT, against two MONAI baselines.

Scan: a 512×512×250 phantom case at 0.74×0.74×1.0 mm (``femurseg.phantom``).  Rows, each run in a fresh
subprocess so that its peak RSS is its own:

- femurseg, normal (trained-size windows, overlap 0.5), ``--fast`` (each ROI in one window), normal with float32
  forwards (the precision check of bf16: Dice of the two masks), and with ``--tta`` the 4-pass mode;
- MONAI ``VNet`` and a MONAI ``DynUNet`` configured like nnU-Net's 3d_fullres (6 stages, 32…320 filters, instance
  norm): the whole scan resampled to 1.5 mm, 128³ windows, overlap 0.5, Gaussian blending, then back onto the
  scan's grid.  On 2 CPU cores their full runs take many minutes, so ``--baseline-windows`` windows are timed and
  the window time is extrapolated to the full count (the table says so); resampling is timed in full;
- per-window forward time of our fine net in each execution variant (float32/bf16 × contiguous/channels_last_3d,
  and torch.compile), which chose the one code path of ``femurseg.models.window``.

With the bundled models (``src/femurseg/resources/model/{locate,femur}``) the real pipeline runs; without them, random
weights of the default configuration are used and the located boxes are replaced by the phantom's true femur boxes
(the locator still runs, for its time), so the fine model works on realistic regions — the table says which.
The CPU may be shared: the load average before and after is recorded.  Usage::

    python benchmarks/segment_speed.py [--quick] [--baseline-windows 2] [--out benchmarks/results/segment_speed.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PEAK_GFLOPS = 420.0  # fp32 matmul peak of the 2-core AMD EPYC (Zen 4) development machine, as measured for vnet_speed


# ------------------------------------------------------------------------------------------------------------ scan
def make_scan(folder: Path, *, quick: bool) -> dict:
    import numpy as np
    import SimpleITK as sitk

    shape_xyz = (256, 256, 125) if quick else (512, 512, 250)
    spacing = (1.48, 1.48, 2.0) if quick else (0.74, 0.74, 1.0)
    from femurseg.phantom.generate import PhantomOptions, generate

    case = generate(7, options=PhantomOptions(spacing_xyz=spacing, matrix=shape_xyz[0],
                                              z_margins_mm=((40.0, 60.0), (80.0, 110.0))))
    scan, labels = case.scan, case.labels
    n = scan.GetSize()[2]
    if n >= shape_xyz[2]:  # keep the top 250 slices: the hips and as much femur as fits
        scan, labels = scan[:, :, n - shape_xyz[2]:], labels[:, :, n - shape_xyz[2]:]
    else:  # extend with air below, keeping the geometry
        pad = [0, 0, shape_xyz[2] - n]
        scan = sitk.ConstantPad(scan, pad, [0, 0, 0], -1000)
        labels = sitk.ConstantPad(labels, pad, [0, 0, 0], 0)
    sitk.WriteImage(scan, str(folder / "scan.mha"))
    sitk.WriteImage(labels, str(folder / "labels.mha"))
    arr = sitk.GetArrayViewFromImage(labels)
    return {"source": "phantom", "size_xyz": list(scan.GetSize()), "spacing_xyz": list(scan.GetSpacing()),
            "true_voxels": {"right": int((arr == 1).sum()), "left": int((arr == 2).sum())}}


def bundles(folder: Path) -> tuple[Path, Path, bool]:
    """(femur, locator, real): the bundled models, or random weights of the default configuration."""
    shipped = ROOT / "src" / "femurseg" / "resources" / "model"
    if (shipped / "femur" / "model.json").is_file() and (shipped / "locate" / "model.json").is_file():
        return shipped / "femur", shipped / "locate", True
    from femurseg.models.bundle import save_bundle
    from femurseg.models.preprocessing import Preprocessing
    from femurseg.models.vnet import VNetConfig, build_vnet

    specs = {
        "femur": (VNetConfig(base_width=8), Preprocessing(task="femur")),
        "locate": (VNetConfig(base_width=8, out_channels=3),
                   Preprocessing(task="locate", target_spacing_zyx=(4.0, 4.0, 4.0), patch_size_zyx=(64, 96, 96),
                                 roi_margin_mm=0.0, mirror_left=False)),
    }
    for kind, (cfg, pre) in specs.items():
        save_bundle(folder / kind, model=build_vnet(cfg, seed=0), config=cfg, preprocessing=pre,
                    labels={"background": 0, "femur": 1}, training={"note": "random weights for timing"},
                    metrics={}, name=f"random-{kind}")
    return folder / "femur", folder / "locate", False


# ---------------------------------------------------------------------------------------------------- child runs
def _peak_rss_mb() -> float:
    """This process's peak resident memory [MB].  VmHWM, not ru_maxrss: Linux carries ru_maxrss over fork and exec,
    so a child would report the parent's peak (here: the phantom generation)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child_femurseg(args) -> dict:
    import numpy as np
    import SimpleITK as sitk
    import torch

    import femurseg.inference.segmenter as seg_mod
    import femurseg.models.window as window_mod
    from femurseg.models.preprocessing import world_box_of_mask
    from femurseg.models.vnet import conv_flops

    if args.fp32:
        window_mod.CPU_AUTOCAST = False
    if not args.real:
        labels = sitk.ReadImage(args.labels)
        real_locate = seg_mod.locate_femurs

        def truth_boxes(image, *a, **k):
            real_locate_boxes = None
            try:
                real_locate_boxes = real_locate(image, *a, **k)  # timed, then replaced
            except Exception:
                pass
            out = {}
            for side, value in (("right", 1), ("left", 2)):
                box = world_box_of_mask(sitk.Equal(labels, value))
                out[side] = None if box is None else seg_mod.FemurBox(side, box[0], box[1], 0.0)
            del real_locate_boxes
            return out

        seg_mod.locate_femurs = truth_boxes
    t0 = time.perf_counter()
    segmenter = seg_mod.Segmenter(model=args.model, locator=args.locator, device="cpu", fast=args.mode == "fast",
                                  tta=args.mode == "tta")
    load_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    result = segmenter.segment(args.scan)
    total_s = time.perf_counter() - t0
    mask_path = Path(args.workdir) / f"mask_{args.mode}{'_fp32' if args.fp32 else ''}.mha"
    sitk.WriteImage(result.mask, str(mask_path))
    timings = result.summary["timings_s"]
    infer_s = sum(timings[s]["infer"] for s in ("right", "left") if s in timings)
    cfg = segmenter.model_bundle.config
    windows, flops = 0, 0
    for side in ("right", "left"):
        facts = result.summary["sides"][side]
        if "windows" in facts:
            windows += facts["windows"]
            flops += conv_flops(cfg, facts["window_zyx"]) * facts["windows"]
    return {
        "load_s": load_s, "total_s": total_s, "timings_s": timings, "windows": windows,
        "gflops": flops / 1e9, "gflop_per_s": flops / 1e9 / infer_s if infer_s else None,
        "volumes_ml": {s: result.summary["sides"][s].get("volume_ml") for s in ("right", "left")},
        "mask": str(mask_path), "threads": torch.get_num_threads(),
        "bf16": window_mod.CPU_AUTOCAST and window_mod.cpu_bf16_supported(),
        "peak_rss_mb": _peak_rss_mb(),
    }


def child_baseline(args) -> dict:
    import numpy as np
    import SimpleITK as sitk
    import torch
    from monai.networks.nets import DynUNet, VNet

    from femurseg.models.window import _autocast, window_starts
    from femurseg.models.preprocessing import normalize_hu, resample_image, scan_grid

    device = torch.device("cpu")
    if args.net == "vnet":
        net = VNet(spatial_dims=3, in_channels=1, out_channels=3)
    else:
        net = DynUNet(spatial_dims=3, in_channels=1, out_channels=3, kernel_size=[[3, 3, 3]] * 6,
                      strides=[[1, 1, 1]] + [[2, 2, 2]] * 5, upsample_kernel_size=[[2, 2, 2]] * 5,
                      filters=[32, 64, 128, 256, 320, 320], norm_name="instance", deep_supervision=False)
    net = net.eval().to(memory_format=torch.channels_last_3d)
    params = sum(p.numel() for p in net.parameters())
    t0 = time.perf_counter()
    image = sitk.ReadImage(args.scan)
    read_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    grid = scan_grid(image, spacing_zyx=(1.5, 1.5, 1.5))
    x = normalize_hu(resample_image(image, grid, fill_hu=-250.0), hu_window=(-250.0, 1750.0))
    resample_s = time.perf_counter() - t0
    patch = (128, 128, 128)
    starts = [(z, y, w) for z in window_starts(max(x.shape[0], 128), 128, 0.5)
              for y in window_starts(max(x.shape[1], 128), 128, 0.5) for w in window_starts(max(x.shape[2], 128), 128, 0.5)]
    xp = np.pad(x, [(0, max(0, 128 - s)) for s in x.shape], constant_values=-1.0)
    src = torch.from_numpy(xp)
    autocast = _autocast(device)
    times = []
    flops = None
    with torch.inference_mode():
        for z, y, w in starts[: args.windows]:
            win = src[z:z + 128, y:y + 128, w:w + 128][None, None].contiguous(memory_format=torch.channels_last_3d)
            t0 = time.perf_counter()
            if autocast is None:
                out = net(win)
            else:
                with autocast:
                    out = net(win)
            torch.softmax(out.float(), 1)
            times.append(time.perf_counter() - t0)
    # Flops of one window from the conv layers' shapes (forward hooks on a 128³ run would cost another window).
    flops = _conv_flops_by_hooks(net, patch)
    # Back onto the scan's grid: argmax labels at 1.5 mm resampled by nearest neighbour (timed on a label map).
    labels = sitk.GetImageFromArray(np.zeros(x.shape, np.uint8))
    labels.SetSpacing(tuple(float(s) for s in grid.spacing_zyx[::-1]))
    labels.SetOrigin(tuple(float(o) for o in grid.origin_xyz))
    t0 = time.perf_counter()
    sitk.Resample(labels, image, sitk.Transform(), sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8)
    paste_s = time.perf_counter() - t0
    per_window = float(np.median(times[1:] if len(times) > 1 else times))  # the first window pays oneDNN set-up
    infer_s = per_window * len(starts) + (times[0] - per_window)
    return {
        "net": args.net, "params": params, "read_s": read_s, "resample_s": resample_s, "paste_s": paste_s,
        "windows_total": len(starts), "windows_timed": len(times), "window_s": per_window,
        "infer_s_extrapolated": infer_s, "total_s": read_s + resample_s + infer_s + paste_s,
        "gflop_per_window": flops / 1e9 if flops else None,
        "gflop_per_s": flops / 1e9 / per_window if flops else None,
        "peak_rss_mb": _peak_rss_mb(),
    }


def _conv_flops_by_hooks(net, patch) -> int:
    """Multiply-adds × 2 of every (transposed) convolution for one window, from a meta-device shape run."""
    import copy

    import torch

    total = 0

    def hook(mod, inp, out):
        nonlocal total
        k = 1
        for s in mod.kernel_size:
            k *= s
        cin = mod.in_channels // mod.groups
        if isinstance(mod, torch.nn.ConvTranspose3d):
            total += 2 * inp[0].numel() // inp[0].shape[0] * mod.out_channels * k // mod.groups
        else:
            total += 2 * out.numel() // out.shape[0] * cin * k

    meta = copy.deepcopy(net).to("meta")
    hooks = [m.register_forward_hook(hook) for m in meta.modules()
             if isinstance(m, (torch.nn.Conv3d, torch.nn.ConvTranspose3d))]
    with torch.no_grad():
        meta(torch.empty((1, 1, *patch), device="meta"))
    for h in hooks:
        h.remove()
    return total


def child_variants(args) -> dict:
    import torch

    from femurseg.models.bundle import load_bundle
    from femurseg.models.vnet import conv_flops

    bundle = load_bundle(args.model, device="cpu")
    patch = tuple(bundle.preprocessing.patch_size_zyx)
    flops = conv_flops(bundle.config, patch)
    x = torch.randn(2, 1, *patch)
    rows = {}

    def bench(model, inp, bf16, reps=3):
        with torch.inference_mode():
            for i in range(reps + 1):
                if i == 1:
                    t0 = time.perf_counter()
                if bf16:
                    with torch.autocast("cpu", dtype=torch.bfloat16):
                        model(inp)
                else:
                    model(inp)
        return (time.perf_counter() - t0) / reps / inp.shape[0]

    model = bundle.model.eval()
    for name, cl, bf16 in (("fp32", False, False), ("fp32 channels_last_3d", True, False), ("bf16", False, True),
                           ("bf16 channels_last_3d", True, True)):
        m = model.to(memory_format=torch.channels_last_3d if cl else torch.contiguous_format)
        inp = x.contiguous(memory_format=torch.channels_last_3d) if cl else x.contiguous()
        s = bench(m, inp, bf16)
        rows[name] = {"window_s": s, "gflop_per_s": flops / 1e9 / s}
    if args.compile:
        try:
            t0 = time.perf_counter()
            m = torch.compile(model.to(memory_format=torch.channels_last_3d))
            inp = x.contiguous(memory_format=torch.channels_last_3d)
            with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
                m(inp)
            compile_s = time.perf_counter() - t0
            s = bench(m, inp, True)
            rows["bf16 channels_last_3d torch.compile"] = {"window_s": s, "gflop_per_s": flops / 1e9 / s,
                                                           "compile_s": compile_s}
        except Exception as err:  # inductor needs a working C++ toolchain
            rows["bf16 channels_last_3d torch.compile"] = {"error": f"{type(err).__name__}: {err}"[:200]}
    return {"patch": list(patch), "gflop_per_window": flops / 1e9, "variants": rows}


# ----------------------------------------------------------------------------------------------------------- main
def _run_child(argv: list[str]) -> dict:
    out = subprocess.run([sys.executable, __file__, *argv], capture_output=True, text=True)
    if out.returncode != 0:
        return {"error": out.stderr.strip().splitlines()[-1] if out.stderr.strip() else f"exit {out.returncode}"}
    return json.loads(out.stdout.strip().splitlines()[-1])


def _dice(a: str, b: str) -> dict:
    import numpy as np
    import SimpleITK as sitk

    ia, ib = sitk.ReadImage(a), sitk.ReadImage(b)  # kept alive: a view of a temporary image dangles
    x, y = sitk.GetArrayViewFromImage(ia), sitk.GetArrayViewFromImage(ib)
    out = {}
    for side, v in (("right", 1), ("left", 2)):
        p, q = x == v, y == v
        n = int(p.sum() + q.sum())
        out[side] = 2.0 * int((p & q).sum()) / n if n else None
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="a 256×256×125 scan at half resolution (a smoke run)")
    parser.add_argument("--baseline-windows", type=int, default=2, help="windows timed per baseline (extrapolated)")
    parser.add_argument("--no-baselines", action="store_true")
    parser.add_argument("--tta", action="store_true", help="also time --tta (4 passes: slow)")
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile variant")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "segment_speed.json"))
    parser.add_argument("--child", choices=("femurseg", "baseline", "variants"), help=argparse.SUPPRESS)
    for name in ("scan", "labels", "model", "locator", "mode", "net", "workdir"):
        parser.add_argument(f"--{name}", help=argparse.SUPPRESS)
    parser.add_argument("--windows", type=int, default=2, help=argparse.SUPPRESS)
    parser.add_argument("--real", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--fp32", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--compile", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        fn = {"femurseg": child_femurseg, "baseline": child_baseline, "variants": child_variants}[args.child]
        print(json.dumps(fn(args)))
        return 0

    import torch

    results: dict = {"machine": {"platform": platform.platform(), "cpu_count": os.cpu_count(),
                                 "torch": torch.__version__, "threads": torch.get_num_threads(),
                                 "load_before": os.getloadavg()}}
    with tempfile.TemporaryDirectory(prefix="segment-speed-") as tmp:
        work = Path(tmp)
        t0 = time.perf_counter()
        results["scan"] = make_scan(work, quick=args.quick)
        results["scan"]["make_s"] = time.perf_counter() - t0
        femur, locator, real = bundles(work)
        results["models"] = {"femur": str(femur), "locator": str(locator),
                             "weights": "bundled" if real else "random (default config; true boxes replace the locator's)"}
        common = ["--scan", str(work / "scan.mha"), "--labels", str(work / "labels.mha"), "--model", str(femur),
                  "--locator", str(locator), "--workdir", str(work)] + (["--real"] if real else [])
        rows: dict = {}
        modes = [("normal", []), ("fast", []), ("normal", ["--fp32"])] + ([("tta", [])] if args.tta else [])
        for mode, extra in modes:
            name = f"femurseg {mode}" + (" fp32" if extra else "")
            print(f"running {name} ...", file=sys.stderr)
            rows[name] = _run_child(["--child", "femurseg", "--mode", mode, *extra, *common])
        if "mask" in rows["femurseg normal"] and "mask" in rows["femurseg normal fp32"]:
            rows["femurseg normal fp32"]["dice_vs_bf16"] = _dice(rows["femurseg normal"]["mask"],
                                                                 rows["femurseg normal fp32"]["mask"])
        if real:  # accuracy of each mode against the phantom's truth (meaningless with random weights)
            for r in rows.values():
                if "mask" in r:
                    r["dice_vs_truth"] = _dice(r["mask"], str(work / "labels.mha"))
        if not args.no_baselines:
            for net in ("vnet", "dynunet"):
                print(f"running MONAI {net} ...", file=sys.stderr)
                rows[f"MONAI {net}"] = _run_child(["--child", "baseline", "--net", net, "--windows",
                                                   str(args.baseline_windows), *common])
        print("running execution variants ...", file=sys.stderr)
        results["variants"] = _run_child(["--child", "variants", "--model", str(femur)]
                                         + ([] if args.no_compile else ["--compile"]))
        results["rows"] = rows
    results["machine"]["load_after"] = os.getloadavg()
    _print_table(results)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print(f"\nwrote {out}")
    return 0


def _print_table(results: dict) -> None:
    rows = results["rows"]
    scan = results["scan"]
    print(f"\nscan: {scan['source']} {scan['size_xyz']} at {scan['spacing_xyz']} mm; models: {results['models']['weights']}")
    print(f"load average before/after: {results['machine']['load_before']} / {results['machine']['load_after']}")
    ref = rows.get("femurseg normal", {}).get("total_s")
    print(f"\n{'pipeline':<26}{'seconds':>9}{'× normal':>10}{'peak RSS MB':>13}{'GFLOP/s':>9}  notes")
    for name, r in rows.items():
        if "error" in r:
            print(f"{name:<26}  failed: {r['error']}")
            continue
        total = r["total_s"]
        ratio = f"{total / ref:.2f}" if ref else "-"
        note = ""
        if name.startswith("femurseg"):
            t = r["timings_s"]
            note = (f"locate {t['locate']:.1f} s, infer {sum(t[s]['infer'] for s in ('right', 'left') if s in t):.1f} s, "
                    f"{r['windows']} windows, {'bf16' if r['bf16'] else 'fp32'}")
            if "dice_vs_bf16" in r:
                note += ", Dice vs bf16 " + "/".join(f"{v:.4f}" if v is not None else "-" for v in r["dice_vs_bf16"].values())
            if "dice_vs_truth" in r:
                note += ", Dice vs truth R/L " + "/".join(f"{v:.3f}" if v is not None else "-"
                                                          for v in r["dice_vs_truth"].values())
        else:
            note = (f"{r['params'] / 1e6:.1f} M params, {r['windows_timed']} of {r['windows_total']} windows timed "
                    f"({r['window_s']:.1f} s each), extrapolated")
        gf = r.get("gflop_per_s")
        print(f"{name:<26}{total:>9.1f}{ratio:>10}{r['peak_rss_mb']:>13.0f}{(gf or 0):>9.1f}  {note}")
    v = results.get("variants", {})
    if "variants" in v:
        print(f"\nfine net, one {v['patch']} window ({v['gflop_per_window']:.0f} GFLOP), batch 2; peak {PEAK_GFLOPS:.0f} GFLOP/s fp32")
        for name, r in v["variants"].items():
            if "error" in r:
                print(f"  {name:<40} failed: {r['error']}")
            else:
                extra = f" (compile {r['compile_s']:.0f} s)" if "compile_s" in r else ""
                print(f"  {name:<40} {r['window_s']:6.2f} s/window  {r['gflop_per_s']:6.1f} GFLOP/s "
                      f"({100 * r['gflop_per_s'] / PEAK_GFLOPS:.0f}% of peak){extra}")


if __name__ == "__main__":
    sys.exit(main())
