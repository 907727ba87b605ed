"""Write a femur mask as a DICOM Segmentation (SEG) object that references its source CT series.

PACS viewers and research platforms (3D Slicer, OHIF, XNAT) display a DICOM SEG over the series it references.
Two segments: 1 "Right femur" and 2 "Left femur" (SNOMED CT: category Anatomical Structure 91723000, type Femur
71341001 with laterality modifier Right 24028007 / Left 7771000).  The mask must lie on the source series' grid
(as :func:`femurseg.segment` returns it); each frame is matched to its source slice by position, so the SEG is
right whatever order the files are in.  Uses highdicom, an optional dependency (``pip install femurseg[dicomseg]``).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from femurseg.conventions import FEMUR_LABELS
from femurseg.errors import InputError
from femurseg.atomic import Transaction, transaction

log = logging.getLogger(__name__)

__all__ = ["write_dicom_seg"]

_GEOMETRY_TOLERANCE_MM = 0.05

#: Patient/study attributes a SEG copies from its source; anonymised series often lack some (type 2: may be empty).
_COPIED_TYPE2 = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyID", "StudyDate", "StudyTime",
                 "AccessionNumber", "ReferringPhysicianName")


def _source_datasets(source_folder: Path, series_uid: str | None):
    import pydicom

    from femurseg.io.dicom import choose_series, read_series_info

    if not source_folder.is_dir():
        raise InputError(f"{source_folder}: a DICOM SEG needs the source DICOM series folder; this is not a folder")
    info = choose_series(read_series_info(source_folder), series_uid=series_uid)
    try:
        # Headers only: a whole-body series' pixel data would be gigabytes, and the SEG only references it.
        datasets = [pydicom.dcmread(str(f), stop_before_pixels=True) for f in info.files]
    except Exception as err:  # pydicom raises many types for damaged files
        raise InputError(f"{source_folder}: cannot read the DICOM series {info.uid}: {err}") from None
    for ds in datasets:
        for keyword in _COPIED_TYPE2:
            if keyword not in ds:
                setattr(ds, keyword, "")
    return datasets


def _frame_indices(mask: sitk.Image, datasets: list) -> list[int]:
    """The mask's z index of every source slice (by its ImagePositionPatient), checking the grids agree."""
    size = mask.GetSize()
    direction = np.asarray(mask.GetDirection()).reshape(3, 3)
    out = []
    for ds in datasets:
        try:
            rows, cols = int(ds.Rows), int(ds.Columns)
            ipp = [float(v) for v in ds.ImagePositionPatient]
            iop = np.asarray([float(v) for v in ds.ImageOrientationPatient])
        except (AttributeError, TypeError, ValueError):
            raise InputError("the source series lacks Rows/Columns/ImagePositionPatient/ImageOrientationPatient; "
                             "cannot reference it from a DICOM SEG") from None
        if (cols, rows) != tuple(size[:2]):
            raise InputError(f"the mask ({size[0]}×{size[1]} in-plane) is not on the source series' grid "
                             f"({cols}×{rows}); segment this series and write its mask")
        if not (np.allclose(iop[:3], direction[:, 0], atol=1e-4) and np.allclose(iop[3:], direction[:, 1], atol=1e-4)):
            raise InputError("the mask's orientation differs from the source series'; segment this series and write its mask")
        idx = np.asarray(mask.TransformPhysicalPointToContinuousIndex(ipp))
        k = int(round(idx[2]))
        off_mm = np.abs(idx - [0, 0, k]) * np.asarray(mask.GetSpacing())
        if not 0 <= k < size[2] or np.any(off_mm > _GEOMETRY_TOLERANCE_MM):
            raise InputError(f"a source slice at {ipp} mm is not a slice of the mask; the mask must be on the source "
                             "series' grid (segment this series and write its mask)")
        out.append(k)
    if len(set(out)) != len(out) or len(out) != size[2]:
        raise InputError(f"the source series has {len(out)} slices at {len(set(out))} positions for a mask of "
                         f"{size[2]} slices; the mask must be on the source series' grid")
    return out


def require_highdicom() -> None:
    """Raise InputError (one line, with the install command) when highdicom is not installed."""
    try:
        import highdicom  # noqa: F401
    except ImportError:
        raise InputError("writing DICOM SEG needs highdicom: pip install femurseg[dicomseg]") from None


