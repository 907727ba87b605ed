"""A user's own femur surface as the phantom's femur: reading (STL, PLY, OBJ, VTP), checking, aligning.

:func:`load_femur_mesh` reads and checks a mesh; :func:`build_skeleton(params, femur_mesh=mesh)
<femurseg.phantom.anatomy.build_skeleton>` then finds, on the mesh, the femoral head (a robust sphere fit at
the end of the long axis that is most like a sphere, which tells the proximal end from the distal one), the
long axis, and the medial direction (the knee's condylar axis for a whole femur, the neck for a proximal one);
with the side, that fixes the anterior direction. The mesh is brought into the template frame (head centre at
the origin, shaft along −z, medial +x, posterior +y; a left femur mirrored into a right one) and replaces the
bundled template for both sides, varied by the subject's parameters as usual.

VTP (VTK XML PolyData) is read by a small reader of our own (no VTK dependency): ASCII, inline base64 binary,
appended raw or base64 data, uncompressed or zlib-compressed (``vtkZLibDataCompressor``), UInt32 or UInt64
headers, either byte order; polygons are triangulated as fans, triangle strips are split.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import os
import re
import threading
import xml.etree.ElementTree as ET
import zlib
from collections import OrderedDict
from pathlib import Path

import numpy as np

from femurseg.errors import InputError
from femurseg.phantom._meshes import fit_sphere
from femurseg.phantom._template import FemurTemplate, femur_template_from_lps

log = logging.getLogger(__name__)

__all__ = ["load_femur_mesh", "read_vtp", "align_femur", "femur_template_of"]

_SUFFIXES = {".stl": "stl", ".ply": "ply", ".obj": "obj", ".vtp": "vtp"}
_VTK_TYPES = {
    "Int8": "i1", "UInt8": "u1", "Int16": "i2", "UInt16": "u2", "Int32": "i4", "UInt32": "u4",
    "Int64": "i8", "UInt64": "u8", "Float32": "f4", "Float64": "f8",
}


# ------------------------------------------------------------------------------------------------------- VTP
class _VtpData:
    def __init__(self, root: ET.Element, appended: bytes | None, appended_encoding: str) -> None:
        self.little = root.get("byte_order", "LittleEndian") == "LittleEndian"
        self.header = np.dtype(("<" if self.little else ">") + _VTK_TYPES[root.get("header_type", "UInt32")])
        self.compressed = root.get("compressor") is not None
        if self.compressed and "ZLib" not in root.get("compressor", ""):
            raise InputError(f"VTP compressor {root.get('compressor')} is not supported (only zlib); "
                             "save the mesh uncompressed or as STL")
        self.appended = appended
        self.appended_encoding = appended_encoding

    def _blocks_from(self, read, hs: int) -> bytes:
        """Array bytes given ``read(nbytes_from_start) -> bytes`` over the array's (decoded) stream."""
        if not self.compressed:
            n = int(np.frombuffer(read(hs)[:hs], self.header)[0])
            return read(hs + n)[hs:hs + n]
        head3 = np.frombuffer(read(3 * hs)[:3 * hs], self.header)
        nblocks = int(head3[0])
        head = np.frombuffer(read((3 + nblocks) * hs)[:(3 + nblocks) * hs], self.header)
        sizes = head[3:].astype(np.int64)
        start = (3 + nblocks) * hs
        blob = read(start + int(sizes.sum()))[start:]
        out, pos = [], 0
        for size in sizes:
            out.append(zlib.decompress(blob[pos:pos + int(size)]))
            pos += int(size)
        return b"".join(out)

    @staticmethod
    def _chars(n: int) -> int:
        return 4 * ((n + 2) // 3)

    def _b64(self, text: bytes, hs: int) -> bytes:
        """Array bytes of base64 text (inline, or appended from the array's offset on)."""
        hc = self._chars(hs)
        if not self.compressed:
            n = int(np.frombuffer(base64.b64decode(text[:hc])[:hs], self.header)[0])
            # Writers encode the byte count either on its own (then its last quad is padded) or with the data.
            if text[hc - 1:hc] == b"=":
                return base64.b64decode(text[hc:hc + self._chars(n)])[:n]
            return base64.b64decode(text[:self._chars(hs + n)])[hs:hs + n]
        # Compressed: the header (block count, sizes) is encoded on its own, then the blocks together.
        nblocks = int(np.frombuffer(base64.b64decode(text[:hc])[:hs], self.header)[0])
        head_len = (3 + nblocks) * hs
        head_chars = self._chars(head_len)
        head = np.frombuffer(base64.b64decode(text[:head_chars])[:head_len], self.header)
        sizes = head[3:].astype(np.int64)
        blob = base64.b64decode(text[head_chars:head_chars + self._chars(int(sizes.sum()))])
        out, pos = [], 0
        for size in sizes:
            out.append(zlib.decompress(blob[pos:pos + int(size)]))
            pos += int(size)
        return b"".join(out)

    def array(self, el: ET.Element) -> np.ndarray:
        dtype_name = el.get("type")
        if dtype_name not in _VTK_TYPES:
            raise InputError(f"VTP data type {dtype_name!r} is not supported")
        dtype = np.dtype(("<" if self.little else ">") + _VTK_TYPES[dtype_name])
        fmt = el.get("format", "ascii")
        hs = self.header.itemsize
        if fmt == "ascii":
            return np.array((el.text or "").split(), dtype=dtype.newbyteorder("="))
        if fmt == "binary":
            text = re.sub(rb"\s+", b"", (el.text or "").encode("ascii"))
            data = self._b64(text, hs)
        elif fmt == "appended":
            if self.appended is None:
                raise InputError("VTP file refers to appended data but has no <AppendedData> section")
            off = int(el.get("offset", "0"))
            if self.appended_encoding == "base64":
                text = re.sub(rb"\s+", b"", self.appended[off:])
                data = self._b64(text, hs)
            else:
                blob = self.appended
                data = self._blocks_from(lambda n: blob[off:off + n], hs)
        else:
            raise InputError(f"VTP data format {fmt!r} is not supported")
        return np.frombuffer(data, dtype=dtype).astype(dtype.newbyteorder("="))


def read_vtp(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """Read a VTK XML PolyData file's points and triangulated polygons (and strips).

    Returns
    -------
    vertices : (N, 3) ndarray of float64
    faces : (F, 3) ndarray of int64

    Raises
    ------
    InputError
        If the file is not a readable VTP file.
    """
    raw = Path(path).read_bytes()
    appended, encoding = None, "raw"
    i = raw.find(b"<AppendedData")
    if i >= 0:
        j = raw.find(b">", i)
        m = re.search(rb'encoding\s*=\s*"(\w+)"', raw[i:j + 1])
        encoding = m.group(1).decode() if m else "raw"
        k = raw.find(b"_", j)
        end = raw.rfind(b"</AppendedData>")
        if k < 0 or end < 0:
            raise InputError(f"{path}: malformed <AppendedData> section")
        appended = raw[k + 1:end]
        raw = raw[:i] + b"<AppendedData/>" + raw[end + len(b"</AppendedData>"):]
    try:
        root = ET.fromstring(raw)
    except ET.ParseError as exc:
        raise InputError(f"{path}: not a readable VTK XML file ({exc})") from None
    if root.tag != "VTKFile" or root.get("type") != "PolyData":
        raise InputError(f"{path}: not VTK XML PolyData (VTKFile type={root.get('type')!r})")
    data = _VtpData(root, appended, encoding)
    verts: list[np.ndarray] = []
    faces: list[np.ndarray] = []
    n_before = 0
    for piece in root.iter("Piece"):
        pts_el = piece.find("Points/DataArray")
        if pts_el is None:
            continue
        pts = data.array(pts_el).astype(float).reshape(-1, int(pts_el.get("NumberOfComponents", "3")))[:, :3]
        for kind in ("Polys", "Strips"):
            cell = piece.find(kind)
            if cell is None:
                continue
            arrays = {el.get("Name"): el for el in cell.findall("DataArray")}
            if "connectivity" not in arrays or "offsets" not in arrays:
                raise InputError(f"{path}: <{kind}> lacks connectivity/offsets arrays")
            conn = data.array(arrays["connectivity"]).astype(np.int64)
            offs = data.array(arrays["offsets"]).astype(np.int64)
            starts = np.concatenate([[0], offs[:-1]])
            for s, e in zip(starts, offs):
                poly = conn[s:e]
                if len(poly) < 3:
                    continue
                if kind == "Polys":
                    tri = np.stack([np.full(len(poly) - 2, poly[0]), poly[1:-1], poly[2:]], axis=1)
                else:  # strips alternate orientation
                    tri = np.stack([poly[:-2], poly[1:-1], poly[2:]], axis=1)
                    tri[1::2] = tri[1::2, ::-1]
                faces.append(tri + n_before)
        verts.append(pts)
        n_before += len(pts)
    if not verts or not faces:
        raise InputError(f"{path}: the VTP file holds no polygons")
    return np.concatenate(verts), np.concatenate(faces)


# ------------------------------------------------------------------------------------------------- loading
def load_femur_mesh(path: str | os.PathLike, *, side: str, scale: float = 1.0):  # -> trimesh.Trimesh
    """Read and check a user's femur surface mesh.

    Parameters
    ----------
    path : str or path-like
        STL, PLY, OBJ or VTP file; a whole or proximal femur, right or left, any pose and origin.
    side : {"right", "left"}
        The patient's side of this femur.
    scale : float
        Multiplies the coordinates to make millimetres (1000 for a mesh in metres).

    Returns
    -------
    trimesh.Trimesh
        The mesh [mm], in its own pose; ``metadata["femurseg_side"]`` holds ``side``.

    Raises
    ------
    InputError
        Unreadable, empty, non-watertight and not repairable, not femur-sized, or no femoral head found.
    """
    import trimesh

    if side not in ("right", "left"):
        raise InputError(f"femur mesh side must be 'right' or 'left', not {side!r}")
    if not (scale > 0 and np.isfinite(scale)):
        raise InputError(f"femur mesh scale must be a positive number, not {scale!r}")
    p = Path(path)
    kind = _SUFFIXES.get(p.suffix.lower())
    if kind is None:
        raise InputError(f"{p}: unsupported mesh format {p.suffix!r}; use STL, PLY, OBJ or VTP")
    if not p.is_file():
        raise InputError(f"{p}: no such file")
    try:
        if kind == "vtp":
            v, f = read_vtp(p)
            mesh = trimesh.Trimesh(vertices=v, faces=f, process=True)
        else:
            mesh = trimesh.load(str(p), file_type=kind, process=True, force="mesh")
    except InputError:
        raise
    except Exception as exc:  # trimesh raises many kinds on malformed files
        # (A garbage ASCII-looking STL sends trimesh guessing the text's encoding with an optional package; the
        # import error says nothing to a user: the file is simply not a readable mesh.)
        why = "" if isinstance(exc, ImportError) else f": {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
        raise InputError(f"{p}: not a readable {kind.upper()} mesh (damaged, or another format?){why}") from None
    if not isinstance(mesh, trimesh.Trimesh) or len(mesh.faces) == 0 or len(mesh.vertices) < 4:
        raise InputError(f"{p}: the mesh is empty")
    mesh.apply_scale(float(scale))
    _repair(mesh, str(p))
    extent = float(np.ptp(mesh.vertices, axis=0).max())
    if not (100.0 <= extent <= 700.0):
        raise InputError(f"{p}: the mesh is {extent:.3g} mm long, not femur-sized; give its unit with the scale "
                         "(e.g. 1000 for metres, 10 for centimetres)")
    mesh.metadata["femurseg_side"] = side
    align_femur(mesh)  # finds the head now, so a wrong mesh fails at load time with a clear message
    return mesh


def _repair(mesh, name: str) -> None:
    """Merge duplicate vertices, drop degenerate faces, fill small holes; raise if still open."""
    mesh.merge_vertices()
    mesh.update_faces(mesh.nondegenerate_faces())
    mesh.remove_unreferenced_vertices()
    if not mesh.is_watertight:
        mesh.fill_holes()
    if not mesh.is_watertight:
        import trimesh

        open_edges = len(trimesh.grouping.group_rows(mesh.edges_sorted, require_count=1))
        # The voxeliser votes over three ray directions, so a few small holes do no harm.
        if open_edges > max(6, 0.005 * len(mesh.edges_sorted)):
            raise InputError(f"{name}: the mesh is not closed ({open_edges} open edges) and could not be repaired; "
                             "close it (e.g. MeshLab 'Close Holes') and try again")
        log.warning("%s: mesh has %d open edges after repair; using it anyway", name, open_edges)


# ------------------------------------------------------------------------------------------------- aligning
def _fibonacci(n: int) -> np.ndarray:
    k = np.arange(n) + 0.5
    phi = np.arccos(1.0 - 2.0 * k / n)
    theta = np.pi * (1.0 + 5.0**0.5) * k
    return np.stack([np.cos(theta) * np.sin(phi), np.sin(theta) * np.sin(phi), np.cos(phi)], axis=1)


def _best_sphere(points: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, float, float]:
    """RANSAC sphere of radius 15–35 mm: (centre, radius, covered fraction of the sphere's directions)."""
    bins = _fibonacci(120)
    best = (np.zeros(3), 0.0, 0.0)
    if len(points) < 20:
        return best
    for _ in range(250):
        sample = points[rng.choice(len(points), 4, replace=False)]
        try:
            c, r = fit_sphere(sample)
        except np.linalg.LinAlgError:
            continue
        if not (15.0 <= r <= 35.0):
            continue
        d = np.linalg.norm(points - c, axis=1)
        inl = np.abs(d - r) < max(0.05 * r, 0.8)
        if inl.sum() < 20:
            continue
        c, r = fit_sphere(points[inl])
        if not (15.0 <= r <= 35.0):
            continue
        d = np.linalg.norm(points - c, axis=1)
        inl = np.abs(d - r) < max(0.05 * r, 0.8)
        dirs = (points[inl] - c) / np.maximum(d[inl, None], 1e-9)
        cover = len(np.unique(np.argmax(dirs @ bins.T, axis=1))) / len(bins)
        if cover > best[2]:
            best = (c, r, cover)
    return best


def align_femur(mesh) -> tuple[np.ndarray, np.ndarray, dict]:
    """Bring a femur mesh into the template frame as a RIGHT femur.

    Returns
    -------
    vertices : (N, 3) ndarray
        In the template frame [mm]: head centre at the origin, shaft along −z, medial +x, posterior +y.
    faces : (F, 3) ndarray
    info : dict
        ``head_center`` (mesh frame) [mm], ``head_radius_mm``, ``rotation`` (3×3, mesh → template, before the
        mirror), ``side`` (``metadata["femurseg_side"]``, or found from the lesser trochanter when absent),
        ``whole`` (whether the knee was found), ``lesser_trochanter_posterior`` (a check of the side: the lesser
        trochanter lies posterior in the right femur's frame).

    Raises
    ------
    InputError
        If no femoral head is found at either end of the long axis.
    """
    v = np.asarray(mesh.vertices, dtype=float)
    faces = np.asarray(mesh.faces)
    side = mesh.metadata.get("femurseg_side")
    tri = v[faces]
    area = 0.5 * np.linalg.norm(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]), axis=1)
    cen = tri.mean(axis=1)
    mean = (cen * area[:, None]).sum(axis=0) / area.sum()
    cov = ((cen - mean) * area[:, None]).T @ (cen - mean)
    axis = np.linalg.eigh(cov)[1][:, -1]
    proj = (v - mean) @ axis
    rng = np.random.default_rng(0)
    ends = []
    for sgn in (1.0, -1.0):
        s = sgn * proj
        region = v[s > s.max() - 75.0]
        ends.append((sgn, *_best_sphere(region, rng)))
    sgn, centre, radius, cover = max(ends, key=lambda e: e[3])
    if cover < 0.3:
        raise InputError("no femoral head found on the femur mesh (no sphere of 15–35 mm radius covers either "
                         "end); is it a femur in millimetres (see the scale option)?")
    up = sgn * axis  # towards the head
    length = float(np.ptp(proj))
    distal = v[(v - centre) @ up < -(length - 35.0)] if length > 300.0 else None
    whole = distal is not None and len(distal) >= 10
    if whole:
        knee = distal.mean(axis=0)
        z = centre - knee
        z /= np.linalg.norm(z)
        # Medial–lateral: the condyles' widest direction across the mechanical axis.
        d = distal - knee
        d -= np.outer(d @ z, z)
        ml = np.linalg.eigh(d.T @ d)[1][:, -1]
    else:
        z = up
        ml = None
    below = (v - centre) @ z
    shaft = v[(below < -80.0) & (below > -130.0)]
    if len(shaft) < 5:
        shaft = v[below < np.percentile(below, 20)]
    shaft_c = shaft.mean(axis=0)
    to_head = centre - shaft_c
    to_head -= (to_head @ z) * z
    if ml is None:
        x = to_head / np.linalg.norm(to_head)
    else:
        x = ml - (ml @ z) * z
        x /= np.linalg.norm(x)
        if x @ to_head < 0:
            x = -x
    y = np.cross(z, x)
    rot = np.stack([x, y, z])  # rows: template axes in mesh coordinates
    out = (v - centre) @ rot.T
    given = side if side in ("right", "left") else None
    # The lesser trochanter (most prominent point medial of the shaft 30–90 mm below the head) lies posterior
    # (+y) in a right femur's frame: a check of the given side, or the side itself when none was given.
    lt_post = _lesser_trochanter_posterior(out)
    if given is None:
        side = "left" if lt_post is False else "right"
    if side == "left":
        out[:, 1] = -out[:, 1]
        faces = faces[:, ::-1]
        lt_post = None if lt_post is None else not lt_post
    if given is not None and lt_post is False:
        log.warning("femur mesh given as %s looks like a %s femur (lesser trochanter anterior); check the side",
                    side, "left" if side == "right" else "right")
    info = {"head_center": centre, "head_radius_mm": float(radius), "rotation": rot, "side": side,
            "whole": bool(whole), "lesser_trochanter_posterior": lt_post}
    return out, faces, info


