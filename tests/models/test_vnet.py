"""The V-Net: shapes, receptive field, parameter count, FLOPs, seeding, config validation."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from femurseg.config import from_dict, to_dict
from femurseg.errors import InputError
from femurseg.models.vnet import (
    VNet,
    VNetConfig,
    build_vnet,
    conv_flops,
    count_parameters,
    receptive_field,
    receptive_interval,
)

TINY = VNetConfig(base_width=4, depth=2, convs_per_stage=(1, 2, 2), kernel_size=3)


@pytest.mark.parametrize(
    "config",
    [TINY, VNetConfig(base_width=4, depth=2, convs_per_stage=(2, 1, 1), norm="instance", out_channels=3),
     VNetConfig(base_width=4, depth=1, convs_per_stage=(1, 1), norm="group", in_channels=2, kernel_size=5),
     VNetConfig(base_width=6, depth=2, convs_per_stage=(1, 1, 1), norm="batch", in_channels=4, kernel_size=3),
     VNetConfig(base_width=4, depth=0, convs_per_stage=(2,), kernel_size=3)],
    ids=["plain", "instance", "group-2ch", "batch-4ch-nondivisible", "depth0"],
)
def test_output_shape(config: VNetConfig) -> None:
    model = build_vnet(config, seed=0).eval()
    x = torch.randn(2, config.in_channels, 16, 8, 24)
    with torch.no_grad():
        y = model(x)
    assert y.shape == (2, config.out_channels, 16, 8, 24)
    assert torch.isfinite(y).all()


def test_rejects_indivisible_input() -> None:
    model = build_vnet(TINY, seed=0)
    with pytest.raises(ValueError, match="divisible by 2\\*\\*depth = 4"):
        model(torch.zeros(1, 1, 16, 16, 18))


def _input_gradient_extent(model: nn.Module, size: int, pos: tuple[int, int, int]) -> list[tuple[int, int]]:
    x = torch.randn(1, 1, size, size, size, dtype=torch.float64, requires_grad=True)
    y = model(x)
    y[0, 1, pos[0], pos[1], pos[2]].backward()
    nz = torch.nonzero(x.grad[0, 0])
    return [(int(nz[:, a].min()), int(nz[:, a].max())) for a in range(3)]


@pytest.mark.parametrize(
    "config",
    [TINY, VNetConfig(base_width=2, depth=3, convs_per_stage=(1, 1, 1, 1), kernel_size=3)],
    ids=["depth2", "depth3"],
)
def test_receptive_field_matches_input_gradient(config: VNetConfig) -> None:
    model = build_vnet(config, seed=1).double()
    rf = receptive_field(config)
    # The extent depends on the output position modulo 2**depth; probe one full period along the diagonal,
    # with the three axes at different phases, in a volume just big enough to hold every receptive field.
    period = 2**config.depth
    spans = [receptive_interval(config, p) for p in range(period)]
    centre = -(-(-min(lo for lo, _ in spans)) // period) * period
    size = -(-(centre + max(hi for _, hi in spans) + 1) // period) * period
    widths = []
    for i in range(period):
        pos = (centre + i, centre + (i + 1) % period, centre + (i + 2) % period)
        extent = _input_gradient_extent(model, size, pos)
        for axis in range(3):
            lo, hi = receptive_interval(config, pos[axis])
            assert lo >= 0 and hi < size, "test volume too small for the receptive field"
            assert extent[axis] == (lo, hi)
            widths.append(hi - lo + 1)
    assert max(widths) == rf


def test_receptive_field_grows_with_kernel_and_depth() -> None:
    # Independent sanity check of the closed form of the simplest nets.
    assert receptive_field(VNetConfig(depth=0, convs_per_stage=(3,), kernel_size=5)) == 3 * 4 + 1
    base = VNetConfig(base_width=4, depth=1, convs_per_stage=(1, 1), kernel_size=3)
    # By hand, output p: decoder conv -> [p-1, p+1]; up -> bottom [(p-1)//2, (p+1)//2]; bottom conv ±1;
    # down -> [2*((p-1)//2 - 1), 2*((p+1)//2 + 1) + 1]; encoder conv ±1.
    for p in (0, 1):
        lo = 2 * ((p - 1) // 2 - 1) - 1
        hi = 2 * ((p + 1) // 2 + 1) + 1 + 1
        assert receptive_interval(base, p) == (lo, hi)


def _expected_parameters(c: VNetConfig) -> int:
    """Closed-form count for a net without normalisation: conv weights + biases + per-channel PReLU slopes."""
    k3 = c.kernel_size**3
    w = [c.base_width * 2**l for l in range(c.depth + 1)]
    n = c.convs_per_stage

    def conv(ci: int, co: int, kk: int) -> int:
        return ci * co * kk + co

    total = conv(c.in_channels, w[0], k3) + w[0] + (n[0] - 1) * (conv(w[0], w[0], k3) + w[0])
    for l in range(1, c.depth + 1):
        total += conv(w[l - 1], w[l], 8) + w[l]
        total += n[l] * (conv(w[l], w[l], k3) + w[l])
    for l in range(c.depth):
        c_in = w[c.depth] if l == c.depth - 1 else 2 * w[l + 1]
        total += conv(c_in, w[l], 8) + w[l]
        total += n[l] * (conv(2 * w[l], 2 * w[l], k3) + 2 * w[l])
    total += conv(2 * w[0] if c.depth else w[0], c.out_channels, 1)
    return total


@pytest.mark.parametrize(
    "config",
    [TINY, VNetConfig(), VNetConfig(base_width=8), VNetConfig(base_width=3, depth=1, convs_per_stage=(2, 3))],
    ids=["tiny", "default", "slim", "odd"],
)
def test_parameter_count_formula(config: VNetConfig) -> None:
    assert count_parameters(VNet(config)) == _expected_parameters(config)


def test_parameter_count_excludes_nothing_with_norm() -> None:
    cfg = VNetConfig(base_width=4, depth=2, convs_per_stage=(1, 1, 1), norm="batch")
    model = VNet(cfg)
    assert count_parameters(model) == sum(p.numel() for p in model.parameters())
    # Convolutions lose their bias under a norm layer.
    assert all(m.bias is None for m in model.modules() if isinstance(m, nn.Conv3d) and m.kernel_size != (1, 1, 1))


def test_conv_flops_matches_hooks() -> None:
    """conv_flops equals 2 × multiply-adds counted from the actual layers' output shapes."""
    model = VNet(TINY)
    macs = 0

    def hook(module: nn.Module, _inp: tuple, out: torch.Tensor) -> None:
        nonlocal macs
        if isinstance(module, nn.ConvTranspose3d):
            # each output voxel receives one tap per input channel
            macs += out[0].numel() * module.in_channels
        else:
            k = module.kernel_size[0] * module.kernel_size[1] * module.kernel_size[2]
            macs += out[0].numel() * module.in_channels * k

    for m in model.modules():
        if isinstance(m, (nn.Conv3d, nn.ConvTranspose3d)):
            m.register_forward_hook(hook)
    with torch.no_grad():
        model(torch.zeros(1, 1, 16, 24, 8))
    assert conv_flops(TINY, (16, 24, 8)) == 2 * macs


