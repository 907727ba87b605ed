"""Labelled cases for training: reading a cohort folder or an nnU-Net raw dataset, and preparing the regions
of interest (ROIs) the network trains on.

Two layouts are read:

- a **cohort folder** (what ``femurseg phantom`` writes, and the documented format for a user's own cohort)::

      DIR/images/<case>.nii.gz      scan [HU]
      DIR/labels/<case>.nii.gz      uint8: 0 background, 1 right femur, 2 left femur (patient's sides)
      DIR/cohort.csv                optional; a ``case_id`` column (and ``sex``, used to stratify the split)

- an **nnU-Net raw dataset**::

      DIR/dataset.json              "labels": {"background": 0, "femur_right": 1, "femur_left": 2} (or one "femur")
      DIR/imagesTr/<case>_0000.nii.gz
      DIR/labelsTr/<case>.nii.gz

  A single "femur" label is split into sides by connected components and world x (in LPS the patient's right is
  at smaller x).

Each case is prepared once (:func:`prepare_volumes`): resampled at the target spacing onto an LPS grid around each
femur (bounding box + ROI margin + room for the training-time jitter), kept as int16 HU and uint8 target, and
cached as ``.npy`` files in the run folder (memory-mapped, so data-loading workers share them).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from femurseg.atomic import transaction, write_text
from femurseg.conventions import LEFT_FEMUR, RIGHT_FEMUR
from femurseg.errors import InputError
from femurseg.geometry import Grid, split_femur_by_side, unsided_two_femurs  # noqa: F401 (re-exported)
from femurseg.io.cohort_table import read_cohort_table
from femurseg.models.preprocessing import (
    Preprocessing,
    mirror_x,
    resample_image,
    resample_labels,
    resample_fraction,
    roi_grid,
    scan_grid,
    world_box_of_mask,
)

log = logging.getLogger(__name__)

_IMAGE_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".mha", ".mhd")
#: Bump when the prepared arrays change meaning, so stale caches are not reused.
_CACHE_VERSION = 2  # 2: femur volumes also hold the femur's fraction per voxel (``soft``)


@dataclass(frozen=True)
class CaseRecord:
    """One labelled case on disk.

    Attributes
    ----------
    case_id : str
    image : Path
        The scan.
    labels : Path
        Its label map.
    sex : str or None
        "F"/"M" (or whatever the cohort uses), for stratifying the validation split.
    right_values, left_values : tuple of int
        Label values in the file that mean the patient's right / left femur.
    femur_values : tuple of int
        Label values meaning "femur" without a side: split by connected component and world x.
    other_values : tuple of int
        Further label values the dataset declares (other structures of an nnU-Net dataset): ignored.  Any value
        not declared is refused.
    """

    case_id: str
    image: Path
    labels: Path
    sex: str | None = None
    right_values: tuple[int, ...] = (RIGHT_FEMUR,)
    left_values: tuple[int, ...] = (LEFT_FEMUR,)
    femur_values: tuple[int, ...] = ()
    other_values: tuple[int, ...] = ()


# ---------------------------------------------------------------------------------------------------------------
# Finding cases


def _strip_suffix(name: str) -> str | None:
    for suffix in _IMAGE_SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return None


def _files_by_stem(folder: Path) -> dict[str, Path]:
    out: dict[str, Path] = {}
    for p in sorted(folder.iterdir()):
        stem = _strip_suffix(p.name)
        if stem is not None and p.is_file() and not p.name.startswith("."):
            out[stem] = p
    return out


def find_cases(data_dir: str | Path | Sequence[str | Path]) -> list[CaseRecord]:
    """The labelled cases of a cohort folder or an nnU-Net raw dataset, sorted by case id.

    Several folders train together (e.g. phantom, real-anatomy and negative cohorts): their case ids are then
    prefixed with the folder's name, ``<folder>_<case>``, so they cannot collide.

    Raises
    ------
    InputError
        Missing folder, unknown layout, no cases, an image without a label, a cohort.csv case without files,
        a dataset.json without a femur label, two folders of the same name.
    """
    if not isinstance(data_dir, (str, Path)):
        from dataclasses import replace

        roots = [Path(d) for d in data_dir]
        if len(roots) == 1:
            return find_cases(roots[0])
        names = [r.name for r in roots]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise InputError(f"two data folders named {', '.join(twice)}: case ids would collide; rename one")
        out = [replace(r, case_id=f"{name}_{r.case_id}") for root, name in zip(roots, names) for r in find_cases(root)]
        return sorted(out, key=lambda r: r.case_id)
    root = Path(data_dir)
    if not root.is_dir():
        raise InputError(f"{root}: no such folder; give a cohort folder (images/, labels/) or an nnU-Net dataset")
    if (root / "dataset.json").is_file() or (root / "imagesTr").is_dir():
        return _find_nnunet(root)
    if (root / "images").is_dir() or (root / "labels").is_dir():
        return _find_cohort(root)
    raise InputError(
        f"{root}: neither a cohort folder (images/ and labels/) nor an nnU-Net dataset (dataset.json, imagesTr/, labelsTr/)"
    )


def _find_cohort(root: Path) -> list[CaseRecord]:
    for sub in ("images", "labels"):
        if not (root / sub).is_dir():
            raise InputError(f"{root}: the cohort folder has no {sub}/ folder")
    images, labels = _files_by_stem(root / "images"), _files_by_stem(root / "labels")
    sexes: dict[str, str | None] = {}
    csv_path = root / "cohort.csv"
    if csv_path.is_file():
        sexes = {row["case_id"]: row.get("sex") or None for row in read_cohort_table(csv_path)}
        ids = sorted(sexes)
        missing = [c for c in ids if c not in images]
        if missing:
            raise InputError(f"{csv_path}: case(s) {', '.join(missing[:5])} have no image in {root / 'images'}")
    else:
        ids = sorted(images)
    if not ids:
        raise InputError(f"{root}: no cases found (no images in {root / 'images'})")
    unlabelled = [c for c in ids if c not in labels]
    if unlabelled:
        raise InputError(
            f"{root}: image(s) without a label map in labels/: {', '.join(unlabelled[:5])}"
            + (f" and {len(unlabelled) - 5} more" if len(unlabelled) > 5 else "")
        )
    return [CaseRecord(case_id=c, image=images[c], labels=labels[c], sex=sexes.get(c)) for c in ids]


def _label_roles(labels: dict) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
    """(right, left, unsided) femur values of a dataset.json ``labels`` mapping (v2 name→value or v1 value→name)."""
    pairs: list[tuple[str, int]] = []
    for k, v in labels.items():
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            pairs.append((str(k), int(v)))
        elif isinstance(v, list) and v and all(isinstance(x, int) for x in v):
            pairs.extend((str(k), int(x)) for x in v)  # nnU-Net region labels: take each value
        elif str(k).lstrip("-").isdigit():
            pairs.append((str(v), int(k)))
    right, left, femur = [], [], []
    for name, value in pairs:
        tokens = set(re.split(r"[^a-z]+", name.lower()))
        if value == 0 or "femur" not in tokens and "femoral" not in tokens and "femurs" not in tokens:
            continue
        if tokens & {"right", "r", "rt"}:
            right.append(value)
        elif tokens & {"left", "l", "lt"}:
            left.append(value)
        else:
            femur.append(value)
    return tuple(right), tuple(left), tuple(femur)


def _find_nnunet(root: Path) -> list[CaseRecord]:
    ds_path = root / "dataset.json"
    if not ds_path.is_file():
        raise InputError(f"{root}: an nnU-Net dataset needs a dataset.json with its 'labels'")
    try:
        ds = json.loads(ds_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise InputError(f"{ds_path}: not a readable JSON file ({err})") from None
    if not isinstance(ds, dict) or not isinstance(ds.get("labels"), dict):
        raise InputError(f"{ds_path}: needs a 'labels' object, e.g. {{\"background\": 0, \"femur_right\": 1, \"femur_left\": 2}}")
    right, left, femur = _label_roles(ds["labels"])
    if not (right or left or femur):
        raise InputError(
            f"{ds_path}: no femur label among {sorted(map(str, ds['labels']))}; name them e.g. 'femur_right' and "
            "'femur_left', or 'femur'"
        )
    if femur and (right or left):
        raise InputError(f"{ds_path}: has both sided and unsided femur labels; use one or the other")
    for sub in ("imagesTr", "labelsTr"):
        if not (root / sub).is_dir():
            raise InputError(f"{root}: the nnU-Net dataset has no {sub}/ folder")
    suffix = ds.get("file_ending", None)
    images: dict[str, Path] = {}
    for stem, path in _files_by_stem(root / "imagesTr").items():
        if suffix and not path.name.endswith(suffix):
            continue
        m = re.fullmatch(r"(.+)_(\d{4})", stem)
        if m is None:
            continue
        if m.group(2) != "0000":
            raise InputError(f"{path}: only single-channel (CT) datasets are supported; found channel {m.group(2)}")
        images[m.group(1)] = path
    if not images:
        raise InputError(f"{root / 'imagesTr'}: no cases found (expected <case>_0000.nii.gz files)")
    labels = _files_by_stem(root / "labelsTr")
    unlabelled = sorted(c for c in images if c not in labels)
    if unlabelled:
        raise InputError(f"{root}: image(s) without a label map in labelsTr/: {', '.join(unlabelled[:5])}")
    return [
        CaseRecord(case_id=c, image=images[c], labels=labels[c], right_values=right, left_values=left, femur_values=femur,
                   other_values=tuple(int(v) for v in ds["labels"].values() if isinstance(v, int)))
        for c in sorted(images)
    ]


# ---------------------------------------------------------------------------------------------------------------
# Loading one case


def _same_geometry(a, b) -> bool:  # noqa: ANN001 (SimpleITK images)
    if a.GetSize() != b.GetSize():
        return False
    sp = np.asarray(a.GetSpacing())
    tol = 1e-3 * float(sp.min())
    return (
        np.allclose(a.GetSpacing(), b.GetSpacing(), rtol=1e-4, atol=0)
        and np.allclose(a.GetOrigin(), b.GetOrigin(), atol=tol, rtol=0)
        and np.allclose(a.GetDirection(), b.GetDirection(), atol=1e-4, rtol=0)
    )


def load_case(record: CaseRecord):  # noqa: ANN201 (SimpleITK images, imported lazily)
    """The scan and its side label map (0, 1 right, 2 left) of one case.

    Returns
    -------
    image : SimpleITK.Image
        The scan [HU], as read.
    labels : SimpleITK.Image of uint8
        Same geometry as ``image``.

    An all-zero label map is a negative case (a scan without a femur: it teaches the locator where femurs are
    not); a label map with other values but no femur value is refused (wrong label values).

    Raises
    ------
    InputError
        Unreadable files, a label map whose geometry differs from the scan's, or non-zero labels none of which is
        a femur value.
    """
    import SimpleITK as sitk

    from femurseg.io import grid_of, read_image

    image = read_image(record.image)
    raw = read_image(record.labels)
    if not _same_geometry(image, raw):
        raise InputError(
            f"{record.labels}: label map geometry differs from its scan {record.image.name} "
            f"(size {raw.GetSize()} vs {image.GetSize()}, spacing {tuple(round(s, 4) for s in raw.GetSpacing())} vs "
            f"{tuple(round(s, 4) for s in image.GetSpacing())}); resample the labels onto the scan"
        )
    arr = sitk.GetArrayViewFromImage(raw)
    if np.issubdtype(arr.dtype, np.floating):
        arr = np.rint(arr)
    arr = np.asarray(arr).astype(np.int64, copy=False)
    out = np.zeros(arr.shape, np.uint8)
    known = {0, *record.right_values, *record.left_values, *record.femur_values, *record.other_values}
    unknown = sorted(int(v) for v in np.unique(arr) if int(v) not in known)
    if unknown:
        raise InputError(f"{record.labels}: label value(s) {unknown[:10]} mean nothing here (expected 0 background, "
                         f"{RIGHT_FEMUR} right femur, {LEFT_FEMUR} left femur); relabel the map")
    if not record.femur_values and record.right_values == (RIGHT_FEMUR,) and unsided_two_femurs(arr, grid_of(raw)):
        raise InputError(f"{record.labels}: both femurs carry the value {RIGHT_FEMUR} (unsided labels); femurseg's "
                         f"labels are {RIGHT_FEMUR} right, {LEFT_FEMUR} left femur (patient's sides): relabel by side")
    if record.femur_values:
        femur = np.isin(arr, record.femur_values)
        out = split_femur_by_side(femur, grid_of(raw))
    else:
        out[np.isin(arr, record.right_values)] = RIGHT_FEMUR
        out[np.isin(arr, record.left_values)] = LEFT_FEMUR
    if not out.any() and arr.any():
        present = sorted(int(v) for v in np.unique(arr))[:10]
        raise InputError(
            f"{record.labels}: no femur label found (values present: {present}; expected "
            f"{RIGHT_FEMUR} right femur, {LEFT_FEMUR} left femur)"
        )
    labels = sitk.GetImageFromArray(out)
    labels.CopyInformation(image)
    return image, labels


# ---------------------------------------------------------------------------------------------------------------
# Validation split


def split_cases(
    records: Sequence[CaseRecord], *, val_fraction: float, val_cases: Sequence[str] = (), seed: int
) -> tuple[list[CaseRecord], list[CaseRecord]]:
    """Training and validation cases.

    ``val_cases`` names them explicitly; otherwise ``round(val_fraction · n)`` cases (at least 1 when
    ``val_fraction`` > 0 and there are 2 or more cases) are drawn, stratified by sex (each sex contributes in
    proportion, largest remainders first), with a generator seeded by ``seed``.

    Raises
    ------
    InputError
        A named validation case that does not exist, or no training case left.
    """
    records = list(records)
    if val_cases:
        ids = {r.case_id for r in records}
        unknown = [c for c in val_cases if c not in ids]
        if unknown:
            raise InputError(f"val_cases: unknown case(s) {', '.join(unknown[:5])}")
        chosen = set(val_cases)
    else:
        n_val = int(round(val_fraction * len(records)))
        if val_fraction > 0 and len(records) >= 2:
            n_val = max(n_val, 1)
        n_val = min(n_val, len(records) - 1)
        rng = np.random.default_rng(np.random.SeedSequence([seed, 0x5EED_5B17]))
        strata: dict[str, list[CaseRecord]] = {}
        for r in records:
            strata.setdefault(r.sex or "?", []).append(r)
        keys = sorted(strata)
        quota = {k: n_val * len(strata[k]) / len(records) for k in keys}
        take = {k: int(np.floor(quota[k])) for k in keys}
        for k in sorted(keys, key=lambda k: (-(quota[k] - take[k]), k))[: n_val - sum(take.values())]:
            take[k] += 1
        chosen = set()
        for k in keys:
            members = strata[k]
            for i in rng.permutation(len(members))[: take[k]]:
                chosen.add(members[int(i)].case_id)
    train = [r for r in records if r.case_id not in chosen]
    val = [r for r in records if r.case_id in chosen]
    if not train:
        raise InputError("no training case left after the validation split; add cases or lower val_fraction")
    return train, val


# ---------------------------------------------------------------------------------------------------------------
# Prepared volumes


@dataclass
class Volume:
    """One prepared training/validation volume at model resolution.

    Attributes
    ----------
    case_id : str
    side : {"right", "left", "both"}
        The femur it holds ("both" for the whole-scan locator); left volumes are already mirrored.
    image : (Z, Y, X) ndarray of int16
        Intensities [HU], outside the scan the window's low end.
    target : (Z, Y, X) ndarray of uint8
        Class indices: 0/1 (femur model) or 0/1/2 (locator).
    roi_start, roi_stop : (3,) tuple of int
        The nominal ROI (bounding box + ``roi_margin_mm``) inside the arrays [voxels]; the rest is context for
        the training-time jitter.
    spacing_zyx : (3,) tuple of float
        [mm].
    foreground : (N, 3) ndarray of int32
        Indices of (a subsample of) target voxels > 0.
    surface : (M, 3) ndarray of int32
        Indices of (a subsample of) target voxels > 0 with a background neighbour.
    head_surface : (K, 3) ndarray of int32
        The surface voxels in the top :data:`HEAD_REGION_MM` of the femur (largest z: the grids are LPS, z points
        to the head): the femoral head, the upper neck and the tip of the greater trochanter, where the phantom
        hold-out's errors are densest (empty for a whole-scan locator volume).
    soft : (Z, Y, X) ndarray of uint8, optional
        Femur model: the label linearly interpolated at each voxel centre, × 255 (``target`` is ``soft >= 128``,
        i.e. ≥ 0.5): a partial-volume estimate (exact only where the label's grid is near the model's; a finer
        label grid gives a sharper edge, thick label slices a wider one), the targets of ``soft_targets``
        training.  None for a locator.
    """

    case_id: str
    side: str
    image: np.ndarray
    target: np.ndarray
    roi_start: tuple[int, int, int]
    roi_stop: tuple[int, int, int]
    spacing_zyx: tuple[float, float, float]
    foreground: np.ndarray
    surface: np.ndarray
    head_surface: np.ndarray
    soft: np.ndarray | None = None


_MAX_POINTS = 50_000
#: Depth of the "head" region under the femur's top [mm]: the femoral head (diameter 40–55 mm) down to the neck.
HEAD_REGION_MM: float = 40.0


def _points(mask: np.ndarray, key: int) -> np.ndarray:
    idx = np.argwhere(mask).astype(np.int32)
    if len(idx) > _MAX_POINTS:
        rng = np.random.default_rng(key)
        idx = idx[np.sort(rng.choice(len(idx), _MAX_POINTS, replace=False))]
    return idx


def _with_points(case_id: str, side: str, image: np.ndarray, target: np.ndarray, start, stop, spacing,
                 soft: np.ndarray | None = None) -> Volume:
    from scipy import ndimage

    fg = target > 0
    surface = fg & ~ndimage.binary_erosion(fg)
    head = np.zeros_like(surface)
    zs = np.flatnonzero(fg.any(axis=(1, 2)))
    if side != "both" and len(zs):
        top = int(zs[-1])
        bottom = max(0, top + 1 - int(round(HEAD_REGION_MM / float(spacing[0]))))
        head[bottom:top + 1] = surface[bottom:top + 1]
    key = int.from_bytes(hashlib.sha256(f"{case_id}/{side}".encode()).digest()[:8], "little")
    return Volume(case_id, side, image, target, tuple(start), tuple(stop), tuple(spacing), _points(fg, key),
                  _points(surface, key + 1), _points(head, key + 2), soft)


def _prepare_case(record: CaseRecord, preprocessing: Preprocessing, context_mm: float) -> list[tuple]:
    """[(side, image float, target uint8, soft uint8 or None, roi_start, roi_stop)] of one case."""
    import SimpleITK as sitk

    image, labels = load_case(record)
    fill = preprocessing.hu_window[0]
    spacing = tuple(float(s) for s in preprocessing.target_spacing_zyx)
    out = []
    if preprocessing.task == "locate":
        grid = scan_grid(image, spacing_zyx=spacing)
        img = resample_image(image, grid, fill_hu=fill)
        tgt = resample_labels(labels, grid, values=(RIGHT_FEMUR, LEFT_FEMUR))
        out.append(("both", img, tgt, None, (0, 0, 0), tuple(grid.shape_zyx)))
        return out
    for side, value in (("right", RIGHT_FEMUR), ("left", LEFT_FEMUR)):
        mask = sitk.Equal(labels, value)
        box = world_box_of_mask(mask)
        if box is None:
            log.info("%s: no %s femur; skipped", record.case_id, side)
            continue
        # As inference does: a ROI is never smaller than a patch.
        nominal = roi_grid(*box, spacing_zyx=spacing, margin_mm=preprocessing.roi_margin_mm,
                           min_shape_zyx=preprocessing.patch_size_zyx)
        # The stored grid extends the nominal one by whole voxels, so both share their voxel centres.
        k = np.ceil(context_mm / np.asarray(spacing)).astype(int)
        grid = Grid(
            shape_zyx=tuple(int(n + 2 * kk) for n, kk in zip(nominal.shape_zyx, k)),
            spacing_zyx=nominal.spacing_zyx,
            origin_xyz=tuple(float(o - kk * s) for o, kk, s in zip(nominal.origin_xyz, k[::-1], spacing[::-1])),
        )
        start = tuple(int(kk) for kk in k)
        stop = tuple(int(kk + n) for kk, n in zip(k, nominal.shape_zyx))
        img = resample_image(image, grid, fill_hu=fill)
        fraction = resample_fraction(mask, grid)
        tgt = (fraction >= 0.5).astype(np.uint8)
        soft = np.rint(np.clip(fraction, 0.0, 1.0) * 255.0).astype(np.uint8)  # >= 128 exactly where fraction >= 0.5
        if side == "left" and preprocessing.mirror_left:
            img, tgt, soft = mirror_x(img), mirror_x(tgt), mirror_x(soft)
            xs = grid.shape_zyx[2]
            start, stop = (start[0], start[1], xs - stop[2]), (stop[0], stop[1], xs - start[2])
        out.append((side, img, tgt, soft, start, stop))
    return out


def _cache_key(record: CaseRecord, preprocessing: Preprocessing, context_mm: float) -> str:
    from femurseg.config import to_dict

    parts = {
        "version": _CACHE_VERSION,
        "record": {k: str(v) for k, v in asdict(record).items()},
        "files": [(os.path.getsize(p), os.path.getmtime(p)) for p in (record.image, record.labels)],
        "preprocessing": to_dict(preprocessing),
        "context_mm": context_mm,
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


def _save_npy(path: Path, array: np.ndarray) -> None:
    """Write a cache array atomically (runs sharing a cache may write the same case at once)."""
    with transaction(overwrite=True) as tx, tx.stage(path).open("wb") as fh:
        np.save(fh, array)


def prepare_volumes(
    records: Iterable[CaseRecord],
    *,
    preprocessing: Preprocessing,
    context_mm: float,
    cache_dir: str | Path | None = None,
    progress: bool = False,
) -> list[Volume]:
    """Every case's ROIs (or whole scan, for a locator) at model resolution.

    Parameters
    ----------
    records : iterable of CaseRecord
    preprocessing : Preprocessing
    context_mm : float
        Extra image kept around each nominal ROI [mm] (for the ROI jitter and rotations of training patches).
    cache_dir : path, optional
        Where prepared arrays are cached as ``.npy`` (keyed by the files, their sizes and times, and the
        preprocessing) and read back memory-mapped.
    progress : bool
        Show a progress bar.

    Returns
    -------
    list of Volume
        In case order, right before left.
    """
    records = list(records)
    cache = Path(cache_dir) if cache_dir is not None else None
    if cache is not None:
        cache.mkdir(parents=True, exist_ok=True)
    it: Iterable[CaseRecord] = records
    if progress:
        from tqdm.auto import tqdm

        it = tqdm(records, desc="preparing cases", unit="case")
    volumes: list[Volume] = []
    spacing = tuple(float(s) for s in preprocessing.target_spacing_zyx)
    for record in it:
        parts = None
        if cache is not None:
            key = _cache_key(record, preprocessing, context_mm)
            index = cache / f"{record.case_id}.{key}.json"
            if index.is_file():
                meta = json.loads(index.read_text(encoding="utf-8"))
                parts = [
                    (m["side"], *(np.load(cache / m[k], mmap_mode="r") if m.get(k) else None
                                  for k in ("image", "target", "soft")),
                     tuple(m["roi_start"]), tuple(m["roi_stop"]))
                    for m in meta
                ]
        if parts is None:
            parts = [
                (side, np.clip(np.rint(img), -32768, 32767).astype(np.int16), tgt, soft, start, stop)
                for side, img, tgt, soft, start, stop in _prepare_case(record, preprocessing, context_mm)
            ]
            if cache is not None:
                meta = []
                for side, img, tgt, soft, start, stop in parts:
                    arrays = {"image": img, "target": tgt, "soft": soft}
                    names = {k: f"{record.case_id}.{key}.{side}.{k}.npy" if a is not None else None
                             for k, a in arrays.items()}
                    for k, a in arrays.items():
                        if a is not None:
                            _save_npy(cache / names[k], a)
                    meta.append({"side": side, **names, "roi_start": list(start), "roi_stop": list(stop)})
                write_text(index, json.dumps(meta))  # atomic: runs sharing a cache may write it at once
        for side, img, tgt, soft, start, stop in parts:
            volumes.append(_with_points(record.case_id, side, img, tgt, start, stop, spacing, soft))
    return volumes