def write_dicom_seg(mask: sitk.Image, source_folder: str | os.PathLike[str], path: str | os.PathLike[str], *,
                    series_uid: str | None = None, tx: Transaction | None = None) -> Path:
    """Write a label mask as a DICOM SEG referencing its source CT series, atomically.

    Parameters
    ----------
    mask : SimpleITK.Image
        Labels on the source series' grid (0 background, 1 right femur, 2 left femur).
    source_folder : path
        The DICOM folder the scan was read from.
    path : path
        The SEG file to write (``.dcm``).
    series_uid : str, optional
        The series of ``source_folder`` the mask belongs to (default: the one :func:`femurseg.io.read_image`
        chooses).
    tx : femurseg.atomic.Transaction, optional
        Stage the file in this transaction (placed at its commit); by default it is placed at once.

    Returns
    -------
    Path
        ``path``.

    Raises
    ------
    InputError
        If highdicom is not installed, the folder is not a DICOM series, or the mask is not on its grid.
    """
    require_highdicom()
    import highdicom as hd
    from pydicom.sr.codedict import codes

    from femurseg._version import __version__

    path = Path(path)
    if mask.GetDimension() != 3:
        raise InputError(f"a DICOM SEG needs a 3D mask, got {mask.GetDimension()}D")
    if not path.parent.is_dir():
        raise InputError(f"{path}: the folder {path.parent} does not exist")
    datasets = _source_datasets(Path(source_folder), series_uid)
    if str(getattr(datasets[0], "Modality", "")) not in ("CT", ""):
        log.warning("the source series is %s, not CT", datasets[0].Modality)
    frames = _frame_indices(mask, datasets)
    labels = sitk.GetArrayViewFromImage(mask)
    values = [int(v) for v in np.unique(labels)]
    unknown = sorted(set(values) - {0, *FEMUR_LABELS.values()})
    if unknown:
        raise InputError(f"the mask holds labels {unknown}; a femur mask holds 0, 1 (right femur) and 2 (left femur)")
    pixels = np.stack([labels[k] for k in frames]).astype(np.uint8)
    missing = [k for k in ("FrameOfReferenceUID", "StudyInstanceUID", "SeriesInstanceUID", "PixelSpacing",
                           "ImageOrientationPatient", "ImagePositionPatient") if not getattr(datasets[0], k, None)]
    if missing:
        raise InputError(f"{source_folder}: the source series lacks {', '.join(missing)}, which a DICOM SEG must "
                         "reference; write the mask as .nii.gz instead")

    algorithm = hd.AlgorithmIdentificationSequence(
        name="femurseg", version=__version__, family=codes.cid7162.ArtificialIntelligence,
    )
    descriptions = []
    for side, laterality in (("right", codes.SCT.Right), ("left", codes.SCT.Left)):
        number = FEMUR_LABELS[side]
        desc = hd.seg.SegmentDescription(
            segment_number=number,
            segment_label=f"{side.capitalize()} femur",
            segmented_property_category=codes.SCT.AnatomicalStructure,
            segmented_property_type=codes.SCT.Femur,
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=algorithm,
            tracking_uid=hd.UID(),
            tracking_id=f"{side} femur",
        )
        desc.SegmentedPropertyTypeCodeSequence[0].SegmentedPropertyTypeModifierCodeSequence = [
            hd.sr.CodedConcept.from_code(laterality)
        ]
        descriptions.append(desc)
    try:
        seg = _segmentation(hd, datasets, pixels, descriptions, __version__)
    except (ValueError, AttributeError, TypeError, KeyError) as err:
        raise InputError(f"{source_folder}: cannot build a DICOM SEG on this series ({str(err).splitlines()[0]}); "
                         "write the mask as .nii.gz instead") from None
    if tx is None:
        with transaction(overwrite=True) as own:
            seg.save_as(own.stage(path))
    else:
        seg.save_as(tx.stage(path))
    return path


def _segmentation(hd, datasets, pixels, descriptions, version):  # noqa: ANN001, ANN202 (highdicom objects)
    """The highdicom Segmentation of the femur masks (binary, one segment per side)."""
    return hd.seg.Segmentation(
        source_images=datasets,
        pixel_array=pixels,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions,
        series_instance_uid=hd.UID(),
        series_number=int(getattr(datasets[0], "SeriesNumber", 0) or 0) + 1000,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer="femurseg",
        manufacturer_model_name="femurseg V-Net",
        software_versions=version,
        device_serial_number="none",
        series_description="femurseg proximal femur",
        omit_empty_frames=False,
    )