def test_same_seed_same_weights_different_seed_different() -> None:
    x = torch.randn(1, 1, 16, 16, 16, generator=torch.Generator().manual_seed(0))
    state = torch.get_rng_state()
    a, b, c = (build_vnet(TINY, seed=s).eval() for s in (7, 7, 8))
    assert torch.equal(torch.get_rng_state(), state), "build_vnet must not consume the global RNG"
    with torch.no_grad():
        ya, yb, yc = a(x), b(x), c(x)
    assert torch.equal(ya, yb)
    assert not torch.allclose(ya, yc)
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert ka == kb and torch.equal(va, vb)


def test_stage0_residual_repeats_the_input() -> None:
    """With the stage-0 convolutions zeroed, stage 0 outputs the input repeated to base_width channels."""
    cfg = VNetConfig(in_channels=2, base_width=4, depth=1, convs_per_stage=(1, 1), kernel_size=3)
    model = VNet(cfg)
    with torch.no_grad():
        for p in model.input_conv.parameters():
            p.zero_()
    seen: dict[str, torch.Tensor] = {}

    def grab(_module: nn.Module, inp: tuple, _out: torch.Tensor) -> None:
        seen["x"] = inp[0]

    model.downs[0].register_forward_hook(grab)
    x = torch.randn(1, 2, 8, 8, 8)
    model(x)
    assert torch.equal(seen["x"], torch.cat([x, x], dim=1))


@pytest.mark.parametrize(
    "bad",
    [dict(depth=2, convs_per_stage=(1, 2)), dict(kernel_size=4), dict(norm="layer"), dict(dropout=1.0),
     dict(base_width=0), dict(convs_per_stage=(1, 0, 1, 1))],
)
def test_config_validation(bad: dict) -> None:
    with pytest.raises(ValueError):
        VNetConfig(**bad)


def test_config_json_round_trip() -> None:
    cfg = VNetConfig(base_width=8, norm="group", dropout=0.1)
    data = to_dict(cfg)
    assert data["convs_per_stage"] == [1, 2, 3, 3]
    assert from_dict(VNetConfig, data) == cfg
    with pytest.raises(InputError, match="convs_per_stage"):
        from_dict(VNetConfig, {**data, "convs_per_stage": [1, 2]})
