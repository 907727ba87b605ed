"""The 3D V-Net of Milletari et al. (2016) as used by Zhao et al. (2020) for the proximal femur in hip QCT.

Architecture (``depth`` down- and up-sampling stages; channels ``C_l = base_width * 2**l`` at level ``l``)::

    input (in_channels) ──► enc 0: n_0 × [conv k³ → norm → PReLU] + input repeated to C_0 ──────────────┐ skip 0
      down: conv 2³ stride 2, C_0 → C_1, norm, PReLU                                                      │
      enc 1: n_1 × [conv k³ → norm → PReLU] + residual ──────────────────────────────────────────┐ skip 1 │
      ...                                                                                        │        │
      enc depth (bottom, C_depth channels): n_depth convs + residual                             │        │
      up: transposed conv 2³ stride 2 → C_{depth-1}, norm, PReLU; concat → 2·C_{depth-1} ◄───────┘ ...    │
      dec l: n_l × [conv k³ → norm → PReLU] + residual (of the concatenation), 2·C_l channels             │
      ...  up to level 0 (concat skip 0 → 2·C_0 channels) ◄────────────────────────────────────────────────┘
    final 1³ conv 2·C_0 → out_channels (logits)

The decoder mirrors the encoder: decoder stage ``l`` has ``convs_per_stage[l]`` convolutions, as the encoder stage
at the same resolution.  As in Milletari's reference code, the up-convolution produces half of the decoder
stage's channels and the skip connection the other half.  Convolutions carry a bias only when there is no
normalisation.  ``dropout`` (``Dropout3d``) is applied after every down- and every up-convolution.

Numbers of the default configuration (``VNetConfig()``: base width 16, depth 3, convs (1, 2, 3, 3), 5³ kernels)
and of the slim one used for CPU inference (``VNetConfig(base_width=8)``), computed with the functions of this
module (``receptive_field``, ``count_parameters``, ``conv_flops``):

=====================  ===============  ==================  ===========================
configuration          parameters       receptive field     conv GFLOP per 160³ forward
=====================  ===============  ==================  ===========================
default (width 16)     15,429,650       244 voxels          3479
slim (width 8)         3,858,698        244 voxels          874
=====================  ===============  ==================  ===========================

The receptive field (per axis, the widest over output positions; it depends on the position modulo
``2**depth``: 236 to 244 voxels here) is set by the architecture, not the width.  At 1 mm it spans 24 cm,
more than a whole proximal-femur ROI, so every output voxel sees the entire ROI.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

__all__ = [
    "VNetConfig", "VNet", "build_vnet", "receptive_field", "receptive_interval", "count_parameters", "conv_flops",
]

_NORMS = (None, "batch", "instance", "group")


@dataclass(frozen=True)
class VNetConfig:
    """Architecture of a :class:`VNet`; stored as ``architecture`` in a model bundle's ``model.json``.

    Attributes
    ----------
    in_channels : int
        Image channels (1 for CT).
    out_channels : int
        Classes, background included (2 for a one-sided femur model: background + femur).
    base_width : int
        Channels of the first stage; doubles with every down-sampling stage.
    depth : int
        Number of down-sampling (= up-sampling) stages; inputs must be divisible by ``2**depth`` along each axis.
    convs_per_stage : tuple of int, length ``depth + 1``
        Convolutions of encoder stages ``0 .. depth`` (the last is the bottom); decoder stage ``l`` has
        ``convs_per_stage[l]``.
    kernel_size : int
        Odd edge of the cubic convolution kernels [voxels] (5 in the V-Net paper).
    norm : {None, "batch", "instance", "group"}
        Normalisation after each convolution (None: none, as in the paper).  "group" uses up to 8 groups.
    dropout : float
        Channel dropout probability after each down- and up-convolution (0 disables it).
    """

    in_channels: int = 1
    out_channels: int = 2
    base_width: int = 16
    depth: int = 3
    convs_per_stage: tuple[int, ...] = (1, 2, 3, 3)
    kernel_size: int = 5
    norm: str | None = None
    dropout: float = 0.0

    def __post_init__(self) -> None:
        if self.in_channels < 1 or self.out_channels < 1 or self.base_width < 1:
            raise ValueError("in_channels, out_channels and base_width must be at least 1")
        if self.depth < 0:
            raise ValueError(f"depth must be 0 or more, got {self.depth}")
        if len(self.convs_per_stage) != self.depth + 1:
            raise ValueError(
                f"convs_per_stage needs depth + 1 = {self.depth + 1} entries (encoder stages 0..depth), "
                f"got {len(self.convs_per_stage)}"
            )
        if any(int(n) < 1 for n in self.convs_per_stage):
            raise ValueError("every stage needs at least one convolution (convs_per_stage >= 1)")
        if self.kernel_size < 1 or self.kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd and positive ('same' padding), got {self.kernel_size}")
        if self.norm not in _NORMS:
            raise ValueError(f"norm must be one of None, 'batch', 'instance', 'group'; got {self.norm!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        # A tuple, also when built from a JSON list, so that configs compare and hash by value.
        object.__setattr__(self, "convs_per_stage", tuple(int(n) for n in self.convs_per_stage))

    def width(self, level: int) -> int:
        """Channels of encoder level ``level`` (``base_width * 2**level``)."""
        return self.base_width * 2**level


def _norm(kind: str | None, channels: int) -> nn.Module:
    if kind is None:
        return nn.Identity()
    if kind == "batch":
        return nn.BatchNorm3d(channels)
    if kind == "instance":
        return nn.InstanceNorm3d(channels, affine=True)
    groups = min(8, channels)
    while channels % groups:
        groups -= 1
    return nn.GroupNorm(groups, channels)


def _conv_block(channels: int, n: int, config: VNetConfig) -> nn.Sequential:
    layers: list[nn.Module] = []
    k = config.kernel_size
    for _ in range(n):
        layers += [
            nn.Conv3d(channels, channels, k, padding=k // 2, bias=config.norm is None),
            _norm(config.norm, channels),
            nn.PReLU(channels),
        ]
    return nn.Sequential(*layers)


class _Down(nn.Module):
    """Strided 2³ convolution that halves the resolution and doubles the channels, then PReLU."""

    def __init__(self, c_in: int, c_out: int, config: VNetConfig) -> None:
        super().__init__()
        self.conv = nn.Conv3d(c_in, c_out, 2, stride=2, bias=config.norm is None)
        self.norm = _norm(config.norm, c_out)
        self.act = nn.PReLU(c_out)
        self.drop = nn.Dropout3d(config.dropout) if config.dropout > 0 else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        return self.drop(self.act(self.norm(self.conv(x))))


class _Up(nn.Module):
    """Transposed 2³ convolution with stride 2 that doubles the resolution, then PReLU."""

    def __init__(self, c_in: int, c_out: int, config: VNetConfig) -> None:
        super().__init__()
        self.conv = nn.ConvTranspose3d(c_in, c_out, 2, stride=2, bias=config.norm is None)
        self.norm = _norm(config.norm, c_out)
        self.act = nn.PReLU(c_out)
        self.drop = nn.Dropout3d(config.dropout) if config.dropout > 0 else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        return self.drop(self.act(self.norm(self.conv(x))))


class VNet(nn.Module):
    """Milletari's residual 3D V-Net (see the module docstring for the layout and its numbers).

    Parameters
    ----------
    config : VNetConfig
        The architecture.  Weights take PyTorch's default initialisation from the global RNG; use
        :func:`build_vnet` for seeded, reproducible weights.
    """

    def __init__(self, config: VNetConfig) -> None:
        super().__init__()
        self.config = config
        d = config.depth
        n = config.convs_per_stage
        self.input_conv = nn.Sequential(
            nn.Conv3d(config.in_channels, config.width(0), config.kernel_size, padding=config.kernel_size // 2,
                      bias=config.norm is None),
            _norm(config.norm, config.width(0)),
            nn.PReLU(config.width(0)),
            *_conv_block(config.width(0), n[0] - 1, config),
        )
        self.downs = nn.ModuleList(_Down(config.width(l), config.width(l + 1), config) for l in range(d))
        self.encoders = nn.ModuleList(_conv_block(config.width(l), n[l], config) for l in range(1, d + 1))
        # Decoder level l receives the bottom (width(d)) or the previous decoder level (2 * width(l + 1)).
        self.ups = nn.ModuleList(
            _Up(config.width(d) if l == d - 1 else 2 * config.width(l + 1), config.width(l), config) for l in range(d)
        )
        self.decoders = nn.ModuleList(_conv_block(2 * config.width(l), n[l], config) for l in range(d))
        self.head = nn.Conv3d(2 * config.width(0) if d > 0 else config.width(0), config.out_channels, 1)
        divisible = config.width(0) % config.in_channels == 0
        self._repeat = config.width(0) // config.in_channels if divisible else -1

    def _stage0_residual(self, x: Tensor) -> Tensor:
        # Milletari adds the input to the first stage's output by repeating its channel(s) up to base_width.
        if self.config.in_channels == 1:
            return x  # broadcasting in the addition does the repeat without copying
        if self._repeat > 0:
            return x.repeat(1, self._repeat, 1, 1, 1)
        reps = -(-self.config.width(0) // self.config.in_channels)
        return x.repeat(1, reps, 1, 1, 1)[:, : self.config.width(0)]

    def forward(self, x: Tensor) -> Tensor:
        """Logits of every voxel.

        Parameters
        ----------
        x : (N, in_channels, Z, Y, X) Tensor
            Preprocessed image; Z, Y and X must be divisible by ``2**depth``.

        Returns
        -------
        (N, out_channels, Z, Y, X) Tensor
            Class logits (softmax over dim 1 gives probabilities).
        """
        if x.dim() != 5 or x.shape[1] != self.config.in_channels:
            raise ValueError(
                f"VNet expects a (N, {self.config.in_channels}, Z, Y, X) tensor, got shape {tuple(x.shape)}"
            )
        m = 2**self.config.depth
        if any(s % m for s in x.shape[2:]):
            raise ValueError(f"VNet input size {tuple(x.shape[2:])} must be divisible by 2**depth = {m} on every axis")
        out = self.input_conv(x) + self._stage0_residual(x)
        skips = [out]
        for down, enc in zip(self.downs, self.encoders):
            h = down(out)
            out = enc(h) + h
            skips.append(out)
        skips.pop()  # the bottom is not a skip
        for level in reversed(range(self.config.depth)):
            h = torch.cat([self.ups[level](out), skips[level]], dim=1)
            out = self.decoders[level](h) + h
        return self.head(out)


def build_vnet(config: VNetConfig, *, seed: int) -> VNet:
    """A :class:`VNet` with weights drawn from ``seed``; the global torch RNG is left untouched.

    Parameters
    ----------
    config : VNetConfig
        The architecture.
    seed : int
        Same seed, identical weights (on any device: weights are drawn on the CPU).

    Returns
    -------
    VNet
        On the CPU, in training mode.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        return VNet(config)