def _lesser_trochanter_posterior(out: np.ndarray) -> bool | None:
    """Whether the lesser trochanter lies at +y in a femur frame (head at the origin, shaft −z, medial +x)."""
    band = (out[:, 2] < -30.0) & (out[:, 2] > -90.0)
    if band.sum() < 10:
        return None
    sub = out[band, :2]
    rel = sub - np.median(sub, axis=0)
    k = np.argmax(np.linalg.norm(rel, axis=1) * (rel[:, 0] > 0))
    return bool(rel[k, 1] > 0)


_CACHE: OrderedDict[str, FemurTemplate] = OrderedDict()
_LOCK = threading.Lock()


def femur_template_of(mesh) -> FemurTemplate:
    """The femur template made from a user's mesh (smoothed if coarse), cached by the mesh's content and side."""
    key = hashlib.sha1(np.ascontiguousarray(mesh.vertices, dtype=np.float64).tobytes()
                       + np.ascontiguousarray(mesh.faces, dtype=np.int64).tobytes()
                       + str(mesh.metadata.get("femurseg_side")).encode()).hexdigest()
    with _LOCK:
        if key in _CACHE:
            _CACHE.move_to_end(key)
            return _CACHE[key]
    work = mesh.copy()
    # A coarse mesh is faceted; Loop subdivision makes it smooth (as the bundled template).
    while len(work.faces) < 8000:
        work = work.subdivide_loop(iterations=1)
    if "femurseg_side" in mesh.metadata:
        work.metadata["femurseg_side"] = mesh.metadata["femurseg_side"]
    verts, faces, _ = align_femur(work)
    template = femur_template_from_lps(verts, faces, watertight=work.is_watertight)
    with _LOCK:
        _CACHE[key] = template
        while len(_CACHE) > 4:
            _CACHE.popitem(last=False)
    return template
