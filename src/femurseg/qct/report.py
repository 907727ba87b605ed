"""What ``femurseg qct`` writes: ``qct.json`` (every figure with its unit), ``qct.csv`` (a row per femur),
``report.png`` (one page: regions on slices, the DXA-like projection with its ROIs, the calibration fit and the key
numbers) and ``report.html`` (the same page, self-contained, with the full tables).

Pictures are drawn in the femur's own frame: the "DXA plane" holds the neck and shaft axes (the femur seen from
the front with its anteversion removed, proximal up), the neck section is perpendicular to the neck axis at its
narrowest point.  Both are resampled from the CT at 0.5 mm, so they are correctly oriented whatever the scan's
direction cosines.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from femurseg.atomic import transaction
from femurseg.qct.analysis import FemurAnalysis, QCTAnalysis
from femurseg.viz.html import html_figure, html_page, html_table

__all__ = ["write_qct_outputs", "report_figure", "csv_text", "REGION_COLOURS"]

#: Colours of the regions in pictures (head, neck, trochanter, intertrochanter).
REGION_COLOURS: dict[int, str] = {1: "#e6550d", 2: "#3182bd", 3: "#31a354", 4: "#9e67c9"}
_PLANE_MM = 0.5  # resampling step of the pictures' planes [mm]


def _fmt(v: Any, digits: int = 1) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "–"
    return f"{v:.{digits}f}" if isinstance(v, float) else str(v)


def _plane(fem: FemurAnalysis, centre: np.ndarray, e1: np.ndarray, e2: np.ndarray, half_mm: tuple[float, float],
           values: np.ndarray, order: int) -> np.ndarray:
    """``values`` (on the femur's box grid) resampled on the plane ``centre + a·e1 + b·e2`` (rows: b from +half
    to −half, so +e2 is up; columns: a from −half to +half), NaN outside the box."""
    from scipy import ndimage

    a = np.arange(-half_mm[0], half_mm[0] + 1e-6, _PLANE_MM)
    b = np.arange(half_mm[1], -half_mm[1] - 1e-6, -_PLANE_MM)
    pts = centre[None, None, :] + a[None, :, None] * e1[None, None, :] + b[:, None, None] * e2[None, None, :]
    idx = fem.grid.world_to_index(pts)
    out = ndimage.map_coordinates(values.astype(np.float32), np.moveaxis(idx, -1, 0), order=order, cval=np.nan)
    return out


def _draw_regions(ax, codes: np.ndarray, extent: list[float]) -> None:  # noqa: ANN001
    """Region codes as translucent colours and outlines over a picture."""
    from matplotlib.colors import to_rgba

    rgba = np.zeros(codes.shape + (4,), np.float32)
    for code, colour in REGION_COLOURS.items():
        rgba[codes == code] = to_rgba(colour, 0.35)
        if (codes == code).any():
            ax.contour(codes == code, levels=[0.5], colors=[colour], linewidths=0.9, extent=extent, origin="upper")
    ax.imshow(rgba, extent=extent, origin="upper", interpolation="nearest")


def _dxa_plane_panel(ax, fem: FemurAnalysis) -> None:  # noqa: ANN001
    """The CT in the plane of the neck and shaft axes through the neck centre, regions drawn on it."""
    p = fem.projection
    e1, e2 = np.asarray(p.horizontal_xyz, float), np.asarray(p.vertical_xyz, float)
    half = (70.0, 80.0)
    centre = fem.frame.neck_center_xyz - 25.0 * e2
    hu = _plane(fem, centre, e1, e2, half, fem.hu_zyx, order=1)
    codes = np.nan_to_num(_plane(fem, centre, e1, e2, half, fem.regions_zyx, order=0)).astype(np.uint8)
    extent = [-half[0], half[0], -half[1], half[1]]
    ax.imshow(np.nan_to_num(hu, nan=-1000.0), cmap="gray", vmin=-250, vmax=1250, extent=extent, origin="upper")
    _draw_regions(ax, codes, extent)
    c = fem.frame.head_center_xyz - centre
    hc = (float(c @ e1), float(c @ e2))
    from matplotlib.patches import Circle

    ax.add_patch(Circle(hc, fem.frame.head_radius_mm, fill=False, color="yellow", lw=0.8, ls="--"))
    u = fem.frame.neck_axis_xyz
    ax.plot([hc[0] - 70 * float(u @ e1), hc[0]], [hc[1] - 70 * float(u @ e2), hc[1]], color="yellow", lw=0.8)
    ax.set_title(f"{fem.side} femur:\nregions in the neck–shaft plane", fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])


def _neck_section_panel(ax, fem: FemurAnalysis, mask_zyx: np.ndarray, compartments: tuple[np.ndarray, np.ndarray]
                        ) -> None:  # noqa: ANN001
    """The CT across the neck at its narrowest point, trabecular and cortical compartments outlined."""
    u = fem.frame.neck_axis_xyz
    e2 = np.asarray(fem.projection.vertical_xyz, float)
    e2 = e2 - (e2 @ u) * u
    e2 /= np.linalg.norm(e2)
    e1 = np.cross(e2, u)
    half = (30.0, 30.0)
    centre = fem.frame.neck_center_xyz
    hu = _plane(fem, centre, e1, e2, half, fem.hu_zyx, order=1)
    extent = [-half[0], half[0], -half[1], half[1]]
    ax.imshow(np.nan_to_num(hu, nan=-1000.0), cmap="gray", vmin=-250, vmax=1250, extent=extent, origin="upper")
    for arr, colour, name in ((mask_zyx, "#ffd700", "mask"), (compartments[0], "#3182bd", "trabecular"),
                              (compartments[1], "#e6550d", "cortical")):
        sec = np.nan_to_num(_plane(fem, centre, e1, e2, half, arr, order=0)) > 0.5
        if sec.any():
            ax.contour(sec, levels=[0.5], colors=[colour], linewidths=0.9, extent=extent, origin="upper")
        ax.plot([], [], color=colour, label=name)
    ax.legend(fontsize=6, loc="lower right", framealpha=0.6)
    ax.set_title(f"neck section\n(width {fem.frame.neck_width_mm:.1f} mm)", fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])


def _projection_panel(ax, fem: FemurAnalysis) -> None:  # noqa: ANN001
    """The DXA-like areal density image with the ROIs outlined, aBMD and T-scores printed."""
    p = fem.projection
    img = np.asarray(p.image_g_cm2, float)
    h, w = img.shape
    extent = [0.0, w * p.pixel_mm, -h * p.pixel_mm, 0.0]
    ax.imshow(img, cmap="gray", vmin=0.0, vmax=max(float(np.percentile(img[img > 0], 99)), 0.5) if (img > 0).any()
              else 1.0, extent=extent, origin="upper")
    regions = np.asarray(p.regions)
    for code, colour in REGION_COLOURS.items():
        if (regions == code).any():
            ax.contour(regions == code, levels=[0.5], colors=[colour], linewidths=1.0, extent=extent, origin="upper")
    lines = []
    for name in ("neck", "total_hip"):
        a = fem.areal.get(name)
        if a is not None:
            t = "" if a.t_score is None else f", T {a.t_score:+.1f}"
            lines.append(f"{name.replace('_', ' ')} {a.abmd_g_cm2:.3f} g/cm²{t}")
    ax.text(0.02, 0.02, "\n".join(lines), transform=ax.transAxes, fontsize=7, color="white", va="bottom",
            bbox={"facecolor": "black", "alpha": 0.5, "lw": 0})
    ax.set_title("DXA-like projection\n(CTXA estimate)", fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])


def _numbers_panel(ax, fem: FemurAnalysis, unit: str) -> None:  # noqa: ANN001
    """The femur's key numbers as text."""
    f = fem.frame
    lines = [f"{fem.side} femur", f"head Ø {f.head_diameter_mm:.1f} mm", f"neck-shaft angle {_fmt(f.neck_shaft_angle_deg)}°",
             f"neck length {f.neck_length_mm:.1f} mm", f"axis length {_fmt(f.axis_length_mm)} mm", "",
             f"vBMD [{unit}]:", "region           integral  trab.  cort."]
    for name in ("head", "neck", "trochanter", "intertrochanter", "total_hip"):
        d = fem.densities.get(name)
        if d is not None:
            lines.append(f"{name.replace('_', ' '):<16} {_fmt(d.integral_vbmd, 0):>8} {_fmt(d.trabecular_vbmd, 0):>6} "
                         f"{_fmt(d.cortical_vbmd, 0):>6}")
    lines += [""] + [_wrap(f"warning: {w}", 58) for w in fem.warnings]
    ax.text(0.0, 1.0, "\n".join(lines), va="top", family="monospace", fontsize=7.5, transform=ax.transAxes)
    ax.axis("off")


