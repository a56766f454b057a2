"""Pretraining: a method, its data and view pipeline, and the callbacks of a run, handed to
the one :class:`~sslvision.engine.loop.Trainer`.

uint8 batches go to the device once; the view pipeline (kornia) makes the views there; the
method's forward returns the loss. accelerate handles devices, mixed precision, gradient
accumulation and DDP; the callbacks log, probe, guard, checkpoint and honour preemption.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState
from accelerate.utils import set_seed
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

from sslvision.augment.pipeline import ViewPipeline
from sslvision.augment.recipes import RECIPES
from sslvision.augment.views import Views
from sslvision.config import Config, save_config, to_dict
from sslvision.config.views import ViewGroup
from sslvision.data.build import build_dataset, load_class_list
from sslvision.data.encoded import EncodedBatch, EncodedImages, collate_encoded, cut_on_device
from sslvision.data.original_crops import OriginalSizeCrops
from sslvision.data.sampler import ResumableSampler
from sslvision.engine.callbacks import (
    Checkpointer,
    KNNMonitor,
    MetricsCallback,
    NonFiniteGuard,
    OnlineLinearProbe,
    Preemption,
    ProgressBar,
)
from sslvision.engine.callbacks.knn_monitor import check_monitor_config
from sslvision.engine.callbacks.online_probe import ONLINE_LINEAR_TOP1, check_online_linear_config
from sslvision.engine.checkpoint import load_checkpoint
from sslvision.engine.loop import Callback, Forward, LoopLength, Trainer
from sslvision.engine.optim import build_optimizer, scaling_record
from sslvision.engine.resume import check_resumable, resume_path
from sslvision.engine.run_dir import claim_run_dir
from sslvision.engine.schedule import build_scheduler
from sslvision.errors import ConfigError
from sslvision.methods.base import Method, Progress
from sslvision.methods.registry import build_method, method_class
from sslvision.registry import PROBES


@dataclass
class TrainResult:
    run_dir: Path
    checkpoint: Path
    step: int
    metrics: list[dict[str, float]]
    status: str = "finished"  # or "preempted": resume with --resume auto


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


def _loader(
    cfg: Config,
    sampler: ResumableSampler,
    dataset: Any,
    pin: bool,
    collate: Callable[[list[Any]], Any] | None,
) -> DataLoader:
    workers = cfg.data.num_workers
    return DataLoader(
        dataset,
        batch_size=cfg.train.batch_size,
        sampler=sampler,
        collate_fn=collate,
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


def train(
    cfg: Config,
    resume: str | None = None,
    overwrite: bool = False,
    callbacks: Sequence[Callback] = (),
) -> TrainResult:
    """Pretrain ``cfg.method`` and return where the run and its last checkpoint are.

    ``resume``: None for a fresh run, ``auto`` or a checkpoint path to continue one. A fresh run
    into a directory that holds a checkpoint stops unless ``overwrite``. ``callbacks`` run after
    the run's own ones at every hook. A SIGTERM, SIGUSR1 or SIGUSR2 stops the run at the next
    step with a checkpoint and ``status`` ``"preempted"``.
    """
    # accelerate keeps one precision per process; forget the previous run's so that runs with
    # different train.precision can follow each other (notebooks, benchmarks). The process group
    # (PartialState) is kept.
    AcceleratorState._reset_state()
    accelerator = _accelerator(cfg.train.precision, cfg.train.grad_accum_steps)
    start_from = resume_path(resume, cfg.run_dir)
    check_monitor_config(cfg.monitor)
    check_online_linear_config(cfg.monitor)
    groups = resolve_views(cfg)
    method_class(cfg.method.name).check_views(groups)
    cfg.augment.views = groups
    claim = (
        claim_run_dir(cfg.run_dir, resuming=start_from is not None, overwrite=overwrite)
        if accelerator.is_main_process
        else nullcontext()
    )
    with claim, _deterministic(cfg.train.deterministic):
        trainer, checkpointer = _build_trainer(cfg, accelerator, callbacks)
        if start_from is not None:
            _resume(trainer, cfg, start_from)
        if accelerator.is_main_process:
            scaling = scaling_record(cfg, accelerator.num_processes)
            notes = [f"{key}: {value}" for key, value in scaling.items()]
            save_config(cfg, cfg.run_dir / "config.yaml", ["derived at launch:", *notes])
        result = trainer.fit()
    step, history = result.state.step, result.state.history
    return TrainResult(cfg.run_dir, checkpointer.last_path, step, history, result.status)


def _compile_backbone(method: Method) -> None:
    """``torch.compile`` the backbone in place: ``nn.Module.compile`` keeps the state dict's
    keys, so checkpoints load with or without it. A part dynamo cannot compile runs eagerly
    (``suppress_errors``) instead of stopping the run."""
    torch._dynamo.config.suppress_errors = True
    method.backbone.compile()


@contextmanager
def _deterministic(enabled: bool) -> Iterator[None]:
    """``torch.use_deterministic_algorithms`` for this run only, not for what follows it."""
    before = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(enabled or before)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before)


def _build_trainer(
    cfg: Config, accelerator: Accelerator, extra: Sequence[Callback]
) -> tuple[Trainer, Checkpointer]:
    """The method, optimiser, data, schedule and callbacks of a run, prepared by accelerate."""
    tc = cfg.train
    rank, world = accelerator.process_index, accelerator.num_processes
    set_seed(cfg.seed + rank)
    # The method and the optimiser are checked before the data set is scanned (minutes on
    # ImageNet), so a wrong method setting costs seconds.
    memory_format = torch.channels_last if tc.channels_last else torch.contiguous_format
    method = build_method(cfg).to(memory_format=memory_format)
    if tc.compile:
        _compile_backbone(method)
    scaling = scaling_record(cfg, world)
    optimizer = build_optimizer(method, cfg.optim, scaling["global_batch"])
    sampler, loader = training_data(cfg, rank, world, pin=accelerator.device.type == "cuda")
    length = _length(cfg, sampler, world)
    per_epoch = length.micro_per_epoch // tc.grad_accum_steps
    scheduler = build_scheduler(
        optimizer,
        warmup_steps=round(cfg.optim.warmup_epochs * per_epoch),
        total_steps=length.total_steps,
        min_ratio=cfg.optim.min_lr_ratio,
    )
    # DDP's own (static) hook for buffers it must neither broadcast from rank 0 nor check.
    local_buffers = method.process_local_buffers()
    DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(method, local_buffers)
    model, optimizer = accelerator.prepare(method, optimizer)
    pipeline = ViewPipeline(cfg.augment.views, cfg.augment.mean, cfg.augment.std, memory_format)
    forward = _forward(model, pipeline.to(accelerator.device), accelerator)
    checkpointer = Checkpointer(
        cfg.run_dir / "checkpoints",
        save_every_steps=cfg.checkpoint.save_every_steps,
        keep_every_epochs=cfg.checkpoint.keep_every_epochs,
        extra_state=lambda: _extra_state(cfg, callbacks, scaling),  # the callbacks built below
    )
    method = accelerator.unwrap_model(model)
    callbacks = [*_callbacks(cfg, accelerator, method, checkpointer, loader.dataset), *extra]
    trainer = Trainer(
        accelerator=accelerator,
        model=model,
        optimizer=optimizer,
        scheduler=scheduler,
        loader=loader,
        sampler=sampler,
        forward=forward,
        length=length,
        callbacks=callbacks,
        grad_clip=tc.grad_clip,
        process_local=local_buffers,
    )
    return trainer, checkpointer


def training_data(
    cfg: Config, rank: int, world: int, pin: bool
) -> tuple[ResumableSampler, DataLoader]:
    """The run's sampler and loader for this rank: squares of ``data.image_size``, or each
    view's crop cut from the original (``data.crop=original``); the input benchmark reads it."""
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
    original = cfg.data.crop == "original"
    collate = None
    if cfg.data.decode == "device":
        dataset, collate = EncodedImages(dataset, cfg.data.dataset), collate_encoded
    elif original:
        dataset = OriginalSizeCrops(dataset, cfg.augment.views, cfg.data.dataset)
    sampler = ResumableSampler(len(dataset), cfg.seed, rank, world, seeded=original)
    return sampler, _loader(cfg, sampler, dataset, pin, collate)


