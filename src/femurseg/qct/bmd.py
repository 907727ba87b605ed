"""Volumetric BMD of the proximal femur's regions, integral, trabecular and cortical.

Compartments.  Clinical hip CT (0.5–1 mm in-plane, 1–3 mm slices, a point-spread of about 1 mm) cannot resolve the
femoral cortex, which is 0.3–2 mm thick over most of the neck.  Volumetric QCT of the hip therefore separates the
compartments by depth, as in Lang's integral–trabecular–cortical scheme for volumetric QCT of the hip (Lang et
al., Bone 1997;21:101–108) and the peel of Mindways QCT Pro:

integral
    every voxel of the femur mask (depth is measured in the filled mask, so an enclosed cavity is no surface);
trabecular
    mask voxels deeper than the peel below the periosteal surface (``peel_mm``, 3 mm, plus half the largest voxel
    spacing, for the cortex the slice profile spreads inwards: see :class:`CompartmentOptions`), the Euclidean
    distance to the outside of
    the filled mask, with the grid's anisotropic spacing, less a quarter of the smallest spacing (the nearest
    voxel centre outside lies beyond the surface; with this offset the trabecular volumes of voxelised spheres
    and cylinders at 0.5–1 mm, isotropic or not, come out unbiased, each within about ±5 %);
cortical
    voxels of the outer shell (depth ≤ the peel) whose calibrated density is at least
    ``cortical_min_density``.  Shell voxels below it (marrow-like trabecular bone under a thin cortex) count in
    the integral compartment only.

Cortical vBMD measured this way is underestimated by partial volume (the cortex is blurred into the soft tissue
outside and the trabecular bone inside: about 0.5 g/cm³ in the femoral-neck cortex of elderly women, against
about 1.0–1.2 g/cm³ of mineral in true cortical bone); trabecular vBMD, taken well inside, is the robust one.

BMC [mg] = Σ density [mg/cm³] × voxel volume [cm³]; vBMD [mg/cm³] = BMC / volume.  Densities are in the
calibration's unit (``mg/cm³ K2HPO4`` or ``mg/cm³ HA``), which every result carries.  An empty compartment or
region has volume 0, BMC 0 and NaN densities.

The mask's edges at the array's border (a shaft cut by the scan's field of view) are not periosteal surfaces: the
distance is measured to voxels outside the mask within the array only, so the cut face is not peeled.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from femurseg.geometry import Grid
from femurseg.qct.regions import REGION_NAMES, TOTAL_HIP

__all__ = ["CompartmentOptions", "RegionDensity", "compartments", "depth_mm", "region_densities"]

#: Region names in the order results are given; ``total_hip`` is the union of :data:`TOTAL_HIP`.
RESULT_REGIONS: tuple[str, ...] = ("head", "neck", "trochanter", "intertrochanter", "total_hip")


@dataclass(frozen=True)
class CompartmentOptions:
    """How the trabecular and cortical compartments are told apart.

    Attributes
    ----------
    peel_mm : float
        Depth below the periosteal surface beyond which the bone counts as trabecular [mm], at fine resolution.
    slice_margin : float
        The peel grows by this fraction of the grid's largest spacing (normally the slice spacing): the slice
        profile and partial volume spread the cortex inwards by about half a slice, and where the cortex is
        thick (the inferior neck, the calcar) a fixed 3 mm peel then takes some of it in.  Measured on a phantom
        with 2.75 mm slices: neck trabecular vBMD +9.8 % with the fixed peel, +0.3 % with this margin (true
        mask).  0 gives the fixed peel.
    cortical_min_density : float
        Least calibrated density of a shell voxel counted as cortical [mg/cm³ of the calibration's material].
    """

    peel_mm: float = 3.0
    slice_margin: float = 0.5
    cortical_min_density: float = 350.0

    def peel_for(self, grid: Grid) -> float:
        """The peel used on ``grid`` [mm]: ``peel_mm + slice_margin × largest spacing``."""
        return float(self.peel_mm + self.slice_margin * max(grid.spacing_zyx))

    def __post_init__(self) -> None:
        if not (math.isfinite(self.peel_mm) and self.peel_mm >= 0.0):
            raise ValueError(f"CompartmentOptions.peel_mm must be ≥ 0, not {self.peel_mm!r}")
        if not (math.isfinite(self.slice_margin) and self.slice_margin >= 0.0):
            raise ValueError(f"CompartmentOptions.slice_margin must be ≥ 0, not {self.slice_margin!r}")
        if not math.isfinite(self.cortical_min_density):
            raise ValueError("CompartmentOptions.cortical_min_density must be finite")


def _fill(mask: np.ndarray) -> np.ndarray:
    """The mask with its enclosed cavities filled."""
    try:
        import fill_voids

        return fill_voids.fill(np.ascontiguousarray(mask, dtype=bool), in_place=False)
    except ImportError:  # pragma: no cover - fill-voids is a dependency
        return ndimage.binary_fill_holes(mask)


def depth_mm(mask_zyx: np.ndarray, grid: Grid) -> np.ndarray:
    """Depth of each voxel centre below the periosteal surface of the filled mask [mm]; 0 outside.

    Parameters
    ----------
    mask_zyx : (Z, Y, X) ndarray of bool
    grid : Grid
        The mask's geometry; its spacing (z, y, x) [mm] weights the distance transform.

    Returns
    -------
    (Z, Y, X) ndarray of float32
        Euclidean distance to the nearest voxel centre outside, less a quarter of the smallest spacing (the
        surface lies between voxel centres), at least 0 inside the filled mask (enclosed cavities included);
        0 outside it.  The array's border is not a surface (a mask that fills the whole array has infinite
        depth).
    """
    full = np.asarray(mask_zyx, dtype=bool)
    out = np.zeros(full.shape, np.float32)
    if not full.any():
        return out
    nz = [np.nonzero(full.any(axis=tuple(k for k in range(3) if k != ax)))[0] for ax in range(3)]
    box = tuple(slice(max(int(i[0]) - 1, 0), min(int(i[-1]) + 2, n)) for i, n in zip(nz, full.shape))
    mask = _fill(full[box])  # the bounding box, one voxel of background around where the array allows
    if mask.all():  # no surface in view
        out[box] = np.inf
        return out
    spacing = np.asarray(grid.spacing_zyx, dtype=float)
    # scipy's transform measures to the nearest zero voxel: the array's border is not a surface.
    dist = ndimage.distance_transform_edt(mask, sampling=spacing)
    out[box] = np.where(mask, np.maximum(dist - 0.25 * float(spacing.min()), 0.0), 0.0)
    return out


def compartments(mask_zyx: np.ndarray, grid: Grid, density_zyx: np.ndarray,
                 options: CompartmentOptions | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Trabecular and cortical compartments of a femur mask.

    Parameters
    ----------
    mask_zyx : (Z, Y, X) ndarray of bool
        The femur's mask (the integral compartment).
    grid : Grid
        Geometry of the arrays.
    density_zyx : (Z, Y, X) ndarray
        Calibrated density [mg/cm³ of the calibration's material].
    options : CompartmentOptions, optional

    Returns
    -------
    (trabecular, cortical) : two (Z, Y, X) ndarrays of bool
        Disjoint, both within the mask.
    """
    opt = options or CompartmentOptions()
    mask = np.asarray(mask_zyx, dtype=bool)
    _check_shapes(grid, mask=mask, density=density_zyx)
    depth = depth_mm(mask, grid)
    trabecular = mask & (depth > opt.peel_for(grid))
    cortical = mask & ~trabecular & (np.asarray(density_zyx) >= opt.cortical_min_density)
    return trabecular, cortical


