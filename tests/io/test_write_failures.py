"""A failed write_image raises InputError and leaves nothing behind."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

import femurseg.io.write as write_module
from femurseg.errors import InputError
from femurseg.io import write_image


def _image(size: tuple[int, int, int] = (4, 3, 2)) -> sitk.Image:
    return sitk.GetImageFromArray(np.arange(np.prod(size), dtype=np.int16).reshape(size[::-1]))


def test_unknown_extension(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"unknown file type.*\.nii\.gz"):
        write_image(_image(), tmp_path / "scan.png")
    with pytest.raises(InputError, match="unknown file type"):
        write_image(_image(), tmp_path / "scan")
    assert list(tmp_path.iterdir()) == []


def test_mismatching_reference_leaves_no_file(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"size \(4, 3, 2\) does not match the reference's \(4, 3, 3\)"):
        write_image(_image(), tmp_path / "mask.nii.gz", reference=_image((4, 3, 3)))
    assert list(tmp_path.iterdir()) == []


def test_parent_is_a_file(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(InputError, match="cannot write"):
        write_image(_image(), tmp_path / "notes.txt" / "scan.mha")
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]


def test_path_is_a_folder(tmp_path: Path) -> None:
    (tmp_path / "out.nrrd").mkdir()
    with pytest.raises(InputError, match="is a folder"):
        write_image(_image(), tmp_path / "out.nrrd")


@pytest.mark.parametrize("name", ["scan.nii.gz", "scan.mhd"])
def test_writer_failure_midway_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    real_write = sitk.WriteImage

    def half_write(image: sitk.Image, path: str, useCompression: bool = False) -> None:
        real_write(image, path, useCompression=useCompression)
        with open(path, "r+b") as fh:  # the disk fills up: a truncated file, then an error
            fh.truncate(10)
        raise RuntimeError("Exception thrown in SimpleITK ImageFileWriter_Execute: No space left on device")

    monkeypatch.setattr(write_module.sitk, "WriteImage", half_write)
    with pytest.raises(InputError, match="No space left on device"):
        write_image(_image(), tmp_path / name)
    assert list(tmp_path.iterdir()) == []


def test_rename_failure_removes_placed_data_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_replace = write_module.os.replace

    def replace(src: str, dst: str) -> None:
        if str(dst).endswith(".mhd"):
            raise PermissionError(13, "Permission denied")
        real_replace(src, dst)

    monkeypatch.setattr(write_module.os, "replace", replace)
    with pytest.raises(InputError, match="Permission denied"):
        write_image(_image(), tmp_path / "scan.mhd")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("name", ["mask.nii.gz", "mask.nii", "mask.nrrd", "mask.mhd"])
def test_a_silent_short_write_is_caught_and_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                          name: str) -> None:
    """A full disk under the NIfTI writer: a truncated file and NO error; it must not become the output."""
    real_write = sitk.WriteImage

    def short_write(image: sitk.Image, path: str, useCompression: bool = False) -> None:
        real_write(image, path, useCompression=useCompression)
        data = max(Path(path).parent.iterdir(), key=lambda p: p.stat().st_size)  # the file holding the voxels
        with open(data, "r+b") as fh:
            fh.truncate(data.stat().st_size * 2 // 3)

    monkeypatch.setattr(write_module.sitk, "WriteImage", short_write)
    with pytest.raises(InputError, match="disk full"):
        write_image(_image(), tmp_path / name)
    assert list(tmp_path.iterdir()) == []
