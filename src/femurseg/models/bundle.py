"""Model bundles: a folder holding ``model.safetensors`` (the weights) and ``model.json`` (everything else).

``model.json`` (format version 1) holds::

    format_version    1
    name              a short name of the model
    femurseg_version  the femurseg that wrote it
    created           ISO 8601 date and time (UTC)
    architecture      the VNetConfig, as a dictionary
    preprocessing     the Preprocessing, as a dictionary
    labels            label name -> value of the output the model stands for
    training          training summary (cases, steps, time, device, ...)
    metrics           validation metrics
    weights_sha256    SHA-256 of model.safetensors, so modified or truncated weights are refused

Weights are stored with safetensors (no pickle: loading a bundle never runs code).  A bundle is written to a
temporary folder beside its target and renamed into place, so a reader never sees a half-written bundle.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import hashlib
import json
import logging
import math
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from femurseg.config import from_dict, to_dict
from femurseg.errors import FemursegError, InputError, ModelError
from femurseg.models.preprocessing import Preprocessing
from femurseg.models.vnet import VNet, VNetConfig

__all__ = ["FORMAT_VERSION", "WEIGHTS_FILE", "META_FILE", "Bundle", "save_bundle", "load_bundle", "bundled_model_path"]

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
WEIGHTS_FILE = "model.safetensors"
META_FILE = "model.json"
_BUNDLE_FILES = {WEIGHTS_FILE, META_FILE}


@dataclasses.dataclass(frozen=True)
class Bundle:
    """A loaded model bundle.

    Attributes
    ----------
    model : VNet
        The network, in eval mode, on the requested device.
    config : VNetConfig
        Its architecture.
    preprocessing : Preprocessing
        How scans must be prepared for it.
    meta : dict
        The whole ``model.json``.
    path : Path
        The bundle folder.
    """

    model: VNet
    config: VNetConfig
    preprocessing: Preprocessing
    meta: dict
    path: Path


def _unwrap(model: nn.Module) -> nn.Module:
    # DistributedDataParallel keeps the net in .module, torch.compile in ._orig_mod.
    while True:
        if hasattr(model, "_orig_mod") and isinstance(model._orig_mod, nn.Module):
            model = model._orig_mod
        elif isinstance(getattr(model, "module", None), nn.Module):
            model = model.module
        else:
            return model


def _jsonable(value: Any, key: str) -> Any:
    """Plain JSON data from dictionaries of numbers, strings, numpy scalars/arrays, Paths; NaN/inf become null."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v, f"{key}.{k}") for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v, key) for v in value]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _jsonable(to_dict(value), key)
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, torch.Tensor) or type(value).__module__ == "numpy":
        return _jsonable(value.tolist(), key)
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if value is None or isinstance(value, (bool, int, str)):
        return value
    raise InputError(f"save_bundle: {key} holds a {type(value).__name__}, which cannot be stored in model.json")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _compare_state(expected: dict[str, torch.Size], got: dict[str, torch.Size]) -> str | None:
    """One line describing how two {name: shape} maps differ, or None if they agree."""
    missing = sorted(set(expected) - set(got))
    unexpected = sorted(set(got) - set(expected))
    shapes = sorted(k for k in set(expected) & set(got) if tuple(expected[k]) != tuple(got[k]))
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing tensor(s), e.g. {missing[0]}")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected tensor(s), e.g. {unexpected[0]}")
    if shapes:
        k = shapes[0]
        parts.append(f"{len(shapes)} shape mismatch(es), e.g. {k}: {tuple(got[k])} instead of {tuple(expected[k])}")
    return "; ".join(parts) or None


def _expected_shapes(config: VNetConfig) -> dict[str, torch.Size]:
    with torch.device("meta"):
        return {k: v.shape for k, v in VNet(config).state_dict().items()}


