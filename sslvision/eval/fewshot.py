"""Few-shot evaluation of frozen features: kNN and logistic regression on n labelled images a class.

How well a representation serves a task with a handful of labels is what the low-shot results of
SimCLR, BYOL and DINO report, and what linear evaluation on the full training split hides. One
draw of n images per class is noisy, so each n is drawn several times and the mean and spread are
reported. Draws come from the fit part of :func:`~sslvision.eval.selection.holdout_split`; each
draw's k (kNN) and C (logistic regression, the :mod:`sslvision.eval.logreg` protocol without the
refit, which would see more than n images a class) is chosen on the held-out slice of train, and
val is read once, after every choice is made.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from sklearn.pipeline import Pipeline
from torch import Tensor

from sslvision.errors import ConfigError, DataError
from sslvision.eval import logreg
from sslvision.eval.knn import knn_classify
from sslvision.eval.selection import holdout_split

DEFAULT_SHOTS = (1, 2, 5, 10)
# Few images regularise little: the grid stops at 100 and needs five fits a draw, not nine.
DEFAULT_FEWSHOT_CS = (0.01, 0.1, 1.0, 10.0, 100.0)


def few_shot(
    train_x: Tensor,
    train_y: Tensor,
    val: Callable[[], tuple[Tensor, Tensor]],
    *,
    shots: Sequence[int] = DEFAULT_SHOTS,
    draws: int = 5,
    seed: int = 0,
    ks: Sequence[int] = (1, 5, 10, 20),
    cs: Sequence[float] = DEFAULT_FEWSHOT_CS,
    holdout_fraction: float = 0.1,
    temperature: float = 0.07,
) -> dict[str, Any]:
    """Record fields: per n, the mean and std (over ``draws``, ddof 0) of val top-1 of weighted kNN
    and of logistic regression fit on n images a class, and the k and C chosen for each draw.

    Draw ``d`` of ``n`` shots is :func:`draw_few_shot` with a seed fixed by ``(seed, n, d)``. A k
    larger than a draw is clipped to its size, and the clipped k is the one recorded; ties between
    ks or Cs go to the smaller one. ``val`` is called once, after all draws' choices.
    """
    logreg.check_split("train", train_x, train_y)
    shots = sorted({int(n) for n in shots})
    if not shots or shots[0] < 1 or draws < 1 or not ks or min(ks) < 1:
        raise ConfigError(
            f"shots and ks must be positive integers and draws at least 1, got shots={shots}, "
            f"ks={list(ks)}, draws={draws}"
        )
    cs = logreg.checked_cs(cs)
    fit, held = holdout_split(train_y, holdout_fraction, seed)
    held_x, held_y = train_x[held], train_y[held]
    num_classes = int(train_y.max()) + 1
    chosen: dict[int, list[tuple[Tensor, int, float, Pipeline]]] = {}
    for n in shots:
        chosen[n] = []
        for d in range(draws):
            index = draw_few_shot(train_y, fit, n, _seed(seed, n, d))
            draw_x, draw_y = train_x[index], train_y[index]
            k = _select_k(draw_x, draw_y, held_x, held_y, ks, temperature, num_classes)
            c, model, _ = logreg.select_c(
                draw_x, draw_y, held_x, held_y, cs, logreg.MAX_ITER, num_classes
            )
            chosen[n].append((index, k, c, model))

    val_x, val_y = logreg.checked_val(val, train_x, train_y)
    record: dict[str, Any] = {
        "fewshot_shots": shots,
        "fewshot_draws": draws,
        "fewshot_holdout_fraction": holdout_fraction,
        "num_heldout": len(held),
    }
    for n, runs in chosen.items():
        knn_top1, logreg_top1 = [], []
        for index, k, _, model in runs:
            result = knn_classify(
                train_x[index],
                train_y[index],
                val_x,
                val_y,
                ks=(k,),
                temperature=temperature,
                num_classes=num_classes,
            )
            knn_top1.append(result[k]["top1"])
            logreg_top1.append(logreg.logreg_accuracy(model, val_x, val_y, num_classes)[0])
        for method, top1 in (("knn", knn_top1), ("logreg", logreg_top1)):
            record[f"fewshot_{method}_top1_{n}shot_mean"] = float(np.mean(top1))
            record[f"fewshot_{method}_top1_{n}shot_std"] = float(np.std(top1))
        record[f"fewshot_knn_k_{n}shot"] = [k for _, k, _, _ in runs]
        record[f"fewshot_logreg_c_{n}shot"] = [c for _, _, c, _ in runs]
    return record


def draw_few_shot(labels: Tensor, candidates: Tensor, shots: int, seed: int) -> Tensor:
    """Sorted indices into ``labels``: ``shots`` of the ``candidates`` of every class of ``labels``.

    A class's draw depends only on the seed and its own candidates; a class with fewer than
    ``shots`` candidates is a DataError naming it.

    >>> labels = torch.tensor([0, 0, 0, 1, 1, 1])
    >>> labels[draw_few_shot(labels, torch.tensor([0, 1, 3, 4]), 2, seed=0)].tolist()
    [0, 0, 1, 1]
    """
    labels = torch.as_tensor(labels).long()
    candidates = torch.as_tensor(candidates).long()
    drawn: list[Tensor] = []
    for label in labels.unique().tolist():
        members = candidates[labels[candidates] == label]
        if len(members) < shots:
            raise DataError(
                f"class {label} has {len(members)} images to draw from (outside the held-out "
                f"slice), fewer than the {shots} shots asked for"
            )
        generator = torch.Generator().manual_seed(_seed(seed, label))
        drawn.append(members[torch.randperm(len(members), generator=generator)[:shots]])
    return torch.cat(drawn).sort().values


def _select_k(
    fit_x: Tensor,
    fit_y: Tensor,
    held_x: Tensor,
    held_y: Tensor,
    ks: Sequence[int],
    temperature: float,
    num_classes: int,
) -> int:
    """The k (clipped to the draw's size) of the best held-out top-1; ties go to the smaller k."""
    clipped = sorted({min(int(k), len(fit_x)) for k in ks})
    result = knn_classify(
        fit_x, fit_y, held_x, held_y, ks=clipped, temperature=temperature, num_classes=num_classes
    )
    return max(clipped, key=lambda k: (result[k]["top1"], -k))


def _seed(*entropy: int) -> int:
    """A 32-bit seed that depends on every number in ``entropy`` (numpy's SeedSequence)."""
    return int(np.random.SeedSequence(list(entropy)).generate_state(1)[0])
