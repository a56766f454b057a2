"""The linear-probe job: heads on a frozen backbone, trained by the one Trainer, chosen on a
held-out slice of the training split, evaluated on val once.

One head or a sweep of many (:mod:`.linear_heads`) is trained on batches of the fit part of the
training split: images augmented on the device and passed through the frozen backbone in eval
mode (``features="online"``), or features extracted once and cached (``features="cached"``, the
``fast`` protocol). The loop is :class:`~sslvision.engine.loop.Trainer` with pretraining's guard,
metrics, checkpoint and preemption callbacks, so a probe of 100 epochs resumes bitwise with
``--resume auto``. Only after every head has been scored on the held-out slice is val read.
"""

from __future__ import annotations

import dataclasses
import itertools
import time
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState
from accelerate.utils import set_seed
from timm.optim import Lars
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Subset, TensorDataset

import sslvision
from sslvision.augment.pipeline import ViewPipeline
from sslvision.backbones import Backbone
from sslvision.config.views import ViewGroup
from sslvision.data.sampler import ResumableSampler
from sslvision.engine.callbacks import (
    Checkpointer,
    MetricsCallback,
    NonFiniteGuard,
    Preemption,
    ProgressBar,
)
from sslvision.engine.checkpoint import read_state_file
from sslvision.engine.loop import Callback, Forward, LoopLength, Trainer
from sslvision.engine.resume import resume_path
from sslvision.engine.run_dir import claim_run_dir
from sslvision.engine.schedule import build_scheduler
from sslvision.errors import CheckpointError, ConfigError, DataError
from sslvision.eval.encoders import Encoder
from sslvision.eval.feature_cache import FeatureStore
from sslvision.eval.features import extract_features
from sslvision.eval.linear_heads import HeadSpec, LinearHeads, head_accuracy
from sslvision.eval.linear_protocols import LinearProtocol
from sslvision.eval.selection import SELECT_ON, holdout_split

EVAL_CHUNK = 4096  # samples scored at once: heads x chunk x classes logits stay small


def head_specs(protocol: LinearProtocol, sweep: bool) -> list[HeadSpec]:
    """The protocol's one head, or the sweep's grid (learning rates x weight decays x BN)."""
    if not sweep:
        return [HeadSpec(protocol.peak_lr(), protocol.weight_decay, protocol.batch_norm)]
    grid = itertools.product(
        protocol.sweep_lrs, protocol.sweep_weight_decays, protocol.sweep_batch_norm
    )
    return [HeadSpec(protocol.peak_lr(lr), wd, bn) for lr, wd, bn in grid]


@dataclass
class ProbeSetup:
    """What a probe run is made of, fixed before it trains (and checked again at a resume)."""

    store: FeatureStore
    protocol: LinearProtocol
    specs: list[HeadSpec]
    labels: Tensor  # the training split's
    fit: Tensor  # indices the heads train on
    heldout: Tensor  # indices they are chosen on (empty with select_on="val")
    select_on: str
    seed: int
    num_workers: int
    run_dir: Path

    def identity(self) -> dict[str, Any]:
        """What a checkpoint of this probe must match to be resumed by it."""
        return {
            "encoder": self.store.encoder.spec,
            "protocol": self.protocol.record(),
            "heads": [spec.name for spec in self.specs],
            "select_on": self.select_on,
            "seed": self.seed,
            "fit": self.fit,
        }


