"""TrainConfig: JSON round trip, run config.json reading, refused combinations."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from femurseg.errors import InputError
from femurseg.models.vnet import VNetConfig
from femurseg.training.config import AugmentationConfig, TrainConfig, load_train_config, save_train_config


def test_json_round_trip(tmp_path: Path) -> None:
    cfg = TrainConfig(lr=3e-4, schedule="cosine", val_cases=("a", "b"),
                      augmentation=replace(AugmentationConfig(), gamma=(0.8, 1.2)))
    save_train_config(cfg, tmp_path / "c.json")
    assert load_train_config(tmp_path / "c.json") == cfg
    (tmp_path / "partial.json").write_text('{"steps": 10}')
    assert load_train_config(tmp_path / "partial.json") == TrainConfig(steps=10)


def test_reads_a_run_config_json(tmp_path: Path) -> None:
    from femurseg.config import to_dict

    cfg = TrainConfig(steps=17)
    (tmp_path / "config.json").write_text(json.dumps({"femurseg_version": "0.1.0", "seed": 0, "config": to_dict(cfg)}))
    assert load_train_config(tmp_path / "config.json") == cfg


@pytest.mark.parametrize("text, message", [
    ('{"optimizer": "adam"}', "optimizer"),
    ('{"stepz": 3}', "unknown key"),
    ('{"l2_lambda": 1e-5, "weight_decay": 0.01}', "either l2_lambda"),
    ('{"preprocessing": {"patch_size_zyx": [90, 96, 96]}}', "divisible"),
    ('{"network": {"out_channels": 3}}', "out_channels must be 2"),
    ('{"augmentation": {"p_noise": 2}}', "p_noise"),
])
def test_refused(tmp_path: Path, text: str, message: str) -> None:
    (tmp_path / "c.json").write_text(text)
    with pytest.raises(InputError, match=message):
        load_train_config(tmp_path / "c.json")


def test_with_validates() -> None:
    assert TrainConfig().with_(steps=5).steps == 5
    with pytest.raises(InputError, match="steps"):
        TrainConfig().with_(steps=0)
    assert TrainConfig().network == VNetConfig(base_width=8)


DOC_CONFIGS = sorted((Path(__file__).resolve().parents[2] / "docs" / "configs").glob("*.json"))


@pytest.mark.parametrize("path", DOC_CONFIGS, ids=[p.stem for p in DOC_CONFIGS])
def test_documented_configs_load(path: Path) -> None:
    """Every configuration the model card and docs cite to reproduce a run is a valid TrainConfig today."""
    config = load_train_config(path)
    assert config.steps > 0
    assert config.network.out_channels == (2 if config.preprocessing.task == "femur" else 3)


def test_documented_configs_found() -> None:
    assert len(DOC_CONFIGS) >= 10  # the folder moved or the glob broke: the test above would pass vacuously
