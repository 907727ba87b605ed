"""Sliding-window inference with Gaussian blending (as nnU-Net and MONAI do it), tuned for a laptop CPU.

The volume is tiled with windows of the network's training patch size; neighbouring windows overlap by a fraction
of the patch and their softmax outputs are blended with a Gaussian importance map, so the less reliable window
borders count less.  Windows are run in small batches under :func:`torch.inference_mode`.

We do not call MONAI's ``sliding_window_inference``: importing ``monai.inferers`` alone costs ~2.3 s on the
2-core target CPU, as much as segmenting one femur; the tiling below is the same algorithm in 60 lines.

How the network runs on each device (ONE code path, chosen with ``benchmarks/segment_speed.py``): the model and
its input in ``channels_last_3d`` memory format, bfloat16 autocast on CUDA and on CPUs with native bf16, float32
otherwise (see :data:`CPU_AUTOCAST`).  Probabilities are accumulated in float32.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

#: Run CPU forwards under bfloat16 autocast where the CPU has native bf16 (AVX512-BF16 / AMX): ~1.7× faster than
#: float32 for the slim V-Net on the 2-core AMD EPYC target; measured by ``benchmarks/segment_speed.py`` (see
#: docs/segment.md).  Without native bf16, autocast is emulated and slower, so float32 is used.
CPU_AUTOCAST: bool = True


def cpu_bf16_supported() -> bool:
    """Whether oneDNN runs bfloat16 convolutions natively on this CPU."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # private API; absent in some builds
        return False


@dataclass(frozen=True)
class WindowOptions:
    """How a volume is tiled.

    Attributes
    ----------
    patch_size_zyx : (3,) tuple of int
        Window size [voxels], (z, y, x); each divisible by ``2 ** depth`` of the network.
    overlap : float
        Fraction of the window shared by neighbouring windows, in [0, 1).
    batch_size : int
        Windows per forward pass.
    flips : tuple of tuple of int
        Extra passes over mirrored inputs (test-time augmentation): each entry lists the spatial axes
        (0 = z, 1 = y, 2 = x) flipped; the outputs are flipped back and averaged with the plain pass.
    sigma_scale : float
        Standard deviation of the Gaussian importance map, as a fraction of the window size.
    """

    patch_size_zyx: tuple[int, int, int]
    overlap: float = 0.5
    batch_size: int = 2
    flips: tuple[tuple[int, ...], ...] = ()
    sigma_scale: float = 0.125

    def __post_init__(self) -> None:
        if not 0.0 <= self.overlap < 1.0:
            raise ValueError("overlap must be in [0, 1)")
        if self.batch_size < 1 or any(p < 1 for p in self.patch_size_zyx):
            raise ValueError("batch_size and patch_size_zyx must be positive")


def resolve_device(device: str) -> torch.device:
    """``"auto"`` → CUDA when available, else CPU; otherwise the named device."""
    from femurseg.errors import InputError

    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise InputError("--device cuda: no CUDA device is available to this torch build; use --device cpu")
    if device not in ("cpu", "cuda") and not device.startswith("cuda:"):
        raise InputError(f"unknown device {device!r}; use auto, cpu or cuda")
    return torch.device(device)


