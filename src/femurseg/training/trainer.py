"""The training loop: :func:`fit` turns a labelled cohort into a model bundle.

A run folder holds everything of one run::

    RUN_DIR/config.json              the resolved TrainConfig, femurseg version, seed, split, device
    RUN_DIR/log.csv                  one row per step: step, lr, loss, dice, l2, ce, validation Dice, seconds
    RUN_DIR/cache/                   prepared ROIs (.npy, memory-mapped), reused on --resume
    RUN_DIR/checkpoints/last.pt      weights, optimiser, scheduler, step, best so far, RNG states (every
                                     ``checkpoint_every`` steps): a killed run resumed from it ends with exactly
                                     the weights of an uninterrupted run
    RUN_DIR/checkpoints/best.pt      the weights of the best validation Dice
    RUN_DIR/model/                   the exported bundle (best weights), what ``fit`` returns

Step-based: ``steps`` optimiser steps of ``batch_size`` patches (no epochs; cohorts differ in size).
"""

from __future__ import annotations

import csv
import io
import logging
import math
import os
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from femurseg.config import to_dict
from femurseg.errors import InputError
from femurseg.training.config import TrainConfig
from femurseg.training.data import Volume, find_cases, prepare_volumes, split_cases
from femurseg.training.distributed import DistInfo, barrier, cleanup, init_distributed, mean_over_ranks
from femurseg.training.patches import PatchDataset

log = logging.getLogger(__name__)

LOG_COLUMNS = ("step", "lr", "loss", "dice", "l2", "ce", "val_dice_right", "val_dice_left", "val_dice", "seconds")
#: Extra image kept around each ROI beyond the jitter, for rotated/zoomed-out patches [mm].
_ROTATION_CONTEXT_MM = 10.0
#: Config fields that may change on --resume without changing the result.
_RESUMABLE_CHANGES = {"device", "num_workers", "num_threads", "val_every"}


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """The torch device for ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"mps"``.

    Raises
    ------
    InputError
        The asked device is not available.
    """
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", local_rank)
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cuda":
        if not torch.cuda.is_available():
            raise InputError("device cuda asked for, but no CUDA GPU is available to torch; use --device cpu")
        return torch.device("cuda", local_rank)
    if name == "mps":
        if not (getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()):
            raise InputError("device mps asked for, but MPS is not available; use --device cpu")
        return torch.device("mps")
    return torch.device("cpu")