def run_linear(
    encoder: Encoder,
    train_data: str,
    val_data: str,
    *,
    protocol: LinearProtocol,
    run_dir: str | Path,
    sweep: bool = False,
    select_on: str = "heldout",
    holdout_fraction: float = 0.1,
    seed: int = 0,
    resume: str | None = None,
    overwrite: bool = False,
    cache_dir: str | Path | None = None,
    num_workers: int = 2,
    progress: bool | None = None,
    callbacks: Sequence[Callback] = (),
) -> dict[str, Any]:
    """Train the protocol's head (or the sweep's heads) on ``encoder``'s frozen features and
    return one flat result record; ``status`` is ``"preempted"`` when a signal stopped it.

    ``resume``: ``auto`` continues the run in ``run_dir`` if it has a checkpoint (a finished
    one is only evaluated again), a path continues that checkpoint. ``callbacks`` run after the
    probe's own, before its checkpoint.
    """
    started = time.perf_counter()
    if select_on not in SELECT_ON:
        choices = ", ".join(SELECT_ON)
        raise ConfigError(f"unknown --select-on '{select_on}'. Valid choices: {choices}.")
    if protocol.image_size:
        encoder = dataclasses.replace(encoder, image_size=protocol.image_size)
    AcceleratorState._reset_state()
    accelerator = Accelerator()
    store = FeatureStore(
        encoder,
        train_data,
        val_data,
        cache_dir=cache_dir,
        crop_ratio=protocol.crop_ratio,
        num_workers=num_workers,
        device=accelerator.device,
        progress=progress,
    )
    labels = _train_labels(store, protocol)
    if select_on == "heldout":
        fit, heldout = holdout_split(labels, holdout_fraction, seed)
    else:
        fit, heldout = torch.arange(len(labels)), torch.empty(0, dtype=torch.long)
    setup = ProbeSetup(
        store,
        protocol,
        head_specs(protocol, sweep),
        labels,
        fit,
        heldout,
        select_on,
        seed,
        num_workers,
        Path(run_dir),
    )
    start_from = resume_path(resume, setup.run_dir)
    claim = claim_run_dir(setup.run_dir, resuming=start_from is not None, overwrite=overwrite)
    with claim if accelerator.is_main_process else nullcontext():
        set_seed(seed)  # the augmentation draws from the global RNG: a run is its seed's
        trainer = _build_trainer(accelerator, setup, progress, callbacks)
        if start_from is not None:
            _resume(trainer, start_from, setup.identity())
        result = trainer.fit()
    record = {
        **store.record_header("linear"),
        **protocol.record(),
        "sweep": sweep,
        "num_heads": len(setup.specs),
        "status": result.status,
        "steps": result.state.step,
        "run_dir": str(setup.run_dir),
        "num_fit": len(fit),
        "num_heldout": len(heldout),
    }
    if result.status == "finished":
        heads = accelerator.unwrap_model(trainer.model)
        record.update(_select_and_evaluate(heads, setup, holdout_fraction))
    record["seconds"] = round(time.perf_counter() - started, 2)
    record["sslvision_version"] = sslvision.__version__
    return record


def _resume(trainer: Trainer, path: Path, identity: dict[str, Any]) -> None:
    checkpoint = read_state_file(path)
    saved = checkpoint.get("linear") if isinstance(checkpoint, dict) else None
    if saved is None:
        raise CheckpointError(f"{path} is not a linear-probe checkpoint (no 'linear' entry)")
    changed = [key for key in identity if not _same(saved.get(key), identity[key])]
    if changed:
        raise CheckpointError(
            f"cannot resume {path}: its {', '.join(changed)} differ from this run's; start a "
            "new run (another --run-dir) or pass --overwrite"
        )
    trainer.load_state_dict(checkpoint)
    print(f"resuming the linear probe from {path} at step {trainer.state.step}")


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, Tensor) or isinstance(b, Tensor):
        return isinstance(a, Tensor) and isinstance(b, Tensor) and torch.equal(a, b)
    return a == b


def _train_labels(store: FeatureStore, protocol: LinearProtocol) -> Tensor:
    """The training split's labels: from the cache when the protocol trains on it, else from the
    data set's own list (decoding every image only where it keeps none)."""
    if protocol.features == "cached":
        return store.features("train").labels
    dataset: Any = store.train_set
    while not hasattr(dataset, "targets") and hasattr(dataset, "dataset"):
        dataset = dataset.dataset
    targets = getattr(dataset, "targets", None)
    if targets is not None and len(targets) == len(store.train_set):
        return torch.as_tensor(targets, dtype=torch.long)
    return torch.as_tensor([label for _, label in store.train_set], dtype=torch.long)


