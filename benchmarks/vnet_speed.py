"""V-Net speed on this CPU: forward (inference) and training-step throughput, memory, achieved GFLOP/s.

For base widths 8 and 16 (the paper's 5³ kernels; and width 8 with 3³ kernels, for comparison) it measures
  * a forward pass of one 160³ and one 128³ input under several execution variants
    (``no_grad``, ``inference_mode``, ``channels_last_3d``, ``bf16_autocast``, ``cl3d+bf16``, ``compile``),
  * a training step (forward + backward + Adam, CompoundLoss, batch 2 of 96³ patches) in fp32 / bf16 / cl3d,
and reports parameters, seconds, patches/s, peak RSS and achieved GFLOP/s (``conv_flops`` / time; a training
step counts 3 × the forward FLOPs) against the fp32 matmul peak of the CPU (``--peak-gflops``, 420 here).

Every measurement runs in its own subprocess, so peak RSS is that configuration's own and compiled kernels or
allocator caches do not leak between rows.  Times are the best of the timed runs after one warm-up run
(``--repeats`` at least, more within ``--budget`` seconds).
Absolute times depend on the machine (and here on a CPU shared with other jobs); compare rows of one run.

Usage::

    python benchmarks/vnet_speed.py                      # everything (~20 min on 2 cores)
    python benchmarks/vnet_speed.py --configs 8x5 --sizes 128 --skip-train --variants no_grad,inference_mode
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

FORWARD_VARIANTS = ("no_grad", "inference_mode", "channels_last_3d", "bf16_autocast", "cl3d+bf16", "compile")
TRAIN_VARIANTS = ("fp32", "bf16_autocast", "channels_last_3d")
RESULTS = Path(__file__).resolve().parent / "results"


def _child(spec: dict) -> dict:
    """One measurement, in this (fresh) process."""
    import contextlib
    import resource

    import torch

    from femurseg.models.vnet import VNetConfig, build_vnet, conv_flops, count_parameters

    torch.set_num_threads(spec["threads"])
    cfg = VNetConfig(base_width=spec["width"], kernel_size=spec.get("kernel", 5))
    model = build_vnet(cfg, seed=0)
    out: dict = {"parameters": count_parameters(model)}
    variant = spec["variant"]
    channels_last = variant in ("channels_last_3d", "cl3d+bf16")
    bf16 = variant in ("bf16_autocast", "cl3d+bf16")
    fmt = torch.channels_last_3d if channels_last else torch.contiguous_format

    def autocast():
        return torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()

    gen = torch.Generator().manual_seed(0)
    if spec["kind"] == "forward":
        model.eval()
        model = model.to(memory_format=fmt)
        x = torch.randn(1, 1, *([spec["size"]] * 3), generator=gen).to(memory_format=fmt)
        if variant == "compile":
            model = torch.compile(model)
        grad_ctx = torch.no_grad if variant == "no_grad" else torch.inference_mode

        def step() -> None:
            with grad_ctx(), autocast():
                y = model(x)
            assert y.shape[1] == cfg.out_channels

        flops = conv_flops(cfg, x.shape[2:])
    else:
        from femurseg.training.loss import CompoundLoss

        model.train()
        model = model.to(memory_format=fmt)
        shape = (spec["batch"], 1, *([spec["size"]] * 3))
        x = torch.randn(*shape, generator=gen).to(memory_format=fmt)
        target = (torch.rand(shape[:1] + shape[2:], generator=gen) > 0.7).long()
        loss_fn = CompoundLoss(l2_lambda=1e-5)
        opt = torch.optim.Adam(model.parameters(), lr=1e-4)

        def step() -> None:
            opt.zero_grad(set_to_none=True)
            with autocast():
                logits = model(x)
            total, _ = loss_fn(logits, target, model)
            total.backward()
            opt.step()

        flops = 3 * conv_flops(cfg, x.shape[2:]) * spec["batch"]

    t0 = time.perf_counter()
    step()  # warm-up: oneDNN primitive creation, allocator, compilation
    out["warmup_s"] = time.perf_counter() - t0
    times: list[float] = []
    # At least `repeats` timed runs, more while they fit the time budget: the minimum filters out other jobs.
    while len(times) < spec["repeats"] or (sum(times) + min(times) < spec["budget"] and len(times) < 5):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    out["runs"] = len(times)
    out["seconds"] = min(times)
    out["gflops"] = flops / 1e9
    out["gflop_per_s"] = flops / 1e9 / out["seconds"]
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    out["load_average_1min"] = os.getloadavg()[0]  # contention from other jobs while this row ran
    if spec["kind"] == "train":
        out["patches_per_s"] = spec["batch"] / out["seconds"]
    return out


def _run(spec: dict, timeout: float) -> dict:
    cmd = [sys.executable, __file__, "--child", json.dumps(spec)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    if proc.returncode != 0:
        lines = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
        return {"error": (lines[-1] if lines else f"exit code {proc.returncode}")[:200]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _net(spec: dict) -> str:
    return f"{spec['width']}x{spec['kernel']}"


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _summary(rows: list[dict]) -> dict:
    """Fastest variant per (net, size) for forward passes, and per net for training steps."""
    summary = {}
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        if "seconds" in r:
            key = (r["kind"], r["width"], r["kernel"]) + ((r["size"],) if r["kind"] == "forward" else ())
            groups.setdefault(key, []).append(r)
    for key, ok in groups.items():
        best = min(ok, key=lambda r: r["seconds"])
        base_name = "inference_mode" if key[0] == "forward" else "fp32"
        base = next((r for r in ok if r["variant"] == base_name), None)
        entry = {"fastest": best["variant"], "seconds": best["seconds"]}
        if base is not None:
            entry[f"speedup_vs_{base_name}"] = base["seconds"] / best["seconds"]
        if key[0] == "train":
            entry["patches_per_s"] = best["patches_per_s"]
        name = f"{key[0]}_{key[1]}x{key[2]}" + (f"_{key[3]}" if len(key) > 3 else "")
        summary[name] = entry
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--configs", default="8x5,16x5,8x3",
                        help="networks as WIDTHxKERNEL (base width, kernel edge); the paper's kernel is 5")
    parser.add_argument("--sizes", default="160,128", help="forward input edges [voxels]")
    parser.add_argument("--variants", default=",".join(FORWARD_VARIANTS))
    parser.add_argument("--other-variants", default="auto",
                        help="forward variants of the configs after the first (the first, the slim paper net, is the "
                             "inference candidate and gets --variants); 'auto': inference_mode and the first's "
                             "fastest, and for training fp32 and the first's fastest")
    parser.add_argument("--train-variants", default=",".join(TRAIN_VARIANTS))
    parser.add_argument("--patch", type=int, default=96)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=1, help="timed runs after the warm-up, at least")
    parser.add_argument("--budget", type=float, default=15.0,
                        help="more timed runs (up to 5) while they fit this many seconds; the best is kept")
    parser.add_argument("--timeout", type=float, default=600.0, help="per measurement [s]")
    parser.add_argument("--skip-train", action="store_true")
    parser.add_argument("--peak-gflops", type=float, default=420.0, help="fp32 matmul peak of the CPU [GFLOP/s]")
    parser.add_argument("--output", type=Path, default=RESULTS / "vnet_speed.json")
    args = parser.parse_args(argv)

    if args.child:
        print(json.dumps(_child(json.loads(args.child))))
        return 0

    import torch

    configs = [tuple(int(v) for v in c.split("x")) for c in args.configs.split(",")]
    sizes = [int(s) for s in args.sizes.split(",")]
    load_before = os.getloadavg()
    rows: list[dict] = []
    header = f"{'kind':7} {'net':>5} {'size':>5} {'variant':17} {'params':>10} {'seconds':>8} {'warmup':>7} " \
             f"{'patch/s':>7} {'GFLOP/s':>8} {'%peak':>6} {'RSS MB':>7} {'load':>5}"
    print(header)
    print("-" * len(header))

    def measure(spec: dict) -> None:
        spec = {**spec, "threads": args.threads, "repeats": args.repeats, "budget": args.budget}
        res = _run(spec, args.timeout)
        rows.append({**spec, **res})
        if "error" in res:
            print(f"{spec['kind']:7} {_net(spec):>5} {spec['size']:>5} {spec['variant']:17} failed: {res['error']}")
            return
        pps = f"{res['patches_per_s']:.3f}" if "patches_per_s" in res else ""
        print(f"{spec['kind']:7} {_net(spec):>5} {spec['size']:>5} {spec['variant']:17} {res['parameters']:>10,} "
              f"{res['seconds']:>8.2f} {res['warmup_s']:>7.1f} {pps:>7} {res['gflop_per_s']:>8.1f} "
              f"{100 * res['gflop_per_s'] / args.peak_gflops:>5.1f}% {res['peak_rss_mb']:>7.0f} "
              f"{res['load_average_1min']:>5.1f}", flush=True)

    def fastest(kind: str, width: int, kernel: int, size: int) -> str | None:
        ok = [r for r in rows if (r["kind"], r["width"], r["kernel"], r["size"]) == (kind, width, kernel, size)
              and "seconds" in r]
        return min(ok, key=lambda r: r["seconds"])["variant"] if ok else None

    for i, (width, kernel) in enumerate(configs):
        if i == 0 or args.other_variants != "auto":
            variants = (args.variants if i == 0 else args.other_variants).split(",")
            train_variants = args.train_variants.split(",")
        else:
            # The baseline plus the first (slim) net's winners: the full grid on the wide nets takes too long.
            first = configs[0]
            variants = list(dict.fromkeys(["inference_mode", fastest("forward", *first, max(sizes)) or "inference_mode"]))
            train_variants = list(dict.fromkeys(["fp32", fastest("train", *first, args.patch) or "fp32"]))
        for size in sizes:
            for variant in variants:
                measure(dict(kind="forward", width=width, kernel=kernel, size=size, variant=variant, batch=1))
        if not args.skip_train:
            for variant in train_variants:
                measure(dict(kind="train", width=width, kernel=kernel, size=args.patch, variant=variant,
                             batch=args.batch))

    summary = _summary(rows)
    print()
    for key, val in summary.items():
        print(f"{key:20} fastest: {val['fastest']:17} " + ", ".join(
            f"{k} {v:.2f}" for k, v in val.items() if isinstance(v, float)))
    load_after = os.getloadavg()
    print(f"\nload average before/after: {load_before[0]:.2f} / {load_after[0]:.2f} "
          f"(the CPU is shared: other jobs inflate times)")

    report = {
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "cpu": _cpu_name(), "cpu_count": os.cpu_count(), "threads": args.threads,
        "torch": torch.__version__, "python": platform.python_version(),
        "peak_gflops": args.peak_gflops, "load_average_before": load_before, "load_average_after": load_after,
        "rows": rows, "summary": summary,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.output.with_name(f".{args.output.name}.tmp")
    tmp.write_text(json.dumps(report, indent=2) + "\n")
    os.replace(tmp, args.output)
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
