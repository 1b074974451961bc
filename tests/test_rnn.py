from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
import torch
import torch.nn.functional as F

from zhflow.models.rnn import (
    ONEHOT_MAX_VOCAB,
    RNNClassifier,
    RNNConfig,
    count_parameters,
    hashed_ngram_ids,
)


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    # Tiny models: one thread is fastest, and it avoids OpenMP spin-wait stalls when the
    # test machine's cores are shared with other processes.
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def _model(**kw: object) -> RNNClassifier:
    torch.manual_seed(0)
    base: dict[str, object] = {
        "vocab_size": 50,
        "num_classes": 3,
        "embedding_dim": 16,
        "hidden_size": 12,
    }
    base.update(kw)
    return RNNClassifier(RNNConfig(**base))  # type: ignore[arg-type]


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("num_layers", [1, 2])
@pytest.mark.parametrize("pooling", ["last", "max", "last+max"])
def test_forward_shapes(cell: str, bidirectional: bool, num_layers: int, pooling: str) -> None:
    model = _model(cell=cell, bidirectional=bidirectional, num_layers=num_layers, pooling=pooling)
    ids = torch.randint(1, 50, (5, 9), dtype=torch.int32)
    lengths = torch.tensor([9, 1, 4, 7, 2])
    ids[torch.arange(9)[None, :] >= lengths[:, None]] = 0
    logits = model(ids, lengths)
    assert logits.shape == (5, 3)
    assert logits.dtype == torch.float32
    assert torch.isfinite(logits).all()
    logits.sum().backward()  # the graph reaches every parameter
    assert all(p.grad is not None for p in model.parameters())


@pytest.mark.parametrize("impl", ["packed", "unpacked"])
@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_padding_invariance(cell: str, bidirectional: bool, impl: str) -> None:
    model = _model(cell=cell, bidirectional=bidirectional, num_layers=2).eval()
    model.impl = impl
    g = torch.Generator().manual_seed(1)
    seq = torch.randint(1, 50, (7,), generator=g)

    def padded(width: int) -> torch.Tensor:
        row = torch.zeros(1, width, dtype=torch.int32)
        row[0, :7] = seq
        return row

    with torch.no_grad():
        short = model(padded(10), torch.tensor([7]))
        long = model(padded(50), torch.tensor([7]))
        # Same sequence inside a batch of other lengths (longer and shorter neighbours).
        batch = torch.randint(1, 50, (4, 50), dtype=torch.int32, generator=g)
        batch[2] = padded(50)[0]
        lengths = torch.tensor([50, 3, 7, 20])
        batch[torch.arange(50)[None, :] >= lengths[:, None]] = 0
        in_batch = model(batch, lengths)[2:3]
        # Garbage beyond the length must not matter either: packing never reads it.
        noisy = padded(50)
        noisy[0, 7:] = torch.randint(1, 50, (43,), generator=g)
        noisy_out = model(noisy, torch.tensor([7]))
    torch.testing.assert_close(short, long, atol=1e-6, rtol=0)
    torch.testing.assert_close(short, in_batch, atol=1e-6, rtol=0)
    torch.testing.assert_close(short, noisy_out, atol=1e-6, rtol=0)


def test_uses_true_last_step_not_padded_output() -> None:
    # The unidirectional last-only representation must equal running the cell on the
    # unpadded sequence alone.
    model = _model(cell="gru", bidirectional=False, pooling="last").eval()
    seq = torch.randint(1, 50, (1, 6))
    padded = torch.cat([seq, torch.zeros(1, 14, dtype=torch.long)], dim=1)
    assert model.embedding is not None  # the embedding input, not one-hot
    with torch.no_grad():
        _, h = model.rnn(model.embedding(seq))
        expected = model.head(h[-1])
        got = model(padded, torch.tensor([6]))
    torch.testing.assert_close(got, expected, atol=1e-6, rtol=0)


def test_lengths_on_any_device_and_int32_ids() -> None:
    model = _model().eval()
    ids = torch.randint(1, 50, (3, 5))
    lengths = torch.tensor([5, 2, 3])
    with torch.no_grad():
        a = model(ids, lengths)
        b = model(ids.int(), lengths.int())
    torch.testing.assert_close(a, b)


def test_deterministic_init() -> None:
    a, b = _model(), _model()
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert ka == kb
        assert torch.equal(va, vb)
    assert a.embedding is not None
    assert torch.equal(a.embedding.weight[0], torch.zeros(16))  # padding row


