"""fit(): files of a run, the exported bundle, exact resume, data-parallel equivalence."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from femurseg.config import save_json
from femurseg.errors import InputError
from femurseg.models.bundle import load_bundle
from femurseg.training import trainer
from femurseg.training.trainer import LOG_COLUMNS, fit, lr_factor

from .conftest import tiny_config


def _log(run: Path) -> list[dict[str, str]]:
    with (run / "log.csv").open(newline="") as fh:
        return list(csv.DictReader(fh))


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=False)["model"]


@pytest.fixture(scope="module")
def finished_run(tiny_cohort: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("runs") / "a"
    bundle = fit(tiny_config(), data_dir=tiny_cohort, run_dir=run, progress=False)
    assert bundle == run / "model"
    return run


def test_fit_writes_log_config_and_bundle(finished_run: Path) -> None:
    rows = _log(finished_run)
    assert [int(r["step"]) for r in rows] == [1, 2, 3, 4, 5, 6]
    assert tuple(rows[0]) == LOG_COLUMNS
    assert all(float(r["loss"]) > 0 for r in rows)
    assert rows[2]["val_dice_right"] and rows[5]["val_dice"] and not rows[0]["val_dice"]
    assert float(rows[1]["lr"]) == pytest.approx(1e-3)  # warm-up over 2 steps
    meta = json.loads((finished_run / "config.json").read_text())
    assert meta["seed"] == 7 and meta["femurseg_version"] and meta["config"]["steps"] == 6
    assert len(meta["val_cases"]) == 1 and len(meta["train_cases"]) == 2
    bundle = load_bundle(finished_run / "model")
    assert bundle.config == tiny_config().network
    assert bundle.preprocessing == tiny_config().preprocessing
    m = bundle.meta["metrics"]
    assert {"dice_right", "dice_left", "sensitivity_right", "specificity_left", "best_step"} <= set(m)
    assert bundle.meta["training"]["steps"] == 6 and bundle.meta["training"]["device"] == "cpu"
    best = torch.load(finished_run / "checkpoints" / "best.pt", weights_only=False)
    assert best["step"] == m["best_step"]
    for k, v in bundle.model.state_dict().items():
        assert torch.equal(v, best["model"][k])


def test_killed_and_resumed_equals_uninterrupted(finished_run: Path, tiny_cohort: Path, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    run = tmp_path / "b"
    real_step, calls = trainer._train_step, []

    def dying_step(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        calls.append(1)
        if len(calls) == 5:  # dies during step 5: step 4 was done but not checkpointed (every 2)
            raise KeyboardInterrupt
        return real_step(*args, **kwargs)

    monkeypatch.setattr(trainer, "_train_step", dying_step)
    with pytest.raises(KeyboardInterrupt):
        fit(tiny_config(), data_dir=tiny_cohort, run_dir=run, progress=False)
    assert [int(r["step"]) for r in _log(run)] == [1, 2, 3, 4]
    monkeypatch.setattr(trainer, "_train_step", real_step)
    fit(tiny_config(), data_dir=tiny_cohort, run_dir=run, resume=True, progress=False)

    done, resumed = _weights(finished_run / "checkpoints" / "last.pt"), _weights(run / "checkpoints" / "last.pt")
    assert done.keys() == resumed.keys()
    for k in done:
        assert torch.equal(done[k], resumed[k]), k
    a, b = load_bundle(finished_run / "model").model.state_dict(), load_bundle(run / "model").model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    cols = ("step", "lr", "loss", "dice", "l2", "ce", "val_dice")
    assert [[r[c] for c in cols] for r in _log(run)] == [[r[c] for c in cols] for r in _log(finished_run)]


def test_run_folder_rules(finished_run: Path, tiny_cohort: Path, tmp_path: Path) -> None:
    with pytest.raises(InputError, match="not empty"):
        fit(tiny_config(), data_dir=tiny_cohort, run_dir=finished_run, progress=False)
    with pytest.raises(InputError, match="cannot resume with a different configuration.*lr"):
        fit(tiny_config(lr=0.5), data_dir=tiny_cohort, run_dir=finished_run, resume=True, progress=False)
    with pytest.raises(InputError, match="nothing to resume"):
        fit(tiny_config(), data_dir=tiny_cohort, run_dir=tmp_path / "new", resume=True, progress=False)


def test_lr_schedules() -> None:
    kw = dict(steps=100, warmup_steps=10)
    assert lr_factor(0, schedule="poly", **kw) == pytest.approx(0.1)
    assert lr_factor(9, schedule="cosine", **kw) == pytest.approx(1.0)
    assert lr_factor(10, schedule="poly", **kw) == pytest.approx(1.0)
    assert lr_factor(55, schedule="cosine", **kw) == pytest.approx(0.5)
    assert lr_factor(55, schedule="poly", **kw) == pytest.approx(0.5**0.9)
    assert lr_factor(100, schedule="poly", **kw) == 0.0


def test_two_process_ddp_matches_one_process(finished_run: Path, tiny_cohort: Path, tmp_path: Path) -> None:
    """torchrun with 2 gloo processes of 1 patch each trains as 1 process with batch 2."""
    cfg = tmp_path / "cfg.json"
    save_json(tiny_config(), cfg)
    run = tmp_path / "ddp"
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "femurseg", "train", str(tiny_cohort), "-o", str(run), "--config", str(cfg)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    one, two = _log(finished_run), _log(run)
    assert len(one) == len(two) == 6
    for a, b in zip(one, two):
        for c in ("loss", "dice", "l2", "val_dice"):
            if a[c]:
                assert float(b[c]) == pytest.approx(float(a[c]), abs=1e-4), (a["step"], c)
    meta = json.loads((run / "config.json").read_text())
    assert meta["world_size"] == 2
    load_bundle(run / "model")


def test_locator_task_trains_on_whole_scans(tiny_cohort: Path, tmp_path: Path) -> None:
    from dataclasses import replace

    base = tiny_config()
    cfg = base.with_(
        network=replace(base.network, out_channels=3),
        preprocessing=replace(base.preprocessing, task="locate", target_spacing_zyx=(4.0, 4.0, 4.0)),
        steps=2, val_every=2,
    )
    run = tmp_path / "loc"
    fit(cfg, data_dir=tiny_cohort, run_dir=run, progress=False)
    bundle = load_bundle(run / "model")
    assert bundle.preprocessing.task == "locate"
    assert bundle.meta["labels"] == {"background": 0, "right femur": 1, "left femur": 2}
    rows = _log(run)
    assert rows[-1]["val_dice_right"] and rows[-1]["val_dice_left"]


def test_without_validation_the_last_weights_are_exported(tiny_cohort: Path, tmp_path: Path) -> None:
    run = tmp_path / "noval"
    fit(tiny_config(steps=2, val_fraction=0.0), data_dir=tiny_cohort, run_dir=run, progress=False)
    last = _weights(run / "checkpoints" / "last.pt")
    exported = load_bundle(run / "model").model.state_dict()
    assert all(torch.equal(exported[k], last[k]) for k in last)
    assert not (run / "checkpoints" / "best.pt").exists()
    assert json.loads((run / "config.json").read_text())["val_cases"] == []


def test_soft_targets_and_head_sampling_train(tiny_cohort: Path, tmp_path: Path) -> None:
    """A femur run on partial-volume targets with head-centred patches trains, logs a finite loss and says so in
    its bundle; the locator refuses soft targets."""
    run = tmp_path / "soft"
    fit(tiny_config(steps=4, soft_targets=True, head_fraction=0.5, loss="dice_ce"), data_dir=tiny_cohort,
        run_dir=run, progress=False)
    rows = _log(run)
    assert rows and all(np.isfinite(float(r["loss"])) for r in rows)
    meta = load_bundle(run / "model").meta["training"]
    assert meta["soft_targets"] is True and meta["head_fraction"] == 0.5
    from dataclasses import replace

    base = tiny_config()
    for option in ({"soft_targets": True}, {"head_fraction": 0.3}):
        with pytest.raises(InputError, match="for the femur model"):
            base.with_(network=replace(base.network, out_channels=3),
                       preprocessing=replace(base.preprocessing, task="locate"), **option)


def test_evaluate_bundle_reproduces_the_validation_of_the_run(finished_run: Path, tiny_cohort: Path) -> None:
    from femurseg.training.evaluate import evaluate_bundle

    bundle = load_bundle(finished_run / "model")
    meta = json.loads((finished_run / "config.json").read_text())
    result = evaluate_bundle(bundle, data_dir=tiny_cohort, overlap=tiny_config().sw_overlap)
    assert {(r["case"], r["side"]) for r in result.rows} == {(c, s) for c in meta["train_cases"] + meta["val_cases"]
                                                              for s in ("right", "left")}
    for side in ("right", "left"):
        val = [r["dice"] for r in result.rows if r["case"] in meta["val_cases"] and r["side"] == side]
        assert np.mean(val) == pytest.approx(bundle.meta["metrics"][f"dice_{side}"], abs=1e-9)
    assert result.summary["n_cases"] == 3 and all(r["hd95"] >= 0 or np.isnan(r["hd95"]) for r in result.rows)


def test_cli_evaluate_model_mode(finished_run: Path, tiny_cohort: Path, tmp_path: Path, capsys) -> None:
    from femurseg.cli.main import main

    assert main(["evaluate", "--model", str(finished_run / "model"), "--truth", str(tiny_cohort),
                 "-o", str(tmp_path / "m.csv")]) == 0
    assert len((tmp_path / "m.csv").read_text().strip().splitlines()) == 1 + 3 * 2
    assert main(["evaluate", "--truth", str(tiny_cohort)]) == 2
    assert "either PRED_DIR" in capsys.readouterr().err


def test_init_weights_starts_from_a_bundle(finished_run: Path, tiny_cohort: Path, tmp_path: Path) -> None:
    from femurseg.errors import InputError
    from femurseg.models.vnet import VNetConfig

    source = load_bundle(finished_run / "model")
    # One step with a tiny learning rate: the weights stay next to the bundle's, far from a fresh initialisation.
    run = tmp_path / "ft"
    fit(tiny_config(init_weights=str(finished_run / "model"), steps=1, warmup_steps=0, lr=1e-9, val_every=1,
                    checkpoint_every=1), data_dir=tiny_cohort, run_dir=run, progress=False)
    tuned_bundle = load_bundle(run / "model")
    tuned = tuned_bundle.model.state_dict()
    # The bundle records its lineage: the starting bundle's hash, and the steps behind the weights in all.
    lineage = tuned_bundle.meta["training"]["initialised_from"]
    assert lineage["weights_sha256"] == source.meta["weights_sha256"]
    assert lineage["steps_total"] == source.meta["training"]["steps"]
    assert tuned_bundle.meta["training"]["steps_total"] == source.meta["training"]["steps"] + 1
    assert load_bundle(finished_run / "model").meta["training"]["initialised_from"] is None
    fresh = fit(tiny_config(steps=1, warmup_steps=0, lr=1e-9, val_every=1, checkpoint_every=1, seed=99),
                data_dir=tiny_cohort, run_dir=tmp_path / "fresh", progress=False)
    fresh_state = load_bundle(fresh).model.state_dict()
    for k, v in source.model.state_dict().items():
        if v.is_floating_point():
            assert torch.allclose(tuned[k], v, atol=1e-6), k
    assert any(not torch.allclose(fresh_state[k], v, atol=1e-3) for k, v in source.model.state_dict().items()
               if v.is_floating_point())
    with pytest.raises(InputError, match="same architecture"):
        fit(tiny_config(init_weights=str(finished_run / "model"), network=VNetConfig(base_width=2, depth=2,
                        convs_per_stage=(1, 1, 1))), data_dir=tiny_cohort, run_dir=tmp_path / "bad", progress=False)


def test_validation_runs_the_sliding_window_of_inference(finished_run: Path, tiny_cohort: Path, monkeypatch) -> None:
    """Training's validation and ``femurseg segment`` share one implementation of the windows."""
    import femurseg.models.window as window
    from femurseg.models.bundle import load_bundle
    from femurseg.training.data import find_cases, prepare_volumes
    from femurseg.training.evaluate import predict_volume

    bundle = load_bundle(finished_run / "model")
    pre = bundle.preprocessing
    vol = prepare_volumes(find_cases(tiny_cohort)[:1], preprocessing=pre, context_mm=0.0)[0]
    calls = []
    original = window.sliding_window_probabilities

    def spy(model, volume, *, options, device, **kw):
        calls.append(options)
        return original(model, volume, options=options, device=device, **kw)

    monkeypatch.setattr(window, "sliding_window_probabilities", spy)
    pred, target = predict_volume(bundle.model, vol, preprocessing=pre, device=torch.device("cpu"), overlap=0.5)
    assert len(calls) == 1
    assert calls[0].patch_size_zyx == tuple(pre.inference_window_zyx) and calls[0].overlap == 0.5
    assert pred.shape == target.shape and set(np.unique(pred)) <= {0, 1}
