"""``femurseg phantom``: generate a labelled cohort of phantom hip-QCT scans."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``phantom`` verb."""
    p = subparsers.add_parser(
        "phantom",
        help="generate labelled phantom hip-QCT scans (a cohort folder)",
        description="Generate phantom hip-QCT scans with right/left femur labels, tissue maps and a cohort.csv "
        "of the true subject, anatomy and scanner values. The same seed gives the same files.",
    )
    p.add_argument("-n", type=int, default=None, help="number of cases (default 1; the paper cohort has 397)")
    p.add_argument("-o", "--output", required=True, type=Path, help="output cohort folder")
    p.add_argument("--seed", type=int, default=0, help="cohort seed (default 0)")
    p.add_argument("--cohort", choices=("random", "paper"), default="random",
                   help="'paper': the 397 subjects (216 women, 181 men) of Zhao et al. 2020")
    p.add_argument("--spacing", type=float, nargs=3, metavar=("X", "Y", "Z"), default=None,
                   help="voxel spacing [mm] (default: drawn per case, 0.6-1.0 in-plane, 0.5-3 slices)")
    p.add_argument("--matrix", type=int, default=512, help="in-plane matrix [voxels] (default 512)")
    p.add_argument("--calibration-phantom", choices=("random", "yes", "no"), default="random",
                   help="calibration phantom under the patient (default: in ~85%% of cases)")
    p.add_argument("--recon-circle", choices=("random", "yes", "no"), default="random",
                   help="blank the image outside the reconstruction circle, as many scanners do; nothing is labelled "
                   "there (default: in ~60%% of cases)")
    p.add_argument("--anatomy", choices=("model", "labelmaps", "negatives"), default="model",
                   help="'model': posed meshes and modelled soft tissue (default); 'labelmaps': the bundled expert "
                   "label maps of two real hips, cropped to random fields of view; 'negatives': scans without a "
                   "femur (abdomen with arms, lower legs; empty labels); both always --appearance random")
    p.add_argument("--metal", type=float, default=0.0, metavar="P",
                   help="fraction of cases (0-1) with a hip arthroplasty or neck screws, with metal streaks "
                   "(default 0); metal inside a femur stays in its label, an acetabular cup does not")
    p.add_argument("--appearance", choices=("physics", "random"), default="physics",
                   help="'physics': HU from the subject's bone density and the scanner's calibration (default); "
                   "'random': per-tissue intensities drawn from wide CT ranges, for training (labels unchanged)")
    p.add_argument("--femur-mesh", type=Path, default=None, help="a femur surface mesh (STL/PLY/OBJ/VTP) to use")
    p.add_argument("--mesh-side", choices=("right", "left"), default="right", help="side of --femur-mesh")
    p.add_argument("--mesh-scale", type=float, default=1.0, help="scale of --femur-mesh to mm (default 1)")
    p.add_argument("--preview", nargs="?", const="", default=None, metavar="PNG",
                   help="save a picture of the first case (default OUTPUT/preview.png)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--overwrite", action="store_true",
                   help="write into an output folder that is not empty (cases of the same ids are replaced)")
    p.set_defaults(func=run)


def _remove_created(output: Path, before: set[str] | None) -> None:
    """Remove what a failed run created in ``output`` (``before``: its entries before the run; None: it was new)."""
    import shutil

    if before is None:
        shutil.rmtree(output, ignore_errors=True)
        return
    for entry in output.iterdir() if output.is_dir() else ():
        if entry.name not in before:
            shutil.rmtree(entry) if entry.is_dir() else entry.unlink()


def run(args: argparse.Namespace) -> int:
    """Write the cohort; return 0."""
    from femurseg.errors import InputError

    if args.n is not None and args.n <= 0:
        raise InputError(f"-n must be a positive number of cases, not {args.n}")
    if args.seed < 0:
        raise InputError(f"--seed must be non-negative, not {args.seed}")
    if args.mesh_scale <= 0:
        raise InputError(f"--mesh-scale must be positive, not {args.mesh_scale}")

    from tqdm import tqdm

    from femurseg.phantom.cohort import case_id, prepare_cohort_folder, write_cohort
    from femurseg.phantom.generate import PhantomOptions

    n = args.n if args.n is not None or args.cohort == "paper" else 1
    options = PhantomOptions(
        spacing_xyz=tuple(args.spacing) if args.spacing else None,
        matrix=args.matrix,
        calibration_phantom={"random": None, "yes": True, "no": False}[args.calibration_phantom],
        recon_circle={"random": None, "yes": True, "no": False}[args.recon_circle],
        femur_mesh=str(args.femur_mesh) if args.femur_mesh else None,
        mesh_side=args.mesh_side,
        mesh_scale=args.mesh_scale,
        anatomy=args.anatomy,
        appearance="random" if args.anatomy != "model" else args.appearance,
        metal=args.metal,
    )
    if args.cohort == "paper" and args.n is not None and args.n != 397:
        raise InputError(f"the paper cohort has 397 subjects; leave out -n or give -n 397, not {args.n}")
    output = Path(args.output)
    if output.exists() and not output.is_dir():
        raise InputError(f"{output} is a file; give a folder for the cohort")
    before = {e.name for e in output.iterdir()} if output.exists() else None
    if before and not args.overwrite:
        raise InputError(f"{output} exists and is not empty; pass --overwrite to write the cohort into it")
    if not output.parent.is_dir():
        raise InputError(f"{output}: the folder {output.parent} does not exist")
    done: list[str] = []
    try:
        prepare_cohort_folder(output)  # fail on an unwritable folder before any work
        total = 397 if args.cohort == "paper" else n
        with tqdm(total=total, unit="case", disable=args.no_progress, desc="phantom") as bar:
            def progress(count: int, cid: str) -> None:
                done.append(cid)
                bar.set_postfix_str(cid)
                bar.update(1)

            out = write_cohort(output, n=n, seed=args.seed, cohort=args.cohort, options=options,
                               progress=progress)
    except BaseException:
        # Cases written before a failure form a consistent cohort (cohort.csv lists them); with none, the folders
        # this run created go again.
        if not done:
            _remove_created(output, before)
        raise
    if args.preview is not None:
        from femurseg.io import read_image
        from femurseg.viz.overlay import save_overlay

        cid = case_id(0)
        png = Path(args.preview) if args.preview else out / "preview.png"
        save_overlay(read_image(out / "images" / f"{cid}.nii.gz"), read_image(out / "labels" / f"{cid}.nii.gz"),
                     png, title=f"femurseg phantom {cid} (seed {args.seed})")
        print(f"preview: {png}")
    print(f"wrote {total} case(s) to {out}")
    return 0
