"""One labelled hip-QCT case from a seed: :func:`generate`.

The pipeline: draw a subject (:func:`femurseg.phantom.body.sample_subject`), pose a skeleton for it
(:mod:`femurseg.phantom.anatomy`), draw an acquisition (:func:`femurseg.phantom.ct.sample_scan`), choose the
field of view from the skeleton's landmarks, render the bones with partial volume and the slice profile
(:func:`femurseg.phantom.ct.render_bones`), the soft tissue, table and calibration phantom around them
(:func:`femurseg.phantom.body.render_soft_tissue`), then blur, streaks, noise and quantisation
(:func:`femurseg.phantom.ct.apply_scanner`).  Each stage draws from its own child of the case's
``numpy.random.SeedSequence``, so an override of one stage (say the spacing) leaves the others unchanged.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk

from femurseg.conventions import LEFT_FEMUR, RIGHT_FEMUR
from femurseg.errors import InputError
from femurseg.geometry import Grid
from femurseg.io import image_from_array
from femurseg.phantom import anatomy as _anat
from femurseg.phantom import metal as _metal
from femurseg.phantom import body as _body
from femurseg.phantom import ct as _ct

__all__ = ["PhantomOptions", "PhantomCase", "generate", "choose_grid"]

log = logging.getLogger(__name__)

_MESH_SIDES = ("right", "left")


@dataclass(frozen=True)
class PhantomOptions:
    """Options of :func:`generate`; every ``None`` means "drawn from the seed".

    Attributes
    ----------
    spacing_xyz : (3,) tuple of float, optional
        Voxel spacing [mm], (x, y, z); by default 0.6–1.0 mm in-plane (so the body fits the matrix) and
        0.5–3 mm between slices.
    slice_thickness_mm : float, optional
        Slice thickness (FWHM of the slice profile) [mm]; by default the slice spacing, sometimes more.
    matrix : int
        In-plane matrix [voxels]; 512 as clinical scanners.  Smaller matrices crop the body (for tests).
    sex : {"F", "M"}, optional
        Subject's sex.
    age : float, optional
        Subject's age [years].
    calibration_phantom : bool, optional
        Calibration phantom under the patient: True, False, or random (present in ~85 % of scans).
    noise_sigma_hu : float, optional
        Image noise [HU]; 0 gives a noise-free image.
    recon_circle : bool, optional
        Reconstruction circle on or off (outside it the image, labels and tissues are blank); random (~60 % on).
    femur_mesh : str, optional
        Path of a user's femur surface mesh (STL, PLY, OBJ, VTP) used instead of the bundled template.
    mesh_side : {"right", "left"}
        Which femur ``femur_mesh`` is.
    mesh_scale : float
        Scale applied to ``femur_mesh`` (e.g. 1000 for a mesh in metres).
    z_margins_mm : (2,) tuple of (2,) tuple of float
        Ranges of the field of view's extent above the acetabular roof and below the lesser trochanters [mm].
    metal : float
        Probability [0, 1] that a case holds a hip implant or neck screws (:mod:`femurseg.phantom.metal`).
    anatomy : {"model", "labelmaps", "negatives"}
        ``"model"``: the posed mesh skeleton and modelled soft tissue; ``"labelmaps"``: a bundled real label map
        (:mod:`femurseg.phantom.labelmaps`), always with a random appearance; ``"negatives"``: a scan without a
        femur (:mod:`femurseg.phantom.negatives`; the kinds alternate with the seed), empty labels.
    appearance : {"physics", "random"}
        ``"physics"``: HU from the subject's densities and the scanner's calibration; ``"random"``: per-class
        intensities drawn from wide CT ranges (:mod:`femurseg.phantom.appearance`); labels are the same.
    """

    spacing_xyz: tuple[float, float, float] | None = None
    slice_thickness_mm: float | None = None
    matrix: int = 512
    sex: str | None = None
    age: float | None = None
    calibration_phantom: bool | None = None
    noise_sigma_hu: float | None = None
    recon_circle: bool | None = None
    femur_mesh: str | None = None
    mesh_side: str = "right"
    mesh_scale: float = 1.0
    z_margins_mm: tuple[tuple[float, float], tuple[float, float]] = ((10.0, 40.0), (15.0, 50.0))
    anatomy: str = "model"
    appearance: str = "physics"
    metal: float = 0.0

    def __post_init__(self) -> None:
        if not 0.0 <= float(self.metal) <= 1.0:
            raise InputError(f"the metal fraction must be 0–1, not {self.metal}")
        if self.anatomy not in ("model", "labelmaps", "negatives"):
            raise InputError(f"anatomy must be 'model', 'labelmaps' or 'negatives', not {self.anatomy!r}")
        if self.appearance not in ("physics", "random"):
            raise InputError(f"appearance must be 'physics' or 'random', not {self.appearance!r}")
        if self.spacing_xyz is not None:
            sp = tuple(float(s) for s in self.spacing_xyz)
            if len(sp) != 3 or not all(0.1 <= s <= 10.0 for s in sp):
                raise InputError(f"spacing {self.spacing_xyz} must be three values of 0.1–10 mm, (x, y, z)")
            object.__setattr__(self, "spacing_xyz", sp)
        if not 16 <= int(self.matrix) <= 2048:
            raise InputError(f"matrix {self.matrix} must be 16–2048 voxels")
        if self.sex is not None and self.sex not in ("F", "M"):
            raise InputError(f"sex must be 'F' or 'M', not {self.sex!r}")
        if self.slice_thickness_mm is not None and not 0.1 <= self.slice_thickness_mm <= 10.0:
            raise InputError(f"slice thickness {self.slice_thickness_mm} mm must be 0.1–10 mm")
        if self.noise_sigma_hu is not None and not 0.0 <= self.noise_sigma_hu <= 500.0:
            raise InputError(f"noise sigma {self.noise_sigma_hu} HU must be 0–500 HU")
        if self.mesh_side not in _MESH_SIDES:
            raise InputError(f"mesh side must be 'right' or 'left', not {self.mesh_side!r}")
        if not 0.0 < self.mesh_scale < 1e6:
            raise InputError(f"mesh scale {self.mesh_scale} must be positive")
        if self.femur_mesh is not None and not Path(self.femur_mesh).is_file():
            raise InputError(f"mesh file {self.femur_mesh} does not exist; give the path of an STL, PLY, OBJ or VTP file")

    def to_dict(self) -> dict[str, Any]:
        """JSON-able, for a cohort's ``phantom.json``."""
        d = asdict(self)
        d["z_margins_mm"] = [list(m) for m in self.z_margins_mm]
        if d["spacing_xyz"] is not None:
            d["spacing_xyz"] = list(d["spacing_xyz"])
        return d


