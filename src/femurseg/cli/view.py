"""``femurseg view``: a PNG of axial, coronal and sagittal slices through each femoral head, mask contours on top."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "view",
        help="picture of a femur mask over its scan (slices through each femoral head)",
        description=(
            "Draw axial, coronal and sagittal slices through each femoral head of MASK (1 right, 2 left femur) "
            "over the scan INPUT, with the mask's contours; one row per femur, written to a PNG."
        ),
    )
    p.add_argument("mask", metavar="MASK", help="label mask (e.g. the output of femurseg segment)")
    p.add_argument("--image", required=True, metavar="INPUT", help="the scan the mask belongs to (file or DICOM folder)")
    p.add_argument("-o", "--output", required=True, metavar="PNG", help="picture to write (.png)")
    p.add_argument("--series-uid", metavar="UID", help="for a DICOM folder with several series: the one to read")
    p.add_argument("--overwrite", action="store_true", help="replace an existing PNG")
    p.set_defaults(func=run)


#: The region drawn around each femoral head centre: (below, above) [mm] along z (inferior, superior), y, x.
VIEW_CROP_MM = ((140.0, 70.0), (90.0, 90.0), (110.0, 110.0))


def run(args: argparse.Namespace) -> int:
    import tempfile

    import numpy as np
    import SimpleITK as sitk

    from femurseg.errors import InputError

    output = Path(args.output)
    if output.suffix.lower() != ".png":
        raise InputError(f"{output}: the picture must be a .png file")
    if output.exists() and not args.overwrite:
        raise InputError(f"{output} exists; pass --overwrite to replace it")
    if not output.parent.is_dir():
        raise InputError(f"{output}: the folder {output.parent} does not exist")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.image as mpimg

    from femurseg.inference.landmarks import femoral_head_centers
    from femurseg.io import read_image, require_same_grid
    from femurseg.viz.overlay import save_overlay

    image = read_image(args.image, series_uid=args.series_uid)
    mask = read_image(args.mask)
    require_same_grid(mask, image, what=args.mask)
    centers = femoral_head_centers(mask)
    found = {side: c for side, c in centers.items() if c is not None}
    if not found:
        raise InputError(f"{args.mask}: no femur label (1 right, 2 left) in this mask; nothing to show")

    rows = []
    from femurseg.atomic import transaction

    name = Path(args.image).name
    counts = np.bincount(sitk.GetArrayViewFromImage(mask).ravel().astype(np.int64), minlength=3)
    voxel_ml = float(np.prod(mask.GetSpacing())) / 1000.0
    with tempfile.TemporaryDirectory(prefix="femurseg-view-") as tmp:  # scratch, outside the output folder
        for side, centre in found.items():
            value = 1 if side == "right" else 2
            title = (f"{name}: {side} femur {counts[value] * voxel_ml:.1f} mL, head at "
                     f"({', '.join(f'{v:.0f}' for v in centre)}) mm LPS")
            png = save_overlay(image, mask, Path(tmp) / f"{side}.png", center_xyz=[float(v) for v in centre],
                               title=title, crop_mm=VIEW_CROP_MM)
            rows.append(mpimg.imread(png)[..., :3])
        width = max(r.shape[1] for r in rows)
        picture = np.concatenate([np.pad(r, ((0, 0), (0, width - r.shape[1]), (0, 0))) for r in rows], axis=0)
        with transaction(overwrite=args.overwrite) as tx:
            mpimg.imsave(tx.stage(output), picture, format="png")
    print(f"wrote {output} ({', '.join(found)} femur)")
    return 0

