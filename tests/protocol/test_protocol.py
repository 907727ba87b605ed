"""``femurseg protocol --profile tiny`` end to end: splits, units, selection, hold-out, report; resume; refusals."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from femurseg.cli.main import main


def _config(tmp_path: Path, tiny_bundles) -> Path:
    """A training recipe with the tiny femur bundle's network and preprocessing, light on CPU."""
    from femurseg.config import save_json, to_dict
    from femurseg.models.bundle import load_bundle
    from femurseg.training.config import TrainConfig

    b = load_bundle(tiny_bundles["femur"], device="cpu")
    cfg = TrainConfig(network=b.config, preprocessing=b.preprocessing, batch_size=1, device="cpu", num_threads=1,
                      amp=False)
    path = tmp_path / "tiny.json"
    save_json(to_dict(cfg), path)
    return path


def _argv(cohort: Path, run: Path, config: Path, tiny_bundles, *extra: str) -> list[str]:
    return ["protocol", str(cohort), "-o", str(run), "--profile", "tiny", "--config", str(config),
            "--init", str(tiny_bundles["femur"]), "--locator", str(tiny_bundles["locate"]),
            "--cohorts", "all,male,female", *extra]


@pytest.fixture(scope="module")
def finished(hip_cohort, tiny_bundles, tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("protocol")
    run = tmp / "run"
    assert main(_argv(hip_cohort, run, _config(tmp, tiny_bundles), tiny_bundles)) == 0
    return run


def test_tiny_protocol_runs_every_unit_and_writes_the_report(finished: Path) -> None:
    splits = json.loads((finished / "splits.json").read_text())
    assert len(splits["holdout"]) == 2 and set(splits["cohorts"]) == {"all", "male", "female"}
    for cohort in ("all", "male", "female"):
        for k in range(2):
            unit = finished / "units" / cohort / "l2_lambda=1e-05" / f"fold{k}"
            done = json.loads((unit / "done.json").read_text())
            assert done["steps"] == 2 and done["eval_cases"] == len(splits["cohorts"][cohort]["folds"][k])
            assert sorted(p.name for p in (unit / "predictions").iterdir()) == sorted(
                f"{c}.nii.gz" for c in splits["cohorts"][cohort]["folds"][k])
        final = finished / "units" / cohort / "final"
        assert (final / "done.json").is_file()
        model = json.loads((final / "train" / "model" / "model.json").read_text())
        assert sorted(model["training"]["train_cases"]) == splits["cohorts"][cohort]["train"]  # never the hold-out
        assert model["training"]["val_cases"] == []
        assert model["qc_limits"]["head_radius_mm"] == [7.0, 14.0]  # kept from the fine-tuned bundle
    report = finished / "report"
    page = (report / "index.html").read_text()
    assert "0.9815" in page and "data:image/png;base64," in page and "Men against women" in page
    md = (report / "report.md").read_text()
    for fig in ("volume_regression.png", "bland_altman.png", "dice.png", "learning_curves.png",
                "overlay_best.png", "overlay_median.png", "overlay_worst.png"):
        assert f"figures/{fig}" in md and (report / "figures" / fig).stat().st_size > 1000
    summary = json.loads((report / "summary.json").read_text())
    hold = summary["cohorts"]["all"]["holdout"]["dice"]
    assert hold["n"] >= 3 and 0.0 <= hold["mean"] <= 1.0
    assert (finished / "command.txt").read_text().startswith("femurseg protocol")


def test_a_killed_protocol_resumes_without_repeating_finished_units(finished: Path, hip_cohort, tiny_bundles,
                                                                     tmp_path, monkeypatch) -> None:
    import shutil

    import femurseg.training.trainer as trainer

    run = tmp_path / "run"
    shutil.copytree(finished, run)
    before = json.loads((run / "report" / "summary.json").read_text())
    # "Killed" during the last fold of the women's experiment: its done.json, its predictions and the report gone.
    unit = run / "units" / "female" / "l2_lambda=1e-05" / "fold1"
    (unit / "done.json").unlink()
    shutil.rmtree(unit / "predictions")
    shutil.rmtree(run / "report")
    (run / "units" / "female" / "final" / "done.json").unlink()
    calls = []
    real_fit = trainer.fit

    def counting_fit(config, **kw):  # noqa: ANN001, ANN202
        calls.append(kw["run_dir"])
        return real_fit(config, **kw)

    monkeypatch.setattr(trainer, "fit", counting_fit)
    config = Path(tmp_path / "cfg.json")
    shutil.copy(finished / "config.json", config)
    assert main(_argv(hip_cohort, run, config, tiny_bundles, "--resume")) == 0
    assert calls == []  # the models were trained: only segmenting and scoring were left to do
    after = json.loads((run / "report" / "summary.json").read_text())
    assert after["cohorts"] == before["cohorts"]


def test_refusals_are_one_line(finished: Path, hip_cohort, tiny_bundles, tmp_path, capsys) -> None:
    config = _config(tmp_path, tiny_bundles)
    assert main(_argv(hip_cohort, finished, config, tiny_bundles)) == 2  # a protocol run, without --resume
    assert "--resume" in capsys.readouterr().err
    assert main(_argv(hip_cohort, finished, config, tiny_bundles, "--resume", "--folds", "3")) == 2
    assert "differs" in capsys.readouterr().err
    no_sex = tmp_path / "nosex"
    import shutil

    shutil.copytree(hip_cohort, no_sex)
    (no_sex / "cohort.csv").unlink()
    assert main(_argv(no_sex, tmp_path / "r2", config, tiny_bundles)) == 2
    err = capsys.readouterr().err
    assert "sex column" in err and len(err.strip().splitlines()) == 1
    assert main(_argv(hip_cohort, tmp_path / "r3", config, tiny_bundles, "--grid", "beta=1")) == 2
