"""The one reader of a cohort folder's ``cohort.csv`` (see docs/cohort_format.md).

Training reads it for the ``sex`` column (stratified splits), evaluation for grouping results (``--by sex``), the
phantom's tests for its own rows. Values stay strings: the file is a user's table, and only the caller knows which
columns it needs and how to parse them.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

from femurseg.errors import InputError

__all__ = ["read_cohort_table", "case_column"]


def read_cohort_table(path: str | os.PathLike[str]) -> list[dict[str, str]]:
    """The rows of a ``cohort.csv``, each a dict of column name to stripped string value.

    Parameters
    ----------
    path
        The CSV file (comma-separated, header row, UTF-8; a BOM is accepted).

    Raises
    ------
    InputError
        Missing or unreadable file, no ``case_id`` column, an empty or repeated ``case_id``.
    """
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{p} does not exist; a cohort folder holds cohort.csv")
    try:
        with p.open(newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            if reader.fieldnames is None or "case_id" not in [f.strip() for f in reader.fieldnames]:
                raise InputError(f"{p}: needs a 'case_id' column (the file stem of each case)")
            rows = [{(k or "").strip(): (v or "").strip() for k, v in row.items() if k is not None} for row in reader]
    except (UnicodeDecodeError, csv.Error) as err:
        raise InputError(f"{p}: not a readable UTF-8 CSV file ({err})") from None
    seen: set[str] = set()
    for i, row in enumerate(rows, start=2):
        cid = row.get("case_id", "")
        if not cid:
            raise InputError(f"{p}: line {i} has an empty case_id")
        if cid in seen:
            raise InputError(f"{p}: case_id {cid!r} appears more than once")
        seen.add(cid)
    return rows


def case_column(path: str | os.PathLike[str], column: str) -> dict[str, str]:
    """One column of a ``cohort.csv`` by case: ``{case_id: value}`` (empty cells give ``""``).

    Raises
    ------
    InputError
        As :func:`read_cohort_table`, or when the column does not exist (the message lists those that do).
    """
    rows = read_cohort_table(path)
    if rows and column not in rows[0]:
        raise InputError(f"{path}: no column {column!r}; it has {', '.join(k for k in rows[0] if k != 'case_id')}")
    return {row["case_id"]: row.get(column, "") for row in rows}
