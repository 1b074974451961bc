from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from zhflow.models.rnn import RNNConfig
from zhflow.tasks.errors import InputError
from zhflow.tasks.train import (
    CHECKPOINT_NAME,
    TEMPERATURE_GRID,
    TrainConfig,
    build_model,
    collate,
    fit_mix_and_temperature,
    inference_batches,
    make_batches,
    pick_device,
    predict_proba,
    train_model,
)

VOCAB = 40


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    # Tiny models: one thread is fastest, and it avoids OpenMP spin-wait stalls when the
    # test machine's cores are shared with other processes.
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def _split(n: int, seed: int, width: int = 16) -> dict[str, torch.Tensor]:
    """Label 1 iff token 5 occurs; random lengths, post-padded with 0, int32 ids."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(6, VOCAB, (n, width), generator=g)
    lengths = torch.randint(2, width + 1, (n,), generator=g)
    labels = torch.arange(n) % 2
    for i in range(n):
        if labels[i]:
            ids[i, int(torch.randint(0, int(lengths[i]), (), generator=g))] = 5
    ids[torch.arange(width)[None, :] >= lengths[:, None]] = 0
    return {"ids": ids.to(torch.int32), "lengths": lengths, "labels": labels}


MODEL = RNNConfig(vocab_size=VOCAB, num_classes=2, embedding_dim=16, hidden_size=16)
TRAIN = _split(192, 0)
VALID = _split(64, 1)


def _cfg(**kw: Any) -> TrainConfig:
    base: dict[str, Any] = {
        "epochs": 3,
        "batch_size": 16,
        "patience": 10,
        "device": "cpu",
        "bucket_size_multiplier": 4,
        "lr": 5e-3,
    }
    base.update(kw)
    return TrainConfig(**base)


def _assert_same_state(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def _strip_timing(history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in r.items() if k not in ("seconds", "samples_per_s")} for r in history]


# ----------------------------------------------------------------------------- batches


def test_make_batches_covers_every_index_once_and_is_deterministic() -> None:
    lengths = np.random.default_rng(0).integers(1, 100, size=1003)
    a = make_batches(lengths, 32, torch.Generator().manual_seed(7), 4)
    b = make_batches(lengths, 32, torch.Generator().manual_seed(7), 4)
    flat = torch.cat(a)
    assert sorted(flat.tolist()) == list(range(1003))
    assert all(len(x) <= 32 for x in a)
    assert len(a) == sum(-(-len(range(s, min(s + 128, 1003))) // 32) for s in range(0, 1003, 128))
    assert [x.tolist() for x in a] == [x.tolist() for x in b]
    # a different epoch (generator seed) gives a different order
    c = make_batches(lengths, 32, torch.Generator().manual_seed(8), 4)
    assert [x.tolist() for x in a] != [x.tolist() for x in c]
    # the same generator advanced: a reshuffle too
    g = torch.Generator().manual_seed(7)
    first = make_batches(lengths, 32, g, 4)
    second = make_batches(lengths, 32, g, 4)
    assert [x.tolist() for x in first] != [x.tolist() for x in second]


def test_make_batches_are_length_homogeneous() -> None:
    lengths = torch.as_tensor(np.random.default_rng(1).integers(1, 200, size=640))
    # one bucket holding everything: batches are disjoint slices of the sorted lengths
    batches = make_batches(lengths, 32, torch.Generator().manual_seed(0), 100)
    spans = sorted((int(lengths[b].min()), int(lengths[b].max())) for b in batches)
    for (_, hi), (lo, _) in itertools.pairwise(spans):
        assert hi <= lo
    # with smaller buckets, batches are still far tighter than random ones
    batches = make_batches(lengths, 32, torch.Generator().manual_seed(0), 5)
    spread = np.mean([float(lengths[b].max() - lengths[b].min()) for b in batches])
    assert spread < 40  # random batches of 32 from 1..199 span ~185


def test_collate_trims_to_longest_in_batch() -> None:
    ids = torch.arange(40, dtype=torch.int32).reshape(4, 10)
    lengths = torch.tensor([3, 10, 5, 2])
    labels = torch.tensor([0, 1, 0, 1])
    b_ids, b_len, b_lab = collate(ids, lengths, labels, torch.tensor([2, 0]))
    assert b_ids.shape == (2, 5)
    assert torch.equal(b_ids, ids[[2, 0], :5])
    assert b_len.tolist() == [5, 3] and b_lab.tolist() == [0, 0]


# ----------------------------------------------------------------------------- training


def test_train_learns_and_reports(tmp_path: Path) -> None:
    records: list[dict[str, Any]] = []
    lines: list[str] = []
    res = train_model(
        MODEL, _cfg(epochs=6), TRAIN, VALID, on_epoch=records.append, log=lines.append
    )
    assert len(res.history) == 6 == len(records)
    assert set(records[0]) == {
        "epoch",
        "train_loss",
        "valid_loss",
        "valid_accuracy",
        "valid_macro_f1",
        "samples_per_s",
        "seconds",
    }
    assert [r["epoch"] for r in records] == list(range(1, 7))
    assert res.best_valid_macro_f1 == max(r["valid_macro_f1"] for r in records)
    assert res.history[res.best_epoch - 1]["valid_macro_f1"] == res.best_valid_macro_f1
    assert res.best_valid_macro_f1 > 0.9
    assert sum("epoch" in line and "macro_f1" in line for line in lines) == 6
    assert all(v.device.type == "cpu" for v in res.state_dict.values())
    # the returned state is the best epoch's, and it reproduces the best score
    model = build_model(MODEL)
    model.load_state_dict(res.state_dict)
    probs = predict_proba(model, VALID["ids"], VALID["lengths"], batch_size=7)
    from zhflow.tasks.evaluate import macro_f1

    assert macro_f1(VALID["labels"].numpy(), probs.argmax(1), 2) == pytest.approx(
        res.best_valid_macro_f1
    )


def test_same_seed_same_weights_different_seed_different() -> None:
    a = train_model(MODEL, _cfg(epochs=2), TRAIN, VALID, log=None)
    b = train_model(MODEL, _cfg(epochs=2), TRAIN, VALID, log=None)
    _assert_same_state(a.state_dict, b.state_dict)
    assert _strip_timing(a.history) == _strip_timing(b.history)
    c = train_model(MODEL, _cfg(epochs=2, seed=1), TRAIN, VALID, log=None)
    assert not torch.equal(a.state_dict["head.weight"], c.state_dict["head.weight"])


def _with_bags(split: dict[str, torch.Tensor], features: int, seed: int) -> dict[str, torch.Tensor]:
    """``split`` plus a random TF-IDF-like bag per row for a wide branch of ``features`` n-grams."""
    g = torch.Generator().manual_seed(seed)
    counts = torch.randint(0, 4, (split["labels"].shape[0],), generator=g)
    total = int(counts.sum())
    return {**split, "bag_ids": torch.randint(0, features, (total,), generator=g),
            "bag_counts": counts, "bag_weights": torch.rand(total, generator=g)}  # fmt: skip


WIDE_MODEL = RNNConfig(**{**MODEL.to_dict(), "wide_features": 12})
WIDE_TRAIN, WIDE_VALID = _with_bags(TRAIN, 12, 0), _with_bags(VALID, 12, 1)


def test_the_rnn_trains_the_same_with_or_without_a_wide_branch() -> None:
    """A controlled ablation: ``--wide`` against ``--no-wide`` at one seed changes the wide
    branch and the mix, not the RNN: building and fitting the wide branch draws nothing from
    torch's global generator (the RNN's init and dropout use it), and the RNN's gradient
    clipping sees the RNN's gradients only."""
    # A small clip_norm clips every step: the norm must be the RNN's gradients alone.
    cfg = _cfg(epochs=2, clip_norm=0.05)
    plain = train_model(MODEL, cfg, TRAIN, VALID, log=None)
    wide = train_model(WIDE_MODEL, cfg, WIDE_TRAIN, WIDE_VALID, log=None)
    rnn_keys = {k for k in wide.state_dict if not k.startswith("wide.")} - {"mix", "temperature"}
    assert rnn_keys == set(plain.state_dict) - {"temperature"}
    _assert_same_state({k: plain.state_dict[k] for k in rnn_keys},
                       {k: wide.state_dict[k] for k in rnn_keys})  # fmt: skip
    assert _strip_timing(plain.history) == _strip_timing(wide.history)


