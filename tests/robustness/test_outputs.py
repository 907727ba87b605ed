"""Outputs: one atomic writer, modes from the umask, exclusive placement, all-or-nothing, no leftovers on signals."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from femurseg.errors import InputError
from femurseg.io import write_image
from femurseg.atomic import STAGING_PATTERN, transaction, write_text


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def _image() -> sitk.Image:
    return sitk.GetImageFromArray(np.zeros((4, 5, 6), np.uint8))


def test_outputs_take_the_mode_the_umask_asks_for(tmp_path) -> None:
    old = os.umask(0o022)
    try:
        paths = [write_text(tmp_path / "a.csv", "x\n"), write_image(_image(), tmp_path / "m.nii.gz")]
        from femurseg.config import save_json

        paths.append(save_json({"a": 1}, tmp_path / "s.json"))
        for p in paths:
            assert (p.stat().st_mode & 0o777) == 0o644, p
        os.umask(0o077)
        p = write_text(tmp_path / "private.csv", "x\n")
        assert (p.stat().st_mode & 0o777) == 0o600
    finally:
        os.umask(old)
    assert _leftovers(tmp_path) == []


def test_without_overwrite_an_existing_output_is_never_replaced(tmp_path) -> None:
    target = tmp_path / "m.csv"
    with pytest.raises(InputError, match="exists"):
        with transaction(overwrite=False) as tx:
            tx.stage(target).write_text("first")
            target.write_text("another run got there first")  # the race: created after the check
    assert target.read_text() == "another run got there first"
    assert _leftovers(tmp_path) == []


def test_outputs_of_one_invocation_land_together_or_not_at_all(tmp_path) -> None:
    (tmp_path / "b.json").mkdir()  # placing b fails after a was placed
    (tmp_path / "old.csv").write_text("old")
    with pytest.raises(Exception):
        with transaction(overwrite=True) as tx:
            tx.stage(tmp_path / "a.csv").write_text("new a")
            tx.stage(tmp_path / "old.csv").write_text("new")
            staged = tx._folders[tmp_path] / "b.json"
            tx._staged.append((staged, tmp_path / "b.json"))
            staged.write_text("{}")
    assert not (tmp_path / "a.csv").exists()
    assert (tmp_path / "old.csv").read_text() == "old"  # what it replaced is put back
    assert _leftovers(tmp_path) == []


def test_a_long_legal_file_name_still_stages(tmp_path) -> None:
    name = "m" * 248 + ".nii.gz"  # 255 characters, the file system's limit
    assert write_image(_image(), tmp_path / name).name == name


def test_a_failed_write_leaves_nothing(tmp_path) -> None:
    with pytest.raises(RuntimeError):
        with transaction(overwrite=True) as tx:
            tx.stage(tmp_path / "m.csv").write_text("half")
            raise RuntimeError("the summary failed")
    assert list(tmp_path.iterdir()) == []


_CHILD = textwrap.dedent("""
    import signal, sys, time
    from pathlib import Path
    from femurseg.cli import main as m
    from femurseg.atomic import transaction
    signal.signal(signal.SIGTERM, m._on_sigterm)
    try:
        with transaction(overwrite=True) as tx:
            tx.stage(Path(sys.argv[1])).write_bytes(b"x" * 100000)
            print("staged", flush=True)
            time.sleep(60)
    except m.Terminated:
        sys.exit(143)
""")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_a_signal_mid_write_leaves_no_hidden_file(tmp_path, sig) -> None:
    out = tmp_path / "mask.nii.gz"
    child = subprocess.Popen([sys.executable, "-c", _CHILD, str(out)], stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline().strip() == "staged"
    assert any(STAGING_PATTERN.match(n) for n in _leftovers(tmp_path))
    child.send_signal(sig)
    code = child.wait(timeout=30)
    assert not out.exists()
    if sig == signal.SIGTERM:
        assert code == 143 and _leftovers(tmp_path) == []
    else:
        # SIGKILL cannot be caught: the next write into the folder removes the dead run's staging folder.
        time.sleep(0.1)
        write_text(tmp_path / "next.csv", "x\n")
        assert _leftovers(tmp_path) == []


def test_cli_sigterm_exits_143_with_one_line(tmp_path) -> None:
    script = "import time\nfrom femurseg.cli import main as m\nimport femurseg.cli.info as info\n" \
             "info.run = lambda args: time.sleep(60)\nraise SystemExit(m.main(['info', 'x']))\n"
    child = subprocess.Popen([sys.executable, "-c", script], stderr=subprocess.PIPE, text=True)
    time.sleep(3.0)
    child.send_signal(signal.SIGTERM)
    _, err = child.communicate(timeout=30)
    assert child.returncode == 143
    assert err.strip().splitlines() == ["femurseg: terminated"]


@pytest.mark.parametrize("orientation", ["RAS", "LPI", "PIR"])
def test_view_draws_any_stored_orientation_like_lps(tmp_path, orientation) -> None:
    import matplotlib.image as mpimg

    from femurseg.cli.main import main
    from helpers.synthetic import synthetic_hip

    image, truth = synthetic_hip(seed=3)
    pictures = []
    for name, (img, lab) in {"lps": (image, truth), "other": (sitk.DICOMOrient(image, orientation),
                                                             sitk.DICOMOrient(truth, orientation))}.items():
        folder = tmp_path / name
        folder.mkdir()
        sitk.WriteImage(img, str(folder / "hip.nii.gz"))
        sitk.WriteImage(lab, str(folder / "mask.nii.gz"))
        assert main(["view", "--image", str(folder / "hip.nii.gz"), str(folder / "mask.nii.gz"),
                     "-o", str(folder / "v.png")]) == 0
        pictures.append(mpimg.imread(folder / "v.png"))
    assert pictures[0].shape == pictures[1].shape
    assert np.abs(pictures[0] - pictures[1]).mean() < 0.01


def test_evaluate_never_replaces_outputs_without_overwrite(tmp_path, capsys) -> None:
    from femurseg.cli.main import main

    folder = tmp_path / "truth"
    folder.mkdir()
    lab = np.zeros((10, 20, 30), np.uint8)
    lab[2:8, 5:15, 3:10] = 1
    lab[2:8, 5:15, 20:27] = 2
    sitk.WriteImage(sitk.GetImageFromArray(lab), str(folder / "a.nii.gz"))
    out = tmp_path / "m.csv"
    out.write_text("keep")
    assert main(["evaluate", str(folder), "--truth", str(folder), "-o", str(out)]) == 2
    assert out.read_text() == "keep"
    assert "--overwrite" in capsys.readouterr().err
    assert main(["evaluate", str(folder), "--truth", str(folder), "-o", str(out), "--overwrite"]) == 0
    assert out.read_text().startswith("case,side")
    assert _leftovers(tmp_path) == []


def test_a_saved_model_bundle_is_readable_by_colleagues(tmp_path) -> None:
    from femurseg.models.bundle import save_bundle

    from helpers.synthetic import build_tiny_bundles

    old = os.umask(0o022)
    try:
        src = build_tiny_bundles(tmp_path / "tiny")["femur"]
        from femurseg.models.bundle import load_bundle

        b = load_bundle(src)
        out = save_bundle(tmp_path / "copy", model=b.model, config=b.config, preprocessing=b.preprocessing,
                          labels=b.meta["labels"], training={}, metrics={}, name="copy")
    finally:
        os.umask(old)
    for f in out.iterdir():
        assert (f.stat().st_mode & 0o777) == 0o644, f
    assert (out.stat().st_mode & 0o777) == 0o755
