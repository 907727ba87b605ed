"""femurseg: proximal femur segmentation in hip QCT with a 3D V-Net.

The public API grows with the package; see README.md.  ``segment`` and ``Segmenter`` are loaded on first use,
so ``import femurseg`` stays fast and does not import torch.
"""

from typing import Any

from femurseg._version import __version__
from femurseg.errors import FemursegError, InputError, ModelError, NoFemurFound

__all__ = ["__version__", "FemursegError", "InputError", "ModelError", "NoFemurFound", "segment", "Segmenter",
           "SegmentationResult"]

_LAZY = {"segment", "Segmenter", "SegmentationResult"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import femurseg.inference.segmenter as _segmenter

        return getattr(_segmenter, name)
    raise AttributeError(f"module 'femurseg' has no attribute {name!r}")