class _Crash(RuntimeError):
    pass


@pytest.mark.parametrize("wide", [False, True], ids=["rnn", "rnn+wide"])
def test_resume_after_crash_matches_uninterrupted_run(tmp_path: Path, wide: bool) -> None:
    # Dropout is on (defaults), so the RNG state must be restored for an exact match. With a
    # wide branch, the resumed run skips the wide fit (its weights are in the checkpoint), so
    # nothing that fit leaves behind may steer the RNN's epochs; clip_norm 0.05 clips always.
    model, train, valid = (WIDE_MODEL, WIDE_TRAIN, WIDE_VALID) if wide else (MODEL, TRAIN, VALID)
    cfg = _cfg(clip_norm=0.05)
    full = train_model(model, cfg, train, valid, checkpoint_dir=tmp_path / "a", log=None)

    def crash(record: dict[str, Any]) -> None:
        if record["epoch"] == 1:
            raise _Crash

    with pytest.raises(_Crash):
        train_model(
            model, cfg, train, valid, on_epoch=crash, checkpoint_dir=tmp_path / "b", log=None
        )
    ckpt = torch.load(tmp_path / "b" / CHECKPOINT_NAME, weights_only=True, map_location="cpu")
    assert ckpt["epoch"] == 1
    lines: list[str] = []
    resumed = train_model(model, cfg, train, valid, checkpoint_dir=tmp_path / "b", log=lines.append)
    assert resumed.resumed_from_epoch == 1
    assert any("resuming" in line for line in lines)
    _assert_same_state(full.state_dict, resumed.state_dict)
    assert _strip_timing(full.history) == _strip_timing(resumed.history)
    assert resumed.best_epoch == full.best_epoch
    # the last-epoch weights match too, not only the best ones
    last_a = torch.load(tmp_path / "a" / CHECKPOINT_NAME, weights_only=True)["model"]
    last_b = torch.load(tmp_path / "b" / CHECKPOINT_NAME, weights_only=True)["model"]
    _assert_same_state(last_a, last_b)
    assert not list((tmp_path / "b").glob("*.tmp"))


