"""Real anatomy for training: expert label maps of real hips turned into tissue maps with femur labels.

The bundled label maps (``resources/anatomy``, MIT, from ``yuta-hi/pelvic-annonation``; see its LICENSE notice)
mark 4 bones and 24 muscles on real pelvic CT at 1×1×3 mm.  Rendered with a random appearance
(:mod:`femurseg.phantom.appearance`) they give training scans of real femur shapes, in their real surroundings,
labelled by an expert's convention, rather than one cadaver's shape drawn by our renderer.

What the label maps do not hold is filled in by rule, and varied per case:

- femur and pelvis are split into cortex and interior by the in-plane distance to the bone's surface (the maps
  are 3 mm thick, so a 3D distance would cap the head with 3 mm of cortex): cortex 0.8–2 mm; in the femoral shaft
  (axial sections under 40 % of the largest one, below it) the cortex is a third of the section's radius and the
  interior is marrow; the femur's surfaces that face up or down at and above its largest section (the head's
  dome) get their first slice as cortex (the subchondral plate; :func:`femurseg.phantom.synth.
  periosteal_partial_volume` renders that slice partly bone, as a 3 mm slice through a 1 mm plate reads);
- the maps draw femoral head and acetabulum touching: the pelvis voxels within 2.5–4.5 mm of the femur become
  soft tissue (the joint's cartilage), so the acetabular cortex lies behind a joint space as on CT (the femur label
  is not touched);
- sacrum and spine: a cortical shell around cancellous bone;
- muscles are muscle; everything else inside the body outline is fat (the appearance adds organ-like blobs), its
  outer 1–3 mm skin; outside is air, with a patient table under the back (or the belly, for a prone patient);
- the femur label is split into the patient's right and left by world x against the midline of the sacrum and
  spine (LPS: the patient's right is at smaller x).

Each case then crops a random field of view along z (the femoral heads always kept) and may keep only one hip.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np

from femurseg.conventions import LEFT_FEMUR, RIGHT_FEMUR, TISSUES
from femurseg.errors import InputError

__all__ = ["LabelmapSubject", "bundled_subjects", "load_subject", "tissues_from_labelmap", "crop_field_of_view"]

#: Classes of the source label maps (``classes.json``).
PELVIS, FEMUR, SACRUM, SPINE = 1, 2, 3, 4
FIRST_MUSCLE, LAST_MUSCLE = 5, 28


@dataclass(frozen=True)
class LabelmapSubject:
    """One real subject's label maps.

    Attributes
    ----------
    name : str
    labels : (Z, Y, X) ndarray of uint8
        Source classes (1 pelvis, 2 femur, 3 sacrum, 4 spine, 5–28 muscles, 0 anything else).
    body : (Z, Y, X) ndarray of bool
        Inside the patient.
    spacing_xyz, origin_xyz : (3,) tuple of float
        Geometry [mm] (x, y, z), identity direction (LPS).
    prone : bool
        Whether the patient lies prone (the table is under the belly).
    """

    name: str
    labels: np.ndarray
    body: np.ndarray
    spacing_xyz: tuple[float, float, float]
    origin_xyz: tuple[float, float, float]
    prone: bool


def _anatomy_dir() -> Path:
    return Path(str(resources.files("femurseg.resources") / "anatomy"))


def bundled_subjects() -> list[str]:
    """Names of the bundled real label-map subjects."""
    index = json.loads((_anatomy_dir() / "subjects.json").read_text(encoding="utf-8"))
    return sorted(index)


def load_subject(name: str) -> LabelmapSubject:
    """Read a bundled subject (see :func:`bundled_subjects`)."""
    import SimpleITK as sitk

    folder = _anatomy_dir()
    index = json.loads((folder / "subjects.json").read_text(encoding="utf-8"))
    if name not in index:
        raise InputError(f"no bundled label-map subject {name!r}; there are {', '.join(sorted(index))}")
    lab = sitk.ReadImage(str(folder / f"{name}_labels.nii.gz"))
    body = sitk.ReadImage(str(folder / f"{name}_body.nii.gz"))
    if not np.allclose(np.reshape(lab.GetDirection(), (3, 3)), np.eye(3), atol=1e-4):
        raise InputError(f"{name}: bundled label maps must have identity direction")
    return LabelmapSubject(
        name=name, labels=sitk.GetArrayFromImage(lab).astype(np.uint8), body=sitk.GetArrayFromImage(body) > 0,
        spacing_xyz=tuple(float(s) for s in lab.GetSpacing()), origin_xyz=tuple(float(o) for o in lab.GetOrigin()),
        prone=bool(index[name].get("prone", False)),
    )


def _inplane_depth(mask: np.ndarray, spacing_yx: tuple[float, float]) -> np.ndarray:
    """Per axial slice, the in-plane distance [mm] of each mask voxel to the nearest outside voxel (0 outside)."""
    from scipy import ndimage

    out = np.zeros(mask.shape, np.float32)
    for z in np.flatnonzero(mask.any(axis=(1, 2))):
        out[z] = ndimage.distance_transform_edt(np.pad(mask[z], 1), sampling=spacing_yx)[1:-1, 1:-1]
    return out


#: Width of the hip joint space carved out of the pelvis label where it touches the femur [mm] (the two
#: cartilages, 2.5–4.5 mm on CT of adult hips; the label maps draw femur and acetabulum touching).
JOINT_SPACE_MM: tuple[float, float] = (2.5, 4.5)


def _joint_space(lab: np.ndarray, spacing_zyx: tuple[float, float, float], width_mm: float) -> np.ndarray:
    """(Z, Y, X) bool: the pelvis voxels within ``width_mm`` of the femur (3D, in mm): the joint's cartilage.

    The femur label is left whole (it is the training label); the acetabular cortex is then drawn behind the gap, so
    a render shows the head's own subchondral plate, a soft-tissue joint space and the acetabulum, as CT does.
    """
    from scipy import ndimage

    femur = lab == FEMUR
    pelvis = lab == PELVIS
    if not femur.any() or not pelvis.any():
        return np.zeros(lab.shape, bool)
    zs = np.flatnonzero(femur.any(axis=(1, 2)))
    pad = int(np.ceil(width_mm / spacing_zyx[0])) + 1
    lo, hi = max(0, zs.min() - pad), min(lab.shape[0], zs.max() + pad + 1)
    near = np.zeros(lab.shape, bool)
    near[lo:hi] = ndimage.distance_transform_edt(~femur[lo:hi], sampling=spacing_zyx) <= width_mm
    return near & pelvis


def z_surface(mask: np.ndarray) -> np.ndarray:
    """(Z, Y, X) bool: the voxels of ``mask`` whose slice above or below is outside it (the array's ends count as
    inside: a field of view's end is no surface)."""
    from scipy import ndimage

    return mask & ~ndimage.binary_erosion(mask, structure=np.ones((3, 1, 1), bool), border_value=1)


def _femur_tissues(femur: np.ndarray, spacing_zyx: tuple[float, float, float], cortex_mm: float,
                   tissues: np.ndarray) -> None:
    """Write cortex, trabecular bone and shaft marrow of one femur into ``tissues`` (in place)."""
    depth = _inplane_depth(femur, spacing_zyx[1:])
    area = femur.sum(axis=(1, 2)).astype(float) * spacing_zyx[1] * spacing_zyx[2]
    z_max = int(np.argmax(area))
    shaft = np.zeros(len(area), bool)
    below = np.arange(len(area)) < z_max  # z grows superiorly (LPS): the shaft is at smaller z
    shaft[below & (area > 0) & (area < 0.4 * area.max())] = True
    thickness = np.full(len(area), cortex_mm, np.float32)
    radius = np.sqrt(area / np.pi)
    thickness[shaft] = np.maximum(cortex_mm, radius[shaft] / 3.0)
    cortical = femur & (depth <= thickness[:, None, None])
    # The head's dome and the other surfaces facing up or down (at and above the largest section) have a cortex
    # too, the subchondral plate: the first slice inside them (an in-plane depth never reaches them).
    cap = z_surface(femur)
    cap[:z_max] = False
    cortical |= cap
    interior = np.where(shaft, TISSUES["marrow"], TISSUES["femur_trabecular"]).astype(np.uint8)  # per slice
    tissues[femur] = interior[np.nonzero(femur)[0]]
    tissues[cortical] = TISSUES["femur_cortical"]


def tissues_from_labelmap(subject: LabelmapSubject, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """The tissue map and the side label map of a subject (see the module's docstring).

    Returns
    -------
    tissues : (Z, Y, X) ndarray of uint8
        :data:`femurseg.conventions.TISSUES` classes.
    labels : (Z, Y, X) ndarray of uint8
        0 background, 1 right femur, 2 left femur.
    """
    from scipy import ndimage

    lab, body = subject.labels, subject.body
    spacing_zyx = tuple(float(s) for s in subject.spacing_xyz[::-1])
    tissues = np.zeros(lab.shape, np.uint8)
    tissues[body] = TISSUES["fat"]
    skin_mm = float(rng.uniform(1.0, 3.0))
    skin = body & (_inplane_depth(body, spacing_zyx[1:]) <= skin_mm)
    tissues[skin] = TISSUES["skin"]
    tissues[(lab >= FIRST_MUSCLE) & (lab <= LAST_MUSCLE)] = TISSUES["muscle"]
    joint = _joint_space(lab, spacing_zyx, float(rng.uniform(*JOINT_SPACE_MM)))
    tissues[joint] = TISSUES["muscle"]
    for cls, interior in ((PELVIS, "pelvis_trabecular"), (SACRUM, "sacrum"), (SPINE, "sacrum")):
        bone = (lab == cls) & ~joint
        depth = _inplane_depth(bone, spacing_zyx[1:])
        tissues[bone] = TISSUES[interior]
        tissues[bone & (depth <= rng.uniform(0.8, 1.8))] = TISSUES["pelvis_cortical"]
    labels = np.zeros(lab.shape, np.uint8)
    femur = lab == FEMUR
    comp, n = ndimage.label(femur)
    mid = lab == SACRUM if (lab == SACRUM).any() else (lab == SPINE) | (lab == PELVIS)
    mid_x = float(np.argwhere(mid)[:, 2].mean()) if mid.any() else lab.shape[2] / 2.0
    cortex_mm = float(rng.uniform(0.8, 2.0))
    for k in range(1, n + 1):
        piece = comp == k
        cx = float(np.argwhere(piece)[:, 2].mean())
        labels[piece] = RIGHT_FEMUR if cx < mid_x else LEFT_FEMUR  # identity direction: index x ~ world x
    for value in (RIGHT_FEMUR, LEFT_FEMUR):
        side = labels == value
        if side.any():
            _femur_tissues(side, spacing_zyx, cortex_mm, tissues)
    _add_table(tissues, body, prone=subject.prone, spacing_yx=spacing_zyx[1:], rng=rng)
    return tissues, labels


def _add_table(tissues: np.ndarray, body: np.ndarray, *, prone: bool, spacing_yx: tuple[float, float],
               rng: np.random.Generator) -> None:
    """A patient table: a slab 8–25 mm thick, 0–5 mm from the body, under the back (the belly if prone)."""
    ys = np.flatnonzero(body.any(axis=(0, 2)))
    if not len(ys):
        return
    gap = int(round(rng.uniform(0.0, 5.0) / spacing_yx[0]))
    thick = int(round(rng.uniform(8.0, 25.0) / spacing_yx[0]))
    ny = tissues.shape[1]
    if prone:
        y1 = max(int(ys.min()) - gap, 0)
        y0 = max(y1 - thick, 0)
    else:
        y0 = min(int(ys.max()) + 1 + gap, ny)
        y1 = min(y0 + thick, ny)
    if y1 > y0:
        slab = tissues[:, y0:y1, :]
        slab[slab == TISSUES["air"]] = TISSUES["table"]


def crop_field_of_view(labels: np.ndarray, spacing_zyx: tuple[float, float, float], rng: np.random.Generator,
                       *, p_one_hip: float = 0.15) -> tuple[slice, slice, slice]:
    """A random field of view: z from 10–120 mm above the femoral heads' top to anywhere at or below their bottom
    (at least 40 mm of femur), all of x, or (with probability ``p_one_hip``) x cut at the midline to one hip.

    Returns the (z, y, x) slices of the crop.
    """
    zs = np.flatnonzero((labels > 0).any(axis=(1, 2)))
    nz, _, nx = labels.shape
    if not len(zs):
        return slice(0, nz), slice(None), slice(None)
    dz = spacing_zyx[0]
    top = int(zs.max())
    z1 = min(nz, top + 1 + int(round(rng.uniform(10.0, 120.0) / dz)))
    lowest = max(int(zs.min()), top - int(round(40.0 / dz)))
    z0 = int(rng.integers(int(zs.min()), lowest + 1)) if rng.random() < 0.6 else int(zs.min())
    z0 = max(0, min(z0, lowest))
    xs = slice(None)
    if rng.random() < p_one_hip:
        right = np.argwhere(labels == RIGHT_FEMUR)[:, 2]
        left = np.argwhere(labels == LEFT_FEMUR)[:, 2]
        if len(right) and len(left):
            mid = int(round(0.5 * (right.max() + left.min())))
            xs = slice(0, mid) if rng.random() < 0.5 else slice(mid, nx)
    return slice(z0, z1), slice(None), xs
