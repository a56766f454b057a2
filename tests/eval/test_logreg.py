"""Tests of logistic-regression evaluation: accuracy, C chosen on held-out train, val read last."""

from __future__ import annotations

import pytest
import torch

from sslvision.errors import ConfigError, DataError
from sslvision.eval import logreg
from sslvision.eval.logreg import logistic_regression
from sslvision.eval.selection import holdout_split

CS = (0.001, 0.1, 10.0)


def blobs(per_class: int, seed: int, num_classes: int = 4, dim: int = 6, noise: float = 0.3):
    """Gaussian blobs around ``4 * e_c``: linearly separable at this noise."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.arange(num_classes).repeat(per_class)
    centres = 4 * torch.eye(num_classes, dim)
    return centres[labels] + noise * torch.randn(len(labels), dim, generator=generator), labels


def noisy_problem(seed: int = 0):
    """Overlapping blobs, so that the held-out top-1 differs between Cs."""
    x, y = blobs(15, seed, noise=4.0)
    return x, y, blobs(5, seed + 1, noise=4.0)


def test_separable_features_are_classified_perfectly():
    train_x, train_y = blobs(20, seed=0)
    val_x, val_y = blobs(5, seed=1)
    record = logistic_regression(train_x, train_y, lambda: (val_x, val_y), cs=CS)
    assert record["logreg_top1"] == 1.0
    assert record["logreg_top5"] == 1.0
    assert record["logreg_selected_on"] == "heldout"
    assert set(record["logreg_heldout_top1"]) == {"0.001", "0.1", "10"}
    assert record["num_fit"] + record["num_heldout"] == len(train_y)


def test_chosen_c_is_the_naive_heldout_choice():
    train_x, train_y, (val_x, val_y) = noisy_problem()
    fit, held = holdout_split(train_y, 0.2, seed=3)
    naive = {}
    for c in CS:
        model = logreg.fit_logreg(train_x[fit], train_y[fit], c)
        naive[c] = (model.predict(train_x[held].numpy()) == train_y[held].numpy()).mean()
    best = max(naive.values())
    expected = min(c for c in CS if naive[c] == best)

    record = logistic_regression(
        train_x, train_y, lambda: (val_x, val_y), cs=CS, holdout_fraction=0.2, seed=3
    )
    assert record["logreg_c"] == expected
    assert record["logreg_heldout_top1"] == {f"{c:g}": pytest.approx(naive[c]) for c in CS}


def test_val_is_read_once_after_every_heldout_fit(monkeypatch):
    train_x, train_y, (val_x, val_y) = noisy_problem()
    events = []
    fit = logreg.fit_logreg

    def logged_fit(x, y, c, max_iter=logreg.MAX_ITER):
        events.append(("fit", len(x)))
        return fit(x, y, c, max_iter)

    def val():
        events.append(("val", 0))
        return val_x, val_y

    monkeypatch.setattr(logreg, "fit_logreg", logged_fit)
    record = logistic_regression(train_x, train_y, val, cs=CS)
    # len(CS) fits on the fit part, the val read, then one refit on the whole train split.
    assert events == [("fit", record["num_fit"])] * len(CS) + [("val", 0), ("fit", len(train_x))]


def test_selection_on_val_is_labelled_and_takes_the_best_val_score():
    train_x, train_y, (val_x, val_y) = noisy_problem()
    calls = []
    record = logistic_regression(
        train_x, train_y, lambda: calls.append(1) or (val_x, val_y), cs=CS, select_on="val"
    )
    assert calls == [1]
    assert record["logreg_selected_on"] == "val (as the papers did: optimistic)"
    assert record["logreg_top1"] == max(record["logreg_val_top1_by_c"].values())


def test_unknown_select_on_names_the_choices():
    x, y = blobs(5, seed=0)
    with pytest.raises(ConfigError, match="heldout, val"):
        logistic_regression(x, y, lambda: (x, y), select_on="test")


@pytest.mark.parametrize(
    ("train", "val", "message"),
    [
        ((torch.zeros(0, 6), torch.zeros(0, dtype=torch.long)), None, "non-empty"),
        (None, (torch.zeros(3, 5), torch.zeros(3, dtype=torch.long)), "dimension 5"),
        (None, (torch.zeros(3, 6), torch.tensor([0, 1, 7])), r"train lacks: \[7\]"),
        (None, (torch.full((3, 6), torch.nan), torch.zeros(3, dtype=torch.long)), "finite"),
    ],
)
def test_bad_input_is_a_data_error(train, val, message):
    train = train or blobs(5, seed=0)
    val = val or blobs(2, seed=1)
    with pytest.raises(DataError, match=message):
        logistic_regression(*train, lambda: val, cs=(1.0,))
