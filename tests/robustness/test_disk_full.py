"""A full disk: every output fails in one line and leaves nothing (a real small tmpfs; skipped where the machine
does not let the tests mount one)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from femurseg.cli.main import main


@pytest.fixture
def small_disk(tmp_path):
    mount = tmp_path / "disk"
    mount.mkdir()
    try:
        proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount)], capture_output=True,
                              timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        pytest.skip("cannot run mount here")
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {proc.stderr.decode(errors='replace').strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True, timeout=20)


def _noise_image(shape=(40, 60, 60)) -> sitk.Image:
    """An image that does not compress (random values): 288 kB of int16, far more than the disk holds."""
    return sitk.GetImageFromArray(np.random.default_rng(0).integers(-1000, 2000, shape).astype(np.int16))


@pytest.mark.parametrize("ending", [".nii.gz", ".nii", ".nrrd", ".mha"])
def test_an_image_that_does_not_fit_fails_and_leaves_nothing(small_disk, ending) -> None:
    from femurseg.errors import InputError
    from femurseg.io import write_image

    with pytest.raises(InputError, match="cannot write"):
        write_image(_noise_image(), small_disk / f"m{ending}")
    assert list(small_disk.iterdir()) == []


def test_evaluate_csv_and_summary_on_a_full_disk(small_disk, tmp_path, capsys) -> None:
    folder = tmp_path / "truth"
    folder.mkdir()
    lab = np.zeros((10, 20, 30), np.uint8)
    lab[2:8, 5:15, 3:10] = 1
    lab[2:8, 5:15, 20:27] = 2
    for i in range(3):
        sitk.WriteImage(sitk.GetImageFromArray(lab), str(folder / f"case{i}.nii.gz"))
    (small_disk / "filler").write_bytes(b"\0" * (60 * 1024))  # leave almost nothing free
    code = main(["evaluate", str(folder), "--truth", str(folder), "-o", str(small_disk / "m.csv"),
                 "--summary", str(small_disk / "s.json")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "cannot write" in err[0], err
    assert sorted(p.name for p in small_disk.iterdir()) == ["filler"]
