"""DXA-like areal BMD of the proximal femur from QCT (CTXA-like), and T-scores.

Pose.  A hip DXA scan images the femur from the front with the leg internally rotated so that the neck lies
parallel to the table (anteversion removed) and the shaft runs along the scan.  Here the femur is projected along
the normal of the plane that holds its neck and shaft axes (its anterior–posterior direction with anteversion
removed); the image's vertical axis is −shaft (proximal up) and the image is as seen from the front (viewer
anterior, looking posteriorly: the patient's right on the image's left).  The neck therefore lies in the image
plane, the neck slab of :mod:`femurseg.qct.regions` projects to a band across it and the distal limit to a
horizontal line.

Image.  Each pixel holds the mineral in its column, Σ density × path length through the mask:
mg/cm³ × cm / 1000 = g/cm².  Mask voxels are split into sub-voxel points (spaced at most a sub-pixel/√2 in the
image plane), each carrying its share of the voxel's mineral, and accumulated into pixels, so the image does not
depend on the voxel size.  ``coverage`` is the fraction of each pixel inside the femur's shadow, from a raster of
``oversample``² sub-pixels per pixel: near the outline a sub-pixel counts when the ray through its centre meets
the mask's smoothed surface (the shadow of the voxel boxes would stand out by up to half a voxel diagonal and make
the area depend on voxel size and grid orientation).  A pixel's region is the region that contributes most of its
column's mineral (among the regions with voxels in the column; code 0, no region, when that is mineral outside
the regions).

Areal BMD.  For each DXA region: BMC [g] = the mineral of the region's pixels, area [cm²] = the covered area of
those pixels (coverage × pixel area), aBMD = BMC / area [g/cm²].  Total hip = neck ∪ trochanter ∪ intertrochanter.

This is an estimate of DXA's aBMD, not a DXA measurement: the mineral is the calibration's equivalent (K2HPO4 or
HA; CTXA Hip reports g/cm² of K2HPO4), the regions are geometric stand-ins for the manufacturers' boxes and there is
no cross-calibration to a DXA device.  CT-derived aBMD correlates closely with DXA's but is on its own scale, so
T-scores from it against the DXA reference are estimates too.

T-scores use NHANES III (Looker et al. 1998, Osteoporos Int 8:468–489), non-Hispanic white women aged 20–29, the
reference ISCD recommends for women and men (femoral neck and total hip, Hologic scale, as in Kanis et al. 2008,
Bone 42:467–475): T = (aBMD − mean) / SD.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from femurseg.geometry import Grid
from femurseg.qct.frame import FemurFrame
from femurseg.qct.regions import INTERTROCHANTER, NECK, TOTAL_HIP, TROCHANTER

__all__ = ["NHANES_III", "DXAProjection", "ArealBMD", "project_dxa", "areal_bmd", "t_score", "dxa_axes"]

#: Young-adult reference aBMD [g/cm²], (mean, SD), by site: NHANES III non-Hispanic white women aged 20–29
#: (Looker et al. 1998, Osteoporos Int 8:468–489; Hologic scale).  ISCD uses it for T-scores of women and men.
#: The values are those commonly tabulated from the paper (femoral neck as in Kanis et al. 2008); the paper's
#: abstract confirms the survey, regions and age groups, its table was not at hand to check the digits.
NHANES_III: dict[str, tuple[float, float]] = {"neck": (0.858, 0.120), "total_hip": (0.942, 0.122)}

_SITE_ALIASES = {"femoral_neck": "neck", "femur_neck": "neck", "fn": "neck", "total": "total_hip",
                 "total_femur": "total_hip", "totalhip": "total_hip", "th": "total_hip"}

#: The DXA regions reported, with their codes.
AREAL_REGIONS: dict[str, tuple[int, ...]] = {"neck": (NECK,), "trochanter": (TROCHANTER,),
                                             "intertrochanter": (INTERTROCHANTER,), "total_hip": TOTAL_HIP}


def t_score(abmd_g_cm2: float, site: str) -> float:
    """T-score of an aBMD against NHANES III young white women: (aBMD − mean) / SD.

    Parameters
    ----------
    abmd_g_cm2 : float
        Areal BMD [g/cm²].
    site : str
        ``neck`` (also ``femoral_neck``) or ``total_hip`` (also ``total``).

    Returns
    -------
    float
        NaN for a NaN aBMD.

    Raises
    ------
    ValueError
        A site without a reference.
    """
    key = str(site).strip().lower().replace(" ", "_").replace("-", "_")
    key = _SITE_ALIASES.get(key, key)
    if key not in NHANES_III:
        raise ValueError(f"no NHANES III reference for site {site!r}; sites: {', '.join(NHANES_III)}")
    mean, sd = NHANES_III[key]
    return (float(abmd_g_cm2) - mean) / sd


@dataclass
class DXAProjection:
    """A DXA-like projection of one femur.

    Attributes
    ----------
    image_g_cm2 : (H, W) ndarray of float
        Areal mineral density [g/cm² of the calibration's material]; rows go down (distally), columns to the
        image's right.
    regions : (H, W) ndarray of uint8
        Region code of each pixel (:mod:`femurseg.qct.regions`), 0 = none.
    pixel_mm : float
        Pixel size [mm].
    horizontal_xyz, vertical_xyz, view_xyz : (3,) ndarray
        World unit vectors (LPS) of the image's column direction, its upward direction (−shaft) and the viewing
        direction (anterior → posterior); ``horizontal = view × vertical``.
    origin_xyz : (3,) ndarray
        World point [mm] of pixel (0, 0)'s centre (top left), in the plane through the head centre.
    unit : str
        Unit of the image, e.g. ``g/cm² K2HPO4``.
    coverage : (H, W) ndarray of float or None
        Fraction of each pixel inside the femur's shadow, [0, 1]; None: every pixel with mineral counts whole.
    """

    image_g_cm2: np.ndarray
    regions: np.ndarray
    pixel_mm: float
    horizontal_xyz: np.ndarray
    vertical_xyz: np.ndarray
    view_xyz: np.ndarray
    origin_xyz: np.ndarray
    unit: str
    coverage: np.ndarray | None = field(default=None)

    def pixel_to_world(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """World points (..., 3) [mm] of pixel positions (rows down, columns right), in the image plane."""
        r = np.asarray(rows, dtype=float)[..., None]
        c = np.asarray(cols, dtype=float)[..., None]
        return self.origin_xyz + self.pixel_mm * (c * self.horizontal_xyz - r * self.vertical_xyz)

    def world_to_pixel(self, points_xyz: np.ndarray) -> np.ndarray:
        """Continuous (row, column) positions (..., 2) of world points (..., 3) [mm] projected along the view."""
        rel = np.asarray(points_xyz, dtype=float) - self.origin_xyz
        return np.stack([-(rel @ self.vertical_xyz), rel @ self.horizontal_xyz], axis=-1) / self.pixel_mm


@dataclass(frozen=True)
class ArealBMD:
    """Areal BMD of one DXA-like region.

    Attributes
    ----------
    region : str
        ``neck``, ``trochanter``, ``intertrochanter`` or ``total_hip``.
    bmc_g : float
        Mineral content of the region's pixels [g].
    area_cm2 : float
        Projected area [cm²].
    abmd_g_cm2 : float
        BMC / area [g/cm²]; NaN for an empty region.
    t_score : float or None
        Against NHANES III (neck and total hip only); None elsewhere or when the aBMD is NaN.
    """

    region: str
    bmc_g: float
    area_cm2: float
    abmd_g_cm2: float
    t_score: float | None

    def to_dict(self) -> dict:
        """JSON-able form, units in the keys; NaN becomes None."""
        def r(v: float | None, d: int) -> float | None:
            return None if v is None or not math.isfinite(v) else round(float(v), d)

        return {"region": self.region, "bmc_g": r(self.bmc_g, 4), "area_cm2": r(self.area_cm2, 3),
                "abmd_g_cm2": r(self.abmd_g_cm2, 4), "t_score": r(self.t_score, 2)}


def dxa_axes(frame: FemurFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The DXA pose's (horizontal, vertical, view) world unit vectors of a femur.

    ``view`` is the normal of the neck–shaft plane pointing posteriorly (``u × s`` for a right femur,
    ``s × u`` for a left one), ``vertical = −s``, ``horizontal = view × vertical``.
    """
    s = frame.shaft_axis_xyz
    n = np.cross(frame.neck_axis_xyz, s)
    norm = float(np.linalg.norm(n))
    if norm < 1e-6:
        raise ValueError("the neck and shaft axes are parallel: no DXA pose")
    view = n / norm if frame.side == "right" else -n / norm
    vertical = -s
    return np.cross(view, vertical), vertical, view


def _areal_unit(density_unit: str | None) -> str:
    """``mg/cm³ K2HPO4`` → ``g/cm² K2HPO4``; no density unit → ``g/cm²``."""
    if not density_unit:
        return "g/cm²"
    material = density_unit.split(" ", 1)[1] if " " in density_unit else ""
    return f"g/cm² {material}".strip()


def _sub_offsets(grid: Grid, step_mm: float) -> np.ndarray:
    """World offsets (K, 3) [mm] of sub-voxel points spaced at most ``step_mm`` along each voxel edge."""
    spacing_xyz = np.asarray(grid.spacing_zyx, dtype=float)[::-1]
    edges = grid.direction_matrix * spacing_xyz  # column j: world vector of index axis j (x, y, z)
    ks = [max(1, int(math.ceil(h / step_mm - 1e-9))) for h in spacing_xyz]
    fr = np.meshgrid(*[(np.arange(k) + 0.5) / k - 0.5 for k in ks], indexing="ij")
    frac = np.stack([f.ravel() for f in fr], axis=-1)  # (K, 3) in index units (x, y, z)
    return frac @ edges.T


def _extent(a: np.ndarray, b: np.ndarray, pad: float, pixel_mm: float) -> tuple[float, float, int, int]:
    """Image frame around projected points (a right, b up) [mm]: top-left corner (a0, b0), height, width."""
    a_lo, a_hi = (float(a.min()), float(a.max())) if a.size else (0.0, 0.0)
    b_lo, b_hi = (float(b.min()), float(b.max())) if b.size else (0.0, 0.0)
    a0, b0 = a_lo - pad, b_hi + pad
    return a0, b0, int(math.ceil((b0 - b_lo + pad) / pixel_mm)), int(math.ceil((a_hi + pad - a0) / pixel_mm))


def project_dxa(density_zyx: np.ndarray, mask_zyx: np.ndarray, regions_zyx: np.ndarray, grid: Grid,
                frame: FemurFrame, *, pixel_mm: float = 1.0, oversample: int = 2,
                density_unit: str | None = None) -> DXAProjection:
    """Project a femur's calibrated density to a DXA-like areal-density image in the DXA pose.

    Parameters
    ----------
    density_zyx : (Z, Y, X) ndarray
        Calibrated density [mg/cm³ of the calibration's material].
    mask_zyx : (Z, Y, X) ndarray of bool
        The femur's mask; only its voxels are projected.
    regions_zyx : (Z, Y, X) ndarray of int
        Region codes (:func:`femurseg.qct.regions.region_labels`).
    grid : Grid
        Geometry of the arrays.
    frame : FemurFrame
        The femur's frame (neck and shaft axes set the pose).
    pixel_mm : float
        Pixel size of the image [mm].
    oversample : int
        Sub-pixels per pixel side of the coverage raster.
    density_unit : str, optional
        The density's unit (e.g. ``mg/cm³ K2HPO4``), to name the image's (``g/cm² K2HPO4``).

    Returns
    -------
    DXAProjection
    """
    for name, a in (("density", density_zyx), ("mask", mask_zyx), ("regions", regions_zyx)):
        if tuple(np.shape(a)) != tuple(grid.shape_zyx):
            raise ValueError(f"{name} has shape {np.shape(a)}, not the grid's {tuple(grid.shape_zyx)}")
    if not (pixel_mm > 0 and int(oversample) >= 1):
        raise ValueError("pixel_mm must be > 0 and oversample ≥ 1")
    hor, ver, view = dxa_axes(frame)
    idx = np.nonzero(np.asarray(mask_zyx, dtype=bool))
    centre = np.asarray(frame.head_center_xyz, dtype=float)
    world = grid.index_to_world(np.stack(idx, axis=-1).astype(float)) - centre
    a, b = world @ hor, world @ ver
    mass_mg = np.asarray(density_zyx)[idx].astype(float) * float(np.prod(grid.spacing_zyx)) / 1000.0
    codes = np.asarray(regions_zyx)[idx].astype(np.intp)
    if codes.size and codes.min() < 0:
        raise ValueError("region codes must be ≥ 0")
    fine = pixel_mm / int(oversample)
    offsets = _sub_offsets(grid, fine / math.sqrt(2.0))
    pad = float(np.abs(offsets @ hor).max() + np.abs(offsets @ ver).max()) + 2.0 * pixel_mm
    a0, b0, height, width = _extent(a, b, pad, pixel_mm)
    mineral, hits, covered = _accumulate(a - a0, b0 - b, mass_mg, codes, offsets @ hor, -(offsets @ ver),
                                         (height, width), pixel_mm, int(oversample))
    if a.size:
        depth = world @ view
        covered = _refine_silhouette(covered, np.asarray(mask_zyx, dtype=bool), grid, centre + a0 * hor + b0 * ver,
                                     (hor, ver, view), fine, (float(depth.min()), float(depth.max())))
    area_cm2 = (pixel_mm / 10.0) ** 2
    total = mineral.sum(axis=0)
    regions = np.argmax(np.where(hits > 0, mineral, -np.inf), axis=0)
    regions = np.where(hits.any(axis=0), regions, 0).astype(np.uint8)
    coverage = covered.reshape(height, oversample, width, oversample).mean(axis=(1, 3))
    origin = centre + (a0 + 0.5 * pixel_mm) * hor + (b0 - 0.5 * pixel_mm) * ver
    return DXAProjection(image_g_cm2=total / 1000.0 / area_cm2, regions=regions, pixel_mm=float(pixel_mm),
                         horizontal_xyz=hor, vertical_xyz=ver, view_xyz=view, origin_xyz=origin,
                         unit=_areal_unit(density_unit), coverage=coverage)


def _signed_field(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A smooth field of a mask on its bounding box (3 voxels of margin where the array allows), negative inside.

    φ = 0.5 − (mask smoothed by a Gaussian of 0.7 voxel).  Its zero set is the mask's surface: midway between
    voxel centres inside and outside along the grid's axes, and close to the true surface where the lattice is
    oblique to it, unlike the union of voxel boxes, whose outline stands out by up to half a voxel diagonal.  The
    smoothing removes most of the lattice's ripple, which a silhouette (the furthest point along each ray) would
    pick up (+0.3–0.4 voxel unsmoothed), at the cost of a bias of about σ²/(2r) on a surface of radius r.
    Cylinders of radius 10 mm at 0.5–1 mm voxels, in any orientation, project to within 1 % of their analytic
    area.  Returns φ (float32) and the box's start index (z, y, x).
    """
    nz = [np.nonzero(mask.any(axis=tuple(k for k in range(3) if k != ax)))[0] for ax in range(3)]
    start = np.array([max(int(i[0]) - 3, 0) for i in nz])
    stop = [min(int(i[-1]) + 4, n) for i, n in zip(nz, mask.shape)]
    crop = mask[tuple(slice(int(a), b) for a, b in zip(start, stop))]
    return 0.5 - ndimage.gaussian_filter(crop.astype(np.float32), 0.7, mode="nearest"), start


def _refine_silhouette(covered: np.ndarray, mask: np.ndarray, grid: Grid, top_left: np.ndarray,
                       axes: tuple[np.ndarray, np.ndarray, np.ndarray], fine: float,
                       depth: tuple[float, float]) -> np.ndarray:
    """Decide the sub-pixels near the outline by casting their centres' rays through the mask's smoothed field.

    ``covered`` (fine raster, from the voxels' sub-points) marks the union of the voxel boxes' shadows.  Pixels
    further inside it than a voxel diagonal stay covered; the others, and those just outside, are covered when the
    ray through the pixel's centre meets φ ≤ 0 (sampled every third of the smallest spacing, trilinear).  So the
    projected area is that of the mask's smooth surface, pixel by pixel, without the boxes' outward bias.
    """
    spacing = np.asarray(grid.spacing_zyx, dtype=float)
    reach = math.sqrt(3.0) * float(spacing.max()) + fine
    inner = ndimage.distance_transform_edt(covered) * fine > reach
    near = ndimage.distance_transform_edt(~covered) * fine <= float(spacing.max()) + fine
    rows, cols = np.nonzero(near & ~inner)
    hor, ver, view = axes
    phi, start = _signed_field(mask)
    step = float(spacing.min()) / 3.0
    margin = 0.5 * math.sqrt(3.0) * float(spacing.max()) + step
    lam = np.arange(depth[0] - margin, depth[1] + margin + step, step)
    starts = top_left + ((cols + 0.5) * fine)[:, None] * hor - ((rows + 0.5) * fine)[:, None] * ver
    out = inner.copy()
    chunk = max(1, 2_000_000 // max(len(lam), 1))
    for i in range(0, len(rows), chunk):
        pts = starts[i:i + chunk, None, :] + lam[None, :, None] * view
        ijk = grid.world_to_index(pts).reshape(-1, 3) - start
        vals = ndimage.map_coordinates(phi, ijk.T, order=1, mode="nearest").reshape(len(pts), len(lam))
        out[rows[i:i + chunk], cols[i:i + chunk]] = vals.min(axis=1) <= 0.0
    return out


def _accumulate(col_mm: np.ndarray, row_mm: np.ndarray, mass_mg: np.ndarray, codes: np.ndarray,
                d_col: np.ndarray, d_row: np.ndarray, shape: tuple[int, int], pixel_mm: float,
                oversample: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Splat voxels' sub-points into per-region mineral [mg] and sub-point counts (C, H, W), and a fine coverage
    raster (H·oversample, W·oversample) of bool.

    ``col_mm``/``row_mm`` are the voxel centres' image positions from the top-left corner [mm], ``d_col``/``d_row``
    the sub-points' offsets (K,) [mm]; every sub-point carries mass / K and goes to the pixel it falls in.
    """
    height, width = shape
    n_codes = max(int(codes.max()) if codes.size else 0, INTERTROCHANTER) + 1
    npix = height * width
    mineral = np.zeros(n_codes * npix)
    hits = np.zeros(n_codes * npix, dtype=np.int64)
    covered = np.zeros((height * oversample, width * oversample), dtype=bool)
    fine = pixel_mm / oversample
    share = mass_mg / len(d_col)
    base = codes * npix
    for dc, dr in zip(d_col, d_row):
        fc = np.floor((col_mm + dc) / fine).astype(np.intp)
        fr = np.floor((row_mm + dr) / fine).astype(np.intp)
        covered[fr, fc] = True
        pix = (fr // oversample) * width + fc // oversample
        mineral += np.bincount(base + pix, weights=share, minlength=n_codes * npix)
        hits += np.bincount(base + pix, minlength=n_codes * npix)
    return mineral.reshape(n_codes, height, width), hits.reshape(n_codes, height, width), covered


def areal_bmd(projection: DXAProjection) -> dict[str, ArealBMD]:
    """BMC, area, aBMD and T-score of each DXA region of a projection.

    Parameters
    ----------
    projection : DXAProjection
        From :func:`project_dxa`.

    Returns
    -------
    dict of str to ArealBMD
        Keys ``neck``, ``trochanter``, ``intertrochanter``, ``total_hip``; T-scores for ``neck`` and
        ``total_hip`` (NHANES III, :func:`t_score`).
    """
    px_cm2 = (projection.pixel_mm / 10.0) ** 2
    image = np.asarray(projection.image_g_cm2, dtype=float)
    cover = (image > 0).astype(float) if projection.coverage is None else np.asarray(projection.coverage, float)
    out: dict[str, ArealBMD] = {}
    for name, codes in AREAL_REGIONS.items():
        sel = np.isin(projection.regions, codes)
        bmc = float(image[sel].sum()) * px_cm2
        area = float(cover[sel].sum()) * px_cm2
        abmd = bmc / area if area > 0.0 else float("nan")
        t = t_score(abmd, name) if name in NHANES_III and math.isfinite(abmd) else None
        out[name] = ArealBMD(region=name, bmc_g=bmc, area_cm2=area, abmd_g_cm2=abmd, t_score=t)
    return out
