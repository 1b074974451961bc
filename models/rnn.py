"""A recurrent text classifier in one readable file (nanoGPT style).

    ids (B, T) ──Embedding──▶ (B, T, E) ──dropout──▶ RNN/LSTM/GRU over the packed sequence
        ├─ final hidden state of the last layer, forward and backward  (B, D*H)
        └─ max over the valid time steps of the last layer's outputs   (B, D*H)
    concat ──dropout──▶ Linear ──▶ logits (B, C)

B = batch, T = padded length, E = embedding_dim, H = hidden_size, D = 2 if bidirectional else 1,
C = num_classes. Sequences are packed with their true lengths, so padding never reaches the
recurrent cell: the logits of a sequence do not depend on how much padding it carries.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from typing import Any

import torch
import torch.nn as nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

CELLS: dict[str, Callable[..., nn.RNNBase]] = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}
POOLINGS = ("last", "max", "last+max")


@dataclass
class RNNConfig:
    vocab_size: int  # rows of the embedding table, including <pad>=0 and <unk>=1
    num_classes: int  # width of the output layer
    cell: str = "lstm"  # gated cells train far more reliably than a plain RNN on long reviews
    embedding_dim: int = 128  # enough for a 20-50k word vocabulary without overfitting fast
    hidden_size: int = 128  # per direction; matches the embedding width, cheap on CPU
    num_layers: int = 1  # one layer is as good as two on short texts and twice as fast
    bidirectional: bool = True  # the backward pass sees the opening words last: +1-2 F1 typically
    dropout: float = 0.2  # between stacked layers only (nn.LSTM's `dropout`); unused at 1 layer
    embed_dropout: float = 0.2  # on embeddings: the main regulariser for a big embedding table
    head_dropout: float = 0.3  # before the classifier, on the pooled representation
    pooling: str = "last+max"  # max pooling catches a strong cue anywhere in a long text
    padding_idx: int = 0  # the encoder post-pads with id 0 (<pad>)

    def __post_init__(self) -> None:
        for name in ("vocab_size", "num_classes", "embedding_dim", "hidden_size", "num_layers"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"RNNConfig.{name} must be a positive integer, got {value!r}")
        if self.cell not in CELLS:
            raise ValueError(f"RNNConfig.cell must be one of {sorted(CELLS)}, got {self.cell!r}")
        if self.pooling not in POOLINGS:
            raise ValueError(
                f"RNNConfig.pooling must be one of {list(POOLINGS)}, got {self.pooling!r}"
            )
        if not isinstance(self.bidirectional, bool):
            raise ValueError(f"RNNConfig.bidirectional must be a bool, got {self.bidirectional!r}")
        for name in ("dropout", "embed_dropout", "head_dropout"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < 1:
                raise ValueError(f"RNNConfig.{name} must be a number in [0, 1), got {value!r}")
        if (
            isinstance(self.padding_idx, bool)
            or not isinstance(self.padding_idx, int)
            or not 0 <= self.padding_idx < self.vocab_size
        ):
            raise ValueError(
                "RNNConfig.padding_idx must be an integer in [0, vocab_size), "
                f"got {self.padding_idx!r}"
            )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RNNConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown RNNConfig keys: {', '.join(unknown)}")
        missing = [name for name in ("vocab_size", "num_classes") if name not in data]
        if missing:
            raise ValueError(f"RNNConfig is missing required keys: {', '.join(missing)}")
        return cls(**data)

    @property
    def representation_size(self) -> int:
        """Width of the pooled vector fed to the classifier."""
        per_part = self.hidden_size * (2 if self.bidirectional else 1)
        return per_part * (2 if self.pooling == "last+max" else 1)


class RNNClassifier(nn.Module):
    def __init__(self, config: RNNConfig) -> None:
        super().__init__()
        self.config = config
        self.embedding = nn.Embedding(
            config.vocab_size, config.embedding_dim, padding_idx=config.padding_idx
        )
        self.embed_dropout = nn.Dropout(config.embed_dropout)
        self.rnn = CELLS[config.cell](
            input_size=config.embedding_dim,
            hidden_size=config.hidden_size,
            num_layers=config.num_layers,
            batch_first=True,
            # Inter-layer dropout only exists with >1 layer (torch warns otherwise).
            dropout=config.dropout if config.num_layers > 1 else 0.0,
            bidirectional=config.bidirectional,
        )
        self.head_dropout = nn.Dropout(config.head_dropout)
        self.head = nn.Linear(config.representation_size, config.num_classes)
        self._init_weights()

    def _init_weights(self) -> None:
        # torch's defaults, plus: LSTM forget-gate bias 1 so memory is kept early in training.
        # Everything is drawn from the global generator: torch.manual_seed fixes the init.
        if self.config.cell == "lstm":
            h = self.config.hidden_size
            with torch.no_grad():
                for name, param in self.rnn.named_parameters():
                    if name.startswith("bias_ih"):
                        param[h : 2 * h].fill_(1.0)  # gate order: input, forget, cell, output
                    elif name.startswith("bias_hh"):
                        param[h : 2 * h].fill_(0.0)

    def forward(self, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        cfg = self.config
        T = ids.shape[1]
        ids = ids.long()  # storage holds int32
        # Packing wants int64 lengths on the CPU; clamp guards against 0 and lengths > T.
        lengths_cpu = lengths.detach().to("cpu", torch.int64).clamp(1, T)

        x = self.embed_dropout(self.embedding(ids))  # (B, T, E)
        packed = pack_padded_sequence(x, lengths_cpu, batch_first=True, enforce_sorted=False)
        packed_out, h_n = self.rnn(packed)
        if isinstance(h_n, tuple):  # LSTM returns (h_n, c_n)
            h_n = h_n[0]
        # h_n: (num_layers * D, B, H), already in the input order (packing un-sorts it).
        # For packed input these are the states at each sequence's true last step (forward)
        # and after reading back to step 0 (backward).
        last = torch.cat([h_n[-2], h_n[-1]], dim=-1) if cfg.bidirectional else h_n[-1]  # (B, D*H)

        parts = []
        if cfg.pooling in ("last", "last+max"):
            parts.append(last)
        if cfg.pooling in ("max", "last+max"):
            # (B, T, D*H), zeros past each length; total_length keeps T even if max(lengths) < T.
            out, _ = pad_packed_sequence(packed_out, batch_first=True, total_length=T)
            steps = torch.arange(T, device=out.device)  # (T,)
            pad = steps[None, :] >= lengths_cpu.to(out.device)[:, None]  # (B, T) True = padding
            out = out.masked_fill(pad[:, :, None], float("-inf"))
            parts.append(out.max(dim=1).values)  # (B, D*H)
        rep = torch.cat(parts, dim=-1) if len(parts) > 1 else parts[0]  # (B, R)
        return self.head(self.head_dropout(rep))  # (B, C)


def count_parameters(model: nn.Module, trainable_only: bool = True) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)