def count_parameters(model: nn.Module) -> int:
    """Number of scalar parameters of ``model`` (every parameter, trainable or not)."""
    return sum(p.numel() for p in model.parameters())


# --- receptive field ------------------------------------------------------------------------------------------------
# Exact interval arithmetic along one axis on an unbounded grid: which input positions can influence output p.
# 'same' conv of radius r: [lo - r, hi + r]; strided 2³ conv (down): output q reads inputs 2q, 2q+1;
# transposed 2³ conv (up): output p reads input p // 2; residual adds and concatenations take the hull.


def _hull(a: tuple[int, int], b: tuple[int, int]) -> tuple[int, int]:
    return min(a[0], b[0]), max(a[1], b[1])


def _encoder_input_interval(config: VNetConfig, level: int, iv: tuple[int, int]) -> tuple[int, int]:
    """Input-image interval that influences interval ``iv`` of encoder stage ``level``'s output."""
    r = config.convs_per_stage[level] * (config.kernel_size // 2)
    lo, hi = iv[0] - r, iv[1] + r  # the residual's own interval lies inside
    if level == 0:
        return lo, hi
    return _encoder_input_interval(config, level - 1, (2 * lo, 2 * hi + 1))


def _decoder_input_interval(config: VNetConfig, level: int, iv: tuple[int, int]) -> tuple[int, int]:
    """Input-image interval that influences interval ``iv`` of decoder stage ``level``'s output."""
    r = config.convs_per_stage[level] * (config.kernel_size // 2)
    lo, hi = iv[0] - r, iv[1] + r
    skip = _encoder_input_interval(config, level, (lo, hi))
    coarse = (lo // 2, hi // 2)
    if level + 1 == config.depth:
        up = _encoder_input_interval(config, config.depth, coarse)
    else:
        up = _decoder_input_interval(config, level + 1, coarse)
    return _hull(skip, up)


def receptive_interval(config: VNetConfig, position: int) -> tuple[int, int]:
    """First and last input positions [voxels] (inclusive, along one axis) that influence output ``position``.

    Exact for the architecture on an unbounded grid (zero padding at the borders is ignored).
    """
    if config.depth == 0:
        return _encoder_input_interval(config, 0, (position, position))
    return _decoder_input_interval(config, 0, (position, position))


def receptive_field(config: VNetConfig) -> int:
    """Receptive field of one output voxel [voxels, per axis].

    The widest over output positions: the extent depends on a position's remainder modulo ``2**depth``
    (by a few voxels) because of the strided down-sampling; see :func:`receptive_interval`.
    """
    return max(hi - lo + 1 for lo, hi in (receptive_interval(config, p) for p in range(2**config.depth)))


def conv_flops(config: VNetConfig, shape_zyx: Sequence[int]) -> int:
    """Floating-point operations (2 × multiply-adds) of the convolutions of one forward pass of one sample.

    Counts convolutions, strided and transposed convolutions and the 1³ head; biases, activations, norms,
    additions and concatenations are ignored (< 1 % here).

    Parameters
    ----------
    config : VNetConfig
        The architecture.
    shape_zyx : (3,) sequence of int
        Input size [voxels], (z, y, x), divisible by ``2**depth``.

    Returns
    -------
    int
        FLOPs of one forward pass with batch size 1.
    """
    z, y, x = (int(s) for s in shape_zyx)
    m = 2**config.depth
    if z % m or y % m or x % m:
        raise ValueError(f"shape_zyx {tuple(shape_zyx)} must be divisible by 2**depth = {m}")
    k3 = config.kernel_size**3
    voxels = [(z >> l) * (y >> l) * (x >> l) for l in range(config.depth + 1)]
    n = config.convs_per_stage
    macs = config.in_channels * config.width(0) * k3 * voxels[0]  # first conv of stage 0
    macs += (n[0] - 1) * config.width(0) ** 2 * k3 * voxels[0]
    for l in range(1, config.depth + 1):
        macs += config.width(l - 1) * config.width(l) * 8 * voxels[l]  # down conv, 2³ per output voxel
        macs += n[l] * config.width(l) ** 2 * k3 * voxels[l]
    for l in range(config.depth):
        c_in = config.width(config.depth) if l == config.depth - 1 else 2 * config.width(l + 1)
        macs += c_in * config.width(l) * voxels[l]  # transposed 2³ conv: one input tap per output voxel
        macs += n[l] * (2 * config.width(l)) ** 2 * k3 * voxels[l]
    head_in = 2 * config.width(0) if config.depth > 0 else config.width(0)
    macs += head_in * config.out_channels * voxels[0]
    return 2 * macs
