"""Model bundles: round trip, metadata, atomic replacement, and every refused corruption."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

import femurseg
from femurseg.errors import InputError, ModelError
from femurseg.models import bundle as bundle_mod
from femurseg.models.bundle import Bundle, bundled_model_path, load_bundle, save_bundle
from femurseg.models.preprocessing import Preprocessing
from femurseg.models.vnet import VNetConfig, build_vnet

TINY = VNetConfig(base_width=4, depth=2, convs_per_stage=(1, 1, 1), kernel_size=3)
PRE = Preprocessing(target_spacing_zyx=(1.0, 0.8, 0.8), patch_size_zyx=(32, 32, 32))
LABELS = {"background": 0, "femur": 1}


def _save(path: Path, config: VNetConfig = TINY, seed: int = 0, **kwargs) -> torch.nn.Module:
    model = build_vnet(config, seed=seed)
    args = dict(model=model, config=config, preprocessing=PRE, labels=LABELS,
                training={"cases": 3, "steps": np.int64(10), "device": "cpu", "run": Path("/tmp/run")},
                metrics={"dice_right": np.float32(0.5), "sensitivity": float("nan")}, name="tiny")
    args.update(kwargs)
    save_bundle(path, **args)
    return model


@pytest.fixture()
def saved(tmp_path: Path) -> tuple[Path, torch.nn.Module]:
    path = tmp_path / "model"
    return path, _save(path)


def test_round_trip_gives_identical_outputs(saved: tuple[Path, torch.nn.Module]) -> None:
    path, model = saved
    assert sorted(p.name for p in path.iterdir()) == ["model.json", "model.safetensors"]
    state = torch.get_rng_state()
    b = load_bundle(path)
    assert torch.equal(torch.get_rng_state(), state), "loading must not consume the global RNG"
    assert isinstance(b, Bundle) and b.config == TINY and b.preprocessing == PRE and b.path == path
    assert not b.model.training
    x = torch.randn(2, 1, 16, 16, 16)
    with torch.no_grad():
        assert torch.equal(model.eval()(x), b.model(x))


def test_round_trip_with_batch_norm_buffers(tmp_path: Path) -> None:
    cfg = VNetConfig(base_width=4, depth=1, convs_per_stage=(1, 1), kernel_size=3, norm="batch")
    model = build_vnet(cfg, seed=1)
    model(torch.randn(2, 1, 8, 8, 8))  # training-mode pass updates running statistics
    save_bundle(tmp_path / "b", model=model, config=cfg, preprocessing=PRE, labels=LABELS, training={},
                metrics={}, name="bn")
    b = load_bundle(tmp_path / "b")
    x = torch.randn(1, 1, 8, 8, 8)
    with torch.no_grad():
        assert torch.equal(model.eval()(x), b.model(x))


def test_model_json_contents(saved: tuple[Path, torch.nn.Module]) -> None:
    path, _ = saved
    meta = json.loads((path / "model.json").read_text())
    assert meta["format_version"] == 1 and meta["name"] == "tiny"
    assert meta["femurseg_version"] == femurseg.__version__
    assert meta["created"][:4].isdigit() and "T" in meta["created"]
    assert meta["architecture"]["convs_per_stage"] == [1, 1, 1]
    assert meta["preprocessing"]["target_spacing_zyx"] == [1.0, 0.8, 0.8]
    assert meta["labels"] == LABELS
    assert meta["training"] == {"cases": 3, "steps": 10, "device": "cpu", "run": "/tmp/run"}
    assert meta["metrics"] == {"dice_right": 0.5, "sensitivity": None}  # strict JSON: NaN becomes null
    assert meta["weights_sha256"] == hashlib.sha256((path / "model.safetensors").read_bytes()).hexdigest()
    assert load_bundle(path / "model.json").meta == meta


def test_save_unwraps_compiled_or_parallel_wrappers(tmp_path: Path) -> None:
    class Wrapper(torch.nn.Module):  # stands in for DistributedDataParallel (holds the net as .module)
        def __init__(self, module: torch.nn.Module) -> None:
            super().__init__()
            self.module = module

    model = build_vnet(TINY, seed=3)
    save_bundle(tmp_path / "w", model=Wrapper(model), config=TINY, preprocessing=PRE, labels=LABELS,
                training={}, metrics={}, name="w")
    loaded = load_bundle(tmp_path / "w").model
    for (k, v), (k2, v2) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert k == k2 and torch.equal(v, v2)


def test_save_replaces_an_old_bundle_but_not_other_folders(saved: tuple[Path, torch.nn.Module], tmp_path: Path) -> None:
    path, _ = saved
    new = _save(path, seed=5)
    b = load_bundle(path)
    assert torch.equal(b.model.head.weight, new.head.weight)
    assert [p.name for p in tmp_path.iterdir()] == ["model"], "no temporary folders left behind"
    other = tmp_path / "results"
    other.mkdir()
    (other / "notes.txt").write_text("keep me")
    with pytest.raises(InputError, match="refusing"):
        _save(other)
    assert (other / "notes.txt").read_text() == "keep me"
    (tmp_path / "afile").write_text("x")
    with pytest.raises(InputError, match="not a folder"):
        _save(tmp_path / "afile")


def test_failed_save_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(bundle_mod, "_sha256", broken)
    with pytest.raises(OSError, match="disk full"):
        _save(tmp_path / "model")
    assert list(tmp_path.iterdir()) == []


def test_save_refuses_model_that_does_not_fit_config(tmp_path: Path) -> None:
    model = build_vnet(TINY, seed=0)
    with pytest.raises(ModelError, match="does not match its VNetConfig"):
        save_bundle(tmp_path / "m", model=model, config=VNetConfig(base_width=8, depth=2, convs_per_stage=(1, 1, 1),
                    kernel_size=3), preprocessing=PRE, labels=LABELS, training={}, metrics={}, name="x")
    with pytest.raises(InputError, match="cannot be stored"):
        _save(tmp_path / "m", training={"obj": object()})
    assert not (tmp_path / "m").exists()


def _rewrite_meta(path: Path, **changes) -> None:
    meta = json.loads((path / "model.json").read_text())
    meta.update(changes)
    (path / "model.json").write_text(json.dumps(meta))


def _swap_weights(path: Path, config: VNetConfig) -> None:
    """Replace the weights by another architecture's, with a consistent sha256 (only the architecture is wrong)."""
    save_file({k: v.contiguous() for k, v in build_vnet(config, seed=0).state_dict().items()},
              str(path / "model.safetensors"))
    _rewrite_meta(path, weights_sha256=hashlib.sha256((path / "model.safetensors").read_bytes()).hexdigest())