def test_finished_checkpoint_returns_without_training(tmp_path: Path) -> None:
    first = train_model(MODEL, _cfg(epochs=2), TRAIN, VALID, checkpoint_dir=tmp_path, log=None)
    calls: list[dict[str, Any]] = []
    again = train_model(
        MODEL,
        _cfg(epochs=2, num_threads=1),
        TRAIN,
        VALID,
        on_epoch=calls.append,
        checkpoint_dir=tmp_path,
        log=None,
    )
    assert calls == []
    _assert_same_state(first.state_dict, again.state_dict)
    # other settings: the checkpoint is ignored and training starts fresh
    lines: list[str] = []
    train_model(
        MODEL, _cfg(epochs=1, lr=1e-3), TRAIN, VALID, checkpoint_dir=tmp_path, log=lines.append
    )
    assert any("ignoring checkpoint" in line for line in lines)


def test_corrupt_checkpoint_is_ignored(tmp_path: Path) -> None:
    (tmp_path / CHECKPOINT_NAME).write_bytes(b"not a checkpoint")
    lines: list[str] = []
    res = train_model(
        MODEL, _cfg(epochs=1), TRAIN, VALID, checkpoint_dir=tmp_path, log=lines.append
    )
    assert res.resumed_from_epoch == 0 and len(res.history) == 1
    assert any("unreadable" in line for line in lines)


