"""``femurseg info``: describes files and DICOM folders; one-line errors with exit code 2."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from femurseg.cli.main import main

from helpers.dicom import ramp_hu, uid, write_ct_series


def _assert_one_line_error(capsys: pytest.CaptureFixture[str], code: int, needle: str) -> None:
    out, err = capsys.readouterr()
    assert code == 2
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("femurseg: error: ") and needle in lines[0]
    assert "Traceback" not in err


def test_info_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    image = sitk.GetImageFromArray(np.arange(4 * 5 * 6, dtype=np.int16).reshape(4, 5, 6) - 100)
    image.SetSpacing((0.75, 0.5, 2.0))
    image.SetOrigin((-12.5, 4.0, 100.0))
    image.SetDirection((-1.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 1.0))
    sitk.WriteImage(image, str(tmp_path / "scan.nii.gz"))
    assert main(["info", str(tmp_path / "scan.nii.gz")]) == 0
    out = capsys.readouterr().out
    assert "format:       NIfTI" in out
    assert "size:         (6, 5, 4) (x, y, z)" in out
    assert "spacing:      (0.75, 0.5, 2.0)" in out
    assert "origin:       (-12.5, 4.0, 100.0)" in out
    assert "orientation:  RAS" in out and "oblique" not in out
    assert "values:       -100 to 19" in out


def test_info_dicom_lists_series_and_choice(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_ct_series(tmp_path / "a", ramp_hu((4, 3, 5)), series="big", description="big one")
    write_ct_series(tmp_path / "b", ramp_hu((2, 3, 5)), series="small", description="small one")
    assert main(["info", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    big, small = uid("big"), uid("small")
    assert "format:       DICOM series" in out
    assert "series found: 2" in out
    assert f"* {big} (CT 'big one', 4 slices)" in out
    assert f"  {small} (CT 'small one', 2 slices)" in out
    assert f"series read:  {big}" in out
    assert "size:         (5, 3, 4)" in out
    assert "orientation:  LPS" in out
    assert "values:       -1000 to 824 HU" in out  # 600·3 + 10·2 + 4 − 1000

    assert main(["info", str(tmp_path), "--series-uid", small]) == 0
    out = capsys.readouterr().out
    assert f"series read:  {small}" in out and "size:         (5, 3, 2)" in out


def test_info_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _assert_one_line_error(capsys, main(["info", str(tmp_path / "nope.nii.gz")]), "does not exist")


def test_info_2d_image(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    sitk.WriteImage(sitk.Image(8, 8, sitk.sitkInt16), str(tmp_path / "slice.nrrd"))
    _assert_one_line_error(capsys, main(["info", str(tmp_path / "slice.nrrd")]), "2D image")


def test_info_empty_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _assert_one_line_error(capsys, main(["info", str(tmp_path)]), "holds no DICOM image files")


def test_info_unknown_series_uid(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_ct_series(tmp_path, ramp_hu((2, 3, 5)), series="only")
    _assert_one_line_error(capsys, main(["info", str(tmp_path), "--series-uid", "9.9"]), f"series found: {uid('only')}")


def test_a_closed_stdout_pipe_is_no_traceback(tmp_path: Path) -> None:
    import subprocess
    import sys

    image = sitk.GetImageFromArray(np.zeros((4, 5, 6), np.int16))
    sitk.WriteImage(image, str(tmp_path / "scan.nii.gz"))
    # `| true`: the reader has exited before femurseg writes (`femurseg evaluate … | head` in a shell).
    run = subprocess.run(f"'{sys.executable}' -m femurseg info '{tmp_path / 'scan.nii.gz'}' | true", shell=True,
                         stderr=subprocess.PIPE, text=True, check=False)
    assert "Traceback" not in run.stderr and "Exception ignored" not in run.stderr, run.stderr
