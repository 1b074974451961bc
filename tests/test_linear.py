"""Fitting the wide branch (tasks/linear.py): scikit-learn's LogisticRegression as the oracle."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from zhflow.models.wide import RaggedBags, bag_matrix, transpose_csr
from zhflow.tasks.linear import (
    FullBatch,
    fit_logistic,
    fit_logistic_path,
    fit_squared_hinge,
    fit_squared_hinge_path,
)


def _problem(seed: int = 0, n: int = 120, f: int = 30, classes: int = 3) -> tuple:
    """A sparse, noisy, linearly separable-ish problem as ragged bags."""
    rng = np.random.default_rng(seed)
    true_w = rng.normal(size=(f, classes))
    counts = rng.integers(0, 6, size=n)
    ids = np.concatenate([rng.choice(f, size=k, replace=False) for k in counts]).astype(np.int64)
    weights = rng.uniform(0.2, 1.0, size=ids.size).astype(np.float32)
    dense = np.zeros((n, f), np.float32)
    start = 0
    for r, k in enumerate(counts):
        dense[r, ids[start : start + k]] = weights[start : start + k]
        start += k
    labels = (dense @ true_w + rng.normal(scale=0.5, size=(n, classes))).argmax(1)
    bags = RaggedBags(torch.from_numpy(ids), torch.from_numpy(counts), torch.from_numpy(weights))
    return bags, dense, torch.from_numpy(labels).long()


def test_bag_matrix_is_the_dense_rows() -> None:
    bags, dense, _ = _problem()
    x = bag_matrix(bags, dense.shape[1])
    assert torch.allclose(x.to_dense(), torch.from_numpy(dense))
    assert torch.allclose(transpose_csr(x).to_dense(), torch.from_numpy(dense).T)


@pytest.mark.parametrize("c", [0.3, 3.0])
@pytest.mark.parametrize("loss", ["logistic", "squared_hinge"])
def test_the_full_batch_fits_match_scikit_learn(loss: str, c: float) -> None:
    """The logistic fit against LogisticRegression's probabilities, the squared hinge
    against LinearSVC's decision values (one-vs-rest)."""
    pytest.importorskip("sklearn")
    from sklearn.linear_model import LogisticRegression
    from sklearn.svm import LinearSVC

    bags, dense, labels = _problem()
    x = bag_matrix(bags, dense.shape[1])
    weight, bias = torch.zeros(dense.shape[1], 3), torch.zeros(3)
    fit = fit_logistic if loss == "logistic" else fit_squared_hinge
    fit(FullBatch.of(x, labels, x, labels, 3), weight, bias, c, max_iter=500)
    scores = torch.from_numpy(dense) @ weight + bias  # (N, C)
    rows = dense.astype(np.float64)
    if loss == "logistic":
        oracle = LogisticRegression(C=c, tol=1e-10, max_iter=10_000).fit(rows, labels.numpy())
        # Softmax logits are defined up to a per-row constant: compare probabilities.
        ours, theirs = torch.softmax(scores, -1).numpy(), oracle.predict_proba(rows)
        assert np.abs(ours - theirs).max() < 2e-3
    else:
        # liblinear penalises the bias as a feature of value intercept_scaling; a large one
        # makes that penalty vanish, as in zhflow's objective. The primal solver converges.
        svc = LinearSVC(C=c, intercept_scaling=100, dual=False, tol=1e-12, max_iter=100_000)
        ours, theirs = scores.numpy(), svc.fit(rows, labels.numpy()).decision_function(rows)
        assert np.abs(ours - theirs).max() < 1e-2
    assert (ours.argmax(1) == theirs.argmax(1)).all()


def test_the_squared_hinge_path_keeps_the_most_accurate_c_the_smaller_on_a_tie() -> None:
    _, dense, labels = _problem(n=200)
    x_all = torch.from_numpy(dense)
    x, valid_x = x_all[:150].to_sparse_csr(), x_all[150:].to_sparse_csr()
    cs = (0.001, 0.01, 0.1, 1.0, 10.0)
    fit = fit_squared_hinge_path(FullBatch.of(x, labels[:150], valid_x, labels[150:], 3), cs,
                                 max_iter=200)  # fmt: skip
    accuracies = [p["valid_accuracy"] for p in fit.path]
    assert [p["c"] for p in fit.path] == list(cs)  # every C tried: accuracy has no minimum
    assert fit.c == cs[accuracies.index(max(accuracies))]  # the first (smallest) of the best
    kept = float(((valid_x @ fit.weight + fit.bias).argmax(-1) == labels[150:]).float().mean())
    assert kept == max(accuracies)
    none = x_all[:0].to_sparse_csr()
    empty = fit_squared_hinge_path(FullBatch.of(x, labels[:150], none, labels[:0], 3), cs,
                                   max_iter=50)  # fmt: skip
    assert math.isnan(empty.c) and not empty.weight.any()  # no validation rows: the prior