def test_early_stopping_restores_best() -> None:
    # A negligible lr never beats epoch 1: stop after 1 + patience epochs, keep epoch 1.
    res = train_model(MODEL, _cfg(epochs=8, patience=2, lr=1e-12), TRAIN, VALID, log=None)
    assert [r["epoch"] for r in res.history] == [1, 2, 3]
    assert res.best_epoch == 1
    assert res.best_valid_macro_f1 == res.history[0]["valid_macro_f1"]


def test_bad_inputs_are_rejected() -> None:
    bad = dict(TRAIN, labels=TRAIN["labels"] + 5)
    with pytest.raises(InputError, match="labels"):
        train_model(MODEL, _cfg(), bad, VALID, log=None)
    with pytest.raises(InputError, match="empty"):
        train_model(MODEL, _cfg(), TRAIN, {k: v[:0] for k, v in VALID.items()}, log=None)
    with pytest.raises(ValueError, match="batch_size"):
        TrainConfig(batch_size=0)
    with pytest.raises(ValueError, match="unknown TrainConfig keys"):
        TrainConfig.from_dict({"epochs": 1, "nope": 2})
    assert TrainConfig.from_dict(_cfg().to_dict()) == _cfg()


def test_pick_device() -> None:
    assert pick_device("cpu") == torch.device("cpu")
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert pick_device("auto").type == expected
    if not torch.cuda.is_available():
        with pytest.raises(InputError, match="CUDA"):
            pick_device("cuda")
    with pytest.raises(InputError):
        pick_device("tpu-please")


def test_inference_batches_bound_rows_and_padded_tokens() -> None:
    lengths = torch.tensor([3, 200, 5, 200, 40, 1, 7, 150] * 40)
    batches = inference_batches(lengths, batch_size=16, max_tokens=1000)
    seen = torch.cat(batches)
    assert sorted(seen.tolist()) == list(range(len(lengths)))  # every row once
    assert all(len(b) <= 16 and len(b) * int(lengths[b].max()) <= 1000 for b in batches)
    assert [int(lengths[b].max()) for b in batches] == sorted(
        (int(lengths[b].max()) for b in batches), reverse=True)  # longest first  # fmt: skip
    default = inference_batches(lengths, batch_size=8)  # budget 8 * 64 = 512 padded tokens
    assert len(default[0]) == 2 and max(map(len, default)) == 8  # 2 texts of 200; 8 short
    one = inference_batches(torch.tensor([900]), batch_size=4, max_tokens=10)
    assert [b.tolist() for b in one] == [[0]]  # a text longer than the budget still gets a batch


def test_predict_proba_order_and_mode() -> None:
    torch.manual_seed(0)
    model = build_model(MODEL)
    model.train()
    probs = predict_proba(model, VALID["ids"].numpy(), VALID["lengths"].numpy(), batch_size=5)
    assert model.training  # mode restored
    assert probs.shape == (64, 2) and probs.dtype == np.float32
    np.testing.assert_allclose(probs.sum(1), 1.0, rtol=1e-5)
    model.eval()
    with torch.no_grad():
        one_by_one = np.stack(
            [
                torch.softmax(model(VALID["ids"][i : i + 1], VALID["lengths"][i : i + 1]), -1)[
                    0
                ].numpy()
                for i in range(64)
            ]
        )
    np.testing.assert_allclose(probs, one_by_one, atol=1e-6)
    empty = predict_proba(model, VALID["ids"][:0], VALID["lengths"][:0])
    assert empty.shape == (0, 2)


