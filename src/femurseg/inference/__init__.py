"""femurseg.inference: segment both femurs of a hip CT scan.

Public names (loaded lazily, so that importing a torch-free helper such as
:mod:`femurseg.inference.landmarks` does not import torch)
------------------------------------------------------------------------------------------------
Segmenter(*, model=None, locator=None, device="auto", fast=False, tta=False).segment(image) -> SegmentationResult
segment(image_or_path, *, model=None, locator=None, device="auto", fast=False, tta=False) -> SimpleITK.Image
locate_femurs(image, model, preprocessing, *, options, device) -> {"right": FemurBox | None, "left": ...}
"""

from __future__ import annotations

from typing import Any

_LAZY = {
    "Segmenter": "femurseg.inference.segmenter",
    "SegmentationResult": "femurseg.inference.segmenter",
    "segment": "femurseg.inference.segmenter",
    "locate_femurs": "femurseg.inference.locate",
    "FemurBox": "femurseg.inference.locate",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'femurseg.inference' has no attribute {name!r}")