def _check_shapes(grid: Grid, **arrays: np.ndarray) -> None:
    for name, a in arrays.items():
        if tuple(np.shape(a)) != tuple(grid.shape_zyx):
            raise ValueError(f"{name} has shape {np.shape(a)}, not the grid's {tuple(grid.shape_zyx)}")


def _nan_or_none(value: float, digits: int) -> float | None:
    return None if not math.isfinite(value) else round(float(value), digits)


@dataclass(frozen=True)
class RegionDensity:
    """Volumetric densities of one region.

    Attributes
    ----------
    region : str
        ``head``, ``neck``, ``trochanter``, ``intertrochanter`` or ``total_hip``.
    unit : str
        Unit of every density, e.g. ``mg/cm³ K2HPO4``.
    volume_cm3, bmc_mg, integral_vbmd : float
        Integral compartment: volume [cm³], mineral content [mg of the material], mean density [unit].
    trabecular_volume_cm3, trabecular_vbmd : float
        Trabecular compartment: volume [cm³], mean density [unit] (NaN when empty).
    cortical_volume_cm3, cortical_vbmd : float
        Cortical compartment: volume [cm³], mean density [unit] (NaN when empty; underestimated by partial
        volume).
    n_voxels : int
        Mask voxels in the region.
    trabecular_bmc_mg, cortical_bmc_mg : float
        Mineral content of the two compartments [mg].
    """

    region: str
    unit: str
    volume_cm3: float
    bmc_mg: float
    integral_vbmd: float
    trabecular_volume_cm3: float
    trabecular_vbmd: float
    cortical_volume_cm3: float
    cortical_vbmd: float
    n_voxels: int
    trabecular_bmc_mg: float = 0.0
    cortical_bmc_mg: float = 0.0

    def to_dict(self) -> dict:
        """JSON-able form, units in the keys (cm³, mg, mg/cm³ of ``unit``); NaN becomes None."""
        return {
            "region": self.region,
            "unit": self.unit,
            "n_voxels": int(self.n_voxels),
            "volume_cm3": _nan_or_none(self.volume_cm3, 4),
            "bmc_mg": _nan_or_none(self.bmc_mg, 2),
            "integral_vbmd_mg_cm3": _nan_or_none(self.integral_vbmd, 2),
            "trabecular_volume_cm3": _nan_or_none(self.trabecular_volume_cm3, 4),
            "trabecular_bmc_mg": _nan_or_none(self.trabecular_bmc_mg, 2),
            "trabecular_vbmd_mg_cm3": _nan_or_none(self.trabecular_vbmd, 2),
            "cortical_volume_cm3": _nan_or_none(self.cortical_volume_cm3, 4),
            "cortical_bmc_mg": _nan_or_none(self.cortical_bmc_mg, 2),
            "cortical_vbmd_mg_cm3": _nan_or_none(self.cortical_vbmd, 2),
        }


