"""``femurseg segment``: outputs on the scan's exact grid in every format, batches, DICOM SEG, exit codes."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from femurseg.cli.main import main

from helpers.dicom import write_ct_series
from helpers.synthetic import build_tiny_bundles, synthetic_hip


def _oblique() -> tuple[float, ...]:
    """A rotation by 20° about z after 20° about x, orthonormal to double precision."""
    c, s = np.cos(np.radians(20.0)), np.sin(np.radians(20.0))
    rz = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, c, -s], [0, s, c]])
    return tuple(float(v) for v in (rz @ rx).ravel())


OBLIQUE = _oblique()


@pytest.fixture(scope="module")
def bundles(tmp_path_factory) -> list[str]:
    # The same session cache as tests/inference: trained once per test session.
    paths = build_tiny_bundles(tmp_path_factory.getbasetemp() / "femurseg-tiny-bundles")
    return ["--model", str(paths["femur"]), "--locator", str(paths["locate"]), "--device", "cpu"]


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _listing(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("femurseg: error: ") and "\n" not in err and "Traceback" not in err
    return err


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * float((a & b).sum()) / max(1.0, float(a.sum() + b.sum()))


@pytest.mark.parametrize("out_ending", [".nii.gz", ".nii", ".nrrd", ".mha", ".mhd"])
@pytest.mark.parametrize("direction", ["oblique", "flipped"])
def test_single_scan_mask_on_the_exact_input_grid(tmp_path, capsys, bundles, out_ending, direction) -> None:
    d = OBLIQUE if direction == "oblique" else (-1, 0, 0, 0, -1, 0, 0, 0, 1)
    image, truth = synthetic_hip(seed=31, direction=d)
    scan = tmp_path / "hip.mha"  # MetaImage keeps double-precision geometry: the reference is exact
    sitk.WriteImage(image, str(scan))
    out = tmp_path / f"mask{out_ending}"
    assert main(["segment", str(scan), "-o", str(out), *bundles]) == 0
    printed = capsys.readouterr().out
    assert "right femur" in printed and "left femur" in printed and "mL" in printed and str(out) in printed
    mask = sitk.ReadImage(str(out))
    src = sitk.ReadImage(str(scan))
    assert mask.GetSize() == src.GetSize()
    if out_ending in (".mha", ".mhd"):  # MetaImage stores spacing, origin and direction as written
        assert mask.GetSpacing() == src.GetSpacing()
        assert mask.GetOrigin() == src.GetOrigin()
        assert mask.GetDirection() == src.GetDirection()
    elif out_ending == ".nrrd":  # NRRD stores spacing × direction vectors: exact to double rounding
        np.testing.assert_allclose(mask.GetSpacing(), src.GetSpacing(), rtol=1e-12)
        np.testing.assert_allclose(mask.GetOrigin(), src.GetOrigin(), rtol=1e-12)
        np.testing.assert_allclose(mask.GetDirection(), src.GetDirection(), atol=1e-12)
    else:  # NIfTI stores geometry in float32
        np.testing.assert_allclose(mask.GetSpacing(), src.GetSpacing(), rtol=1e-6)
        np.testing.assert_allclose(mask.GetOrigin(), src.GetOrigin(), atol=1e-4)
        np.testing.assert_allclose(mask.GetDirection(), src.GetDirection(), atol=1e-6)
    m, t = sitk.GetArrayFromImage(mask), sitk.GetArrayFromImage(truth)
    for value in (1, 2):
        assert _dice(m == value, t == value) > 0.9


def test_summary_and_probabilities(tmp_path, capsys, bundles) -> None:
    image, _ = synthetic_hip(seed=32)
    sitk.WriteImage(image, str(tmp_path / "hip.nii.gz"))
    args = ["segment", str(tmp_path / "hip.nii.gz"), "-o", str(tmp_path / "mask.nrrd"), "--probabilities",
            "--summary", str(tmp_path / "summary.json"), *bundles]
    assert main(args) == 0
    assert _listing(tmp_path) == ["hip.nii.gz", "mask.nrrd", "mask_probabilities.nrrd", "summary.json"]
    summary = json.loads((tmp_path / "summary.json").read_text())
    mask = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "mask.nrrd")))
    assert summary["sides"]["right"]["voxels"] == int((mask == 1).sum())
    assert summary["outputs"]["mask"] == str(tmp_path / "mask.nrrd")
    assert summary["input"]["path"] == str(tmp_path / "hip.nii.gz")
    prob = sitk.ReadImage(str(tmp_path / "mask_probabilities.nrrd"))
    assert prob.GetPixelID() == sitk.sitkFloat32 and prob.GetSize() == image.GetSize()


def test_refuses_to_overwrite_without_flag(tmp_path, capsys, bundles) -> None:
    image, _ = synthetic_hip(seed=33)
    sitk.WriteImage(image, str(tmp_path / "hip.nii.gz"))
    out = tmp_path / "mask.nii.gz"
    out.write_bytes(b"old")
    assert main(["segment", str(tmp_path / "hip.nii.gz"), "-o", str(out), *bundles]) == 2
    assert "--overwrite" in _one_error_line(capsys)
    assert out.read_bytes() == b"old" and _listing(tmp_path) == ["hip.nii.gz", "mask.nii.gz"]
    assert main(["segment", str(tmp_path / "hip.nii.gz"), "-o", str(out), "--overwrite", *bundles]) == 0
    assert sitk.ReadImage(str(out)).GetSize() == image.GetSize()


def _bad_inputs(tmp: Path) -> dict[str, tuple[list[str], str]]:
    image, _ = synthetic_hip(seed=34)
    sitk.WriteImage(image, str(tmp / "hip.nii.gz"))
    sitk.WriteImage(sitk.Image([32, 32], sitk.sitkInt16), str(tmp / "slice.nii.gz"))
    return {
        "missing input": ([str(tmp / "nothing.nii.gz"), "-o", str(tmp / "m.nii.gz")], "no such file"),
        "2D image": ([str(tmp / "slice.nii.gz"), "-o", str(tmp / "m.nii.gz")], "2D"),
        "unknown output type": ([str(tmp / "hip.nii.gz"), "-o", str(tmp / "m.png")], "unknown output type"),
        "SEG of a non-DICOM input": ([str(tmp / "hip.nii.gz"), "-o", str(tmp / "m.dcm")], "DICOM"),
        "missing output folder": ([str(tmp / "hip.nii.gz"), "-o", str(tmp / "no" / "m.nii.gz")], "does not exist"),
        "summary not json": ([str(tmp / "hip.nii.gz"), "-o", str(tmp / "m.nii.gz"), "--summary", str(tmp / "s.txt")],
                             ".json"),
    }


@pytest.mark.parametrize("case", ["missing input", "2D image", "unknown output type", "SEG of a non-DICOM input",
                                  "missing output folder", "summary not json"])
def test_bad_input_one_line_exit_2_nothing_written(tmp_path, capsys, bundles, case) -> None:
    args, message = _bad_inputs(tmp_path)[case]
    before = _listing(tmp_path)
    assert main(["segment", *args, *bundles]) == 2
    assert message in _one_error_line(capsys)
    assert _listing(tmp_path) == before


def test_no_femur_exit_3_nothing_written(tmp_path, capsys, bundles) -> None:
    image, _ = synthetic_hip(seed=35, sides=())
    sitk.WriteImage(image, str(tmp_path / "pelvis.nii.gz"))
    args = ["segment", str(tmp_path / "pelvis.nii.gz"), "-o", str(tmp_path / "m.nii.gz"),
            "--summary", str(tmp_path / "s.json"), "--probabilities", *bundles]
    assert main(args) == 3
    assert "no femur" in _one_error_line(capsys)
    assert _listing(tmp_path) == ["pelvis.nii.gz"]


def test_folder_of_scans_and_csv_list(tmp_path, capsys, bundles) -> None:
    scans = tmp_path / "scans"
    scans.mkdir()
    both, _ = synthetic_hip(seed=36)
    left, _ = synthetic_hip(seed=37, sides=("left",))
    sitk.WriteImage(both, str(scans / "a.nii.gz"))
    sitk.WriteImage(left, str(scans / "b.nrrd"))
    assert main(["segment", str(scans), "-o", str(tmp_path / "out"), *bundles]) == 0
    assert _listing(tmp_path / "out") == ["a.nii.gz", "b.nii.gz", "summary.csv", "summary.json"]
    rows = list(csv.DictReader(open(tmp_path / "out" / "summary.csv", encoding="utf-8")))
    assert [r["case"] for r in rows] == ["a", "b"] and all(r["status"] == "ok" for r in rows)
    assert rows[1]["right_volume_ml"] == "" and float(rows[1]["left_volume_ml"]) > 10
    cases = json.loads((tmp_path / "out" / "summary.json").read_text())["cases"]
    assert [c["case"] for c in cases] == ["a", "b"]
    mask_b = sitk.ReadImage(str(tmp_path / "out" / "b.nii.gz"))
    assert mask_b.GetSize() == left.GetSize() and set(np.unique(sitk.GetArrayFromImage(mask_b))) == {0, 2}
    assert "segmented 2 of 2" in capsys.readouterr().out

    # The same scans from a CSV list with case ids and relative paths; an existing output folder needs --overwrite.
    (tmp_path / "list.csv").write_text("case_id,path\nfirst,scans/a.nii.gz\nsecond,scans/b.nrrd\n", encoding="utf-8")
    assert main(["segment", str(tmp_path / "list.csv"), "-o", str(tmp_path / "out"), *bundles]) == 2
    _one_error_line(capsys)
    assert main(["segment", str(tmp_path / "list.csv"), "-o", str(tmp_path / "out2"), *bundles]) == 0
    assert _listing(tmp_path / "out2") == ["first.nii.gz", "second.nii.gz", "summary.csv", "summary.json"]
    np.testing.assert_array_equal(sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "out2" / "first.nii.gz"))),
                                  sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "out" / "a.nii.gz"))))


def test_batch_goes_on_past_a_scan_without_femur(tmp_path, capsys, bundles) -> None:
    good, _ = synthetic_hip(seed=38)
    empty, _ = synthetic_hip(seed=39, sides=())
    sitk.WriteImage(good, str(tmp_path / "good.nii.gz"))
    sitk.WriteImage(empty, str(tmp_path / "empty.nii.gz"))
    code = main(["segment", str(tmp_path / "good.nii.gz"), str(tmp_path / "empty.nii.gz"), "-o",
                 str(tmp_path / "out"), *bundles])
    assert code == 3
    assert "empty.nii.gz" in capsys.readouterr().err
    assert _listing(tmp_path / "out") == ["good.nii.gz", "summary.csv", "summary.json"]
    rows = {r["case"]: r["status"] for r in csv.DictReader(open(tmp_path / "out" / "summary.csv", encoding="utf-8"))}
    assert rows == {"good": "ok", "empty": "no femur"}


def test_dicom_series_to_dicom_seg(tmp_path, capsys, bundles) -> None:
    hd = pytest.importorskip("highdicom")
    import pydicom

    image, _ = synthetic_hip(seed=40, shape_zyx=(40, 48, 56))
    d = np.asarray(image.GetDirection()).reshape(3, 3)
    files = write_ct_series(tmp_path / "dicom", sitk.GetArrayFromImage(image), spacing_xyz=image.GetSpacing(),
                            origin_xyz=image.GetOrigin(), row_dir=d[:, 0], col_dir=d[:, 1], reverse_files=True)
    assert main(["segment", str(tmp_path / "dicom"), "-o", str(tmp_path / "seg.dcm"), *bundles]) == 0
    assert main(["segment", str(tmp_path / "dicom"), "-o", str(tmp_path / "mask.nrrd"), *bundles]) == 0
    mask = sitk.ReadImage(str(tmp_path / "mask.nrrd"))
    labels = sitk.GetArrayFromImage(mask)
    assert set(np.unique(labels)) == {0, 1, 2}
    seg = hd.seg.segread(tmp_path / "seg.dcm")
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == pydicom.dcmread(files[0]).SeriesInstanceUID
    for f in files:
        ds = pydicom.dcmread(f, stop_before_pixels=True)
        k = mask.TransformPhysicalPointToIndex([float(v) for v in ds.ImagePositionPatient])[2]
        frame = seg.get_pixels_by_source_instance(source_sop_instance_uids=[ds.SOPInstanceUID],
                                                  segment_numbers=[1, 2], combine_segments=True,
                                                  skip_overlap_checks=True)[0]
        np.testing.assert_array_equal(frame, labels[k])


def _bytes_of(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_no_output_may_be_an_input(tmp_path, capsys, bundles) -> None:
    """Issue 10, item 2: with or without --overwrite, an input is never written over."""
    scans = tmp_path / "scans"
    scans.mkdir()
    image, _ = synthetic_hip(seed=33)
    sitk.WriteImage(image, str(scans / "hip.nii.gz"))
    sitk.WriteImage(image, str(scans / "m_probabilities.nii.gz"))
    before = _bytes_of(tmp_path)
    attempts = [
        ["segment", str(scans / "hip.nii.gz"), "-o", str(scans / "hip.nii.gz"), "--overwrite"],
        ["segment", str(scans / "m_probabilities.nii.gz"), "-o", str(scans / "m.nii.gz"), "--probabilities",
         "--overwrite"],
        ["segment", str(scans), "-o", str(scans), "--overwrite"],
        ["segment", str(scans / "hip.nii.gz"), "-o", str(tmp_path / "m.nii.gz"), "--summary",
         str(scans / "hip.nii.gz"), "--overwrite"],
    ]
    (tmp_path / "list.csv").write_text("case_id,path\n../scans/hip,scans/hip.nii.gz\n", encoding="utf-8")
    attempts.append(["segment", str(tmp_path / "list.csv"), "-o", str(tmp_path / "out")])
    for argv in attempts:
        assert main([*argv, *bundles]) == 2, argv
        err = _one_error_line(capsys)
        assert "input" in err or "plain name" in err, err
        assert _bytes_of(tmp_path) == {**before, "list.csv": (tmp_path / "list.csv").read_bytes()}


@pytest.mark.parametrize("tag", ["FrameOfReferenceUID", "SliceThickness"])
def test_dicom_seg_of_a_series_lacking_a_reference_tag_fails_in_one_line(tmp_path, capsys, bundles, tag) -> None:
    pytest.importorskip("highdicom")
    import pydicom

    image, _ = synthetic_hip(seed=41, shape_zyx=(40, 48, 56))
    d = np.asarray(image.GetDirection()).reshape(3, 3)
    files = write_ct_series(tmp_path / "dicom", sitk.GetArrayFromImage(image), spacing_xyz=image.GetSpacing(),
                            origin_xyz=image.GetOrigin(), row_dir=d[:, 0], col_dir=d[:, 1])
    for f in files:
        ds = pydicom.dcmread(f)
        if tag in ds:
            delattr(ds, tag)
        ds.save_as(f)
    code = main(["segment", str(tmp_path / "dicom"), "-o", str(tmp_path / "seg.dcm"), *bundles])
    err = capsys.readouterr().err.strip().splitlines()
    if code == 0:  # highdicom managed without the tag: a valid SEG
        assert (tmp_path / "seg.dcm").is_file()
        return
    assert code == 2 and len(err) == 1 and err[0].startswith("femurseg: error:"), err
    assert not (tmp_path / "seg.dcm").exists()


def test_batch_resumes_with_skip_existing_counts_progress_and_draws_qc_pictures(tmp_path, capsys, bundles) -> None:
    scans = tmp_path / "scans"
    scans.mkdir()
    for name, seed in (("a", 50), ("b", 51)):
        sitk.WriteImage(synthetic_hip(seed=seed)[0], str(scans / f"{name}.nii.gz"))
    out = tmp_path / "out"
    assert main(["segment", str(scans), "-o", str(out), "--qc-pictures", *bundles]) == 0
    assert _listing(out) == ["a.nii.gz", "a_qc.png", "b.nii.gz", "b_qc.png", "summary.csv", "summary.json"]
    err = capsys.readouterr().err
    assert "[1/2] a:" in err and "[2/2] b:" in err
    # A crash after case a: b's mask is gone; --skip-existing segments only b and keeps a as it was.
    (out / "b.nii.gz").unlink()
    before = (out / "a.nii.gz").stat().st_mtime_ns
    assert main(["segment", str(scans), "-o", str(out), "--skip-existing", *bundles]) == 0
    err = capsys.readouterr().err
    assert "a: skipped" in err and "[2/2] b:" in err
    assert (out / "a.nii.gz").stat().st_mtime_ns == before and (out / "b.nii.gz").is_file()
    rows = list(csv.DictReader(open(out / "summary.csv", encoding="utf-8")))
    assert [r["status"] for r in rows] == ["skipped", "ok"]


def test_segment_many_is_a_library_function(tmp_path, bundles) -> None:
    from femurseg.inference import Segmenter
    from femurseg.inference.batch import segment_many

    scan = tmp_path / "a.nii.gz"
    sitk.WriteImage(synthetic_hip(seed=52)[0], str(scan))
    seg = Segmenter(model=bundles[1], locator=bundles[3], device="cpu")
    results = segment_many([("a", scan)], tmp_path / "out", segmenter=seg)
    assert [r.status for r in results] == ["ok"] and (tmp_path / "out" / "a.nii.gz").is_file()


def test_a_folder_of_patient_subfolders_is_a_batch_and_needs_an_output_folder(tmp_path, capsys, bundles) -> None:
    root = tmp_path / "patients"
    for name, seed in (("p1", 60), ("p2", 61)):
        image, _ = synthetic_hip(seed=seed, shape_zyx=(40, 48, 56))
        d = np.asarray(image.GetDirection()).reshape(3, 3)
        write_ct_series(root / name, sitk.GetArrayFromImage(image), spacing_xyz=image.GetSpacing(),
                        origin_xyz=image.GetOrigin(), row_dir=d[:, 0], col_dir=d[:, 1], series=name)
    assert main(["segment", str(root), "-o", str(tmp_path / "again.nii.gz"), *bundles]) == 2
    assert "output folder" in _one_error_line(capsys)
    assert not (tmp_path / "again.nii.gz").exists()
    assert main(["segment", str(root), "-o", str(tmp_path / "masks"), *bundles]) == 0
    assert _listing(tmp_path / "masks") == ["p1.nii.gz", "p2.nii.gz", "summary.csv", "summary.json"]
