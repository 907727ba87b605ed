"""Cohorts of phantom cases written as a labelled cohort folder (see docs/cohort_format.md).

``DIR/images/<case>.nii.gz`` (CT, int16 HU), ``DIR/labels/<case>.nii.gz`` (uint8: 0 background, 1 right femur,
2 left femur), ``DIR/tissues/<case>.nii.gz`` (uint8 tissue classes), ``DIR/facts/<case>.json`` (everything drawn
and measured), ``DIR/cohort.csv`` (one row per case) and ``DIR/phantom.json`` (resolved options, version, seeds).
Case ``i``'s seed derives from ``(seed, i)`` through :class:`numpy.random.SeedSequence`, so a case is the same
whatever the cohort's size; the same seed gives the same bytes in every file.
"""

from __future__ import annotations

import csv
import gc
import io
import json
import logging
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from femurseg.errors import InputError
from femurseg.phantom.ct import ROD_NAMES
from femurseg.phantom.generate import PhantomOptions, generate

__all__ = [
    "COHORT_COLUMNS",
    "PAPER_COHORT",
    "case_seed",
    "case_id",
    "cohort_sexes",
    "write_cohort",
    "prepare_cohort_folder",
]

log = logging.getLogger(__name__)

#: The cohort of Zhao et al. 2020 (proximal femur V-Net on hip QCT): 397 subjects, 216 women and 181 men.
PAPER_COHORT: dict[str, int] = {"F": 216, "M": 181}

#: Columns of ``cohort.csv``, in order (units in the names).
COHORT_COLUMNS: tuple[str, ...] = (
    "case_id", "sex", "age",
    "head_diameter_right_mm", "head_diameter_left_mm",
    "femur_volume_right_ml", "femur_volume_left_ml",
    "trabecular_vbmd_mg_cm3", "trabecular_vbmd_right_mg_cm3", "trabecular_vbmd_left_mg_cm3",
    "spacing_x_mm", "spacing_y_mm", "spacing_z_mm", "slice_thickness_mm", "noise_sigma_hu",
    "calibration_phantom",
    *(f"rod_{r}_k2hpo4_mg_cm3" for r in ROD_NAMES),
    *(f"rod_{r}_water_mg_cm3" for r in ROD_NAMES),
    "sigma_ct", "beta_ct", "seed",
)


def case_seed(seed: int, index: int) -> int:
    """The seed of case ``index`` of a cohort drawn with ``seed`` (independent of the cohort's size)."""
    return int(np.random.SeedSequence(int(seed), spawn_key=(int(index),)).generate_state(1, dtype=np.uint32)[0])


def case_id(index: int) -> str:
    """The case identifier of case ``index``: ``phantom_0000``, ``phantom_0001`` ..."""
    return f"phantom_{index:04d}"


def cohort_sexes(seed: int, *, cohort: str = "paper") -> list[str]:
    """The sexes of the ``"paper"`` cohort's 397 subjects, 216 ``"F"`` and 181 ``"M"``, shuffled by ``seed``."""
    if cohort != "paper":
        raise InputError(f"cohort {cohort!r} has no fixed sexes; only 'paper' has")
    sexes = np.array(["F"] * PAPER_COHORT["F"] + ["M"] * PAPER_COHORT["M"])
    rng = np.random.default_rng(np.random.SeedSequence(int(seed), spawn_key=(2**31 - 1,)))
    return [str(s) for s in rng.permutation(sexes)]


def _atomic_text(path: Path, text: str) -> None:
    from femurseg.atomic import write_text

    write_text(path, text)


def _csv_text(rows: list[dict[str, Any]]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(COHORT_COLUMNS), lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: _fmt(row.get(k)) for k in COHORT_COLUMNS})
    return buf.getvalue()


def _fmt(value: Any) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, float):
        return f"{value:.6g}"
    return "" if value is None else str(value)


def _row(cid: str, facts: dict[str, Any]) -> dict[str, Any]:
    row = {k: facts.get(k) for k in COHORT_COLUMNS}
    row["case_id"] = cid
    return row