CORRUPTIONS = {
    "missing folder": (lambda p: p.rename(p.with_name("elsewhere")), "no such model bundle folder"),
    "missing json": (lambda p: (p / "model.json").unlink(), "model.json is missing"),
    "missing weights": (lambda p: (p / "model.safetensors").unlink(), "model.safetensors is missing"),
    "bad json": (lambda p: (p / "model.json").write_text("{not json"), "not valid JSON"),
    "json not an object": (lambda p: (p / "model.json").write_text("[1, 2]"), "expected a JSON object"),
    "unknown format version": (lambda p: _rewrite_meta(p, format_version=2), "unsupported bundle format_version 2"),
    "no format version": (lambda p: _rewrite_meta(p, format_version=None), "unsupported bundle format_version"),
    "missing key": (lambda p: _drop(p, "architecture"), "'architecture'"),
    "modified weights": (lambda p: _flip_byte(p / "model.safetensors", -3), "weights were modified or corrupted"),
    "truncated weights": (lambda p: _truncate(p / "model.safetensors"), "weights were modified or corrupted"),
    "bad architecture": (lambda p: _rewrite_meta(p, architecture={"depth": "two"}), "architecture.depth"),
    "architecture vs weights": (lambda p: _rewrite_meta(p, architecture={**_arch(p), "base_width": 8}),
                                "does not match the weights"),
    "weights of another net": (lambda p: _swap_weights(p, VNetConfig(base_width=4, depth=1, convs_per_stage=(1, 1),
                                                                        kernel_size=3)), "does not match the weights"),
    "bad preprocessing": (lambda p: _rewrite_meta(p, preprocessing={"hu_window": [5, 1]}), "hu_window"),
}


def _drop(path: Path, key: str) -> None:
    meta = json.loads((path / "model.json").read_text())
    del meta[key]
    (path / "model.json").write_text(json.dumps(meta))


def _arch(path: Path) -> dict:
    return json.loads((path / "model.json").read_text())["architecture"]


def _flip_byte(path: Path, index: int) -> None:
    data = bytearray(path.read_bytes())
    data[index] ^= 0xFF
    path.write_bytes(bytes(data))


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:-100])


@pytest.mark.parametrize("case", list(CORRUPTIONS))
def test_corrupt_bundle_raises_model_error(saved: tuple[Path, torch.nn.Module], case: str) -> None:
    path, _ = saved
    corrupt, message = CORRUPTIONS[case]
    corrupt(path)
    with pytest.raises(ModelError, match=message) as info:
        load_bundle(path)
    assert "\n" not in str(info.value)


def test_unreadable_weights_with_matching_hash(saved: tuple[Path, torch.nn.Module]) -> None:
    """A file that is not safetensors at all (but whose hash was updated) is refused, not crashed on."""
    path, _ = saved
    (path / "model.safetensors").write_bytes(b"\x00" * 64)
    _rewrite_meta(path, weights_sha256=hashlib.sha256(b"\x00" * 64).hexdigest())
    with pytest.raises(ModelError, match="unreadable weights"):
        load_bundle(path)


@pytest.mark.parametrize("device", ["nonsense", "cuda:99"])
def test_unavailable_device_is_an_input_error(saved: tuple[Path, torch.nn.Module], device: str) -> None:
    path, _ = saved
    with pytest.raises(InputError, match="is not available here"):
        load_bundle(path, device=device)


def test_weights_are_plain_safetensors(saved: tuple[Path, torch.nn.Module]) -> None:
    path, model = saved
    state = load_file(str(path / "model.safetensors"))
    assert set(state) == set(model.state_dict())


@pytest.mark.parametrize("kind, classes", [("femur", 2), ("locate", 3)])
def test_bundled_model_path_is_a_bundle_or_a_clear_error(kind: str, classes: int) -> None:
    try:
        path = bundled_model_path(kind)
    except ModelError as err:
        assert f"no {kind} model is bundled" in str(err)
    else:
        bundle = load_bundle(path)
        assert bundle.config.out_channels == classes and bundle.preprocessing.task == kind