def test_the_path_keeps_the_lowest_validation_loss_and_stops_past_it() -> None:
    _, dense, labels = _problem(n=200)
    train_rows, valid_rows = torch.arange(0, 150), torch.arange(150, 200)
    x_all = torch.from_numpy(dense)
    x = x_all[train_rows].to_sparse_csr()
    valid_x = x_all[valid_rows].to_sparse_csr()
    cs = (0.01, 0.1, 1.0, 10.0, 100.0, 1000.0)
    data = FullBatch.of(x, labels[train_rows], valid_x, labels[valid_rows], 3)
    fit = fit_logistic_path(data, cs, max_iter=200)
    losses = [p["valid_loss"] for p in fit.path]
    assert fit.c == fit.path[int(np.argmin(losses))]["c"]
    assert losses[-1] > min(losses)  # stopped one step past the minimum
    assert len(fit.path) == int(np.argmin(losses)) + 2 or len(fit.path) == len(cs)
    logits = valid_x @ fit.weight + fit.bias
    kept = float(torch.nn.functional.cross_entropy(logits, labels[valid_rows]))
    assert math.isclose(kept, min(losses), rel_tol=1e-5)


def test_the_fit_is_deterministic() -> None:
    bags, dense, labels = _problem(seed=3)
    x = bag_matrix(bags, dense.shape[1])
    runs = [fit_logistic_path(FullBatch.of(x, labels, x, labels, 3), (1.0, 10.0), 100)
            for _ in range(2)]  # fmt: skip
    assert torch.equal(runs[0].weight, runs[1].weight)
    assert runs[0].path[0]["valid_loss"] == runs[1].path[0]["valid_loss"]


def _wide_split(bags: RaggedBags, labels: torch.Tensor, rows: torch.Tensor) -> dict:
    """An encoded split of ``rows`` with n-gram bags and a dummy one-token sequence each."""
    starts = bags.starts
    pieces = [torch.arange(int(starts[r]), int(starts[r] + bags.counts[r])) for r in rows]
    flat = torch.cat(pieces) if pieces else torch.empty(0, dtype=torch.int64)
    n = len(rows)
    return {"ids": torch.ones(n, 1, dtype=torch.int64), "lengths": torch.ones(n, dtype=torch.int64),
            "labels": labels[rows], "bag_ids": bags.ids[flat], "bag_counts": bags.counts[rows],
            "bag_weights": bags.weights[flat]}  # fmt: skip


def test_auto_blends_the_two_fits_by_validation_loss() -> None:
    from zhflow.models.rnn import RNNConfig
    from zhflow.tasks.train import (
        BLEND_GRID,
        TrainConfig,
        _train_wide,
        build_model,
        fit_temperature,
        split_bags,
    )

    bags, dense, labels = _problem(seed=5, n=240)
    train, valid = (
        _wide_split(bags, labels, torch.arange(180)),
        _wide_split(bags, labels, torch.arange(180, 240)),
    )
    cfg = RNNConfig(vocab_size=4, num_classes=3, wide_features=dense.shape[1])
    x_valid = bag_matrix(split_bags(valid), dense.shape[1])  # type: ignore[arg-type]
    params, metas = {}, {}
    for solver in ("lbfgs", "adamw", "auto"):
        model = build_model(cfg)
        tc = TrainConfig(wide_solver=solver, batch_size=16, wide_hinge=0.0)  # the logistic fits
        metas[solver] = _train_wide(model, tc, train, valid, torch.device("cpu"), lambda _: None)
        wide = model.wide
        assert wide is not None
        params[solver] = (wide.bag.weight.detach().clone(), wide.bias.detach().clone())
    assert not torch.equal(params["lbfgs"][0], params["adamw"][0])  # two different fits
    auto_meta = metas["auto"]["views"]["words+chars"]  # the split has one view: no word counts
    assert metas["auto"]["view"] == "words+chars" and list(metas["auto"]["views"]) == [
        "words+chars"
    ]
    w = auto_meta["blend"]["lbfgs_weight"]
    assert w in BLEND_GRID
    for auto, exact, early in zip(params["auto"], params["lbfgs"], params["adamw"], strict=True):
        assert torch.allclose(auto, w * exact + (1 - w) * early)

    # The kept weight has the lowest tempered validation loss of the grid (an oracle loop).
    def loss(weight: torch.Tensor, bias: torch.Tensor) -> float:
        return fit_temperature(x_valid @ weight + bias, labels[180:])[1]

    blends = {
        g: loss(
            g * params["lbfgs"][0] + (1 - g) * params["adamw"][0],
            g * params["lbfgs"][1] + (1 - g) * params["adamw"][1],
        )
        for g in BLEND_GRID
    }
    assert blends[w] == pytest.approx(min(blends.values()), abs=1e-6)
    assert auto_meta["solver"] == {1.0: "lbfgs", 0.0: "adamw"}.get(w, "blend")


