"""A recurrent text classifier in one readable file (nanoGPT style).

    ids (B, T) ──Embedding──▶ (B, T, E) ──dropout──▶ RNN/LSTM/GRU over the true lengths
        ├─ final hidden state of the last layer, forward and backward  (B, D*H)
        └─ max over the valid time steps of the last layer's outputs   (B, D*H)
    concat ──dropout──▶ Linear ──▶ logits (B, C)

B = batch, T = padded length, E = embedding_dim, H = hidden_size, D = 2 if bidirectional else 1,
C = num_classes. Padding never reaches a valid step: the logits of a sequence do not depend on
how much padding it carries.

Inputs (``RNNConfig.input``): ``embedding`` looks each id up in an ``nn.Embedding`` table
(``token -> num -> vector``); ``onehot`` feeds ``F.one_hot(ids, V)`` (built per batch, never a
V×V matrix) straight into the RNN, whose input width is then V. With ``ngram_features`` N >= 2,
hashed 2..N-grams of consecutive ids (fastText's trick) get their own embedding table, summed
into the embedding of the position where the n-gram ends.

Two implementations of the recurrence, sharing one ``nn.LSTM``/``nn.GRU``/``nn.RNN`` module and
therefore one ``state_dict`` (a model trained with one runs with the other):

* ``packed``: ``pack_padded_sequence`` + the module's own bidirectional call. cuDNN runs packed
  batches natively; this is the default on CUDA and the reference.
* ``unpacked``: one unidirectional call per layer and direction on the post-padded batch, with
  that direction's weights (``weight_ih_l0`` / ``weight_ih_l0_reverse``...). The forward direction
  reads its outputs and final state at step ``length - 1`` (padding comes later, so it never
  influences them); the backward direction runs on each sequence reversed within its own length
  (padding still at the end), and its outputs are re-reversed to align positions. Stacked layers
  read the concatenated aligned outputs. Same numbers as ``packed`` up to float rounding, and on
  the CPU several times faster to train (the packed backward pass is slow there). Default on CPU.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import _VF
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from zhflow.models.wide import Bags, NgramLinear

CELLS: dict[str, Callable[..., nn.RNNBase]] = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}
POOLINGS = ("last", "max", "last+max")
INPUTS = ("embedding", "onehot")
IMPLS = ("auto", "packed", "unpacked")
# A one-hot batch is (B, T, V) floats and the first layer's input weights are V wide: above
# this vocabulary size use embeddings, characters (`--tokenizer char`) or a capped vocabulary.
ONEHOT_MAX_VOCAB = 20_000
# fastText's multiplier for hashing a sequence of token ids; reduced modulo a 31-bit prime
# after each step so the int64 arithmetic never overflows (deterministic on every platform).
NGRAM_HASH_MULT = 116_049_371
NGRAM_HASH_MOD = 2_147_483_647
# The branches' mix before calibration fits one (and with calibration off): an even pool.
UNCALIBRATED_MIX = 0.5


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
    input: str = "embedding"  # "embedding" (nn.Embedding) or "onehot" (F.one_hot per batch)
    ngram_features: int = 0  # N >= 2: add hashed 2..N-gram embeddings (fastText style); 0 = off
    ngram_buckets: int = 65_536  # rows of the hashed n-gram table (bucket 0 = "no n-gram")
    # Rows of the wide branch's n-gram feature table (models/wide.py); 0 = no wide branch.
    # Its logits mix with the RNN's (``RNNClassifier.forward``): on the shared corpora the
    # linear n-gram model alone matches TF-IDF + LinearSVC, and the mix beats both parts.
    wide_features: int = 0
    # The architecture (models/registry.py); bundles from before the registry are "rnn".
    model_type: str = "rnn"

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
        if self.input not in INPUTS:
            raise ValueError(f"RNNConfig.input must be one of {list(INPUTS)}, got {self.input!r}")
        if self.input == "onehot" and self.vocab_size > ONEHOT_MAX_VOCAB:
            raise ValueError(
                f"one-hot inputs need a vocabulary of at most {ONEHOT_MAX_VOCAB:,} tokens, "
                f"got {self.vocab_size:,}: use characters or cap the vocabulary"
            )
        n = self.ngram_features
        if isinstance(n, bool) or not isinstance(n, int) or n < 0 or n == 1:
            raise ValueError(
                f"RNNConfig.ngram_features must be 0 (off) or an integer >= 2, got {n!r}"
            )
        if n and self.input != "embedding":
            raise ValueError("RNNConfig.ngram_features needs input='embedding'")
        b = self.ngram_buckets
        if isinstance(b, bool) or not isinstance(b, int) or b < 2:
            raise ValueError(f"RNNConfig.ngram_buckets must be an integer >= 2, got {b!r}")
        w = self.wide_features
        if isinstance(w, bool) or not isinstance(w, int) or w < 0:
            raise ValueError(f"RNNConfig.wide_features must be an integer >= 0, got {w!r}")
        from zhflow.models.registry import MODEL_TYPES  # the registry imports this module

        if self.model_type not in MODEL_TYPES:
            raise ValueError(
                f"RNNConfig.model_type must be one of {list(MODEL_TYPES)}, got {self.model_type!r}"
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
    def input_size(self) -> int:
        """Width of what the first recurrent layer reads at each step."""
        return self.vocab_size if self.input == "onehot" else self.embedding_dim

    @property
    def representation_size(self) -> int:
        """Width of the pooled vector fed to the classifier."""
        per_part = self.hidden_size * (2 if self.bidirectional else 1)
        return per_part * (2 if self.pooling == "last+max" else 1)


def hashed_ngram_ids(ids: torch.Tensor, n: int, buckets: int, padding_idx: int = 0) -> torch.Tensor:
    """Bucket (B, T) int64 of the n-gram of token ids ending at each position; 0 = none.

    Position t gets the n-gram ``ids[t-n+1 .. t]`` when all of it is inside the sequence (no
    padding id, t >= n-1). The hash is fastText's ``h = h * 116049371 + id`` over the ids, kept
    below 2^31 after each step, mapped to ``1 .. buckets-1``: integer arithmetic only, so the
    same ids give the same buckets in every process and on every machine.
    """
    ids = ids.long()
    out = torch.zeros_like(ids)
    T = ids.shape[1]
    if n < 2 or n > T:
        return out
    width = T - n + 1
    h = ids[:, :width] % NGRAM_HASH_MOD
    inside = ids[:, :width] != padding_idx
    for k in range(1, n):
        part = ids[:, k : k + width]
        h = (h * NGRAM_HASH_MULT + part) % NGRAM_HASH_MOD
        inside &= part != padding_idx
    out[:, n - 1 :] = torch.where(inside, 1 + h % (buckets - 1), 0)
    return out


def _time_gather(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``x[b, index[b, t]]`` for (B, T, F) ``x`` and (B, T) ``index``."""
    return x.gather(1, index[:, :, None].expand(-1, -1, x.shape[2]))