def lr_factor(step: int, *, steps: int, warmup_steps: int, schedule: str) -> float:
    """Learning-rate multiplier at (0-based) ``step``: linear warm-up, then poly (exponent 0.9) or cosine to 0."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    t = (step - warmup_steps) / max(1, steps - warmup_steps)
    t = min(max(t, 0.0), 1.0)
    if schedule == "poly":
        return (1.0 - t) ** 0.9
    return 0.5 * (1.0 + math.cos(math.pi * t))


# ---------------------------------------------------------------------------------------------------------------
# RNG state, checkpoints, log


def _rng_state() -> dict[str, Any]:
    state = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _save_torch(obj: Any, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def _write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def _fmt(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.7g}"
    return str(value)


def _truncate_log(path: Path, step: int) -> None:
    """Keep the header and the rows up to ``step`` (a resumed run writes the rest again)."""
    if not path.is_file():
        return
    with path.open(newline="", encoding="utf-8") as fh:
        rows = list(csv.reader(fh))
    kept = [rows[0]] + [r for r in rows[1:] if r and int(r[0]) <= step] if rows else []
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows(kept)
    _write_text(path, buf.getvalue())


# ---------------------------------------------------------------------------------------------------------------
# Validation


def validate(
    model: torch.nn.Module,
    volumes: Sequence[Volume],
    *,
    config: TrainConfig,
    device: torch.device,
) -> dict[str, float]:
    """Dice, sensitivity and specificity per side on the full validation ROIs at model resolution.

    The sliding window of ``femurseg segment`` (:func:`femurseg.models.window.sliding_window_probabilities`, via
    :func:`~femurseg.training.evaluate.predict_volume`) over the inference window, padded with −1 like inference.  Specificity counts the ROI only (it depends on the field of view).

    Returns
    -------
    dict
        ``dice_right``, ``dice_left``, ``sensitivity_right``, ... (means over cases; NaN for a side without
        cases) and ``dice`` (mean of the sides present).
    """
    from femurseg.evaluation.metrics import dice, sensitivity, specificity
    from femurseg.training.evaluate import predict_volume, side_classes

    pp = config.preprocessing
    per_side: dict[str, dict[str, list[float]]] = {"right": {}, "left": {}}
    was_training = model.training
    model.eval()
    for vol in volumes:
        pred, target = predict_volume(model, vol, preprocessing=pp, device=device, overlap=config.sw_overlap)
        for side, k in side_classes(vol):
            p, t = pred == k, target == k
            m = per_side[side]
            m.setdefault("dice", []).append(dice(p, t))
            m.setdefault("sensitivity", []).append(sensitivity(p, t))
            m.setdefault("specificity", []).append(specificity(p, t))
    model.train(was_training)
    out: dict[str, float] = {}
    for side, m in per_side.items():
        for name in ("dice", "sensitivity", "specificity"):
            vals = [v for v in m.get(name, []) if not math.isnan(v)]
            out[f"{name}_{side}"] = float(np.mean(vals)) if vals else float("nan")
    sides = [out[f"dice_{s}"] for s in ("right", "left") if not math.isnan(out[f"dice_{s}"])]
    out["dice"] = float(np.mean(sides)) if sides else float("nan")
    out["cases"] = float(len({v.case_id for v in volumes}))
    return out


# ---------------------------------------------------------------------------------------------------------------
# The run


def _run_meta(config: TrainConfig, *, data_dir: Path | list[Path], dist_info: DistInfo, device: torch.device, train_ids, val_ids) -> dict:
    import monai

    from femurseg._version import __version__

    return {
        "femurseg_version": __version__,
        "seed": config.seed,
        "config": to_dict(config),
        "data_dir": (str(Path(data_dir).resolve()) if isinstance(data_dir, Path)
                     else [str(Path(d).resolve()) for d in data_dir]),
        "device": str(device),
        "world_size": dist_info.world_size,
        "torch_version": torch.__version__,
        "monai_version": monai.__version__,
        "train_cases": list(train_ids),
        "val_cases": list(val_ids),
    }


def _load_init_bundle(config: TrainConfig):  # -> femurseg.models.bundle.Bundle
    """The bundle whose weights start the run (``config.init_weights``); its architecture must be ``config.network``."""
    from femurseg.models.bundle import load_bundle

    bundle = load_bundle(config.init_weights, device="cpu")
    if bundle.config != config.network:
        raise InputError(
            f"{config.init_weights}: its network {to_dict(bundle.config)} differs from the config's network; "
            "init_weights needs the same architecture"
        )
    return bundle


def _lineage(bundle) -> dict:  # noqa: ANN001
    """Where a run's initial weights came from: the bundle's path, name, weights hash and its own steps in all."""
    before = bundle.meta.get("training", {})
    return {"bundle": str(bundle.path), "name": bundle.meta.get("name"), "weights_sha256": bundle.meta.get("weights_sha256"),
            "steps_total": int(before.get("steps_total", before.get("steps", 0)))}


def _check_resumable(saved: dict, config: TrainConfig, run_dir: Path) -> None:
    old = saved.get("config", {})
    new = to_dict(config)
    changed = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k) and k not in _RESUMABLE_CHANGES)
    if changed:
        raise InputError(
            f"{run_dir}: cannot resume with a different configuration ({', '.join(changed)} changed); "
            "resume with the run's own config.json or start a new run folder"
        )


def _train_step(model, criterion, raw_model, optimizer, scheduler, x, y, *, config: TrainConfig, device) -> tuple[torch.Tensor, dict[str, float], float]:  # noqa: ANN001
    """One optimiser step; returns (loss, terms, lr used)."""
    lr = optimizer.param_groups[0]["lr"]
    amp = config.amp and device.type == "cuda"
    with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=amp):
        logits = model(x)
    loss, terms = criterion(logits.float(), y, raw_model)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if config.grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
    optimizer.step()
    scheduler.step()
    return loss.detach(), terms, lr


class _StepBatches(torch.utils.data.Sampler):
    """This rank's patch indices of each step ``start..steps-1`` (its slice of the global batch)."""

    def __init__(self, *, start: int, steps: int, batch_size: int, rank: int, world_size: int) -> None:
        self.start, self.steps, self.batch, self.rank, self.world = start, steps, batch_size, rank, world_size
        self.per_rank = batch_size // world_size

    def __iter__(self):  # noqa: ANN204
        for s in range(self.start, self.steps):
            first = s * self.batch + self.rank * self.per_rank
            yield list(range(first, first + self.per_rank))

    def __len__(self) -> int:
        return self.steps - self.start