def _ratio(num: float, den: float) -> float:
    return float(num / den) if den > 0.0 else float("nan")


def _sums(codes: np.ndarray, density: np.ndarray, select: np.ndarray,
          n_codes: int) -> tuple[np.ndarray, np.ndarray]:
    """Per code: voxel count and density sum of the selected voxels."""
    c = codes[select]
    count = np.bincount(c, minlength=n_codes).astype(float)
    total = np.bincount(c, weights=density[select].astype(float), minlength=n_codes)
    return count, total


def region_densities(density_zyx: np.ndarray, mask_zyx: np.ndarray, regions_zyx: np.ndarray, grid: Grid, *,
                     unit: str, options: CompartmentOptions | None = None,
                     compartments_zyx: tuple[np.ndarray, np.ndarray] | None = None) -> dict[str, RegionDensity]:
    """Integral, trabecular and cortical vBMD and BMC of each CTXA-like region and of the total hip.

    Compartments are found on the whole mask (depth below the femur's own surface, not below a region's cut
    faces), then counted per region.

    Parameters
    ----------
    density_zyx : (Z, Y, X) ndarray
        Calibrated density [``unit``].
    mask_zyx : (Z, Y, X) ndarray of bool
        The femur's mask.
    regions_zyx : (Z, Y, X) ndarray of int
        Region codes (:func:`femurseg.qct.regions.region_labels`); only voxels of the mask count.
    grid : Grid
        Geometry of the arrays (voxel volume from its spacing).
    unit : str
        The density's unit, e.g. ``DensityCalibration.unit`` (``mg/cm³ K2HPO4``).
    options : CompartmentOptions, optional
    compartments_zyx : (trabecular, cortical), optional
        The mask's compartments when the caller already has them (:func:`compartments` with ``options``).

    Returns
    -------
    dict of str to RegionDensity
        Keys ``head``, ``neck``, ``trochanter``, ``intertrochanter``, ``total_hip``.
    """
    mask = np.asarray(mask_zyx, dtype=bool)
    _check_shapes(grid, density=density_zyx, mask=mask, regions=regions_zyx)
    density = np.asarray(density_zyx)
    trab, cort = compartments(mask, grid, density, options) if compartments_zyx is None else compartments_zyx
    n_codes = max(REGION_NAMES) + 1
    codes = np.where(mask, np.asarray(regions_zyx), 0).astype(np.intp)
    if codes.min() < 0 or codes.max() >= n_codes:
        raise ValueError(f"region codes must lie in 0..{n_codes - 1}")
    voxel_cm3 = float(np.prod(grid.spacing_zyx)) / 1000.0
    sums = {name: _sums(codes, density, sel, n_codes) for name, sel in
            (("integral", mask), ("trabecular", trab), ("cortical", cort))}
    # Rows: head..intertrochanter, then the total hip as the sum of its codes.
    rows = {REGION_NAMES[c]: [c] for c in sorted(REGION_NAMES)}
    rows["total_hip"] = list(TOTAL_HIP)
    out: dict[str, RegionDensity] = {}
    for name in RESULT_REGIONS:
        v = {k: (float(cnt[rows[name]].sum()) * voxel_cm3, float(tot[rows[name]].sum()) * voxel_cm3)
             for k, (cnt, tot) in sums.items()}
        out[name] = RegionDensity(
            region=name, unit=unit, volume_cm3=v["integral"][0], bmc_mg=v["integral"][1],
            integral_vbmd=_ratio(v["integral"][1], v["integral"][0]),
            trabecular_volume_cm3=v["trabecular"][0], trabecular_vbmd=_ratio(v["trabecular"][1], v["trabecular"][0]),
            cortical_volume_cm3=v["cortical"][0], cortical_vbmd=_ratio(v["cortical"][1], v["cortical"][0]),
            n_voxels=int(round(float(sums["integral"][0][rows[name]].sum()))),
            trabecular_bmc_mg=v["trabecular"][1], cortical_bmc_mg=v["cortical"][1])
    return out
