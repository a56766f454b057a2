"""GPU profile: samples/s and model FLOPs utilisation of the papers' ResNet-50 recipes at 224 px.

For SimCLR, MoCo v2, BYOL and SwAV (``configs/<method>/imagenet100.yaml``: ResNet-50, 224 px
views, crops from the original images) the engine itself trains ``--steps`` steps on synthetic
JPEG photographs (500x375 and 375x500, written once into a scratch folder, so no data set is
needed) under bf16 autocast, channels_last; SimCLR also with ``train.compile``. Throughput is the
engine's own logged ``images_per_s`` after the first window. The model FLOPs of one training
sample (forward and backward of every network the method runs, counted by
``torch.utils.flop_counter`` on one step) times the samples per second, over the device's peak
dense bf16 FLOP/s, gives the utilisation. The record also holds the view pipeline alone on the
device (``augment_throughput.py``'s views/s and per-op ms) and every profiled method's step
anatomy with its host-sync check (``step_anatomy.py``). SimCLR also runs with
``data.decode=device`` (the workers read bytes; nvJPEG decodes the batch and the crops are cut
on the GPU). The input path alone (no model) is measured with both decodes, and the device
path's crops of one batch are compared with the CPU's (``decode_gap_levels``, uint8 levels: the
CPU/GPU equality check).

One JSON record goes to stdout (last line) and to ``--out``. On a machine without CUDA it says
so and exits 0. Meant to finish in under 5 minutes on one H100/H200-class GPU::

    python benchmarks/gpu_profile.py [--steps 30] [--batch-size 256] [--out gpu_profile.json]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
if importlib.util.find_spec("sslvision") is None:  # a checkout without `pip install -e .`
    sys.path.insert(0, str(REPO_ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from simclr_throughput import measure_sslvision  # noqa: E402

from sslvision.augment.pipeline import ViewPipeline  # noqa: E402
from sslvision.config import Config, load_config  # noqa: E402
from sslvision.data.encoded import cut_on_device  # noqa: E402
from sslvision.engine.trainer import resolve_views, training_data, views_of_batch  # noqa: E402
from sslvision.methods.registry import build_method  # noqa: E402

METHODS = ("simclr", "mocov2", "byol", "swav")
# Peak dense bf16 tensor-core FLOP/s by device name (vendor data sheets, SXM parts).
PEAK_BF16 = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L40S": 362e12, "A10": 125e12}


def write_photos(folder: Path, count: int) -> None:
    """``count`` smooth random JPEGs (quality 90), landscape and portrait, in one class folder."""
    from PIL import Image

    images = folder / "synthetic"
    images.mkdir(parents=True)
    generator = torch.Generator().manual_seed(0)
    for index in range(count):
        height, width = (375, 500) if index % 2 else (500, 375)
        coarse = torch.rand(1, 3, height // 25, width // 25, generator=generator)
        pixels = torch.nn.functional.interpolate(coarse, size=(height, width), mode="bicubic")
        array = (pixels[0].clamp(0, 1) * 255).byte().permute(1, 2, 0).numpy()
        Image.fromarray(array).save(images / f"{index:05d}.jpg", quality=90)


def synthetic_recipe(
    method: str, recipe_name: str, photos: Path, workers: int, overrides: list[str]
) -> Config:
    """``configs/<method>/<recipe_name>.yaml`` reading ``photos`` (:func:`write_photos`), its
    views resolved as a run resolves them (a named recipe becomes its view groups)."""
    data = ["data.dataset=folder", f"data.path={photos}", "data.classes="]
    data.append(f"data.num_workers={workers}")
    cfg = load_config(REPO_ROOT / "configs" / method / f"{recipe_name}.yaml", data + overrides)
    cfg.augment.views = resolve_views(cfg)
    return cfg


def recipe(
    method: str, data: Path, out: Path, args: argparse.Namespace, compile_: bool, decode: str
) -> Config:
    overrides = [
        f"output_dir={out}",
        f"name={method}{'-compiled' if compile_ else ''}-decode-{decode}",
        "data.crop=original",  # the papers' crops (the ImageNet-100 recipes' own setting)
        f"data.decode={decode}",
        f"train.batch_size={args.batch_size}",
        f"train.max_steps={args.steps}",
        "train.epochs=1000",
        f"train.log_every={args.log_every}",
        "train.precision=bf16",
        "train.progress_bar=false",
        f"train.compile={str(compile_).lower()}",
        "checkpoint.keep_every_epochs=0",
    ]
    return synthetic_recipe(method, args.recipe, data, args.workers, overrides)


def flops_per_sample(cfg: Config, batch: Any, device: torch.device) -> float:
    """Model FLOPs (forward + backward) of one training sample of ``cfg``'s method."""
    from torch.utils.flop_counter import FlopCounterMode

    method = build_method(cfg).to(device, memory_format=torch.channels_last)
    pipeline = ViewPipeline(cfg.augment.views, cfg.augment.mean, cfg.augment.std).to(device)
    views = views_of_batch(pipeline, batch, device)
    counter = FlopCounterMode(display=False)
    with counter, torch.autocast(device.type, dtype=torch.bfloat16):
        method(views)["loss"].backward()
    return counter.get_total_flops() / len(batch[-1])


