"""``femurseg train DATA_DIR [DATA_DIR ...] -o RUN_DIR``: train a V-Net on labelled cohorts and export a model bundle."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``train`` verb."""
    parser = subparsers.add_parser(
        "train",
        help="train a femur model on a labelled cohort (cohort folder or nnU-Net dataset)",
        description=(
            "Train a V-Net (Dice + L2 loss) on a labelled cohort and export the best model as a bundle in "
            "RUN_DIR/model. DATA_DIR is a cohort folder (images/, labels/, cohort.csv) or an nnU-Net raw dataset "
            "(dataset.json, imagesTr/, labelsTr/). For several GPUs: torchrun --nproc_per_node K -m "
            "femurseg train DATA_DIR -o RUN_DIR ..."
        ),
    )
    parser.add_argument("data_dir", metavar="DATA_DIR", nargs="+",
                        help="cohort folder or nnU-Net raw dataset; several train together (case ids then "
                        "<folder>_<case>)")
    parser.add_argument("-o", "--output", metavar="RUN_DIR", required=True, help="run folder (new, or with --resume)")
    parser.add_argument("--config", metavar="FILE", default=None,
                        help="training configuration JSON (a TrainConfig, or a run's config.json); default: the built-in "
                        "recipe, or with --resume the run's own config.json")
    parser.add_argument("--resume", action="store_true", help="continue RUN_DIR from its last checkpoint")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda", "mps"), default=None,
                        help="override the configuration's device")
    parser.add_argument("--steps", type=int, default=None, metavar="N", help="override the number of training steps")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Train; print the bundle's path and its validation Dice (under torchrun: data-parallel, see
    :mod:`femurseg.training.distributed`)."""
    import os
    from pathlib import Path

    from femurseg.errors import InputError

    data_dirs = [Path(d) for d in args.data_dir]
    for data_dir in data_dirs:
        if not data_dir.is_dir():
            raise InputError(f"{data_dir}: no such folder; give a cohort folder (images/, labels/) or an nnU-Net dataset")
    if args.steps is not None and args.steps < 1:
        raise InputError(f"--steps must be at least 1, got {args.steps}")

    from femurseg.training.config import TrainConfig, load_train_config
    from femurseg.training.trainer import fit

    run_dir = Path(args.output)
    if args.config:
        config = load_train_config(args.config)
    elif args.resume and (run_dir / "config.json").is_file():
        config = load_train_config(run_dir / "config.json")  # the run's own recipe
    else:
        config = TrainConfig()
    if args.device:
        config = config.with_(device=args.device)
    if args.steps:
        config = config.with_(steps=args.steps)
    fresh = not run_dir.exists() or (run_dir.is_dir() and not any(run_dir.iterdir()))
    try:
        bundle = fit(config, data_dir=data_dirs[0] if len(data_dirs) == 1 else data_dirs, run_dir=run_dir,
                     resume=args.resume, progress=os.environ.get("RANK", "0") == "0")
    except BaseException:
        # A new run that failed before its first checkpoint leaves nothing, so the same command can be rerun; a
        # run with checkpoints stays for --resume.
        if (fresh and not args.resume and os.environ.get("RANK", "0") == "0" and run_dir.is_dir()
                and not any((run_dir / "checkpoints").glob("*"))):
            import shutil

            shutil.rmtree(run_dir, ignore_errors=True)
        raise

    import json

    metrics = json.loads((bundle / "model.json").read_text(encoding="utf-8")).get("metrics", {})
    print(f"model: {bundle}")
    dice = {side: metrics.get(f"dice_{side}") for side in ("right", "left")}
    if any(isinstance(v, (int, float)) for v in dice.values()):
        shown = ", ".join(f"{side} {v:.4f}" for side, v in dice.items() if isinstance(v, (int, float)))
        print(f"validation Dice: {shown} (step {metrics.get('best_step')})")
    return 0
