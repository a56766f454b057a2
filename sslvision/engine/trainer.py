"""The one training loop: uint8 batches -> device -> views -> method -> loss -> optimiser.

accelerate handles devices, mixed precision, gradient accumulation and DDP. The loop keeps the
host and the device decoupled: losses are summed on the device and read back only at log and
checkpoint steps, where a non-finite loss is caught before anything is saved.
"""

from __future__ import annotations

import os
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState
from accelerate.utils import set_seed
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from sslvision.augment.pipeline import ViewPipeline
from sslvision.augment.recipes import RECIPES
from sslvision.augment.spec import ViewGroup
from sslvision.backbones import PixelStatistics
from sslvision.config import Config, save_config, to_dict
from sslvision.data.build import build_dataset, load_class_list
from sslvision.data.sampler import ResumableSampler
from sslvision.engine.checkpoint import (
    first_nonfinite,
    gather_from_every_process,
    load_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from sslvision.engine.knn_monitor import KNNMonitor, check_monitor_config
from sslvision.engine.metrics import METRIC_COLUMNS, MetricsLogger
from sslvision.engine.optim import build_optimizer
from sslvision.engine.resume import check_resumable, restore_optimizer, resume_schedule
from sslvision.engine.run_dir import claim_run_dir
from sslvision.engine.schedule import build_scheduler
from sslvision.errors import CheckpointError, ConfigError, NonFiniteError
from sslvision.methods.base import Progress
from sslvision.methods.registry import build_method, method_class
from sslvision.nn.queue import process_local_buffers


@dataclass
class TrainResult:
    run_dir: Path
    checkpoint: Path
    step: int
    metrics: list[dict[str, float]]


def resolve_views(cfg: Config) -> list[ViewGroup]:
    """The configured view groups, or the method's default recipe at ``augment.size``."""
    if cfg.augment.views:
        return list(cfg.augment.views)
    recipe = cfg.augment.recipe or method_class(cfg.method.name).default_recipe
    if recipe not in RECIPES:
        raise ConfigError(
            f"unknown augment.recipe '{recipe}'. Valid choices: {', '.join(sorted(RECIPES))}."
        )
    return RECIPES[recipe](cfg.augment.size)


def resume_path(resume: str | None, run_dir: Path) -> Path | None:
    """``auto`` -> the run's ``last.pt`` if it exists; a path -> that file; None -> fresh run."""
    if resume is None:
        return None
    if resume == "auto":
        last = run_dir / "checkpoints" / "last.pt"
        return last if last.is_file() else None
    path = Path(resume)
    if not path.is_file():
        raise CheckpointError(f"--resume: checkpoint not found: {path}")
    return path


def _loader(cfg: Config, sampler: ResumableSampler, dataset: Any, pin: bool) -> DataLoader:
    workers = cfg.data.num_workers
    return DataLoader(
        dataset,
        batch_size=cfg.train.batch_size,
        sampler=sampler,
        num_workers=workers,
        pin_memory=pin,
        drop_last=True,
        persistent_workers=workers > 0,
        generator=torch.Generator().manual_seed(cfg.seed),
    )


def _accelerator(precision: str, grad_accum_steps: int) -> Accelerator:
    """accelerate's state for this process, joined to the launcher's process group if any.

    Under ``torchrun`` (or ``accelerate launch --multi_gpu``) on a machine without a GPU,
    accelerate only forms a gloo group when told to use the CPU; otherwise each process would
    silently train alone, all writing the same run directory.
    """
    launched = int(os.environ.get("WORLD_SIZE", "1"))
    accelerator = Accelerator(
        mixed_precision=precision,
        gradient_accumulation_steps=grad_accum_steps,
        cpu=launched > 1 and not torch.accelerator.is_available(),
    )
    if launched > 1 and accelerator.num_processes != launched:
        raise RuntimeError(
            f"launched as {launched} processes but accelerate joined {accelerator.num_processes}; "
            "start with torchrun or accelerate launch, and check their process-group settings"
        )
    return accelerator


def train(cfg: Config, resume: str | None = None, overwrite: bool = False) -> TrainResult:
    """Pretrain ``cfg.method`` and return where the run and its last checkpoint are.

    ``resume``: None for a fresh run, ``auto`` or a checkpoint path to continue one. A fresh run
    into a directory that holds a checkpoint stops unless ``overwrite``.
    """
    # accelerate keeps one precision per process; forget the previous run's so that runs with
    # different train.precision can follow each other (notebooks, benchmarks). The process group
    # (PartialState) is kept.
    AcceleratorState._reset_state()
    accelerator = _accelerator(cfg.train.precision, cfg.train.grad_accum_steps)
    start_from = resume_path(resume, cfg.run_dir)
    check_monitor_config(cfg.monitor)
    groups = resolve_views(cfg)
    method_class(cfg.method.name).check_views(groups)
    cfg.augment.views = groups
    claim = (
        claim_run_dir(cfg.run_dir, resuming=start_from is not None, overwrite=overwrite)
        if accelerator.is_main_process
        else nullcontext()
    )
    with claim:
        return _train(cfg, accelerator, start_from)


def _train(cfg: Config, accelerator: Accelerator, start_from: Path | None) -> TrainResult:
    tc = cfg.train
    if tc.deterministic:
        torch.use_deterministic_algorithms(True)
    main = accelerator.is_main_process
    rank, world = accelerator.process_index, accelerator.num_processes
    set_seed(cfg.seed + rank)
    device = accelerator.device
    run_dir, ckpt_dir = cfg.run_dir, cfg.run_dir / "checkpoints"
    knn_every = cfg.monitor.knn_every
    groups = cfg.augment.views
    # The method and the optimiser are checked before the data set is scanned (minutes on
    # ImageNet), so a wrong method setting costs seconds.
    method = build_method(cfg)
    memory_format = torch.channels_last if tc.channels_last else torch.contiguous_format
    method = method.to(memory_format=memory_format)
    global_batch = tc.batch_size * world * tc.grad_accum_steps
    optimizer = build_optimizer(method, cfg.optim, global_batch)
    dataset = build_dataset(
        cfg.data.dataset,
        cfg.data.path,
        cfg.data.split,
        cfg.data.image_size,
        download=cfg.data.download,
        skip_corrupt=cfg.data.skip_corrupt,
        classes=load_class_list(cfg.data.classes) if cfg.data.classes else None,
        num_images=cfg.data.num_images,
        seed=cfg.seed,
    )
    sampler = ResumableSampler(len(dataset), cfg.seed, rank, world)
    loader = _loader(cfg, sampler, dataset, pin=device.type == "cuda")
    per_epoch = sampler.num_samples_per_rank() // tc.batch_size // tc.grad_accum_steps
    if per_epoch == 0:
        raise ConfigError(
            f"{len(dataset)} images give no full step of train.batch_size={tc.batch_size} x "
            f"{world} processes x {tc.grad_accum_steps} accumulation steps; lower train.batch_size"
        )
    micro_per_epoch = per_epoch * tc.grad_accum_steps
    total_steps = tc.epochs * per_epoch
    if tc.max_steps:
        total_steps = min(total_steps, tc.max_steps)

    method.backbone.pixels = PixelStatistics(cfg.augment.mean, cfg.augment.std)
    pipeline = ViewPipeline(groups, cfg.augment.mean, cfg.augment.std, memory_format).to(device)
    monitor = None
    if main and knn_every:
        monitor = KNNMonitor(
            cfg.monitor,
            image_size=cfg.data.image_size,
            device=device,
            seed=cfg.seed,
            num_workers=cfg.data.num_workers,
        )
    scheduler = build_scheduler(
        optimizer,
        warmup_steps=round(cfg.optim.warmup_epochs * per_epoch),
        total_steps=total_steps,
        min_ratio=cfg.optim.min_lr_ratio,
    )
    # DDP's own (static) hook for buffers it must neither broadcast from rank 0 nor check.
    local_buffers = process_local_buffers(method)
    DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(method, local_buffers)
    model, optimizer = accelerator.prepare(method, optimizer)
    method = accelerator.unwrap_model(model)

    step, epoch, batch_in_epoch, metrics, restore_rng = 0, 0, 0, [], None
    if start_from is not None:
        # Loaded to the CPU: a gloo rank's device is cpu:N, which torch.load cannot map to.
        ckpt = load_checkpoint(start_from)
        check_resumable(ckpt, cfg, world, start_from)
        method.load_state_dict(ckpt["model"])
        own = ckpt.get("process_local", [])  # this process's queues; "model" has rank 0's
        if rank < len(own):
            method.load_state_dict(own[rank], strict=False)
        restore_optimizer(optimizer, ckpt["optimizer"])
        if accelerator.scaler is not None and ckpt.get("scaler"):
            accelerator.scaler.load_state_dict(ckpt["scaler"])
        step, epoch, batch_in_epoch = ckpt["step"], ckpt["epoch"], ckpt["batch_in_epoch"]
        resume_schedule(scheduler, step)
        metrics = list(ckpt["metrics"])
        restore_rng = ckpt["rng"][rank]  # check_resumable: one entry per process
        del ckpt

    logger = None
    if main:
        save_config(cfg, run_dir / "config.yaml")
        columns = (*METRIC_COLUMNS, "knn_top1") if knn_every else METRIC_COLUMNS
        logger = MetricsLogger(run_dir, metrics, step, columns)
        if start_from is not None:
            print(f"resuming from {start_from} at step {step} (epoch {epoch})")

    def checkpoint_state(next_epoch: int, next_batch: int) -> dict[str, Any]:
        model_state = method.state_dict()
        return {
            "model": model_state,
            "process_local": gather_from_every_process(
                {name: model_state[name] for name in local_buffers}
            ),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "scaler": accelerator.scaler.state_dict() if accelerator.scaler else None,
            "rng": gather_from_every_process(rng_state()),
            "step": step,
            "epoch": next_epoch,
            "batch_in_epoch": next_batch,
            "config": to_dict(cfg),
            "metrics": metrics,
        }

    bad_step = torch.full((), -1, dtype=torch.long, device=device)
    loss_sum = torch.zeros((), device=device)
    micro_logged, images_seen, clock = 0, 0, time.perf_counter()
    last_path = ckpt_dir / "last.pt"
    bar = tqdm(
        total=total_steps,
        initial=step,
        disable=not (main and tc.progress_bar),
        desc=f"{cfg.method.name} {cfg.name}",
        dynamic_ncols=True,
    )

    def last_good() -> str:
        return f"the last good checkpoint is {last_path}" if last_path.exists() else "none"

    def check_finite() -> None:
        # Every rank must stop at the same check, or the others wait for it in the next all-reduce.
        bad = min((b for b in accelerator.gather(bad_step[None]).tolist() if b >= 0), default=-1)
        if bad >= 0:
            raise NonFiniteError(
                f"the loss became NaN or infinite at step {bad}; training stopped and nothing "
                f"after the previous checkpoint was saved ({last_good()}). Lower optim.base_lr, "
                f"enable train.grad_clip, or check the data."
            )

    def check_finite_state(state: dict[str, Any]) -> None:
        # Every rank checks its own state (queues are per process) and all stop together.
        bad = first_nonfinite({k: state[k] for k in ("model", "process_local", "optimizer")})
        flags = accelerator.gather(torch.tensor([bad is not None], device=device)).tolist()
        if any(flags):
            raise NonFiniteError(
                f"step {step}: the state to checkpoint holds NaN or infinite values "
                f"({bad or 'on another process'}); it was not saved ({last_good()}). Lower "
                f"optim.base_lr, enable train.grad_clip, or check the data."
            )

    model.train()
    try:
        while step < total_steps and epoch < tc.epochs:
            sampler.set_epoch(epoch, start_index=batch_in_epoch * tc.batch_size)
            batches = iter(loader)
            if restore_rng is not None:
                set_rng_state(restore_rng)
                restore_rng = None
            for images, labels in batches:
                images = images.to(device, non_blocking=True)
                with accelerator.accumulate(model):
                    views = pipeline(images, labels.to(device, non_blocking=True))
                    loss = model(views)["loss"]
                    accelerator.backward(loss)
                    method.on_after_backward()
                    if tc.grad_clip > 0 and accelerator.sync_gradients:
                        accelerator.clip_grad_norm_(model.parameters(), tc.grad_clip)
                    optimizer.step()
                    optimizer.zero_grad(set_to_none=True)
                batch_in_epoch += 1
                micro_logged += 1
                images_seen += images.shape[0] * world
                loss = loss.detach()
                loss_sum += loss
                bad_step = torch.where(torch.isfinite(loss) | (bad_step >= 0), bad_step, step + 1)
                if not accelerator.sync_gradients:
                    continue
                lr = scheduler.get_last_lr()[0]
                scheduler.step()
                step += 1
                method.on_step_end(Progress(step, total_steps, epoch))
                bar.update(1)
                end_of_epoch = batch_in_epoch >= micro_per_epoch
                finished = step >= total_steps
                probe = bool(knn_every) and (step % knn_every == 0 or finished)
                if step % tc.log_every == 0 or end_of_epoch or finished or probe:
                    check_finite()
                    row = {
                        "step": step,
                        "epoch": epoch,
                        "loss": float((accelerator.reduce(loss_sum, "mean") / micro_logged).item()),
                        "lr": lr,
                        "images_per_s": images_seen / (time.perf_counter() - clock),
                    }
                    if probe and monitor:  # after the rate is taken, before its clock restarts
                        row["knn_top1"] = monitor(method.backbone)
                    metrics.append(row)
                    if logger:
                        logger.log(row)
                    bar.set_postfix(
                        loss=f"{row['loss']:.4f}",
                        lr=f"{lr:.3g}",
                        img_s=f"{row['images_per_s']:.0f}",
                        **({"knn": f"{row['knn_top1']:.3f}"} if "knn_top1" in row else {}),
                    )
                    loss_sum.zero_()
                    micro_logged, images_seen, clock = 0, 0, time.perf_counter()
                every = cfg.checkpoint.save_every_steps
                if end_of_epoch or finished or (every and step % every == 0):
                    check_finite()
                    next_epoch, next_batch = (
                        (epoch + 1, 0) if end_of_epoch else (epoch, batch_in_epoch)
                    )
                    state = checkpoint_state(next_epoch, next_batch)
                    check_finite_state(state)
                    if main:
                        save_checkpoint(state, last_path)
                        keep = cfg.checkpoint.keep_every_epochs
                        if end_of_epoch and keep and (epoch + 1) % keep == 0:
                            save_checkpoint(state, ckpt_dir / f"epoch_{epoch + 1:04d}.pt")
                    accelerator.wait_for_everyone()
                if end_of_epoch or finished:
                    break
            if batch_in_epoch >= micro_per_epoch:
                epoch, batch_in_epoch = epoch + 1, 0
    finally:
        bar.close()
        if logger:
            logger.close()
    return TrainResult(run_dir, last_path, step, metrics)
