"""``femurseg phantom``: writes the cohort folder and a preview; bad options exit 2 with one line."""

from __future__ import annotations

from pathlib import Path

import matplotlib.image
import pytest

from femurseg.cli.main import main

FAST = ["--spacing", "3", "3", "3", "--matrix", "128", "--no-progress"]


def test_writes_cohort_and_preview(tmp_path: Path, capsys) -> None:
    out = tmp_path / "cohort"
    assert main(["phantom", "-n", "1", "-o", str(out), "--seed", "4", "--preview", *FAST]) == 0
    assert (out / "images" / "phantom_0000.nii.gz").is_file()
    assert (out / "labels" / "phantom_0000.nii.gz").is_file()
    assert (out / "cohort.csv").read_text().count("\n") == 2
    png = out / "preview.png"
    picture = matplotlib.image.imread(png)
    assert picture.ndim == 3 and picture.shape[0] > 200 and picture.shape[1] > 400
    assert picture[..., :3].std() > 0.05  # not blank
    assert "preview" in capsys.readouterr().out


@pytest.mark.parametrize("argv,message", [
    (["-n", "0"], "-n"),
    (["-n", "-3"], "-n"),
    (["-n", "1", "--seed", "-1"], "seed"),
    (["-n", "2", "--cohort", "paper"], "397"),
    (["-n", "1", "--femur-mesh", "/no/such/femur.stl"], "mesh"),
    (["-n", "1", "--mesh-scale", "0"], "scale"),
])
def test_bad_options_exit_2_with_one_line(tmp_path: Path, capsys, argv, message) -> None:
    assert main(["phantom", "-o", str(tmp_path / "c"), *argv, *FAST]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("femurseg: error:") and message in err[0]


def test_unwritable_output_exits_2(tmp_path: Path, capsys) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert main(["phantom", "-n", "1", "-o", str(blocker / "out"), *FAST]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and ("cannot write" in err[0] or "does not exist" in err[0])
    assert blocker.read_text() == "x"


def _mesh(name: str) -> str:
    from importlib import resources

    return str(resources.files("femurseg") / "resources" / "meshes" / name)


def test_femur_mesh_passes_through_to_the_anatomy(tmp_path: Path) -> None:
    out = tmp_path / "m"
    argv = ["phantom", "-n", "1", "-o", str(out), "--seed", "2", "--femur-mesh",
            _mesh("opensim_gait2392_femur_l_mm.ply"), "--mesh-side", "left", *FAST]
    assert main(argv) == 0
    meta = (out / "phantom.json").read_text()
    assert "opensim_gait2392_femur_l_mm.ply" in meta and '"mesh_side": "left"' in meta
    assert (out / "labels" / "phantom_0000.nii.gz").is_file()


def test_recon_circle_option_reaches_the_scan(tmp_path: Path) -> None:
    import json

    for choice, expected in (("yes", True), ("no", False)):
        out = tmp_path / choice
        assert main(["phantom", "-n", "1", "-o", str(out), "--seed", "4", "--recon-circle", choice, *FAST]) == 0
        assert json.loads((out / "facts" / "phantom_0000.json").read_text())["recon_circle"] is expected
        assert f'"recon_circle": {str(expected).lower()}' in (out / "phantom.json").read_text()