def _calibration_panel(ax, analysis: QCTAnalysis) -> None:  # noqa: ANN001
    """The calibration: rods (or tissues) measured against their model, with the fitted line."""
    cal = analysis.calibration
    if cal.rods:
        two = cal.model == "two-component"
        x = np.array([r.density for r in cal.rods])
        y = np.array([r.hu - (r.water_density or 0.0) if two else r.hu for r in cal.rods])
        xs = np.linspace(min(x.min(), 0.0), x.max() * 1.05, 50)
        line = (cal.sigma_ref * xs + cal.beta_ref) if two else cal.hu(xs)
        ax.plot(xs, line, color="#3182bd", lw=1)
        ax.scatter(x, y, color="#e6550d", zorder=3, s=18)
        for r, xi, yi in zip(cal.rods, x, y):
            ax.annotate(r.name, (xi, yi), fontsize=7, xytext=(3, 3), textcoords="offset points")
        ax.set_xlabel(cal.unit, fontsize=8)
        ax.set_ylabel("HU − water-equivalent density" if two else "HU", fontsize=8)
    elif cal.tissues:
        ref = np.array([t.reference_hu for t in cal.tissues])
        hu = np.array([t.hu for t in cal.tissues])
        ax.plot([ref.min(), ref.max()], [ref.min(), ref.max()], color="#999", lw=0.8, ls="--")
        ax.scatter(ref, hu, color="#e6550d", s=18, zorder=3)
        for t in cal.tissues:
            ax.annotate(t.name, (t.reference_hu, t.hu), fontsize=7, xytext=(3, 3), textcoords="offset points")
        ax.set_xlabel("reference HU", fontsize=8)
        ax.set_ylabel("HU in this scan", fontsize=8)
    r2 = "" if not math.isfinite(cal.r_squared) else f", R² {cal.r_squared:.4f}"
    ax.set_title(f"{cal.method} calibration: HU = {cal.intercept:.1f} + {cal.slope:.4f}·ρ{r2}", fontsize=9)
    ax.tick_params(labelsize=7)