class RNNClassifier(nn.Module):
    mix: torch.Tensor  # buffers (see __init__)
    temperature: torch.Tensor

    def __init__(self, config: RNNConfig, impl: str = "auto") -> None:
        super().__init__()
        if impl not in IMPLS:
            raise ValueError(f"impl must be one of {list(IMPLS)}, got {impl!r}")
        self.config = config
        self.impl = impl  # not part of the config: both implementations share the weights
        self.embedding: nn.Embedding | None = None
        self.ngram_embedding: nn.Embedding | None = None
        if config.input == "embedding":
            self.embedding = nn.Embedding(
                config.vocab_size, config.embedding_dim, padding_idx=config.padding_idx
            )
        if config.ngram_features:
            self.ngram_embedding = nn.Embedding(
                config.ngram_buckets, config.embedding_dim, padding_idx=0
            )
        self.embed_dropout = nn.Dropout(config.embed_dropout)
        self.rnn = CELLS[config.cell](
            input_size=config.input_size,
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
        # Built after the RNN's init so a seed gives the same RNN weights with or without it.
        self.wide: NgramLinear | None = None
        if config.wide_features:
            self.wide = NgramLinear(config.wide_features, config.num_classes)
            # Weight of the wide branch's log-probabilities in the mix; fitted on the
            # validation split after training (``zhflow.tasks.train.calibrate``).
            self.register_buffer("mix", torch.tensor(UNCALIBRATED_MIX))
        # Softmax temperature fitted on the validation split (calibration); 1 = raw logits.
        self.register_buffer("temperature", torch.tensor(1.0))

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
        if self.ngram_embedding is not None:
            # Small n-gram vectors: training starts close to the words-only model.
            with torch.no_grad():
                self.ngram_embedding.weight.normal_(0.0, 0.1)
                self.ngram_embedding.weight[0].zero_()

    def resolved_impl(self, device: torch.device) -> str:
        """``auto`` → packed on CUDA (cuDNN's packed kernels), unpacked elsewhere."""
        if self.impl != "auto":
            return self.impl
        return "packed" if device.type == "cuda" else "unpacked"

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        """(B, T) ids → (B, T, input_size) RNN inputs, before dropout."""
        cfg = self.config
        ids = ids.long()
        if self.embedding is None:  # one-hot: a (B, T, V) batch, never a V×V matrix
            return F.one_hot(ids, cfg.vocab_size).to(self.head.weight.dtype)
        x = self.embedding(ids)  # (B, T, E)
        if self.ngram_embedding is not None:
            for n in range(2, cfg.ngram_features + 1):
                buckets = hashed_ngram_ids(ids, n, cfg.ngram_buckets, cfg.padding_idx)
                x = x + self.ngram_embedding(buckets)
        return x

    def forward(
        self, ids: torch.Tensor, lengths: torch.Tensor, bags: Bags | None = None
    ) -> torch.Tensor:
        """Calibrated logits (B, C): the RNN's, mixed with the wide branch's when there is one.

        With a wide branch the logits are ``mix * log_softmax(wide) + (1 - mix) *
        log_softmax(rnn)`` (a weighted product of the two experts' probabilities), and
        ``bags`` (the texts' n-gram bags) is required. Both are divided by ``temperature``.
        """
        return self.mix_logits(self.deep_logits(ids, lengths), self.wide_logits(bags))

    def wide_logits(self, bags: Bags | None) -> torch.Tensor | None:
        """The wide branch's own logits (B, C), or None without a wide branch."""
        if self.wide is None:
            return None
        if bags is None:
            raise ValueError("this model has a wide n-gram branch: pass the texts' bags")
        return self.wide(bags)

    def mix_logits(self, deep: torch.Tensor, wide: torch.Tensor | None) -> torch.Tensor:
        """Final logits from the two branches' own logits (``forward`` without the branches)."""
        if wide is None:
            return deep / self.temperature
        mix = self.mix.to(deep.dtype)
        mixed = mix * F.log_softmax(wide, dim=-1) + (1 - mix) * F.log_softmax(deep, dim=-1)
        return mixed / self.temperature

    def deep_logits(self, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """The RNN's own logits (B, C), before mixing and temperature."""
        cfg = self.config
        T = ids.shape[1]
        # int64 lengths on the CPU (packing wants them there); clamp guards 0 and > T.
        lengths_cpu = lengths.detach().to("cpu", torch.int64).clamp(1, T)
        x = self.embed_dropout(self.embed(ids))  # (B, T, I)
        if self.resolved_impl(x.device) == "packed":
            out, last = self._packed(x, lengths_cpu)
        else:
            out, last = self._unpacked(x, lengths_cpu.to(x.device))

        parts = []
        if cfg.pooling in ("last", "last+max"):
            parts.append(last)
        if cfg.pooling in ("max", "last+max"):
            steps = torch.arange(T, device=out.device)  # (T,)
            pad = steps[None, :] >= lengths_cpu.to(out.device)[:, None]  # (B, T) True = padding
            out = out.masked_fill(pad[:, :, None], float("-inf"))
            parts.append(out.max(dim=1).values)  # (B, D*H)
        rep = torch.cat(parts, dim=-1) if len(parts) > 1 else parts[0]  # (B, R)
        return self.head(self.head_dropout(rep))  # (B, C)

    def _packed(self, x: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Outputs (B, T, D*H), zeros past each length, and the final states (B, D*H)."""
        T = x.shape[1]
        packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
        packed_out, h_n = self.rnn(packed)
        if isinstance(h_n, tuple):  # LSTM returns (h_n, c_n)
            h_n = h_n[0]
        # h_n: (num_layers * D, B, H), already in the input order (packing un-sorts it).
        # For packed input these are the states at each sequence's true last step (forward)
        # and after reading back to step 0 (backward).
        last = torch.cat([h_n[-2], h_n[-1]], dim=-1) if self.config.bidirectional else h_n[-1]
        if self.config.pooling == "last":
            return x.new_empty(0), last  # outputs unused
        # total_length keeps T even if max(lengths) < T.
        out, _ = pad_packed_sequence(packed_out, batch_first=True, total_length=T)
        return out, last

    def _unpacked(
        self, x: torch.Tensor, lengths: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Same results as ``_packed`` at every valid step, without packing (see the top)."""
        cfg, rnn = self.config, self.rnn
        B, T, _ = x.shape
        steps = torch.arange(T, device=x.device)[None, :]  # (1, T)
        L = lengths[:, None]  # (B, 1)
        # Reverse each row within its length, padding stays put; applying it twice is identity.
        reverse = torch.where(steps < L, L - 1 - steps, steps)  # (B, T)
        rows = torch.arange(B, device=x.device)
        h0 = x.new_zeros(1, B, cfg.hidden_size)
        directions = ("", "_reverse") if cfg.bidirectional else ("",)
        layer_in = x
        for layer in range(cfg.num_layers):
            if layer > 0 and rnn.dropout > 0 and self.training:
                layer_in = F.dropout(layer_in, rnn.dropout, training=True)  # as nn.LSTM does
            outs = []
            for suffix in directions:
                weights = [
                    getattr(rnn, f"{name}_l{layer}{suffix}")
                    for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
                ]
                seq = _time_gather(layer_in, reverse) if suffix else layer_in
                out = self._run_direction(seq, h0, weights)  # (B, T, H)
                outs.append(_time_gather(out, reverse) if suffix else out)
            layer_in = torch.cat(outs, dim=-1) if len(outs) > 1 else outs[0]
        out = layer_in  # (B, T, D*H), aligned; junk past each length
        H = cfg.hidden_size
        last = out[rows, lengths - 1, :H]  # forward: true last step
        if cfg.bidirectional:  # backward: after reading back to step 0
            last = torch.cat([last, out[:, 0, H:]], dim=-1)
        return out, last

    def _run_direction(
        self, seq: torch.Tensor, h0: torch.Tensor, weights: list[torch.Tensor]
    ) -> torch.Tensor:
        """One layer, one direction over the whole batch: torch's own fused CPU recurrence."""
        # Positional args: has_biases, num_layers, dropout, train, bidirectional, batch_first.
        args = (True, 1, 0.0, self.training, False, True)
        cell = self.config.cell
        if cell == "lstm":
            return _VF.lstm(seq, (h0, h0), weights, *args)[0]
        if cell == "gru":
            return _VF.gru(seq, h0, weights, *args)[0]
        return _VF.rnn_tanh(seq, h0, weights, *args)[0]


def count_parameters(model: nn.Module, trainable_only: bool = True) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)