def test_two_fits_wrong_on_different_rows_are_blended() -> None:
    from zhflow.tasks.train import choose_blend

    labels = torch.tensor([0, 1, 2, 0, 1, 2])
    right = torch.nn.functional.one_hot(labels, 3).float()
    wrong = torch.nn.functional.one_hot((labels + 1) % 3, 3).float()
    exact = torch.cat([right[:4], 0.5 * wrong[4:]])  # right on rows 0-3, mildly wrong on 4-5
    early = torch.cat([0.5 * wrong[:2], right[2:]])  # right on rows 2-5, mildly wrong on 0-1
    weight, loss = choose_blend(exact, early, labels)
    assert 0.0 < weight < 1.0
    assert loss < choose_blend(exact, exact, labels)[1]
    assert loss < choose_blend(early, early, labels)[1]


def test_an_unknown_solver_is_refused() -> None:
    from zhflow.tasks.train import TrainConfig

    with pytest.raises(ValueError, match="wide_solver"):
        TrainConfig(wide_solver="sgd")


def _two_kind_split(seed: int, n: int, signal: str) -> dict:
    """An encoded split whose bags hold word n-grams (ids 0-19, first in each row) then
    character n-grams (ids 20-39); only ``signal``'s kind says anything about the label."""
    true_w = np.random.default_rng(0).normal(size=(20, 3)) * 3  # one truth for every split
    rng = np.random.default_rng(seed)
    ids, weights, counts, words, labels = [], [], [], [], []
    for _ in range(n):
        kinds = {k: rng.choice(20, size=4, replace=False) for k in ("words", "chars")}
        score = true_w[kinds[signal]].sum(0) + rng.normal(scale=0.5, size=3)
        ids += [*kinds["words"], *(kinds["chars"] + 20)]
        weights += [0.5] * 8  # each block L2-normalised: 4 entries of 0.5
        counts.append(8)
        words.append(4)
        labels.append(int(score.argmax()))
    return {"ids": torch.ones(n, 1, dtype=torch.int64), "lengths": torch.ones(n, dtype=torch.int64),
            "labels": torch.tensor(labels), "bag_ids": torch.tensor(ids),
            "bag_counts": torch.tensor(counts), "bag_weights": torch.tensor(weights),
            "bag_word_counts": torch.tensor(words)}  # fmt: skip


