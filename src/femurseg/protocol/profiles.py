"""The protocol's settings and its three profiles (tiny: CI; quick: a CPU hour; paper: Zhao et al.'s design).

A profile fixes what the paper's experiment varies — folds, hold-out fraction, cohorts, the grid of parameters
selected by cross-validation, the training length and where the weights start — and leaves the network, the
preprocessing and the rest of the recipe to the training configuration (``--config``, default the built-in
recipe).  Any command-line option overrides the profile's value.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from femurseg.errors import InputError

__all__ = ["ProtocolSettings", "PROFILES", "parse_grid", "grid_points", "point_name", "GRID_KEYS", "estimate_hours"]

#: Grid parameter names on the command line -> TrainConfig fields.
GRID_KEYS: dict[str, str] = {"l2": "l2_lambda", "lr": "lr"}


@dataclass(frozen=True)
class ProtocolSettings:
    """Everything that defines a protocol run (saved as ``RUN_DIR/protocol.json``; a resumed run must match).

    Attributes
    ----------
    profile : str
        The profile the values came from (tiny, quick, paper).
    folds : int
        K of the K-fold cross-validation on the non-hold-out subjects.
    test_fraction : float
        Fraction of subjects held out for the test (stratified by sex and side count).
    cohorts : tuple of str
        Experiments: ``all`` (entire cohort), ``male``, ``female``.
    grid : dict
        TrainConfig field -> candidate values, selected per cohort by mean validation Dice.
    steps : int
        Training steps of every cross-validation unit; the retrained model's length is selected from the folds'
        best validation steps.
    val_every : int
        Validation interval [steps] inside a fold's training (the training-length candidates).
    init : str
        ``"bundled"`` (fine-tune the bundled femur model: small cohorts), ``"scratch"`` (random weights, as the
        paper) or a bundle folder.
    seed : int
        Seeds the splits and every training run.
    extent_mm : float or None
        The distal limit the full pipeline applies to predictions (None: the whole femur in view, as labelled).
    lr : float or None
        Peak learning rate (None: the training configuration's).
    """

    profile: str = "quick"
    folds: int = 10
    test_fraction: float = 0.1
    cohorts: tuple[str, ...] = ("all", "male", "female")
    grid: dict[str, tuple[float, ...]] = field(default_factory=lambda: {"l2_lambda": (1e-5,)})
    steps: int = 3000
    val_every: int = 250
    init: str = "scratch"
    seed: int = 0
    extent_mm: float | None = None
    lr: float | None = None

    def __post_init__(self) -> None:
        if self.folds < 2:
            raise InputError(f"--folds must be at least 2, not {self.folds}")
        if not 0.0 < self.test_fraction <= 0.5:
            raise InputError(f"--test-fraction must lie in (0, 0.5], not {self.test_fraction}")
        if self.steps < 1 or self.val_every < 1:
            raise InputError("--steps and the validation interval must be at least 1")
        for key, values in self.grid.items():
            if key not in GRID_KEYS.values() or not values:
                raise InputError(f"--grid: unknown or empty parameter {key!r} (use {', '.join(GRID_KEYS)})")

    def to_json(self) -> str:
        d = asdict(self)
        d["cohorts"] = list(self.cohorts)
        d["grid"] = {k: list(v) for k, v in self.grid.items()}
        return json.dumps(d, indent=1, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str) -> "ProtocolSettings":
        d = json.loads(text)
        d["cohorts"] = tuple(d["cohorts"])
        d["grid"] = {k: tuple(v) for k, v in d["grid"].items()}
        return cls(**d)

    def with_(self, **changes: Any) -> "ProtocolSettings":
        return replace(self, **{k: v for k, v in changes.items() if v is not None})


#: tiny: the whole machinery in CI (2 folds, a few steps, from the bundled weights);
#: quick: a phantom cohort of tens of subjects on a 2-core CPU in under an hour (fine-tuning the bundled model);
#: paper: Zhao et al.'s design — 10 folds, 10 % hold-out, three cohorts, λ selected from a grid, from scratch (GPU).
PROFILES: dict[str, ProtocolSettings] = {
    "tiny": ProtocolSettings(profile="tiny", folds=2, test_fraction=0.25, cohorts=("all",),
                             grid={"l2_lambda": (1e-5,)}, steps=2, val_every=1, init="bundled"),
    "quick": ProtocolSettings(profile="quick", folds=3, test_fraction=0.2, cohorts=("all", "male", "female"),
                              grid={"l2_lambda": (1e-5,)}, steps=60, val_every=30, init="bundled", lr=1e-4),
    "paper": ProtocolSettings(profile="paper", folds=10, test_fraction=0.1, cohorts=("all", "male", "female"),
                              grid={"l2_lambda": (1e-5, 1e-4)}, steps=8000, val_every=500, init="scratch"),
}


def parse_grid(specs: list[str] | None) -> dict[str, tuple[float, ...]] | None:
    """``["l2=1e-5,1e-4", "lr=3e-4"]`` -> ``{"l2_lambda": (1e-05, 0.0001), "lr": (0.0003,)}``; None for no spec."""
    if not specs:
        return None
    out: dict[str, tuple[float, ...]] = {}
    for spec in specs:
        key, _, values = spec.partition("=")
        if key.strip() not in GRID_KEYS or not values:
            raise InputError(f"--grid {spec!r}: write NAME=V1,V2 with NAME one of {', '.join(GRID_KEYS)}")
        try:
            vals = tuple(float(v) for v in values.split(","))
        except ValueError:
            raise InputError(f"--grid {spec!r}: values must be numbers") from None
        if any(not math.isfinite(v) or v < 0 for v in vals):
            raise InputError(f"--grid {spec!r}: values must be finite and non-negative")
        out[GRID_KEYS[key.strip()]] = tuple(dict.fromkeys(vals))
    return out


def grid_points(grid: dict[str, tuple[float, ...]]) -> list[dict[str, float]]:
    """Every combination of the grid's values, in a fixed order."""
    points: list[dict[str, float]] = [{}]
    for key in sorted(grid):
        points = [{**p, key: v} for p in points for v in grid[key]]
    return points


def point_name(point: dict[str, float]) -> str:
    """A folder name for a grid point, e.g. ``l2_lambda=1e-05``."""
    return "_".join(f"{k}={v:g}" for k, v in sorted(point.items())) or "default"


def estimate_hours(settings: ProtocolSettings, n_subjects: int, *, seconds_per_step: float,
                   seconds_per_case: float, sex_fraction: float = 0.5) -> dict[str, float]:
    """Time a protocol would take [h] from measured speeds (one device, units one after another).

    Training: every cross-validation unit runs ``settings.steps`` steps, the retrained models at most as many.
    Segmentation: each non-hold-out subject is validated once per cohort it belongs to and grid point; each
    hold-out subject once per cohort.  ``sex_fraction``: the share of the larger sex (the men's and women's
    experiments together hold every subject once).
    """
    cohorts = settings.cohorts
    points = len(grid_points(settings.grid))
    units = len(cohorts) * (settings.folds * points + 1)
    steps = len(cohorts) * (settings.folds * points + 1) * settings.steps
    share = {"all": 1.0, "male": sex_fraction, "female": 1.0 - sex_fraction}
    members = sum(share.get(c, 1.0) for c in cohorts) * n_subjects
    holdout = members * settings.test_fraction
    cases = (members - holdout) * points + holdout
    train_h = steps * seconds_per_step / 3600.0
    seg_h = cases * seconds_per_case / 3600.0
    return {"units": float(units), "steps": float(steps), "cases_segmented": float(round(cases)),
            "train_hours": train_h, "segment_hours": seg_h, "total_hours": train_h + seg_h}
