"""``femurseg protocol DATA_DIR -o RUN_DIR``: Zhao et al.'s experiment on a labelled cohort, with a report."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``protocol`` verb."""
    parser = subparsers.add_parser(
        "protocol",
        help="the paper's experiment on your cohort: stratified K-fold CV + hold-out, all/men/women, report",
        description=(
            "Hold out a stratified fraction of the subjects, run K-fold cross-validation on the rest to select the "
            "grid's parameters and the training length, retrain on the whole rest and score the hold-out with the "
            "full pipeline; for the entire cohort and for men and women. Every (cohort, grid point, fold) is a "
            "resumable unit: a re-run with --resume skips finished units; --fold K runs fold K only (spread folds "
            "over machines, then run once more without --fold to finish). Writes RUN_DIR/report/index.html."
        ),
    )
    parser.add_argument("data_dir", metavar="DATA_DIR", help="cohort folder (with a sex column for men/women) or "
                        "nnU-Net raw dataset")
    parser.add_argument("-o", "--output", metavar="RUN_DIR", required=True, help="run folder (new, or with --resume)")
    parser.add_argument("--profile", choices=("tiny", "quick", "paper"), default="quick",
                        help="tiny: CI smoke run; quick: tens of cases on a CPU in under an hour (fine-tunes the "
                        "bundled model); paper: 10 folds, 10%% hold-out, 3 cohorts, λ grid, from scratch (GPU). "
                        "Default: quick")
    parser.add_argument("--folds", type=int, default=None, help="K of the cross-validation")
    parser.add_argument("--test-fraction", type=float, default=None, help="hold-out fraction (0–0.5]")
    parser.add_argument("--cohorts", default=None, help="comma-separated: all, male, female")
    parser.add_argument("--grid", nargs="+", default=None, metavar="NAME=V1,V2",
                        help="parameters to select by cross-validation, e.g. l2=1e-5,1e-4 lr=1e-4,3e-4")
    parser.add_argument("--steps", type=int, default=None, help="training steps per fold")
    parser.add_argument("--val-every", type=int, default=None, help="validation interval inside a fold [steps]")
    parser.add_argument("--init", default=None, help="bundled (fine-tune the bundled femur model), scratch, or a "
                        "bundle folder")
    parser.add_argument("--seed", type=int, default=None, help="seeds the splits and every training run")
    parser.add_argument("--extent", default=None, metavar="MM|full", help="distal limit of predicted masks below "
                        "the head top (default: full, the whole femur as labelled)")
    parser.add_argument("--config", metavar="FILE", default=None,
                        help="training configuration JSON (network, preprocessing, loss, augmentation...); default: "
                        "the bundled model's network and preprocessing with the built-in recipe (or the built-in "
                        "recipe from scratch)")
    parser.add_argument("--locator", metavar="BUNDLE", default=None, help="locator bundle (default: the bundled one)")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda", "mps"), default=None)
    parser.add_argument("--fold", type=int, default=None, metavar="K", help="run fold K's units only")
    parser.add_argument("--resume", action="store_true", help="continue RUN_DIR (finished units are skipped)")
    parser.set_defaults(func=run)


def _settings(args: argparse.Namespace):  # noqa: ANN202
    from femurseg.errors import InputError
    from femurseg.protocol.profiles import PROFILES, parse_grid

    extent: float | None = None
    if args.extent not in (None, "full"):
        try:
            extent = float(args.extent)
        except ValueError:
            raise InputError(f"--extent must be a number of mm or 'full', not {args.extent!r}") from None
    base = PROFILES[args.profile]
    cohorts = tuple(c.strip() for c in args.cohorts.split(",") if c.strip()) if args.cohorts else None
    settings = base.with_(folds=args.folds, test_fraction=args.test_fraction, cohorts=cohorts,
                          grid=parse_grid(args.grid), steps=args.steps, val_every=args.val_every, init=args.init,
                          seed=args.seed)
    if args.extent is not None:
        from dataclasses import replace

        settings = replace(settings, extent_mm=extent)
    return settings


def _base_config(args: argparse.Namespace, init: str):  # noqa: ANN202
    from femurseg.training.config import TrainConfig, load_train_config

    if args.config:
        config = load_train_config(args.config)
    elif init == "scratch":
        config = TrainConfig()
    else:
        from femurseg.models.bundle import bundled_model_path, load_bundle

        bundle = load_bundle(bundled_model_path("femur") if init == "bundled" else init, device="cpu")
        config = TrainConfig(network=bundle.config, preprocessing=bundle.preprocessing)
    return config.with_(device=args.device) if args.device else config


def run(args: argparse.Namespace) -> int:
    """Run or continue the protocol; print where the report is."""
    import shlex
    import sys
    from pathlib import Path

    from femurseg.errors import InputError
    from femurseg.protocol.runner import run_protocol

    data_dir, run_dir = Path(args.data_dir), Path(args.output)
    if not data_dir.is_dir():
        raise InputError(f"{data_dir}: no such folder; give a cohort folder (images/, labels/) or an nnU-Net dataset")
    settings = _settings(args)
    config = _base_config(args, settings.init)
    if args.resume and (run_dir / "config.json").is_file() and not args.config:
        from femurseg.training.config import load_train_config

        config = load_train_config(run_dir / "config.json")
    command = " ".join(shlex.quote(a) for a in ["femurseg", *getattr(args, "argv", [])])
    result = run_protocol(data_dir, run_dir, settings, config=config, resume=args.resume,
                          fold=args.fold, locator=args.locator, device=args.device or "auto",
                          progress=sys.stderr.isatty(), command=command)
    print(f"units done: {len(result['done'])}")
    if result["report"]:
        print(f"report: {result['report']}")
    return 0
