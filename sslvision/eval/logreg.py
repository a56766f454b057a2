"""Multinomial logistic regression on frozen features, its C chosen on a held-out slice of train.

The transfer protocol of Kornblith, Shlens, Le, "Do Better ImageNet Models Transfer Better?",
CVPR 2019, section 3: an L2-regularised multinomial logistic regression fit by L-BFGS on
standardised features, its inverse regularisation strength C chosen on a split held out from the
training set, then refit with that C on the whole training set and evaluated once. Papers that
follow it often pick C by the validation accuracy instead, which reports the maximum of several
noisy numbers; ``select_on="val"`` reproduces that and says so in the record.

The solver is scikit-learn's; this module only splits, standardises, selects and scores.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler
from torch import Tensor

from sslvision.errors import ConfigError, DataError
from sslvision.eval.selection import SELECT_ON, holdout_split

# One C per decade from 1e-4 to 1e4. Kornblith et al. searched 45 values from 1e-6 to 1e5; on
# standardised features a decade grid over the middle of that range costs a fifth of the fits.
# A C chosen at either end of the grid means the grid should be widened.
DEFAULT_CS: tuple[float, ...] = tuple(10.0**exponent for exponent in range(-4, 5))
VAL_SELECTION = "val (as the papers did: optimistic)"
TOP5 = 5
MAX_ITER = 1000  # L-BFGS iterations per fit


def logistic_regression(
    train_x: Tensor,
    train_y: Tensor,
    val: Callable[[], tuple[Tensor, Tensor]],
    *,
    cs: Sequence[float] = DEFAULT_CS,
    holdout_fraction: float = 0.1,
    seed: int = 0,
    select_on: str = "heldout",
    max_iter: int = MAX_ITER,
    num_classes: int | None = None,
) -> dict[str, Any]:
    """Record fields of the logistic-regression evaluation (accuracies are fractions).

    ``val`` returns the validation ``(features, labels)``; it is called once, after C is chosen
    (with ``select_on="val"``, before, since the choice needs it). With ``"heldout"`` each C is fit
    on the fit part of :func:`~sslvision.eval.selection.holdout_split` and scored on its held-out
    part; the best C (ties go to the smaller C, the stronger regularisation) is refit on all of
    ``train_x``. Top-5 is top-``min(5, num_classes)``; ``num_classes`` defaults to the largest
    label plus one.
    """
    if select_on not in SELECT_ON:
        raise ConfigError(f"select_on must be one of {', '.join(SELECT_ON)}, got {select_on!r}")
    check_split("train", train_x, train_y)
    cs = checked_cs(cs)
    if select_on == "heldout":
        fit, held = holdout_split(train_y, holdout_fraction, seed)
        classes = _num_classes(num_classes, train_y)
        best_c, _, scores = select_c(
            train_x[fit], train_y[fit], train_x[held], train_y[held], cs, max_iter, classes
        )
        val_x, val_y = checked_val(val, train_x, train_y)
        classes = _num_classes(num_classes, train_y, val_y)
        model = fit_logreg(train_x, train_y, best_c, max_iter)
        top1, top5 = logreg_accuracy(model, val_x, val_y, classes)
        record = dict(
            logreg_selected_on="heldout",
            logreg_heldout_top1=scores,
            logreg_holdout_fraction=holdout_fraction,
            num_fit=len(fit),
            num_heldout=len(held),
        )
    else:
        val_x, val_y = checked_val(val, train_x, train_y)
        classes = _num_classes(num_classes, train_y, val_y)
        best_c, model, scores = select_c(train_x, train_y, val_x, val_y, cs, max_iter, classes)
        top1, top5 = logreg_accuracy(model, val_x, val_y, classes)
        record = dict(
            logreg_selected_on=VAL_SELECTION,
            logreg_val_top1_by_c=scores,
            logreg_heldout_top1={},
            logreg_holdout_fraction=None,
            num_fit=len(train_x),
            num_heldout=0,
        )
    return {"logreg_top1": top1, "logreg_top5": top5, "logreg_c": best_c, **record}


def fit_logreg(x: Tensor, y: Tensor, c: float, max_iter: int = MAX_ITER) -> Pipeline:
    """Standardisation (the mean and std of ``x``) then L-BFGS multinomial logistic regression."""
    if len(torch.as_tensor(y).unique()) < 2:
        raise DataError("logistic regression needs images of at least two classes to fit on")
    model = make_pipeline(
        StandardScaler(), LogisticRegression(C=c, solver="lbfgs", max_iter=max_iter)
    )
    return model.fit(_numpy(x), _numpy(y))


def logreg_accuracy(model: Pipeline, x: Tensor, y: Tensor, num_classes: int) -> tuple[float, float]:
    """``(top1, top5)`` of ``model`` on ``(x, y)``; top-5 is top-``min(5, num_classes)``.

    Classes the model never saw score below every class it saw; ties go to the lower class index.
    """
    probabilities = torch.as_tensor(model.predict_proba(_numpy(x)), dtype=torch.float64)
    scores = torch.full((len(x), num_classes), -torch.inf, dtype=torch.float64)
    scores[:, torch.as_tensor(model.classes_)] = probabilities
    ranked = scores.sort(dim=1, descending=True, stable=True).indices[:, : min(TOP5, num_classes)]
    hits = ranked == torch.as_tensor(y).long()[:, None]
    return float(hits[:, 0].double().mean()), float(hits.any(dim=1).double().mean())


def select_c(
    fit_x: Tensor,
    fit_y: Tensor,
    held_x: Tensor,
    held_y: Tensor,
    cs: Sequence[float],
    max_iter: int,
    num_classes: int,
) -> tuple[float, Pipeline, dict[str, float]]:
    """``(best_c, its model fit on fit_x, {f"{c:g}": held-out top-1})``; ties go to the smaller C.

    ``cs`` must be ascending (:func:`checked_cs`), so that the first best is the smallest.
    """
    best: tuple[float, float, Pipeline] | None = None
    scores: dict[str, float] = {}
    for c in cs:
        model = fit_logreg(fit_x, fit_y, c, max_iter)
        top1, _ = logreg_accuracy(model, held_x, held_y, num_classes)
        scores[f"{c:g}"] = top1
        if best is None or top1 > best[0]:
            best = (top1, c, model)
    assert best is not None  # checked_cs refuses an empty grid
    return best[1], best[2], scores


def checked_cs(cs: Sequence[float]) -> list[float]:
    """The distinct values of ``cs``, ascending; an empty grid or a C <= 0 is a ConfigError."""
    values = sorted({float(c) for c in cs})
    if not values or not all(np.isfinite(c) and c > 0 for c in values):
        raise ConfigError(f"cs must be one or more positive finite numbers, got {list(cs)}")
    return values


def check_split(name: str, x: Tensor, y: Tensor) -> None:
    """DataError unless ``x`` is a non-empty finite (samples, dim) float tensor and ``y`` its
    integer labels."""
    if x.ndim != 2 or len(x) == 0:
        raise DataError(
            f"the {name} features must be a non-empty (samples, dim) tensor, got shape "
            f"{tuple(x.shape)}"
        )
    if not x.is_floating_point() or not torch.isfinite(x).all():
        raise DataError(f"the {name} features must be finite floats (no NaN or inf)")
    if y.is_floating_point() or y.dtype == torch.bool or y.shape != (len(x),):
        raise DataError(
            f"the {name} labels must be {len(x)} integers, one per feature row, got "
            f"{y.dtype} of shape {tuple(y.shape)}"
        )
    if int(y.min()) < 0:
        raise DataError(f"the {name} labels must be class indices >= 0, found {int(y.min())}")


def checked_val(
    val: Callable[[], tuple[Tensor, Tensor]], train_x: Tensor, train_y: Tensor
) -> tuple[Tensor, Tensor]:
    """``val()``, checked like train, of train's dimension and with no class unknown to train."""
    val_x, val_y = val()
    check_split("val", val_x, val_y)
    if val_x.shape[1] != train_x.shape[1]:
        raise DataError(
            f"the val features have dimension {val_x.shape[1]}, the train features "
            f"{train_x.shape[1]}: were they extracted by the same backbone?"
        )
    unknown = sorted(set(val_y.unique().tolist()) - set(train_y.unique().tolist()))
    if unknown:
        raise DataError(f"val has classes that train lacks: {unknown[:10]}")
    return val_x, val_y


def _num_classes(num_classes: int | None, *labels: Tensor) -> int:
    largest = max(int(y.max()) for y in labels)
    if num_classes is None:
        return largest + 1
    if largest >= num_classes:
        raise DataError(f"label {largest} is out of range for num_classes={num_classes}")
    return num_classes


def _numpy(tensor: Tensor) -> np.ndarray:
    return tensor.detach().cpu().numpy()
