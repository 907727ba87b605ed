"""Soft Dice, the kernel L2 term, CompoundLoss, and a tiny V-Net overfitting a synthetic case with them."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch
from torch import nn

from femurseg.models.vnet import VNetConfig, build_vnet
from femurseg.training.loss import CompoundLoss, l2_penalty, param_groups, soft_dice_loss

TINY = VNetConfig(base_width=4, depth=2, convs_per_stage=(1, 1, 1), kernel_size=3)


def _ellipsoid(shape: tuple[int, int, int], radii: tuple[float, float, float], centre=None) -> np.ndarray:
    centre = centre if centre is not None else [s / 2 - 0.5 for s in shape]
    zz, yy, xx = np.meshgrid(*[np.arange(s) for s in shape], indexing="ij")
    r = ((zz - centre[0]) / radii[0]) ** 2 + ((yy - centre[1]) / radii[1]) ** 2 + ((xx - centre[2]) / radii[2]) ** 2
    return r <= 1.0


def _perfect_logits(target: torch.Tensor, classes: int, margin: float = 30.0) -> torch.Tensor:
    onehot = torch.nn.functional.one_hot(target, classes).movedim(-1, 1).float()
    return (2 * onehot - 1) * margin


def test_perfect_prediction_gives_zero_loss() -> None:
    target = torch.from_numpy(_ellipsoid((16, 16, 16), (5, 4, 6))).long()[None].repeat(2, 1, 1, 1)
    target[1, :2] = 2  # a second foreground class in the second sample only
    logits = _perfect_logits(target, 3)
    assert soft_dice_loss(logits, target).item() < 1e-4
    model = build_vnet(TINY, seed=0)
    total, terms = CompoundLoss(l2_lambda=0.0)(logits, target, model)
    assert total.item() < 1e-4 and terms["l2"] == 0.0
    total_ce, terms_ce = CompoundLoss(l2_lambda=0.0, kind="dice_ce")(logits, target, model)
    assert total_ce.item() < 1e-4 and terms_ce["ce"] < 1e-6


def test_dice_matches_hand_computation() -> None:
    rng = np.random.default_rng(3)
    logits = torch.from_numpy(rng.normal(size=(2, 2, 4, 5, 6))).float()
    target = torch.from_numpy(rng.integers(0, 2, size=(2, 4, 5, 6)))
    p = np.exp(logits.numpy())
    p = p / p.sum(axis=1, keepdims=True)
    per_sample = []
    for n in range(2):
        pf, g = p[n, 1], target.numpy()[n] == 1
        per_sample.append(1 - (2 * (pf * g).sum() + 1e-5) / ((pf**2).sum() + g.sum() + 1e-5))
    assert soft_dice_loss(logits, target).item() == pytest.approx(np.mean(per_sample), rel=1e-5)


def test_dice_is_per_sample_so_split_batches_average_to_the_whole() -> None:
    """Data-parallel equivalence: the mean of the halves' losses equals the whole batch's loss."""
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(4, 2, 8, 8, 8, generator=g)
    target = torch.randint(0, 2, (4, 8, 8, 8), generator=g)
    target[0] = 0  # one sample without foreground
    whole = soft_dice_loss(logits, target)
    halves = (soft_dice_loss(logits[:2], target[:2]) + soft_dice_loss(logits[2:], target[2:])) / 2
    assert whole.item() == pytest.approx(halves.item(), abs=1e-7)


def test_dice_bad_inputs() -> None:
    with pytest.raises(ValueError, match="target shape"):
        soft_dice_loss(torch.zeros(1, 2, 4, 4, 4), torch.zeros(1, 4, 4, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="needs two classes"):
        soft_dice_loss(torch.zeros(1, 3, 4, 4, 4), torch.zeros(1, 4, 4, 4))


def test_fractional_targets() -> None:
    """A 0/1 float target is the class-index target; a fractional one is best met by predicting the fraction."""
    rng = np.random.default_rng(5)
    logits = torch.from_numpy(rng.normal(size=(2, 2, 4, 5, 6))).float()
    hard = torch.from_numpy(rng.integers(0, 2, size=(2, 4, 5, 6)))
    model = build_vnet(TINY, seed=0)
    loss = CompoundLoss(l2_lambda=0.0, kind="dice_ce")
    a, ta = loss(logits, hard, model)
    b, tb = loss(logits, hard.float(), model)
    assert a.item() == pytest.approx(b.item(), rel=1e-6) and ta["ce"] == pytest.approx(tb["ce"], rel=1e-6)
    # Cross-entropy against fractions f is smallest at p = f (the network learns where in a voxel the edge lies).
    f = torch.from_numpy(rng.uniform(0.05, 0.95, size=(1, 4, 5, 6))).float()
    exact = torch.stack([torch.zeros_like(f), torch.log(f / (1 - f))], dim=1)
    for delta in (-0.5, 0.5):
        _, t_off = loss(exact + torch.tensor([0.0, delta]).view(1, 2, 1, 1, 1), f, model)
        _, t_ok = loss(exact, f, model)
        assert t_ok["ce"] < t_off["ce"]
    with pytest.raises(ValueError, match="kind"):
        CompoundLoss(kind="focal")


def test_l2_term_equals_hand_sum_over_kernels_only() -> None:
    model = build_vnet(VNetConfig(base_width=4, depth=2, convs_per_stage=(1, 1, 1), kernel_size=3, norm="group"),
                       seed=2)
    expected = 0.0
    for name, p in model.named_parameters():
        module = model.get_submodule(name.rsplit(".", 1)[0])
        if isinstance(module, (nn.Conv3d, nn.ConvTranspose3d)) and name.endswith("weight"):
            expected += float((p.detach().double() ** 2).sum())
    assert l2_penalty(model).item() == pytest.approx(expected, rel=1e-5)
    # biases, PReLU slopes and norm parameters do not count
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.PReLU, nn.GroupNorm)):
                for p in m.parameters():
                    p.add_(10.0)
            if isinstance(m, nn.Conv3d) and m.bias is not None:
                m.bias.add_(10.0)
    assert l2_penalty(model).item() == pytest.approx(expected, rel=1e-5)
    lam = 1e-3
    logits = torch.zeros(1, 2, 4, 4, 4)
    target = torch.zeros(1, 4, 4, 4, dtype=torch.long)
    total, terms = CompoundLoss(l2_lambda=lam)(logits, target, model)
    assert terms["l2"] == pytest.approx(lam * expected, rel=1e-5)
    assert total.item() == pytest.approx(terms["dice"] + lam * expected, rel=1e-5)


def test_l2_gradient_reaches_kernels() -> None:
    model = build_vnet(TINY, seed=0)
    l2_penalty(model).backward()
    conv = model.input_conv[0]
    assert torch.allclose(conv.weight.grad, 2 * conv.weight.detach())
    assert conv.bias.grad is None


def test_param_groups_split_kernels_from_the_rest() -> None:
    model = build_vnet(TINY, seed=0)
    groups = param_groups(model, 0.01)
    assert [g["weight_decay"] for g in groups] == [0.01, 0.0]
    kernels = {id(p) for p in groups[0]["params"]}
    for m in model.modules():
        if isinstance(m, (nn.Conv3d, nn.ConvTranspose3d)):
            assert id(m.weight) in kernels and id(m.bias) not in kernels
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))


@pytest.mark.parametrize("kind", ["dice", "dice_ce"])
def test_tiny_vnet_overfits_a_synthetic_case(kind: str) -> None:
    """Dice + L2 with Adam drives a tiny V-Net to Dice > 0.9 on an ellipsoid in noise within a minute."""
    rng = np.random.default_rng(0)
    shape = (32, 32, 32)
    mask = _ellipsoid(shape, (9.0, 6.0, 11.0), centre=(15.0, 17.0, 14.0))
    image = np.where(mask, 1.0, -1.0) * 0.5 + rng.normal(0.0, 0.6, size=shape)
    # Control: voxel-wise thresholding scores Dice ≈ 0.37 here, so the net must use spatial context.
    threshold = image > 0
    assert 2 * (threshold & mask).sum() / (threshold.sum() + mask.sum()) < 0.5
    x = torch.from_numpy(image).float()[None, None]
    y = torch.from_numpy(mask).long()[None]
    model = build_vnet(TINY, seed=0)
    loss_fn = CompoundLoss(l2_lambda=1e-5, kind=kind)
    optimiser = torch.optim.Adam(model.parameters(), lr=3e-3, weight_decay=0.0)
    start = time.perf_counter()
    dice = 0.0
    for step in range(200):
        optimiser.zero_grad()
        total, terms = loss_fn(model(x), y, model)
        total.backward()
        optimiser.step()
        if step % 10 == 9:
            with torch.no_grad():
                pred = model(x).argmax(1)
            dice = 2 * float(((pred == 1) & (y == 1)).sum()) / float((pred == 1).sum() + (y == 1).sum())
            if dice > 0.9:
                break
    elapsed = time.perf_counter() - start
    assert dice > 0.9, f"Dice {dice:.3f} after {step + 1} steps"
    assert elapsed < 60
    assert terms["l2"] > 0
