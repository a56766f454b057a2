"""Detection transfer: fine-tune a Faster R-CNN with FPN on the pretrained backbone, report AP.

The protocol of the MoCo/DenseCL/PixPro transfer studies, scaled to a budget: the encoder's
ResNet becomes the body of torchvision's Faster R-CNN + FPN (Ren et al. 2015, Lin et al. 2017),
its BatchNorm fine-tuned on batch statistics (``norm="batch"``, as the MoCo transfer's SyncBN) or
kept at the pretrained statistics (``norm="frozen"``), the stem and ``layer1`` frozen by default
(``trainable_layers=3``, Detectron2's ``FREEZE_AT=2``). The detector is trained with SGD for a
number of steps on a VOC- or COCO-format training set and evaluated with the COCO protocol
(pycocotools): AP50 (AP at IoU 0.5, the VOC metric the papers report) and AP (IoU 0.5:0.95).
Objects marked difficult or crowd are ignored.
"""

from __future__ import annotations

import contextlib
import io
import time
from collections.abc import Iterator
from typing import Any

import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from torch import nn
from torch.utils.data import DataLoader
from torchvision.models.detection import FasterRCNN
from torchvision.models.detection.backbone_utils import resnet_fpn_backbone
from torchvision.ops.misc import FrozenBatchNorm2d
from torchvision.transforms import v2
from tqdm import tqdm

from sslvision.backbones import TIMM_PREFIX, apply_small_stem
from sslvision.data.detection import DetectionDataset, collate_detection
from sslvision.engine.schedule import build_scheduler
from sslvision.errors import ConfigError, NonFiniteError
from sslvision.eval.encoders import Encoder

# "batch": BatchNorm on batch statistics, fine-tuned, as the MoCo detection transfer (SyncBN);
# "frozen": the pretrained statistics and affine parameters kept (torchvision's default).
NORM_LAYERS = {"batch": nn.BatchNorm2d, "frozen": FrozenBatchNorm2d}
# Fewer proposals and sampled RoIs than torchvision's defaults (2,000/1,000 proposals, 512 RoIs an
# image): the box head's 12,544 x 1,024 layer on every RoI dominates a CPU step, and images with a
# few objects fill 128 RoIs at the usual 1:3 positive share no worse than 512.
BUDGET_HEADS = {
    "rpn_pre_nms_top_n_train": 1000,
    "rpn_post_nms_top_n_train": 500,
    "rpn_pre_nms_top_n_test": 500,
    "rpn_post_nms_top_n_test": 300,
    "box_batch_size_per_image": 128,
}


def build_detector(
    encoder: Encoder,
    num_classes: int,
    *,
    min_size: int,
    max_size: int,
    trainable_layers: int = 3,
    norm: str = "batch",
) -> FasterRCNN:
    """Faster R-CNN + FPN whose body is the encoder's ResNet, its BatchNorm as ``norm`` says.

    ``num_classes`` counts the object classes; the background class is added here. Images are
    normalised with the encoder's own pixel statistics, as in pretraining.
    """
    if norm not in NORM_LAYERS:
        raise ConfigError(f"unknown norm '{norm}'; choose one of {', '.join(NORM_LAYERS)}")
    backbone = encoder.backbone
    if backbone.name.startswith(TIMM_PREFIX) or not hasattr(backbone.model, "layer4"):
        raise ConfigError(
            f"detection transfer needs a ResNet-style torchvision backbone, not '{backbone.name}'"
        )
    fpn = resnet_fpn_backbone(
        backbone_name=backbone.name,
        weights=None,
        norm_layer=NORM_LAYERS[norm],
        trainable_layers=trainable_layers,
    )
    if not isinstance(backbone.model.maxpool, nn.MaxPool2d):  # model.small_stem
        apply_small_stem(fpn.body, backbone.name)
        fpn.body.conv1.requires_grad_(trainable_layers == 5)
    missing, unexpected = fpn.body.load_state_dict(backbone.model.state_dict(), strict=False)
    unexpected = [k for k in unexpected if not k.endswith("num_batches_tracked")]
    if missing or unexpected:
        raise ValueError(f"backbone weights do not fit the detector: {missing + unexpected}")
    return FasterRCNN(
        fpn,
        num_classes=num_classes + 1,
        min_size=min_size,
        max_size=max_size,
        image_mean=list(backbone.pixels.mean),
        image_std=list(backbone.pixels.std),
        **BUDGET_HEADS,
    )


def _batches(loader: DataLoader) -> Iterator:
    while True:
        yield from loader