def _length(cfg: Config, sampler: ResumableSampler, world: int) -> LoopLength:
    tc = cfg.train
    per_epoch = sampler.num_samples_per_rank() // tc.batch_size // tc.grad_accum_steps
    if per_epoch == 0:
        raise ConfigError(
            f"{sampler.dataset_size} images give no full step of train.batch_size="
            f"{tc.batch_size} x {world} processes x {tc.grad_accum_steps} accumulation steps; "
            "lower train.batch_size"
        )
    total_steps = tc.epochs * per_epoch
    if tc.max_steps:
        total_steps = min(total_steps, tc.max_steps)
    return LoopLength(total_steps, tc.epochs, per_epoch * tc.grad_accum_steps)


def _forward(model: torch.nn.Module, pipeline: ViewPipeline, accelerator: Accelerator) -> Forward:
    """A loader batch -> the method's outputs: uint8 images to the device once, views there
    (batched per run of same-size views, in the model's memory format), labels beside them."""
    device = accelerator.device

    def forward(batch: Sequence[Any]) -> dict[str, torch.Tensor]:
        return model(views_of_batch(pipeline, batch, device))

    return forward


def views_of_batch(
    pipeline: ViewPipeline, batch: Sequence[Any] | EncodedBatch, device: torch.device
) -> Views:
    """A batch of :func:`training_data`'s loader on ``device`` (once, non-blocking), as views:
    ``(images, labels)``, ``(crops, boxes, labels)`` with ``data.crop=original``, or the files'
    bytes (:class:`EncodedBatch`, ``data.decode=device``), decoded and cut on ``device``."""

    def to_device(tensor: torch.Tensor) -> torch.Tensor:
        return tensor.to(device, non_blocking=True)

    if isinstance(batch, EncodedBatch):
        groups = [augment.group for augment in pipeline.groups]
        crops, boxes = cut_on_device(batch, groups, device)
        return pipeline(crops, to_device(batch.labels), boxes)

    if len(batch) == 3:  # each group's crops, cut on the workers
        crops, boxes, labels = batch
        return pipeline(
            [to_device(c) for c in crops], to_device(labels), [to_device(b) for b in boxes]
        )
    images, labels = batch
    return pipeline(to_device(images), to_device(labels))