def device_decode_gap(cfg: Config, device: torch.device) -> dict[str, float]:
    """How far ``device``'s decode and crops of one batch (``data.decode=device``) are from the
    CPU's, in uint8 levels: the CPU/GPU equality check of the two paths (0 on a CPU)."""
    _, loader = training_data(cfg, rank=0, world=1, pin=False)
    batch = next(iter(loader))
    groups = cfg.augment.views
    on_cpu, _ = cut_on_device(batch, groups, torch.device("cpu"))
    on_device, _ = cut_on_device(batch, groups, device)
    gaps = [(a.float() - b.cpu().float()).abs() for a, b in zip(on_cpu, on_device, strict=True)]
    return {
        "max": max(g.max().item() for g in gaps),
        "mean": round(sum(g.sum().item() for g in gaps) / sum(g.numel() for g in gaps), 4),
    }


def augmentation_record(batch_size: int, size: int, device: torch.device) -> dict[str, Any]:
    """The view pipeline alone on ``device`` (``augment_throughput.py``'s measures): views/s of
    the SimCLR, multi-crop and coordinate recipes and each op's ms, at view size ``size``."""
    from augment_throughput import RECIPES as VIEW_RECIPES  # these two import this script
    from augment_throughput import op_costs, sslvision_views_per_s

    source_size = round(size * 8 / 7)
    shape = (batch_size, 3, source_size, source_size)
    source = torch.randint(0, 256, shape, dtype=torch.uint8, device=device)
    rounds = argparse.Namespace(rounds=3)
    rates = {
        name: round(sslvision_views_per_s(make(size), source, rounds), 1)
        for name, make in VIEW_RECIPES.items()
    }
    ops = op_costs(VIEW_RECIPES["simclr"](size)[0], source, repeats=3)
    return {"augment_view_size": size, "augment_views_per_s": rates, "augment_op_ms": ops}


def synchronize(device: torch.device) -> None:
    """Wait for ``device``'s queued work (a CPU has none)."""
    if device.type != "cpu":
        torch.accelerator.synchronize(device)


def input_path_rate(cfg: Config, batches: int, device: torch.device) -> float:
    """Images a second through the workers and the device view pipeline alone."""
    sampler, loader = training_data(cfg, rank=0, world=1, pin=device.type == "cuda")
    sampler.set_epoch(0)
    pipeline = ViewPipeline(cfg.augment.views, cfg.augment.mean, cfg.augment.std).to(device)
    iterator = iter(loader)
    views_of_batch(pipeline, next(iterator), device)
    synchronize(device)
    started = time.perf_counter()
    for _ in range(batches):
        views_of_batch(pipeline, next(iterator), device)
    synchronize(device)
    return batches * cfg.train.batch_size / (time.perf_counter() - started)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30, help="training steps per variant")
    parser.add_argument("--log-every", type=int, default=5, help="the first window is warm-up")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--workers", type=int, default=min(16, os.cpu_count() or 1))
    parser.add_argument("--photos", type=int, default=0, help="default: what --steps needs")
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--compile", nargs="*", default=["simclr"], choices=METHODS)
    parser.add_argument(
        "--device-decode", nargs="*", default=["simclr"], choices=METHODS, help="data.decode=device"
    )
    parser.add_argument("--peak-tflops", type=float, default=0.0, help="default: by device name")
    parser.add_argument("--recipe", default="imagenet100", help="configs/<method>/<recipe>.yaml")
    parser.add_argument("--out", type=Path, default=Path("gpu_profile.json"))
    parser.add_argument("--device", default="cuda", help="cpu: a smoke run of the script only")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("gpu_profile: no CUDA device on this machine; it measures a GPU, nothing to do")
        return 0
    name = torch.cuda.get_device_name() if device.type == "cuda" else "cpu"
    peak = args.peak_tflops * 1e12 or next((p for k, p in PEAK_BF16.items() if k in name), 0.0)
    record: dict[str, Any] = {"device": name, "peak_bf16_flops": peak, "runs": []}
    with tempfile.TemporaryDirectory() as scratch:
        data = Path(scratch) / "photos"
        # enough for the longest consumer: a training run, or the step anatomy (7 batches)
        write_photos(data, args.photos or args.batch_size * (max(args.steps, 7) + 2))
        for method in args.methods:
            variants = [(False, "workers")]
            variants += [(True, "workers")] if method in args.compile else []
            variants += [(False, "device")] if method in args.device_decode else []
            for compile_, decode in variants:
                cfg = recipe(method, data, Path(scratch) / "runs", args, compile_, decode)
                if not compile_ and decode == "workers":
                    _, loader = training_data(cfg, rank=0, world=1, pin=False)
                    flops = flops_per_sample(cfg, next(iter(loader)), device)
                rate = measure_sslvision(cfg).images_per_s
                run = {"method": method, "compiled": compile_, "decode": decode}
                run |= {"samples_per_s": round(rate, 1), "flops_per_sample": flops}
                run["mfu"] = round(rate * flops / peak, 4) if peak else None
                record["runs"].append(run)
                print(json.dumps(run), flush=True)
        for decode in ("workers", "device"):
            simclr = recipe("simclr", data, Path(scratch) / "runs", args, False, decode)
            rate = input_path_rate(simclr, args.steps, device)
            record[f"input_path_images_per_s_decode_{decode}"] = round(rate, 1)
        record["decode_gap_levels"] = device_decode_gap(simclr, device)
        size = simclr.augment.views[0].size
        record |= augmentation_record(args.batch_size, size, device)
        from step_anatomy import anatomy  # it imports this script

        anatomy_args = argparse.Namespace(
            recipe=args.recipe,
            batch_size=args.batch_size,
            workers=args.workers,
            precision="bf16",
            device=args.device,
            warmup_steps=2,
            steps=3,
            sync_steps=2,
        )
        record["step_anatomy"] = [anatomy(m, data, anatomy_args) for m in args.methods]
    args.out.write_text(json.dumps(record, indent=2))
    print(json.dumps(record))
    return 0


if __name__ == "__main__":
    sys.exit(main())