@pytest.mark.parametrize("signal", ["words", "chars"])
def test_the_wide_branch_blends_its_two_views_by_validation_loss(signal: str) -> None:
    """Word n-grams that carry no signal (as on short snippets) get little weight beside the
    characters alone, and words that carry it get much: the kept table is the blend of the
    two views' fits with the weight of the lowest validation loss (an oracle loop)."""
    from zhflow.models.rnn import RNNConfig
    from zhflow.models.wide import NgramLinear, bag_matrix
    from zhflow.tasks.train import (
        BLEND_GRID,
        TrainConfig,
        WideProblem,
        _fit_wide_view,
        _train_wide,
        build_model,
        fit_temperature,
        split_bags,
        wide_views,
    )

    train, valid = _two_kind_split(1, 240, signal), _two_kind_split(2, 120, signal)
    tc = TrainConfig(batch_size=16, wide_hinge=0.0)  # the logistic views alone
    model = build_model(RNNConfig(vocab_size=4, num_classes=3, wide_features=40))
    meta = _train_wide(model, tc, train, valid, torch.device("cpu"), lambda _: None)
    assert model.wide is not None
    views = wide_views(train, valid)
    assert list(views) == ["words+chars", "chars"]
    tables = {}
    for view, (tr, va) in views.items():
        problem = WideProblem(tr, train["labels"], va, valid["labels"], torch.device("cpu"))
        wide = NgramLinear(40, 3)
        fit = _fit_wide_view(wide, tc, problem, lambda _: None)
        assert meta["views"][view]["valid_loss"] == pytest.approx(fit.meta["valid_loss"])
        tables[view] = fit.state
    assert bool((tables["chars"]["bag.weight"][:20] == 0).all())  # no word rows in that fit

    x_valid = bag_matrix(split_bags(valid), 40)  # type: ignore[arg-type]

    def blended(w: float) -> dict[str, torch.Tensor]:
        return {
            k: w * tables["words+chars"][k] + (1 - w) * tables["chars"][k] for k in tables["chars"]
        }

    def loss(w: float) -> float:
        t = blended(w)
        return fit_temperature(x_valid @ t["bag.weight"] + t["bias"], valid["labels"])[1]

    losses = {w: loss(w) for w in BLEND_GRID}
    w = meta["view_blend"]["words_weight"]
    assert losses[w] == pytest.approx(min(losses.values()), abs=1e-6)
    assert (w >= 0.5) == (signal == "words")
    for k, v in blended(w).items():
        assert torch.allclose(model.wide.state_dict()[k], v)


def test_the_wide_branch_averages_in_a_squared_hinge_at_a_fixed_weight() -> None:
    """The kept table is ``(1 - h) · logistic / T1 + h · hinge / T2``: the logistic views'
    blend and the squared hinge on the characters' view, each at its own best validation
    temperature (oracle: the pieces fitted separately)."""
    from zhflow.models.rnn import RNNConfig
    from zhflow.models.wide import bag_matrix
    from zhflow.tasks.train import (
        TrainConfig,
        _train_wide,
        build_model,
        fit_temperature,
        split_bags,
        wide_views,
    )

    train, valid = _two_kind_split(1, 240, "chars"), _two_kind_split(2, 120, "chars")
    cfg = RNNConfig(vocab_size=4, num_classes=3, wide_features=40)
    tables, metas = {}, {}
    for h in (0.0, 0.5):
        model = build_model(cfg)
        tc = TrainConfig(batch_size=16, wide_hinge=h)
        metas[h] = _train_wide(model, tc, train, valid, torch.device("cpu"), lambda _: None)
        assert model.wide is not None
        tables[h] = {k: v.detach().clone() for k, v in model.wide.state_dict().items()}
    assert "hinge" not in metas[0.0]
    hinge_meta = metas[0.5]["hinge"]
    assert hinge_meta["view"] == "chars" and hinge_meta["c"] in TrainConfig().wide_hinge_c

    tr, va = wide_views(train, valid)["chars"]
    x = bag_matrix(tr, 40)
    data = FullBatch.of(x, train["labels"], bag_matrix(va, 40), valid["labels"], 3)
    hinge = fit_squared_hinge_path(data, TrainConfig().wide_hinge_c, 100)
    assert not hinge.weight[:20].any()  # the characters' view: no word rows
    x_valid = bag_matrix(split_bags(valid), 40)  # type: ignore[arg-type]
    logistic = tables[0.0]
    t1, _ = fit_temperature(x_valid @ logistic["bag.weight"] + logistic["bias"], valid["labels"])
    t2, _ = fit_temperature(x_valid @ hinge.weight + hinge.bias, valid["labels"])
    assert (hinge_meta["logistic_temperature"], hinge_meta["hinge_temperature"]) == (t1, t2)
    want = {"bag.weight": 0.5 * logistic["bag.weight"] / t1 + 0.5 * hinge.weight / t2,
            "bias": 0.5 * logistic["bias"] / t1 + 0.5 * hinge.bias / t2}  # fmt: skip
    for k, v in want.items():
        assert torch.allclose(tables[0.5][k], v, atol=1e-6)


def test_the_hinge_weight_is_checked() -> None:
    from zhflow.tasks.train import TrainConfig

    for bad in (-0.1, 1.5, True, "half"):
        with pytest.raises(ValueError, match="wide_hinge must be in"):
            TrainConfig(wide_hinge=bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="wide_hinge_c must be positive"):
        TrainConfig(wide_hinge_c=())
    listed = TrainConfig(wide_hinge_c=[1, 2])  # type: ignore[arg-type]  # JSON gives a list
    assert listed.wide_hinge_c == (1, 2)