def test_overfits_small_dataset() -> None:
    # Label 1 iff token 7 appears anywhere in the sequence.
    torch.manual_seed(0)
    n, width = 32, 12
    ids = torch.randint(8, 30, (n, width))
    lengths = torch.randint(3, width + 1, (n,))
    labels = torch.arange(n) % 2
    for i in range(n):
        if labels[i]:
            ids[i, int(torch.randint(0, int(lengths[i]), ()))] = 7
    ids[torch.arange(width)[None, :] >= lengths[:, None]] = 0
    model = RNNClassifier(RNNConfig(vocab_size=30, num_classes=2, embedding_dim=16, hidden_size=16))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    start = time.perf_counter()
    for _ in range(150):
        model.train()
        opt.zero_grad()
        F.cross_entropy(model(ids, lengths), labels).backward()
        opt.step()
        model.eval()
        with torch.no_grad():
            acc = (model(ids, lengths).argmax(-1) == labels).float().mean().item()
        if acc == 1.0:
            break
    assert acc == 1.0
    assert time.perf_counter() - start < 5


def test_config_roundtrip_and_validation() -> None:
    cfg = RNNConfig(vocab_size=10, num_classes=2, cell="gru", pooling="max")
    assert RNNConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="unknown RNNConfig keys: bogus"):
        RNNConfig.from_dict({**cfg.to_dict(), "bogus": 1})
    with pytest.raises(ValueError, match="missing"):
        RNNConfig.from_dict({"vocab_size": 10})
    with pytest.raises(ValueError, match="cell"):
        RNNConfig(vocab_size=10, num_classes=2, cell="transformer")
    with pytest.raises(ValueError, match="pooling"):
        RNNConfig(vocab_size=10, num_classes=2, pooling="mean")
    with pytest.raises(ValueError, match="hidden_size"):
        RNNConfig(vocab_size=10, num_classes=2, hidden_size=0)
    with pytest.raises(ValueError, match="dropout"):
        RNNConfig(vocab_size=10, num_classes=2, dropout=1.0)
    with pytest.raises(ValueError, match="head_dropout"):
        RNNConfig(vocab_size=10, num_classes=2, head_dropout=-0.1)
    with pytest.raises(ValueError, match="padding_idx"):
        RNNConfig(vocab_size=10, num_classes=2, padding_idx=10)


def test_count_parameters() -> None:
    model = _model(cell="gru", bidirectional=False, pooling="last")
    e, h = 16, 12
    expected = 50 * e + 3 * (h * e + h * h + 2 * h) + (h * 3 + 3)
    assert count_parameters(model) == expected
    # dropout between layers is accepted silently at one layer (no torch warning)
    _model(num_layers=1, dropout=0.5)


def _ragged_batch(seed: int = 3, batch: int = 6, width: int = 11) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(2, 50, (batch, width), dtype=torch.int32, generator=g)
    lengths = torch.tensor([width, 1, 4, 7, 2, width - 1][:batch])
    ids[torch.arange(width)[None, :] >= lengths[:, None]] = 0
    return ids, lengths


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("num_layers", [1, 2])
@pytest.mark.parametrize("pooling", ["last", "max", "last+max"])
def test_packed_and_unpacked_agree(
    cell: str, bidirectional: bool, num_layers: int, pooling: str
) -> None:
    # One set of weights, two implementations: same logits and same gradients.
    model = _model(cell=cell, bidirectional=bidirectional, num_layers=num_layers, pooling=pooling)
    model.eval()  # no dropout, so both see the same function
    ids, lengths = _ragged_batch()
    results = {}
    for impl in ("packed", "unpacked"):
        model.impl = impl
        model.zero_grad()
        logits = model(ids, lengths)
        (logits * torch.arange(1.0, 4.0)).sum().backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        results[impl] = (logits.detach(), grads)
    (a, ga), (b, gb) = results["packed"], results["unpacked"]
    torch.testing.assert_close(a, b, atol=1e-5, rtol=0)
    assert ga.keys() == gb.keys()
    for name in ga:
        torch.testing.assert_close(ga[name], gb[name], atol=1e-5, rtol=1e-4, msg=name)


def test_impl_choice_and_shared_state_dict() -> None:
    model = _model(num_layers=2)
    assert model.resolved_impl(torch.device("cpu")) == "unpacked"
    assert model.resolved_impl(torch.device("cuda")) == "packed"
    other = RNNClassifier(model.config, impl="packed")
    other.load_state_dict(model.state_dict(), strict=True)  # one layout for both
    assert other.resolved_impl(torch.device("cpu")) == "packed"
    with pytest.raises(ValueError, match="impl"):
        RNNClassifier(model.config, impl="fast")


def test_max_pooling_reads_valid_steps_only() -> None:
    # Huge garbage vectors past the length would win a max over all steps; they must not count.
    model = _model(pooling="max", bidirectional=True).eval()
    ids, lengths = _ragged_batch()
    with torch.no_grad():
        base = model(ids, lengths)
        for impl in ("packed", "unpacked"):
            model.impl = impl
            noisy = ids.clone()
            noisy[torch.arange(ids.shape[1])[None, :] >= lengths[:, None]] = 49
            torch.testing.assert_close(model(noisy, lengths), base, atol=1e-5, rtol=0)


# ----------------------------------------------------------------------------- one-hot inputs


