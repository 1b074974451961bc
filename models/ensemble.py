"""A seed ensemble: K classifiers of one config, trained with seeds s, s+1, ..., averaged.

    member_k(ids, lengths, bags) ──softmax──▶ p_k (B, C)      k = 1..K
    mean_k p_k ──log──▶ logits (B, C)         (softmax of these logits = the mean probability)

Returning log-mean-probabilities as logits lets every caller (evaluation, scoring, predict)
treat an ensemble exactly like one classifier. Each member keeps its own calibration
(mix and temperature, fitted on the validation split when it was trained).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
import torch.nn as nn

from zhflow.models.rnn import UNCALIBRATED_MIX, RNNClassifier, RNNConfig
from zhflow.models.wide import Bags, NgramLinear


class MeanEnsemble(nn.Module):
    def __init__(self, members: Sequence[RNNClassifier]) -> None:
        super().__init__()
        if not members:
            raise ValueError("an ensemble needs at least one member")
        if any(m.config != members[0].config for m in members):
            raise ValueError("ensemble members must share one config")
        self.members = nn.ModuleList(members)
        self.config: RNNConfig = members[0].config

    @property
    def wide(self) -> NgramLinear | None:
        """The first member's wide branch (what ``zhflow predict --explain`` reads)."""
        first = self.members[0]
        assert isinstance(first, RNNClassifier)
        return first.wide

    def forward(
        self, ids: torch.Tensor, lengths: torch.Tensor, bags: Bags | None = None
    ) -> torch.Tensor:
        probs = torch.stack([m(ids, lengths, bags).softmax(-1) for m in self.members])  # (K,B,C)
        return probs.mean(0).clamp_min(1e-12).log()  # (B, C)


def classifiers(model: nn.Module) -> list[RNNClassifier]:
    """The RNNClassifiers inside ``model``: itself, or an ensemble's members."""
    if isinstance(model, MeanEnsemble):
        return [m for m in model.members if isinstance(m, RNNClassifier)]
    assert isinstance(model, RNNClassifier)
    return [model]


@contextmanager
def uncalibrated(model: nn.Module) -> Iterator[None]:
    """Run ``model`` as it would be without calibration (``TrainConfig.calibrate`` off):
    every temperature at 1 and, with a wide branch, the branches' mix at its even default.
    Both were fitted on the validation split, so "before calibration" undoes both."""
    members = classifiers(model)
    saved = [(m.temperature.clone(), m.mix.clone() if m.wide is not None else None)
             for m in members]  # fmt: skip
    try:
        for m in members:
            m.temperature.fill_(1.0)
            if m.wide is not None:
                m.mix.fill_(UNCALIBRATED_MIX)
        yield
    finally:
        for m, (temperature, mix) in zip(members, saved, strict=True):
            m.temperature.copy_(temperature)
            if mix is not None:
                m.mix.copy_(mix)