@dataclass
class PhantomCase:
    """One generated case.

    Attributes
    ----------
    scan : SimpleITK.Image
        CT [HU], int16.
    labels : SimpleITK.Image
        uint8: 0 background, 1 right femur, 2 left femur; same grid as ``scan``.
    tissues : SimpleITK.Image
        uint8 tissue classes of :data:`femurseg.conventions.TISSUES`; same grid.
    facts : dict
        Everything drawn and measured (JSON-able): subject, anatomy, scanner, calibration, true volumes and vBMD.
    timings : dict
        Seconds per stage.
    """

    scan: sitk.Image
    labels: sitk.Image
    tissues: sitk.Image
    facts: dict[str, Any]
    timings: dict[str, float] = field(default_factory=dict)


def choose_grid(
    landmarks: Any,
    *,
    spacing_xyz: tuple[float, float, float],
    matrix: int,
    center_xy: tuple[float, float],
    rng: np.random.Generator,
    z_margins_mm: tuple[tuple[float, float], tuple[float, float]] = ((10.0, 40.0), (15.0, 50.0)),
) -> Grid:
    """The field of view of a hip QCT: from above the acetabular roof to below the lesser trochanters.

    Parameters
    ----------
    landmarks : HipLandmarks
        Skeleton landmarks [mm, LPS].
    spacing_xyz : (3,) tuple of float
        Voxel spacing [mm], (x, y, z).
    matrix : int
        In-plane size [voxels].
    center_xy : (2,) tuple of float
        Where the reconstruction is centred in-plane [mm, LPS] (the body's centre).
    rng : numpy.random.Generator
        Draws the margins and a small centring error.
    z_margins_mm : (2,) tuple of (2,) tuple of float
        Ranges of the margin above the roof and below the lowest lesser trochanter [mm].

    Returns
    -------
    Grid
        Axial, identity direction (LPS), slice 0 inferior.
    """
    dx, dy, dz = spacing_xyz
    top = float(landmarks.acetabulum_roof_z) + rng.uniform(*z_margins_mm[0])
    bottom = float(min(landmarks.lesser_trochanter_z.values())) - rng.uniform(*z_margins_mm[1])
    nz = int(math.ceil((top - bottom) / dz)) + 1
    jitter = rng.normal(0.0, 6.0, size=2)
    cx, cy = center_xy[0] + jitter[0], center_xy[1] + jitter[1]
    origin = (cx - (matrix - 1) / 2.0 * dx, cy - (matrix - 1) / 2.0 * dy, bottom)
    # Round the origin to 0.01 mm: scanner origins are stored with limited precision anyway.
    origin = tuple(float(round(v, 2)) for v in origin)
    return Grid(shape_zyx=(nz, matrix, matrix), spacing_zyx=(dz, dy, dx), origin_xyz=origin)  # type: ignore[arg-type]