def _build_trainer(
    accelerator: Accelerator,
    setup: ProbeSetup,
    progress: bool | None,
    extra: Sequence[Callback],
) -> Trainer:
    """Heads, optimiser, schedule, loader and callbacks of the probe, as pretraining has them."""
    protocol, store, fit, device = setup.protocol, setup.store, setup.fit, accelerator.device
    num_classes = store.num_classes or int(setup.labels.max()) + 1
    dim = store.encoder.backbone.feature_dim  # not store.backbone(): cached heads need no pass
    heads = LinearHeads(dim, num_classes, setup.specs, setup.seed).to(device)
    optimizer = _optimizer(heads, protocol)
    if protocol.features == "cached":
        train = store.features("train")
        dataset: Dataset = TensorDataset(train.features[fit], setup.labels[fit])
        workers, forward = 0, _head_forward(heads, device)
    else:
        dataset, workers = Subset(store.train_set, fit.tolist()), setup.num_workers
        size = store.encoder.image_size
        forward = _image_forward(heads, store.backbone(), protocol, size, device)
    per_epoch = len(fit) // protocol.batch_size
    if per_epoch == 0:
        raise ConfigError(
            f"batch_size={protocol.batch_size} is larger than the {len(fit)} images the heads "
            "are fit on; lower it (e.g. --set batch_size=64)"
        )
    scheduler = build_scheduler(
        optimizer,
        warmup_steps=round(protocol.warmup_epochs * per_epoch),
        total_steps=protocol.epochs * per_epoch,
        milestones=[round(m * protocol.epochs * per_epoch) for m in protocol.milestones]
        if protocol.schedule == "step"
        else (),
    )
    sampler = ResumableSampler(len(fit), setup.seed)
    loader = DataLoader(
        dataset,
        batch_size=protocol.batch_size,
        sampler=sampler,
        num_workers=workers,
        pin_memory=device.type == "cuda",
        drop_last=True,
        persistent_workers=workers > 0,
        generator=torch.Generator().manual_seed(setup.seed),
    )
    heads, optimizer = accelerator.prepare(heads, optimizer)
    identity = setup.identity()
    checkpointer = Checkpointer(
        setup.run_dir / "checkpoints", extra_state=lambda: {"linear": identity}
    )
    return Trainer(
        accelerator=accelerator,
        model=heads,
        optimizer=optimizer,
        scheduler=scheduler,
        loader=loader,
        sampler=sampler,
        forward=forward,
        length=LoopLength(protocol.epochs * per_epoch, protocol.epochs, per_epoch),
        callbacks=_callbacks(setup, checkpointer, progress, extra),
    )


def _callbacks(
    setup: ProbeSetup, checkpointer: Checkpointer, progress: bool | None, extra: Sequence[Callback]
) -> list[Callback]:
    """Pretraining's callbacks, in pretraining's order (see :class:`Callback`)."""
    cadence = (setup.protocol.log_every,)
    callbacks: list[Callback] = [
        Preemption(),
        NonFiniteGuard(cadence, checkpointer.last_good),
        MetricsCallback(setup.run_dir, cadence, setup.protocol.batch_size),
    ]
    if progress is not False:
        callbacks.append(ProgressBar(f"linear {setup.protocol.name}"))
    return [*callbacks, *extra, checkpointer]


def _optimizer(heads: LinearHeads, protocol: LinearProtocol) -> torch.optim.Optimizer:
    """SGD (optionally Nesterov) or LARS over one parameter group per head."""
    if protocol.optimizer == "lars":
        groups = heads.param_groups(lars=True)
        return Lars(groups, lr=groups[0]["lr"], momentum=protocol.momentum)
    groups = heads.param_groups()
    return torch.optim.SGD(
        groups, lr=groups[0]["lr"], momentum=protocol.momentum, nesterov=protocol.nesterov
    )


def _head_forward(heads: LinearHeads, device: torch.device) -> Forward:
    def forward(batch: tuple[Tensor, Tensor]) -> dict[str, Tensor]:
        features, labels = batch
        return {"loss": heads.loss(features.to(device), labels.to(device))}

    return forward


