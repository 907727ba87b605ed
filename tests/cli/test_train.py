"""``femurseg train``: trains from the command line; one-line errors with exit code 2."""

from __future__ import annotations

from pathlib import Path

import pytest

from femurseg.cli.main import main
from femurseg.config import save_json

from training.conftest import tiny_config, write_cohort


def test_missing_data_dir(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["train", str(tmp_path / "nope"), "-o", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("femurseg: error: ") and "no such folder" in err and err.count("\n") == 1
    assert not (tmp_path / "run").exists()


def test_bad_config_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_cohort(tmp_path / "c", 2)
    (tmp_path / "cfg.json").write_text('{"lr": "fast"}')
    assert main(["train", str(tmp_path / "c"), "-o", str(tmp_path / "run"), "--config", str(tmp_path / "cfg.json")]) == 2
    err = capsys.readouterr().err
    assert "lr: expected a number" in err and err.count("\n") == 1


def test_train_and_resume(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = write_cohort(tmp_path / "c", 2)
    save_json(tiny_config(steps=4, val_fraction=0.5), tmp_path / "cfg.json")
    run = tmp_path / "run"
    assert main(["train", str(data), "-o", str(run), "--config", str(tmp_path / "cfg.json"), "--steps", "2"]) == 0
    out = capsys.readouterr().out
    assert f"model: {run / 'model'}" in out and "validation Dice: right" in out
    assert (run / "model" / "model.json").is_file()
    # Resuming a finished run with more steps changes the schedule: refused, with the reason.
    assert main(["train", str(data), "-o", str(run), "--resume", "--steps", "3"]) == 2
    assert "steps changed" in capsys.readouterr().err
    assert main(["train", str(data), "-o", str(run), "--resume"]) == 0  # the run's own config.json
