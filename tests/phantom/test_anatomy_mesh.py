"""A user's own femur mesh in the phantom: reading (incl. VTP encodings), checking, aligning, using it."""

from __future__ import annotations

import base64
import zlib
from pathlib import Path

import numpy as np
import pytest
import trimesh
from scipy.spatial.transform import Rotation

from femurseg.errors import InputError
from femurseg.geometry import Grid
from femurseg.phantom._meshes import load_bundled_mesh
from femurseg.phantom.anatomy import build_skeleton, load_femur_mesh, sample_anatomy
from femurseg.phantom.meshes import align_femur, read_vtp


# ------------------------------------------------------------------------------------------ a VTP writer
def _encode(arr: np.ndarray, *, compressed: bool, header: str, block: int, separate: bool) -> tuple[bytes, bytes]:
    """(header bytes, payload bytes) of one array as VTK writes binary data."""
    hdt = np.dtype("<u4" if header == "UInt32" else "<u8")
    data = np.ascontiguousarray(arr).astype(arr.dtype.newbyteorder("<")).tobytes()
    if not compressed:
        return np.array([len(data)], hdt).tobytes(), data
    chunks = [data[i:i + block] for i in range(0, len(data), block)] or [b""]
    comp = [zlib.compress(c) for c in chunks]
    head = np.array([len(chunks), block, len(chunks[-1]), *[len(c) for c in comp]], hdt).tobytes()
    return head, b"".join(comp)


def _write_vtp(path: Path, verts: np.ndarray, polys: list[list[int]], *, fmt: str, compressed: bool = False,
               header: str = "UInt32", encoding: str = "raw", separate: bool = False) -> None:
    conn = np.array([i for p in polys for i in p], dtype=np.int64)
    offs = np.cumsum([len(p) for p in polys]).astype(np.int32)
    arrays = [("Points", verts.astype(np.float32), 3, "Float32"), ("connectivity", conn, 1, "Int64"),
              ("offsets", offs, 1, "Int32")]
    appended = b""
    elems = {}
    for name, arr, ncomp, vtype in arrays:
        attrs = f'type="{vtype}" Name="{name}" NumberOfComponents="{ncomp}"'
        if fmt == "ascii":
            elems[name] = f'<DataArray {attrs} format="ascii">{" ".join(map(str, arr.ravel().tolist()))}</DataArray>'
            continue
        head, payload = _encode(arr, compressed=compressed, header=header, block=200, separate=separate)
        if fmt == "binary" or encoding == "base64":
            if compressed or separate:
                blob = base64.b64encode(head) + base64.b64encode(payload)
            else:
                blob = base64.b64encode(head + payload)
        else:
            blob = head + payload
        if fmt == "binary":
            elems[name] = f'<DataArray {attrs} format="binary">\n{blob.decode()}\n</DataArray>'
        else:
            elems[name] = f'<DataArray {attrs} format="appended" offset="{len(appended)}"/>'
            appended += blob
    comp = ' compressor="vtkZLibDataCompressor"' if compressed else ""
    xml = (f'<?xml version="1.0"?>\n<VTKFile type="PolyData" version="1.0" byte_order="LittleEndian" '
           f'header_type="{header}"{comp}>\n<PolyData>\n'
           f'<Piece NumberOfPoints="{len(verts)}" NumberOfPolys="{len(polys)}">\n'
           f'<Points>{elems["Points"]}</Points>\n<Polys>{elems["connectivity"]}{elems["offsets"]}</Polys>\n'
           f'</Piece>\n</PolyData>\n')
    out = xml.encode()
    if fmt == "appended":
        out += f'<AppendedData encoding="{encoding}">\n_'.encode() + appended + b"\n</AppendedData>\n"
    out += b"</VTKFile>\n"
    path.write_bytes(out)


VTP_CASES = [
    dict(fmt="ascii"),
    dict(fmt="binary"),
    dict(fmt="binary", separate=True),
    dict(fmt="binary", compressed=True),
    dict(fmt="binary", compressed=True, header="UInt64"),
    dict(fmt="appended", encoding="raw"),
    dict(fmt="appended", encoding="raw", compressed=True, header="UInt64"),
    dict(fmt="appended", encoding="base64"),
    dict(fmt="appended", encoding="base64", compressed=True),
]