def prepare_cohort_folder(out_dir: str | os.PathLike[str]) -> Path:
    """Create the cohort folder and its sub-folders; raise InputError if it cannot be written."""
    out_dir = Path(out_dir)
    try:
        for sub in ("images", "labels", "tissues", "facts"):
            (out_dir / sub).mkdir(parents=True, exist_ok=True)
        probe = tempfile.NamedTemporaryFile(dir=out_dir, prefix=".probe-", delete=True)
        probe.close()
    except OSError as err:
        raise InputError(f"cannot write to {out_dir}: {err.strerror or err}; choose a writable output folder") from None
    return out_dir


def write_cohort(
    out_dir: str | os.PathLike[str],
    *,
    n: int | None = None,
    seed: int = 0,
    cohort: str = "random",
    options: PhantomOptions | None = None,
    progress: Callable[[int, str], None] | None = None,
) -> Path:
    """Generate ``n`` phantom cases into a cohort folder, one case at a time.

    Parameters
    ----------
    out_dir : path
        The cohort folder (created; existing cases of the same ids are replaced).
    n : int, optional
        Number of cases (required for ``cohort="random"``; for ``"paper"`` it must be 397 or left out).
    seed : int
        Cohort seed; case ``i`` uses :func:`case_seed` ``(seed, i)``.
    cohort : {"random", "paper"}
        ``"random"``: subjects of random sex (1:1); ``"paper"``: the 397 subjects of Zhao et al. 2020, 216 women
        and 181 men in an order shuffled by ``seed``.
    options : PhantomOptions, optional
        Options for every case (a ``sex`` set here is overridden by the paper cohort's).
    progress : callable, optional
        Called as ``progress(done, case_id)`` after each case.

    Returns
    -------
    Path
        The cohort folder.
    """
    if cohort not in ("random", "paper"):
        raise InputError(f"cohort must be 'random' or 'paper', not {cohort!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise InputError(f"seed must be a non-negative integer, not {seed!r}")
    total = sum(PAPER_COHORT.values())
    sexes: list[str] | None = None
    if cohort == "paper":
        if n is not None and n != total:
            raise InputError(f"the paper cohort has {total} subjects; leave out -n or give -n {total}")
        n = total
        sexes = cohort_sexes(seed)
    if n is None or isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n <= 0:
        raise InputError(f"the number of cases must be a positive integer, not {n!r}")
    options = options or PhantomOptions()
    out = Path(out_dir)
    prepare_cohort_folder(out)

    from femurseg._version import __version__
    from femurseg.io import write_image

    seeds = [case_seed(seed, i) for i in range(int(n))]
    meta = {
        "format": "femurseg-cohort",
        "format_version": 1,
        "femurseg_version": __version__,
        "generator": "femurseg.phantom",
        "cohort": cohort,
        "n": int(n),
        "seed": int(seed),
        "case_seeds": {case_id(i): s for i, s in enumerate(seeds)},
        "options": options.to_dict(),
        "labels": {"0": "background", "1": "right femur", "2": "left femur"},
    }
    from femurseg.conventions import TISSUES

    meta["tissues"] = {str(v): k for k, v in TISSUES.items()}
    _atomic_text(out / "phantom.json", json.dumps(meta, indent=2) + "\n")
    rows: list[dict[str, Any]] = []
    for i, s in enumerate(seeds):
        cid = case_id(i)
        opts = options if sexes is None else _with_sex(options, sexes[i])
        case = generate(s, options=opts)
        write_image(case.scan, out / "images" / f"{cid}.nii.gz")
        write_image(case.labels, out / "labels" / f"{cid}.nii.gz")
        write_image(case.tissues, out / "tissues" / f"{cid}.nii.gz")
        facts = dict(case.facts, case_id=cid)
        _atomic_text(out / "facts" / f"{cid}.json", json.dumps(facts, indent=1, sort_keys=True, allow_nan=True) + "\n")
        rows.append(_row(cid, facts))
        # The table is rewritten after each case: an interrupted run leaves a consistent, usable cohort.
        _atomic_text(out / "cohort.csv", _csv_text(rows))
        log.info("%s: seed %d, %s %.0f y, %s", cid, s, facts.get("sex"), facts.get("age", 0.0), case.timings)
        del case, facts
        gc.collect()
        if progress is not None:
            progress(i + 1, cid)
    return out


def _with_sex(options: PhantomOptions, sex: str) -> PhantomOptions:
    from dataclasses import replace

    return replace(options, sex=sex)
