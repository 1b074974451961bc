"""The wide branch (models/wide.py) and its mix with the RNN (models/rnn.py)."""

from __future__ import annotations

import numpy as np
import torch

from zhflow.models.rnn import RNNClassifier, RNNConfig
from zhflow.models.wide import Bags, NgramLinear, RaggedBags, gather_bags


def _ragged() -> RaggedBags:
    return RaggedBags(
        ids=torch.tensor([3, 0, 1, 4, 2, 2]),
        counts=torch.tensor([2, 0, 3, 1]),
        weights=torch.tensor([0.5, 0.5, 1.0, 2.0, 3.0, 4.0]),
    )


def test_gather_bags_cuts_rows_in_any_order() -> None:
    bags = gather_bags(_ragged(), torch.tensor([2, 0, 1, 3]))
    assert bags.indices.tolist() == [1, 4, 2, 3, 0, 2]
    assert bags.offsets.tolist() == [0, 3, 5, 5]
    assert bags.weights.tolist() == [1.0, 2.0, 3.0, 0.5, 0.5, 4.0]


def test_ngram_linear_is_a_sparse_matrix_product() -> None:
    torch.manual_seed(0)
    layer = NgramLinear(num_features=5, num_classes=3)
    assert torch.count_nonzero(layer.bag.weight) == 0  # zero init: starts at the prior
    torch.nn.init.normal_(layer.bag.weight)
    torch.nn.init.normal_(layer.bias)
    ragged = _ragged()
    dense = torch.zeros(4, 5)
    row = 0
    for r, n in enumerate(ragged.counts.tolist()):
        for k in range(row, row + n):
            dense[r, ragged.ids[k]] += ragged.weights[k]
        row += n
    rows = torch.arange(4)
    got = layer(gather_bags(ragged, rows))
    assert torch.allclose(got, dense @ layer.bag.weight + layer.bias, atol=1e-6)


def test_mixed_logits_are_a_weighted_product_of_experts() -> None:
    torch.manual_seed(0)
    cfg = RNNConfig(vocab_size=10, num_classes=2, embedding_dim=4, hidden_size=4,
                    wide_features=5)  # fmt: skip
    model = RNNClassifier(cfg).eval()
    torch.nn.init.normal_(model.wide.bag.weight)  # type: ignore[union-attr]
    ids = torch.tensor([[2, 3, 4], [5, 6, 0]])
    lengths = torch.tensor([3, 2])
    bags: Bags = gather_bags(_ragged(), torch.tensor([0, 2]))
    model.mix.fill_(0.25)
    model.temperature.fill_(2.0)
    deep = torch.log_softmax(model.deep_logits(ids, lengths), -1)
    wide = torch.log_softmax(model.wide_logits(bags), -1)  # type: ignore[arg-type]
    expected = (0.25 * wide + 0.75 * deep) / 2.0
    assert torch.allclose(model(ids, lengths, bags), expected, atol=1e-6)


def test_the_wide_branch_leaves_the_rnn_init_and_the_generator_unchanged() -> None:
    base = RNNConfig(vocab_size=10, num_classes=2, embedding_dim=4, hidden_size=4)
    torch.manual_seed(3)
    plain = RNNClassifier(base).state_dict()
    after_plain = torch.get_rng_state()
    torch.manual_seed(3)
    wide = RNNClassifier(RNNConfig(**{**base.to_dict(), "wide_features": 7})).state_dict()
    # Nothing drawn for the wide branch either: dropout afterwards sees the same generator.
    assert torch.equal(torch.get_rng_state(), after_plain)
    for key, value in plain.items():
        assert torch.equal(value, wide[key]), key
    assert {k for k in wide if k not in plain} == {"wide.bag.weight", "wide.bias", "mix"}
    assert np.isclose(float(wide["temperature"]), 1.0)