def save_bundle(
    path: str | os.PathLike[str],
    *,
    model: nn.Module,
    config: VNetConfig,
    preprocessing: Preprocessing,
    labels: dict[str, int],
    training: dict,
    metrics: dict,
    name: str,
    qc_limits: dict | None = None,
) -> Path:
    """Write a model bundle folder (``model.safetensors`` + ``model.json``) atomically.

    Parameters
    ----------
    path : path-like
        The bundle folder to create.  An existing bundle folder (holding nothing but bundle files) is replaced;
        any other existing file or folder is refused.
    model : nn.Module
        A :class:`VNet` built from ``config`` (wrapped in DistributedDataParallel or torch.compile is fine).
    config : VNetConfig
        Its architecture.
    preprocessing : Preprocessing
        How scans are prepared for it.
    labels : dict of str to int
        Label name -> value, e.g. ``{"background": 0, "femur": 1}``.
    training : dict
        Training summary (JSON-able; numpy scalars and Paths are converted).
    metrics : dict
        Validation metrics (same).
    name : str
        A short name of the model.
    qc_limits : dict, optional
        Anatomical limits of the segmenter's quality control for the population the model is for (fields of
        :class:`femurseg.inference.qc.QCLimits`); absent: adult human hips.

    Returns
    -------
    Path
        The bundle folder.

    Raises
    ------
    ModelError
        The model's weights do not fit ``config``.
    InputError
        ``path`` exists and is not a bundle folder, or a field cannot be stored as JSON.
    """
    path = Path(path)
    if not isinstance(config, VNetConfig) or not isinstance(preprocessing, Preprocessing):
        raise TypeError("save_bundle: config must be a VNetConfig and preprocessing a Preprocessing")
    if not isinstance(labels, dict) or not all(
        isinstance(k, str) and isinstance(v, int) and not isinstance(v, bool) for k, v in labels.items()
    ):
        raise InputError("save_bundle: labels must map label names (str) to label values (int)")
    state = {k: v.detach().to("cpu").contiguous() for k, v in _unwrap(model).state_dict().items()}
    mismatch = _compare_state(_expected_shapes(config), {k: v.shape for k, v in state.items()})
    if mismatch:
        raise ModelError(f"save_bundle: the model does not match its VNetConfig: {mismatch}")
    _check_target(path)

    meta: dict[str, Any] = {
        "format_version": FORMAT_VERSION,
        "name": str(name),
        "femurseg_version": _femurseg_version(),
        "created": _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat(),
        "architecture": to_dict(config),
        "preprocessing": to_dict(preprocessing),
        "labels": dict(labels),
        "training": _jsonable(training, "training"),
        "metrics": _jsonable(metrics, "metrics"),
        "weights_sha256": "",
    }
    if qc_limits is not None:
        meta["qc_limits"] = _jsonable(qc_limits, "qc_limits")

    from safetensors.torch import save_file

    from femurseg.atomic import transaction

    # Both files through the one atomic writer: weights placed first, model.json (which names their hash) last, both
    # or neither; modes from the umask.
    existed = path.exists()
    try:
        with transaction(overwrite=True) as tx:
            weights = tx.stage(path / WEIGHTS_FILE)
            save_file(state, str(weights), metadata={"format": "pt"})
            meta["weights_sha256"] = _sha256(weights)
            tx.stage(path / META_FILE).write_text(json.dumps(meta, indent=2, allow_nan=False) + "\n",
                                                  encoding="utf-8")
    except BaseException:
        if not existed and path.is_dir() and not any(path.iterdir()):
            path.rmdir()  # the folder this failed save created
        raise
    log.info("saved model bundle %s (%s)", path, meta["weights_sha256"][:12])
    return path


def _femurseg_version() -> str:
    from femurseg._version import __version__

    return __version__


def _check_target(path: Path) -> None:
    if path.is_symlink() or (path.exists() and not path.is_dir()):
        raise InputError(f"{path}: exists and is not a folder; choose another path for the model bundle")
    if path.is_dir():
        foreign = sorted(p.name for p in path.iterdir() if p.name not in _BUNDLE_FILES)
        if foreign:
            raise InputError(
                f"{path}: folder holds other files ({', '.join(foreign[:3])}); refusing to replace it with a bundle"
            )