@pytest.mark.parametrize("case", VTP_CASES, ids=lambda c: "-".join(str(v) for v in c.values()))
def test_read_vtp_encodings(tmp_path: Path, case: dict) -> None:
    sphere = trimesh.creation.icosphere(subdivisions=2, radius=10.0)
    verts = sphere.vertices.astype(np.float32).astype(float)
    polys = [list(f) for f in sphere.faces]
    # One quad (two of the triangles' corners) checks the fan triangulation of polygons.
    polys.append([0, 1, 2, 3])
    path = tmp_path / "m.vtp"
    _write_vtp(path, verts, polys, **case)
    v, f = read_vtp(path)
    np.testing.assert_allclose(v, verts, atol=1e-6)
    np.testing.assert_array_equal(f[:-2], sphere.faces)
    np.testing.assert_array_equal(f[-2:], [[0, 1, 2], [0, 2, 3]])


# ------------------------------------------------------------------------------------------ the user femur
def _femur_volume_ml(sk, side: str) -> float:
    lm = sk.landmarks
    c = lm.head_center_xyz[side]
    g = Grid(shape_zyx=(100, 70, 70), spacing_zyx=(1.5, 1.5, 1.5), origin_xyz=tuple(c + np.array([-52.0, -52.0, -125.0])))
    f = sk.sample(g, names=(f"femur_{side}",))[f"femur_{side}"]
    return float((f.sdf < 0).sum() * 1.5**3 / 1000.0)


@pytest.fixture(scope="module")
def params():
    return sample_anatomy(np.random.default_rng(5), sex="M", age=50.0)


@pytest.fixture(scope="module")
def reference(params):
    sk = build_skeleton(params)
    return sk.facts(), {s: _femur_volume_ml(sk, s) for s in ("right", "left")}


def test_transformed_bundled_femur_as_stl_matches_template(tmp_path: Path, params, reference) -> None:
    mesh = load_bundled_mesh("femur_r")
    tf = np.eye(4)
    tf[:3, :3] = Rotation.random(random_state=11).as_matrix()
    tf[:3, 3] = [140.0, -75.0, 410.0]
    mesh.apply_transform(tf)
    path = tmp_path / "femur.stl"
    mesh.export(path)
    user = load_femur_mesh(path, side="right")
    info = align_femur(user)[2]
    np.testing.assert_allclose(info["head_center"], tf[:3, 3], atol=1.5)  # the template's head is at its origin
    assert info["whole"] and info["lesser_trochanter_posterior"]
    sk = build_skeleton(params, femur_mesh=user)
    facts, volumes = reference
    got = sk.facts()
    for side in ("right", "left"):
        assert got[f"{side}_head_diameter_mm"] == pytest.approx(facts[f"{side}_head_diameter_mm"], rel=0.01)
        assert _femur_volume_ml(sk, side) == pytest.approx(volumes[side], rel=0.03)
        assert got[f"{side}_joint_space_mm"] == pytest.approx(getattr(params, side).joint_space_mm, abs=0.2)


def test_proximal_left_femur_as_vtp_matches_template(tmp_path: Path, params, reference) -> None:
    # A left femur as a segmentation would give it: voxelised (1 mm), cut 200 mm below the head, surfaced by
    # marching cubes (closed), in another pose; saved as compressed appended VTP.
    from skimage.measure import marching_cubes

    from femurseg.phantom._meshes import voxelize

    src = load_bundled_mesh("femur_l").subdivide_loop(iterations=2)
    lo = src.vertices.min(axis=0) - 2.0
    lo[1] = -200.0
    shape = tuple(int(n) for n in np.ceil((src.vertices.max(axis=0) + 2.0 - lo) / 1.0).astype(int) + 1)
    mask = np.pad(voxelize(src.vertices, src.faces, lo, 1.0, shape), 1)
    verts, faces, *_ = marching_cubes(mask.astype(np.float32), level=0.5)
    mesh = trimesh.Trimesh(verts + lo - 1.0, faces[:, ::-1])
    assert mesh.is_watertight
    mesh.apply_transform(trimesh.transformations.rotation_matrix(2.2, [0.3, 0.5, 0.8], [10.0, 0.0, 0.0]))
    path = tmp_path / "femur_left.vtp"
    _write_vtp(path, mesh.vertices, [list(f) for f in mesh.faces], fmt="appended", compressed=True)
    user = load_femur_mesh(path, side="left")
    info = align_femur(user)[2]
    assert not info["whole"] and info["lesser_trochanter_posterior"]
    sk = build_skeleton(params, femur_mesh=user)
    facts, volumes = reference
    got = sk.facts()
    for side in ("right", "left"):
        assert got[f"{side}_head_diameter_mm"] == pytest.approx(facts[f"{side}_head_diameter_mm"], rel=0.01)
        assert _femur_volume_ml(sk, side) == pytest.approx(volumes[side], rel=0.05)


