"""Write an image atomically, through :mod:`femurseg.atomic` (staged beside the destination, then renamed).

A reader never sees a half-written file, and a failed write leaves nothing at the destination.  Before the
rename the staged file is read back whole: some writers (NIfTI) do not report a short write on a full disk, and a
truncated file must never take the destination's name.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import SimpleITK as sitk

from femurseg.errors import InputError
from femurseg.atomic import Transaction, transaction

__all__ = ["write_image", "WRITE_FORMATS"]

log = logging.getLogger(__name__)

#: File name endings :func:`write_image` writes.  Longest ending first.
WRITE_FORMATS: tuple[str, ...] = (".nii.gz", ".nii", ".nrrd", ".mha", ".mhd")


def _ending(path: Path) -> str:
    name = path.name.lower()
    for ending in WRITE_FORMATS:
        if name.endswith(ending) and len(name) > len(ending):
            return ending
    raise InputError(f"cannot write {path}: unknown file type; end the name with one of {', '.join(WRITE_FORMATS)}")


def _with_reference(image: sitk.Image, reference: sitk.Image) -> sitk.Image:
    if not isinstance(reference, sitk.Image):
        raise InputError(f"reference must be a SimpleITK.Image, not {type(reference).__name__}")
    if image.GetDimension() != reference.GetDimension() or image.GetSize() != reference.GetSize():
        raise InputError(
            f"image size {image.GetSize()} does not match the reference's {reference.GetSize()} (x, y, z); "
            "resample it onto the reference grid first"
        )
    out = sitk.Image(image)  # SimpleITK copies lazily, so this costs nothing until the geometry changes
    out.SetSpacing(reference.GetSpacing())
    out.SetOrigin(reference.GetOrigin())
    out.SetDirection(reference.GetDirection())
    return out


def _verify_staged(staged: Path, image: sitk.Image, path: Path) -> None:
    """Read the staged image back whole: a short write (a full disk, which the NIfTI writer does not report) fails
    here, before anything takes the destination's name."""
    try:
        back = sitk.ReadImage(str(staged))
    except RuntimeError:
        back = None
    if back is None or back.GetSize() != image.GetSize() or back.GetPixelID() != image.GetPixelID():
        raise InputError(f"cannot write {path}: the written file does not read back whole (is the disk full?)")
    if sitk.GetArrayViewFromImage(back).tobytes() != sitk.GetArrayViewFromImage(image).tobytes():
        raise InputError(f"cannot write {path}: the written file does not read back as written (is the disk full?)")


def write_image(
    image: sitk.Image,
    path: str | os.PathLike[str],
    *,
    reference: sitk.Image | None = None,
    compress: bool = True,
    tx: Transaction | None = None,
) -> Path:
    """Write ``image`` to ``path`` atomically, in the format the file name ending names.

    Parameters
    ----------
    image : SimpleITK.Image
        The image (scan [HU] or label map) to write; its pixel type is kept.
    path : path
        Destination ending in ``.nii.gz``, ``.nii``, ``.nrrd``, ``.mha`` or ``.mhd`` (whose data goes to a
        ``.raw``, or ``.zraw`` when compressed, file beside it).  Missing parent folders are created.
    reference : SimpleITK.Image, optional
        If given, the written image takes exactly the reference's spacing [mm], origin [mm, LPS] and
        direction; its size must equal the reference's.
    compress : bool
        Compress the voxel data (NRRD, MetaImage; ``.nii.gz`` is always and ``.nii`` never compressed).
    tx : femurseg.atomic.Transaction, optional
        Stage the file in this transaction (placed with the invocation's other outputs at its commit); by
        default the file is placed at once, replacing an existing one.

    Returns
    -------
    Path
        The written file (for ``.mhd``, the header).

    Raises
    ------
    InputError
        If the file type is unknown, the size differs from ``reference``'s, or the file cannot be written
        (nothing is left at ``path`` then).

    Notes
    -----
    NIfTI stores geometry in single precision, so spacing, origin and direction round-trip through it to about
    1e-7 (relative); NRRD, MetaImage keep them to double precision.
    """
    if not isinstance(image, sitk.Image):
        raise InputError(f"write_image needs a SimpleITK.Image, not {type(image).__name__}")
    path = Path(path)
    ending = _ending(path)
    if path.is_dir():
        raise InputError(f"cannot write {path}: it is a folder")
    if reference is not None:
        image = _with_reference(image, reference)
    if tx is None:
        with transaction(overwrite=True) as own:
            return write_image(image, path, compress=compress, tx=own)
    # The staged file keeps the final name (inside the private staging folder beside the destination), so ITK
    # picks the right writer and a .mhd header already names its data file as it will be called.
    companions = (path.name[: -len(ending)] + (".zraw" if compress else ".raw"),) if ending == ".mhd" else ()
    staged = tx.stage(path, companions=companions)
    try:
        sitk.WriteImage(image, str(staged), useCompression=compress)
    except RuntimeError as err:
        lines = [ln.strip() for ln in str(err).strip().splitlines() if ln.strip()]
        raise InputError(f"cannot write {path}: {lines[-1] if lines else 'unknown error'}") from None
    if not staged.is_file():
        raise InputError(f"cannot write {path}: the image writer produced no file")
    _verify_staged(staged, image, path)
    log.debug("staged %s", path)
    return path