# ----------------------------------------------------------------------------- CUDA (skipped here)

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@needs_cuda
@pytest.mark.parametrize("amp", [False, True])
def test_cuda_training_learns_with_and_without_amp(amp: bool, tmp_path: Path) -> None:
    res = train_model(MODEL, _cfg(epochs=6, device="cuda", amp=amp), TRAIN, VALID,
                      checkpoint_dir=tmp_path, log=None)  # fmt: skip
    assert res.meta["device"].startswith("cuda") and res.meta["amp"] is amp
    assert res.best_valid_macro_f1 > 0.9
    assert all(v.device.type == "cpu" and v.dtype == torch.float32 for v in res.state_dict.values()
               if v.is_floating_point())  # fmt: skip
    # the weights trained on the GPU predict the same classes on the CPU
    model = build_model(MODEL)
    model.load_state_dict(res.state_dict)
    on_gpu = predict_proba(model, VALID["ids"], VALID["lengths"], 32, "cuda").argmax(1)
    on_cpu = predict_proba(model, VALID["ids"], VALID["lengths"], 32, "cpu").argmax(1)
    assert (on_gpu == on_cpu).mean() > 0.98


@needs_cuda
def test_cuda_amp_checkpoint_keeps_the_loss_scaler(tmp_path: Path) -> None:
    def crash(record: dict[str, Any]) -> None:
        if record["epoch"] == 1:
            raise _Crash

    with pytest.raises(_Crash):
        train_model(MODEL, _cfg(device="cuda", amp=True), TRAIN, VALID, on_epoch=crash,
                    checkpoint_dir=tmp_path, log=None)  # fmt: skip
    ckpt = torch.load(tmp_path / CHECKPOINT_NAME, weights_only=True, map_location="cpu")
    assert ckpt["scaler"]["scale"] > 0  # the GradScaler's state travels with the checkpoint
    amp = _cfg(device="cuda", amp=True)
    resumed = train_model(MODEL, amp, TRAIN, VALID, checkpoint_dir=tmp_path, log=None)
    assert resumed.resumed_from_epoch == 1
    assert [r["epoch"] for r in resumed.history] == [1, 2, 3]


def _mixed(deep: torch.Tensor, wide: torch.Tensor) -> Callable[[float], torch.Tensor]:
    """The model's own mixing at temperature 1 (``RNNClassifier.mix_logits``)."""
    return lambda mix: mix * wide.log_softmax(-1) + (1 - mix) * deep.log_softmax(-1)


def test_calibration_fits_an_inner_temperature_when_the_valid_split_has_errors() -> None:
    gen = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 2, (400,), generator=gen)
    signal = torch.nn.functional.one_hot(labels, 2).float() * 2 - 1  # (M, 2) +-1
    deep = 0.5 * signal + torch.randn(400, 2, generator=gen)  # right about 2 in 3
    wide = 1.5 * signal + torch.randn(400, 2, generator=gen)  # right about 9 in 10
    fit = fit_mix_and_temperature(_mixed(deep, wide), labels, (0.0, 0.5, 1.0))
    assert not fit.separated
    assert TEMPERATURE_GRID[0] < fit.temperature < TEMPERATURE_GRID[-1]
    assert fit.mix in (0.5, 1.0)  # the better branch gets weight
    best_at_one = min(float(torch.nn.functional.cross_entropy(_mixed(deep, wide)(m), labels))
                      for m in (0.0, 0.5, 1.0))  # fmt: skip
    assert fit.loss <= best_at_one


def test_a_separated_valid_split_keeps_the_temperature_at_one() -> None:
    """Every validation row right by a margin: the log-loss falls as the temperature shrinks,
    so a plain fit would pick the grid's floor and every confidence would read 1.0."""
    labels = torch.tensor([0, 1] * 20)
    signal = torch.nn.functional.one_hot(labels, 2).float() * 2 - 1
    deep, wide = 0.4 * signal, 1.5 * signal  # both right on every row
    fit = fit_mix_and_temperature(_mixed(deep, wide), labels, (0.0, 0.5, 1.0))
    assert fit.separated
    assert fit.temperature == 1.0
    assert fit.mix == 1.0  # the surer branch: the lowest log-loss at temperature 1
    probs = (_mixed(deep, wide)(fit.mix) / fit.temperature).softmax(-1)
    assert float(probs.max()) < 0.99
