from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
import torch
import torch.nn.functional as F

from models.rnn import RNNClassifier, RNNConfig, count_parameters


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


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_padding_invariance(cell: str, bidirectional: bool) -> None:
    model = _model(cell=cell, bidirectional=bidirectional, num_layers=2).eval()
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
