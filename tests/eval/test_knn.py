"""Tests of the weighted kNN protocol: accuracy, agreement with a naive loop, chunking, memory."""

from __future__ import annotations

import re

import pytest
import torch
from torch.profiler import ProfilerActivity, profile

from sslvision.eval.knn import knn_classify


def naive_knn(train_x, train_y, test_x, test_y, k, temperature, num_classes):
    """One test sample at a time: full similarity, sorted neighbours, exp-weighted votes."""
    train_x = train_x.double() / train_x.double().norm(dim=1, keepdim=True)
    top1 = top5 = 0
    for query, target in zip(test_x.double(), test_y.tolist(), strict=True):
        similarity = train_x @ (query / query.norm())
        order = sorted(range(len(train_x)), key=lambda i: -float(similarity[i]))[:k]
        votes = [0.0] * num_classes
        for i in order:
            votes[int(train_y[i])] += float(torch.exp(similarity[i] / temperature))
        ranked = sorted(range(num_classes), key=lambda c: (-votes[c], c))
        top1 += ranked[0] == target
        top5 += target in ranked[:5]
    return {"top1": top1 / len(test_x), "top5": top5 / len(test_x)}


def random_problem(seed, num_train=60, num_test=25, dim=8, num_classes=7):
    generator = torch.Generator().manual_seed(seed)
    return (
        torch.randn(num_train, dim, generator=generator),
        torch.randint(num_classes, (num_train,), generator=generator),
        torch.randn(num_test, dim, generator=generator),
        torch.randint(num_classes, (num_test,), generator=generator),
    )


def test_separable_features_are_classified_perfectly():
    generator = torch.Generator().manual_seed(0)
    num_classes, dim = 10, 16
    directions = torch.eye(num_classes, dim)
    train_y = torch.arange(num_classes).repeat(30)
    test_y = torch.arange(num_classes).repeat(5)
    train_x = 3 * directions[train_y] + 0.1 * torch.randn(len(train_y), dim, generator=generator)
    test_x = 3 * directions[test_y] + 0.1 * torch.randn(len(test_y), dim, generator=generator)

    result = knn_classify(train_x, train_y, test_x, test_y, ks=(1, 20, 200))

    assert result == {k: {"top1": 1.0, "top5": 1.0} for k in (1, 20, 200)}


@pytest.mark.parametrize("temperature", [0.07, 0.5, 2.0])
def test_matches_naive_implementation(temperature):
    train_x, train_y, test_x, test_y = random_problem(seed=1)
    ks = (1, 3, 10, 60, 500)  # 500 is larger than the bank of 60

    result = knn_classify(
        train_x, train_y, test_x, test_y, ks=ks, temperature=temperature, num_classes=7
    )

    for k in ks:
        expected = naive_knn(train_x, train_y, test_x, test_y, min(k, 60), temperature, 7)
        assert result[k] == pytest.approx(expected)


def test_feature_scale_does_not_matter():
    train_x, train_y, test_x, test_y = random_problem(seed=2)

    plain = knn_classify(train_x, train_y, test_x, test_y, ks=(5,))
    scaled = knn_classify(17 * train_x, train_y, 0.01 * test_x, test_y, ks=(5,))

    assert plain == scaled


def test_chunk_size_does_not_change_results():
    train_x, train_y, test_x, test_y = random_problem(seed=3, num_train=80, num_test=50)

    results = [
        knn_classify(train_x, train_y, test_x, test_y, ks=(1, 5, 20, 200), chunk_size=size)
        for size in (1, 7, 1000)
    ]

    assert results[0] == results[1] == results[2]


def test_small_temperature_neither_overflows_nor_changes_the_winner():
    train_x, train_y, test_x, test_y = random_problem(seed=4)

    result = knn_classify(train_x, train_y, test_x, test_y, ks=(10,), temperature=1e-3)

    nearest_neighbour = naive_knn(train_x, train_y, test_x, test_y, 1, 1.0, 7)
    assert result[10]["top1"] == pytest.approx(nearest_neighbour["top1"])


def test_top5_with_fewer_than_five_classes_is_one():
    train_x, train_y, test_x, test_y = random_problem(seed=5, num_classes=3)

    result = knn_classify(train_x, train_y, test_x, test_y, ks=(3,), num_classes=3)

    assert result[3]["top5"] == 1.0


def test_low_precision_features_are_accepted():
    train_x, train_y, test_x, test_y = random_problem(seed=6)

    result = knn_classify(train_x.half(), train_y.int(), test_x.bfloat16(), test_y, ks=(5,))

    assert set(result[5]) == {"top1", "top5"}


def test_similarity_matrix_is_never_materialised_in_full():
    num_test, num_train, chunk_size = 4000, 1000, 100
    train_x, train_y, test_x, test_y = random_problem(
        seed=7, num_train=num_train, num_test=num_test, dim=16
    )

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as profiler:
        knn_classify(train_x, train_y, test_x, test_y, ks=(20, 200), chunk_size=chunk_size)

    largest = max(event.self_cpu_memory_usage for event in profiler.events())
    chunk_similarity_bytes = chunk_size * num_train * 4
    full_similarity_bytes = num_test * num_train * 4
    assert largest >= chunk_similarity_bytes, "the profiler did not record the chunk's allocation"
    assert largest < full_similarity_bytes / 4


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_bank_with_cpu_test_set_matches_cpu():
    train_x, train_y, test_x, test_y = random_problem(seed=8)

    on_cpu = knn_classify(train_x, train_y, test_x, test_y, ks=(1, 10))
    on_cuda = knn_classify(train_x.cuda(), train_y.cuda(), test_x, test_y, ks=(1, 10))

    assert on_cuda == on_cpu


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"test_features": torch.randn(25, 9)}, "same dimension, got 8 and 9"),
        ({"train_features": torch.randn(60)}, "train_features must be 2-D"),
        ({"train_features": torch.randn(0, 8)}, "train_features is empty"),
        ({"test_features": torch.full((25, 8), float("nan"))}, "NaN or infinite"),
        ({"train_labels": torch.zeros(59, dtype=torch.long)}, "must have shape (60,)"),
        ({"test_labels": -torch.ones(25, dtype=torch.long)}, "non-negative class indices"),
        ({"ks": ()}, "at least one number of neighbours"),
        ({"ks": (5, 0)}, "positive integer"),
        ({"temperature": 0.0}, "temperature must be positive"),
        ({"chunk_size": 0}, "chunk_size must be at least 1"),
        ({"num_classes": 3}, "out of range for num_classes=3"),
    ],
)
def test_bad_input_is_rejected_with_a_clear_message(change, message):
    train_x, train_y, test_x, test_y = random_problem(seed=9)
    arguments = {
        "train_features": train_x,
        "train_labels": train_y,
        "test_features": test_x,
        "test_labels": test_y,
    } | change

    with pytest.raises(ValueError, match=re.escape(message)):
        knn_classify(**arguments)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"train_labels": torch.zeros(60)}, "train_labels must be an integer tensor"),
        ({"test_features": torch.zeros(25, 8, dtype=torch.long)}, "floating point tensor"),
    ],
)
def test_wrong_dtypes_are_rejected_with_a_clear_message(change, message):
    train_x, train_y, test_x, test_y = random_problem(seed=10)
    arguments = {
        "train_features": train_x,
        "train_labels": train_y,
        "test_features": test_x,
        "test_labels": test_y,
    } | change

    with pytest.raises(TypeError, match=re.escape(message)):
        knn_classify(**arguments)
