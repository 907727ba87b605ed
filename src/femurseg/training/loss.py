"""The training objective of Zhao et al. (2020): soft Dice loss + λ · L2 weight regulariser (optionally + CE).

The L2 term is added to the loss explicitly, over convolution kernels only, so the optimiser must not decay the
same weights again: build it with ``weight_decay=0`` when ``l2_lambda > 0`` (or use :func:`param_groups`, which
puts every non-kernel parameter in a group with ``weight_decay=0``).
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["soft_dice_loss", "target_probabilities", "l2_penalty", "kernel_weights", "param_groups", "CompoundLoss"]

_KINDS = ("dice", "dice_ce")


def soft_dice_loss(logits: Tensor, target: Tensor, *, smooth: float = 1e-5) -> Tensor:
    """Milletari's soft Dice loss over the foreground classes.

    With ``p = softmax(logits)`` and ``g`` the target's class probabilities (one-hot for class indices), for every
    sample ``n`` and foreground class ``c >= 1``::

        D[n, c] = 1 - (2 Σ_v p[n,c,v] g[n,c,v] + smooth) / (Σ_v p[n,c,v]² + Σ_v g[n,c,v]² + smooth)

    and the loss is the mean of ``D`` over foreground classes and samples.  Computed per sample (not over the
    batch as one volume) so that data-parallel training that splits a batch across processes and averages
    their losses equals single-process training on the whole batch.  A sample without the class contributes
    ``1 - smooth / (Σ p² + smooth)``: ~1 unless the prediction is empty too (then 0), which penalises any
    false positive in an empty patch strongly; use ``kind="dice_ce"`` in :class:`CompoundLoss` to soften it.

    Parameters
    ----------
    logits : (N, C, Z, Y, X) Tensor
        Network output, C >= 2 (background first).  Computed in float32 whatever the input dtype.
    target : (N, Z, Y, X) Tensor
        int64: the class index of every voxel, in ``0 .. C-1``; or, with C = 2, float: the fraction of every
        voxel that is foreground, in [0, 1] (partial-volume targets).
    smooth : float
        Added to numerator and denominator; keeps the loss defined for empty classes.

    Returns
    -------
    () Tensor
        The loss, in [0, 1].
    """
    probs = torch.softmax(logits.float(), dim=1)[:, 1:]
    g = target_probabilities(logits, target)[:, 1:]
    dims = tuple(range(2, probs.dim()))
    intersection = (probs * g).sum(dims)
    denominator = (probs * probs).sum(dims) + (g * g).sum(dims)
    dice = (2.0 * intersection + smooth) / (denominator + smooth)
    return 1.0 - dice.mean()


def target_probabilities(logits: Tensor, target: Tensor) -> Tensor:
    """(N, C, Z, Y, X) float32 class probabilities of a target: one-hot of class indices, or ``(1 - f, f)`` of a
    two-class foreground fraction ``f``."""
    _check(logits, target)
    if target.dtype.is_floating_point:
        f = target.float().clamp(0.0, 1.0)
        return torch.stack([1.0 - f, f], dim=1)
    return F.one_hot(target.long(), logits.shape[1]).movedim(-1, 1).float()


def _check(logits: Tensor, target: Tensor) -> None:
    if logits.dim() < 3 or logits.shape[1] < 2:
        raise ValueError(f"logits must be (N, C>=2, ...), got shape {tuple(logits.shape)}")
    if target.shape != logits.shape[:1] + logits.shape[2:]:
        raise ValueError(
            f"target shape {tuple(target.shape)} must equal logits shape without the class axis "
            f"{tuple(logits.shape[:1] + logits.shape[2:])}"
        )
    if target.dtype.is_floating_point and logits.shape[1] != 2:
        raise ValueError("a fractional (float) target needs two classes; give class indices (int64) otherwise")


def kernel_weights(model: nn.Module) -> Iterator[nn.Parameter]:
    """Kernels of every convolution and transposed convolution in ``model`` (no biases, PReLU, norms).

    Works on wrapped models too (DistributedDataParallel, torch.compile), since they hold the model as a submodule.
    """
    seen: set[int] = set()
    for module in model.modules():
        if isinstance(module, nn.modules.conv._ConvNd) and id(module.weight) not in seen:
            seen.add(id(module.weight))
            yield module.weight


def l2_penalty(model: nn.Module) -> Tensor:
    """Σ w² over the convolution and transposed-convolution kernels of ``model``.

    Biases, PReLU slopes and normalisation parameters are excluded: decaying them constrains nothing useful and
    slows training.

    Returns
    -------
    () Tensor
        Float32 scalar on the model's device (0 for a model without convolutions).
    """
    weights = list(kernel_weights(model))
    if not weights:
        return torch.zeros(())
    return torch.stack([w.float().pow(2).sum() for w in weights]).sum()


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Optimiser parameter groups that decay only convolution kernels, as :func:`l2_penalty` penalises them.

    Use this for decoupled weight decay (AdamW with ``l2_lambda=0`` in :class:`CompoundLoss`); with an explicit
    L2 term (``l2_lambda > 0``) pass ``weight_decay=0`` (or give the optimiser ``weight_decay=0``).

    Parameters
    ----------
    model : nn.Module
        The network (possibly wrapped).
    weight_decay : float
        Decay of the kernel group.

    Returns
    -------
    list of dict
        ``[{"params": kernels, "weight_decay": weight_decay}, {"params": others, "weight_decay": 0.0}]``
        (only trainable parameters; an empty group is left out).
    """
    kernel_ids = {id(w) for w in kernel_weights(model)}
    kernels, others = [], []
    for p in model.parameters():
        if p.requires_grad:
            (kernels if id(p) in kernel_ids else others).append(p)
    groups = [{"params": kernels, "weight_decay": float(weight_decay)}, {"params": others, "weight_decay": 0.0}]
    return [g for g in groups if g["params"]]


