"""Tests of few-shot evaluation: the draws, accuracy on separable features, val read last."""

from __future__ import annotations

import pytest
import torch

from sslvision.errors import DataError
from sslvision.eval import fewshot, logreg
from sslvision.eval.fewshot import draw_few_shot, few_shot
from sslvision.eval.selection import holdout_split

FAST = {"shots": (1, 5), "draws": 2, "ks": (1, 5), "cs": (0.1, 10.0)}


def blobs(per_class: int, seed: int, num_classes: int = 4, dim: int = 6):
    """Gaussian blobs around ``4 * e_c``: linearly separable."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.arange(num_classes).repeat(per_class)
    centres = 4 * torch.eye(num_classes, dim)
    return centres[labels] + 0.3 * torch.randn(len(labels), dim, generator=generator), labels


def test_draws_are_seeded_n_per_class_and_outside_the_heldout_slice():
    labels = torch.arange(5).repeat(12)
    fit, held = holdout_split(labels, 0.25, seed=0)
    first = draw_few_shot(labels, fit, 3, seed=1)
    assert torch.equal(first, draw_few_shot(labels, fit, 3, seed=1))
    assert not torch.equal(first, draw_few_shot(labels, fit, 3, seed=2))
    assert labels[first].bincount().tolist() == [3] * 5
    assert not set(first.tolist()) & set(held.tolist())
    assert set(first.tolist()) <= set(fit.tolist())


def test_too_few_images_in_a_class_names_it_and_n():
    labels = torch.tensor([0] * 6 + [1] * 2)
    with pytest.raises(DataError, match=r"class 1 has 2 .* the 5 shots"):
        draw_few_shot(labels, torch.arange(8), 5, seed=0)


def test_separable_features_score_one_with_no_spread():
    train_x, train_y = blobs(12, seed=0)
    val_x, val_y = blobs(5, seed=1)
    record = few_shot(train_x, train_y, lambda: (val_x, val_y), **FAST)
    for method in ("knn", "logreg"):
        assert record[f"fewshot_{method}_top1_5shot_mean"] == 1.0
        assert record[f"fewshot_{method}_top1_5shot_std"] == 0.0
    assert record["fewshot_shots"] == [1, 5] and record["fewshot_draws"] == 2
    assert len(record["fewshot_knn_k_1shot"]) == len(record["fewshot_logreg_c_5shot"]) == 2
    assert max(record["fewshot_knn_k_1shot"]) <= 4  # k clipped to a 1-shot draw of 4 images


def test_val_is_read_once_after_every_choice_and_never_enters_a_draw(monkeypatch):
    train_x, train_y = blobs(12, seed=0)
    val_x, val_y = blobs(5, seed=1)
    fit_part, _ = holdout_split(train_y, 0.1, seed=0)
    drawable = {tuple(row) for row in train_x[fit_part].tolist()}
    events = []
    fit, knn = logreg.fit_logreg, fewshot.knn_classify

    def logged_fit(x, y, c, max_iter=logreg.MAX_ITER):
        assert {tuple(row) for row in x.tolist()} <= drawable
        events.append("fit")
        return fit(x, y, c, max_iter)

    def logged_knn(bank, bank_labels, queries, query_labels, **kwargs):
        assert {tuple(row) for row in bank.tolist()} <= drawable
        events.append("knn val" if queries is val_x else "knn heldout")
        return knn(bank, bank_labels, queries, query_labels, **kwargs)

    def val():
        events.append("val")
        return val_x, val_y

    monkeypatch.setattr(logreg, "fit_logreg", logged_fit)
    monkeypatch.setattr(fewshot, "knn_classify", logged_knn)
    few_shot(train_x, train_y, val, **FAST)
    draws = len(FAST["shots"]) * FAST["draws"]
    selection = (["knn heldout"] + ["fit"] * len(FAST["cs"])) * draws
    assert events == [*selection, "val"] + ["knn val"] * draws


def test_a_class_without_enough_fit_images_is_refused():
    train_x, train_y = blobs(4, seed=0)  # 4 a class, 1 of them held out: 3 to draw from
    with pytest.raises(DataError, match="fewer than the 5 shots"):
        few_shot(train_x, train_y, lambda: blobs(2, seed=1), shots=(5,))
