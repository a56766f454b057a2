"""DenseCL and PixPro on tiny inputs: losses against naive per-sample compositions, both DenseCL
queues (contents and resume), the teachers' mirrored heads, and no gradient into the teachers."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from sslvision.augment.views import Views, ViewStack
from sslvision.config import config_from_dict
from sslvision.errors import ConfigError
from sslvision.methods.base import Progress
from sslvision.methods.registry import build_method
from sslvision.nn.correspondence import normalized_distances

BATCH, SIZE = 4, 24  # small-stem ResNet-18: 3x3 feature maps


def build(name: str, **method: object):
    cfg = config_from_dict(
        {
            "model": {"backbone": "resnet18", "small_stem": True},
            "method": {"name": name, "proj_hidden_dim": 16, "proj_output_dim": 8, **method},
        }
    )
    torch.manual_seed(0)
    return build_method(cfg)


def two_views(seed: int = 1) -> Views:
    """Overlapping crops of a 48 px source, the second view mirrored for half the samples."""
    g = torch.Generator().manual_seed(seed)
    images = [torch.randn(BATCH, 3, SIZE, SIZE, generator=g) for _ in range(2)]
    boxes = [
        torch.tensor([[0.0, 0.0, 36.0, 36.0]]).expand(BATCH, 4).clone(),
        torch.tensor([[12.0, 6.0, 48.0, 42.0]]).expand(BATCH, 4).clone(),
    ]
    flips = [torch.zeros(BATCH, dtype=torch.bool), torch.arange(BATCH) % 2 == 1]
    return Views(ViewStack.of(images), ViewStack.of(boxes), ViewStack.of(flips), global_count=2)


def per_sample(fn, x: torch.Tensor) -> torch.Tensor:
    """``fn`` one sample at a time: equal to the batched call only in eval mode."""
    return torch.cat([fn(x[i : i + 1]) for i in range(len(x))])


def naive_info_nce(q: torch.Tensor, k: torch.Tensor, queue: torch.Tensor, t: float) -> float:
    """Mean over rows of MoCo's eq. 1, row by row."""
    total = 0.0
    for qi, ki in zip(F.normalize(q, dim=1), F.normalize(k, dim=1), strict=True):
        logits = [float(qi @ ki) / t] + [float(qi @ n) / t for n in queue]
        total += -logits[0] + math.log(sum(math.exp(v) for v in logits))
    return total / len(q)


# --- DenseCL -----------------------------------------------------------------------------------


@pytest.mark.parametrize("symmetric", [False, True])
def test_densecl_loss_equals_the_naive_composition(symmetric: bool) -> None:
    lam, t = 0.3, 0.2
    model = build("densecl", queue_length=16, symmetric=symmetric, dense_weight=lam).eval()
    views = two_views()
    queue, dense_queue = model.queue.contents().clone(), model.dense_queue.contents().clone()
    out = model.training_step(views)

    teacher = model.momentum_encoder
    with torch.no_grad():
        online_maps = [per_sample(model.backbone.forward_features, x) for x in views.images]
        key_maps = [per_sample(teacher["backbone"].forward_features, x) for x in views.images]
    pairs = [(0, 1), (1, 0)] if symmetric else [(0, 1)]
    global_loss = dense_loss = 0.0
    with torch.no_grad():
        for q, k in pairs:
            query = model.projector(model.backbone.pool(online_maps[q]))
            key = teacher["projector"](teacher["backbone"].pool(key_maps[k]))
            global_loss += naive_info_nce(query, key, queue, t)
            # Eq. 3 and 2 cell by cell: the positive is the key cell of most similar backbone
            # feature, the negatives the dense queue.
            dense_q, dense_k = model.dense_head(online_maps[q]), teacher["dense_head"](key_maps[k])
            rows_q, rows_k = [], []
            for n in range(BATCH):
                fq, fk = online_maps[q][n].flatten(1), key_maps[k][n].flatten(1)
                for i in range(fq.shape[1]):
                    sims = F.cosine_similarity(fq[:, i : i + 1], fk, dim=0)
                    rows_q.append(dense_q[n].flatten(1)[:, i])
                    rows_k.append(dense_k[n].flatten(1)[:, int(sims.argmax())])
            dense_loss += naive_info_nce(torch.stack(rows_q), torch.stack(rows_k), dense_queue, t)
    expected = (1 - lam) * global_loss + lam * dense_loss
    assert float(out["loss"].detach()) == pytest.approx(expected, rel=1e-4)
    assert float(out["loss_dense"]) == pytest.approx(dense_loss, rel=1e-4)


