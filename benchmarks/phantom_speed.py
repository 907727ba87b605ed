"""Phantom speed and memory: seconds per stage and peak memory of one case at several voxel spacings.

    python benchmarks/phantom_speed.py [--seed 1] [--configs 0.7x0.7x1,0.9x0.9x2,0.6x0.6x0.5,1.5x1.5x2.5:256]

Each configuration runs in a fresh process (so its peak RSS is its own), after building the anatomy's template
once in that process (``anatomy_build`` then measures only the per-subject work; ``template_s`` the one-off).
A last row generates four cases in one process and reports the resident memory after each: it must not grow
(one case at a time, nothing kept).  Prints a table and writes ``benchmarks/results/phantom_speed.json``.
Times are wall-clock on a shared CPU: compare rows of one run, not numbers across machines.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"

_CHILD = r"""
import json, resource, sys, time
import numpy as np
cfg = json.loads(sys.argv[1])
t = time.perf_counter()
from femurseg.phantom import anatomy
from femurseg.phantom.generate import PhantomOptions, generate
anatomy.build_skeleton(anatomy.sample_anatomy(np.random.default_rng(0), sex="F", age=60.0))
template_s = time.perf_counter() - t

def rss_mb():
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * 4096 / 2**20

out = []
for i in range(cfg["cases"]):
    opts = PhantomOptions(spacing_xyz=tuple(cfg["spacing"]), matrix=cfg["matrix"])
    case = generate(cfg["seed"] + i, options=opts)
    row = dict(case.timings)
    row.update(size_xyz=list(case.scan.GetSize()), rss_after_mb=rss_mb(),
               peak_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0)
    del case
    out.append(row)
print(json.dumps({"template_s": template_s, "cases": out}))
"""

STAGES = ("anatomy_build", "anatomy_sample", "bones", "soft_tissue", "scanner", "total")


def _parse(spec: str) -> tuple[list[float], int]:
    matrix = 512
    if ":" in spec:
        spec, m = spec.split(":")
        matrix = int(m)
    return [float(v) for v in spec.split("x")], matrix


def run(configs: list[str], seed: int, leak_cases: int) -> dict:
    rows = []
    env = dict(os.environ)
    for spec in configs + [f"1.5x1.5x2.5:256/leak{leak_cases}"]:
        leak = "/leak" in spec
        spacing, matrix = _parse(spec.split("/")[0])
        cfg = {"spacing": spacing, "matrix": matrix, "seed": seed, "cases": leak_cases if leak else 1}
        res = subprocess.run([sys.executable, "-c", _CHILD, json.dumps(cfg)], capture_output=True, text=True, env=env)
        if res.returncode:
            raise SystemExit(f"{spec}: failed\n{res.stderr[-3000:]}")
        data = json.loads(res.stdout.strip().splitlines()[-1])
        rows.append({"config": spec, "spacing_xyz": spacing, "matrix": matrix, "template_s": data["template_s"],
                     "cases": data["cases"]})
    return {"machine": platform.platform(), "cpus": os.cpu_count(), "python": platform.python_version(),
            "load_avg_1min": os.getloadavg()[0], "rows": rows}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--configs", default="0.7x0.7x1,0.9x0.9x2,0.6x0.6x0.5,1.5x1.5x2.5:256")
    ap.add_argument("--leak-cases", type=int, default=4)
    args = ap.parse_args()
    result = run(args.configs.split(","), args.seed, args.leak_cases)
    head = f"{'config':22s} {'size (x,y,z)':16s} " + " ".join(f"{s:>14s}" for s in STAGES) + f" {'peak MB':>8s}"
    print(head)
    print("-" * len(head))
    for row in result["rows"]:
        for case in row["cases"]:
            size = "x".join(str(v) for v in case["size_xyz"])
            print(f"{row['config']:22s} {size:16s} " + " ".join(f"{case.get(s, 0.0):14.2f}" for s in STAGES)
                  + f" {case['peak_rss_mb']:8.0f}")
    leak = result["rows"][-1]["cases"]
    print(f"\nresident memory after each of {len(leak)} cases in one process [MB]: "
          + ", ".join(f"{c['rss_after_mb']:.0f}" for c in leak))
    print(f"template build (once per process) [s]: " + ", ".join(f"{r['template_s']:.1f}" for r in result["rows"]))
    print(f"load average during the run: {result['load_avg_1min']:.1f} on {result['cpus']} CPUs")
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "phantom_speed.json").write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