class MethodHooks(Callback):
    """The method's own bookkeeping: gradient surgery after backward, momentum updates,
    queues and prototypes after each optimiser step."""

    def __init__(self, method: Method) -> None:
        self.method = method

    def on_after_backward(self, trainer: Trainer) -> None:
        self.method.on_after_backward()

    def on_step_end(self, trainer: Trainer) -> None:
        state = trainer.state
        self.method.on_step_end(Progress(state.step, trainer.length.total_steps, state.epoch))


def _callbacks(
    cfg: Config,
    accelerator: Accelerator,
    method: Method,
    checkpointer: Checkpointer,
    dataset: Any,
) -> list[Callback]:
    """A pretraining run's callbacks, in the order they must run (see :class:`Callback`)."""
    main, tc, knn_every = accelerator.is_main_process, cfg.train, cfg.monitor.knn_every
    cadences = (tc.log_every, knn_every)
    callbacks: list[Callback] = [
        MethodHooks(method),
        Preemption(),
        NonFiniteGuard((*cadences, cfg.checkpoint.save_every_steps), checkpointer.last_good),
    ]
    if main and knn_every:
        probe = PROBES.get("knn")(
            cfg.monitor,
            image_size=cfg.data.image_size,
            device=accelerator.device,
            seed=cfg.seed,
            num_workers=cfg.data.num_workers,
        )
        callbacks.append(KNNMonitor(probe, lambda: method.backbone, knn_every))
    online_linear = cfg.monitor.online_linear
    if online_linear:
        callbacks.append(_online_probe(cfg, accelerator, method, dataset, cadences))
    images_per_batch = tc.batch_size * accelerator.num_processes
    monitors = {"knn_top1": knn_every, ONLINE_LINEAR_TOP1: online_linear}
    extra_columns = [column for column, on in monitors.items() if on]
    run_dir = cfg.run_dir if main else None
    callbacks.append(MetricsCallback(run_dir, cadences, images_per_batch, extra_columns))
    if main and tc.progress_bar:
        callbacks.append(ProgressBar(f"{cfg.method.name} {cfg.name}"))
    callbacks.append(checkpointer)
    return callbacks


def _online_probe(
    cfg: Config, accelerator: Accelerator, method: Method, dataset: Any, cadences: tuple[int, ...]
) -> OnlineLinearProbe:
    """The online linear probe over the training set's classes, at the metrics' cadences."""
    num_classes = getattr(dataset, "num_classes", 0)
    if not num_classes:
        raise ConfigError(
            f"monitor.online_linear needs a labelled data set; data.dataset "
            f"'{cfg.data.dataset}' has no num_classes"
        )
    lr = cfg.monitor.online_linear_lr
    return OnlineLinearProbe(method, num_classes, lr, cadences, accelerator.device)


def _extra_state(
    cfg: Config, callbacks: Sequence[Callback], scaling: dict[str, Any]
) -> dict[str, Any]:
    """What a pretraining checkpoint holds besides the loop's state: the resolved config, the
    batch and learning rate it implies (``scaling_record``), and the online linear probe's head
    and optimiser when it runs."""
    probes = {c.state_key: c.state_dict() for c in callbacks if isinstance(c, OnlineLinearProbe)}
    return {"config": to_dict(cfg), "scaling": scaling, **probes}


def _resume(trainer: Trainer, cfg: Config, path: Path) -> None:
    # Loaded to the CPU: a gloo rank's device is cpu:N, which torch.load cannot map to.
    checkpoint = load_checkpoint(path)
    check_resumable(checkpoint, cfg, trainer.accelerator.num_processes, path)
    trainer.load_state_dict(checkpoint)
    for callback in trainer.callbacks:  # a checkpoint of a run without the probe: it starts anew
        if isinstance(callback, OnlineLinearProbe) and callback.state_key in checkpoint:
            callback.load_state_dict(checkpoint[callback.state_key])
    if trainer.accelerator.is_main_process:
        print(f"resuming from {path} at step {trainer.state.step} (epoch {trainer.state.epoch})")