def test_densecl_enqueues_global_and_pooled_dense_keys() -> None:
    model = build("densecl", queue_length=10).eval()
    views = two_views()
    model.training_step(views)
    teacher = model.momentum_encoder
    with torch.no_grad():
        key_map = per_sample(teacher["backbone"].forward_features, views.images[1])
        global_key = F.normalize(teacher["projector"](teacher["backbone"].pool(key_map)), dim=1)
        dense = teacher["dense_head"](key_map)
    pooled = F.normalize(dense.mean(dim=(2, 3)), dim=1)
    torch.testing.assert_close(model.queue.features[:BATCH], global_key, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(model.dense_queue.features[:BATCH], pooled, rtol=1e-4, atol=1e-5)
    assert int(model.queue.ptr) == int(model.dense_queue.ptr) == BATCH


def test_densecl_both_queues_survive_a_state_dict_round_trip() -> None:
    model = build("densecl", queue_length=6, symmetric=True).train()
    for step in range(2):  # 2 x 8 keys into 6 rows: both queues have wrapped
        model.training_step(two_views(seed=step))
        model.on_step_end(Progress(step + 1, 10, 0))
    restored = build("densecl", queue_length=6, symmetric=True).train()
    restored.load_state_dict(model.state_dict())
    for queue in ("queue", "dense_queue"):
        for buffer in ("features", "ptr", "count"):
            name = f"{queue}.{buffer}"
            assert torch.equal(restored.state_dict()[name], model.state_dict()[name]), name
    losses = []
    for m in (model, restored):
        torch.manual_seed(5)  # shuffling BN draws a permutation
        losses.append(m.training_step(two_views(seed=7))["loss"].detach())
    assert torch.equal(losses[0], losses[1])
    assert torch.equal(restored.dense_queue.features, model.dense_queue.features)


def test_densecl_teacher_mirrors_backbone_and_both_heads_without_gradient() -> None:
    model = build("densecl", queue_length=8).train()
    assert set(model.momentum_encoder) == {"backbone", "projector", "dense_head"}
    model.training_step(two_views())["loss"].backward()
    assert all(p.grad is None for p in model.momentum_encoder.parameters())
    assert model.dense_head[0].weight.grad.abs().sum() > 0
    with torch.no_grad():
        model.dense_head[0].weight.add_(1.0)
    model.cfg.momentum = 0.0
    model.on_step_end(Progress(1, 10, 0))
    assert torch.equal(model.momentum_encoder["dense_head"][0].weight, model.dense_head[0].weight)


# --- PixPro ------------------------------------------------------------------------------------


def naive_pixel_term(y: torch.Tensor, x: torch.Tensor, distances: torch.Tensor) -> float:
    """One direction of eq. 5: per image, -cos over its pairs closer than 0.7; mean over images."""
    total = 0.0
    for n in range(y.shape[0]):
        ys, xs = y[n].flatten(1), x[n].flatten(1)
        cosines = [
            float(F.cosine_similarity(ys[:, i], xs[:, j], dim=0))
            for i in range(ys.shape[1])
            for j in range(xs.shape[1])
            if distances[n, i, j] < 0.7
        ]
        total += -sum(cosines) / len(cosines) if cosines else 0.0
    return total / y.shape[0]


@pytest.mark.parametrize("instance_weight", [0.0, 0.5])
def test_pixpro_loss_equals_the_naive_composition(instance_weight: float) -> None:
    model = build("pixpro", instance_weight=instance_weight, pred_hidden_dim=16).eval()
    views = two_views()
    out = model.training_step(views)

    teacher = model.momentum_encoder
    with torch.no_grad():
        maps = [per_sample(model.backbone.forward_features, x) for x in views.images]
        y = [per_sample(lambda m: model.propagation(model.projector(m)), m) for m in maps]
        t_maps = [per_sample(teacher["backbone"].forward_features, x) for x in views.images]
        x = [teacher["projector"](m) for m in t_maps]
    grid = tuple(maps[0].shape[-2:])
    assert grid == (3, 3)
    d01 = normalized_distances(
        views.boxes[0], views.flips[0], grid, views.boxes[1], views.flips[1], grid
    )
    assert (d01 < 0.7).any() and not (d01 < 0.7).all()
    pixel = naive_pixel_term(y[0], x[1], d01) + naive_pixel_term(y[1], x[0], d01.transpose(1, 2))
    expected = 2 * pixel
    if instance_weight:
        with torch.no_grad():
            p = [model.predictor(model.instance_projector(model.backbone.pool(m))) for m in maps]
            z = [teacher["instance_projector"](teacher["backbone"].pool(m)) for m in t_maps]
        instance = sum(
            float((2 - 2 * F.cosine_similarity(a, b, dim=1)).mean())
            for a, b in ((p[0], z[1]), (p[1], z[0]))
        )
        expected += instance_weight * instance
    assert float(out["loss"].detach()) == pytest.approx(expected, rel=1e-4, abs=1e-5)


def test_pixpro_no_gradient_reaches_the_momentum_branch() -> None:
    model = build("pixpro", instance_weight=1.0, pred_hidden_dim=16).train()
    assert set(model.momentum_encoder) == {"backbone", "projector", "instance_projector"}
    assert not any(p.requires_grad for p in model.momentum_encoder.parameters())
    model.training_step(two_views())["loss"].backward()
    assert all(p.grad is None for p in model.momentum_encoder.parameters())
    online = [model.backbone, model.projector, model.propagation, model.instance_projector]
    for module in [*online, model.predictor]:
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in module.parameters())


def test_pixpro_momentum_rises_from_099_to_one_on_a_cosine() -> None:
    model = build("pixpro")
    assert model.momentum(Progress(0, 100, 0)) == pytest.approx(0.99)
    assert model.momentum(Progress(50, 100, 0)) == pytest.approx(0.995)
    assert model.momentum(Progress(100, 100, 0)) == pytest.approx(1.0)
    assert set(model.momentum_encoder) == {"backbone", "projector"}  # no instance branch


@pytest.mark.parametrize(
    ("name", "method", "message"),
    [
        ("densecl", {"dense_weight": 1.5}, r"method.dense_weight must be in \[0, 1\]"),
        ("densecl", {"key_bn": "group"}, "unknown method.key_bn 'group'"),
        ("pixpro", {"transform_layers": 3}, "method.transform_layers must be one of 0, 1, 2"),
        ("pixpro", {"gamma": 0.0}, "method.gamma must be positive"),
        ("pixpro", {"pos_threshold": -1.0}, "method.pos_threshold must be positive"),
        ("pixpro", {"instance_weight": -1.0}, "method.instance_weight must be >= 0"),
    ],
)
def test_bad_dense_settings_are_explained(name: str, method: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        build(name, **method)