def prepare_model(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """The model in eval mode on ``device``, weights in channels_last_3d (faster 5×5×5 convolutions on oneDNN)."""
    model = model.eval().to(device)
    return model.to(memory_format=torch.channels_last_3d)


def gaussian_importance(patch_size_zyx: Sequence[int], *, sigma_scale: float = 0.125) -> np.ndarray:
    """Gaussian importance map of a window, maximum 1, strictly positive.

    Returns
    -------
    (Z, Y, X) ndarray of float32
    """
    axes = []
    for n in patch_size_zyx:
        sigma = max(n * sigma_scale, 1e-3)
        i = np.arange(n, dtype=np.float64) - (n - 1) / 2.0
        axes.append(np.exp(-0.5 * (i / sigma) ** 2))
    g = axes[0][:, None, None] * axes[1][None, :, None] * axes[2][None, None, :]
    g /= g.max()
    # Voxels that only window corners cover must not get a zero (or denormal) weight.
    return np.maximum(g, 1e-3).astype(np.float32)


def window_starts(size: int, patch: int, overlap: float) -> list[int]:
    """Start indices of windows of length ``patch`` covering ``[0, size)`` with at least ``overlap`` shared."""
    if size <= patch:
        return [0]
    step = max(1, int(patch * (1.0 - overlap)))
    n = math.ceil((size - patch) / step) + 1
    return sorted({int(round(s)) for s in np.linspace(0, size - patch, n)})


def sliding_window_probabilities(
    model: torch.nn.Module,
    volume: np.ndarray,
    *,
    options: WindowOptions,
    device: torch.device,
    pad_value: float = -1.0,
) -> np.ndarray:
    """Softmax class probabilities of a whole volume, window by window.

    Parameters
    ----------
    model : torch.nn.Module
        Maps (N, 1, Z, Y, X) to logits (N, C, Z, Y, X); prepared with :func:`prepare_model`.
    volume : (Z, Y, X) ndarray of float32
        Network input (normalised intensities).
    options : WindowOptions
    device : torch.device
    pad_value : float
        Value that pads a volume smaller than a window (the normalised window low, ``-1``).

    Returns
    -------
    (C, Z, Y, X) ndarray of float32
        Class probabilities (sum 1 over C).
    """
    volume = np.asarray(volume, dtype=np.float32)
    patch = tuple(int(p) for p in options.patch_size_zyx)
    shape = volume.shape
    pads = [(max(0, p - s) // 2, max(0, p - s) - max(0, p - s) // 2) for s, p in zip(shape, patch)]
    if any(a or b for a, b in pads):
        volume = np.pad(volume, pads, mode="constant", constant_values=pad_value)
    padded = volume.shape
    starts = [(z, y, x)
              for z in window_starts(padded[0], patch[0], options.overlap)
              for y in window_starts(padded[1], patch[1], options.overlap)
              for x in window_starts(padded[2], patch[2], options.overlap)]
    importance = torch.from_numpy(gaussian_importance(patch, sigma_scale=options.sigma_scale))
    source = torch.from_numpy(volume)
    out: torch.Tensor | None = None
    weight = torch.zeros(padded, dtype=torch.float32)
    autocast = _autocast(device)
    with torch.inference_mode():
        for b in range(0, len(starts), options.batch_size):
            batch_starts = starts[b:b + options.batch_size]
            x = torch.stack([source[z:z + patch[0], y:y + patch[1], w:w + patch[2]] for z, y, w in batch_starts])
            x = x[:, None].to(device).contiguous(memory_format=torch.channels_last_3d)
            probs = _predict(model, x, options.flips, autocast).cpu()
            if out is None:
                out = torch.zeros((probs.shape[1], *padded), dtype=torch.float32)
            for k, (z, y, w) in enumerate(batch_starts):
                out[:, z:z + patch[0], y:y + patch[1], w:w + patch[2]] += probs[k] * importance
                weight[z:z + patch[0], y:y + patch[1], w:w + patch[2]] += importance
        assert out is not None
        out /= weight
        crop = tuple(slice(a, a + s) for (a, _), s in zip(pads, shape))
        return np.ascontiguousarray(out[(slice(None), *crop)].numpy())


def _autocast(device: torch.device):
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16)
    if device.type == "cpu" and CPU_AUTOCAST and cpu_bf16_supported():
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return None


def _forward(model: torch.nn.Module, x: torch.Tensor, autocast) -> torch.Tensor:
    if autocast is None:
        logits = model(x)
    else:
        with autocast:
            logits = model(x)
    return torch.softmax(logits.float(), dim=1)


def _predict(model: torch.nn.Module, x: torch.Tensor, flips: tuple[tuple[int, ...], ...], autocast) -> torch.Tensor:
    probs = _forward(model, x, autocast)
    for axes in flips:
        dims = [2 + a for a in axes]
        probs += torch.flip(_forward(model, torch.flip(x, dims), autocast), dims)
    if flips:
        probs /= 1 + len(flips)
    return probs
