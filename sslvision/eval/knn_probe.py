"""The kNN monitor's probe: accuracy during pretraining, on a fixed labelled subset decoded once
and kept in memory.

A run that goes wrong often shows it in the kNN long before the loss does: SwAV's features
collapsing after its queue starts, or a momentum method that needs ten times the budget to pass
the random init. The probe is the ``sslvision knn`` protocol (the same feature extraction in eval
mode and float32, the same weighted vote) on a seeded subset, so with ``max_train=0`` and
``max_val=0`` it gives the number ``sslvision knn`` gives for the checkpoint of that step.
"""

from __future__ import annotations

import copy

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Subset

from sslvision.backbones import Backbone
from sslvision.config import MonitorConfig
from sslvision.data.class_match import label_by_train_classes
from sslvision.data.spec import dataset_from_spec
from sslvision.eval.knn_eval import knn_on_splits
from sslvision.registry import PROBES

Batches = list[tuple[Tensor, Tensor]]


@PROBES.register("knn")
class KNNProbe:
    """Probes a backbone's kNN top-1 on the configured subsets (a config checked by
    :func:`~sslvision.engine.callbacks.knn_monitor.check_monitor_config`); the trainer builds one
    on the main process only and hands it to its :class:`KNNMonitor` callback."""

    def __init__(
        self,
        cfg: MonitorConfig,
        *,
        image_size: int,
        device: torch.device,
        seed: int,
        num_workers: int,
    ) -> None:
        self.cfg, self.device = cfg, device
        # A DataLoader draws its base seed from the global generator: fork it, so that a run
        # trains exactly as it would without the monitor.
        with torch.random.fork_rng(devices=[]):
            train_set = dataset_from_spec(cfg.train_data, "train", image_size)
            self.num_classes = getattr(train_set, "num_classes", None)
            self.bank = _decode(train_set, cfg.max_train, seed, num_workers)
            val_set = dataset_from_spec(cfg.val_data, "val", image_size)
            val_set = label_by_train_classes(train_set, val_set)
            self.queries = _decode(val_set, cfg.max_val, seed, num_workers)

    def __call__(self, backbone: Backbone) -> float:
        """kNN top-1 (a fraction) of ``backbone`` now; the training model is not touched.

        The probe runs on a contiguous float32 copy, the very network ``sslvision knn`` builds
        from the step's checkpoint: a channels_last model picks other convolution kernels, whose
        last-bit differences can move a neighbour's vote (a fresh machine saw 0.075 vs 0.05).
        """
        probed = copy.deepcopy(backbone).float().to(memory_format=torch.contiguous_format)
        result = knn_on_splits(
            probed,
            self.bank,
            self.queries,
            device=self.device,
            ks=(self.cfg.k,),
            temperature=self.cfg.temperature,
            num_classes=self.num_classes,
            progress=False,
        )
        return result[self.cfg.k]["top1"]


def _decode(dataset: Dataset, limit: int, seed: int, num_workers: int) -> Batches:
    """The uint8 batches of ``dataset`` or of a seeded subset of ``limit`` images, in order."""
    if limit and limit < len(dataset):
        order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed))
        dataset = Subset(dataset, order[:limit].sort().values.tolist())
    return list(DataLoader(dataset, batch_size=256, num_workers=num_workers))
