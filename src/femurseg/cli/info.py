"""``femurseg info INPUT``: what a scan is (format, grid, orientation, values) and, for DICOM, which series."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``info`` verb."""
    parser = subparsers.add_parser(
        "info",
        help="describe a scan: format, size, spacing, origin, direction, orientation, value range",
        description="Describe a scan (NIfTI, NRRD, MetaImage file or DICOM series folder) as femurseg reads it.",
    )
    parser.add_argument("input", metavar="INPUT", help="image file or DICOM folder (searched recursively)")
    parser.add_argument("--series-uid", metavar="UID", default=None, help="DICOM SeriesInstanceUID to describe")
    parser.set_defaults(func=run)


def _fmt(values: tuple[float, ...], digits: int = 4) -> str:
    # round() then str(): short, and adding 0.0 turns -0.0 into 0.0
    return "(" + ", ".join(str(round(float(v), digits) + 0.0) for v in values) + ")"


def describe(path: str, *, series_uid: str | None = None) -> list[str]:
    """The lines ``femurseg info`` prints for ``path``."""
    import numpy as np
    import SimpleITK as sitk

    from femurseg.io import choose_series, format_of, read_image, read_series, read_series_info

    lines = [f"input:        {path}"]
    kind = format_of(path)
    lines.append(f"format:       {kind}")
    if kind == "DICOM series":
        infos = read_series_info(path)
        if not infos:
            read_image(path)  # raises the standard "no DICOM" error
        chosen = choose_series(infos, series_uid=series_uid)
        image = read_series(chosen)
        lines.append(f"series found: {len(infos)}")
        for info in infos:
            mark = "*" if info is chosen else " "
            lines.append(f"  {mark} {info.summary()}")
        lines.append(f"series read:  {chosen.uid}")
    else:
        image = read_image(path)
    size = image.GetSize()
    lines.append(f"size:         {size} (x, y, z) voxels")
    lines.append(f"spacing:      {_fmt(image.GetSpacing())} (x, y, z) mm")
    lines.append(f"origin:       {_fmt(image.GetOrigin())} (x, y, z) mm LPS")
    direction = np.asarray(image.GetDirection(), dtype=float).reshape(3, 3)
    rows = [_fmt(tuple(row)) for row in direction]
    lines.append(f"direction:    {rows[0]}")
    lines.extend(f"              {row}" for row in rows[1:])
    code = sitk.DICOMOrientImageFilter.GetOrientationFromDirectionCosines(image.GetDirection())
    oblique = not np.allclose(np.abs(direction), np.round(np.abs(direction)), atol=1e-6)
    lines.append(f"orientation:  {code}{' (nearest; the grid is oblique)' if oblique else ''}")
    extent = np.asarray(image.GetSpacing()) * np.asarray(size)
    lines.append(f"extent:       {_fmt(tuple(extent), 1)} (x, y, z) mm")
    stats = sitk.MinimumMaximumImageFilter()
    stats.Execute(image)
    unit = " HU" if kind == "DICOM series" else ""
    lines.append(f"pixel type:   {image.GetPixelIDTypeAsString()}")
    values = f"{stats.GetMinimum():g} to {stats.GetMaximum():g}{unit}"
    if "float" in image.GetPixelIDTypeAsString():
        arr = sitk.GetArrayViewFromImage(image)
        bad = int(arr.size - np.count_nonzero(np.isfinite(arr)))
        if bad == arr.size:
            values = "all NaN or infinite (no usable value)"
        elif bad:
            finite = arr[np.isfinite(arr)]
            values = f"{finite.min():g} to {finite.max():g}{unit}, and {bad} NaN or infinite voxel(s)"
    lines.append(f"values:       {values}")
    return lines


def run(args: argparse.Namespace) -> int:
    """Print the description of ``args.input``; InputError propagates to ``main`` (exit 2)."""
    for line in describe(args.input, series_uid=args.series_uid):
        print(line)
    return 0
