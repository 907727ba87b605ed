"""femurseg.models: the V-Net, its model bundle, and the shared preprocessing contract.

Names load lazily so that ``femurseg.models.preprocessing`` (torch-free) does not import torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "VNetConfig": "vnet",
    "VNet": "vnet",
    "build_vnet": "vnet",
    "receptive_field": "vnet",
    "count_parameters": "vnet",
    "conv_flops": "vnet",
    "Bundle": "bundle",
    "save_bundle": "bundle",
    "load_bundle": "bundle",
    "bundled_model_path": "bundle",
    "Preprocessing": "preprocessing",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"femurseg.models.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'femurseg.models' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