def test_onehot_matches_embedding_shapes_and_trains() -> None:
    onehot = _model(input="onehot", num_layers=2)
    assert onehot.embedding is None
    assert onehot.rnn.input_size == 50  # one column per vocabulary entry
    ids, lengths = _ragged_batch()
    x = onehot.embed(ids)
    assert x.shape == (6, 11, 50)
    assert torch.equal(x.sum(-1), torch.ones(6, 11))
    assert torch.equal(x.argmax(-1), ids.long())
    emb = _model(num_layers=2)
    assert onehot(ids, lengths).shape == emb(ids, lengths).shape == (6, 3)
    onehot.eval()
    with torch.no_grad():
        outs = []
        for impl in ("packed", "unpacked"):
            onehot.impl = impl
            outs.append(onehot(ids, lengths))
    torch.testing.assert_close(outs[0], outs[1], atol=1e-5, rtol=0)


def test_onehot_vocab_limit() -> None:
    RNNConfig(vocab_size=ONEHOT_MAX_VOCAB, num_classes=2, input="onehot")
    with pytest.raises(ValueError, match="one-hot inputs need a vocabulary of at most"):
        RNNConfig(vocab_size=ONEHOT_MAX_VOCAB + 1, num_classes=2, input="onehot")
    with pytest.raises(ValueError, match="input"):
        RNNConfig(vocab_size=10, num_classes=2, input="bag")


# ----------------------------------------------------------------------------- n-gram features


def test_hashed_ngram_ids_on_a_tiny_example() -> None:
    ids = torch.tensor([[5, 6, 7, 0, 0], [5, 6, 5, 6, 9]])
    bi = hashed_ngram_ids(ids, 2, buckets=1000)
    # No bigram ends at step 0 or at a padding step; equal pairs get equal buckets.
    assert bi[0, 0] == 0 and bi[0, 3] == 0 and bi[0, 4] == 0
    assert bi[0, 1] == bi[1, 1] == bi[1, 3]  # (5, 6) three times
    assert bi[1, 2] != bi[1, 1]  # (6, 5) is not (5, 6): order matters
    assert ((bi >= 0) & (bi < 1000)).all()
    # The documented hash: fastText's h = h * 116049371 + id, then 1 + h % (buckets - 1).
    h = (5 * 116_049_371 + 6) % 2_147_483_647
    assert bi[0, 1] == 1 + h % 999
    tri = hashed_ngram_ids(ids, 3, buckets=1000)
    assert tri[0].tolist()[:2] == [0, 0] and tri[0, 2] > 0 and tri[0, 3] == 0
    assert hashed_ngram_ids(ids[:, :1], 2, buckets=1000).eq(0).all()  # too short


def test_ngram_features_change_inputs_and_train() -> None:
    plain = _model()
    grams = _model(ngram_features=3, ngram_buckets=97)
    assert grams.ngram_embedding is not None and grams.ngram_embedding.weight.shape == (97, 16)
    ids, _ = _ragged_batch()
    with torch.no_grad():
        grams.embedding.weight.copy_(plain.embedding.weight)  # type: ignore[union-attr]
        diff = (grams.embed(ids) - plain.embed(ids)).abs().sum(-1)  # (B, T)
    # Row 2 has length 4: steps 1-3 carry a bigram (and 2-3 a trigram), step 0 and padding none.
    assert diff[2, 0] == 0 and (diff[2, 1:4] > 0).all() and (diff[2, 4:] == 0).all()
    assert (diff[1] == 0).all()  # a one-token text has no n-gram
    with pytest.raises(ValueError, match="ngram_features"):
        RNNConfig(vocab_size=10, num_classes=2, ngram_features=1)
    with pytest.raises(ValueError, match="ngram_features needs input='embedding'"):
        RNNConfig(vocab_size=10, num_classes=2, ngram_features=2, input="onehot")


@pytest.mark.parametrize("extra", [{"input": "onehot"}, {"ngram_features": 2}])
def test_variants_fit_a_tiny_corpus(extra: dict[str, object]) -> None:
    # Label 1 iff the bigram (7, 8) appears: both variants must learn it.
    torch.manual_seed(0)
    n, width = 32, 10
    ids = torch.randint(9, 30, (n, width))
    lengths = torch.randint(4, width + 1, (n,))
    labels = torch.arange(n) % 2
    for i in range(n):
        if labels[i]:
            at = int(torch.randint(0, int(lengths[i]) - 1, ()))
            ids[i, at : at + 2] = torch.tensor([7, 8])
    ids[torch.arange(width)[None, :] >= lengths[:, None]] = 0
    cfg = RNNConfig(vocab_size=30, num_classes=2, embedding_dim=16, hidden_size=16,
                    ngram_buckets=512, **extra)  # type: ignore[arg-type]  # fmt: skip
    model = RNNClassifier(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for _ in range(150):
        model.train()
        opt.zero_grad()
        F.cross_entropy(model(ids, lengths), labels).backward()
        opt.step()
        model.eval()
        with torch.no_grad():
            acc = (model(ids, lengths).argmax(-1) == labels).float().mean().item()
        if acc == 1.0:
            break
    assert acc == 1.0
