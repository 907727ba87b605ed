"""Training throughput on this machine: case preparation, and one training step split into data / augmentation /
forward / backward, with patches per second and peak memory, for the bundled femur model's configuration
(``docs/configs/femur.json``: 3³ kernels, batch norm, 2×64³) and the paper's 5³ net (``TrainConfig()``: 2×96³,
and 2×64³ side by side).

    python benchmarks/train_throughput.py [--steps 3] [--threads 2] [--variants bundled,paper64,paper] [--device cpu]

Data: two synthetic full-size hip scans (512×512×180 at 0.7×0.7×1 mm, int16, .nii.gz) with two femur-like label
shapes (head, neck, shaft), written to a temporary folder, so the benchmark does not depend on the phantom.
Prints a table and writes ``benchmarks/results/train_throughput.json``.  Times are wall-clock on a shared CPU:
compare the rows of one run (ratios), not absolute numbers across machines.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch

from femurseg.config import to_dict
from femurseg.models.vnet import build_vnet, count_parameters
from femurseg.training.config import TrainConfig, load_train_config
from femurseg.training.data import find_cases, prepare_volumes
from femurseg.training.loss import CompoundLoss, param_groups
from femurseg.training.patches import PatchDataset

RESULTS = Path(__file__).resolve().parent / "results"
BUNDLED_CONFIG = Path(__file__).resolve().parents[1] / "docs" / "configs" / "femur.json"


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


def synthetic_scan(seed: int) -> tuple[sitk.Image, sitk.Image]:
    """A 512×512×180 hip-like scan [HU] and its labels (1 right, 2 left femur: head sphere, neck and shaft)."""
    rng = np.random.default_rng(seed)
    shape = (180, 512, 512)
    spacing_xyz = (0.7, 0.7, 1.0)
    origin = (-179.0, -179.0, -90.0)
    z = (np.arange(shape[0]) * spacing_xyz[2] + origin[2])[:, None, None].astype(np.float32)
    y = (np.arange(shape[1]) * spacing_xyz[1] + origin[1])[None, :, None].astype(np.float32)
    x = (np.arange(shape[2]) * spacing_xyz[0] + origin[0])[None, None, :].astype(np.float32)
    body = (x / 170) ** 2 + (y / 120) ** 2 < 1
    image = np.empty(shape, np.float32)
    image[:] = np.where(body, np.float32(40), np.float32(-1000))
    labels = np.zeros(shape, np.uint8)
    for value, sign in ((1, -1.0), (2, 1.0)):
        hx, hz = sign * 90.0 + rng.uniform(-5, 5), 40.0 + rng.uniform(-5, 5)
        r = 24.0 + rng.uniform(-2, 2)
        head = (x - hx) ** 2 + y**2 + (z - hz) ** 2 < r**2
        t = np.clip((z - (hz - 45)) / 45.0, 0, 1)  # neck: from the head down-and-out to the shaft top
        neck = ((x - (hx + sign * 35 * (1 - t))) ** 2 + y**2 < 15.0**2) & (z > hz - 45) & (z < hz)
        shaft = ((x - (hx + sign * 35)) ** 2 + y**2 < 15.0**2) & (z <= hz - 40)
        femur = head | neck | shaft
        labels[femur] = value
        image[femur] = 700.0
    image += rng.normal(0, 20, shape).astype(np.float32)
    img = sitk.GetImageFromArray(image.astype(np.int16))
    img.SetSpacing(spacing_xyz)
    img.SetOrigin(origin)
    lab = sitk.GetImageFromArray(labels)
    lab.CopyInformation(img)
    return img, lab


def make_cohort(root: Path, n: int) -> Path:
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    for i in range(n):
        img, lab = synthetic_scan(i)
        sitk.WriteImage(img, str(root / "images" / f"case{i:03d}.nii.gz"))
        sitk.WriteImage(lab, str(root / "labels" / f"case{i:03d}.nii.gz"))
    return root


def bench_variant(name: str, config: TrainConfig, volumes, *, steps: int, device: torch.device) -> dict:  # noqa: ANN001
    pp = config.preprocessing
    ds = PatchDataset(volumes, patch_size_zyx=tuple(pp.patch_size_zyx), hu_window=tuple(pp.hu_window),
                      augmentation=config.augmentation, foreground_fraction=config.foreground_fraction,
                      num_classes=2, seed=0, length=10_000)
    model = build_vnet(config.network, seed=0).to(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    criterion = CompoundLoss(l2_lambda=config.l2_lambda, kind=config.loss)
    opt = torch.optim.AdamW(param_groups(model, 0.0), lr=config.lr)
    rows = []
    for step in range(steps + 1):  # the first step warms up allocators and is not counted
        t = {"data": 0.0, "augment": 0.0}
        xs, ys = [], []
        for i in range(config.batch_size):
            x, y = ds[step * config.batch_size + i]
            t["data"] += ds.last_timing["crop"]
            t["augment"] += ds.last_timing["spatial"] + ds.last_timing["intensity"]
            xs.append(x)
            ys.append(y)
        x, y = torch.stack(xs).to(device), torch.stack(ys).to(device)
        _sync(device)
        t0 = time.perf_counter()
        # As the trainer: bf16 autocast on a GPU, float32 on the CPU.
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            loss, _ = criterion(model(x), y, model)
        _sync(device)
        t1 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        _sync(device)
        t2 = time.perf_counter()
        t["forward"], t["backward"] = t1 - t0, t2 - t1
        if step:
            rows.append(t)
    mean = {k: float(np.mean([r[k] for r in rows])) for k in rows[0]}
    total = sum(mean.values())
    return {
        "variant": name,
        "patch_size_zyx": list(pp.patch_size_zyx),
        "batch_size": config.batch_size,
        "base_width": config.network.base_width,
        "parameters": count_parameters(model),
        "seconds_per_step": total,
        **{f"{k}_s": v for k, v in mean.items()},
        "augment_share": (mean["data"] + mean["augment"]) / total,
        "patches_per_s": config.batch_size / total,
        "peak_rss_mb": _peak_rss_mb(),
        "peak_gpu_mb": torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None,
    }


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3, help="timed steps per variant (after one warm-up step)")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--variants", default="bundled,paper64,paper",
                        help="comma-separated: bundled (docs/configs/femur.json), paper (5³, 96³), paper64 (5³, 64³)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    bundled = load_train_config(BUNDLED_CONFIG).with_(device=args.device)
    paper = TrainConfig(device=args.device)
    variants = {
        "bundled": bundled,
        "paper": paper,
        "paper64": paper.with_(preprocessing=replace(paper.preprocessing, patch_size_zyx=(64, 64, 64))),
    }
    unknown = [n for n in args.variants.split(",") if n not in variants]
    if unknown:
        parser.error(f"unknown variant(s) {', '.join(unknown)}; choose from {', '.join(variants)}")
    # All variants train at 1 mm on the same ROIs, so the cases are prepared once.
    assert all(v.preprocessing.target_spacing_zyx == bundled.preprocessing.target_spacing_zyx for v in variants.values())
    load_at_start = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        root = make_cohort(Path(tmp) / "cohort", 2)
        t_make = time.perf_counter() - t0
        records = find_cases(root)
        t0 = time.perf_counter()
        volumes = prepare_volumes(records, preprocessing=bundled.preprocessing,
                                  context_mm=max(v.augmentation.roi_jitter_mm for v in variants.values()) + 10.0)
        t_prep = (time.perf_counter() - t0) / len(records)
        # Materialise in memory, as the trainer's memory-mapped cache would after the first pass.
        roi_shapes = [list(v.image.shape) for v in volumes]
        rss_after_prep = _peak_rss_mb()
        results = [bench_variant(n, variants[n], volumes, steps=args.steps, device=device) for n in args.variants.split(",")]
    out = {
        "machine": {"platform": platform.platform(), "processor": platform.processor(), "threads": args.threads,
                    "torch": torch.__version__, "device": str(device),
                    "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
                    "load_average_at_start": load_at_start},
        "synthetic_cohort_write_s": t_make,
        "prepare_s_per_case": t_prep,
        "stored_roi_shapes_zyx": roi_shapes,
        "peak_rss_mb_after_prepare": rss_after_prep,
        "configs": {n: to_dict(variants[n]) for n in args.variants.split(",")},
        "variants": results,
    }
    RESULTS.mkdir(exist_ok=True)
    result_file = RESULTS / ("train_throughput.json" if device.type == "cpu" else f"train_throughput_{device.type}.json")
    result_file.write_text(json.dumps(out, indent=2) + "\n")
    print(f"case preparation (read .nii.gz 512x512x180, resample both ROIs to 1 mm): {t_prep:.2f} s/case; "
          f"stored ROI shapes {roi_shapes}")
    head = ("variant", "patch", "params", "data s", "augment s", "forward s", "backward s", "s/step", "patches/s",
            "aug share", "peak RSS MB")
    print(" | ".join(head))
    for r in results:
        print(" | ".join([
            r["variant"], "x".join(map(str, r["patch_size_zyx"])), f"{r['parameters']:,}", f"{r['data_s']:.3f}",
            f"{r['augment_s']:.3f}", f"{r['forward_s']:.2f}", f"{r['backward_s']:.2f}", f"{r['seconds_per_step']:.2f}",
            f"{r['patches_per_s']:.3f}", f"{100 * r['augment_share']:.0f}%", f"{r['peak_rss_mb']:.0f}",
        ]))
    print(f"wrote {result_file}")


if __name__ == "__main__":
    main()
