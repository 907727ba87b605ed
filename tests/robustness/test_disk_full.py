"""A full disk and a read-only one: every output fails in one line and leaves nothing (real small tmpfs mounts;
skipped where the machine does not let the tests mount one).  A read-only file system refuses root too, so these
cases hold whoever runs the tests."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from femurseg.cli.main import main


def _mount(mount: Path, options: str):
    mount.mkdir()
    try:
        proc = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(mount)], capture_output=True,
                              timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        pytest.skip("cannot run mount here")
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {proc.stderr.decode(errors='replace').strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True, timeout=20)


@pytest.fixture
def small_disk(tmp_path):
    yield from _mount(tmp_path / "disk", "size=64k")


@pytest.fixture
def read_only_disk(tmp_path):
    yield from _mount(tmp_path / "ro", "ro,size=64k")


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


def _scan(path: Path) -> Path:
    arr = np.full((20, 40, 40), -1000, np.int16)
    arr[:, 5:35, 5:35] = 40
    img = sitk.GetImageFromArray(arr)
    img.SetSpacing((1.0, 1.0, 2.0))
    sitk.WriteImage(img, str(path))
    return path


@pytest.mark.parametrize("verb", ["segment", "view", "evaluate", "phantom"])
def test_outputs_into_a_read_only_folder_fail_in_one_line_before_the_work(read_only_disk, tmp_path, capsys,
                                                                          verb) -> None:
    scan = _scan(tmp_path / "s.nii.gz")
    lab = np.zeros((20, 40, 40), np.uint8)
    lab[5:15, 10:20, 5:15] = 1
    mask = tmp_path / "m.nii.gz"
    ref = sitk.ReadImage(str(scan))
    lab_img = sitk.GetImageFromArray(lab)
    lab_img.CopyInformation(ref)
    sitk.WriteImage(lab_img, str(mask))
    truth = tmp_path / "truth"
    truth.mkdir()
    sitk.WriteImage(lab_img, str(truth / "a.nii.gz"))
    argv = {
        "segment": ["segment", str(scan), "-o", str(read_only_disk / "m.nii.gz")],
        "view": ["view", str(mask), "--image", str(scan), "-o", str(read_only_disk / "v.png")],
        "evaluate": ["evaluate", str(truth), "--truth", str(truth), "-o", str(read_only_disk / "m.csv")],
        "phantom": ["phantom", "-n", "1", "-o", str(read_only_disk / "cohort"), "--no-progress"],
    }[verb]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    errors = [ln for ln in err if ln.startswith("femurseg: error:")]
    assert len(errors) == 1 and "Traceback" not in "\n".join(err), err
    assert "read-only" in errors[0].lower() or "cannot write" in errors[0], errors[0]
    assert list(read_only_disk.iterdir()) == []
