"""Write paired stress-test cohorts: the same phantom subjects as a hold-out cohort, scanned under harder conditions.

    python tools/stress_cohorts.py -o data/stress [-n 10] [--seed 2000] [--conditions thick3mm,noise50,...]

The phantom draws each stage of a case (subject, anatomy, scanner, noise, …) from its own child seed, so overriding
one scanner option keeps the subject and its anatomy: cohort ``<condition>/`` holds the first ``n`` subjects of
``femurseg phantom -n N --seed SEED`` under that condition, and per-case results can be compared pair by pair with
the unmodified hold-out. Conditions:

- ``thick3mm``: 0.8×0.8 mm pixels, 3 mm slices (an older or low-dose protocol; the usual cohort has 0.5–3 mm)
- ``noise50``: 50 HU noise (twice the usual cohort's highest, a low-dose scan)
- ``elderly``: every subject aged 90 (thin cortex, osteoporotic trabecular bone, narrow joint space)
- ``nocalib``: no calibration phantom under the patient
- ``fine05``: 0.6×0.6×0.5 mm voxels (a high-resolution protocol)

Then, for each condition: ``femurseg segment data/stress/<c>/images -o pred/<c> && femurseg evaluate pred/<c>
--truth data/stress/<c>``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

CONDITIONS: dict[str, dict] = {
    "thick3mm": {"spacing_xyz": (0.8, 0.8, 3.0), "slice_thickness_mm": 3.0},
    "noise50": {"noise_sigma_hu": 50.0},
    "elderly": {"age": 90.0},
    "nocalib": {"calibration_phantom": False},
    "fine05": {"spacing_xyz": (0.6, 0.6, 0.5), "slice_thickness_mm": 0.5},
}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-o", "--output", type=Path, required=True, help="folder for one cohort folder per condition")
    ap.add_argument("-n", type=int, default=10, help="subjects per condition (default 10)")
    ap.add_argument("--seed", type=int, default=2000, help="cohort seed of the hold-out being stressed (default 2000)")
    ap.add_argument("--conditions", default=",".join(CONDITIONS), help=f"comma-separated, from {', '.join(CONDITIONS)}")
    args = ap.parse_args(argv)
    names = args.conditions.split(",")
    unknown = [c for c in names if c not in CONDITIONS]
    if unknown:
        ap.error(f"unknown condition(s) {', '.join(unknown)}; choose from {', '.join(CONDITIONS)}")

    from femurseg.phantom.cohort import write_cohort
    from femurseg.phantom.generate import PhantomOptions

    for name in names:
        out = write_cohort(args.output / name, n=args.n, seed=args.seed, options=PhantomOptions(**CONDITIONS[name]),
                           progress=lambda done, case: print(f"{name}: {done}/{args.n} {case}", file=sys.stderr))
        print(f"{name}: {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
