"""Quality control of one segmented femur: is it a proximal femur, and of the side it is labelled?

A network marks bone-like shapes wherever it is run; the locator can run it on a humerus, a calf, the iliac wing
or the other femur.  What a proximal femur has and those do not, measured per side on the mask in world (LPS)
coordinates:

- a **femoral head**: the deepest point of the mask near its top (largest inscribed ball) is the head centre
  estimate; a sphere fitted (least squares) to the mask's surface within 1.3 head radii of it and above a quarter
  radius under its centre must have a plausible radius and a small RMS residual (:class:`QCLimits`);
- a **neck offset**: the femur 40–100 mm below the head centre (trochanters and shaft) lies lateral of the head
  by tens of millimetres; a straight bone (a shaft cut by the field of view, a humerus seen end-on, a flipped scan)
  has almost none;
- **laterality from shape**: the head is medial of the shaft, so a right femur's head lies at larger world x than
  its shaft (LPS: +x is the patient's left); a mask whose shape says "left" under the right label is the other
  femur seen through the wrong side's region of interest;
- a **shaft**: 70–95 mm under the head centre a femur is a tube about 25–35 mm across (the subtrochanteric
  shaft); a wide plate there (the iliac wing of a scan upside down, whose acetabulum looks like a head from below)
  is not a femur.  Measured as four standard deviations of the mask's points there along their widest horizontal
  direction (a disc's diameter; a plate's length · 1.15);
- a **lateral head**: femoral heads lie 70–120 mm either side of the body's midline (adults); the sacrum and
  the lumbar spine lie on it and can look like a head at a scan's lower edge.  The midline is the centre of the
  body's outline at the head's height, measured only when the outline is whole in the scan (a one-hip or
  small-field reconstruction cuts it: no test);
- **metal** in or within two voxels of the mask (HU ≥ ``QCLimits.metal_hu``: a hip stem, a prosthetic head,
  screws): reported as ``implant``;
- a **volume** plausible for the extent (head top to ``femurseg.inference.segmenter.DEFAULT_EXTENT_MM``
  below it: 60–450 mL in adults), the network's **confidence** (mean probability over the mask), and whether the
  mask touches the scan's border (a femur cut by the field of view).

Verdicts: ``reject`` (not written, see :func:`verdict`), ``check`` (written, with its reasons) or ``ok``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from femurseg.geometry import fit_sphere

@dataclass(frozen=True)
class QCLimits:
    """The thresholds of the verdict (defaults: adult human hips).

    Attributes
    ----------
    head_radius_mm : (2,) tuple of float
        Plausible femoral head radius [mm] (adult heads: diameter 38–58 mm; margins for mask error).  On
        ``pelvicref_005`` true heads fit 23.9–24.4 mm; false detections (iliac wing, a hip seen through the other
        side's ROI, humeri, tibiae) 10.9–14.3 mm.
    head_residual_mm : float
        Largest RMS residual of the head's sphere fit [mm] for a head to count as found.
    min_neck_offset_mm : float
        Smallest horizontal offset [mm] of the head centre from the bone 40–100 mm below it (see
        :attr:`SideQC.neck_offset_mm`).
    clear_neck_offset_mm : float
        An offset [mm] from which the neck alone says femur; between ``min_neck_offset_mm`` and it, the head must
        also lie ``min_neck_offset_mm`` from the centroid of the bone below (:func:`neck_reason`).
    max_shaft_width_mm : float
        Largest width [mm] of the bone 70–95 mm below the head centre (see :class:`SideQC`).
    volume_ml : (2,) tuple of float
        Plausible volume [mL] of a whole proximal femur in the default extent.
    min_volume_ml : float
        Below this volume [mL] a mask is a speck, not a femur.
    confidence : (2,) tuple of float
        Mean probability over the mask below which a side is rejected / checked.
    metal_hu : float
        CT value [HU] from which a voxel is metal (cortical bone stays under ~2000 HU).
    min_metal_ml : float
        Metal volume [mL] inside the mask from which the side is reported as ``implant``.
    min_midline_offset_mm : float
        Smallest distance [mm] of the head centre from the body's midline (left-right).  Measured at the true head
        centres: 75–102 mm (59 femurs of physics phantoms and label-map renders), ``pelvicref_005`` 84–89 mm; the
        sacrum marked at the lower edge of an abdominal crop 3–5 mm.
    min_head_separation_mm : float
        Smallest distance [mm] between the two sides' head centres.  Adult femoral heads lie 150–200 mm apart
        (physics phantoms 152–198 mm, 64 pelves; ``pelvicref_005`` 173 mm); two "heads" closer than this are one
        hip marked twice (a one-hip scan whose other-side ROI took the same hip's acetabulum, 39 mm away).
    max_mirror_volume_ratio : float
        Largest ratio of the two femurs' volumes (larger / smaller) before both ask for a ``check``, when neither is
        cut by the field of view nor holds an implant.  A person's two femurs are near mirror images: phantom pairs
        1.00–1.16 (94 pairs); a network running into the thigh muscles of one side of an osteoporotic label-map
        render at 3 mm slices gave 1.45 (321 vs 222 mL; the truth 227 / 222 mL).
    cut_zone_mm : float
        A mask touching the scan's border within this distance of its top [mm] is cut by the field of view (a
        shaft leaving the scan distally is the normal hip scan).  Contact along the mask's lowest slice only does
        not count: a bone leaving the scan at the bottom shows its top, so a femur there shows its head.
    """

    head_radius_mm: tuple[float, float] = (17.0, 34.0)
    head_residual_mm: float = 2.5
    min_neck_offset_mm: float = 15.0
    clear_neck_offset_mm: float = 20.0
    max_shaft_width_mm: float = 60.0
    min_midline_offset_mm: float = 40.0
    min_head_separation_mm: float = 100.0
    max_mirror_volume_ratio: float = 1.3
    volume_ml: tuple[float, float] = (60.0, 450.0)
    min_volume_ml: float = 5.0
    confidence: tuple[float, float] = (0.6, 0.85)
    cut_zone_mm: float = 60.0
    metal_hu: float = 2500.0
    min_metal_ml: float = 0.2


@dataclass
class SideQC:
    """Quality-control values and verdict of one side (JSON-able via :meth:`to_dict`).

    Attributes
    ----------
    verdict : {"ok", "check", "reject"}
    reasons : list of str
        Why not ``ok`` (empty when ok).
    head_found : bool
    head_center_xyz_mm : list of float or None
        Fitted sphere centre [mm, LPS].
    head_radius_mm, head_residual_mm : float or None
        Fitted radius and RMS distance of the surface points to the sphere [mm].
    neck_offset_mm : float or None
        Horizontal distance from the head centre to the bone 40–100 mm below it, extrapolated along that bone to the
        head's height (:func:`_neck_offset`) [mm]; None when the mask does not reach that far.
    neck_centroid_offset_mm : float or None
        Horizontal distance from the head centre to the centroid of that bone [mm] (a tilt shifts it).
    shaft_width_mm : float or None
        Width of the mask 70–95 mm below the head centre [mm]: four standard deviations of its points along their
        widest horizontal direction (a disc's diameter); None when the mask does not reach that far.
    shape_side : {"right", "left"} or None
        The side the shape says (head medial of the shaft); None when undecided.
    midline_offset_mm : float or None
        Left-right distance of the head centre from the body's midline at its height [mm]; None when the body's
        outline is cut by the scan (no midline) or no head centre was fitted.
    other_head_mm : float or None
        Distance from the head centre to the other side's head centre [mm] (:func:`pair_heads`); None when one side
        has no fitted head or was rejected on its own.
    mirror_volume_ratio : float or None
        This side's volume over the other side's (:func:`pair_heads`); None when only one side passed its own QC or
        either is cut by the field of view or holds an implant.
    twin_of : {"right", "left"} or None
        Set when this side's head lies too close to the other side's head and the network is less sure of this side:
        the other side's hip, marked twice (rejected).
    volume_ml : float
    confidence : float
        Mean foreground probability over the mask.
    touches_border : bool
        The mask reaches the scan's outermost voxels within ``QCLimits.cut_zone_mm`` of its top: cut by the field of
        view.
    metal_ml : float
        Volume of metal (HU ≥ ``QCLimits.metal_hu``) in or within two voxels of the mask [mL].
    """

    verdict: str = "ok"
    reasons: list[str] = field(default_factory=list)
    head_found: bool = False
    head_center_xyz_mm: list[float] | None = None
    head_radius_mm: float | None = None
    head_residual_mm: float | None = None
    neck_offset_mm: float | None = None
    neck_centroid_offset_mm: float | None = None
    shaft_width_mm: float | None = None
    shape_side: str | None = None
    midline_offset_mm: float | None = None
    other_head_mm: float | None = None
    mirror_volume_ratio: float | None = None
    twin_of: str | None = None
    volume_ml: float = 0.0
    confidence: float = 0.0
    touches_border: bool = False
    metal_ml: float = 0.0

    def to_dict(self) -> dict:
        """JSON-able, values rounded to 0.01."""
        d = asdict(self)
        for k, v in d.items():
            if isinstance(v, float):
                d[k] = round(v, 3)
            elif isinstance(v, list) and v and isinstance(v[0], float):
                d[k] = [round(x, 2) for x in v]
        return d


def _solid(mask: np.ndarray) -> np.ndarray:
    """``mask`` closed (two 6-connected steps) and filled slice by slice: a head the network left hollow
    (osteoporotic interior) and open to the outside becomes a ball again."""
    from scipy import ndimage

    out = ndimage.binary_closing(mask, structure=ndimage.generate_binary_structure(3, 1), iterations=2)
    return np.stack([ndimage.binary_fill_holes(sl) for sl in out])


def _head(fg: np.ndarray, spacing_zyx: np.ndarray, to_world, world: np.ndarray, qc: SideQC,  # noqa: ANN001
          limits: QCLimits) -> None:
    """Head centre estimate (deepest point of the solid mask near its top), then the sphere fit to the solid
    mask's surface around it; fills ``qc``."""
    from scipy import ndimage

    near = world[:, 2] >= float(world[:, 2].max()) - 45.0
    idx = np.argwhere(fg)[near]
    pad = 3
    lo = idx.min(axis=0) - pad
    crop = np.pad(fg[tuple(slice(a + pad, b + 1) for a, b in zip(lo, idx.max(axis=0)))], pad)
    solid = _solid(crop)
    depth = ndimage.distance_transform_edt(solid, sampling=spacing_zyx)
    inside = np.argwhere(solid)
    w_inside = to_world(inside + lo)
    keep = w_inside[:, 2] >= float(world[:, 2].max()) - 45.0
    d = depth[tuple(inside[keep].T)]
    k = int(np.argmax(d))
    c0, r0 = w_inside[keep][k], float(d[k])
    surface = to_world(np.argwhere(solid & ~ndimage.binary_erosion(solid)) + lo)
    s = surface[np.linalg.norm(surface - c0, axis=1) <= 1.3 * max(r0, 5.0)]
    s = s[s[:, 2] >= c0[2] - 0.25 * r0]
    try:
        centre, radius, resid = fit_sphere(s)
    except ValueError:
        return
    qc.head_center_xyz_mm = [float(v) for v in centre]
    qc.head_radius_mm, qc.head_residual_mm = radius, resid
    qc.head_found = limits.head_radius_mm[0] <= radius <= limits.head_radius_mm[1] and resid <= limits.head_residual_mm


def assess_side(fg: np.ndarray, to_world, *, spacing_zyx, side: str, confidence: float,  # noqa: ANN001
                border_idx: np.ndarray | None = None, limits: QCLimits | None = None,
                hu: np.ndarray | None = None, midline_x_at=None) -> SideQC:  # noqa: ANN001
    """QC values and verdict of one femur mask.

    Parameters
    ----------
    fg : (Z, Y, X) ndarray of bool
        The cleaned mask over its block of the scan.
    to_world : callable
        Maps (N, 3) block indices (z, y, x) to (N, 3) world points [mm, LPS].
    spacing_zyx : (3,) sequence of float
        The scan's voxel spacing [mm].
    side : {"right", "left"}
        The side it is labelled.
    confidence : float
        Mean foreground probability over the mask.
    border_idx : (N, 3) ndarray of int, optional
        Block indices of the mask's voxels on the scan's outermost layer.  The mask counts as cut by the field of
        view when one of them lies within ``limits.cut_zone_mm`` of the mask's top.
    limits : QCLimits, optional
        Thresholds; default adult human ones.
    hu : (Z, Y, X) ndarray, optional
        The scan's values [HU] over the same block, for the metal check.
    midline_x_at : callable, optional
        Maps a world point (3,) [mm, LPS] to the world x [mm] of the body's midline at its height, or None where it
        cannot be measured (:func:`body_midline_x`); no midline test without it.

    Returns
    -------
    SideQC
    """
    from scipy import ndimage

    limits = limits or QCLimits()
    spacing = np.asarray(spacing_zyx, float)
    voxel_ml = float(np.prod(spacing)) / 1000.0
    qc = SideQC(volume_ml=float(fg.sum()) * voxel_ml, confidence=float(confidence))
    if hu is not None:
        # Within two voxels of the mask: a prosthetic head or a stem the network left out still counts.
        near = ndimage.binary_dilation(fg, iterations=2)
        qc.metal_ml = float(np.count_nonzero(np.asarray(hu)[near] >= limits.metal_hu)) * voxel_ml
    if fg.sum() >= 20:
        world = to_world(np.argwhere(fg))
        at_floor = False
        if border_idx is not None and len(border_idx):
            # Cut where a head would be: contact near the mask's top, and not only along its lowest slice (a bone
            # leaving the scan at the bottom has its top, and so its head if it is a femur, in view).
            z = to_world(border_idx)[:, 2]
            floor = world[:, 2].min() + 1.5 * float(spacing.max())
            near_top = z >= world[:, 2].max() - limits.cut_zone_mm
            qc.touches_border = bool((near_top & (z > floor)).any())
            at_floor = bool((near_top & (z <= floor)).any())
        _head(fg, spacing, to_world, world, qc, limits)
        if at_floor and not qc.touches_border and qc.head_found:
            # A head at the scan's floor (an abdominal scan ending in the heads): the floor cuts the femur below it.
            qc.touches_border = bool(qc.head_center_xyz_mm[2] - world[:, 2].min() < 40.0)
        if qc.head_center_xyz_mm is not None:
            c = np.asarray(qc.head_center_xyz_mm)
            below = world[(world[:, 2] <= c[2] - 40.0) & (world[:, 2] >= c[2] - 100.0)]
            if len(below) >= 20:
                m = below.mean(axis=0)
                qc.neck_offset_mm = _neck_offset(below, c)
                qc.neck_centroid_offset_mm = float(np.hypot(m[0] - c[0], m[1] - c[1]))
                dx = float(c[0] - m[0])
                if abs(dx) >= 10.0 and qc.head_found:  # a side from a head, not from whatever the fit found
                    qc.shape_side = "right" if dx > 0 else "left"
            mid = midline_x_at(c) if midline_x_at is not None else None
            qc.midline_offset_mm = None if mid is None else abs(float(c[0]) - mid)
            shaft = world[(world[:, 2] <= c[2] - 70.0) & (world[:, 2] >= c[2] - 95.0), :2]
            if len(shaft) >= 20:
                qc.shaft_width_mm = 4.0 * float(np.sqrt(np.linalg.eigvalsh(np.cov(shaft.T))[-1]))
    verdict(qc, side, limits)
    return qc


def body_midline_x(hu: np.ndarray, to_world, k: int, *, half_slab: int = 2,  # noqa: ANN001
                   body_hu: float = -500.0, padding_hu: float = -1500.0) -> float | None:
    """World x [mm] of the body's left-right centre in array slices ``k ± half_slab``, or None when it cannot be
    measured.

    The body is the largest connected region above ``body_hu`` in each slice (the table and loose objects apart);
    its centre is the mean world x of its voxels.  None when a slice shows no body, or the body touches the
    array's left or right edge or the reconstruction circle (values ≤ ``padding_hu``): the outline is cut, its
    centre is not the midline (a one-hip or small-field reconstruction).

    Parameters
    ----------
    hu : (Z, Y, X) ndarray
        The whole scan [HU].
    to_world : callable
        Maps (N, 3) array indices (z, y, x) to (N, 3) world points [mm, LPS].
    k : int
        Array slice (z index) at the height wanted.
    """
    from scipy import ndimage

    nz = hu.shape[0]
    xs = []
    for z in range(max(0, k - half_slab), min(nz, k + half_slab + 1)):
        sl = np.asarray(hu[z])
        comp, n = ndimage.label(sl > body_hu)
        if n == 0:
            return None
        sizes = np.bincount(comp.ravel())[1:]
        body = comp == int(np.argmax(sizes)) + 1
        if body[:, 0].any() or body[:, -1].any():
            return None
        pad = sl <= padding_hu
        if pad.any() and (ndimage.binary_dilation(pad, iterations=2) & body).any():
            return None
        idx = np.argwhere(body)
        pts = to_world(np.column_stack([np.full(len(idx), z), idx]))
        xs.append(float(pts[:, 0].mean()))
    return float(np.mean(xs)) if xs else None


def neck_reason(qc: SideQC, limits: QCLimits | None = None) -> str | None:
    """Why the bone under the head is no femoral neck, or None when it may be one (or was not measured).

    The head centre must lie ``clear_neck_offset_mm`` from the line of the bone under it, or at least
    ``min_neck_offset_mm`` from both that line and the bone's centroid: the line is blind to tilt but extrapolates,
    the centroid does not extrapolate but a tilt moves it, and in the grey zone both must agree.  Measured: true
    femurs 25–45 mm from the line on phantoms (20–26 in a coxa valga of 146°; ``pelvicref_005`` 43), humeri and leg
    bones 0–6 mm, an upside-down pelvis 17 mm from the line and 14 mm from the centroid.
    """
    lim = limits or QCLimits()
    line, centroid = qc.neck_offset_mm, qc.neck_centroid_offset_mm
    if line is None:
        return None
    if line >= lim.clear_neck_offset_mm or (
            line >= lim.min_neck_offset_mm and (centroid is None or centroid >= lim.min_neck_offset_mm)):
        return None
    return (f"no femoral neck: the head is {line:.0f} mm from the line of the bone below it"
            + ("" if centroid is None else f" and {centroid:.0f} mm from its centroid")
            + f" (a femur: {lim.clear_neck_offset_mm:.0f} mm, or {lim.min_neck_offset_mm:.0f} mm from both)")


def _neck_offset(below: np.ndarray, centre: np.ndarray) -> float:
    """Horizontal distance [mm] from the head centre to the bone under it (world points ``below``, (N, 3) mm,
    40–100 mm under ``centre``).

    Where at least 20 mm of that bone is in view: the distance to the line through the bone's centroids in 2 mm
    layers (fitted against height, weighted by their voxels), taken at the head centre's height; a straight bone
    (a humerus, a tibia) passes under its own head whatever its tilt, a femur's shaft and trochanters pass 20–45 mm
    lateral of it (phantoms: 20 mm in a coxa valga of 146°; ``pelvicref_005``: 39 mm).  With less in view: the
    distance to the bone's centroid, which a tilt alone can shift by 10 mm.
    """
    layer = np.floor((below[:, 2] - centre[2]) / 2.0).astype(np.int64)
    layer -= layer.min()
    count = np.bincount(layer).astype(float)
    used = count > 0
    z = (np.bincount(layer, below[:, 2])[used] / count[used]) - centre[2]
    xy = np.stack([np.bincount(layer, below[:, i])[used] / count[used] for i in (0, 1)], axis=1)
    if float(np.ptp(z)) < 20.0 or len(z) < 5:
        m = below.mean(axis=0)
        return float(np.hypot(m[0] - centre[0], m[1] - centre[1]))
    w = np.sqrt(count[used])[:, None]
    design = np.stack([z, np.ones_like(z)], axis=1)
    coef = np.linalg.lstsq(design * w, xy * w, rcond=None)[0]  # rows: slope, value at the head centre's height
    return float(np.hypot(coef[1, 0] - centre[0], coef[1, 1] - centre[1]))


def pair_heads(right: SideQC, left: SideQC, limits: QCLimits | None = None) -> None:
    """Compare the two sides: their volumes (``mirror_volume_ratio``, when neither is cut by the field of view nor
    holds an implant: both ask for a ``check`` beyond ``max_mirror_volume_ratio``) and the distance between their head
    centres; when it is under ``min_head_separation_mm``, mark the side with the lower network confidence as the
    other's twin (``twin_of``, rejected); then re-run both sides' :func:`verdict`.  The volumes are those before the
    two masks share the voxels both claim (a few mL at most).

    Both arguments are modified in place; call it only for sides that passed their own QC.
    """
    lim = limits or QCLimits()
    if not (_partial(right, lim) or _partial(left, lim)) and min(right.volume_ml, left.volume_ml) > 0:
        right.mirror_volume_ratio = right.volume_ml / left.volume_ml
        left.mirror_volume_ratio = left.volume_ml / right.volume_ml
    if right.head_center_xyz_mm is not None and left.head_center_xyz_mm is not None:
        d = float(np.linalg.norm(np.subtract(right.head_center_xyz_mm, left.head_center_xyz_mm)))
        right.other_head_mm = left.other_head_mm = d
        if d < lim.min_head_separation_mm:
            loser, winner = (left, "right") if left.confidence < right.confidence else (right, "left")
            loser.twin_of = winner
    for q, side in ((right, "right"), (left, "left")):
        verdict(q, side, lim)


def _partial(qc: SideQC, lim: QCLimits) -> bool:
    """The mask may show its femur in part only: cut by the field of view, or carrying an implant."""
    return qc.touches_border or qc.metal_ml >= lim.min_metal_ml


def verdict(qc: SideQC, side: str, limits: QCLimits | None = None) -> None:
    """Set ``qc.verdict`` and ``qc.reasons`` from its values and the ``limits`` (default :class:`QCLimits`).

    ``reject``: a speck; confidence below ``confidence[0]``; a measured neck offset below the minimum (a straight
    bone, even when cut by the field of view); the shape says the other side; no femoral head; a head with no bone
    40 mm under its centre.  The last three only ask for a ``check`` when the mask is cut by the field of view or
    holds an implant (the head may be out of view or metal) — but a mask cut by the field of view with no head
    and confidence below ``confidence[1]`` is rejected: nothing positive says it is a femur.
    ``check``: a volume outside ``volume_ml``; confidence below ``confidence[1]``; a mask cut by the field of
    view; an implant (metal in or at the mask).
    """
    lim = limits or QCLimits()
    MIN_VOLUME_ML, CONFIDENCE, VOLUME_ML = lim.min_volume_ml, lim.confidence, lim.volume_ml  # noqa: N806
    reject, check = [], []
    if qc.volume_ml < MIN_VOLUME_ML:
        reject.append(f"volume {qc.volume_ml:.1f} mL is a speck, not a femur")
    if qc.confidence < CONFIDENCE[0]:
        reject.append(f"network confidence {qc.confidence:.2f} < {CONFIDENCE[0]}")
    elif qc.confidence < CONFIDENCE[1]:
        check.append(f"network confidence {qc.confidence:.2f} < {CONFIDENCE[1]}")
    # A femur cut by the field of view (or carrying an implant) may lack its head or show it only in part: what
    # would reject a whole bone only asks for a check then.
    partial = check if _partial(qc, lim) else reject
    if qc.shape_side is not None and qc.shape_side != side:
        partial.append(f"its shape is a {qc.shape_side} femur (head lateral of the shaft for a {side} one)")
    if not qc.head_found:
        what = ("no femoral head (sphere fit: " + (f"radius {qc.head_radius_mm:.1f} mm, residual "
                f"{qc.head_residual_mm:.1f} mm)" if qc.head_radius_mm is not None else "failed)"))
        partial.append(what)
        if qc.touches_border and qc.metal_ml < lim.min_metal_ml and qc.confidence < CONFIDENCE[1]:
            # Cut by the field of view excuses a missing head only when the network is sure of the bone it saw.
            reject.append("cut by the field of view with no femoral head and an unsure network: not a femur "
                          "that can be reported")
    no_neck = neck_reason(qc, lim)
    if no_neck is not None:
        # Measured, a straight bone is straight whatever cuts it (arms and legs run through the whole scan).
        reject.append(no_neck)
    elif qc.head_found and qc.neck_offset_mm is None:
        partial.append("no femur below the head (the mask ends within 40 mm under the head's centre)")
    if qc.midline_offset_mm is not None and qc.midline_offset_mm < lim.min_midline_offset_mm:
        reject.append(f"its head lies {qc.midline_offset_mm:.0f} mm from the body's midline (femoral heads: "
                      f"{lim.min_midline_offset_mm:.0f} mm or more; the sacrum and spine lie on it)")
    if qc.twin_of is not None and qc.other_head_mm is not None:
        reject.append(f"its head lies {qc.other_head_mm:.0f} mm from the {qc.twin_of} femur's head (two femoral "
                      f"heads: {lim.min_head_separation_mm:.0f} mm or more apart): the same hip marked twice")
    ratio = qc.mirror_volume_ratio
    if ratio is not None and max(ratio, 1.0 / ratio) > lim.max_mirror_volume_ratio:
        check.append(f"the two femurs' volumes differ {max(ratio, 1.0 / ratio):.2f}× (mirror images: within "
                     f"{lim.max_mirror_volume_ratio:.2f}×): one mask may run into muscle or miss bone")
    if qc.shaft_width_mm is not None and qc.shaft_width_mm > lim.max_shaft_width_mm:
        partial.append(f"no femoral shaft: the bone 70–95 mm below the head is {qc.shaft_width_mm:.0f} mm wide "
                       f"(a femur: {lim.max_shaft_width_mm:.0f} mm or less)")
    if not VOLUME_ML[0] <= qc.volume_ml <= VOLUME_ML[1] and qc.volume_ml >= MIN_VOLUME_ML:
        check.append(f"volume {qc.volume_ml:.0f} mL outside {VOLUME_ML[0]:.0f}–{VOLUME_ML[1]:.0f} mL")
    if qc.touches_border:
        check.append("cut by the scan's field of view")
    if qc.metal_ml >= lim.min_metal_ml:
        check.append(f"implant: {qc.metal_ml:.1f} mL of metal inside the femur")
    qc.reasons = reject + check
    qc.verdict = "reject" if reject else ("check" if check else "ok")
