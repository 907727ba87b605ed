"""The phantom's subject and everything around the bones: soft tissue, the scanner table, the calibration phantom.

A :class:`Subject` holds who is scanned (sex, age, build, bone density).  :func:`sample_body` turns a subject
and the posed skeleton's landmarks into a :class:`BodyModel`, the geometry of the soft tissue: a body outline
that wraps the bones slice by slice (so it fits any anatomy the skeleton poses), a subcutaneous fat layer of
varying thickness, muscle compartments around each hip separated by intermuscular fat planes, the pelvic
cavity with bladder, rectum (sometimes with gas) and pelvic fat, the femoral vessels anteromedial to each hip,
the hip joints' cartilage, and under the patient the calibration phantom (resin block with five rods) and the
curved carbon-fibre table.  :func:`render_soft_tissue` rasterises it into HU and tissue classes.

Values (unenhanced CT at 120 kVp): fat −120..−80 HU, muscle +35..+60 HU (lower with age and adiposity as fat
infiltrates it: Goodpaster et al. 2000, J Appl Physiol 89:104), urine 0..15 HU, blood +35..+50 HU, skin
+20..+50 HU, articular cartilage +70..+100 HU.  Trabecular vBMD of the proximal femur falls with age, faster in
women after the menopause (Riggs et al. 2004, J Bone Miner Res 19:1945; Lang et al. 2004, J Bone Miner Res
19:1006), from about 200–250 mg/cm³ K2HPO4 in young adults to below 80 mg/cm³ in osteoporosis.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from femurseg.conventions import TISSUES
from femurseg.errors import InputError
from femurseg.geometry import Grid
from femurseg.phantom.ct import BoneDensity, Calibration
from femurseg.phantom.fields import HipLandmarks

__all__ = ["Subject", "sample_subject", "BodyModel", "sample_body", "render_soft_tissue", "body_extent"]

SEXES: tuple[str, ...] = ("F", "M")


@dataclass(frozen=True)
class Subject:
    """Who is scanned.

    Attributes
    ----------
    sex : str
        ``"F"`` or ``"M"``.
    age : float
        Age [years], 20–90.
    fat_mm : float
        Mean subcutaneous fat thickness around the hips [mm].
    muscularity : float
        Relative muscle bulk (1: average).
    trabecular_vbmd : float
        Mean trabecular vBMD of the proximal femur [mg/cm³ K2HPO4].
    cortical_density : float
        Cortical bone density [mg/cm³ K2HPO4 equivalent].
    marrow_hu, muscle_hu, fat_hu, skin_hu : float
        CT values of the shaft's fatty marrow, muscle, fat and skin [HU].
    """

    sex: str
    age: float
    fat_mm: float
    muscularity: float
    trabecular_vbmd: float
    cortical_density: float
    marrow_hu: float
    muscle_hu: float
    fat_hu: float
    skin_hu: float

    def to_dict(self) -> dict[str, Any]:
        """Flat JSON-able facts."""
        return {k: (float(v) if isinstance(v, (int, float, np.floating)) else v) for k, v in asdict(self).items()}

    def bone_density(self, rng: np.random.Generator) -> BoneDensity:
        """The subject's bone material, with the texture's parameters drawn from ``rng``."""
        return BoneDensity(
            trabecular_vbmd=self.trabecular_vbmd,
            cortical_density=self.cortical_density,
            marrow_hu=self.marrow_hu,
            texture_amplitude=float(rng.uniform(0.25, 0.45)),
            texture_scales_mm=(float(rng.uniform(0.3, 0.45)), float(rng.uniform(1.2, 2.0))),
            pelvis_ratio=float(rng.uniform(0.65, 0.85)),
            sacrum_ratio=float(rng.uniform(0.55, 0.75)),
        )


def sample_subject(rng: np.random.Generator, *, sex: str | None = None, age: float | None = None) -> Subject:
    """Draw an adult subject.

    Parameters
    ----------
    rng : numpy.random.Generator
        Source of randomness (always the same number of draws, so overriding ``sex`` or ``age`` does not shift
        the rest).
    sex : {"F", "M"}, optional
        Fixed sex; random (1:1) by default.
    age : float, optional
        Fixed age [years], 20–90; uniform by default.

    Returns
    -------
    Subject
    """
    u = rng.uniform(size=4)
    g = rng.standard_normal(size=8)
    if sex is None:
        sex = "F" if u[0] < 0.5 else "M"
    if sex not in SEXES:
        raise InputError(f"sex must be 'F' or 'M', not {sex!r}")
    if age is None:
        age = 20.0 + 70.0 * u[1]
    if not 18.0 <= float(age) <= 100.0:
        raise InputError(f"age {age} is outside the adult range 18–100 years")
    age = float(age)
    female = sex == "F"
    # Subcutaneous fat: log-normal, thicker in women around the hips, a little thicker in middle age.
    fat = math.exp(math.log(17.0 if not female else 24.0) + 0.5 * g[0]) * (1.0 + 0.004 * (min(age, 65.0) - 40.0))
    fat = float(np.clip(fat, 5.0, 60.0))
    muscularity = float(np.clip((1.08 if not female else 0.92) - 0.003 * max(age - 40.0, 0.0) + 0.08 * g[1], 0.7, 1.3))
    # Trabecular vBMD: peak in the late twenties, then losses; women lose faster after the menopause (~50).
    peak = 215.0 if female else 210.0
    loss = 0.8 * max(age - 28.0, 0.0) + (1.6 * max(age - 50.0, 0.0) if female else 0.35 * max(age - 50.0, 0.0))
    vbmd = float(np.clip(peak - loss + 28.0 * g[2], 45.0, 260.0))
    cort = float(np.clip(1160.0 - 1.3 * max(age - 40.0, 0.0) + 40.0 * g[3], 980.0, 1250.0))
    marrow = float(np.clip(-10.0 - 0.45 * (age - 20.0) + 10.0 * g[4], -50.0, 20.0))
    muscle = float(np.clip(56.0 - 0.15 * (age - 20.0) - 0.12 * (fat - 20.0) + 3.0 * g[5], 35.0, 60.0))
    fat_hu = float(np.clip(-102.0 + 7.0 * g[6], -120.0, -80.0))
    skin = float(20.0 + 30.0 * u[2])
    return Subject(sex=sex, age=age, fat_mm=fat, muscularity=muscularity, trabecular_vbmd=vbmd,
                   cortical_density=cort, marrow_hu=marrow, muscle_hu=muscle, fat_hu=fat_hu, skin_hu=skin)


# ---------------------------------------------------------------------------------------------------------------
# Internal tissue codes: finer than TISSUES where HU differ within one class (table skin vs foam, each rod).

_AIR, _FAT, _MUSCLE, _SKIN = 0, 1, 2, 3
_TABLE_SKIN, _TABLE_FOAM, _PAD = 10, 30, 31
_BLOCK, _BLADDER, _GAS, _VESSEL = 11, 13, 14, 15
_ORGAN, _CARTILAGE, _INNER_FAT, _FASCIA = 32, 33, 34, 35
_RODS = (20, 21, 22, 23, 24)

_CLASS_OF = np.zeros(256, np.uint8)
for _code, _cls in {
    _AIR: "air", _FAT: "fat", _MUSCLE: "muscle", _SKIN: "skin", _TABLE_SKIN: "table", _TABLE_FOAM: "table",
    _PAD: "table", _BLOCK: "calibration_phantom", _BLADDER: "bladder", _GAS: "bowel_gas", _VESSEL: "vessel",
    _ORGAN: "muscle", _CARTILAGE: "muscle", _INNER_FAT: "fat", _FASCIA: "fat",
    **{r: "calibration_rod" for r in _RODS},
}.items():
    _CLASS_OF[_code] = TISSUES[_cls]


@dataclass(frozen=True)
class BodyModel:
    """Geometry and CT values of everything but the bones, for one subject.

    Distances in mm, world LPS; angles in degrees.  Built by :func:`sample_body`; facts via :meth:`to_dict`.
    """

    midline_x: float
    hip_y: float
    hip_z: float
    head_xy: dict[str, tuple[float, float]]
    head_z: dict[str, float]
    head_radius: dict[str, float]
    joint_space: dict[str, float]
    roof_z: float
    lesser_trochanter_z: float
    shaft_point: dict[str, tuple[float, float, float]]
    shaft_dir: dict[str, tuple[float, float, float]]
    margin_lat: float
    margin_ant: float
    margin_post: float
    exponent: float
    fat_mm: float
    fat_harmonics: tuple[float, ...]
    perineum_z: float
    thigh_margin: float
    cleft_depth: float
    compress_mm: float
    septa_deg: tuple[float, ...]
    septa_slope: tuple[float, ...]
    septa_len: tuple[float, ...]
    septa_z: tuple[tuple[float, float], ...]  # centre offset from the head's level and half-extent along z
    septum_width: float
    septum_wiggle: tuple[float, float, float]
    glut_septum_mm: float
    cavity: tuple[float, float, float, float]  # centre x, centre y, half-width, half-depth
    bladder: tuple[float, float, float, float, float, float]  # centre xyz, half-axes xyz
    rectum: tuple[float, float, float]  # centre x, y, radius
    gas: tuple[tuple[float, float, float, float], ...]  # centre xyz, radius
    bowel: tuple[tuple[float, float, float, float, float, float], ...]  # centre xyz, radius, half-length, bubble
    vessels: tuple[tuple[str, float, float, float], ...]  # side, medial and anterior offset from the head, radius
    hu: dict[str, float]
    calibration_phantom: bool
    block: tuple[float, float, float, float]  # centre-x offset, width, height, gap
    rod_radius: float
    rod_pitch: float
    table: tuple[float, float, float, float, float]  # half-width, radius of curvature, skin, core, pad
    rod_hu: tuple[float, ...] = field(default=())

    def to_dict(self) -> dict[str, Any]:
        """Flat JSON-able facts about the body and the objects under it."""
        return {
            "fat_mm": self.fat_mm, "bladder_present": self.bladder[3] > 0, "bowel_gas_pockets": len(self.gas),
            "calibration_phantom": self.calibration_phantom, "compress_mm": self.compress_mm,
            "bowel_loops": len(self.bowel),
            **{f"hu_{k}": float(v) for k, v in self.hu.items()},
        }


def sample_body(
    rng: np.random.Generator,
    *,
    subject: Subject,
    landmarks: HipLandmarks,
    calibration: Calibration,
    calibration_phantom: bool,
) -> BodyModel:
    """Draw the soft tissue, table and calibration phantom around a posed skeleton.

    Parameters
    ----------
    rng : numpy.random.Generator
        Source of randomness.
    subject : Subject
        Build (fat, muscularity) and CT values.
    landmarks : HipLandmarks
        The skeleton's landmarks [mm, LPS].
    calibration : Calibration
        The scanner calibration (gives the rods' HU).
    calibration_phantom : bool
        Whether the calibration phantom lies under the patient.

    Returns
    -------
    BodyModel
    """
    hr = np.asarray(landmarks.head_center_xyz["right"], float)
    hl = np.asarray(landmarks.head_center_xyz["left"], float)
    mid = 0.5 * (hr + hl)
    radius = {s: float(landmarks.head_radius_mm[s]) for s in ("right", "left")}
    lt_z = float(min(landmarks.lesser_trochanter_z.values()))
    mus = subject.muscularity
    female = subject.sex == "F"
    inter = float(np.linalg.norm(hl[:2] - hr[:2]))
    rmean = 0.5 * (radius["right"] + radius["left"])

    septa = []
    base = (-20.0, -55.0, -90.0, -128.0, -165.0, 125.0, 60.0, 25.0)
    for b in base:
        septa.append(b + rng.uniform(-10.0, 10.0))
    slopes = tuple(float(v) for v in rng.uniform(-0.35, 0.35, size=len(septa)))

    # Pelvic fat grows with adiposity: a thin subject's pelvis is filled by the organs and the obturator muscles.
    adipose = 0.65 + 0.35 * min(subject.fat_mm / 30.0, 1.0)
    cav_hw = max(inter / 2.0 - rmean - 22.0, 25.0) * adipose
    cav = (float(mid[0]), float(mid[1] + rng.uniform(0.0, 15.0)), cav_hw, float(rng.uniform(45.0, 60.0) * adipose))
    fill = rng.uniform()
    if fill < 0.1:
        bladder = (0.0, 0.0, 0.0, 0.0, 0.0, 0.0)  # empty
    else:
        bx = 15.0 + 30.0 * fill
        by = 12.0 + 25.0 * fill
        bz = 15.0 + 30.0 * fill
        bladder = (float(mid[0] + rng.normal(0.0, 5.0)), float(cav[1] - 0.35 * cav[3]),
                   float(mid[2] - rng.uniform(5.0, 15.0) + bz), min(bx, cav_hw), by, bz)
    rect = (float(mid[0] + rng.normal(0.0, 4.0)), float(cav[1] + 0.6 * cav[3]), float(rng.uniform(11.0, 18.0)))
    gas = []
    if rng.uniform() < 0.5:
        for _ in range(int(rng.integers(1, 4))):
            gas.append((float(rect[0] + rng.normal(0.0, 8.0)), float(rect[1] + rng.normal(0.0, 6.0)),
                        float(mid[2] + rng.uniform(0.0, 50.0)), float(rng.uniform(4.0, 13.0))))
    # Small-bowel and sigmoid loops in the upper pelvis: soft-tissue ellipsoids, some with a gas bubble.
    bowel = []
    for _ in range(int(rng.integers(3, 8))):
        ang = rng.uniform(0, 2 * math.pi)
        rad = math.sqrt(rng.uniform()) * 0.75
        r = float(rng.uniform(7.0, 14.0))
        bubble = float(rng.uniform(2.0, 0.5 * r)) if rng.uniform() < 0.35 else 0.0
        bowel.append((float(cav[0] + rad * cav[2] * math.cos(ang)), float(cav[1] + rad * cav[3] * math.sin(ang)),
                      float(mid[2] + rng.uniform(0.0, 70.0)), r, float(rng.uniform(1.5, 3.0) * r), bubble))
    vessels = []
    for side in ("right", "left"):
        art_dx = float(rng.uniform(3.0, 14.0))
        art_dy = float(radius[side] + rng.uniform(12.0, 24.0))
        vessels.append((side, art_dx, art_dy, float(rng.uniform(3.5, 5.0))))
        vessels.append((side, art_dx + float(rng.uniform(9.0, 13.0)), art_dy - float(rng.uniform(0.0, 4.0)),
                        float(rng.uniform(5.0, 7.5))))
    hu = {
        "fat": subject.fat_hu, "inner_fat": subject.fat_hu + float(rng.uniform(-5.0, 10.0)),
        "muscle": subject.muscle_hu, "skin": subject.skin_hu, "bladder": float(rng.uniform(0.0, 15.0)),
        "organ": float(rng.uniform(30.0, 45.0)), "cartilage": float(rng.uniform(70.0, 100.0)),
        "gas": float(rng.uniform(-1000.0, -900.0)), "table_skin": float(rng.uniform(150.0, 450.0)),
        "table_foam": float(rng.uniform(-960.0, -880.0)), "pad": float(rng.uniform(-920.0, -780.0)),
        "block": float(rng.uniform(-15.0, 30.0)), "air": -1000.0, "fascia": float(rng.uniform(-40.0, 10.0)),
        "vessel": float(rng.uniform(36.0, 50.0)),
    }
    fat = subject.fat_mm
    return BodyModel(
        midline_x=float(mid[0]), hip_y=float(mid[1]), hip_z=float(mid[2]),
        head_xy={"right": (float(hr[0]), float(hr[1])), "left": (float(hl[0]), float(hl[1]))},
        head_z={"right": float(hr[2]), "left": float(hl[2])},
        head_radius=radius,
        joint_space={s: float(landmarks.joint_space_mm[s]) for s in ("right", "left")},
        roof_z=float(landmarks.acetabulum_roof_z),
        lesser_trochanter_z=lt_z,
        shaft_point={s: tuple(float(v) for v in landmarks.shaft_point_xyz[s]) for s in ("right", "left")},
        shaft_dir={s: tuple(float(v) for v in landmarks.shaft_direction_xyz[s]) for s in ("right", "left")},
        margin_lat=float(rng.uniform(12.0, 26.0) * mus),
        margin_ant=float(rng.uniform(22.0, 40.0) * mus),
        margin_post=float(rng.uniform(30.0, 55.0) * mus),
        exponent=float(rng.uniform(2.1, 2.8)),
        fat_mm=fat,
        # Fat distribution by angle around the body (cos/sin of θ, 2θ): gynoid (buttocks, hips) in women,
        # android (anterior abdomen) in men.
        fat_harmonics=(
            float((0.25 if female else -0.1) + rng.normal(0.0, 0.08)),  # posterior (+) vs anterior (−)
            float(rng.normal(0.0, 0.05)),
            float((0.15 if female else -0.05) + rng.normal(0.0, 0.08)),  # lateral (+) vs AP (−)
        ),
        perineum_z=float(lt_z + rng.uniform(-5.0, 20.0)),
        thigh_margin=float(rng.uniform(38.0, 55.0) * mus),
        cleft_depth=float(rng.uniform(8.0, 25.0) + 0.3 * fat),
        compress_mm=float(rng.uniform(3.0, 8.0) + 0.15 * fat),
        septa_deg=tuple(float(s) for s in septa),
        septa_slope=slopes,
        septa_len=tuple(float(v) for v in rng.uniform(25.0, 75.0, size=len(septa)) * mus),
        septa_z=tuple((float(a), float(b)) for a, b in zip(rng.uniform(-50.0, 40.0, size=len(septa)),
                                                          rng.uniform(25.0, 70.0, size=len(septa)))),
        septum_width=float(rng.uniform(1.0, 2.5) + 0.02 * fat),
        septum_wiggle=(float(rng.uniform(0.05, 0.2)), float(rng.uniform(15.0, 35.0)), float(rng.uniform(0, 2 * math.pi))),
        glut_septum_mm=float(rng.uniform(22.0, 38.0) * mus),
        cavity=cav,
        bladder=bladder,
        rectum=rect,
        gas=tuple(gas),
        bowel=tuple(bowel),
        vessels=tuple(vessels),
        hu=hu,
        calibration_phantom=bool(calibration_phantom),
        block=(float(rng.normal(0.0, 10.0)), float(rng.uniform(300.0, 340.0)), float(rng.uniform(38.0, 48.0)),
               float(rng.uniform(0.0, 3.0))),
        rod_radius=float(rng.uniform(7.0, 9.0)),
        rod_pitch=float(rng.uniform(50.0, 58.0)),
        table=(float(rng.uniform(200.0, 240.0)), float(rng.uniform(1200.0, 2500.0)), float(rng.uniform(1.5, 2.5)),
               float(rng.uniform(30.0, 50.0)), float(rng.uniform(15.0, 40.0))),
        rod_hu=tuple(float(v) for v in calibration.rod_hu()),
    )


def body_extent(landmarks: HipLandmarks, subject: Subject) -> tuple[np.ndarray, np.ndarray]:
    """Rough in-plane extent of the patient with table, (x, y) min and max [mm], to place the field of view."""
    hr = np.asarray(landmarks.head_center_xyz["right"], float)
    hl = np.asarray(landmarks.head_center_xyz["left"], float)
    r = max(landmarks.head_radius_mm.values())
    pad = subject.fat_mm * 1.3 + 25.0 * subject.muscularity
    lo = np.array([min(hr[0], hl[0]) - 3.0 * r - pad, min(hr[1], hl[1]) - 1.6 * r - pad - 20.0])
    hi = np.array([max(hr[0], hl[0]) + 3.0 * r + pad, max(hr[1], hl[1]) + 4.0 * r + pad + 30.0])
    return lo, hi


# ---------------------------------------------------------------------------------------------------------------
# Rasterisation


def _smin(a: np.ndarray, b: np.ndarray, k: float) -> np.ndarray:
    """Smooth minimum of two signed distances (a fillet of size ``k`` [mm])."""
    hh = np.clip(0.5 + 0.5 * (b - a) / k, 0.0, 1.0)
    return b + (a - b) * hh - k * hh * (1.0 - hh)


def _superellipse_radius(theta: np.ndarray, cx: float, cy: float, ox: float, oy: float, a: float, b_ant: float,
                         b_post: float, n: float) -> np.ndarray:
    """Distance from (ox, oy) to the boundary of a superellipse centred at (cx, cy), along directions ``theta``.

    The superellipse has half-width ``a`` and half-depths ``b_ant`` (y < cy) and ``b_post`` (y > cy); it contains
    (ox, oy).  Found by bisection, vectorised over the directions.
    """
    c, s = np.cos(theta), np.sin(theta)
    lo = np.zeros_like(theta)
    hi = np.full_like(theta, 2.5 * max(a, b_ant, b_post) + math.hypot(ox - cx, oy - cy))
    for _ in range(20):  # the bracket shrinks to ~1 µm of its ~1 m start
        r = 0.5 * (lo + hi)
        x = (ox + r * c - cx) / a
        yy = oy + r * s - cy
        y = np.where(yy < 0, yy / b_ant, yy / b_post)
        inside = np.abs(x) ** n + np.abs(y) ** n < 1.0
        lo = np.where(inside, r, lo)
        hi = np.where(inside, hi, r)
    return 0.5 * (lo + hi)


class _Polar:
    """Angles (as bins) and radii of an in-plane grid around a fixed centre."""

    bins = 1440

    def __init__(self, x: np.ndarray, y: np.ndarray, cx: float, cy: float, *, lateral_sign: float = 1.0,
                 wiggle: tuple[float, float, float] | None = None):
        dx = (x - cx) * lateral_sign
        dy = y - cy
        self.r = np.hypot(dx, dy).astype(np.float32)
        theta = np.arctan2(dy, dx)
        if wiggle is not None:
            amp, wl, ph = wiggle
            theta = theta + amp * np.sin(self.r / wl + ph)
        self.idx = (np.floor((theta + math.pi) / (2 * math.pi) * self.bins).astype(np.int32)) % self.bins
        self.theta_bins = (np.arange(self.bins) + 0.5) / self.bins * 2 * math.pi - math.pi
        self.cx, self.cy, self.sign = cx, cy, lateral_sign


def _fat_factor(theta: np.ndarray, harmonics: tuple[float, ...]) -> np.ndarray:
    """Relative subcutaneous fat thickness by direction (θ from +x; +y posterior)."""
    post, side, lat = harmonics
    return np.clip(1.0 + post * np.sin(theta) + side * np.cos(theta) + lat * np.cos(2 * theta), 0.3, 2.0)


def _extents(occ: np.ndarray, x: np.ndarray, y: np.ndarray, midline: float, zs: np.ndarray, smooth_mm: float
             ) -> dict[str, np.ndarray]:
    """Per slice and side, the in-plane box of the bones (x0, x1, y0, y1) [mm], smoothed and filled along z."""
    nz = occ.shape[0]
    out = {}
    for side, sel in (("right", x < midline), ("left", x >= midline)):
        ext = np.full((nz, 4), np.nan)
        xs = x[sel]
        cols = np.zeros((nz, xs.size), bool)
        rows = np.zeros((nz, y.size), bool)
        for k in range(nz):
            sk = occ[k][:, sel] > 0.3
            cols[k] = sk.any(axis=0)
            rows[k] = sk.any(axis=1)
        good = cols.any(axis=1)
        if good.any():
            first_c = cols.argmax(axis=1)
            last_c = cols.shape[1] - 1 - cols[:, ::-1].argmax(axis=1)
            first_r = rows.argmax(axis=1)
            last_r = rows.shape[1] - 1 - rows[:, ::-1].argmax(axis=1)
            ext[good] = np.stack([xs[first_c], xs[last_c], y[first_r], y[last_r]], axis=1)[good]
        if not good.any():
            out[side] = ext
            continue
        for j in range(4):
            ext[:, j] = np.interp(np.arange(nz), np.flatnonzero(good), ext[good, j])
        # A running envelope over ±smooth_mm along z, so the outline changes smoothly (soft tissue drapes).
        if nz > 1:
            w = max(1, int(round(smooth_mm / max(abs(zs[1] - zs[0]), 1e-6))))
            lo = np.array([ext[max(0, k - w): k + w + 1, [0, 2]].min(axis=0) for k in range(nz)])
            hi = np.array([ext[max(0, k - w): k + w + 1, [1, 3]].max(axis=0) for k in range(nz)])
            ext = np.stack([lo[:, 0], hi[:, 0], lo[:, 1], hi[:, 1]], axis=1)
        out[side] = ext
    return out


@dataclass
class _Crop:
    """The body's bounding box on the grid: its world coordinates [mm] and windows into it."""

    xs: np.ndarray  # (nx,) world x of the crop's columns
    ys: np.ndarray  # (ny,) world y of its rows
    X: np.ndarray  # (1, nx) float32
    Y: np.ndarray  # (ny, 1) float32

    def win(self, wx: float, wy: float, rad: float) -> tuple[slice, slice]:
        """Rows and columns of the crop within ``rad`` of (wx, wy) [mm]."""
        return (slice(int(np.searchsorted(self.ys, wy - rad)), int(np.searchsorted(self.ys, wy + rad))),
                slice(int(np.searchsorted(self.xs, wx - rad)), int(np.searchsorted(self.xs, wx + rad))))

    def disc(self, code: np.ndarray, wx: float, wy: float, rad: float, value: int, where: np.ndarray) -> None:
        """Paint ``value`` into ``code`` over the disc of radius ``rad`` at (wx, wy), where ``where`` holds."""
        wr, wc = self.win(wx, wy, rad + 1.0)
        d2 = (self.X[:, wc] - wx) ** 2 + (self.Y[wr, :] - wy) ** 2
        sub = code[wr, wc]
        sub[(d2 < rad * rad) & where[wr, wc]] = value


@dataclass
class _TrunkFrame:
    """Per-slice trunk outline parameters around the bones [mm]."""

    cx: float
    cy: float
    half_w: np.ndarray  # (nz,)
    y_ant: np.ndarray  # (nz,)
    y_post: np.ndarray  # (nz,)
    y_rest: float  # where the back rests on the support


def _soft_tissue_lut(body: BodyModel) -> np.ndarray:
    lut = np.zeros(256, np.float32)
    hu = body.hu
    for code, key in ((_AIR, "air"), (_FAT, "fat"), (_MUSCLE, "muscle"), (_SKIN, "skin"), (_TABLE_SKIN, "table_skin"),
                      (_TABLE_FOAM, "table_foam"), (_PAD, "pad"), (_BLOCK, "block"), (_BLADDER, "bladder"),
                      (_GAS, "gas"), (_VESSEL, "vessel"), (_ORGAN, "organ"), (_CARTILAGE, "cartilage"), (_INNER_FAT, "inner_fat"),
                      (_FASCIA, "fascia")):
        lut[code] = hu[key]
    for code, v in zip(_RODS, body.rod_hu):
        lut[code] = v
    return lut


def _trunk_frame(body: BodyModel, bone_occupancy: np.ndarray, xs: np.ndarray, ys: np.ndarray,
                 zs: np.ndarray) -> _TrunkFrame:
    """The trunk's extent per slice: around the bones found there, plus the body's muscle margins."""
    ext = _extents(bone_occupancy, xs, ys, body.midline_x, zs, smooth_mm=12.0)
    both = np.where(np.isnan(ext["right"]), ext["left"], ext["right"])
    both_l = np.where(np.isnan(ext["left"]), ext["right"], ext["left"])
    if np.isnan(both).any():
        # No bone in the field of view (a tiny test grid far from the hips): wrap the landmarks instead.
        r = max(body.head_radius.values())
        fallback = np.array([body.head_xy["right"][0] - 2.5 * r, body.head_xy["left"][0] + 2.5 * r,
                             body.hip_y - 1.5 * r, body.hip_y + 3.0 * r])
        both = np.where(np.isnan(both), fallback[[0, 1, 2, 3]], both)
        both_l = np.where(np.isnan(both_l), fallback, both_l)
    bx0 = np.minimum(both[:, 0], both_l[:, 0])
    bx1 = np.maximum(both[:, 1], both_l[:, 1])
    by0 = np.minimum(both[:, 2], both_l[:, 2])
    by1 = np.maximum(both[:, 3], both_l[:, 3])
    # Trunk: a superellipse per slice around the bones plus muscle margins, seen from one fixed centre.
    cx = body.midline_x
    half_w = np.maximum(cx - bx0, bx1 - cx) + body.margin_lat
    y_ant = by0 - body.margin_ant
    # Lying supine, the buttocks rest on the support at every level: the posterior contour is nearly straight
    # along z, at least a thin muscle layer behind the bones.
    y_post = np.maximum(by1 + 15.0, float(np.max(by1 + body.margin_post)) - 6.0)
    cy = 0.5 * (np.median(y_ant) + np.median(y_post))
    y_rest = float(np.max(y_post + body.fat_mm * (1.0 + body.fat_harmonics[0]))) - body.compress_mm
    return _TrunkFrame(cx=cx, cy=cy, half_w=half_w, y_ant=y_ant, y_post=y_post, y_rest=y_rest)


def _thigh_frames(body: BodyModel, crop: _Crop) -> dict:
    """Per side (polar frame, centre x, centre y, shaft point at the lesser trochanter, shaft direction)."""
    thighs = {}
    for side in ("right", "left"):
        sp = np.asarray(body.shaft_point[side])
        sd = np.asarray(body.shaft_dir[side])
        sd = sd / np.linalg.norm(sd)
        zc = body.lesser_trochanter_z
        t = (zc - sp[2]) / sd[2] if abs(sd[2]) > 1e-3 else 0.0
        c = sp + t * sd
        lat = -1.0 if side == "right" else 1.0
        # The femur lies anterolateral in the thigh: the thigh's centre is medial and posterior to it.
        tcx = float(c[0] - lat * 18.0)
        tcy = float(c[1] + 12.0)
        thighs[side] = (_Polar(crop.X, crop.Y, tcx, tcy), tcx, tcy, c, sd)
    return thighs


def _hip_windows(body: BodyModel, crop: _Crop, xs: np.ndarray, ys: np.ndarray, box: tuple[int, int, int, int],
                 cx: float) -> dict:
    """Per side (rows, columns, polar frame) of the window around each hip where the muscle septa are drawn."""
    c0, c1, r0, r1 = box
    reach = max(body.septa_len) + max(body.head_radius.values()) + 10.0
    hips = {}
    for side in ("right", "left"):
        hx, hy = body.head_xy[side]
        lat = -1.0 if side == "right" else 1.0
        wc = slice(int(np.clip(np.searchsorted(xs, hx - reach), c0, c1)) - c0,
                   int(np.clip(np.searchsorted(xs, hx + reach), c0, c1)) - c0)
        if side == "right":
            wc = slice(wc.start, min(wc.stop, int(np.searchsorted(xs, cx)) - c0))
        else:
            wc = slice(max(wc.start, int(np.searchsorted(xs, cx)) - c0), wc.stop)
        wr = slice(int(np.clip(np.searchsorted(ys, hy - reach), r0, r1)) - r0,
                   int(np.clip(np.searchsorted(ys, hy + reach), r0, r1)) - r0)
        if wc.stop <= wc.start or wr.stop <= wr.start:
            continue
        hips[side] = (wr, wc, _Polar(crop.X[:, wc], crop.Y[wr, :], hx, hy, lateral_sign=lat, wiggle=body.septum_wiggle))
    return hips


def _outline(body: BodyModel, k: int, z: float, frame: _TrunkFrame, trunk: _Polar, fatf: np.ndarray,
             thighs: dict, crop: _Crop) -> tuple[np.ndarray, np.ndarray]:
    """Signed distances [mm] of slice ``k`` to the lean (muscle) outline and to the skin (negative inside)."""
    theta_b = trunk.theta_bins
    Xc, Yc = crop.X, crop.Y
    y_ant, y_post, cx = frame.y_ant, frame.y_post, frame.cx
    r_lean = _superellipse_radius(theta_b, cx, 0.5 * (y_ant[k] + y_post[k]), cx, frame.cy, frame.half_w[k],
                                  0.5 * (y_post[k] - y_ant[k]), 0.5 * (y_post[k] - y_ant[k]), body.exponent)
    lean = trunk.r - r_lean[trunk.idx]
    outer = lean - fatf[trunk.idx]
    below = body.perineum_z - z
    if below > -25.0:
        # Trunk tapers into the perineum and the gluteal folds; the thighs take over.
        shrink = np.float32(min(max(below + 25.0, 0.0) * 1.5, 400.0))
        lean = lean + shrink
        outer = outer + shrink
        for side in ("right", "left"):
            pol, tcx, tcy, c, sd = thighs[side]
            tt = (z - c[2]) / sd[2] if abs(sd[2]) > 1e-3 else 0.0
            sx = float(c[0] + tt * sd[0] - tcx)
            syy = float(c[1] + tt * sd[1] - tcy)
            a = body.thigh_margin + 24.0
            b = body.thigh_margin + 18.0
            b_post = max(b * 1.1, frame.y_rest - body.fat_mm - (tcy + syy))
            r_th = _superellipse_radius(theta_b, tcx + sx, tcy + syy, tcx, tcy, a, b, b_post, 2.2)
            tl = pol.r - r_th[pol.idx]
            to = tl - fatf[pol.idx]
            lean = _smin(lean, tl, 12.0)
            outer = _smin(outer, to, 15.0)
    # Gluteal cleft: a posterior midline notch in the lower slices.
    if z < body.hip_z + 10.0:
        # Supine, the buttocks press together: the natal cleft is a slit, a few mm wide at the skin.
        depth = body.cleft_depth * min(1.0, (body.hip_z + 10.0 - z) / 30.0)
        y_back = float(np.max(y_post)) + body.fat_mm
        notch = (np.abs(Xc - cx) - 0.6 - 0.08 * np.maximum(Yc - (y_back - depth), 0.0))
        notch = np.where(Yc > y_back - depth, notch, np.float32(1e3))
        outer = np.maximum(outer, -notch)
    outer = np.maximum(outer, Yc - frame.y_rest)
    lean = np.maximum(lean, Yc - (frame.y_rest - 4.0))
    return lean, outer


def _septa(code: np.ndarray, lean: np.ndarray, z: float, body: BodyModel, hips: dict, theta_b: np.ndarray) -> None:
    """Intermuscular fat planes around each hip: short curved septa between the muscle bellies, each present over
    its own range of levels, and the fascia between gluteus maximus and medius."""
    septa_deg = np.asarray(body.septa_deg)
    septa_slope = np.asarray(body.septa_slope)
    septa_len = np.asarray(body.septa_len)
    septa_z = np.asarray(body.septa_z)
    w = body.septum_width
    for side, (wr, wc, pol) in hips.items():
        hz = body.head_z[side]
        on = np.abs(z - hz - septa_z[:, 0]) < septa_z[:, 1]
        if not on.any():
            continue
        ang = np.deg2rad(septa_deg[on] + septa_slope[on] * (z - hz))
        dth_all = np.abs((theta_b[:, None] - ang[None, :] + math.pi) % (2 * math.pi) - math.pi)
        which = dth_all.argmin(axis=1)
        dth = dth_all[np.arange(len(theta_b)), which]
        rcrit = (0.5 * w / np.maximum(dth, 1e-4)).astype(np.float32)
        rmax = (body.head_radius[side] + septa_len[on][which]).astype(np.float32)
        rmin = body.head_radius[side] + 6.0
        lw = lean[wr, wc]
        r_bin = pol.r
        sept = (r_bin < rcrit[pol.idx]) & (r_bin > rmin) & (r_bin < rmax[pol.idx]) & (lw < -2.0)
        if abs(z - hz) < 45.0 and z > body.perineum_z:
            th = theta_b[pol.idx]
            sept |= (np.abs(lw + body.glut_septum_mm) < 0.5 * w) & (th > 0.35) & (th < 1.75)
        sub = code[wr, wc]
        sub[sept] = _FAT


def _pelvic_cavity(code: np.ndarray, lean: np.ndarray, z: float, body: BodyModel, crop: _Crop,
                   cav_q: np.ndarray) -> None:
    """True pelvis and ischioanal fossae above the perineum: inner fat, rectum, bladder (or prostate/vagina),
    bowel loops with gas bubbles, free gas."""
    Xc, Yc = crop.X, crop.Y
    taper = min(1.0, (z - body.perineum_z) / 20.0)
    inside = (cav_q < taper) & (lean < -3.0)
    code[inside] = _INNER_FAT
    rx, ry, rr = body.rectum
    crop.disc(code, rx, ry, rr, _ORGAN, inside)
    bxc, byc, bzc, bax, bay, baz = body.bladder
    if bax > 0:
        qz = ((z - bzc) / baz) ** 2
        if qz < 1:
            s_ = math.sqrt(1 - qz)
            wr, wc = crop.win(bxc, byc, max(bax, bay) * s_ + 1.0)
            bq = ((Xc[:, wc] - bxc) / (bax * s_)) ** 2 + ((Yc[wr, :] - byc) / (bay * s_)) ** 2
            sub = code[wr, wc]
            sub[(bq < 1) & (lean[wr, wc] < -3.0)] = _BLADDER
    elif z < body.hip_z:
        # Empty bladder: the prostate (men) or vagina/cervix (women): soft tissue behind the symphysis.
        wr, wc = crop.win(rx, ry - rr - 14.0, 17.0)
        pq = ((Xc[:, wc] - rx) / 16.0) ** 2 + ((Yc[wr, :] - (ry - rr - 14.0)) / 13.0) ** 2
        sub = code[wr, wc]
        sub[(pq < 1) & inside[wr, wc]] = _ORGAN
    for gx, gy, gz, br, bl, bub in body.bowel:
        qz = ((z - gz) / bl) ** 2
        if qz < 1:
            rz = br * math.sqrt(1 - qz)
            crop.disc(code, gx, gy, rz, _ORGAN, inside)
            if 0 < bub < rz:
                # Gas floats: the bubble sits at the loop's anterior (upper, supine) side.
                crop.disc(code, gx, gy - rz + bub + 1.0, bub, _GAS, inside)
    deep = lean < -3.0
    for gx, gy, gz, gr in body.gas:
        dzg = z - gz
        if abs(dzg) < gr:
            crop.disc(code, gx, gy, math.sqrt(gr * gr - dzg * dzg), _GAS, deep)


def _vessels_and_joints(code: np.ndarray, lean: np.ndarray, z: float, body: BodyModel, crop: _Crop) -> None:
    """Femoral vessels (anteromedial to each hip, running up medially and posteriorly into the pelvis), then the
    hip joints' cartilage and capsule around each head."""
    Xc, Yc = crop.X, crop.Y
    for side, dmed, dant, vr in body.vessels:
        hx, hy = body.head_xy[side]
        med = 1.0 if side == "right" else -1.0
        dzv = z - body.head_z[side]
        up = max(dzv, 0.0)
        vx = hx + med * (dmed + 0.25 * up) - med * 0.05 * min(dzv, 0.0)
        vy = hy - dant + 0.3 * up
        wr, wc = crop.win(vx, vy, vr + 3.0)
        d2 = (Xc[:, wc] - vx) ** 2 + (Yc[wr, :] - vy) ** 2
        sub = code[wr, wc]
        ok = lean[wr, wc] < -1.0
        inner = (d2 < vr * vr) & ok
        sub[(d2 < (vr + 1.5) ** 2) & ok & ~inner & (sub == _MUSCLE)] = _FAT
        sub[inner] = _VESSEL
    for side in ("right", "left"):
        hx, hy = body.head_xy[side]
        dzh = z - body.head_z[side]
        ra = body.head_radius[side] - 1.0
        rb = body.head_radius[side] + body.joint_space[side] + 1.0
        if abs(dzh) < rb:
            wr, wc = crop.win(hx, hy, rb + 1.0)
            d2 = (Xc[:, wc] - hx) ** 2 + (Yc[wr, :] - hy) ** 2 + dzh * dzh
            sub = code[wr, wc]
            sub[(d2 < rb * rb) & (d2 > ra * ra)] = _CARTILAGE


def render_soft_tissue(
    body: BodyModel,
    grid: Grid,
    *,
    bone_occupancy: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Rasterise the soft tissue, table and calibration phantom on ``grid``.

    Per slice: the body outline (trunk, thighs, gluteal cleft; :func:`_outline`), muscle inside a subcutaneous fat
    layer with its fascia and skin, intermuscular septa (:func:`_septa`), the pelvic cavity's organs
    (:func:`_pelvic_cavity`), vessels and hip joints (:func:`_vessels_and_joints`), and partial volume at the
    skin; the table and calibration phantom under the patient are drawn once.

    Parameters
    ----------
    body : BodyModel
        The geometry.
    grid : Grid
        Output grid (identity direction).
    bone_occupancy : (Z, Y, X) ndarray of float32
        Bone volume fraction; the body outline wraps the bones it finds in each slice.

    Returns
    -------
    hu : (Z, Y, X) ndarray of float32
        Soft-tissue CT values [HU] (what lies under the bones too).
    tissues : (Z, Y, X) ndarray of uint8
        Tissue classes of :data:`femurseg.conventions.TISSUES`.
    """
    nz, ny, nx = grid.shape_zyx
    dz, dy, dx = grid.spacing_zyx
    ox, oy, oz = grid.origin_xyz
    xs = (ox + dx * np.arange(nx)).astype(np.float64)
    ys = (oy + dy * np.arange(ny)).astype(np.float64)
    zs = oz + dz * np.arange(nz)
    X = xs[None, :].astype(np.float32)
    Y = ys[:, None].astype(np.float32)
    h = max(dx, dy)
    lut = _soft_tissue_lut(body)
    frame = _trunk_frame(body, bone_occupancy, xs, ys, zs)
    cx = frame.cx

    # Objects under the patient: z-invariant, drawn once on the whole plane.
    under_code, under_frac = _under_patient(body, X, Y, frame.y_rest, h)
    bg_hu = lut[under_code] * under_frac + lut[_AIR] * (1.0 - under_frac)
    bg_cls = _CLASS_OF[np.where(under_frac >= 0.5, under_code, np.uint8(_AIR))]

    # Everything else lies in the body's bounding box: work on that crop only.
    fat_max = body.fat_mm * 2.0 + 5.0
    x_lo = cx - float(frame.half_w.max()) - fat_max - 60.0
    x_hi = cx + float(frame.half_w.max()) + fat_max + 60.0
    y_lo = float(frame.y_ant.min()) - fat_max
    y_hi = frame.y_rest + 2.0 * h
    c0, c1 = (int(np.clip(np.searchsorted(xs, v), 0, nx)) for v in (x_lo, x_hi))
    r0, r1 = (int(np.clip(np.searchsorted(ys, v), 0, ny)) for v in (y_lo, y_hi))
    out_hu = np.empty(grid.shape_zyx, np.float32)
    out_cls = np.empty(grid.shape_zyx, np.uint8)
    out_hu[:] = bg_hu
    out_cls[:] = bg_cls
    if c1 <= c0 or r1 <= r0:
        return out_hu, out_cls
    crop = _Crop(xs=xs[c0:c1], ys=ys[r0:r1], X=X[:, c0:c1], Y=Y[r0:r1, :])
    bg_hu_c, under_c = bg_hu[r0:r1, c0:c1], under_code[r0:r1, c0:c1]
    under_frac_c = under_frac[r0:r1, c0:c1]

    trunk = _Polar(crop.X, crop.Y, cx, frame.cy)
    fatf = _fat_factor(trunk.theta_bins, body.fat_harmonics) * body.fat_mm
    thighs = _thigh_frames(body, crop)  # below the perineum: superellipses around each femoral shaft
    hips = _hip_windows(body, crop, xs, ys, (c0, c1, r0, r1), cx)
    cav_x, cav_y, cav_a, cav_b = body.cavity
    cav_q = (np.abs((crop.X - cav_x) / cav_a) ** 2.4 + np.abs((crop.Y - cav_y) / cav_b) ** 2.0).astype(np.float32)
    skin_mm = 1.8
    for k in range(nz):
        z = float(zs[k])
        lean, outer = _outline(body, k, z, frame, trunk, fatf, thighs, crop)
        code = np.where(lean < 0, np.uint8(_MUSCLE), np.uint8(_FAT))
        if body.fat_mm > 12.0:
            # The superficial fascia: a thin fibrous sheet splitting thick subcutaneous fat.
            code[(np.abs(outer - 0.45 * (outer - lean)) < 0.4) & (lean > 2.0)] = _FASCIA
        code[outer > -skin_mm] = _SKIN
        _septa(code, lean, z, body, hips, trunk.theta_bins)
        if z > body.perineum_z:
            _pelvic_cavity(code, lean, z, body, crop, cav_q)
        _vessels_and_joints(code, lean, z, body, crop)
        # Partial volume at the skin: the body fraction of each voxel.
        fb = np.clip(0.5 - outer / h, 0.0, 1.0)
        out_hu[k, r0:r1, c0:c1] = fb * lut[code] + (1.0 - fb) * bg_hu_c
        cls = np.where(fb >= 0.5, code, np.where(under_frac_c >= 0.5, under_c, np.uint8(_AIR)))
        out_cls[k, r0:r1, c0:c1] = _CLASS_OF[cls]
    return out_hu, out_cls


def _under_patient(body: BodyModel, X: np.ndarray, Y: np.ndarray, y_rest: float, h: float
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Calibration phantom, pad and table: internal codes and their partial-volume fraction, (Y, X)."""
    shape = np.broadcast_shapes(X.shape, Y.shape)
    code = np.zeros(shape, np.uint8)
    frac = np.zeros(shape, np.float32)
    cx = body.midline_x

    def put(sdf: np.ndarray, c: int) -> None:
        f = np.clip(0.5 - sdf / h, 0.0, 1.0)
        code[f > frac] = c
        np.maximum(frac, f, out=frac)

    def box(x0: float, x1: float, y0: float, y1: float, rc: float = 0.0) -> np.ndarray:
        qx = np.abs(X - 0.5 * (x0 + x1)) - (0.5 * (x1 - x0) - rc)
        qy = np.abs(Y - 0.5 * (y0 + y1)) - (0.5 * (y1 - y0) - rc)
        return (np.hypot(np.maximum(qx, 0), np.maximum(qy, 0)) + np.minimum(np.maximum(qx, qy), 0) - rc).astype(np.float32)

    half_t, rcurv, skin, core, pad = body.table
    if body.calibration_phantom:
        bxo, bw, bh, gap = body.block
        top = y_rest + gap
        bcx = cx + bxo
        put(box(bcx - bw / 2, bcx + bw / 2, top, top + bh, rc=6.0), _BLOCK)
        for i, c in enumerate(_RODS):
            rx = bcx + (i - 2) * body.rod_pitch
            ry = top + 0.5 * bh
            # Rods sit inside the block; a voxel is rod when its centre is (the PSF smooths the edge).
            code[np.hypot(X - rx, Y - ry) < body.rod_radius] = c
        bottom = top + bh
        sag = (bw / 2) ** 2 / (2 * rcurv)
        table_top = bottom + 1.0 + sag
    else:
        put(box(cx - half_t + 10, cx + half_t - 10, y_rest, y_rest + pad, rc=8.0), _PAD)
        table_top = y_rest + pad + 1.0
    # Curved carbon-fibre shell with a foam core: the top surface rises towards the sides.
    xr = X - cx
    rise = xr * xr / (2 * rcurv)
    depth = Y - (table_top - rise)  # 0 at the top surface, positive into the table
    edge = (np.abs(xr) - half_t).astype(np.float32)
    t_sdf_outer = np.maximum(np.maximum(-depth, depth - (2 * skin + core)), edge).astype(np.float32)
    t_sdf_core = np.maximum(np.maximum(-(depth - skin), depth - skin - core), edge + skin).astype(np.float32)
    f_outer = np.clip(0.5 - t_sdf_outer / h, 0.0, 1.0)
    f_core = np.clip(0.5 - t_sdf_core / h, 0.0, 1.0)
    tsel = f_outer > frac
    code[tsel & (f_core < 0.5)] = _TABLE_SKIN
    code[tsel & (f_core >= 0.5)] = _TABLE_FOAM
    frac[tsel] = f_outer[tsel]
    return code, frac