def test_mesh_in_metres_needs_the_scale(tmp_path: Path) -> None:
    mesh = load_bundled_mesh("femur_r")
    mesh.apply_scale(0.001)
    path = tmp_path / "femur_m.ply"
    mesh.export(path)
    with pytest.raises(InputError, match="scale"):
        load_femur_mesh(path, side="right")
    assert load_femur_mesh(path, side="right", scale=1000.0).metadata["femurseg_side"] == "right"


@pytest.mark.parametrize("problem", ["garbage", "empty", "no_head", "open", "suffix", "side"])
def test_bad_meshes_are_input_errors(tmp_path: Path, problem: str) -> None:
    side = "right"
    if problem == "garbage":
        path = tmp_path / "x.stl"
        path.write_bytes(b"solid nonsense\nfacet normal what\n" + bytes(range(200)))
    elif problem == "empty":
        path = tmp_path / "x.vtp"
        _write_vtp(path, np.zeros((0, 3)), [], fmt="ascii")
    elif problem == "no_head":
        path = tmp_path / "x.obj"
        trimesh.creation.box(extents=(40.0, 40.0, 300.0)).export(path)
    elif problem == "open":
        mesh = load_bundled_mesh("femur_r")
        # A large hole (the shaft's front cut away) cannot be repaired; a few missing triangles could.
        centres = mesh.triangles_center
        mesh.update_faces(~((centres[:, 1] < -120.0) & (centres[:, 1] > -300.0) & (centres[:, 0] > 0.0)))
        path = tmp_path / "x.ply"
        mesh.export(path)
    elif problem == "suffix":
        path = tmp_path / "x.step"
        path.write_text("ISO-10303-21;")
    else:
        path = tmp_path / "x.stl"
        load_bundled_mesh("femur_r").export(path)
        side = "both"
    with pytest.raises(InputError):
        load_femur_mesh(path, side=side)


def test_small_holes_are_repaired(tmp_path: Path) -> None:
    mesh = load_bundled_mesh("femur_r")
    mesh.update_faces(np.arange(len(mesh.faces)) % 9 != 0)  # ~100 single missing triangles
    path = tmp_path / "holes.ply"
    mesh.export(path)
    user = load_femur_mesh(path, side="right")
    assert len(user.faces) > 0.99 * len(load_bundled_mesh("femur_r").faces)
    assert abs(align_femur(user)[2]["head_radius_mm"] - 23.1) < 1.0


@pytest.mark.parametrize("name, side", [("femur_r", "right"), ("femur_l", "left")])
def test_side_found_from_the_lesser_trochanter_when_not_given(name: str, side: str) -> None:
    mesh = load_bundled_mesh(name)
    mesh.apply_transform(trimesh.transformations.rotation_matrix(1.1, [0.2, -0.7, 0.4]))
    assert "femurseg_side" not in mesh.metadata
    out, _, info = align_femur(mesh)
    assert info["side"] == side and info["lesser_trochanter_posterior"]
    from femurseg.phantom._meshes import fit_sphere

    centre, radius = fit_sphere(out[np.linalg.norm(out, axis=1) < 26.0])
    assert np.linalg.norm(centre) < 1.5 and abs(radius - 23.1) < 1.0  # head centre at the origin
    assert out[:, 2].min() < -400.0 and out[:, 2].max() < 30.0  # shaft along −z, the knee ~430 mm down
