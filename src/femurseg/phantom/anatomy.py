"""The phantom's anatomy: a subject's proximal femora, hemipelves and sacrum, posed in world space (LPS, mm).

A subject is drawn by :func:`sample_anatomy` (sex-specific sizes and angles, left and right alike but not
equal), built by :func:`build_skeleton`, and sampled on any voxel grid by :meth:`Skeleton.sample` as signed
distance fields (see :mod:`femurseg.phantom.fields`), which the CT renderer turns into tissues and HU.

How a bone is made
------------------
Each femur is the template femur (the bundled OpenSim Gait2392 right femur, smoothed, its head replaced by its
fitted sphere; see ``_template``), varied by a smooth *backward* warp, world point → template point:

1. undo the world offset and the patient's tilt, subtract the hip centre, mirror the left side onto the right,
   undo the leg's pose (flexion, abduction, rotation about the head centre);
2. undo the trochanters' scaling and a smooth random non-rigid deformation (a few mm, wavelengths 100–200 mm)
   that vanishes over the head, so the head stays an exact sphere;
3. undo the shape change: the head and neck (a similarity: head radius, neck rotation for the neck-shaft angle
   and anteversion) blended along the neck axis into the shaft part (overall size, neck length);
4. below the voxelised template the shaft is continued along its axis.

Signed distances are scaled by the local scale, so they stay in mm. The pelvis is the bundled right hemipelvis
and its mirror, scaled to the subject's hip-centre distance, with an acetabular cup of bone built around each
femoral head (radius = head radius + joint space, inclination and anteversion sampled) and carved so that the
femur never comes closer than the joint space.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING

import numpy as np
from scipy import ndimage

from femurseg.errors import InputError
from femurseg.geometry import Grid
from femurseg.phantom._template import (
    FemurTemplate,
    PelvisTemplate,
    femur_template,
    head_direction,
    neck_angles,
    pelvis_template,
    smoothstep,
)
from femurseg.phantom.fields import BONE_NAMES, BoneField, HipLandmarks

if TYPE_CHECKING:
    import trimesh

__all__ = [
    "BONE_NAMES",
    "AnatomyParams",
    "FemurParams",
    "Skeleton",
    "build_skeleton",
    "load_femur_mesh",
    "sample_anatomy",
]

log = logging.getLogger(__name__)

#: Bounds of the sampled head DIAMETER per sex [mm] (Hoaglund & Low 1980; Wang 2004: men ~45–52, women ~40–46).
HEAD_DIAMETER_RANGE_MM = {"M": (45.0, 52.0), "F": (40.0, 46.0)}
_TEMPLATE_INTER_HIP_MM = 167.0  # 2 × 83.5 mm, the Gait2392 model's hip-centre distance
_MIRROR = np.diag([-1.0, 1.0, 1.0])


# --------------------------------------------------------------------------------------------------- parameters
@dataclass(frozen=True)
class FemurParams:
    """One side's femur, pose and hip joint. Defaults are a typical adult man.

    Attributes
    ----------
    head_radius_mm : float
        Femoral head radius [mm], realised exactly (the head is a sphere).
    neck_length_scale : float
        Neck length (head centre to the shaft axis) relative to the template's, after ``size_scale``.
    neck_shaft_angle_deg : float
        Neck-shaft angle [deg] (~120–140).
    anteversion_deg : float
        Femoral anteversion [deg] (neck against the knee axis, seen along the shaft; ~0–30).
    trochanter_scale : float
        Scaling of the greater and lesser trochanters about their cores.
    size_scale : float
        Overall scale of the femur (shaft, trochanters, neck).
    cortex_scale : float
        Multiplies the cortical thickness everywhere (osteoporotic < 1).
    flexion_deg, abduction_deg, rotation_deg : float
        Pose of the leg about the head centre [deg]: flexion (knee anterior), abduction (knee lateral), rotation
        about the leg's long axis (positive = external rotation, negative = internal as with a foot holder).
    joint_space_mm : float
        Gap between the femoral head and the acetabulum [mm] (cartilage of both surfaces).
    acetabular_inclination_deg, acetabular_anteversion_deg : float
        Radiographic inclination and anteversion of the acetabular opening [deg] (Murray 1993).
    cup_thickness_mm : float
        Thickness of the bony acetabular roof/wall around the joint space [mm].
    """

    head_radius_mm: float = 24.0
    neck_length_scale: float = 1.0
    neck_shaft_angle_deg: float = 128.0
    anteversion_deg: float = 12.0
    trochanter_scale: float = 1.0
    size_scale: float = 1.0
    cortex_scale: float = 1.0
    flexion_deg: float = 0.0
    abduction_deg: float = 0.0
    rotation_deg: float = 0.0
    joint_space_mm: float = 3.5
    acetabular_inclination_deg: float = 45.0
    acetabular_anteversion_deg: float = 17.0
    cup_thickness_mm: float = 5.0


@dataclass(frozen=True)
class AnatomyParams:
    """A subject's bones and their placement.

    Attributes
    ----------
    right, left : FemurParams
        Per side (patient's sides).
    inter_hip_mm : float
        Distance between the two femoral head centres [mm].
    pelvis_scale : float
        Scale of the pelvis and sacrum along y and z (the x scale follows ``inter_hip_mm``).
    tilt_lr_deg, tilt_ap_deg, tilt_si_deg : float
        Small whole-patient rotations [deg] about the left-right (pelvic tilt), antero-posterior (roll) and
        superior-inferior (yaw) axes through the midpoint between the hip centres.
    hip_center_xyz : (3,) tuple of float
        World position of the midpoint between the hip centres [mm, LPS].
    deformation_seed : int
        Seed of the smooth random non-rigid deformation of each femur.
    deformation_mm : float
        RMS amplitude of that deformation [mm].
    """

    right: FemurParams = field(default_factory=FemurParams)
    left: FemurParams = field(default_factory=FemurParams)
    inter_hip_mm: float = 170.0
    pelvis_scale: float = 1.0
    tilt_lr_deg: float = 0.0
    tilt_ap_deg: float = 0.0
    tilt_si_deg: float = 0.0
    hip_center_xyz: tuple[float, float, float] = (0.0, 0.0, 0.0)
    deformation_seed: int = 0
    deformation_mm: float = 2.0

    def to_dict(self) -> dict:
        """Flat, JSON-able facts: ``right_<name>``, ``left_<name>`` per side, then the subject's own values."""
        out: dict = {}
        for side in ("right", "left"):
            for key, value in asdict(getattr(self, side)).items():
                out[f"{side}_{key}"] = float(value)
        for key in ("inter_hip_mm", "pelvis_scale", "tilt_lr_deg", "tilt_ap_deg", "tilt_si_deg", "deformation_mm"):
            out[key] = float(getattr(self, key))
        for axis, value in zip("xyz", self.hip_center_xyz):
            out[f"hip_center_{axis}_mm"] = float(value)
        out["deformation_seed"] = int(self.deformation_seed)
        return out


def _clipped_normal(rng: np.random.Generator, mean: float, sd: float, lo: float, hi: float) -> float:
    return float(np.clip(rng.normal(mean, sd), lo, hi))


def sample_anatomy(rng: np.random.Generator, *, sex: str, age: float) -> AnatomyParams:
    """Draw a subject's anatomy.

    Parameters
    ----------
    rng : numpy.random.Generator
        Source of randomness; same state, same subject.
    sex : {"F", "M"}
    age : float
        Age [years]; thins the cortex after 40 (faster in women after 50) and narrows the joint space.

    Returns
    -------
    AnatomyParams
    """
    if sex not in HEAD_DIAMETER_RANGE_MM:
        raise InputError(f"sex must be 'F' or 'M', not {sex!r}")
    if not (0.0 < float(age) < 130.0):
        raise InputError(f"age must be in years (0–130), not {age!r}")
    lo, hi = HEAD_DIAMETER_RANGE_MM[sex]
    template_d = 2.0 * femur_template().head_radius_mm
    diameter = _clipped_normal(rng, (lo + hi) / 2.0, (hi - lo) / 4.0, lo, hi)
    size = diameter / template_d * math.exp(rng.normal(0.0, 0.035))
    nsa = _clipped_normal(rng, 128.0 if sex == "M" else 126.5, 5.0, 118.0, 142.0)
    av = _clipped_normal(rng, 12.0 if sex == "M" else 15.0, 7.0, 0.0, 30.0)
    neck = _clipped_normal(rng, 1.0, 0.06, 0.86, 1.14)
    troch = _clipped_normal(rng, 1.0, 0.06, 0.86, 1.14)
    loss = 0.006 * max(age - 40.0, 0.0) + (0.008 * max(age - 50.0, 0.0) if sex == "F" else 0.0)
    cortex = _clipped_normal(rng, 1.0 - loss, 0.08, 0.45, 1.25)
    js = _clipped_normal(rng, 4.0 - 0.02 * max(age - 40.0, 0.0), 0.6, 1.6, 4.9)
    incl = _clipped_normal(rng, 45.0, 2.5, 40.0, 50.0)
    aav = _clipped_normal(rng, 18.0 if sex == "F" else 15.0, 4.0, 10.0, 25.0)
    cup = _clipped_normal(rng, 5.0, 0.8, 3.5, 7.0)
    rot = float(rng.uniform(-15.0, 30.0))

    def side(flip: float) -> FemurParams:
        # Left and right differ by small asymmetries around the subject's own values.
        return FemurParams(
            head_radius_mm=float(np.clip(diameter + flip * rng.normal(0.0, 0.35), lo, hi)) / 2.0,
            neck_length_scale=float(np.clip(neck + rng.normal(0.0, 0.015), 0.84, 1.16)),
            neck_shaft_angle_deg=float(np.clip(nsa + rng.normal(0.0, 1.5), 117.0, 143.0)),
            anteversion_deg=float(np.clip(av + rng.normal(0.0, 3.0), 0.0, 32.0)),
            trochanter_scale=float(np.clip(troch + rng.normal(0.0, 0.02), 0.84, 1.16)),
            size_scale=float(size * math.exp(rng.normal(0.0, 0.006))),
            cortex_scale=float(np.clip(cortex + rng.normal(0.0, 0.03), 0.4, 1.3)),
            flexion_deg=float(rng.uniform(-10.0, 10.0)),
            abduction_deg=float(rng.uniform(-8.0, 8.0)),
            rotation_deg=float(np.clip(rot + rng.normal(0.0, 4.0), -15.0, 30.0)),
            joint_space_mm=float(np.clip(js + rng.normal(0.0, 0.3), 1.5, 5.0)),
            acetabular_inclination_deg=float(np.clip(incl + rng.normal(0.0, 1.5), 40.0, 50.0)),
            acetabular_anteversion_deg=float(np.clip(aav + rng.normal(0.0, 2.0), 10.0, 25.0)),
            cup_thickness_mm=float(np.clip(cup + rng.normal(0.0, 0.3), 3.2, 7.5)),
        )

    right = side(1.0)
    left = side(1.0)
    inter_hip = _clipped_normal(rng, 176.0 if sex == "F" else 172.0, 8.0, 150.0, 200.0)
    return AnatomyParams(
        right=right,
        left=left,
        inter_hip_mm=inter_hip,
        pelvis_scale=float(np.clip(size * math.exp(rng.normal(0.0, 0.03)), 0.8, 1.2)),
        tilt_lr_deg=_clipped_normal(rng, 0.0, 2.0, -4.0, 4.0),
        tilt_ap_deg=_clipped_normal(rng, 0.0, 1.5, -4.0, 4.0),
        tilt_si_deg=_clipped_normal(rng, 0.0, 1.5, -4.0, 4.0),
        hip_center_xyz=(float(rng.normal(0.0, 8.0)), float(rng.uniform(-30.0, 30.0)),
                        float(rng.uniform(-150.0, 150.0))),
        deformation_seed=int(rng.integers(0, 2**31 - 1)),
        deformation_mm=float(rng.uniform(1.0, 3.0)),
    )


# ------------------------------------------------------------------------------------------------- rotations
def _rot(axis: Sequence[float], deg: float) -> np.ndarray:
    """Rotation matrix about ``axis`` by ``deg`` [deg], right-handed."""
    a = np.asarray(axis, dtype=float)
    a = a / np.linalg.norm(a)
    t = math.radians(deg)
    k = np.array([[0.0, -a[2], a[1]], [a[2], 0.0, -a[0]], [-a[1], a[0], 0.0]])
    return np.eye(3) + math.sin(t) * k + (1.0 - math.cos(t)) * (k @ k)


def _rotation_between(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """The smallest rotation taking unit vector ``u`` to unit vector ``v``."""
    u = u / np.linalg.norm(u)
    v = v / np.linalg.norm(v)
    axis = np.cross(u, v)
    s = np.linalg.norm(axis)
    if s < 1e-12:
        return np.eye(3)
    return _rot(axis, math.degrees(math.atan2(s, float(u @ v))))


def _pose_rotation(p: FemurParams) -> np.ndarray:
    """Rotation of a right femur (LPS-oriented) about its head centre: flexion · abduction · rotation."""
    flex = _rot([1.0, 0.0, 0.0], -p.flexion_deg)  # knee towards anterior (−y)
    abd = _rot([0.0, 1.0, 0.0], p.abduction_deg)  # knee towards lateral (−x for the right side)
    rot = _rot([0.0, 0.0, 1.0], -p.rotation_deg)  # anterior surface turned lateral = external rotation
    return flex @ abd @ rot


def _tilt(params: AnatomyParams) -> np.ndarray:
    return (_rot([1.0, 0.0, 0.0], params.tilt_lr_deg) @ _rot([0.0, 1.0, 0.0], params.tilt_ap_deg)
            @ _rot([0.0, 0.0, 1.0], params.tilt_si_deg))


def _smin(a: np.ndarray, b: np.ndarray, k: float) -> np.ndarray:
    """Smooth minimum (polynomial, blend width ``k`` [mm]): a union of two solids without a crease."""
    h = np.maximum(k - np.abs(a - b), 0.0) / k
    return np.minimum(a, b) - h * h * (k / 4.0)


# ----------------------------------------------------------------------------------------------------- femur
class _Femur:
    """One posed, varied femur: world points → template points and fields."""

    def __init__(self, template: FemurTemplate, p: FemurParams, side: str, params: AnatomyParams) -> None:
        self.t = template
        self.p = p
        self.side = side
        tilt = _tilt(params)
        hip = np.array([-params.inter_hip_mm / 2.0 if side == "right" else params.inter_hip_mm / 2.0, 0.0, 0.0])
        mirror = np.eye(3) if side == "right" else _MIRROR
        self.pose = _pose_rotation(p)
        # subject femur frame (right-oriented) → world: world = centre + lin @ x
        self.lin = tilt @ mirror @ self.pose
        self.centre = np.asarray(params.hip_center_xyz, dtype=float) + tilt @ hip
        self.inv = self.lin.T.astype(np.float32)

        # Shape: the head and neck are a similarity about the head centre, the shaft part a scaling.
        self.s_head = p.head_radius_mm / template.head_radius_mm
        self.s_size = p.size_scale
        head_t = -template.neck_dir
        head_s = head_direction(p.neck_shaft_angle_deg, p.anteversion_deg, template.shaft_dir)
        mid = head_direction(p.neck_shaft_angle_deg, template.anteversion_deg, template.shaft_dir)
        r1 = _rotation_between(head_t, mid)
        med_axis = template.shaft_dir
        r2 = _rotation_between(mid - (mid @ med_axis) * med_axis, head_s - (head_s @ med_axis) * med_axis)
        self.r_hn = r2 @ r1
        self.neck_dir_s = self.r_hn @ template.neck_dir
        self.base_t = template.neck_base
        self.base_s = p.size_scale * p.neck_length_scale * (self.r_hn @ template.neck_base)
        self.radius_s = p.head_radius_mm
        self.neck_len_s = float(np.linalg.norm(self.base_s))
        # Head region plateau and fade along the neck axis (subject frame).
        self.nu0 = 1.0 * self.radius_s
        self.nu1 = max(self.neck_len_s - 5.0, self.nu0 + 10.0)

        # Trochanter cores (template) and their subject positions; scaling about them enlarges the trochanters.
        def axis_point(q: np.ndarray) -> np.ndarray:
            return template.shaft_point + ((q - template.shaft_point) @ template.shaft_dir) * template.shaft_dir

        gt, lt = template.greater_trochanter, template.lesser_trochanter
        cores_t = [gt + 0.4 * (axis_point(gt) - gt) - np.array([0.0, 0.0, 8.0]), lt + 0.45 * (axis_point(lt) - lt)]
        self.cores = [self._shaft_forward(c) for c in cores_t]
        self.core_radius = [15.0 * self.s_size, 10.0 * self.s_size]
        self.k_troch = 1.0 - 1.0 / p.trochanter_scale

        # Smooth random deformation: a few plane waves; one seed per subject, a different stream per side.
        rs = np.random.default_rng([params.deformation_seed, 0 if side == "right" else 1])
        n_modes = 4
        dirs = rs.normal(size=(n_modes, 3))
        dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
        wavelength = rs.uniform(100.0, 200.0, size=n_modes)
        self.wave_k = (2.0 * np.pi * dirs / wavelength[:, None]).astype(np.float32)
        self.wave_phase = rs.uniform(0.0, 2.0 * np.pi, size=n_modes).astype(np.float32)
        amp = rs.normal(size=(n_modes, 3))
        amp *= params.deformation_mm * math.sqrt(2.0 / n_modes) / math.sqrt(3.0)
        self.wave_amp = amp.astype(np.float32)

        self.below_cut = float((template.shaft_point[2] - template.z_cut) / -template.shaft_dir[2])

    # -- maps
    def _shaft_forward(self, t: np.ndarray) -> np.ndarray:
        return self.base_s + self.s_size * (np.asarray(t) - self.base_t)

    def to_subject(self, world: np.ndarray) -> np.ndarray:
        """World points (3, N) float32 → subject femur frame (3, N)."""
        return _affine(self.inv, -self.inv @ self.centre, world)

    def head_weight(self, x: np.ndarray) -> np.ndarray:
        """1 over the head (exact similarity), 0 from the neck base on; ``x`` (3, N) in the subject frame."""
        n = self.neck_dir_s
        nu = x[0] * np.float32(n[0]) + x[1] * np.float32(n[1]) + x[2] * np.float32(n[2])
        return 1.0 - smoothstep(nu, self.nu0, self.nu1)

    def to_template(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Subject-frame points (3, N) → template points (3, N) and the local scale (N,)."""
        x = np.array(x, dtype=np.float32)
        w_out = 1.0 - self.head_weight(x)
        if self.k_troch != 0.0:
            for core, rad in zip(self.cores, self.core_radius):
                d = x - core.astype(np.float32)[:, None]
                w = np.exp((d * d).sum(axis=0) * np.float32(-0.5 / (rad * rad)))
                w *= w_out
                w *= np.float32(self.k_troch)
                d *= w
                x -= d
        disp = np.zeros_like(x)
        for kvec, phase, amp in zip(self.wave_k, self.wave_phase, self.wave_amp):
            sn = np.sin(x[0] * kvec[0] + x[1] * kvec[1] + x[2] * kvec[2] + phase)
            for i in range(3):
                disp[i] += amp[i] * sn
        disp *= w_out
        x -= disp
        w = self.head_weight(x)
        head = _affine((self.r_hn.T / self.s_head), np.zeros(3), x)
        shaft = _affine(np.eye(3) / self.s_size, self.base_t - self.base_s / self.s_size, x)
        head -= shaft
        head *= w
        t = shaft
        t += head
        # Below the voxelised template the shaft continues straight along its proximal axis.
        sd, sp = self.t.shaft_dir, self.t.shaft_point
        below = t[0] * np.float32(sd[0]) + t[1] * np.float32(sd[1]) + t[2] * np.float32(sd[2])
        over = np.maximum(below - np.float32(self.below_cut + sp @ sd), 0.0)
        for i in range(3):
            t[i] -= over * np.float32(sd[i])
        scale = w * np.float32(self.s_head - self.s_size) + np.float32(self.s_size)
        return t, scale

    def evaluate(self, world: np.ndarray, fields: bool = True):
        """Signed distance [mm] (and cortex thickness [mm], trabecular fraction) at world points (N, 3)."""
        return self.eval_soa(np.ascontiguousarray(np.asarray(world, dtype=np.float32).reshape(-1, 3).T), fields)

    def eval_soa(self, world: np.ndarray, fields: bool = True):
        """As :meth:`evaluate`, for world points (3, N) float32."""
        t, scale = self.to_template(self.to_subject(world))
        sdf = _interp(self.t.sdf.values, self.t.sdf.origin, self.t.sdf.spacing, t)
        sdf *= scale
        if not fields:
            return sdf
        cortex = _interp(self.t.cortex, self.t.coarse_origin, self.t.coarse_mm, t, distance=False)
        cortex *= scale * np.float32(self.p.cortex_scale)
        trab = _interp(self.t.trabecular, self.t.coarse_origin, self.t.coarse_mm, t, distance=False)
        return sdf, cortex, trab

    # -- geometry for boxes and landmarks
    def forward_approx(self, t: np.ndarray) -> np.ndarray:
        """Template points → world, approximately (for bounding boxes; exact at the head and the shaft)."""
        t = np.asarray(t, dtype=float)
        nu_t = t @ self.t.neck_dir
        w = 1.0 - smoothstep(nu_t, self.nu0 / self.s_head, self.nu1 / self.s_size).astype(float)
        x = w[:, None] * (self.s_head * t @ self.r_hn.T) + (1.0 - w[:, None]) * self._shaft_forward(t)
        return self.centre + x @ self.lin.T

    def world_surface_points(self) -> np.ndarray:
        """Points on and around the posed femur's surface, shaft continued to 450 mm below the head [mm]."""
        pts = self.t.surface_points
        sd = self.t.shaft_dir
        cut_level = self.t.shaft_point + self.below_cut * sd
        ring = pts[np.abs((pts - cut_level) @ sd) < 4.0]
        extra = [ring + k * sd for k in np.arange(10.0, 450.0 - self.below_cut - 60.0, 10.0)]
        return self.forward_approx(np.concatenate([pts, *extra]) if extra else pts)

    def head_centre_world(self) -> np.ndarray:
        return self.centre.copy()

    def shaft_world(self) -> tuple[np.ndarray, np.ndarray]:
        """A point of the shaft axis at the lesser trochanter's level and the distal unit direction (world)."""
        point = self.centre + self.lin @ self._shaft_forward(self.t.shaft_point)
        direction = self.lin @ self.t.shaft_dir
        return point, direction / np.linalg.norm(direction)

    def lesser_trochanter_world(self) -> np.ndarray:
        return self.centre + self.lin @ self._shaft_forward(self.t.lesser_trochanter)

    def angles(self) -> tuple[float, float]:
        """Neck-shaft angle and anteversion [deg] of the varied femur, from its neck and shaft axes."""
        return neck_angles(-self.neck_dir_s, self.t.shaft_dir)


# ---------------------------------------------------------------------------------------------------- pelvis
class _Pelvis:
    """One hemipelvis (right, or the mirrored left) with its acetabular cup, or the sacrum."""

    def __init__(self, template: PelvisTemplate, params: AnatomyParams, side: str | None,
                 femur: _Femur | None) -> None:
        self.tpl = template
        self.side = side
        self.tilt = _tilt(params)
        self.offset = np.asarray(params.hip_center_xyz, dtype=float)
        sx = params.inter_hip_mm / _TEMPLATE_INTER_HIP_MM
        self.scale = np.array([sx, params.pelvis_scale, params.pelvis_scale])
        self.sdf_scale = float(np.exp(np.log(self.scale).mean()))
        self.mirror = side == "left"
        self.femur = femur
        self.volume = template.sacrum if side is None else template.hemipelvis
        if side is not None:
            p = params.right if side == "right" else params.left
            self.p = p
            self.hip = template.right_hip * self.scale  # right-side coordinates of the patient frame
            inc, av = math.radians(p.acetabular_inclination_deg), math.radians(p.acetabular_anteversion_deg)
            lateral, inferior, anterior = np.array([-1.0, 0, 0]), np.array([0, 0, -1.0]), np.array([0, -1.0, 0])
            self.cup_axis = math.cos(av) * (math.sin(inc) * lateral + math.cos(inc) * inferior) + math.sin(av) * anterior
            self.r_in = p.head_radius_mm + p.joint_space_mm
            self.r_out = self.r_in + p.cup_thickness_mm
            # The roof (sourcil, supra-acetabular bone) is thicker than the medial wall: the outer sphere of the
            # cup is shifted upwards (and a little laterally and posteriorly: the posterior wall is the thicker)
            # by 0.3 head radii.
            roof = np.array([-0.25, 0.4, 1.0])
            self.roof_shift = 0.3 * p.head_radius_mm * roof / np.linalg.norm(roof)
            self.cortex_mm = 1.3
        else:
            self.cortex_mm = 1.0

    def evaluate(self, world: np.ndarray, fields: bool = True):
        """Signed distance [mm] (and cortex thickness [mm], trabecular fraction) at world points (N, 3)."""
        return self.eval_soa(np.ascontiguousarray(np.asarray(world, dtype=np.float32).reshape(-1, 3).T), fields)

    def eval_soa(self, world: np.ndarray, fields: bool = True):
        """As :meth:`evaluate`, for world points (3, N) float32."""
        # world → patient frame (mirrored onto the right side for the left hemipelvis) → template
        lin = self.tilt.T.copy()
        if self.mirror:
            lin = _MIRROR @ lin
        q = _affine(lin, -lin @ self.offset, world)
        v = self.volume
        sdf = _interp(v.values, v.origin, v.spacing, q / self.scale.astype(np.float32)[:, None])
        sdf *= np.float32(self.sdf_scale)
        if self.side is None:
            if not fields:
                return sdf
            return sdf, np.full(sdf.shape, self.cortex_mm, np.float32), np.ones(sdf.shape, np.float32)
        d = q - self.hip.astype(np.float32)[:, None]
        r = np.sqrt((d * d).sum(axis=0))
        ax = self.cup_axis
        e = d - self.roof_shift.astype(np.float32)[:, None]
        cap = np.maximum(np.sqrt((e * e).sum(axis=0)) - np.float32(self.r_out),
                         d[0] * np.float32(ax[0]) + d[1] * np.float32(ax[1]) + d[2] * np.float32(ax[2])
                         - np.float32(0.05 * self.r_out))
        sdf = _smin(sdf, cap, np.float32(6.0))
        sdf = np.maximum(sdf, np.float32(self.r_in) - r)
        # Keep the whole femur at least the joint space away. Points already well outside the pelvis can only
        # move further out, so the femur is evaluated where it can change what matters.
        near = np.nonzero((r < np.float32(self.r_out + 80.0)) & (sdf < np.float32(6.0)))[0]
        if len(near):
            f = self.femur.eval_soa(np.ascontiguousarray(world[:, near]), fields=False)
            sdf[near] = np.maximum(sdf[near], np.float32(self.p.joint_space_mm) - f)
        if not fields:
            return sdf
        cortex = (np.float32(1.3) + np.float32(0.7) * (1.0 - smoothstep(r, self.r_in + 2.0, self.r_in + 12.0)))
        return sdf, cortex.astype(np.float32), np.ones(sdf.shape, np.float32)

    def world_surface_points(self) -> np.ndarray:
        v = self.volume
        vals = v.values
        step = 3
        sub = vals[::step, ::step, ::step]
        ii = np.argwhere(np.abs(sub) < 2.0 * step * v.spacing) * step
        t = v.origin + ii * v.spacing
        q = t * self.scale
        if self.side is not None:
            sph = np.random.default_rng(0).normal(size=(400, 3))
            sph = self.hip + self.r_out * sph / np.linalg.norm(sph, axis=1, keepdims=True)
            q = np.concatenate([q, sph])
        if self.mirror:
            q = q * np.array([-1.0, 1.0, 1.0])
        return self.offset + q @ self.tilt.T


# -------------------------------------------------------------------------------------------------- sampling
def _affine(lin: np.ndarray, off: np.ndarray, p: np.ndarray) -> np.ndarray:
    """``lin @ p + off`` for points (3, N), float32, row by row (faster than a (N, 3) @ (3, 3) product)."""
    out = np.empty(p.shape, dtype=np.float32)
    for i in range(3):
        row = out[i]
        np.multiply(p[0], np.float32(lin[i, 0]), out=row)
        row += p[1] * np.float32(lin[i, 1])
        row += p[2] * np.float32(lin[i, 2])
        row += np.float32(off[i])
    return out


def _interp(values: np.ndarray, origin: np.ndarray, spacing: float, t: np.ndarray, *,
            distance: bool = True) -> np.ndarray:
    """Trilinear interpolation of a frame volume at frame points (3, N); outside the volume, the value at
    the nearest border point, plus the distance to it if ``distance`` (so a signed distance stays one)."""
    idx = np.empty(t.shape, dtype=np.float32)
    excess = np.zeros(t.shape[1], dtype=np.float32)
    for i in range(3):
        np.subtract(t[i], np.float32(origin[i]), out=idx[i])
        idx[i] *= np.float32(1.0 / spacing)
        clipped = np.clip(idx[i], 0.0, values.shape[i] - 1.0)
        clipped -= idx[i]
        excess += clipped * clipped
        idx[i] += clipped
    out = ndimage.map_coordinates(values, idx, order=1, mode="nearest", prefilter=False)
    if distance:
        out += np.sqrt(excess) * np.float32(spacing)
    return out


def _upsample_axis(a: np.ndarray, axis: int, factor: int, n: int) -> np.ndarray:
    """Linear interpolation along ``axis`` from nodes every ``factor`` samples to the first ``n`` samples."""
    if factor == 1:
        return a[(slice(None),) * axis + (slice(0, n),)]
    a = np.moveaxis(a, axis, 0)
    m = a.shape[0]
    w = (np.arange(factor, dtype=np.float32) / factor).reshape((1, factor) + (1,) * (a.ndim - 1))
    lo = a[:-1, None]
    out = np.empty((m - 1, factor) + a.shape[1:], dtype=np.float32)
    np.multiply(a[1:, None] - lo, w, out=out)
    out += lo
    out = out.reshape(((m - 1) * factor,) + a.shape[1:])[:n]
    return np.moveaxis(out, 0, axis)


def _upsample(c: np.ndarray, factor: np.ndarray, size: np.ndarray) -> np.ndarray:
    """Trilinear upsampling of node values (every ``factor`` voxels) to a (Z, Y, X) block of ``size``."""
    if c.size and c.min() == c.max():
        return np.full(tuple(int(v) for v in size), c.flat[0], dtype=np.float32)
    a = c.astype(np.float32)
    # z last: its pass writes the full block, contiguous, with no copy.
    for ax in (2, 1, 0):
        a = _upsample_axis(a, ax, int(factor[ax]), int(size[ax]))
    return np.ascontiguousarray(a)


def _interp_error(c: np.ndarray) -> np.ndarray:
    """Bound of the trilinear interpolation error of a field from its nodes' second differences (per node)."""
    e = np.zeros(c.shape, dtype=np.float32)
    for ax in range(3):
        if c.shape[ax] < 3:
            continue
        pad = np.pad(c, [(1, 1) if i == ax else (0, 0) for i in range(3)], mode="edge")
        lo = np.take(pad, np.arange(0, c.shape[ax]), axis=ax)
        mid = np.take(pad, np.arange(1, c.shape[ax] + 1), axis=ax)
        hi = np.take(pad, np.arange(2, c.shape[ax] + 2), axis=ax)
        e += np.abs(lo - 2.0 * mid + hi)
    # Linear interpolation errs by about ⅛ of the second difference; ×8 for safety (creases between nodes),
    # and a cell touches 8 nodes.
    return ndimage.maximum_filter(e, size=3, mode="nearest")


def _sample_box(eval_soa, grid: Grid, box: tuple[slice, slice, slice], *, coarse_mm: float = 2.0) -> BoneField:
    """Sample a bone on a box of a grid: every field on a coarse lattice, then the signed distance exactly
    wherever the interpolated one could be off by what matters (near the surface and the cortex, and wherever
    the field bends: thin plates, creases)."""
    start = np.array([s.start for s in box])
    size = np.array([s.stop - s.start for s in box])
    sp = np.asarray(grid.spacing_zyx, dtype=float)
    factor = np.maximum(1, np.round(coarse_mm / sp)).astype(int)
    nodes = (size - 1) // factor + 2
    # index (z, y, x) → world (x, y, z): world = m @ idx_xyz + origin
    m = grid.direction_matrix * sp[::-1][None, :]
    o = np.asarray(grid.origin_xyz, dtype=float)
    axes = [(start[i] + factor[i] * np.arange(nodes[i])).astype(np.float32) for i in range(3)]
    cz, cy, cx = np.meshgrid(*axes, indexing="ij")
    cidx = np.stack([cx.ravel(), cy.ravel(), cz.ravel()])
    csdf, ccort, ctrab = eval_soa(_affine(m, o, cidx))

    shape = tuple(int(v) for v in nodes)
    sdf, cortex, trab = (_upsample(c.reshape(shape), factor, size) for c in (csdf, ccort, ctrab))
    if np.any(factor > 1):
        err = _upsample(_interp_error(csdf.reshape(shape)), factor, size)
        err += np.float32(sp.max() + 0.5)
        chunk = max(1, int(4_000_000 // max(int(size[1] * size[2]), 1)))
        for z0 in range(0, int(size[0]), chunk):
            s_sl = sdf[z0:z0 + chunk]
            e_sl = err[z0:z0 + chunk]
            band = (s_sl < e_sl) & (s_sl > -(cortex[z0:z0 + chunk] + e_sl))
            idx = np.nonzero(band)
            if len(idx[0]) == 0:
                continue
            pts = np.stack([(idx[2] + start[2]).astype(np.float32), (idx[1] + start[1]).astype(np.float32),
                            (idx[0] + (start[0] + z0)).astype(np.float32)])
            s_sl[idx] = eval_soa(_affine(m, o, pts), fields=False)
    return BoneField(box=box, sdf=sdf, cortex_mm=cortex, trabecular=trab)


def _box_of(points_world: np.ndarray, grid: Grid, margin_mm: float) -> tuple[slice, slice, slice] | None:
    """The grid box (z, y, x slices) around the points that lie within the grid (± margin), or None."""
    idx = grid.world_to_index(points_world)
    shape = np.asarray(grid.shape_zyx)
    m = margin_mm / np.asarray(grid.spacing_zyx, dtype=float)
    keep = np.all((idx > -m - 1) & (idx < shape - 1 + m + 1), axis=1)
    if not keep.any():
        return None
    lo = np.floor(idx[keep].min(axis=0) - m).astype(int)
    hi = np.ceil(idx[keep].max(axis=0) + m).astype(int) + 1
    lo = np.clip(lo, 0, shape)
    hi = np.clip(hi, 0, shape)
    if np.any(hi <= lo):
        return None
    return tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))  # type: ignore[return-value]


# -------------------------------------------------------------------------------------------------- skeleton
class Skeleton:
    """A subject's posed bones (world LPS, mm), sampled on demand on any grid.

    Attributes
    ----------
    params : AnatomyParams
    landmarks : HipLandmarks
    """

    def __init__(self, params: AnatomyParams, template: FemurTemplate) -> None:
        self.params = params
        self.template = template
        ptpl = pelvis_template()
        self._femur = {side: _Femur(template, getattr(params, side), side, params) for side in ("right", "left")}
        self._bones = {
            "femur_right": self._femur["right"],
            "femur_left": self._femur["left"],
            "pelvis_right": _Pelvis(ptpl, params, "right", self._femur["right"]),
            "pelvis_left": _Pelvis(ptpl, params, "left", self._femur["left"]),
            "sacrum": _Pelvis(ptpl, params, None, None),
        }
        self._surface = {name: bone.world_surface_points() for name, bone in self._bones.items()}
        self.landmarks = self._landmarks()

    def _landmarks(self) -> HipLandmarks:
        heads, radii, js, lt, sp, sd = {}, {}, {}, {}, {}, {}
        for side, fem in self._femur.items():
            heads[side] = fem.head_centre_world()
            radii[side] = float(fem.p.head_radius_mm)
            js[side] = float(fem.p.joint_space_mm)
            lt[side] = float(fem.lesser_trochanter_world()[2])
            sp[side], sd[side] = fem.shaft_world()
        roof = max(heads[s][2] + radii[s] + js[s] for s in heads)
        proper = [self._surface[n] for n in ("pelvis_right", "pelvis_left", "sacrum")]
        for fem in self._femur.values():
            proper.append(fem.forward_approx(fem.t.surface_points))
        allp = np.concatenate(proper)
        return HipLandmarks(head_center_xyz=heads, head_radius_mm=radii, joint_space_mm=js,
                            acetabulum_roof_z=float(roof), lesser_trochanter_z=lt, shaft_point_xyz=sp,
                            shaft_direction_xyz=sd, bounds_min_xyz=allp.min(axis=0), bounds_max_xyz=allp.max(axis=0))

    def box(self, name: str, grid: Grid) -> tuple[slice, slice, slice] | None:
        """The box of ``grid`` (z, y, x slices) that holds bone ``name``, or None if it misses the grid."""
        margin = 8.0 + 2.5 * self.params.deformation_mm if name.startswith("femur") else 6.0
        return _box_of(self._surface[name], grid, margin)

    def evaluate(self, name: str, points_xyz: np.ndarray, *, fields: bool = True):
        """Bone ``name``'s signed distance [mm] (and cortex [mm], trabecular fraction) at world points (N, 3)."""
        return self._bones[name].evaluate(np.asarray(points_xyz, dtype=float).reshape(-1, 3), fields)

    def sample(self, grid: Grid, *, names: Sequence[str] = BONE_NAMES) -> dict[str, BoneField]:
        """Sample the bones on a grid.

        Parameters
        ----------
        grid : Grid
            Any grid (anisotropic, oblique).
        names : sequence of str
            Bones wanted, from :data:`BONE_NAMES`.

        Returns
        -------
        dict of str to BoneField
            Every wanted bone that intersects the grid, fields float32 on its box only.
        """
        out: dict[str, BoneField] = {}
        for name in names:
            if name not in self._bones:
                raise InputError(f"unknown bone {name!r}; choose from {', '.join(BONE_NAMES)}")
            box = self.box(name, grid)
            if box is None:
                continue
            bone = self._bones[name]
            out[name] = _sample_box(bone.eval_soa, grid, box)
        return out

    def head_surface_points(self, side: str, *, n: int = 400) -> np.ndarray:
        """Points of the femoral head surface (world) found along rays from the head centre over its upper
        half, by bisection of the sampled signed distance."""
        fem = self._femur[side]
        rng = np.random.default_rng(12345)
        d = rng.normal(size=(4 * n, 3))
        d /= np.linalg.norm(d, axis=1, keepdims=True)
        # Rays away from the neck (the articular surface): angle to the neck > 70°.
        neck_world = fem.lin @ fem.neck_dir_s
        d = d[(d @ neck_world) < -0.35][:n]
        lo = np.zeros(len(d))
        hi = np.full(len(d), 2.0 * fem.p.head_radius_mm)
        c = fem.head_centre_world()
        for _ in range(40):
            mid = 0.5 * (lo + hi)
            inside = fem.evaluate(c + mid[:, None] * d, fields=False) < 0
            lo = np.where(inside, mid, lo)
            hi = np.where(inside, hi, mid)
        return c + (0.5 * (lo + hi))[:, None] * d

    def _true_shaft_axis(self, side: str, centre: np.ndarray, radius: float) -> tuple[np.ndarray, np.ndarray]:
        """The posed femur's proximal shaft axis (distal unit direction, a point) [mm, LPS], measured on the bone
        as built: its random smooth deformation bends the shaft by degrees away from the template's straight
        axis, so the axis is taken the way :func:`femurseg.qct.frame.femur_frame` defines it (the same window of
        shaft under the lesser trochanter), on the exact surface sampled at 1 mm down to 250 mm under the head."""
        from femurseg.geometry import Grid
        from femurseg.qct import frame as _frame

        fem = self._femur[side]
        pts = fem.world_surface_points()
        pts = pts[pts[:, 2] >= centre[2] - 260.0]
        step = 1.0  # [mm]: the axis moves by under 0.3° against 0.5 mm sampling, at a quarter of the cost
        lo, hi = pts.min(axis=0) - 3.0, pts.max(axis=0) + 3.0
        axes = [np.arange(lo[i], hi[i], step) for i in range(3)]
        mask = np.empty((len(axes[2]), len(axes[1]), len(axes[0])), bool)
        gy, gx = np.meshgrid(axes[1], axes[0], indexing="ij")
        for k, z in enumerate(axes[2]):  # slice by slice: bounded memory
            plane = np.stack([gx.ravel(), gy.ravel(), np.full(gx.size, z)], axis=1)
            mask[k] = (fem.evaluate(plane, fields=False) < 0).reshape(gx.shape)
        grid = Grid(shape_zyx=mask.shape, spacing_zyx=(step, step, step), origin_xyz=tuple(float(v) for v in lo),
                    direction=(1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0))
        index = np.argwhere(mask)
        world = grid.index_to_world(index)
        sd, sp, _ = _frame._shaft_axis(world, _frame._cut_voxels(index, world, grid), centre, radius, side)
        return sd, sp

    def truth_frame(self, side: str):  # noqa: ANN201  (FemurFrame; imported lazily)
        """The femur's true anatomical frame (:class:`femurseg.qct.frame.FemurFrame`, world LPS mm): the head
        sphere fitted to the head's surface, the neck axis through the head centre along the varied neck, the
        proximal shaft axis measured on the bone as built (:meth:`_true_shaft_axis`), and the narrowest neck
        section found on the true surface (cross-section areas sampled every 0.5 mm from 0.8 to 2.5 head radii
        along the neck axis on a 0.5 mm disc).  About a second per femur."""
        from femurseg.phantom._meshes import fit_sphere
        from femurseg.qct.frame import FemurFrame

        fem = self._femur[side]
        centre, radius = fit_sphere(self.head_surface_points(side))
        u = fem.lin @ (-fem.neck_dir_s)
        u = u / np.linalg.norm(u)
        sd, sp = self._true_shaft_axis(side, centre, float(radius))
        e1 = np.cross(u, [0.0, 0.0, 1.0] if abs(u[2]) < 0.9 else [1.0, 0.0, 0.0])
        e1 /= np.linalg.norm(e1)
        e2 = np.cross(u, e1)
        g = np.arange(-1.6 * radius, 1.6 * radius + 1e-6, 0.5)
        a, b = (m.ravel() for m in np.meshgrid(g, g, indexing="ij"))
        ts = np.arange(0.8 * radius, 2.5 * radius + 1e-6, 0.5)
        areas = []
        for t in ts:
            pts = centre - t * u + a[:, None] * e1 + b[:, None] * e2
            areas.append(np.count_nonzero(fem.evaluate(pts, fields=False) < 0) * 0.25)
        k = int(np.argmin(areas))
        return FemurFrame(side=side, head_center_xyz=centre, head_radius_mm=float(radius), head_residual_mm=0.0,
                          neck_axis_xyz=u, neck_center_xyz=centre - ts[k] * u,
                          neck_width_mm=float(np.sqrt(4.0 * areas[k] / np.pi)), shaft_axis_xyz=sd, shaft_point_xyz=sp)

    def facts(self) -> dict:
        """Measured facts of the built anatomy (flat, JSON-able): per side the head diameter (sphere fit of the
        head surface) [mm], neck-shaft angle and anteversion [deg] (from the varied neck and shaft axes), joint
        space (smallest pelvis distance over the head's articular surface) [mm], head centre [mm, LPS];
        and the hip-centre distance [mm]."""
        from femurseg.phantom._meshes import fit_sphere

        out: dict = {}
        for side, fem in self._femur.items():
            pts = self.head_surface_points(side)
            c, r = fit_sphere(pts)
            nsa, av = fem.angles()
            pel = self._bones[f"pelvis_{side}"].evaluate(pts, fields=False)
            out[f"{side}_head_diameter_mm"] = 2.0 * float(r)
            out[f"{side}_neck_shaft_angle_deg"] = float(nsa)
            out[f"{side}_anteversion_deg"] = float(av)
            out[f"{side}_joint_space_mm"] = float(pel.min())
            for axis, value in zip("xyz", c):
                out[f"{side}_head_center_{axis}_mm"] = float(value)
        hr, hl = self.landmarks.head_center_xyz["right"], self.landmarks.head_center_xyz["left"]
        out["inter_hip_mm"] = float(np.linalg.norm(hr - hl))
        return out


def build_skeleton(params: AnatomyParams, *, femur_mesh: trimesh.Trimesh | None = None) -> Skeleton:
    """Pose a subject's bones.

    Parameters
    ----------
    params : AnatomyParams
        From :func:`sample_anatomy` (or made by hand).
    femur_mesh : trimesh.Trimesh, optional
        A user's femur (see :func:`load_femur_mesh`), used instead of the bundled template for both sides (the
        left as its mirror), varied by ``params`` as usual.

    Returns
    -------
    Skeleton
    """
    if femur_mesh is None:
        template = femur_template()
    else:
        from femurseg.phantom.meshes import femur_template_of

        template = femur_template_of(femur_mesh)
    return Skeleton(params, template)


def load_femur_mesh(path, *, side: str, scale: float = 1.0) -> trimesh.Trimesh:
    """Read a user's femur surface mesh (STL, PLY, OBJ, VTP) [mm × ``scale``]; see :mod:`femurseg.phantom.meshes`."""
    from femurseg.phantom.meshes import load_femur_mesh as _load

    return _load(path, side=side, scale=scale)
