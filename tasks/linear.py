"""Fitting the wide branch, full batch: L2-regularised multinomial logistic regression, and
the L2 squared hinge (LinearSVC's objective).

The wide branch (``models/wide.py``) is a linear model over sparse TF-IDF rows, so training
it is a convex problem: L-BFGS over the whole train split reaches its optimum, where
minibatch AdamW with early stopping stopped short of it (ChnSentiCorp_htl_all, seed 42: test
accuracy 0.8918 with AdamW, 0.8995 here, the same as scikit-learn's LogisticRegression on
the same features). The objective is scikit-learn's, divided by ``C * N``:

    mean cross-entropy + ||W||^2 / (2 C N)        (the bias is not penalised)

so ``C`` means what it means there. The inverse strengths are tried from weak to strong
fits, each warm-started from the previous optimum (fewer iterations), and the one with the
lowest validation log-loss is kept; the path stops once the loss rises.

The gradient is written out (``X.T @ (softmax - onehot) / N``) over sparse CSR matrices:
20 times faster on the CPU than autograd through ``nn.EmbeddingBag`` with per-sample
weights, whose backward pass is the slow part.

The squared hinge is scikit-learn's ``LinearSVC`` (one-vs-rest, ``loss="squared_hinge"``),
divided by ``C * N`` the same way, with the bias not penalised (liblinear penalises it a
little, through ``intercept_scaling``):

    mean over rows and classes' sum of max(0, 1 - y * (x @ w + b))^2 + ||W||^2 / (2 C N)

with y = +1 for the row's class and -1 for the others. Its ``C`` is chosen by validation
accuracy, as a scikit-learn user's grid search over LinearSVC would: its margins are not
probabilities, so a log-loss would judge it by what it does not try to do.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from zhflow.models.wide import transpose_csr


@dataclass
class LinearFit:
    weight: torch.Tensor  # (F, C)
    bias: torch.Tensor  # (C,)
    c: float  # the inverse regularisation strength kept
    path: list[dict[str, float]]  # per C tried: valid figures, iterations, seconds


@dataclass(frozen=True)
class FullBatch:
    """What a path of full-batch fits reads: the train rows (and their transpose, for the
    gradient) and the validation rows, as sparse CSR matrices."""

    x: torch.Tensor  # (N, F)
    x_t: torch.Tensor  # (F, N)
    labels: torch.Tensor  # (N,) int64
    valid_x: torch.Tensor  # (M, F)
    valid_labels: torch.Tensor  # (M,) int64
    num_classes: int

    @classmethod
    def of(cls, x: torch.Tensor, labels: torch.Tensor, valid_x: torch.Tensor,
           valid_labels: torch.Tensor, num_classes: int) -> FullBatch:  # fmt: skip
        return cls(x, transpose_csr(x), labels, valid_x, valid_labels, num_classes)


#: A data term: its value at the current weights, and its gradient with respect to the
#: scores ``x @ W + b`` (N, C), from which the weights' gradients follow.
DataTerm = Callable[[], tuple[torch.Tensor, torch.Tensor]]


def _minimise(
    x_t: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, lam: float, max_iter: int,
    data_term: DataTerm,
) -> int:  # fmt: skip
    """L-BFGS on ``data_term + lam / 2 · ||W||^2`` (the bias not penalised), updating
    ``weight`` and ``bias`` in place; returns the number of objective evaluations."""
    optimizer = torch.optim.LBFGS(
        [weight, bias],
        lr=1.0,
        max_iter=max_iter,
        history_size=10,
        line_search_fn="strong_wolfe",
        tolerance_grad=1e-5,
        tolerance_change=1e-7,
    )
    evaluations = 0

    def objective() -> torch.Tensor:
        nonlocal evaluations
        evaluations += 1
        loss, residual = data_term()  # residual: (N, C) d data term / d scores
        weight.grad = x_t @ residual + lam * weight
        bias.grad = residual.sum(0)
        return loss + 0.5 * lam * weight.pow(2).sum()

    optimizer.step(objective)
    return evaluations


def fit_logistic(
    data: FullBatch, weight: torch.Tensor, bias: torch.Tensor, c: float, max_iter: int
) -> int:
    """Minimise the logistic objective above on ``data``'s train rows for one ``c``, from
    ``weight`` (F, C) and ``bias`` (C,), updated in place; returns the number of objective
    evaluations. Deterministic: no sampling anywhere."""
    x, labels = data.x, data.labels
    n = labels.shape[0]
    onehot = F.one_hot(labels, weight.shape[1]).to(weight.dtype)  # (N, C)

    def cross_entropy() -> tuple[torch.Tensor, torch.Tensor]:
        logits = x @ weight + bias  # (N, C)
        return F.cross_entropy(logits, labels), (torch.softmax(logits, -1) - onehot) / n

    return _minimise(data.x_t, weight, bias, 1.0 / (c * n), max_iter, cross_entropy)


def fit_squared_hinge(
    data: FullBatch, weight: torch.Tensor, bias: torch.Tensor, c: float, max_iter: int
) -> int:
    """Minimise the squared-hinge objective above on ``data``'s train rows for one ``c``, as
    :func:`fit_logistic` does (one binary problem per class, solved together)."""
    x, labels = data.x, data.labels
    n = labels.shape[0]
    signs = 2 * F.one_hot(labels, weight.shape[1]).to(weight.dtype) - 1  # (N, C) +1 / -1

    def squared_hinge() -> tuple[torch.Tensor, torch.Tensor]:
        slack = (1 - signs * (x @ weight + bias)).clamp_min(0)  # (N, C)
        return slack.pow(2).sum() / n, -2 * signs * slack / n

    return _minimise(data.x_t, weight, bias, 1.0 / (c * n), max_iter, squared_hinge)


#: One fit of a path: (weight, bias, c) -> objective evaluations, updating weight and bias.
FitOne = Callable[[torch.Tensor, torch.Tensor, float], int]


def _walk_path(
    data: FullBatch, cs: Sequence[float], fit_one: FitOne,
    judge: Callable[[torch.Tensor, torch.Tensor], dict[str, float]],
    score: Callable[[dict[str, float]], float],
    stop_past_best: bool,
) -> LinearFit:  # fmt: skip
    """Fit each ``c`` of ``cs`` in ascending order, each warm-started from the previous
    optimum (fewer iterations). ``judge`` gives the weights' validation figures, ``score``
    the one to minimise; the first best is kept (on a tie, the smaller ``c``, the stronger
    regularisation)."""
    weight = torch.zeros(data.x.shape[1], data.num_classes, device=data.x.device)
    bias = torch.zeros(data.num_classes, device=data.x.device)
    best: LinearFit | None = None
    best_score = math.inf
    path: list[dict[str, float]] = []
    for c in sorted(cs):
        t0 = time.perf_counter()
        evaluations = fit_one(weight, bias, c)
        with torch.no_grad():
            figures = judge(weight, bias)
        path.append({"c": c, **figures, "evaluations": evaluations,
                     "seconds": time.perf_counter() - t0})  # fmt: skip
        if score(figures) < best_score:
            best_score = score(figures)
            best = LinearFit(weight.detach().clone(), bias.detach().clone(), c, path)
        elif best is not None and stop_past_best:
            break  # past the minimum: weaker regularisation only overfits more
    if best is None:  # every figure NaN (no validation rows): keep the class prior
        best = LinearFit(torch.zeros_like(weight), torch.zeros_like(bias), math.nan, path)
    return best


def fit_logistic_path(data: FullBatch, cs: Sequence[float], max_iter: int) -> LinearFit:
    """Fit each ``c`` of ``cs`` (ascending) in turn; keep the lowest validation log-loss,
    and stop once it rises."""

    def fit_one(weight: torch.Tensor, bias: torch.Tensor, c: float) -> int:
        return fit_logistic(data, weight, bias, c, max_iter)

    def judge(weight: torch.Tensor, bias: torch.Tensor) -> dict[str, float]:
        logits = data.valid_x @ weight + bias  # (M, C)
        return {"valid_loss": float(F.cross_entropy(logits, data.valid_labels)),
                "valid_accuracy": _accuracy(logits, data.valid_labels)}  # fmt: skip

    return _walk_path(data, cs, fit_one, judge, lambda f: f["valid_loss"], stop_past_best=True)


def fit_squared_hinge_path(data: FullBatch, cs: Sequence[float], max_iter: int) -> LinearFit:
    """Fit each ``c`` of ``cs`` (ascending, warm-started); keep the highest validation
    accuracy, the smaller ``c`` (the stronger regularisation) on a tie. Every ``c`` is
    tried: accuracy, unlike a loss, has no single minimum to stop past."""

    def fit_one(weight: torch.Tensor, bias: torch.Tensor, c: float) -> int:
        return fit_squared_hinge(data, weight, bias, c, max_iter)

    def judge(weight: torch.Tensor, bias: torch.Tensor) -> dict[str, float]:
        return {"valid_accuracy": _accuracy(data.valid_x @ weight + bias, data.valid_labels)}

    return _walk_path(data, cs, fit_one, judge, lambda f: -f["valid_accuracy"],
                      stop_past_best=False)  # fmt: skip


def _accuracy(scores: torch.Tensor, labels: torch.Tensor) -> float:
    return float((scores.argmax(-1) == labels).float().mean())