class CompoundLoss(nn.Module):
    """``soft Dice [+ cross-entropy] + l2_lambda · Σ w²`` (Zhao et al. 2020 use Dice + L2).

    Parameters
    ----------
    l2_lambda : float
        Weight λ of the kernel L2 term; with λ > 0 the optimiser's ``weight_decay`` must be 0.
    kind : {"dice", "dice_ce"}
        "dice": the paper's loss; "dice_ce": adds the mean voxel-wise cross-entropy with weight 1 (nnU-Net's
        choice; steadier on patches without femur).
    """

    def __init__(self, *, l2_lambda: float = 1e-5, kind: str = "dice") -> None:
        super().__init__()
        if kind not in _KINDS:
            raise ValueError(f"kind must be one of {', '.join(_KINDS)}; got {kind!r}")
        if l2_lambda < 0:
            raise ValueError(f"l2_lambda must be >= 0, got {l2_lambda}")
        self.l2_lambda = float(l2_lambda)
        self.kind = kind

    def forward(self, logits: Tensor, target: Tensor, model: nn.Module) -> tuple[Tensor, dict[str, float]]:
        """Total loss and its terms.

        Parameters
        ----------
        logits : (N, C, Z, Y, X) Tensor
            Network output.
        target : (N, Z, Y, X) Tensor
            Class indices (int64), or the foreground fraction (float, two classes): see :func:`soft_dice_loss`.
        model : nn.Module
            The network whose kernels the L2 term penalises.

        Returns
        -------
        total : () Tensor
            The loss to back-propagate (float32).
        terms : dict of str to float
            ``{"dice": soft Dice loss, "l2": λ·Σw², "ce": cross-entropy}``, each as it enters ``total``
            (``ce`` is still reported, for monitoring, with ``kind="dice"``).
        """
        dice = soft_dice_loss(logits, target)
        # Class indices, or class probabilities (soft targets): cross_entropy takes either.
        ce_target = target_probabilities(logits, target) if target.dtype.is_floating_point else target.long()
        if self.kind == "dice_ce":
            ce = F.cross_entropy(logits.float(), ce_target)
            total = dice + ce
        else:
            with torch.no_grad():
                ce = F.cross_entropy(logits.detach().float(), ce_target)
            total = dice
        if self.l2_lambda > 0:
            l2 = self.l2_lambda * l2_penalty(model)
            total = total + l2.to(total.device)
        else:
            l2 = torch.zeros(())
        return total, {"dice": float(dice.detach()), "l2": float(l2.detach()), "ce": float(ce.detach())}
