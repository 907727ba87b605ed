"""Segment many scans into one output folder: :func:`segment_many` (what ``femurseg segment`` runs for a batch).

Per case, the mask (``<case>.nii.gz``, or ``<case>.dcm`` DICOM SEG for a DICOM input on request), its probability
map and its QC picture land together or not at all (:mod:`femurseg.atomic`); a failing case is recorded and the
batch goes on; ``skip_existing`` resumes a long batch after a crash by skipping cases whose mask is already there.
The per-case summaries are returned for the caller to tabulate (``summary.json`` / ``summary.csv`` by the CLI).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from femurseg.atomic import transaction
from femurseg.errors import FemursegError, InputError

__all__ = ["BatchCase", "segment_many"]

log = logging.getLogger(__name__)


@dataclass
class BatchCase:
    """The outcome of one scan of a batch.

    Attributes
    ----------
    name : str
        The case's name (output file stem).
    source : Path
        The scan.
    status : {"ok", "no femur", "error", "skipped"}
    summary : dict
        The segmentation summary (``status == "ok"``), or ``{"error": message}``.
    exit_code : int
        0, or the error's exit code (2 bad input, 3 no femur).
    """

    name: str
    source: Path
    status: str
    summary: dict[str, Any] = field(default_factory=dict)
    exit_code: int = 0


def _mask_path(output_dir: Path, name: str, source: Path, dicom_seg: bool) -> Path:
    return output_dir / (f"{name}.dcm" if dicom_seg and source.is_dir() else f"{name}.nii.gz")


def segment_many(
    cases: Sequence[tuple[str, Path]],
    output_dir: str | Path,
    *,
    segmenter: Any,
    probabilities: bool = False,
    overwrite: bool = False,
    skip_existing: bool = False,
    series_uid: str | None = None,
    dicom_seg: bool = False,
    qc_pictures: bool = False,
    progress: Callable[[int, int, BatchCase], None] | None = None,
) -> list[BatchCase]:
    """Segment every case into ``output_dir``.

    Parameters
    ----------
    cases : sequence of (name, path)
        Unique case names (plain file stems) and their scans (files or DICOM folders).
    output_dir : path
        Created if missing; it must not be an input.
    segmenter : femurseg.inference.Segmenter
        Loaded once, run for every case.
    probabilities : bool
        Also write ``<case>_probabilities.nii.gz``.
    overwrite : bool
        Replace existing outputs (otherwise an existing output fails that case).
    skip_existing : bool
        Skip a case whose mask already exists (resume a batch).
    series_uid : str, optional
        For DICOM folders holding several series.
    dicom_seg : bool
        Write a DICOM SEG (``<case>.dcm``) for DICOM inputs instead of NIfTI.
    qc_pictures : bool
        Also write ``<case>_qc.png``: axial, coronal and sagittal slices through each femoral head with the mask.
    progress : callable, optional
        Called as ``progress(done, total, case)`` after each case.

    Returns
    -------
    list of BatchCase
    """
    output_dir = Path(output_dir)
    if dicom_seg:
        from femurseg.io.dicom_seg import require_highdicom

        require_highdicom()
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
        with transaction(overwrite=True) as probe:  # an unwritable folder fails now, not after the first scan
            probe.stage(output_dir / ".femurseg-probe")
    except OSError as err:
        raise InputError(f"cannot write to {output_dir}: {err.strerror or err}") from None
    out: list[BatchCase] = []
    for i, (name, source) in enumerate(cases, start=1):
        mask_path = _mask_path(output_dir, name, source, dicom_seg)
        if skip_existing and mask_path.exists():
            case = BatchCase(name, source, "skipped", {"case": name, "outputs": {"mask": str(mask_path)}})
        else:
            case = _one(name, source, mask_path, segmenter=segmenter, probabilities=probabilities,
                        overwrite=overwrite, series_uid=series_uid, qc_picture=qc_pictures)
        out.append(case)
        if progress is not None:
            progress(i, len(cases), case)
    return out


def _one(name: str, source: Path, mask_path: Path, *, segmenter: Any, probabilities: bool, overwrite: bool,
         series_uid: str | None, qc_picture: bool) -> BatchCase:
    from femurseg.io import write_image

    try:
        result = segmenter.segment(source, probabilities=probabilities, series_uid=series_uid)
        outputs = {"mask": str(mask_path)}
        with transaction(overwrite=overwrite) as tx:  # a case's files land together
            if mask_path.suffix == ".dcm":
                from femurseg.io.dicom_seg import write_dicom_seg

                write_dicom_seg(result.mask, source, mask_path, series_uid=series_uid, tx=tx)
            else:
                write_image(result.mask, mask_path, tx=tx)
            if result.probabilities is not None:
                prob = mask_path.parent / f"{name}_probabilities.nii.gz"
                outputs["probabilities"] = str(write_image(result.probabilities, prob, tx=tx))
            if qc_picture:
                picture = mask_path.parent / f"{name}_qc.png"
                _qc_picture(result, source, tx.stage(picture), name)
                outputs["qc_picture"] = str(picture)
    except FemursegError as err:
        status = "no femur" if err.exit_code == 3 else "error"
        return BatchCase(name, source, status, {"case": name, "input": {"path": str(source)}, "error": str(err)},
                         exit_code=err.exit_code)
    result.summary["outputs"] = outputs
    result.summary["case"] = name
    return BatchCase(name, source, "ok", result.summary)


def _qc_picture(result: Any, source: Path, staged: Path, name: str) -> None:
    """Slices through the first femoral head found, with the mask's contours (written to ``staged``)."""
    from femurseg.inference.landmarks import femoral_head_centers
    from femurseg.io import read_image
    from femurseg.viz.overlay import save_overlay

    centres = {s: c for s, c in femoral_head_centers(result.mask).items() if c is not None}
    sides = result.summary["sides"]
    volumes = ", ".join(f"{s} {sides[s]['volume_ml']:.1f} mL" for s in ("right", "left") if sides[s]["present"])
    centre = next(iter(centres.values()), None)
    save_overlay(read_image(source), result.mask, staged, center_xyz=None if centre is None else list(centre),
                 title=f"{name}: {volumes or 'no femur'}")
