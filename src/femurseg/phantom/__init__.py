"""The digital hip-QCT phantom: labelled hip CT scans, deterministically from a seed.

Public names:

- :func:`generate` (seed → :class:`PhantomCase`: CT, femur labels, tissue classes, facts), :class:`PhantomOptions`
- :func:`true_frames` (the femurs' true anatomical frames of a case, for measuring ``femurseg.qct``)
- :func:`write_cohort` (a labelled cohort folder), :func:`case_seed`, :func:`cohort_sexes`
- :func:`sample_path` (the bundled sample scan and its labels)
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

# Imported eagerly: the function ``generate`` shares its name with the module ``phantom.generate``, and a lazy
# lookup would hand out the module once anything imported ``femurseg.phantom.generate``.
from femurseg.phantom.generate import PhantomCase, PhantomOptions, generate, true_frames
from femurseg.phantom.cohort import case_seed, cohort_sexes, write_cohort

__all__ = ["generate", "true_frames", "PhantomOptions", "PhantomCase", "write_cohort", "case_seed", "cohort_sexes", "sample_path"]

_SAMPLE_FILES = {"ct": "sample_ct.nii.gz", "labels": "sample_labels.nii.gz", "facts": "sample_facts.json"}


def sample_path(kind: str = "ct") -> Path:
    """Path of the bundled sample hip QCT (a phantom case): ``"ct"``, ``"labels"`` or ``"facts"``.

    Returns
    -------
    Path
        ``sample_ct.nii.gz`` (int16 HU), ``sample_labels.nii.gz`` (uint8: 1 right, 2 left femur) or
        ``sample_facts.json`` inside the installed package.
    """
    from femurseg.errors import InputError

    if kind not in _SAMPLE_FILES:
        raise InputError(f"sample kind must be one of {', '.join(_SAMPLE_FILES)}, not {kind!r}")
    path = Path(str(resources.files("femurseg") / "resources" / "sample" / _SAMPLE_FILES[kind]))
    if not path.is_file():
        raise InputError(f"the bundled sample {path.name} is missing from this installation; reinstall femurseg")
    return path
