"""``femurseg view``: one PNG with a row of slices per femoral head; clear refusals; no torch needed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from femurseg.cli.main import main


def _scan_and_truth(folder: Path, *, sides=("right", "left")) -> tuple[Path, Path]:
    # A plain numpy hip: two femur-like columns with round heads, bright in soft tissue.
    shape = (40, 48, 64)
    zz, yy, xx = np.meshgrid(*(np.arange(n) for n in shape), indexing="ij")
    labels = np.zeros(shape, np.uint8)
    for side, x0, value in (("right", 18, 1), ("left", 46, 2)):
        if side in sides:
            head = (zz - 30) ** 2 + (yy - 24) ** 2 + (xx - x0) ** 2 <= 36
            shaft = ((yy - 24) ** 2 + (xx - x0 - (4 if value == 2 else -4)) ** 2 <= 9) & (zz < 30)
            labels[head | shaft] = value
    hu = np.where(labels > 0, 900, 40).astype(np.int16)
    image, mask = sitk.GetImageFromArray(hu), sitk.GetImageFromArray(labels)
    for im in (image, mask):
        im.SetSpacing((1.5, 1.5, 2.0))
        im.SetOrigin((-48.0, -36.0, -40.0))
    sitk.WriteImage(image, str(folder / "hip.nii.gz"))
    sitk.WriteImage(mask, str(folder / "mask.nii.gz"))
    return folder / "hip.nii.gz", folder / "mask.nii.gz"


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("femurseg: error: ") and "\n" not in err
    return err


def test_view_writes_one_row_per_femur(tmp_path, capsys) -> None:
    import matplotlib.image as mpimg

    scan, mask = _scan_and_truth(tmp_path)
    assert main(["view", str(mask), "--image", str(scan), "-o", str(tmp_path / "both.png")]) == 0
    assert "right, left" in capsys.readouterr().out
    (tmp_path / "one").mkdir()
    scan_left, mask_left = _scan_and_truth(tmp_path / "one", sides=("left",))
    assert main(["view", str(mask_left), "--image", str(scan_left), "-o", str(tmp_path / "left.png")]) == 0
    both, left = mpimg.imread(tmp_path / "both.png"), mpimg.imread(tmp_path / "left.png")
    assert both.shape[1] == left.shape[1] and both.shape[0] == pytest.approx(2 * left.shape[0], abs=4)
    assert both[..., :3].std() > 0.05  # a picture, not a blank


def test_view_refusals(tmp_path, capsys) -> None:
    scan, mask = _scan_and_truth(tmp_path)
    (tmp_path / "exists.png").write_bytes(b"x")
    assert main(["view", str(mask), "--image", str(scan), "-o", str(tmp_path / "exists.png")]) == 2
    assert "--overwrite" in _one_error_line(capsys)
    assert main(["view", str(mask), "--image", str(scan), "-o", str(tmp_path / "v.jpg")]) == 2
    assert ".png" in _one_error_line(capsys)
    other = sitk.ReadImage(str(mask))
    other.SetOrigin((0.0, 0.0, 0.0))
    sitk.WriteImage(other, str(tmp_path / "shifted.nii.gz"))
    assert main(["view", str(tmp_path / "shifted.nii.gz"), "--image", str(scan), "-o", str(tmp_path / "v.png")]) == 2
    assert "grid" in _one_error_line(capsys)
    empty = sitk.Image(other.GetSize(), sitk.sitkUInt8)
    empty.CopyInformation(sitk.ReadImage(str(scan)))
    sitk.WriteImage(empty, str(tmp_path / "empty.nii.gz"))
    assert main(["view", str(tmp_path / "empty.nii.gz"), "--image", str(scan), "-o", str(tmp_path / "v.png")]) == 2
    assert "no femur label" in _one_error_line(capsys)
    assert not (tmp_path / "v.png").exists() and not (tmp_path / "v.jpg").exists()
    assert (tmp_path / "exists.png").read_bytes() == b"x"


def test_view_does_not_import_torch(tmp_path) -> None:
    scan, mask = _scan_and_truth(tmp_path)
    code = ("import sys; from femurseg.cli.main import main; "
            f"rc = main(['view', {str(mask)!r}, '--image', {str(scan)!r}, '-o', {str(tmp_path / 'v.png')!r}]); "
            "print(rc, 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out[-2:] == ["0", "False"]