def _worker_init(_: int) -> None:
    torch.set_num_threads(1)


def fit(
    config: TrainConfig,
    *,
    data_dir: str | Path | Sequence[str | Path],
    run_dir: str | Path,
    resume: bool = False,
    progress: bool = True,
    cache_dir: str | Path | None = None,
) -> Path:
    """Train a V-Net on a labelled cohort and export the best model as a bundle.

    Parameters
    ----------
    config : TrainConfig
        The recipe (network, preprocessing, loss, optimiser, schedule, augmentation, seed, device).
    data_dir : path or sequence of paths
        A cohort folder (images/, labels/, cohort.csv) or an nnU-Net raw dataset (dataset.json, imagesTr/,
        labelsTr/), or several (case ids then ``<folder>_<case>``); see :func:`femurseg.training.data.find_cases`.
    run_dir : path
        The run folder (created; must be new or empty unless ``resume``).
    resume : bool
        Continue from ``run_dir/checkpoints/last.pt``; the result equals an uninterrupted run's.
    progress : bool
        Show progress bars (rank 0 only).
    cache_dir : path, optional
        Where prepared cases are cached (default ``run_dir/cache``); runs that share it prepare each case once
        (the key covers the files and the preprocessing).

    Returns
    -------
    Path
        ``run_dir/model``, the bundle of the best validation weights (the last weights without validation cases).

    Raises
    ------
    InputError
        Bad data folder, run folder in use (without ``resume``) or without a checkpoint (with ``resume``),
        a changed configuration on resume, an unavailable device, a batch not divisible by the ranks.

    Notes
    -----
    Sets torch's CPU thread count for the process (``config.num_threads``; 0: the cores divided by the local
    ranks).  Under torchrun (``RANK``/``WORLD_SIZE`` set) this joins the process group and trains data-parallel; see
    :mod:`femurseg.training.distributed`.
    """
    data_dir = Path(data_dir) if isinstance(data_dir, (str, Path)) else [Path(d) for d in data_dir]
    run_dir = Path(run_dir)
    want = config.device if config.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    dist_info = init_distributed("cuda" if want == "cuda" else "cpu")
    try:
        device = resolve_device(config.device, dist_info.local_rank)
        if config.batch_size % dist_info.world_size:
            raise InputError(
                f"batch_size {config.batch_size} is not divisible by the {dist_info.world_size} data-parallel ranks"
            )
        threads = config.num_threads or max(1, (os.cpu_count() or 1) // dist_info.local_world_size)
        torch.set_num_threads(threads)
        _check_run_dir(run_dir, resume)
        # Every rank checks before anyone writes, so the ranks agree on the run folder's state.
        barrier(dist_info)
        records = _select_cases(find_cases(data_dir), config)
        train_rec, val_rec = split_cases(records, val_fraction=config.val_fraction, val_cases=config.val_cases, seed=config.seed)
        meta = _run_meta(config, data_dir=data_dir, dist_info=dist_info, device=device,
                         train_ids=[r.case_id for r in train_rec], val_ids=[r.case_id for r in val_rec])
        init_bundle = _start_run(config, run_dir, meta, resume=resume, dist_info=dist_info)
        train_vol, val_vol = _prepare_data(config, records, val_rec, cache=Path(cache_dir or run_dir / "cache"),
                                           dist_info=dist_info, progress=progress)
        if not train_vol:
            raise InputError(f"{data_dir}: no volume to train on in the training cases (no femur)")
        log.info("training on %d cases (%d volumes), validating on %d cases; device %s, %d rank(s)",
                 len(train_rec), len(train_vol), len(val_rec), device, dist_info.world_size)
        parts = _build(config, device, dist_info, init_bundle)
        del init_bundle
        state = _restore_or_seed(config, run_dir, parts, resume=resume, dist_info=dist_info)
        barrier(dist_info)
        best, elapsed = _train_loop(config, parts, state, train_vol, val_vol, run_dir=run_dir, device=device,
                                    dist_info=dist_info, progress=progress)
        bundle = run_dir / "model"
        if dist_info.is_main:
            _export(parts.raw_model, config, run_dir=run_dir, best=best, meta=meta, elapsed=elapsed, device=device,
                    world_size=dist_info.world_size, n_train=len(train_rec), n_val=len(val_rec))
        barrier(dist_info)
        return bundle
    finally:
        cleanup(dist_info)


def _check_run_dir(run_dir: Path, resume: bool) -> None:
    """A resumed run needs its last checkpoint; a new run needs a new or empty folder."""
    if resume:
        if not (run_dir / "checkpoints" / "last.pt").is_file():
            raise InputError(f"{run_dir}: nothing to resume (no checkpoints/last.pt); drop --resume to start")
    elif run_dir.exists() and any(run_dir.iterdir()):
        raise InputError(f"{run_dir}: the run folder is not empty; use --resume to continue it, or a new folder")


def _start_run(config: TrainConfig, run_dir: Path, meta: dict, *, resume: bool, dist_info: Any) -> Any:
    """Check a resumed run's configuration or load the initial weights; rank 0 writes ``config.json``.  Returns the
    initial-weights bundle (None when resuming or starting from random weights)."""
    init_bundle = None
    if resume:
        from femurseg.config import read_json

        saved = read_json(run_dir / "config.json")
        _check_resumable(saved, config, run_dir)
        meta["initialised_from"] = saved.get("initialised_from")
        meta["qc_limits"] = saved.get("qc_limits")
    elif config.init_weights is not None:
        # Loaded once, here: a wrong bundle fails before the cases are prepared.
        init_bundle = _load_init_bundle(config)
        meta["initialised_from"] = _lineage(init_bundle)
        # A fine-tuned model keeps its parent's quality-control limits (e.g. a paediatric bundle's head sizes).
        meta["qc_limits"] = init_bundle.meta.get("qc_limits")
    if dist_info.is_main:
        from femurseg.config import save_json

        (run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
        save_json(meta, run_dir / "config.json")
    return init_bundle


def _select_cases(records: list, config: TrainConfig) -> list:
    """The records ``config.train_cases`` (with ``config.val_cases``) name, in the cohort's order; all without."""
    if not config.train_cases:
        return records
    wanted = set(config.train_cases) | set(config.val_cases)
    unknown = sorted(wanted - {r.case_id for r in records})
    if unknown:
        raise InputError(f"train_cases/val_cases: unknown case(s) {', '.join(unknown[:5])}")
    return [r for r in records if r.case_id in wanted]


def _prepare_data(config: TrainConfig, records: list, val_rec: list, *, cache: Path, dist_info: Any,
                  progress: bool) -> tuple[list[Volume], list[Volume]]:
    """(training volumes, validation volumes): rank 0 prepares and caches the cases, the others read the cache."""
    context_mm = config.augmentation.roi_jitter_mm + _ROTATION_CONTEXT_MM
    pp = config.preprocessing
    volumes: list[Volume] = []
    if dist_info.is_main:
        volumes = prepare_volumes(records, preprocessing=pp, context_mm=context_mm, cache_dir=cache, progress=progress)
    barrier(dist_info)
    if not dist_info.is_main:
        volumes = prepare_volumes(records, preprocessing=pp, context_mm=context_mm, cache_dir=cache)
    val_ids = {r.case_id for r in val_rec}
    return [v for v in volumes if v.case_id not in val_ids], [v for v in volumes if v.case_id in val_ids]


@dataclass
class _Parts:
    """What one training run optimises: the network (DDP-wrapped or not), its raw module, loss, optimiser,
    schedule."""

    model: torch.nn.Module
    raw_model: torch.nn.Module
    criterion: Any
    optimizer: torch.optim.Optimizer
    scheduler: Any


def _build(config: TrainConfig, device: torch.device, dist_info: Any, init_bundle: Any) -> _Parts:
    from femurseg.models.vnet import build_vnet
    from femurseg.training.loss import CompoundLoss, param_groups

    raw_model = build_vnet(config.network, seed=config.seed).to(device)
    if init_bundle is not None:
        raw_model.load_state_dict(init_bundle.model.state_dict())
        log.info("initial weights from %s (sha256 %s)", init_bundle.path, init_bundle.meta.get("weights_sha256"))
    model = raw_model
    if dist_info.enabled:
        model = torch.nn.parallel.DistributedDataParallel(
            raw_model, device_ids=[device.index] if device.type == "cuda" else None
        )
    criterion = CompoundLoss(l2_lambda=config.l2_lambda, kind=config.loss)
    groups = param_groups(raw_model, config.weight_decay)
    if config.optimizer == "adamw":
        optimizer = torch.optim.AdamW(groups, lr=config.lr, betas=(config.momentum, 0.999))
    else:
        optimizer = torch.optim.SGD(groups, lr=config.lr, momentum=config.momentum, nesterov=True)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda s: lr_factor(s, steps=config.steps, warmup_steps=config.warmup_steps, schedule=config.schedule),
    )
    return _Parts(model, raw_model, criterion, optimizer, scheduler)


def _restore_or_seed(config: TrainConfig, run_dir: Path, parts: _Parts, *, resume: bool,
                     dist_info: Any) -> dict[str, Any]:
    """Resume from the last checkpoint (weights, optimiser, schedule, RNG, log) or seed a new run; returns
    ``{"start", "elapsed0", "best"}``."""
    ckpt_dir = run_dir / "checkpoints"
    log_path = run_dir / "log.csv"
    state: dict[str, Any] = {"start": 0, "elapsed0": 0.0, "best": {"dice": -1.0, "step": 0, "metrics": {}}}
    if resume:
        ckpt = torch.load(ckpt_dir / "last.pt", map_location="cpu", weights_only=False)
        parts.raw_model.load_state_dict(ckpt["model"])
        parts.optimizer.load_state_dict(ckpt["optimizer"])
        parts.scheduler.load_state_dict(ckpt["scheduler"])
        state = {"start": int(ckpt["step"]), "elapsed0": float(ckpt["elapsed"]), "best": ckpt["best"]}
        rng = ckpt["rng"] if dist_info.rank == 0 else torch.load(ckpt_dir / f"rng_rank{dist_info.rank}.pt", weights_only=False)
        _set_rng_state(rng["state"] if "state" in rng else rng)
        if dist_info.is_main:
            _truncate_log(log_path, state["start"])
        log.info("resumed %s at step %d", run_dir, state["start"])
    else:
        torch.manual_seed(config.seed)
        random.seed(config.seed)
        np.random.seed(config.seed % 2**32)
        if dist_info.is_main:
            _write_text(log_path, ",".join(LOG_COLUMNS) + "\n")
    return state


def _loader(config: TrainConfig, train_vol: list[Volume], start: int, device: torch.device,
            dist_info: Any) -> torch.utils.data.DataLoader:
    """Batches of augmented patches from step ``start`` on, this rank's share of each global batch."""
    pp = config.preprocessing
    dataset = PatchDataset(
        train_vol, patch_size_zyx=tuple(pp.patch_size_zyx), hu_window=tuple(pp.hu_window),
        augmentation=config.augmentation, foreground_fraction=config.foreground_fraction,
        num_classes=2 if pp.task == "femur" else 3, seed=config.seed, length=config.steps * config.batch_size,
        roi_jitter_mm=config.augmentation.roi_jitter_mm if pp.task == "femur" else 0.0,
        head_fraction=config.head_fraction, soft_targets=config.soft_targets,
    )
    sampler = _StepBatches(start=start, steps=config.steps, batch_size=config.batch_size,
                           rank=dist_info.rank, world_size=dist_info.world_size)
    return torch.utils.data.DataLoader(
        dataset, batch_sampler=sampler, num_workers=config.num_workers,
        worker_init_fn=_worker_init if config.num_workers else None,
        pin_memory=device.type == "cuda", persistent_workers=False,
    )


def _train_loop(config: TrainConfig, parts: _Parts, state: dict[str, Any], train_vol: list[Volume],
                val_vol: list[Volume], *, run_dir: Path, device: torch.device, dist_info: Any,
                progress: bool) -> tuple[dict[str, Any], float]:
    """Train from ``state["start"]`` to ``config.steps``: log every step, validate and checkpoint on schedule.
    Returns (the best validation record, the run's total seconds)."""
    ckpt_dir = run_dir / "checkpoints"
    log_path = run_dir / "log.csv"
    start, elapsed0, best = state["start"], state["elapsed0"], state["best"]
    loader = _loader(config, train_vol, start, device, dist_info)
    bar = None
    if progress and dist_info.is_main:
        from tqdm.auto import tqdm

        bar = tqdm(total=config.steps, initial=start, desc="training", unit="step")
    t0 = time.perf_counter()
    parts.model.train()
    step = start
    for x, y in loader:
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        loss, terms, lr = _train_step(parts.model, parts.criterion, parts.raw_model, parts.optimizer, parts.scheduler,
                                      x, y, config=config, device=device)
        loss_v, dice_v, l2_v, ce_v = mean_over_ranks([float(loss), terms["dice"], terms["l2"], terms["ce"]], dist_info, device)
        step += 1
        row: dict[str, Any] = {"step": step, "lr": lr, "loss": loss_v, "dice": dice_v, "l2": l2_v, "ce": ce_v}
        last = step == config.steps
        if (step % config.val_every == 0 or last) and val_vol:
            if dist_info.is_main:
                metrics = validate(parts.raw_model, val_vol, config=config, device=device)
                row.update(val_dice_right=metrics["dice_right"], val_dice_left=metrics["dice_left"], val_dice=metrics["dice"])
                if not math.isnan(metrics["dice"]) and metrics["dice"] > best["dice"]:
                    best = {"dice": metrics["dice"], "step": step, "metrics": metrics}
                    _save_torch({"step": step, "model": parts.raw_model.state_dict(), "metrics": metrics},
                                ckpt_dir / "best.pt")
                log.info("step %d: validation Dice right %.4f left %.4f", step, metrics["dice_right"], metrics["dice_left"])
            barrier(dist_info)
        row["seconds"] = elapsed0 + time.perf_counter() - t0
        if dist_info.is_main:
            with log_path.open("a", encoding="utf-8") as fh:
                fh.write(",".join(_fmt(row.get(c)) for c in LOG_COLUMNS) + "\n")
        if step % config.checkpoint_every == 0 or last:
            _checkpoint(config, parts, step=step, best=best, seconds=row["seconds"], ckpt_dir=ckpt_dir,
                        dist_info=dist_info)
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{loss_v:.4f}")
    if bar is not None:
        bar.close()
    return best, elapsed0 + time.perf_counter() - t0


def _checkpoint(config: TrainConfig, parts: _Parts, *, step: int, best: dict, seconds: float, ckpt_dir: Path,
                dist_info: Any) -> None:
    """``last.pt`` (rank 0: weights, optimiser, schedule, RNG, best so far) and each other rank's RNG state."""
    rng = _rng_state()
    if not dist_info.is_main:
        _save_torch({"step": step, "state": rng}, ckpt_dir / f"rng_rank{dist_info.rank}.pt")
    barrier(dist_info)
    if dist_info.is_main:
        _save_torch(
            {"step": step, "model": parts.raw_model.state_dict(), "optimizer": parts.optimizer.state_dict(),
             "scheduler": parts.scheduler.state_dict(), "rng": rng, "best": best,
             "elapsed": seconds, "data_stream": {"seed": config.seed, "next_patch": step * config.batch_size}},
            ckpt_dir / "last.pt",
        )


def _export(raw_model, config: TrainConfig, *, run_dir: Path, best: dict, meta: dict, elapsed: float,  # noqa: ANN001
            device: torch.device, world_size: int, n_train: int, n_val: int) -> Path:
    """Save the best weights (the last ones without validation) as ``run_dir/model``."""
    from femurseg.conventions import LABEL_NAMES
    from femurseg.models.bundle import save_bundle
    from femurseg.models.vnet import build_vnet

    model = build_vnet(config.network, seed=config.seed)
    best_path = run_dir / "checkpoints" / "best.pt"
    if best["step"] and best_path.is_file():
        model.load_state_dict(torch.load(best_path, map_location="cpu", weights_only=False)["model"])
    else:
        model.load_state_dict({k: v.detach().cpu() for k, v in raw_model.state_dict().items()})
    model.eval()
    if config.preprocessing.task == "femur":
        labels = {"background": 0, "femur": 1}
    else:
        labels = {name: value for value, name in LABEL_NAMES.items()}
    metrics = {k: v for k, v in best.get("metrics", {}).items()}
    metrics["best_step"] = best["step"]
    training = {
        "cases_train": n_train,
        "cases_val": n_val,
        "train_cases": meta["train_cases"],
        "val_cases": meta["val_cases"],
        "steps": config.steps,
        "batch_size": config.batch_size,
        "seconds": round(elapsed, 1),
        "device": str(device),
        "world_size": world_size,
        "seed": config.seed,
        "loss": config.loss,
        "l2_lambda": config.l2_lambda,
        "optimizer": config.optimizer,
        "lr": config.lr,
        "schedule": config.schedule,
        "augmentation": to_dict(config.augmentation),
        "foreground_fraction": config.foreground_fraction,
        "head_fraction": config.head_fraction,
        "soft_targets": config.soft_targets,
        "data_dir": meta["data_dir"],
        # A continued run: its starting bundle, and the optimiser steps behind the weights in all.
        "initialised_from": meta.get("initialised_from"),
        "steps_total": config.steps + (meta.get("initialised_from") or {}).get("steps_total", 0),
    }
    return save_bundle(
        run_dir / "model", model=model, config=config.network, preprocessing=config.preprocessing, labels=labels,
        training=training, metrics=metrics, name=f"femurseg-{config.preprocessing.task}-{run_dir.name}",
        qc_limits=meta.get("qc_limits"),
    )