def report_figure(analysis: QCTAnalysis, path: str | Path) -> Path:
    """Draw the one-page picture (PNG) of an analysis: a row per femur, then the calibration."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sides = list(analysis.femurs)
    fig = plt.figure(figsize=(14.0, 4.1 * len(sides) + 3.4))
    gs = fig.add_gridspec(len(sides) + 1, 4, height_ratios=[4.1] * len(sides) + [3.0], width_ratios=[1.1, 0.8, 1, 1.2])
    for i, side in enumerate(sides):
        fem = analysis.femurs[side]
        mask = fem.mask_zyx
        _dxa_plane_panel(fig.add_subplot(gs[i, 0]), fem)
        _neck_section_panel(fig.add_subplot(gs[i, 1]), fem, mask, fem.compartments_zyx)
        _projection_panel(fig.add_subplot(gs[i, 2]), fem)
        _numbers_panel(fig.add_subplot(gs[i, 3]), fem, analysis.unit)
    _calibration_panel(fig.add_subplot(gs[len(sides), 0:2]), analysis)
    ax = fig.add_subplot(gs[len(sides), 2:])
    cal = analysis.calibration
    notes = [f"case {analysis.case}; densities in {analysis.unit}",
             f"calibration: {cal.method} ({cal.model}{', ' + cal.phantom if cal.phantom else ''})"]
    notes += [f"  rod {r.name}: {r.density:.1f} {cal.unit}, {r.hu:.1f} HU (SD {r.hu_sd:.1f}, {r.n_slices} slices), "
              f"residual {r.residual_hu:+.2f} HU" for r in cal.rods]
    notes += [f"  {t.name}: {t.hu:.1f} HU (reference {t.reference_hu:.0f} HU)" for t in cal.tissues]
    notes += [f"• {w}" for w in analysis.warnings]
    notes += [f"{s} femur not analysed: {r}" for s, r in analysis.skipped.items()]
    ax.text(0.0, 1.0, "\n".join(_wrap(n, 80) for n in notes), va="top", fontsize=8, transform=ax.transAxes)
    ax.axis("off")
    fig.suptitle(f"femurseg qct — {analysis.case}", fontsize=12)
    fig.tight_layout(rect=(0, 0, 1, 0.98))
    path = Path(path)
    try:
        fig.savefig(path, dpi=100, format="png")
    finally:
        plt.close(fig)
    return path


def _wrap(text: str, width: int) -> str:
    import textwrap

    return "\n".join(textwrap.wrap(text, width)) or text


def csv_text(rows: list[dict[str, Any]]) -> str:
    """CSV of flat rows (columns: the union of the rows' keys, in first-seen order)."""
    import csv
    import io

    columns: list[str] = []
    for r in rows:
        columns += [k for k in r if k not in columns]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for r in rows:
        writer.writerow({k: ("" if v is None else v) for k, v in r.items()})
    return buf.getvalue()


def _tables(analysis: QCTAnalysis) -> list[str]:
    """The report's HTML tables: geometry, volumetric BMD, areal BMD."""
    geo, vol, areal = [], [], []
    for side, fem in analysis.femurs.items():
        f = fem.frame
        geo.append([side, _fmt(f.head_diameter_mm), _fmt(f.head_residual_mm, 2), _fmt(f.neck_shaft_angle_deg),
                    _fmt(f.neck_length_mm), _fmt(f.neck_width_mm), _fmt(f.axis_length_mm)])
        for name, d in fem.densities.items():
            vol.append([side, name, _fmt(d.volume_cm3, 2), _fmt(d.bmc_mg, 0), _fmt(d.integral_vbmd),
                        _fmt(d.trabecular_vbmd), _fmt(d.trabecular_volume_cm3, 2), _fmt(d.cortical_vbmd),
                        _fmt(d.cortical_volume_cm3, 2)])
        for name, a in fem.areal.items():
            areal.append([side, name, _fmt(a.bmc_g, 2), _fmt(a.area_cm2, 2), _fmt(a.abmd_g_cm2, 3),
                          _fmt(a.t_score, 1)])
    u = analysis.unit
    return [
        html_table("Femur geometry", ["side", "head Ø mm", "sphere residual mm", "neck-shaft angle °",
                                      "neck length mm", "neck width mm", "femoral axis length mm"], geo),
        html_table(f"Volumetric BMD by region [{u}]",
                   ["side", "region", "volume cm³", "BMC mg", "integral vBMD", "trabecular vBMD",
                    "trabecular cm³", "cortical vBMD", "cortical cm³"], vol,
                   note="Trabecular: deeper than the peel (3 mm + half the slice spacing) below the periosteal surface; cortical: the outer shell at "
                        "or above the cortical density threshold (underestimated by partial volume at clinical "
                        "resolution). Total hip = neck + trochanter + intertrochanter, as in DXA."),
        html_table("Areal BMD, CTXA-like (an estimate of DXA's)", ["side", "region", "BMC g", "area cm²",
                                                                    "aBMD g/cm²", "T-score"], areal,
                   note="T-scores against NHANES III young white women (Looker et al. 1998), for women and men as "
                        "the ISCD recommends; CT-derived aBMD in K2HPO4/HA-equivalent mineral, not cross-calibrated "
                        "to a DXA device."),
    ]


def _html(analysis: QCTAnalysis, png: Path) -> str:
    cal = analysis.calibration
    intro = (f"Case {analysis.case}. Calibration: {cal.method}"
             f"{' (' + cal.phantom + ')' if cal.phantom else ''}, HU = {cal.intercept:.2f} + {cal.slope:.5f}·ρ "
             f"[ρ in {cal.unit}]" + ("" if not math.isfinite(cal.r_squared) else f", R² {cal.r_squared:.5f}") + ".")
    import html as _h

    body = [f"<p>{_h.escape(intro)}</p>"]
    body += [f"<p class='warn'>{_h.escape(w)}</p>" for w in analysis.warnings]
    body += [f"<p class='warn'>{_h.escape(s)} femur not analysed: {_h.escape(r)}</p>"
             for s, r in analysis.skipped.items()]
    body += [f"<p class='warn'>{_h.escape(side)} femur: {_h.escape(w)}</p>"
             for side, fem in analysis.femurs.items() for w in fem.warnings]
    body += _tables(analysis)
    body.append(html_figure(png, "Regions, neck section, DXA-like projection and calibration", wide=True))
    return html_page(f"femurseg qct — {analysis.case}", body)


def write_qct_outputs(analysis: QCTAnalysis, out_dir: str | Path, *, overwrite: bool = False) -> dict[str, Path]:
    """Write ``qct.json``, ``qct.csv``, ``report.png`` and ``report.html`` into ``out_dir``, all or none.

    Returns
    -------
    dict of str to Path
        By kind (``json``, ``csv``, ``png``, ``html``).
    """
    out = Path(out_dir)
    paths = {"json": out / "qct.json", "csv": out / "qct.csv", "png": out / "report.png", "html": out / "report.html"}
    with transaction(overwrite=overwrite) as tx:
        png = report_figure(analysis, tx.stage(paths["png"]))
        tx.stage(paths["html"]).write_text(_html(analysis, png), encoding="utf-8")
        tx.stage(paths["json"]).write_text(json.dumps(_finite(analysis.to_dict()), indent=1, default=_jsonable,
                                                                allow_nan=False) + "\n",
                                           encoding="utf-8")
        tx.stage(paths["csv"]).write_text(csv_text(analysis.csv_rows()), encoding="utf-8")
    return paths


def _finite(v: Any) -> Any:
    """``v`` with every non-finite float replaced by None (JSON has no NaN)."""
    if isinstance(v, dict):
        return {k: _finite(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_finite(x) for x in v]
    if isinstance(v, (float, np.floating)) and not math.isfinite(float(v)):
        return None
    return v


def _jsonable(v: Any) -> Any:
    if isinstance(v, (np.floating, np.integer)):
        return v.item()
    if isinstance(v, np.ndarray):
        return v.tolist()
    raise TypeError(f"not JSON-able: {type(v).__name__}")
