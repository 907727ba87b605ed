"""The paper's data splits on a user's cohort: a stratified hold-out, then K folds of the rest (Zhao et al. 2020).

Zhao et al. held out 10 % of 397 subjects for the test and ran 10-fold cross-validation on the other 90 %, on the
entire cohort and then on men and women separately.  :func:`protocol_splits` reproduces that design, fixed by a
seed, for any cohort:

- strata are (sex, number of labelled sides), so the hold-out and every fold keep the cohort's proportions of men
  and women and of one-hip cases;
- the hold-out takes ``round(test_fraction · n)`` subjects, each stratum in proportion (largest remainders first);
- the rest is dealt into ``folds`` folds stratum by stratum (a shuffled round-robin whose starting fold rotates,
  so fold sizes differ by at most one);
- the men-only and women-only experiments use the same hold-out subjects of their sex, and their folds are the
  whole cohort's folds restricted to that sex (a subject is never validation in one experiment and training for
  the same fold in another).

The result is plain JSON (``splits.json``), written first by the protocol so that every later unit reads it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from femurseg.errors import InputError

__all__ = ["Subject", "normalise_sex", "protocol_splits", "write_splits", "read_splits", "COHORTS"]

#: The experiments of the paper: the entire cohort, then men and women.
COHORTS: tuple[str, ...] = ("all", "male", "female")
_SEX = {"m": "M", "male": "M", "man": "M", "f": "F", "female": "F", "woman": "F", "w": "F"}


@dataclass(frozen=True)
class Subject:
    """One labelled subject of a cohort.

    Attributes
    ----------
    case_id : str
    sex : {"M", "F"} or None
        Normalised with :func:`normalise_sex`; None when the cohort has no sex column (or the cell is empty).
    n_sides : int
        Femurs labelled in the case (1 or 2).
    """

    case_id: str
    sex: str | None = None
    n_sides: int = 2


def normalise_sex(value: object) -> str | None:
    """``"M"``/``"F"`` from the usual spellings (m, male, man, f, female, woman, w; any case); None if empty.

    Raises
    ------
    InputError
        For any other value.
    """
    if value is None:
        return None
    text = str(value).strip().lower()
    if not text:
        return None
    if text not in _SEX:
        raise InputError(f"sex {value!r} is not one of M/F (male/female)")
    return _SEX[text]


def _largest_remainder(sizes: dict[Any, int], total: int) -> dict[Any, int]:
    """Integers proportional to ``sizes`` that sum to ``total`` (Hamilton's method, ties by key order)."""
    n = sum(sizes.values())
    if n == 0:
        return {k: 0 for k in sizes}
    exact = {k: total * v / n for k, v in sizes.items()}
    out = {k: int(np.floor(x)) for k, x in exact.items()}
    left = total - sum(out.values())
    for k in sorted(sizes, key=lambda k: (-(exact[k] - out[k]), str(k)))[:left]:
        out[k] += 1
    return out


def protocol_splits(subjects: Sequence[Subject], *, folds: int = 10, test_fraction: float = 0.1, seed: int = 0,
                    cohorts: Sequence[str] = COHORTS) -> dict[str, Any]:
    """The hold-out and the K folds of every cohort (see the module's docstring).

    Parameters
    ----------
    subjects : sequence of Subject
        Unique case ids.
    folds : int
        K (≥ 2).
    test_fraction : float
        Fraction of subjects held out for the test, in [0, 0.5].
    seed : int
        Fixes every draw.
    cohorts : sequence of {"all", "male", "female"}

    Returns
    -------
    dict
        ``{"seed", "folds", "test_fraction", "holdout": [ids], "cohorts": {name: {"holdout": [ids], "folds":
        [[validation ids of fold k] ...], "train": [ids outside the hold-out]}}}``; every list sorted.

    Raises
    ------
    InputError
        Duplicate ids, an unknown cohort, a sex cohort for a cohort without sex, too few subjects for K folds.
    """
    subjects = list(subjects)
    ids = [s.case_id for s in subjects]
    if len(set(ids)) != len(ids):
        raise InputError("case ids must be unique")
    if folds < 2:
        raise InputError(f"folds must be at least 2, not {folds}")
    if not 0.0 <= test_fraction <= 0.5:
        raise InputError(f"the test fraction must be 0–0.5, not {test_fraction}")
    unknown = [c for c in cohorts if c not in COHORTS]
    if unknown:
        raise InputError(f"unknown cohort(s) {unknown}; use {', '.join(COHORTS)}")
    by_sex = {"male": "M", "female": "F"}
    for c in cohorts:
        if c in by_sex and not any(s.sex == by_sex[c] for s in subjects):
            raise InputError(f"the '{c}' experiment needs a sex column with {by_sex[c]} subjects; this cohort has "
                             "none (add a 'sex' column to cohort.csv, or use --cohorts all)")
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0x5A17]))
    strata: dict[tuple[str, int], list[str]] = {}
    for s in sorted(subjects, key=lambda s: s.case_id):
        strata.setdefault((s.sex or "?", int(s.n_sides)), []).append(s.case_id)
    keys = sorted(strata)
    for k in keys:
        rng.shuffle(strata[k])
    n_test = int(round(test_fraction * len(subjects)))
    take = _largest_remainder({k: len(strata[k]) for k in keys}, n_test)
    holdout = sorted(cid for k in keys for cid in strata[k][: take[k]])
    rest = {k: strata[k][take[k]:] for k in keys}
    n_rest = sum(len(v) for v in rest.values())
    if n_rest < folds:
        raise InputError(f"{n_rest} subjects outside the hold-out cannot make {folds} folds; use fewer folds")
    fold_of: dict[str, int] = {}
    start = 0
    for k in keys:
        for i, cid in enumerate(rest[k]):
            fold_of[cid] = (start + i) % folds
        start = (start + len(rest[k])) % folds
    sex_of = {s.case_id: s.sex for s in subjects}
    out: dict[str, Any] = {"seed": int(seed), "folds": int(folds), "test_fraction": float(test_fraction),
                           "holdout": holdout, "cohorts": {}}
    for c in cohorts:
        member = (lambda cid: True) if c == "all" else (lambda cid, sx=by_sex[c]: sex_of[cid] == sx)
        out["cohorts"][c] = {
            "holdout": [cid for cid in holdout if member(cid)],
            "train": sorted(cid for cid in fold_of if member(cid)),
            "folds": [sorted(cid for cid, f in fold_of.items() if f == k and member(cid)) for k in range(folds)],
        }
        if any(not f for f in out["cohorts"][c]["folds"]):
            raise InputError(f"the '{c}' experiment has too few subjects for {folds} folds; use fewer folds")
    return out


def write_splits(splits: dict[str, Any], path: str | os.PathLike[str], *, overwrite: bool = False) -> Path:
    """Write ``splits.json`` atomically (:mod:`femurseg.atomic`)."""
    from femurseg.atomic import write_text

    return write_text(path, json.dumps(splits, indent=1) + "\n", overwrite=overwrite)


def read_splits(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read ``splits.json``; InputError (one line) when it is missing or not a splits file."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise InputError(f"cannot read the splits {path}: {err}") from None
    if not isinstance(data, dict) or not {"holdout", "cohorts", "folds"} <= set(data):
        raise InputError(f"{path} is not a femurseg splits file (holdout, folds, cohorts)")
    return data