def _subject_skeleton(r_subject: np.random.Generator, r_anat: np.random.Generator,
                      options: PhantomOptions) -> tuple[Any, _anat.AnatomyParams, _anat.Skeleton]:
    """The case's subject, anatomy parameters and posed skeleton, from their own random streams."""
    subject = _body.sample_subject(r_subject, sex=options.sex, age=options.age)
    params = _anat.sample_anatomy(r_anat, sex=subject.sex, age=subject.age)
    femur_mesh = None
    if options.femur_mesh is not None:
        femur_mesh = _anat.load_femur_mesh(options.femur_mesh, side=options.mesh_side, scale=options.mesh_scale)
    return subject, params, _anat.build_skeleton(params, femur_mesh=femur_mesh)


def true_frames(seed: int, *, options: PhantomOptions | None = None) -> dict:
    """The true anatomical frames of the femurs of the case :func:`generate` makes from ``seed`` and ``options``.

    Returns
    -------
    dict
        ``{"right": FemurFrame, "left": FemurFrame}`` (:class:`femurseg.qct.frame.FemurFrame`, world LPS mm):
        head sphere, neck axis, proximal shaft axis measured on the bone as built (its smooth random deformation
        included), narrowest neck section.  About a second per femur (the shaft is sampled at 1 mm); for tests and
        benchmarks.  Only for the modelled anatomy (``options.anatomy == "model"``).
    """
    options = options or PhantomOptions()
    if options.anatomy != "model":
        raise InputError(f"true frames exist for the modelled anatomy only, not {options.anatomy!r}")
    r_subject, r_anat = (np.random.default_rng(s) for s in np.random.SeedSequence(int(seed)).spawn(10)[:2])
    skeleton = _subject_skeleton(r_subject, r_anat, options)[2]
    return {side: skeleton.truth_frame(side) for side in ("right", "left")}


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    if isinstance(value, (np.floating,)):
        return float(value)
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.bool_,)):
        return bool(value)
    return value


