"""The phantom's CT physics: calibration, scanner parameters, bone rendering with partial volume, blur and noise.

The scanner model, in the order :func:`femurseg.phantom.generate.generate` applies it:

1. **Bones** (:func:`render_bones`) are sampled by the anatomy on a grid that is fine along z (``m`` sub-samples
   per output slice, at most 0.5 mm apart).  Each sub-sample carries the fraction of its cell inside the
   periosteal and endosteal surfaces (a linear ramp of the signed distance over one cell width: the exact
   box-average of a planar boundary to first order), so cortical, trabecular and marrow volumes mix by
   partial volume.  Sub-samples are then averaged along z with the slice-sensitivity profile (a Gaussian of
   FWHM = slice thickness) into the output slices, while the label maps use the plain box average over each
   voxel's own extent.  The femur label follows the annotators' convention
   (:data:`femurseg.conventions.FEMUR_LABEL_FRACTION`): a voxel is femur when that fraction, blurred in-plane by
   the scanner's point-spread function, is at least a quarter; the tissue classes go by majority.
2. **Soft tissue** (:mod:`femurseg.phantom.body`) fills the rest; a voxel's HU is
   ``B + (1 - A) * HU_soft``, with ``A`` the bone volume fraction and ``B`` the bone's HU-weighted fraction.
3. **Point-spread function** in-plane (a Gaussian of the drawn FWHM), **beam-hardening streaks** between the
   femoral heads, **correlated noise** (white noise band-passed in-plane, as filtered back-projection shapes its
   noise power spectrum, and smoothed along z by the overlapping slice profile, then scaled to the drawn σ) and
   an optional **reconstruction circle** (−1024 outside), then int16 HU clipped to [−1024, 3071].

Bone density maps to HU through the scanner calibration of the Mindways two-component model (Mindways QCT Pro
user guide / Cann & Genant's K2HPO4 calibration): ``HU = β_CT + σ_CT·ρ_K2HPO4`` for bone, and for a phantom rod
``HU_rod = ρ_water,rod + σ_ref·ρ_K2HPO4,rod + β_ref`` with ``σ_CT = σ_ref − 0.2174`` and ``β_CT = β_ref + 999.6``.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from scipy import ndimage

from femurseg.conventions import FEMUR_LABEL_FRACTION, LEFT_FEMUR, RIGHT_FEMUR, TISSUES
from femurseg.errors import InputError
from femurseg.geometry import Grid
from femurseg.phantom.fields import BONE_NAMES, HipLandmarks

__all__ = [
    "ROD_NAMES",
    "DEFAULT_ROD_K2HPO4",
    "DEFAULT_ROD_WATER",
    "Calibration",
    "ScanParams",
    "BoneDensity",
    "BoneRender",
    "sample_calibration",
    "sample_scan",
    "fine_z_plan",
    "render_bones",
    "add_streaks",
    "apply_scanner",
    "outside_circle",
    "HU_MIN",
    "HU_MAX",
]

#: Range of stored CT values [HU] (12-bit CT with the usual −1024 offset).
HU_MIN: int = -1024
HU_MAX: int = 3071

#: Calibration rods of a Mindways Model 3 CT phantom, and the default certificate (Mindways QCT Pro user guide):
#: K2HPO4 and water-equivalent densities of each rod [mg/cm³].
ROD_NAMES: tuple[str, ...] = ("A", "B", "C", "D", "E")
DEFAULT_ROD_K2HPO4: tuple[float, ...] = (-51.83, -53.40, 58.88, 157.05, 375.83)
DEFAULT_ROD_WATER: tuple[float, ...] = (1012.25, 1056.95, 1103.57, 1119.52, 923.20)


@dataclass(frozen=True)
class Calibration:
    """A scanner's density calibration and the certificate of the phantom's rods.

    Attributes
    ----------
    rod_k2hpo4 : (5,) tuple of float
        K2HPO4 density of rods A–E [mg/cm³].
    rod_water : (5,) tuple of float
        Water-equivalent density of rods A–E [mg/cm³].
    sigma_ref : float
        Slope of the two-component model [HU per mg/cm³ K2HPO4].
    beta_ref : float
        Offset of the two-component model [HU].
    """

    rod_k2hpo4: tuple[float, ...] = DEFAULT_ROD_K2HPO4
    rod_water: tuple[float, ...] = DEFAULT_ROD_WATER
    sigma_ref: float = 1.40
    beta_ref: float = -1000.0

    @property
    def sigma_ct(self) -> float:
        """Slope of the bone calibration ``HU = β_CT + σ_CT·ρ`` [HU per mg/cm³ K2HPO4]."""
        return self.sigma_ref - 0.2174

    @property
    def beta_ct(self) -> float:
        """Offset of the bone calibration [HU]."""
        return self.beta_ref + 999.6

    def hu_of_density(self, rho_k2hpo4: Any) -> Any:
        """CT value [HU] of bone of K2HPO4-equivalent density ``rho_k2hpo4`` [mg/cm³] (scalar or array)."""
        return self.beta_ct + self.sigma_ct * rho_k2hpo4

    def rod_hu(self) -> np.ndarray:
        """(5,) CT values of rods A–E [HU] by the two-component model."""
        return np.asarray(self.rod_water) + self.sigma_ref * np.asarray(self.rod_k2hpo4) + self.beta_ref

    def to_dict(self) -> dict[str, float]:
        """Flat JSON-able facts: rod densities, σ_ref, β_ref, σ_CT, β_CT."""
        out: dict[str, float] = {}
        for name, k, w in zip(ROD_NAMES, self.rod_k2hpo4, self.rod_water):
            out[f"rod_{name}_k2hpo4_mg_cm3"] = float(k)
            out[f"rod_{name}_water_mg_cm3"] = float(w)
        out.update(sigma_ref=float(self.sigma_ref), beta_ref=float(self.beta_ref),
                   sigma_ct=float(self.sigma_ct), beta_ct=float(self.beta_ct))
        return out


@dataclass(frozen=True)
class ScanParams:
    """How one case is scanned and reconstructed.

    Attributes
    ----------
    spacing_xyz : (3,) tuple of float
        Voxel spacing [mm], (x, y, z) as ITK; z is the slice increment.
    matrix : int
        In-plane size of the reconstruction (square) [voxels].
    slice_thickness_mm : float
        FWHM of the slice-sensitivity profile [mm].
    psf_fwhm_mm : float
        In-plane FWHM of the reconstruction's point-spread function [mm].
    noise_sigma_hu : float
        Standard deviation of the image noise [HU].
    noise_band_mm : (2,) tuple of float
        Inner and outer Gaussian widths of the in-plane noise band-pass [mm].
    streak_hu : float
        Depth of the beam-hardening streak between the femoral heads [HU] (0: none).
    recon_circle : bool
        Whether voxels outside the reconstruction circle are padded with −1024.
    calibration_phantom : bool
        Whether a calibration phantom lies under the patient.
    calibration : Calibration
        Density calibration and rod certificate.
    """

    spacing_xyz: tuple[float, float, float]
    matrix: int
    slice_thickness_mm: float
    psf_fwhm_mm: float
    noise_sigma_hu: float
    noise_band_mm: tuple[float, float]
    streak_hu: float
    recon_circle: bool
    calibration_phantom: bool
    calibration: Calibration

    def to_dict(self) -> dict[str, Any]:
        """Flat JSON-able facts."""
        d = asdict(self)
        d.pop("calibration")
        d["spacing_x_mm"], d["spacing_y_mm"], d["spacing_z_mm"] = (float(s) for s in d.pop("spacing_xyz"))
        d["noise_band_mm"] = list(d["noise_band_mm"])
        d.update(self.calibration.to_dict())
        return d


def sample_calibration(rng: np.random.Generator) -> Calibration:
    """A scanner calibration and a rod certificate varied a little around the default one.

    Each phantom is manufactured with its own certificate; rod densities vary by about 1 % between phantoms.
    The slope varies with kVp and scanner (about 1.1–1.35 HU per mg/cm³ K2HPO4 for σ_CT at 120 kVp), the
    offset with the scanner's water calibration (±10 HU).
    """
    k = tuple(float(v + rng.normal(0.0, 0.01 * max(abs(v), 50.0))) for v in DEFAULT_ROD_K2HPO4)
    w = tuple(float(v + rng.normal(0.0, 2.0)) for v in DEFAULT_ROD_WATER)
    return Calibration(rod_k2hpo4=k, rod_water=w, sigma_ref=float(rng.uniform(1.30, 1.55)),
                       beta_ref=float(rng.uniform(-1010.0, -990.0)))


def sample_scan(
    rng: np.random.Generator,
    *,
    body_width_mm: float,
    fat_mm: float,
    spacing_xyz: tuple[float, float, float] | None = None,
    slice_thickness_mm: float | None = None,
    matrix: int = 512,
    calibration_phantom: bool | None = None,
    noise_sigma_hu: float | None = None,
    recon_circle: bool | None = None,
) -> ScanParams:
    """Draw a hip-QCT acquisition and reconstruction.

    Parameters
    ----------
    rng : numpy.random.Generator
        Source of randomness.
    body_width_mm : float
        Patient's widest extent [mm]; the in-plane field of view (``matrix`` × spacing) is made to hold it when
        the spacing is drawn (0.6–1.0 mm, as clinical reconstructions of a 512² matrix).
    fat_mm : float
        Subcutaneous fat thickness [mm]; larger patients get noisier images.
    spacing_xyz : (3,) tuple of float, optional
        Fixed voxel spacing [mm], (x, y, z).
    slice_thickness_mm : float, optional
        Fixed slice thickness [mm]; by default equal to the slice increment, or drawn with it (0.5–3 mm).
    matrix : int
        In-plane matrix size [voxels].
    calibration_phantom : bool, optional
        Force the calibration phantom present or absent; by default present in about 85 % of scans.
    noise_sigma_hu : float, optional
        Fixed noise standard deviation [HU] (0 for a noise-free image).
    recon_circle : bool, optional
        Force the reconstruction circle on or off (outside it the image is blank); by default on in about 60 %.

    Returns
    -------
    ScanParams
    """
    if matrix < 16:
        raise InputError(f"matrix {matrix} is too small; use at least 16 voxels")
    draws = rng.uniform(size=12)  # a fixed number of draws, so overrides do not shift the later ones
    if spacing_xyz is None:
        lo = max(0.6, (body_width_mm + 30.0) / matrix)
        dxy = float(np.round(min(1.0, lo + draws[0] * max(0.0, 1.0 - lo)), 4))
        if draws[1] < 0.45:
            dz = float(np.round(0.5 + draws[2] * 0.75, 2))  # thin-slice helical: 0.5–1.25 mm
        else:
            dz = float(np.round(1.0 + draws[2] * 2.0, 2))  # classic QCT protocols: 1–3 mm
        spacing_xyz = (dxy, dxy, dz)
    else:
        spacing_xyz = tuple(float(s) for s in spacing_xyz)  # type: ignore[assignment]
        if len(spacing_xyz) != 3 or min(spacing_xyz) <= 0 or max(spacing_xyz) > 10:
            raise InputError(f"spacing {spacing_xyz} must be three positive values up to 10 mm, (x, y, z)")
    if slice_thickness_mm is None:
        # Most reconstructions have thickness = increment; some overlap (thickness up to 1.5 × increment).
        slice_thickness_mm = spacing_xyz[2] * (1.0 if draws[3] < 0.7 else 1.0 + 0.5 * draws[4])
    if slice_thickness_mm <= 0:
        raise InputError(f"slice thickness {slice_thickness_mm} mm must be positive")
    psf = 0.55 + 0.6 * draws[5]  # standard to sharp body kernels: FWHM 0.55–1.15 mm
    psf = max(psf, 0.9 * spacing_xyz[0])
    if noise_sigma_hu is None:
        # Noise grows as 1/sqrt(slice thickness) and with patient size (dose modulation only partly corrects it).
        base = 9.0 + 16.0 * draws[6]
        noise_sigma_hu = base / math.sqrt(max(slice_thickness_mm, 0.5)) * (0.85 + 0.3 * min(fat_mm, 60.0) / 60.0)
    if noise_sigma_hu < 0:
        raise InputError(f"noise sigma {noise_sigma_hu} HU must be ≥ 0")
    band = (0.3 + 0.25 * draws[7], 1.1 + 0.9 * draws[8])
    streak = float(10.0 + 40.0 * draws[9]) if draws[10] < 0.8 else 0.0
    if calibration_phantom is None:
        calibration_phantom = bool(draws[11] < 0.85)
    circle_draw = rng.uniform()  # drawn even when overridden, so the calibration's draws stay the same
    return ScanParams(
        spacing_xyz=spacing_xyz,  # type: ignore[arg-type]
        matrix=int(matrix),
        slice_thickness_mm=float(slice_thickness_mm),
        psf_fwhm_mm=float(psf),
        noise_sigma_hu=float(noise_sigma_hu),
        noise_band_mm=(float(band[0]), float(band[1])),
        streak_hu=streak,
        recon_circle=bool(circle_draw < 0.6) if recon_circle is None else bool(recon_circle),
        calibration_phantom=bool(calibration_phantom),
        calibration=sample_calibration(rng),
    )


# ---------------------------------------------------------------------------------------------------------------
# The z plan: a fine grid along z whose sub-samples tile each output slice and extend over the slice profile.


@dataclass(frozen=True)
class FineZPlan:
    """How the fine grid along z relates to the output slices.

    Output slice ``k`` covers fine samples ``k*m + c0 + j`` for ``j`` in ``range(m)`` (its own extent) and gets the
    slice-profile weights ``weights`` at fine offsets ``k*m + c0 + offsets``.
    """

    m: int
    c0: int
    n_fine: int
    delta_mm: float
    offsets: np.ndarray
    weights: np.ndarray
    grid: Grid


def fine_z_plan(grid: Grid, *, slice_thickness_mm: float, max_step_mm: float = 0.5) -> FineZPlan:
    """The fine grid along z used to sample bones for ``grid`` (identity direction).

    Parameters
    ----------
    grid : Grid
        The output grid.
    slice_thickness_mm : float
        FWHM of the Gaussian slice-sensitivity profile [mm].
    max_step_mm : float
        Largest fine step along z [mm].

    Returns
    -------
    FineZPlan
    """
    dz = grid.spacing_zyx[0]
    step = min(max_step_mm, slice_thickness_mm / 2.0)
    m = max(1, int(math.ceil(dz / step - 1e-6)))
    delta = dz / m
    s = slice_thickness_mm / (2.0 * math.sqrt(2.0 * math.log(2.0)))
    centre = (m - 1) / 2.0
    reach = int(math.ceil(3.0 * s / delta))
    offsets = np.arange(int(math.floor(centre)) - reach, int(math.ceil(centre)) + reach + 1)
    # Taps within ±3σ of the slice centre (the profile's tails beyond carry < 0.3 % of its weight).
    offsets = offsets[np.abs(offsets - centre) * delta <= 3.0 * s + 1e-9]
    if offsets.size == 0:
        offsets = np.arange(int(math.floor(centre)), int(math.ceil(centre)) + 1)
    weights = np.exp(-0.5 * ((offsets - centre) * delta / s) ** 2)
    weights /= weights.sum()
    c0 = max(0, -int(offsets.min()))
    n_fine = (grid.shape_zyx[0] - 1) * m + c0 + max(m, int(offsets.max()) + 1)
    z0 = grid.origin_xyz[2] - dz / 2.0 + (0.5 - c0) * delta
    fine = Grid(
        shape_zyx=(n_fine, grid.shape_zyx[1], grid.shape_zyx[2]),
        spacing_zyx=(delta, grid.spacing_zyx[1], grid.spacing_zyx[2]),
        origin_xyz=(grid.origin_xyz[0], grid.origin_xyz[1], z0),
        direction=grid.direction,
    )
    return FineZPlan(m=m, c0=c0, n_fine=n_fine, delta_mm=delta, offsets=offsets, weights=weights, grid=fine)


def _accumulate(out: np.ndarray, fine: np.ndarray, a: int, ys: slice, xs: slice, plan: FineZPlan,
                offsets: np.ndarray, weights: np.ndarray) -> None:
    """``out[k, ys, xs] += Σ_j w_j · fine[k·m + c0 + o_j − a]`` over the fine samples that exist."""
    m, n = plan.m, fine.shape[0]
    nz = out.shape[0]
    for o, w in zip(offsets.tolist(), weights.tolist()):
        c0 = plan.c0
        k0 = max(0, -(-(a - c0 - o) // m))
        k1 = min(nz - 1, (a + n - 1 - c0 - o) // m)
        if k1 < k0:
            continue
        f0 = k0 * m + c0 + o - a
        src = fine[f0 : f0 + (k1 - k0) * m + 1 : m]
        if w == 1.0:
            out[k0 : k1 + 1, ys, xs] += src
        else:
            out[k0 : k1 + 1, ys, xs] += np.float32(w) * src


def _box_mean_into(out: np.ndarray, fine: np.ndarray, a: int, ys: slice, xs: slice, plan: FineZPlan) -> None:
    offsets = np.arange(plan.m)
    _accumulate(out, fine, a, ys, xs, plan, offsets, np.full(plan.m, 1.0 / plan.m))


# ---------------------------------------------------------------------------------------------------------------
# Bone densities and texture


@dataclass(frozen=True)
class BoneDensity:
    """A subject's bone material.

    Attributes
    ----------
    trabecular_vbmd : float
        Mean trabecular vBMD of the proximal femur [mg/cm³ K2HPO4].
    cortical_density : float
        Cortical bone density [mg/cm³ K2HPO4 equivalent].
    marrow_hu : float
        Fatty marrow of the shaft canal [HU].
    texture_amplitude : float
        Relative amplitude of the trabecular texture (standard deviation of the multiplicative field).
    texture_scales_mm : (2,) tuple of float
        Inner and outer widths of the texture's band-pass [mm].
    pelvis_ratio : float
        Pelvic trabecular vBMD relative to the femur's.
    sacrum_ratio : float
        Sacral trabecular vBMD relative to the femur's.
    """

    trabecular_vbmd: float
    cortical_density: float
    marrow_hu: float
    texture_amplitude: float = 0.35
    texture_scales_mm: tuple[float, float] = (0.35, 1.4)
    pelvis_ratio: float = 0.75
    sacrum_ratio: float = 0.65


def _tile_points(tile: np.ndarray, zi: np.ndarray, yi: np.ndarray, xi: np.ndarray, rng: np.random.Generator
                 ) -> np.ndarray:
    """The periodic ``tile`` at box indices (zi, yi, xi), read from a random offset."""
    oz, oy, ox = (int(v) for v in rng.integers(0, 1 << 16, size=3))
    nz, ny, nx = tile.shape
    return tile[(zi + oz) % nz, (yi + oy) % ny, (xi + ox) % nx]


def _band_pass(shape: tuple[int, ...], spacing_zyx: tuple[float, ...], scales_mm: tuple[float, float],
               rng: np.random.Generator, *, wrap: bool = False) -> np.ndarray:
    """Unit-variance band-pass Gaussian random field: white noise filtered by a difference of Gaussians."""
    white = rng.standard_normal(size=shape, dtype=np.float32)
    s1 = [scales_mm[0] / d for d in spacing_zyx]
    s2 = [scales_mm[1] / d for d in spacing_zyx]
    mode = "wrap" if wrap else "reflect"
    field = ndimage.gaussian_filter(white, s1, truncate=3.0, mode=mode)
    field -= ndimage.gaussian_filter(white, s2, truncate=3.0, mode=mode)
    del white
    sd = float(field.std()) if field.size else 1.0
    field /= max(sd, 1e-6)
    return field


def _femur_modulation(x: np.ndarray, y: np.ndarray, z: np.ndarray, landmarks: HipLandmarks, side: str,
                      rng: np.random.Generator) -> np.ndarray:
    """Regional trabecular density of a proximal femur (multiplicative, about 0.6–1.5).

    Denser along the principal compressive group (from the calcar up through the head to its weight-bearing
    dome) and in the head, sparser in Ward's region (the neck's base between the trabecular groups) and in the
    greater trochanter, fading towards the shaft's canal.
    """
    # x, y, z: world coordinates of the points [mm] (float32 arrays of one shape).
    h = np.asarray(landmarks.head_center_xyz[side], dtype=np.float32)
    r = float(landmarks.head_radius_mm[side])
    sp = np.asarray(landmarks.shaft_point_xyz[side], dtype=np.float64)
    sd = np.asarray(landmarks.shaft_direction_xyz[side], dtype=np.float64)
    sd = sd / np.linalg.norm(sd)
    if sd[2] < 0:  # make it point superiorly
        sd = -sd
    # Neck axis: from where it meets the shaft axis (neck-shaft angle ~130°) to the head centre.
    p = sp + np.dot(h - sp, sd) * sd
    offset = float(np.linalg.norm(h - p))
    q = p - sd * offset / math.tan(math.radians(50.0))
    u = (h - q) / max(np.linalg.norm(h - q), 1e-6)
    horiz = np.array([u[0], u[1], 0.0])
    horiz /= max(np.linalg.norm(horiz), 1e-6)  # medial, towards the head
    dx, dy, dz = x - h[0], y - h[1], z - h[2]
    # Principal compressive group: a band through the head centre, mostly vertical, tilted medially upwards.
    tilt = math.radians(rng.uniform(15.0, 25.0))
    v = np.array([0.0, 0.0, 1.0]) * math.cos(tilt) + horiz * math.sin(tilt)
    t = np.clip(dx * v[0] + dy * v[1] + dz * v[2], -2.2 * r, 0.9 * r)
    d2 = (dx - t * v[0]) ** 2 + (dy - t * v[1]) ** 2 + (dz - t * v[2]) ** 2
    mod = 1.0 + rng.uniform(0.35, 0.55) * np.exp(-d2 / (2.0 * (0.38 * r) ** 2))
    # The head as a whole is denser than the neck.
    rr = (dx * dx + dy * dy + dz * dz) / (r * r)
    mod += rng.uniform(0.10, 0.25) * np.exp(-rr)
    # Ward's region: neck base, on the axis, slightly inferior.
    w = h - u * (1.9 * r) - np.array([0.0, 0.0, 0.15 * r])
    dw2 = (x - w[0]) ** 2 + (y - w[1]) ** 2 + (z - w[2]) ** 2
    mod -= rng.uniform(0.30, 0.45) * np.exp(-dw2 / (2.0 * (0.45 * r) ** 2))
    # Greater trochanter: lateral to the shaft axis, near the neck's level.
    lat = -((x - sp[0]) * horiz[0] + (y - sp[1]) * horiz[1])
    zt = z - (h[2] - 0.4 * r)
    gt = 1.0 / (1.0 + np.exp(np.clip(-(lat - 0.2 * r) / (0.15 * r), -60.0, 60.0))) * np.exp(-(zt / (1.4 * r)) ** 2)
    mod -= rng.uniform(0.25, 0.40) * gt
    return np.maximum(mod, 0.35).astype(np.float32)


@dataclass
class BoneRender:
    """What :func:`render_bones` returns, all on the output grid (Z, Y, X).

    Attributes
    ----------
    occupancy : ndarray of float32
        Bone volume fraction ``A`` after the slice profile (0..1).
    hu_weighted : ndarray of float32
        Bone HU times bone fraction ``B`` after the slice profile [HU].
    labels : ndarray of uint8
        0 background, 1 right femur, 2 left femur.
    tissues : ndarray of uint8
        Bone tissue classes of :data:`femurseg.conventions.TISSUES` where bone fills ≥ half a voxel, else 0.
    trabecular_vbmd : dict
        Mean trabecular density over the fully trabecular interior of each femur [mg/cm³ K2HPO4].
    region_trabecular_vbmd : dict
        Per side, per hip region (head, neck, trochanter, intertrochanter, total_hip): mean true density of the
        trabecular bone at least 3 mm below the periosteal surface [mg/cm³ K2HPO4] (the truth ``femurseg qct``'s
        trabecular vBMD is tested against).
    """

    occupancy: np.ndarray
    hu_weighted: np.ndarray
    labels: np.ndarray
    tissues: np.ndarray
    trabecular_vbmd: dict[str, float]
    region_trabecular_vbmd: dict[str, dict[str, float]] = field(default_factory=dict)


def render_bones(
    skeleton: Any,
    grid: Grid,
    *,
    scan: ScanParams,
    density: BoneDensity,
    rng: np.random.Generator,
    names: tuple[str, ...] = BONE_NAMES,
    timings: dict[str, float] | None = None,
) -> BoneRender:
    """Render the skeleton's bones into bone fraction, HU, femur labels and bone tissue classes.

    Parameters
    ----------
    skeleton : femurseg.phantom.anatomy.Skeleton
        Posed bones; ``skeleton.sample(grid, names=...)`` gives :class:`~femurseg.phantom.fields.BoneField`.
    grid : Grid
        Output grid (identity direction).
    scan : ScanParams
        Slice thickness and calibration.
    density : BoneDensity
        The subject's bone material.
    rng : numpy.random.Generator
        Texture randomness.
    names : tuple of str
        Bones to render.
    timings : dict, optional
        Gets the seconds spent in the anatomy's sampling (``"anatomy_sample"``) and in rendering (``"bones"``).

    Returns
    -------
    BoneRender
    """
    plan = fine_z_plan(grid, slice_thickness_mm=scan.slice_thickness_mm)
    fine = plan.grid
    shape = grid.shape_zyx
    occ = np.zeros(shape, np.float32)
    bhu = np.zeros(shape, np.float32)
    labels = np.zeros(shape, np.uint8)
    tissues = np.zeros(shape, np.uint8)
    best = np.zeros(shape, np.float32)  # the bone fraction of the bone that owns each voxel's tissue class
    cal = scan.calibration
    h = max(fine.spacing_zyx)  # partial-volume ramp width: one cell
    hu_cort = float(cal.hu_of_density(density.cortical_density))
    vbmd: dict[str, float] = {}
    truth: dict[str, dict[str, float]] = {}
    # Independent streams per bone, so the same bone gets the same texture whichever others are rendered.
    streams = dict(zip(BONE_NAMES, rng.spawn(len(BONE_NAMES))))
    # One periodic texture tile per case (band-passing a whole bone box costs seconds); each bone reads it at its
    # own random offset.  The period (~45–90 mm) is far beyond the texture's correlation length.
    tile = _band_pass((96, 128, 128), fine.spacing_zyx, density.texture_scales_mm, rng, wrap=True)
    t_sample = 0.0
    t_start = time.perf_counter()
    for name in names:
        t = time.perf_counter()
        fields = skeleton.sample(fine, names=(name,))
        t_sample += time.perf_counter() - t
        if name not in fields:
            continue
        bf = fields[name]
        box = bf.box
        a = box[0].start
        ys, xs = box[1], box[2]
        sdf = bf.sdf
        # Only voxels that hold some bone need the material computation (5–15 % of a bone's box).
        idx = np.flatnonzero(sdf.ravel() < 0.5 * h)
        if idx.size == 0:
            continue
        sd = sdf.ravel()[idx]
        cortex = np.maximum(bf.cortex_mm.ravel()[idx], 0.05)
        f_out_a = np.clip(0.5 - sd / h, 0.0, 1.0)
        f_endo_a = np.clip(0.5 - (sd + cortex) / h, 0.0, 1.0)
        deep = sd <= -_TRUTH_PEEL_MM if name.startswith("femur") else None
        del sd, cortex
        trab_a = np.clip(bf.trabecular.ravel()[idx], 0.0, 1.0)
        zi, yi, xi = np.unravel_index(idx, sdf.shape)
        srng = streams[name]
        tex = _tile_points(tile, zi, yi, xi, srng)
        is_femur = name.startswith("femur")
        core = None
        if is_femur:
            side = name.split("_", 1)[1]
            dz_f, dy_f, dx_f = fine.spacing_zyx
            px = np.float32(fine.origin_xyz[0] + dx_f * box[2].start) + np.float32(dx_f) * xi.astype(np.float32)
            py = np.float32(fine.origin_xyz[1] + dy_f * box[1].start) + np.float32(dy_f) * yi.astype(np.float32)
            pz = np.float32(fine.origin_xyz[2] + dz_f * box[0].start) + np.float32(dz_f) * zi.astype(np.float32)
            mod = _femur_modulation(px, py, pz, skeleton.landmarks, side, srng)
            core = (f_endo_a >= 1.0) & (trab_a >= 0.999)
            # Normalise the regional pattern so the femur's mean trabecular density is the subject's vBMD.
            mean_mod = float(mod[core].mean()) if core.any() else 1.0
            rho = (np.float32(density.trabecular_vbmd / mean_mod)) * mod
            del mod
        else:
            ratio = density.pelvis_ratio if name.startswith("pelvis") else density.sacrum_ratio
            rho = np.full(idx.size, density.trabecular_vbmd * ratio, np.float32)
        del zi, yi, xi
        rho *= 1.0 + np.float32(density.texture_amplitude) * tex
        del tex
        np.maximum(rho, 0.0, out=rho)
        if core is not None:
            vbmd[side] = float(rho[core].mean()) if core.any() else float("nan")
            truth[side] = _region_truth(skeleton, side, np.stack([px, py, pz], axis=1), rho, core & deep)
            del px, py, pz, deep
        hu_int = cal.hu_of_density(rho) * trab_a + np.float32(density.marrow_hu) * (1.0 - trab_a)
        del rho
        f_cort_a = f_out_a - f_endo_a
        b_a = f_cort_a * np.float32(hu_cort) + f_endo_a * hu_int
        del hu_int

        def dense(values: np.ndarray) -> np.ndarray:
            arr = np.zeros(sdf.shape, np.float32)
            arr.ravel()[idx] = values
            return arr

        f_out = dense(f_out_a)
        _accumulate(occ, f_out, a, ys, xs, plan, plan.offsets, plan.weights)
        b_fine = dense(b_a)
        del b_a
        _accumulate(bhu, b_fine, a, ys, xs, plan, plan.offsets, plan.weights)
        del b_fine
        f_cort = dense(f_cort_a)
        f_trab = dense(f_endo_a * trab_a)
        del f_out_a, f_endo_a, f_cort_a, trab_a, idx
        # Box means over each voxel's own z extent: label and tissue class.
        sub = (slice(0, shape[0]), ys, xs)
        nz_box = (shape[0], ys.stop - ys.start, xs.stop - xs.start)
        frac = np.zeros(nz_box, np.float32)
        _box_mean_into(frac, f_out, a, slice(None), slice(None), plan)
        c_mean = np.zeros(nz_box, np.float32)
        _box_mean_into(c_mean, f_cort, a, slice(None), slice(None), plan)
        t_mean = np.zeros(nz_box, np.float32)
        _box_mean_into(t_mean, f_trab, a, slice(None), slice(None), plan)
        del f_out, f_cort, f_trab
        m_mean = frac - c_mean - t_mean
        owns = (frac >= 0.5) & (frac > best[sub])
        if is_femur:
            seen = _visible_fraction(frac, grid.spacing_zyx, scan.psf_fwhm_mm) >= FEMUR_LABEL_FRACTION
            labels[sub][seen] = RIGHT_FEMUR if side == "right" else LEFT_FEMUR
            cls = (TISSUES["femur_cortical"], TISSUES["femur_trabecular"], TISSUES["marrow"])
        elif name.startswith("pelvis"):
            cls = (TISSUES["pelvis_cortical"], TISSUES["pelvis_trabecular"], TISSUES["pelvis_trabecular"])
        else:
            cls = (TISSUES["sacrum"],) * 3
        cw, tw, mw = c_mean[owns], t_mean[owns], m_mean[owns]
        which = np.where((cw >= tw) & (cw >= mw), 0, np.where(tw >= mw, 1, 2))
        tissues[sub][owns] = np.asarray(cls, np.uint8)[which]
        best[sub][owns] = frac[owns]
        if not is_femur:
            # A pelvis voxel that outweighs a femur voxel takes it from the femur label too.
            labels[sub][owns] = 0
    np.clip(occ, 0.0, 1.0, out=occ)
    if timings is not None:
        timings["anatomy_sample"] = t_sample
        timings["bones"] = time.perf_counter() - t_start - t_sample
    return BoneRender(occupancy=occ, hu_weighted=bhu, labels=labels, tissues=tissues, trabecular_vbmd=vbmd,
                      region_trabecular_vbmd=truth)


#: Depth below the periosteal surface from which bone counts as trabecular in the regional truth [mm]: the
#: peel of :class:`femurseg.qct.bmd.CompartmentOptions` at fine resolution (the measurement peels half a slice
#: more, against the cortex the slice profile spreads inwards; the true density barely changes with depth there).
_TRUTH_PEEL_MM = 3.0


def _region_truth(skeleton: Any, side: str, points_xyz: np.ndarray, rho: np.ndarray, trabecular: np.ndarray
                  ) -> dict[str, float]:
    """Mean true trabecular density [mg/cm³ K2HPO4] per hip region (:mod:`femurseg.qct.regions`, in the femur's
    true frame) over the sub-voxel points of trabecular bone at least :data:`_TRUTH_PEEL_MM` deep; {} when the
    anatomy has no true frame."""
    frame_of = getattr(skeleton, "truth_frame", None)
    if frame_of is None or not trabecular.any():
        return {}
    from femurseg.qct.regions import REGION_NAMES, TOTAL_HIP, region_of_points

    codes = region_of_points(points_xyz[trabecular].astype(np.float64), frame_of(side))
    values = rho[trabecular]
    out = {name: float(values[codes == c].mean()) for c, name in REGION_NAMES.items() if (codes == c).any()}
    in_total = np.isin(codes, TOTAL_HIP)
    if in_total.any():
        out["total_hip"] = float(values[in_total].mean())
    return out


def _visible_fraction(frac: np.ndarray, spacing_zyx: tuple[float, ...], psf_fwhm_mm: float) -> np.ndarray:
    """A bone's volume fraction per voxel as the scanner shows it: blurred in-plane by the point-spread function.

    ``frac`` (Z, Y, X) is the box average over each voxel (so it already holds one voxel of blur, ~0.29 voxel SD);
    the PSF adds the rest in quadrature, as :func:`apply_scanner` does to the image.
    """
    s_psf = psf_fwhm_mm / (2.0 * math.sqrt(2.0 * math.log(2.0)))
    dy, dx = float(spacing_zyx[1]), float(spacing_zyx[2])
    extra = max(s_psf**2 - (0.29 * dx) ** 2, 0.0) ** 0.5
    if extra <= 0.0:
        return frac
    return ndimage.gaussian_filter(frac, sigma=(0.0, extra / dy, extra / dx), mode="constant", truncate=3.0)


def add_streaks(hu: np.ndarray, grid: Grid, landmarks: HipLandmarks, *, depth_hu: float, rng: np.random.Generator) -> None:
    """Darken a band between the femoral heads in place: the beam-hardening streak of hip CT.

    Rays through both femoral heads (and acetabula) are hardened the most; filtered back-projection turns the
    missing attenuation into a dark streak along the line joining them, strongest at the heads' centre level.
    """
    if depth_hu <= 0:
        return
    hr = np.asarray(landmarks.head_center_xyz["right"], float)
    hl = np.asarray(landmarks.head_center_xyz["left"], float)
    r = 0.5 * (landmarks.head_radius_mm["right"] + landmarks.head_radius_mm["left"])
    width = rng.uniform(3.0, 8.0)
    dz, dy, dx = grid.spacing_zyx
    ox, oy, oz = grid.origin_xyz
    x = (ox + dx * np.arange(grid.shape_zyx[2]))[None, :]
    y = (oy + dy * np.arange(grid.shape_zyx[1]))[:, None]
    seg = hl[:2] - hr[:2]
    L = float(np.linalg.norm(seg))
    u = seg / max(L, 1e-6)
    t = (x - hr[0]) * u[0] + (y - hr[1]) * u[1]
    d = np.abs(-(x - hr[0]) * u[1] + (y - hr[1]) * u[0])
    inside = (t > 0) & (t < L)
    band = (np.exp(-0.5 * (d / width) ** 2) * inside).astype(np.float32)
    zc = 0.5 * (hr[2] + hl[2])
    for k in range(grid.shape_zyx[0]):
        zk = oz + dz * k
        wz = math.exp(-0.5 * ((zk - zc) / (0.6 * r)) ** 2)
        if wz > 0.02:
            hu[k] -= np.float32(depth_hu * wz) * band


def _transfer(shape_yx: tuple[int, int], spacing_yx: tuple[float, float], sigmas_mm: tuple[float, ...],
              *, full: bool = False) -> list[np.ndarray]:
    """Fourier transfer functions of in-plane Gaussians of the given widths [mm] on an (ny, nx) grid.

    On the half-spectrum of ``numpy.fft.rfft2`` (or the full spectrum with ``full=True``).
    """
    ny, nx = shape_yx
    fy = np.fft.fftfreq(ny, d=spacing_yx[0])[:, None]
    fx = (np.fft.fftfreq(nx, d=spacing_yx[1]) if full else np.fft.rfftfreq(nx, d=spacing_yx[1]))[None, :]
    f2 = fy * fy + fx * fx
    return [np.exp(-2.0 * math.pi**2 * f2 * s * s) for s in sigmas_mm]


def _z_kernel(sigma_vox: float) -> np.ndarray:
    """The discrete Gaussian that ``gaussian_filter1d(..., truncate=4)`` applies along z."""
    n = 2 * int(math.ceil(4 * sigma_vox)) + 1
    delta = np.zeros(n)
    delta[n // 2] = 1.0
    return ndimage.gaussian_filter1d(delta, sigma_vox, truncate=4.0)


def apply_scanner(hu: np.ndarray, grid: Grid, scan: ScanParams, *, rng: np.random.Generator,
                  chunk: int = 32) -> np.ndarray:
    """Blur, add noise, pad the reconstruction circle and quantise: the reconstructed CT [HU].

    The in-plane point-spread function and the noise's band-pass are applied in the Fourier domain, slice by
    slice (a circular convolution: the PSF is under a voxel wide, so only the outermost voxel of the matrix can
    mix with the opposite edge).  Neighbouring slices' noise is correlated when slices overlap (thickness above
    the increment), through a Gaussian along z of width matching the overlap.

    Parameters
    ----------
    hu : (Z, Y, X) ndarray of float32
        Noise-free image before the in-plane PSF [HU]; overwritten.
    grid : Grid
        Its grid.
    scan : ScanParams
        PSF, noise, reconstruction circle.
    rng : numpy.random.Generator
        Noise randomness.
    chunk : int
        Slices processed at a time (bounds the memory of the noise field).

    Returns
    -------
    (Z, Y, X) ndarray of int16
        CT values [HU], clipped to [−1024, 3071].
    """
    from scipy import fft as sfft

    dz, dy, dx = grid.spacing_zyx
    nz, ny, nx = hu.shape
    s_psf = scan.psf_fwhm_mm / (2.0 * math.sqrt(2.0 * math.log(2.0)))
    # The partial-volume ramp already averages over one voxel; the PSF adds the rest in quadrature.
    extra = max(s_psf**2 - (0.29 * dx) ** 2, 0.0) ** 0.5
    (h_psf,) = _transfer((ny, nx), (dy, dx), (extra,))
    h_psf = h_psf.astype(np.float32)
    b1, b2 = scan.noise_band_mm
    g1, g2 = _transfer((ny, nx), (dy, dx), (b1, b2))
    h_noise = (g1 - g2).astype(np.float32)
    f1, f2 = _transfer((ny, nx), (dy, dx), (b1, b2), full=True)
    var_xy = float(np.mean((f1 - f2) ** 2))  # variance of irfft2(rfft2(w)·H) for unit white noise w
    # Overlapping slices share noise: a z correlation only where the thickness exceeds the increment.
    sz = 0.42 * max(scan.slice_thickness_mm - dz, 0.0) / dz
    kz = _z_kernel(sz) if sz >= 0.2 else np.ones(1)
    pad = len(kz) // 2
    norm = math.sqrt(var_xy * float(np.sum(kz**2)))
    gain = np.float32(scan.noise_sigma_hu / norm) if scan.noise_sigma_hu > 0 and norm > 0 else np.float32(0)
    if gain:
        h_noise *= gain
    out = np.empty(hu.shape, np.int16)
    streams = rng.spawn(max(1, -(-nz // chunk)))
    prev_tail: np.ndarray | None = None
    for ci, k0 in enumerate(range(0, nz, chunk)):
        k1 = min(nz, k0 + chunk)
        block = hu[k0:k1]
        spec = sfft.rfft2(block, workers=2)
        spec *= h_psf
        if gain:
            # White noise drawn directly as its spectrum (what rfft2 of unit white noise is: complex normal with
            # E|F|² = ny·nx), which saves a forward transform per chunk.
            white = streams[ci].standard_normal((k1 - k0 + 2 * pad, ny, nx // 2 + 1, 2), dtype=np.float32)
            if pad:
                if prev_tail is not None:
                    white[: 2 * pad] = prev_tail  # share the overlap so the noise is continuous across chunks
                prev_tail = white[-2 * pad :].copy()
                white = ndimage.correlate1d(white, kz.astype(np.float32), axis=0)[pad : pad + (k1 - k0)]
            wspec = np.ascontiguousarray(white).view(np.complex64)[..., 0]
            del white
            wspec *= h_noise * np.float32(math.sqrt(ny * nx / 2.0))
            spec += wspec
            del wspec
        block[:] = sfft.irfft2(spec, s=(ny, nx), workers=2)
        del spec
        np.rint(block, out=block)
        np.clip(block, HU_MIN, HU_MAX, out=block)
        out[k0:k1] = block
    if scan.recon_circle:
        out[:, outside_circle(grid)] = HU_MIN
    return out


def outside_circle(grid: Grid) -> np.ndarray:
    """(Y, X) ndarray of bool: in-plane voxels outside the reconstruction circle (the matrix's inscribed circle)."""
    _, ny, nx = grid.shape_zyx
    _, dy, dx = grid.spacing_zyx
    yy = (np.arange(ny) - (ny - 1) / 2.0)[:, None] * dy
    xx = (np.arange(nx) - (nx - 1) / 2.0)[None, :] * dx
    radius = 0.5 * min(ny * dy, nx * dx)
    return (xx * xx + yy * yy) > radius * radius


def blank_outside_circle(grid: Grid, *maps: np.ndarray) -> None:
    """Zero each (Z, Y, X) label or tissue map outside the reconstruction circle (in place).

    Nothing is known outside the circle: the image is blank there, and so are the maps (a femur cut by the circle
    is labelled up to the cut, as one cut by the field of view).
    """
    outside = outside_circle(grid)
    for m in maps:
        m[:, outside] = 0
