"""Per-tissue Hounsfield-unit statistics of one phantom case (for the phantom's validation against literature).

Usage::

    python tools/phantom_tissue_stats.py --seed 1 --spacing 0.7 0.7 1.0

Prints, for every tissue class of the phantom's tissue map, the voxel count and mean ± sd HU over all its voxels
and over its interior (voxels whose 6 neighbours share the class, away from partial volume), next to the range
the literature gives (femurseg.phantom's docs/phantom.md).
"""

from __future__ import annotations

import argparse

import numpy as np
from scipy import ndimage

from femurseg.conventions import TISSUES
from femurseg.io import array_of
from femurseg.phantom.generate import PhantomOptions, generate

#: Typical CT values [HU] (qct_facts.md; cortical bone at clinical resolution is lowered by partial volume).
LITERATURE_HU = {
    "air": (-1024, -950), "fat": (-150, -50), "muscle": (20, 80), "skin": (-50, 80),
    "femur_cortical": (700, 1900), "femur_trabecular": (50, 400), "pelvis_cortical": (700, 1900),
    "pelvis_trabecular": (50, 400), "marrow": (-120, 60), "bladder": (-10, 30), "vessel": (20, 70),
    "bowel_gas": (-1024, -700),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--spacing", type=float, nargs=3, default=(0.7, 0.7, 1.0), metavar=("X", "Y", "Z"))
    args = parser.parse_args()
    case = generate(args.seed, options=PhantomOptions(spacing_xyz=tuple(args.spacing)))
    hu, tissues = array_of(case.scan).astype(np.float32), array_of(case.tissues)
    print(f"seed {args.seed}, spacing {tuple(args.spacing)} mm (x, y, z), shape {hu.shape} (z, y, x)")
    print(f"{'tissue':<20} {'voxels':>10} {'all: mean ± sd':>18} {'interior: mean ± sd':>22} {'literature':>14}")
    for name, value in TISSUES.items():
        m = tissues == value
        if not m.any():
            continue
        inner = ndimage.binary_erosion(m)
        v_all = hu[m]
        lit = LITERATURE_HU.get(name)
        if inner.any():
            v_in = hu[inner]
            interior = f"{v_in.mean():>12.0f} ± {v_in.std():<6.0f}"
            flag = "" if lit is None or lit[0] <= v_in.mean() <= lit[1] else "  <-- outside"
        else:  # too thin or too small to have an interior: no partial-volume-free value
            interior, flag = f"{'-':>12}   {'':<6}", ""
        print(f"{name:<20} {int(m.sum()):>10} {v_all.mean():>9.0f} ± {v_all.std():<6.0f} {interior} {str(lit or ''):>14}{flag}")


if __name__ == "__main__":
    main()