def generate(seed: int, *, options: PhantomOptions | None = None) -> PhantomCase:
    """Generate one labelled hip-QCT case.

    Parameters
    ----------
    seed : int
        Non-negative seed; the same seed and options give the same case, bit for bit.
    options : PhantomOptions, optional
        Overrides; defaults draw everything from the seed.

    Returns
    -------
    PhantomCase
        The scan (int16 HU), femur labels, tissue classes and facts.
    """
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise InputError(f"seed must be a non-negative integer, not {seed!r}")
    options = options or PhantomOptions()
    if options.anatomy == "labelmaps":
        from femurseg.phantom.synth import generate_labelmap_case

        return generate_labelmap_case(int(seed), noise_sigma_hu=options.noise_sigma_hu, metal=options.metal,
                                      recon_circle=options.recon_circle)
    if options.anatomy == "negatives":
        from femurseg.phantom.negatives import NEGATIVE_KINDS, negative_case

        return negative_case(NEGATIVE_KINDS[int(seed) % len(NEGATIVE_KINDS)], int(seed))
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    ss = np.random.SeedSequence(int(seed))
    # spawn(10): the first children are those of earlier versions' spawn(8) and spawn(9), so cases are unchanged.
    r_subject, r_anat, r_scan, r_body, r_grid, r_bone, r_noise, r_streak, r_look, r_metal = (
        np.random.default_rng(s) for s in ss.spawn(10))

    subject, params, skeleton = _subject_skeleton(r_subject, r_anat, options)
    landmarks = skeleton.landmarks
    timings["anatomy_build"] = time.perf_counter() - t0

    lo, hi = _body.body_extent(landmarks, subject)
    scan = _ct.sample_scan(
        r_scan, body_width_mm=float(hi[0] - lo[0]), fat_mm=subject.fat_mm, spacing_xyz=options.spacing_xyz,
        slice_thickness_mm=options.slice_thickness_mm, matrix=options.matrix,
        calibration_phantom=options.calibration_phantom, noise_sigma_hu=options.noise_sigma_hu,
        recon_circle=options.recon_circle,
    )
    centre = (0.5 * float(lo[0] + hi[0]), 0.5 * float(lo[1] + hi[1]))
    grid = choose_grid(landmarks, spacing_xyz=scan.spacing_xyz, matrix=scan.matrix, center_xy=centre, rng=r_grid,
                       z_margins_mm=options.z_margins_mm)
    body = _body.sample_body(r_body, subject=subject, landmarks=landmarks, calibration=scan.calibration,
                             calibration_phantom=scan.calibration_phantom)
    density = subject.bone_density(r_bone)

    bones = _ct.render_bones(skeleton, grid, scan=scan, density=density, rng=r_bone, timings=timings)

    t = time.perf_counter()
    hu, tissues = _body.render_soft_tissue(body, grid, bone_occupancy=bones.occupancy)
    timings["soft_tissue"] = time.perf_counter() - t

    t = time.perf_counter()
    # Mix: bone replaces soft tissue by its volume fraction.
    hu *= 1.0 - bones.occupancy
    hu += bones.hu_weighted
    bone_cls = bones.tissues > 0
    tissues[bone_cls] = bones.tissues[bone_cls]
    labels = bones.labels
    occupancy_mean = float(bones.occupancy.mean())
    vbmd = bones.trabecular_vbmd
    region_vbmd = bones.region_trabecular_vbmd
    del bones, bone_cls
    appearance = None
    if options.appearance == "random":
        from femurseg.phantom import appearance as _app

        appearance = _app.sample_appearance(r_look)
        hu = _app.render_appearance(tissues, grid.spacing_zyx, appearance, r_look)
    _ct.add_streaks(hu, grid, landmarks, depth_hu=scan.streak_hu, rng=r_streak)
    implants = _metal.insert_metal(hu, labels, grid.spacing_zyx, r_metal) if r_metal.random() < options.metal else []
    ct = _ct.apply_scanner(hu, grid, scan, rng=r_noise)
    del hu
    if scan.recon_circle:
        _ct.blank_outside_circle(grid, tissues, labels)
    timings["scanner"] = time.perf_counter() - t

    voxel_ml = float(np.prod(grid.spacing_zyx)) / 1000.0
    facts: dict[str, Any] = {"seed": int(seed)}
    facts.update(subject.to_dict())
    facts.update({f"anatomy_{k}": v for k, v in params.to_dict().items()})
    try:
        facts.update({f"skeleton_{k}": v for k, v in skeleton.facts().items()})
    except Exception as err:  # facts are informative; a failure there must not lose the case
        log.warning("skeleton facts unavailable: %s", err)
    for side in ("right", "left"):
        facts[f"head_diameter_{side}_mm"] = 2.0 * float(landmarks.head_radius_mm[side])
        facts[f"joint_space_{side}_mm"] = float(landmarks.joint_space_mm[side])
    counts = np.bincount(labels.ravel(), minlength=3)
    facts["femur_volume_right_ml"] = float(counts[RIGHT_FEMUR]) * voxel_ml
    facts["femur_volume_left_ml"] = float(counts[LEFT_FEMUR]) * voxel_ml
    facts["trabecular_vbmd_right_mg_cm3"] = vbmd.get("right", float("nan"))
    facts["trabecular_vbmd_left_mg_cm3"] = vbmd.get("left", float("nan"))
    vals = [v for v in vbmd.values() if np.isfinite(v)]
    facts["trabecular_vbmd_mg_cm3"] = float(np.mean(vals)) if vals else float("nan")
    for side, regions in region_vbmd.items():
        for region, value in regions.items():
            facts[f"trabecular_vbmd_{side}_{region}_mg_cm3"] = value
    facts.update(scan.to_dict())
    facts.update({f"body_{k}": v for k, v in body.to_dict().items()})
    facts["size_xyz"] = [grid.shape_zyx[2], grid.shape_zyx[1], grid.shape_zyx[0]]
    facts["origin_xyz"] = list(grid.origin_xyz)
    facts["bone_fraction"] = occupancy_mean
    facts["anatomy_source"] = "model"
    facts["implants"] = implants
    if appearance is not None:
        facts.update({f"appearance_{k}": v for k, v in appearance.to_dict().items()})
        for key in [k for k in facts if k.startswith("trabecular_vbmd_")]:
            facts[key] = float("nan")  # a random appearance does not follow the subject's densities
    facts = _jsonable(facts)

    scan_img = image_from_array(ct, grid)
    label_img = image_from_array(labels, grid)
    tissue_img = image_from_array(tissues, grid)
    timings["total"] = time.perf_counter() - t0
    return PhantomCase(scan=scan_img, labels=label_img, tissues=tissue_img, facts=facts, timings=timings)