def train_detector(
    model: FasterRCNN,
    dataset: DetectionDataset,
    *,
    steps: int,
    batch_size: int,
    lr: float,
    num_workers: int,
    device: torch.device,
    seed: int,
    progress_bar: bool = True,
) -> list[float]:
    """SGD (momentum 0.9, weight decay 1e-4) for ``steps`` steps: linear warm-up over the first
    fifth (100 steps at most), cosine decay after. Returns the loss of every step; a non-finite
    loss stops it."""
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=1e-4)
    warmup = max(1, min(100, steps // 5))
    schedule = build_scheduler(optimizer, warmup_steps=warmup, total_steps=steps)
    dataset.flip = v2.RandomHorizontalFlip(0.5)
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=True,
        drop_last=len(dataset) >= batch_size,
        num_workers=num_workers,
        collate_fn=collate_detection,
        generator=torch.Generator().manual_seed(seed),
    )
    model.to(device).train()
    losses = []
    batches = _batches(loader)
    for step in tqdm(range(steps), desc="detection fine-tuning", disable=not progress_bar):
        images, targets = next(batches)
        images = [image.to(device).float().div_(255) for image in images]
        targets = [{k: v.to(device) for k, v in t.items() if k != "ignore"} for t in targets]
        loss = sum(model(images, targets).values())
        if not torch.isfinite(loss):
            raise NonFiniteError(
                f"detection fine-tuning: the loss is {loss.item()} at step {step}; "
                "try a lower --lr (or --norm batch for a random init)"
            )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        losses.append(loss.item())
    return losses


@torch.no_grad()
def predict(
    model: FasterRCNN, dataset: DetectionDataset, device: torch.device, num_workers: int
) -> list[dict[str, torch.Tensor]]:
    """The model's detections (boxes, scores, labels) for every image of ``dataset``, in order."""
    dataset.flip = None
    loader = DataLoader(
        dataset, batch_size=4, num_workers=num_workers, collate_fn=collate_detection
    )
    model.to(device).eval()
    outputs = []
    for images, _ in loader:
        found = model([image.to(device).float().div_(255) for image in images])
        outputs.extend({k: v.cpu() for k, v in result.items()} for result in found)
    return outputs


def coco_ap(
    dataset: DetectionDataset, detections: list[dict[str, torch.Tensor]]
) -> dict[str, float]:
    """COCO-protocol AP50 and AP (IoU 0.5:0.95) of ``detections`` against ``dataset``'s boxes.

    Ground truth marked ``ignore`` neither counts as missed nor penalises a detection on it.
    """
    if len(detections) != len(dataset):
        raise ValueError(f"{len(detections)} detection lists for {len(dataset)} images")
    images, annotations = [], []
    for image_id, record in enumerate(dataset.records):
        images.append({"id": image_id})
        for box, label, ignore in zip(record.boxes, record.labels, record.ignore, strict=True):
            x0, y0, x1, y1 = box
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": label,
                    "bbox": [x0, y0, x1 - x0, y1 - y0],
                    "area": (x1 - x0) * (y1 - y0),
                    "iscrowd": int(ignore),
                }
            )
    categories = [{"id": i + 1, "name": name} for i, name in enumerate(dataset.classes)]
    results = [
        {
            "image_id": image_id,
            "category_id": int(label),
            "bbox": [float(x0), float(y0), float(x1 - x0), float(y1 - y0)],
            "score": float(score),
        }
        for image_id, found in enumerate(detections)
        for (x0, y0, x1, y1), score, label in zip(
            found["boxes"].tolist(), found["scores"], found["labels"], strict=True
        )
    ]
    if not results or not annotations:
        return {"ap50": 0.0, "ap": 0.0}
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its progress
        truth = COCO()
        truth.dataset = {"images": images, "annotations": annotations, "categories": categories}
        truth.createIndex()
        evaluation = COCOeval(truth, truth.loadRes(results), iouType="bbox")
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
    ap, ap50 = (max(0.0, float(v)) for v in evaluation.stats[:2])  # -1: no ground truth
    return {"ap50": ap50, "ap": ap}


def run_detection(
    encoder: Encoder,
    train_set: DetectionDataset,
    val_set: DetectionDataset,
    *,
    steps: int = 1000,
    batch_size: int = 4,
    lr: float = 0.005,
    min_size: int = 320,
    max_size: int = 512,
    trainable_layers: int = 3,
    norm: str = "batch",
    num_workers: int = 2,
    seed: int = 0,
    device: str | torch.device | None = None,
    progress_bar: bool = True,
) -> dict[str, Any]:
    """Fine-tune a detector on ``train_set`` from ``encoder`` and evaluate it on ``val_set``."""
    if val_set.classes != train_set.classes:
        raise ValueError(
            f"train and val classes differ: {train_set.classes} vs {val_set.classes}; "
            "load the val set with the train set's classes"
        )
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    started = time.perf_counter()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)  # the new heads' init
        model = build_detector(
            encoder,
            len(train_set.classes),
            min_size=min_size,
            max_size=max_size,
            trainable_layers=trainable_layers,
            norm=norm,
        )
        losses = train_detector(
            model,
            train_set,
            steps=steps,
            batch_size=batch_size,
            lr=lr,
            num_workers=num_workers,
            device=device,
            seed=seed,
            progress_bar=progress_bar,
        )
    scores = coco_ap(val_set, predict(model, val_set, device, num_workers))
    return {
        "evaluator": "detection",
        "encoder": encoder.spec,
        "method": encoder.method,
        "backbone": encoder.backbone.name,
        "train_data": train_set.source,
        "val_data": val_set.source,
        "num_train": len(train_set),
        "num_val": len(val_set),
        "classes": " ".join(train_set.classes),
        "steps": steps,
        "batch_size": batch_size,
        "lr": lr,
        "min_size": min_size,
        "trainable_layers": trainable_layers,
        "norm": norm,
        "seed": seed,
        "first_loss": losses[0] if losses else None,
        "last_loss": losses[-1] if losses else None,
        "seconds": round(time.perf_counter() - started, 1),
        **scores,
    }
