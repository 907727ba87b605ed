"""QCT accuracy on phantom cases against the generator's truth, with the true mask and with femurseg's own mask.

For each case (a fresh phantom with the calibration phantom in view) it prints the calibration (slope, intercept
against the truth), each femur's head diameter and neck-shaft angle, and the trabecular vBMD of the head and neck
against the true regional densities; once with the true label map and once with the mask the bundled models
predict (``femurseg segment``), so the table says how much the segmentation adds.  Then a summary of the mean and
largest errors, side by side.

    python benchmarks/qct_phantom.py -n 6 --seed 9100 [--field long|hip]

Head diameter and neck-shaft angle are compared with :func:`femurseg.phantom.true_frames` (measured on the bone
as built, its random deformation included), densities with the generator's regional truth.

(Phantom cases only: real-scan QCT truth needs a scan with a phantom and a reference analysis.)
"""

from __future__ import annotations

import argparse
import logging
import math
import time

import numpy as np


#: Fields of view: a hip QCT (15–50 mm of femur under the lesser trochanters, too little shaft for the
#: neck-shaft angle, which is then not reported) and a longer one (70–90 mm under them).
FIELDS = {"hip": ((10.0, 40.0), (15.0, 50.0)), "long": ((10.0, 40.0), (70.0, 90.0))}


def _case(seed: int, field: str):  # noqa: ANN202
    """The phantom case, its certificate as a user would give it, and the femurs' true frames."""
    from femurseg.phantom import PhantomOptions, generate, true_frames
    from femurseg.qct.phantoms import mindways_model3

    options = PhantomOptions(calibration_phantom=True, z_margins_mm=FIELDS[field])
    case = generate(seed, options=options)
    f = case.facts
    spec = mindways_model3(k2hpo4=[f[f"rod_{n}_k2hpo4_mg_cm3"] for n in "ABCDE"],
                           water=[f[f"rod_{n}_water_mg_cm3"] for n in "ABCDE"])
    return case, spec, true_frames(seed, options=options)


def _errors(analysis, facts: dict, frames: dict) -> list[dict]:  # noqa: ANN001
    rows = []
    cal = analysis.calibration
    for side, fem in analysis.femurs.items():
        f, truth = fem.frame, frames[side]
        row = {"side": side,
               "slope_%": 100.0 * (cal.slope / facts["sigma_ct"] - 1.0),
               "intercept_HU": cal.intercept - facts["beta_ct"],
               "head_mm": f.head_diameter_mm - truth.head_diameter_mm,
               "nsa_deg": f.neck_shaft_angle_deg - truth.neck_shaft_angle_deg}
        for region in ("head", "neck", "total_hip"):
            truth = facts.get(f"trabecular_vbmd_{side}_{region}_mg_cm3", math.nan)
            row[f"{region}_trab_%"] = 100.0 * (fem.densities[region].trabecular_vbmd / truth - 1.0)
        rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=6, help="phantom cases")
    parser.add_argument("--seed", type=int, default=9100, help="first seed")
    parser.add_argument("--field", choices=sorted(FIELDS), default="long", help="field of view (see FIELDS)")
    args = parser.parse_args()
    logging.getLogger("femurseg").setLevel(logging.ERROR)  # the table says what the warnings would (nan angles)

    from femurseg.inference import Segmenter
    from femurseg.qct.analysis import analyse_scan

    segmenter = Segmenter(extent_mm=None)  # the whole femur in view: the shaft the neck-shaft angle needs
    table: dict[str, list[dict]] = {"true mask": [], "predicted mask": []}
    keys = ["slope_%", "intercept_HU", "head_mm", "nsa_deg", "head_trab_%", "neck_trab_%", "total_hip_trab_%"]
    print(f"{'case':>6} {'mask':>14} {'side':>5} " + " ".join(f"{k:>16}" for k in keys) + "   seconds")
    for seed in range(args.seed, args.seed + args.n):
        case, spec, frames = _case(seed, args.field)
        predicted = segmenter.segment(case.scan).mask
        for label, mask in (("true mask", case.labels), ("predicted mask", predicted)):
            t = time.perf_counter()
            analysis = analyse_scan(case.scan, mask, phantom=spec, case=str(seed))
            dt = time.perf_counter() - t
            for row in _errors(analysis, case.facts, frames):
                table[label].append(row)
                print(f"{seed:>6} {label:>14} {row['side']:>5} " + " ".join(f"{row[k]:>+16.2f}" for k in keys)
                      + f"   {dt:.1f}")
    print("\nmean |error| (max |error|) over femurs")
    print(f"{'':>16} " + " ".join(f"{k:>18}" for k in keys))
    for label, rows in table.items():
        cells = []
        for k in keys:
            v = np.abs([r[k] for r in rows if math.isfinite(r[k])])
            cells.append(f"{v.mean():.2f} ({v.max():.2f})" if v.size else "–")
        print(f"{label:>16} " + " ".join(f"{c:>18}" for c in cells))


if __name__ == "__main__":
    main()