def load_bundle(path: str | os.PathLike[str], *, device: str | torch.device = "cpu") -> Bundle:
    """Load and verify a model bundle.

    Parameters
    ----------
    path : path-like
        The bundle folder (or its ``model.json``).
    device : str or torch.device
        Where to put the model.

    Returns
    -------
    Bundle
        The model in eval mode on ``device``, with its configuration, preprocessing and metadata.

    Raises
    ------
    ModelError
        Missing folder or file, unreadable JSON, unsupported format version, weights whose SHA-256 differs
        from model.json ("modified or corrupted"), or an architecture that does not fit the weights.
    InputError
        ``device`` does not exist on this machine.
    """
    path = Path(path)
    if path.is_file() and path.name in _BUNDLE_FILES:
        path = path.parent
    if not path.is_dir():
        raise ModelError(f"{path}: no such model bundle folder (expected a folder with {META_FILE} and {WEIGHTS_FILE})")
    for fname in (META_FILE, WEIGHTS_FILE):
        if not (path / fname).is_file():
            raise ModelError(f"{path}: not a model bundle, {fname} is missing")
    try:
        meta = json.loads((path / META_FILE).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ModelError(f"{path / META_FILE}: not valid JSON ({err}); the bundle is corrupt") from None
    if not isinstance(meta, dict):
        raise ModelError(f"{path / META_FILE}: expected a JSON object; the bundle is corrupt")
    version = meta.get("format_version")
    if version != FORMAT_VERSION:
        raise ModelError(
            f"{path}: unsupported bundle format_version {version!r}; this femurseg reads version {FORMAT_VERSION}"
            " (upgrade femurseg or re-export the model)"
        )
    for key in ("architecture", "preprocessing", "weights_sha256", "labels"):
        if key not in meta:
            raise ModelError(f"{path / META_FILE}: the required key {key!r} is missing; the bundle is corrupt")
    if _sha256(path / WEIGHTS_FILE) != meta["weights_sha256"]:
        raise ModelError(
            f"{path}: weights were modified or corrupted ({WEIGHTS_FILE} does not match the sha256 in {META_FILE})"
        )
    try:
        config = from_dict(VNetConfig, meta["architecture"], where="architecture")
        preprocessing = from_dict(Preprocessing, meta["preprocessing"], where="preprocessing")
    except FemursegError as err:
        raise ModelError(f"{path / META_FILE}: {err}") from None

    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        state = load_file(str(path / WEIGHTS_FILE))
    except (SafetensorError, OSError, ValueError) as err:
        raise ModelError(f"{path / WEIGHTS_FILE}: unreadable weights ({err})") from None
    mismatch = _compare_state(_expected_shapes(config), {k: v.shape for k, v in state.items()})
    if mismatch:
        raise ModelError(f"{path}: the architecture in {META_FILE} does not match the weights: {mismatch}")
    # The network computes in float32; a bundle written from a half-precision copy is widened.
    state = {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
    # Built on the meta device and filled from the file: no random initialisation (fast, global RNG untouched).
    with torch.device("meta"):
        model = VNet(config)
    model.load_state_dict(state, strict=True, assign=True)
    try:
        model = model.to(torch.device(device)).eval()
    except (RuntimeError, AssertionError) as err:  # unknown device string, or a build without that backend
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise InputError(f"device {str(device)!r} is not available here ({first}); use 'cpu'") from None
    return Bundle(model=model, config=config, preprocessing=preprocessing, meta=meta, path=path)


def bundled_model_path(kind: str = "femur") -> Path:
    """A model bundle shipped inside the package: ``femurseg/resources/model/<kind>/``.

    Parameters
    ----------
    kind : {"femur", "locate"}
        The fine one-sided femur model or the coarse whole-scan locator.

    Raises
    ------
    ModelError
        No such model is bundled with this installation.
    """
    if kind not in ("femur", "locate"):
        raise ValueError(f"kind must be 'femur' or 'locate', not {kind!r}")
    path = Path(__file__).resolve().parents[1] / "resources" / "model" / kind
    if not (path / META_FILE).is_file() or not (path / WEIGHTS_FILE).is_file():
        option = "--model" if kind == "femur" else "--locator"
        raise ModelError(
            f"no {kind} model is bundled with this femurseg installation ({path} is missing); "
            f"pass a bundle folder with {option} or train one with `femurseg train`"
        )
    return path
