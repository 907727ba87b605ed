"""CSV lists of cases: one row per case, file columns resolved against the list's folder, an optional case_id.

The one reader of such lists (``femurseg segment LIST.csv``: column ``path``; ``femurseg qct LIST.csv``: columns
``path`` and ``mask``).  Every problem is refused with the list's name, the line and what to fix.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path

from femurseg.errors import InputError

__all__ = ["CaseRow", "read_case_list"]


@dataclass(frozen=True)
class CaseRow:
    """One row of a case list: its line number, ``case_id`` ('' when not given) and its files by column."""

    line: int
    case_id: str
    paths: dict[str, Path]


def _plain_name(case_id: str, where: str) -> str:
    if case_id and (case_id in (".", "..") or any(c in case_id for c in "/\\\0") or case_id.startswith(".")):
        raise InputError(f"{where}: case_id {case_id!r} must be a plain name (no folders, no leading dot): it names "
                         "the output files")
    return case_id


def read_case_list(path: str | os.PathLike[str], *, columns: tuple[str, ...] = ("path",)) -> list[CaseRow]:
    """Read a CSV list of cases.

    Parameters
    ----------
    path : str or PathLike
        The CSV (UTF-8, a BOM accepted, header row).
    columns : tuple of str
        The file columns every row must fill; relative paths are taken from the list's folder and must exist.

    Returns
    -------
    list of CaseRow

    Raises
    ------
    InputError
        Unreadable file, a missing column, an empty cell, a file that does not exist, a case_id that is not a
        plain name.
    """
    p = Path(path)
    try:
        with open(p, newline="", encoding="utf-8-sig") as fh:
            rows = list(csv.DictReader(fh))
    except UnicodeDecodeError as err:
        raise InputError(f"{p} is not UTF-8 text (byte {err.start}); save the list as UTF-8 CSV") from None
    except (OSError, csv.Error) as err:
        raise InputError(f"cannot read {p} as a CSV list: {getattr(err, 'strerror', None) or err}") from None
    missing = [c for c in columns if not rows or c not in rows[0]]
    if missing:
        raise InputError(f"{p}: a CSV list needs the column(s) {', '.join(repr(c) for c in columns)} with one case "
                         f"per row (missing: {', '.join(missing)})")
    out = []
    for i, row in enumerate(rows, start=2):
        files = {}
        for column in columns:
            cell = (row.get(column) or "").strip()
            if not cell:
                raise InputError(f"{p}, line {i}: the {column!r} cell is empty; give the file or folder")
            f = Path(cell)
            f = f if f.is_absolute() else p.parent / f
            if not f.exists():
                raise InputError(f"{p}, line {i}: {f}: no such file or folder")
            files[column] = f
        out.append(CaseRow(i, _plain_name((row.get("case_id") or "").strip(), f"{p}, line {i}"), files))
    return out
