"""MoCo v2, MoCo v3 and BYOL on tiny inputs: losses against naive per-sample versions, queue and
momentum bookkeeping, and no gradient into the teacher."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from sslvision.augment.views import Views, ViewStack
from sslvision.config import config_from_dict
from sslvision.errors import ConfigError
from sslvision.methods.base import Progress
from sslvision.methods.registry import build_method

BATCH, SIZE = 6, 16


def build(name: str, **method: object):
    cfg = config_from_dict(
        {
            "model": {"backbone": "resnet18"},
            "method": {
                "name": name,
                "proj_hidden_dim": 32,
                "proj_output_dim": 8,
                **({"pred_hidden_dim": 32} if name != "mocov2" else {}),
                **method,
            },
        }
    )
    torch.manual_seed(0)
    return build_method(cfg)


def two_views(seed: int = 1) -> Views:
    g = torch.Generator().manual_seed(seed)
    images = [torch.randn(BATCH, 3, SIZE, SIZE, generator=g) for _ in range(2)]
    boxes = [torch.zeros(BATCH, 4) for _ in range(2)]
    flips = [torch.zeros(BATCH, dtype=torch.bool) for _ in range(2)]
    return Views(ViewStack.of(images), ViewStack.of(boxes), ViewStack.of(flips), global_count=2)


def per_sample(fn, x: torch.Tensor) -> torch.Tensor:
    """``fn`` applied one sample at a time: equal to the batched call only in eval mode."""
    return torch.cat([fn(x[i : i + 1]) for i in range(len(x))])


def naive_info_nce(q: torch.Tensor, k: torch.Tensor, queue: torch.Tensor, t: float) -> float:
    total = 0.0
    for i in range(len(q)):
        qi, ki = F.normalize(q[i], dim=0), F.normalize(k[i], dim=0)
        logits = [float(qi @ ki) / t] + [float(qi @ F.normalize(n, dim=0)) / t for n in queue]
        total += -logits[0] + math.log(sum(math.exp(v) for v in logits))
    return total / len(q)


@pytest.mark.parametrize("symmetric", [False, True])
def test_mocov2_loss_uses_the_queue_before_the_step_and_enqueues_after(symmetric: bool) -> None:
    model = build(
        "mocov2", queue_length=16, symmetric=symmetric, temperature=0.2, queue_start="random"
    ).eval()
    views = two_views()
    queue_before = model.queue.contents().clone()
    ptr_before = int(model.queue.ptr)
    loss = model.training_step(views)["loss"]

    def online(x):
        return model.projector(model.backbone(x))

    with torch.no_grad():
        x1, x2 = views.images
        q1, q2 = per_sample(online, x1), per_sample(online, x2)
        k1 = F.normalize(per_sample(model.momentum_encoder, x1), dim=1)
        k2 = F.normalize(per_sample(model.momentum_encoder, x2), dim=1)
    expected = naive_info_nce(q1, k2, queue_before, 0.2)
    if symmetric:  # both terms see the same, pre-step queue
        expected += naive_info_nce(q2, k1, queue_before, 0.2)
    assert float(loss.detach()) == pytest.approx(expected, rel=1e-4)

    new_keys = torch.cat([k2, k1]) if symmetric else k2
    slots = [(ptr_before + i) % 16 for i in range(len(new_keys))]
    torch.testing.assert_close(model.queue.features[slots], new_keys, rtol=1e-4, atol=1e-5)


def test_mocov2_queue_starts_empty_by_default_and_random_as_the_authors() -> None:
    empty = build("mocov2", queue_length=16, symmetric=True)
    random = build("mocov2", queue_length=16, queue_start="random")
    assert len(empty.queue.contents()) == 0 and len(random.queue.contents()) == 16
    torch.testing.assert_close(random.queue.contents().norm(dim=1), torch.ones(16))
    empty.training_step(two_views())  # the first step has no negatives; its keys are enqueued
    assert len(empty.queue.contents()) == 2 * len(two_views().images[0])


def test_mocov2_gradients_reach_the_online_encoder_only() -> None:
    model = build("mocov2", queue_length=10, queue_start="random").train()
    model.training_step(two_views())["loss"].backward()
    assert all(p.grad is None for p in model.momentum_encoder.parameters())
    assert all(not p.requires_grad for p in model.momentum_encoder.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.backbone.parameters())


@pytest.mark.parametrize("name", ["mocov2", "mocov3", "byol"])
def test_teacher_starts_equal_and_follows_the_momentum_closed_form(name: str) -> None:
    model = build(name, momentum=0.9, momentum_schedule="constant")
    online = model.online_encoder()
    for (_, t), (_, o) in zip(
        model.momentum_encoder.state_dict().items(), online.state_dict().items(), strict=True
    ):
        assert torch.equal(t, o)
    start = [p.detach().clone() for p in model.momentum_encoder.parameters()]
    with torch.no_grad():
        for p in online.parameters():
            p.add_(1.0)
    steps = 3
    for step in range(1, steps + 1):
        model.on_step_end(Progress(step, 10, 0))
    for p0, t, o in zip(
        start, model.momentum_encoder.parameters(), online.parameters(), strict=True
    ):
        expected = 0.9**steps * p0 + (1 - 0.9**steps) * o.detach()
        torch.testing.assert_close(t, expected)


def test_cosine_momentum_runs_from_base_to_one() -> None:
    model = build("byol", momentum=0.996)
    assert model.momentum(Progress(0, 100, 0)) == pytest.approx(0.996)
    assert model.momentum(Progress(50, 100, 0)) == pytest.approx(0.998)
    assert model.momentum(Progress(100, 100, 0)) == pytest.approx(1.0)


def test_mocov3_loss_is_the_symmetric_in_batch_infonce_times_two_t() -> None:
    t = 0.5
    model = build("mocov3", temperature=t).eval()
    views = two_views()
    loss = model.training_step(views)["loss"]

    def online(x):
        return model.predictor(model.projector(model.backbone(x)))

    def naive(q: torch.Tensor, k: torch.Tensor) -> float:
        q, k = F.normalize(q, dim=1), F.normalize(k, dim=1)
        total = 0.0
        for i in range(len(q)):
            logits = [float(q[i] @ k[j]) / t for j in range(len(k))]
            total += -logits[i] + math.log(sum(math.exp(v) for v in logits))
        return total / len(q)

    with torch.no_grad():
        x1, x2 = views.images
        q1, q2 = per_sample(online, x1), per_sample(online, x2)
        k1, k2 = per_sample(model.momentum_encoder, x1), per_sample(model.momentum_encoder, x2)
    expected = (naive(q1, k2) + naive(q2, k1)) * 2 * t
    assert float(loss.detach()) == pytest.approx(expected, rel=1e-4)


def test_byol_loss_is_the_symmetric_normalised_mse() -> None:
    model = build("byol").eval()
    views = two_views()
    loss = model.training_step(views)["loss"]

    def online(x):
        return model.predictor(model.projector(model.backbone(x)))

    with torch.no_grad():
        x1, x2 = views.images
        p1, p2 = per_sample(online, x1), per_sample(online, x2)
        z1, z2 = per_sample(model.momentum_encoder, x1), per_sample(model.momentum_encoder, x2)
    expected = sum(
        float((2 - 2 * F.cosine_similarity(p, z, dim=1)).mean()) for p, z in ((p1, z2), (p2, z1))
    )
    assert float(loss.detach()) == pytest.approx(expected, rel=1e-4)


def test_byol_and_mocov3_teachers_get_no_gradient() -> None:
    for name in ("byol", "mocov3"):
        model = build(name).train()
        model.training_step(two_views())["loss"].backward()
        assert all(p.grad is None for p in model.momentum_encoder.parameters()), name


def test_mocov3_freezes_the_vit_patch_projection() -> None:
    cfg = config_from_dict(
        {
            "model": {"backbone": "timm:vit_tiny_patch16_224"},
            "method": {
                "name": "mocov3",
                "proj_hidden_dim": 32,
                "proj_output_dim": 8,
                "pred_hidden_dim": 32,
                "proj_layers": 3,
                "freeze_patch_embed": True,
            },
        }
    )
    model = build_method(cfg)
    assert not any(p.requires_grad for p in model.backbone.model.patch_embed.parameters())
    assert all(p.requires_grad for p in model.backbone.model.blocks.parameters())


@pytest.mark.parametrize(
    ("name", "method", "message"),
    [
        ("mocov2", {"key_bn": "group"}, "unknown method.key_bn 'group'. Valid choices: shuffle"),
        ("mocov2", {"queue_length": 0}, "method.queue_length must be positive"),
        ("mocov2", {"queue_start": "keys"}, "unknown method.queue_start 'keys'. Valid choices"),
        ("byol", {"momentum_schedule": "linear"}, "Valid choices: constant, cosine"),
        ("byol", {"momentum": 1.5}, r"method.momentum must be in \[0, 1\]"),
        ("mocov3", {"freeze_patch_embed": True}, "needs a ViT backbone"),
    ],
)
def test_bad_method_settings_are_explained(name: str, method: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        build(name, **method)


def _build_mocov2_with_sync_bn(rank: int, world_size: int, out_dir: Path) -> None:
    try:
        build("mocov2", key_bn="sync")
    except ConfigError as error:
        (out_dir / f"rank{rank}.txt").write_text(str(error))


def test_sync_bn_on_cpu_processes_is_refused_with_the_alternative(
    tmp_path: Path, distributed_run
) -> None:
    """DistributedDataParallel refuses SyncBatchNorm on CPU modules; say so before training."""
    distributed_run(_build_mocov2_with_sync_bn, tmp_path)
    message = (tmp_path / "rank0.txt").read_text()
    assert message == (
        "method.key_bn=sync: SyncBatchNorm runs on GPUs only; with CPU processes use "
        "method.key_bn=shuffle"
    )
