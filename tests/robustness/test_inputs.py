"""Hostile and odd inputs: truncated files, pipes, lying headers, values that are not HU, absurd grids.

Each must give one line and exit 2 (never a traceback, a hang or a silent wrong result), and leave the input as
it was.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import struct
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from femurseg.cli.main import main


def _scan(path: Path, arr: np.ndarray | None = None, spacing=(0.8, 0.8, 2.0)) -> Path:
    if arr is None:
        arr = np.full((20, 40, 40), -1000, np.int16)
        arr[:, 5:35, 5:35] = 40
    img = sitk.GetImageFromArray(arr)
    img.SetSpacing(spacing)
    sitk.WriteImage(img, str(path))
    return path


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _fails_in_one_line(capsys, argv: list[str], expect: str, code: int = 2) -> None:
    assert main(argv) == code
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("femurseg: error:"), err
    assert expect in err[0], err[0]


@pytest.mark.parametrize("ending", [".nii", ".nii.gz"])
@pytest.mark.parametrize("verb", ["info", "segment"])
def test_truncated_nifti_is_refused(tmp_path, capsys, ending, verb) -> None:
    full = _scan(tmp_path / f"full{ending}")
    half = tmp_path / f"half{ending}"
    data = full.read_bytes()
    half.write_bytes(data[: len(data) // 2])
    before = _sha(half)
    argv = [verb, str(half)] + (["-o", str(tmp_path / "m.nii.gz")] if verb == "segment" else [])
    _fails_in_one_line(capsys, argv, "truncated")
    assert _sha(half) == before
    assert not (tmp_path / "m.nii.gz").exists()


@pytest.mark.parametrize("verb", ["info", "segment"])
def test_a_pipe_named_like_a_scan_is_refused_without_blocking(tmp_path, verb) -> None:
    import subprocess
    import sys

    fifo = tmp_path / "x.nii.gz"
    os.mkfifo(fifo)  # opening it for reading would block forever: run in a subprocess with a timeout
    argv = [verb, str(fifo)] + (["-o", str(tmp_path / "m.nii.gz")] if verb == "segment" else [])
    proc = subprocess.run([sys.executable, "-m", "femurseg", *argv], capture_output=True, text=True, timeout=60)
    err = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(err) == 1 and "not a regular file" in err[0], proc.stderr


def _header(dims: tuple[int, ...], pixdim=(1.0, 1.0, 1.0)) -> bytes:
    h = bytearray(352)
    h[0:4] = struct.pack("<i", 348)
    h[40:56] = struct.pack("<8h", len(dims), *dims, *([1] * (7 - len(dims))))
    h[70:74] = struct.pack("<hh", 4, 16)  # int16
    h[76:108] = struct.pack("<8f", 1.0, *pixdim, 1, 1, 1, 1)
    h[108:112] = struct.pack("<f", 352.0)
    h[344:348] = b"n+1\0"
    return bytes(h)


def test_a_header_promising_gigabytes_is_refused_before_allocating(tmp_path, capsys) -> None:
    lie = tmp_path / "lie.nii.gz"
    with gzip.open(lie, "wb") as fh:
        fh.write(_header((2048, 2048, 1536)))
    _fails_in_one_line(capsys, ["info", str(lie)], "promises")
    small_lie = tmp_path / "small_lie.nii.gz"  # plausible size, but the data are not there
    with gzip.open(small_lie, "wb") as fh:
        fh.write(_header((1024, 1024, 700)) + b"\0" * 100)
    _fails_in_one_line(capsys, ["info", str(small_lie)], "truncated")


def test_zero_voxel_size_is_not_read_as_one_millimetre(tmp_path, capsys) -> None:
    zero = tmp_path / "zero.nii"
    zero.write_bytes(_header((40, 40, 20), pixdim=(0.0, 0.8, 2.0)) + b"\0" * (40 * 40 * 20 * 2))
    _fails_in_one_line(capsys, ["info", str(zero)], "voxel size")


@pytest.mark.parametrize("spacing,expect", [((10.0, 10.0, 10.0), "spacing"), ((1e5, 1e5, 1e5), "spacing"),
                                            ((7.0, 7.0, 7.0), "spans")])
def test_absurd_spacing_is_refused_quickly(tmp_path, capsys, spacing, expect) -> None:
    arr = np.full((20, 400, 400), -1000, np.int16)
    arr[:, 100:300, 100:300] = 40
    scan = _scan(tmp_path / "s.nii.gz", arr, spacing)
    _fails_in_one_line(capsys, ["segment", str(scan), "-o", str(tmp_path / "m.nii.gz")], expect)
    assert not (tmp_path / "m.nii.gz").exists()


@pytest.mark.parametrize("kind", ["HU + 1024", "MR-like"])
def test_values_that_are_not_hu_are_refused_with_a_hint(tmp_path, capsys, kind) -> None:
    rng = np.random.default_rng(0)
    if kind == "HU + 1024":
        arr = np.full((20, 40, 40), 24, np.int16)
        arr[:, 5:35, 5:35] = 1064
    else:
        arr = rng.integers(0, 800, (20, 40, 40)).astype(np.int16)
    scan = _scan(tmp_path / "s.nii.gz", arr)
    _fails_in_one_line(capsys, ["segment", str(scan), "-o", str(tmp_path / "m.nii.gz")], "Hounsfield")


def test_nan_values_are_refused(tmp_path, capsys) -> None:
    arr = np.full((20, 40, 40), np.nan, np.float32)
    scan = _scan(tmp_path / "s.mha", arr)  # (ITK's NIfTI reader turns NaN into 0)
    _fails_in_one_line(capsys, ["segment", str(scan), "-o", str(tmp_path / "m.nii.gz")], "NaN")


def test_truncated_metaimage_gives_one_line_and_nothing_else(tmp_path, capfd) -> None:
    full = tmp_path / "t.mha"
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((20, 30, 40), np.int16)), str(full), False)
    half = tmp_path / "h.mha"
    data = full.read_bytes()
    half.write_bytes(data[: len(data) // 2])
    assert main(["info", str(half)]) == 2
    err = capfd.readouterr().err.strip().splitlines()  # capfd: also what C++ code prints on descriptor 2
    assert len(err) == 1 and "truncated" in err[0], err


def test_info_says_when_a_volume_is_all_nan(tmp_path, capsys) -> None:
    scan = _scan(tmp_path / "s.mha", np.full((20, 40, 40), np.nan, np.float32))
    assert main(["info", str(scan)]) == 0
    assert "all NaN" in capsys.readouterr().out