def _image_forward(
    heads: LinearHeads,
    backbone: Backbone,
    protocol: LinearProtocol,
    size: int,
    device: torch.device,
) -> Forward:
    """uint8 images -> (augmented) normalised inputs on the device -> frozen backbone -> heads.

    The augmentation is the papers' RandomResizedCrop + horizontal flip, drawn per image by
    kornia on the device, from the image as the evaluation transform loads it.
    """
    backbone.eval().requires_grad_(False)
    pixels = backbone.pixels
    pipeline = None
    if protocol.augment:
        crop = ViewGroup(
            count=1,
            size=size,
            scale=tuple(protocol.crop_scale),
            jitter_p=0.0,
            grayscale_p=0.0,
            blur_p=0.0,
        )
        pipeline = ViewPipeline([crop], pixels.mean, pixels.std).to(device)
    bf16 = protocol.precision == "bf16"

    def forward(batch: tuple[Tensor, Tensor]) -> dict[str, Tensor]:
        images, labels = (t.to(device, non_blocking=True) for t in batch)
        with torch.no_grad(), torch.autocast(device.type, torch.bfloat16, enabled=bf16):
            inputs = pipeline(images).images[0] if pipeline else pixels.normalise(images, device)
            features = backbone(inputs)
        return {"loss": heads.loss(features.float(), labels)}

    return forward


def _select_and_evaluate(
    heads: LinearHeads, setup: ProbeSetup, holdout_fraction: float
) -> dict[str, Any]:
    """Score every head on the held-out slice, choose one, then read val once and score it."""
    device = next(heads.parameters()).device
    heads.eval()
    names = [spec.name for spec in setup.specs]
    fields: dict[str, Any] = {}
    if setup.select_on == "heldout":
        held_x, held_y = _heldout_features(setup)
        held_top1 = _accuracy(heads, held_x, held_y, device)[0]
        best = int(held_top1.argmax())  # the first of equal heads: the grid's order
        fields["linear_heldout_top1"] = dict(zip(names, held_top1.tolist(), strict=True))
        fields["selected_on"] = (
            f"heldout: {holdout_fraction:.0%} of train per class (seed {setup.seed})"
        )
    val = setup.store.features("val")
    top1, top5 = _accuracy(heads, val.features, val.labels, device)
    if setup.select_on == "val":
        best = int(top1.argmax())
        fields["linear_val_top1_all"] = dict(zip(names, top1.tolist(), strict=True))
        fields["selected_on"] = "val (as the papers did: optimistic)"
    return {
        "linear_top1": float(top1[best]),
        "linear_top5": float(top5[best]),
        "linear_head": names[best],
        **fields,
        "num_val": len(val.labels),
        "feature_cache": str(val.path or ""),
    }


def _heldout_features(setup: ProbeSetup) -> tuple[Tensor, Tensor]:
    """The held-out slice's features under the evaluation transform (the cache's, if any)."""
    if setup.protocol.features == "cached":
        train = setup.store.features("train")
        return train.features[setup.heldout], setup.labels[setup.heldout]
    loader = DataLoader(
        Subset(setup.store.train_set, setup.heldout.tolist()),
        batch_size=256,
        num_workers=setup.num_workers,
    )
    return extract_features(setup.store.backbone(), loader, device=setup.store.device)


@torch.no_grad()
def _accuracy(
    heads: LinearHeads, features: Tensor, labels: Tensor, device: torch.device
) -> tuple[Tensor, Tensor]:
    """Top-1 and top-5 of every head, in chunks so that the logits of a sweep stay small."""
    if len(labels) == 0:
        raise DataError("an evaluation split is empty: there is nothing to score the heads on")
    top1 = torch.zeros(len(heads.specs))
    top5 = torch.zeros(len(heads.specs))
    for start in range(0, len(labels), EVAL_CHUNK):
        x = features[start : start + EVAL_CHUNK].to(device)
        y = labels[start : start + EVAL_CHUNK].to(device)
        logits = heads(x)
        top1 += head_accuracy(logits, y, 1).cpu() * len(y)
        top5 += head_accuracy(logits, y, 5).cpu() * len(y)
    return top1 / len(labels), top5 / len(labels)
