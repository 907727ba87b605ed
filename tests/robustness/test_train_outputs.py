"""``femurseg train`` that fails early leaves no run folder, so the same command can simply be run again."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import SimpleITK as sitk

from femurseg.cli.main import main


def _unsided_cohort(root: Path, n: int = 3) -> Path:
    """Cases whose label maps mark both femurs with 1 (an unsided "femur" label)."""
    for sub in ("images", "labels"):
        (root / sub).mkdir(parents=True)
    for i in range(n):
        arr = np.full((20, 30, 60), -1000, np.int16)
        arr[:, 5:25, 5:55] = 40
        lab = np.zeros(arr.shape, np.uint8)
        lab[4:16, 10:20, 10:20] = 1
        lab[4:16, 10:20, 40:50] = 1
        arr[lab > 0] = 700
        for sub, a in (("images", arr), ("labels", lab)):
            img = sitk.GetImageFromArray(a)
            img.SetSpacing((1.5, 1.5, 2.0))
            sitk.WriteImage(img, str(root / sub / f"case{i:03d}.nii.gz"))
    return root


def test_a_train_failing_on_its_data_leaves_nothing_and_reruns_the_same(tmp_path, capsys) -> None:
    cohort = _unsided_cohort(tmp_path / "c")
    run = tmp_path / "run"
    for _ in range(2):
        assert main(["train", str(cohort), "-o", str(run), "--steps", "1"]) == 2
        err = capsys.readouterr().err
        errors = [ln for ln in err.splitlines() if ln.startswith("femurseg: error:")]
        assert len(errors) == 1 and "unsided" in errors[0] and "Traceback" not in err
        assert not run.exists()
