"""The training loop: bucketed shuffled batches, AdamW, early stopping, crash-safe checkpoints.

Pure functions, no Prefect: ``tasks/stages.py`` wraps :func:`train_model` in a task.

Reproducibility: the weights depend only on the seed and the data. The model init and dropout
draw from torch's global generator, seeded once from ``TrainConfig.seed``; the batch order of
epoch ``e`` comes from its own generator seeded with ``seed * 1000 + e``. A checkpoint holds the
global generator's state, so a run resumed after a crash ends with exactly the weights of an
uninterrupted one (on CPU; cuDNN kernels need not be bitwise deterministic).
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from zhflow.models import registry
from zhflow.models.rnn import UNCALIBRATED_MIX, RNNClassifier, RNNConfig, count_parameters
from zhflow.models.wide import (
    Bags,
    NgramLinear,
    RaggedBags,
    bag_matrix,
    gather_bags,
    without_word_ngrams,
)
from zhflow.tasks import catalog
from zhflow.tasks.errors import InputError, ZhflowError
from zhflow.tasks.evaluate import macro_f1
from zhflow.tasks.linear import (
    FullBatch,
    LinearFit,
    fit_logistic_path,
    fit_squared_hinge_path,
)
from zhflow.tasks.segment import default_workers  # the usable cores
from zhflow.tasks.storage import atomic_path

CHECKPOINT_NAME = catalog.CHECKPOINT_PT
_CHECKPOINT_FORMAT = 1
# Settings that change where/how fast a run goes but not what it computes: a checkpoint written
# under other values of these may still be resumed.
_RUNTIME_ONLY = ("device", "num_threads")


WIDE_SOLVERS = ("auto", "lbfgs", "adamw")


@dataclass
class TrainConfig:
    epochs: int = 6  # demo: valid F1 0.952 at epoch 5, 0.954 at 7; 6 keeps CPU runs < 10 min
    batch_size: int = 64  # small enough for many updates per epoch, large enough for CPU BLAS
    lr: float = 2e-3  # AdamW's sweet spot for small RNNs; constant (no schedule, see below)
    weight_decay: float = 1e-4  # light: dropout does most of the regularising
    clip_norm: float = 1.0  # RNN gradients can explode on long sequences; 0 disables clipping
    patience: int = 2  # stop after 2 epochs without a better validation macro-F1
    label_smoothing: float = 0.0  # off: it blurs the probabilities the scorer reports
    seed: int = 42  # fixes init, dropout and batch order
    bucket_size_multiplier: int = 50  # buckets of 50 batches: near-uniform lengths, still random
    device: str = "auto"  # cuda when available, else cpu
    # Automatic mixed precision on CUDA (float16 autocast + GradScaler); ignored on the CPU.
    # Off by default: on an H200 (benchmarks/gpu_check.sh) the default model trained at 7,053
    # samples/s in fp32 (cuDNN uses TF32 already) vs 4,668 with AMP at batch 64, and 72k vs
    # 39k at batch 1024: for RNNs this small the casts and scaler cost more than fp16 saves.
    amp: bool = False
    # None = default_train_threads(): half the cores, at most 4. A small RNN's matmuls gain
    # little from more threads, and on a busy 2-core machine 2 OpenMP threads spin-wait on
    # each other: measured 13 samples/s with 2 threads vs 245 with 1 under load.
    num_threads: int | None = None
    # The wide n-gram branch (when the model has one) is fit first, alone (``_train_wide``):
    # "lbfgs" = the exact L2 logistic regression (tasks/linear.py) for each inverse strength
    # C (scikit-learn's meaning) of ``wide_c``; "adamw" = minibatch AdamW stopped early on
    # validation loss; "auto" = both, blended by a weight fitted on the validation split
    # (neither wins on every corpus; see _train_wide).
    wide_solver: str = "auto"
    wide_c: tuple[float, ...] = (1.0, 3.0, 10.0, 30.0)  # log-loss wants 3-10 on the reviews
    wide_max_iter: int = 100  # L-BFGS iterations per C; warm starts need far fewer
    wide_lr: float = 5e-3  # AdamW: best validation loss at epoch 3-4 on waimai; 4x overfit
    wide_epochs: int = 8  # AdamW's upper bound; early stopping (same patience)
    # The squared hinge (LinearSVC's objective) on the characters' n-grams, averaged into the
    # wide branch with this fixed weight (each fit at its own temperature); 0 = off. Fixed,
    # not fitted: the validation log-loss gives a hinge little weight, since its margins are
    # not probabilities, and validation accuracy on a few hundred rows is noise. Its C, from
    # the grid a LinearSVC user searches, is chosen by validation accuracy.
    wide_hinge: float = 0.5
    wide_hinge_c: tuple[float, ...] = (0.1, 0.3, 1.0, 3.0)
    # After training, fit the branches' mix and a softmax temperature on the validation split
    # (minimum log-loss), so `confidence` means what it says. Off = mix 0.5, temperature 1.
    calibrate: bool = True

    def __post_init__(self) -> None:
        for name in (
            "epochs",
            "batch_size",
            "patience",
            "bucket_size_multiplier",
            "wide_max_iter",
            "wide_epochs",
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"TrainConfig.{name} must be a positive integer, got {value!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"TrainConfig.seed must be a non-negative integer, got {self.seed!r}")
        for name in ("lr", "wide_lr"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and value > 0 and math.isfinite(value)):
                raise ValueError(f"TrainConfig.{name} must be a positive number, got {value!r}")
        if self.wide_solver not in WIDE_SOLVERS:
            raise ValueError(f"TrainConfig.wide_solver must be one of {', '.join(WIDE_SOLVERS)}, "
                             f"got {self.wide_solver!r}")  # fmt: skip
        for name in ("wide_c", "wide_hinge_c"):
            grid = tuple(getattr(self, name))  # JSON gives a list
            setattr(self, name, grid)
            if not grid or not all(
                isinstance(c, int | float) and not isinstance(c, bool) and c > 0
                and math.isfinite(c) for c in grid
            ):  # fmt: skip
                raise ValueError(f"TrainConfig.{name} must be positive numbers, got {grid!r}")
        if isinstance(self.wide_hinge, bool) or not (
            isinstance(self.wide_hinge, int | float) and 0 <= self.wide_hinge <= 1
        ):
            raise ValueError(f"TrainConfig.wide_hinge must be in [0, 1], got {self.wide_hinge!r}")
        if not isinstance(self.calibrate, bool):
            raise ValueError(f"TrainConfig.calibrate must be true or false, got {self.calibrate!r}")
        for name in ("weight_decay", "clip_norm"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and value >= 0 and math.isfinite(value)):
                raise ValueError(f"TrainConfig.{name} must be a number >= 0, got {value!r}")
        if not (isinstance(self.label_smoothing, int | float) and 0 <= self.label_smoothing < 1):
            raise ValueError(
                f"TrainConfig.label_smoothing must be in [0, 1), got {self.label_smoothing!r}"
            )
        if self.num_threads is not None and (
            isinstance(self.num_threads, bool)
            or not isinstance(self.num_threads, int)
            or self.num_threads < 1
        ):
            raise ValueError(
                f"TrainConfig.num_threads must be None or a positive integer, "
                f"got {self.num_threads!r}"
            )
        if not isinstance(self.amp, bool):
            raise ValueError(f"TrainConfig.amp must be true or false, got {self.amp!r}")
        if not isinstance(self.device, str) or not self.device:
            raise ValueError(f"TrainConfig.device must be a string, got {self.device!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        unknown = sorted(set(data) - {f.name for f in fields(cls)})
        if unknown:
            raise ValueError(f"unknown TrainConfig keys: {', '.join(unknown)}")
        return cls(**data)


@dataclass
class TrainResult:
    state_dict: dict[str, torch.Tensor]  # the best epoch's weights, on the CPU
    history: list[dict[str, Any]]  # one record per epoch run (resumed epochs included)
    best_epoch: int  # 1-based
    best_valid_macro_f1: float
    seconds: float  # training time over all (resumed) runs
    resumed_from_epoch: int = 0  # last epoch read from a checkpoint; 0 = fresh start
    meta: dict[str, Any] = field(default_factory=dict)  # parameter count, device


# ----------------------------------------------------------------------------- helpers


def default_train_threads() -> int:
    """Torch threads for training: half the usable cores, between 1 and 4."""
    return max(1, min(4, default_workers() // 2))


def pick_device(pref: str = "auto") -> torch.device:
    """``auto`` → cuda when available, else cpu; otherwise the named device, if it exists."""
    if pref == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(pref)
    except RuntimeError as exc:
        raise InputError(f"unknown device {pref!r} (use auto, cpu, cuda or cuda:N)") from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"device {pref!r} requested but CUDA is not available")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise InputError(f"device {pref!r} requested but MPS is not available")
    return device


def build_model(cfg: RNNConfig) -> RNNClassifier:
    """A fresh model of ``cfg.model_type``; its init draws from torch's global generator (seed
    it first)."""
    return registry.build_model(cfg)


def make_batches(
    lengths: np.ndarray | torch.Tensor,
    batch_size: int,
    generator: torch.Generator,
    bucket_mult: int = 50,
) -> list[torch.Tensor]:
    """Index batches of similar length in random order.

    Shuffle all indices, cut them into buckets of ``batch_size * bucket_mult``, sort each bucket
    by length, cut it into batches, then shuffle the order of all batches. Each index appears
    exactly once; the result depends only on ``lengths`` and the generator's state.
    """
    lens = torch.as_tensor(np.asarray(lengths) if not torch.is_tensor(lengths) else lengths)
    lens = lens.detach().to("cpu", torch.int64).reshape(-1)
    if batch_size < 1 or bucket_mult < 1:
        raise ValueError("batch_size and bucket_mult must be positive")
    n = lens.numel()
    perm = torch.randperm(n, generator=generator)
    bucket = batch_size * bucket_mult
    batches: list[torch.Tensor] = []
    for start in range(0, n, bucket):
        idx = perm[start : start + bucket]
        order = torch.sort(lens[idx], stable=True).indices
        batches.extend(idx[order].split(batch_size))
    shuffle = torch.randperm(len(batches), generator=generator).tolist()
    return [batches[i] for i in shuffle]


def collate(
    ids: torch.Tensor, lengths: torch.Tensor, labels: torch.Tensor, index: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Gather one batch and trim its padding to the longest sequence in it."""
    batch_lengths = lengths[index]
    maxlen = int(batch_lengths.max()) if batch_lengths.numel() else 0
    idx = index.to(ids.device)
    return ids[idx, :maxlen], batch_lengths, labels[index.to(labels.device)]


def _check_split(name: str, data: dict[str, torch.Tensor], cfg: RNNConfig) -> None:
    missing = [k for k in ("ids", "lengths", "labels") if k not in data]
    if missing:
        raise InputError(f"{name} split lacks {', '.join(missing)}")
    ids, lengths, labels = data["ids"], data["lengths"], data["labels"]
    n = ids.shape[0]
    if ids.ndim != 2 or lengths.shape != (n,) or labels.shape != (n,):
        raise InputError(
            f"{name} split has inconsistent shapes: ids {tuple(ids.shape)}, "
            f"lengths {tuple(lengths.shape)}, labels {tuple(labels.shape)}"
        )
    if n == 0:
        raise InputError(f"{name} split is empty")
    if int(lengths.min()) < 1 or int(lengths.max()) > ids.shape[1]:
        raise InputError(f"{name} split has lengths outside 1..{ids.shape[1]}")
    if int(labels.min()) < 0 or int(labels.max()) >= cfg.num_classes:
        raise InputError(f"{name} split has labels outside 0..{cfg.num_classes - 1}")
    if int(ids.min()) < 0 or int(ids.max()) >= cfg.vocab_size:
        raise InputError(f"{name} split has token ids outside 0..{cfg.vocab_size - 1}")


#: Inference batches hold at most ``batch_size * 64`` padded tokens: a batch of the longest
#: texts gets fewer rows, so activation memory per batch is bounded whatever the lengths
#: (scoring 1M rows, batches of 512 texts x 200 tokens had peak RSS growing with row count).
TOKENS_PER_ROW = 64


def inference_batches(
    lengths: torch.Tensor, batch_size: int, max_tokens: int | None = None
) -> list[torch.Tensor]:
    """Index batches, longest texts first, each at most ``batch_size`` rows and ``max_tokens``
    padded tokens (rows x its longest length; default ``batch_size * TOKENS_PER_ROW``)."""
    lengths = lengths.detach().to("cpu", torch.int64).reshape(-1)
    budget = max_tokens or batch_size * TOKENS_PER_ROW
    order = torch.argsort(lengths, descending=True, stable=True)
    longest_first = lengths[order].tolist()
    batches, start, n = [], 0, len(longest_first)
    while start < n:
        rows = max(1, min(batch_size, budget // max(1, longest_first[start])))
        batches.append(order[start : start + rows])
        start += rows
    return batches


def split_bags(data: dict[str, torch.Tensor]) -> RaggedBags | None:
    """The n-gram bags stored with an encoded split (``bag_ids``...), or None if it has none."""
    if "bag_ids" not in data:
        return None
    return RaggedBags(
        data["bag_ids"].to(torch.int64),
        data["bag_counts"].to(torch.int64),
        data["bag_weights"].to(torch.float32),
    )


#: What ``batch_logits`` computes: the model's output, or one branch's own logits.
PARTS = ("full", "deep", "wide")


def batch_logits(
    model: Any,  # an RNNClassifier, or any module with its forward signature for ``full``
    ids: torch.Tensor,
    lengths: torch.Tensor,
    bags: Bags | None,
    part: str = "full",
) -> torch.Tensor:
    """One batch's logits: the model's (``full``) or one branch's before the mix."""
    if part == "deep":
        return model.deep_logits(ids, lengths)
    if part == "wide":
        return model.wide_logits(bags)
    return model(ids, lengths, bags)


def predict_logits(
    model: nn.Module,
    ids: torch.Tensor,
    lengths: torch.Tensor,
    batch_size: int,
    device: torch.device,
    bags: RaggedBags | None = None,
    part: str = "full",
    executor: Executor | None = None,
) -> torch.Tensor:
    """The one inference loop: logits (N, C) float32 on the CPU, in input order.

    Batches from ``inference_batches`` (longest first, bounded in rows and padded tokens,
    each trimmed to its longest text). With ``executor`` the batches run on its threads, each
    computed exactly as in the serial path, so the logits are the same; only which thread
    runs a batch changes. The model must be in eval mode."""
    lengths = torch.as_tensor(lengths).detach().to("cpu", torch.int64)
    ids = torch.as_tensor(ids)
    batches = inference_batches(lengths, batch_size)
    starts = bags.starts if bags is not None else None

    def run(index: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():  # thread-local: entered in the thread that computes
            b_lengths = lengths[index]
            b_ids = ids[index.to(ids.device), : int(b_lengths.max())].to(device, non_blocking=True)
            b_bags = gather_bags(bags, index, starts).to(device) if bags is not None else None
            return batch_logits(model, b_ids, b_lengths, b_bags, part).float().cpu()

    if not batches:
        config: Any = getattr(model, "config", None)  # an RNNClassifier knows its width
        return torch.empty(0, int(config.num_classes))
    if executor is None:
        chunks = [run(b) for b in batches]
    else:
        # Longest, shortest, 2nd longest, 2nd shortest...: threads take batches in this order,
        # so a long batch runs beside a short one, not beside the next longest (two of the
        # largest activation buffers at once raised peak memory by ~40%).
        n = len(batches)
        zigzag = [k // 2 if k % 2 == 0 else n - 1 - k // 2 for k in range(n)]
        futures = {i: executor.submit(run, batches[i]) for i in zigzag}
        chunks = [futures[i].result() for i in range(n)]
    out = torch.empty(len(lengths), chunks[0].shape[1])
    out[torch.cat(batches)] = torch.cat(chunks)
    return out


def predict_proba(
    model: nn.Module,
    ids: np.ndarray | torch.Tensor,
    lengths: np.ndarray | torch.Tensor,
    batch_size: int = 512,
    device: torch.device | str | None = None,
    bags: RaggedBags | None = None,
) -> np.ndarray:
    """Softmax probabilities (N, C) float32, in input order. Restores the model's train mode.

    ``bags``: the texts' n-gram bags, required when the model has a wide branch."""
    ids_t = torch.as_tensor(ids)
    lengths_t = torch.as_tensor(lengths)
    if device is None:
        device = next(model.parameters()).device
    device = torch.device(device)
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            logits = predict_logits(model.to(device), ids_t, lengths_t, batch_size, device, bags)
            return F.softmax(logits, dim=-1).numpy().astype(np.float32, copy=False)
    finally:
        model.train(was_training)


def _cpu_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


def _comparable(cfg: TrainConfig) -> dict[str, Any]:
    return {k: v for k, v in cfg.to_dict().items() if k not in _RUNTIME_ONLY}


def _load_checkpoint(
    path: Path, model_config: RNNConfig, train_config: TrainConfig, log: Callable[[str], None]
) -> dict[str, Any] | None:
    if not path.exists():
        return None
    try:
        ckpt = torch.load(path, weights_only=True, map_location="cpu")
    except Exception as exc:  # a torn or foreign file: start over rather than fail
        log(f"ignoring unreadable checkpoint {path}: {exc}")
        return None
    if (
        not isinstance(ckpt, dict)
        or ckpt.get("format") != _CHECKPOINT_FORMAT
        or ckpt.get("model_config") != model_config.to_dict()
        or ckpt.get("train_config") != _comparable(train_config)
    ):
        log(f"ignoring checkpoint {path}: written for other settings")
        return None
    return ckpt


# ----------------------------------------------------------------------------- training


def train_model(
    model_config: RNNConfig,
    train_config: TrainConfig,
    train: dict[str, torch.Tensor],
    valid: dict[str, torch.Tensor],
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
    checkpoint_dir: Path | str | None = None,
    log: Callable[[str], None] | None = print,
    init_embeddings: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> TrainResult:
    """Train with early stopping on validation macro-F1; return the best epoch's weights.

    ``train`` / ``valid`` hold ``ids`` int32 (N, L), ``lengths`` int64 (N,), ``labels`` int64
    (N,). With ``checkpoint_dir`` the state after every epoch is saved to ``checkpoint.pt``
    (tensors and plain containers only) and a later call resumes from it.

    No learning-rate schedule: with early stopping and restoring the best epoch, a constant
    AdamW rate trains these small RNNs as well as warmup/decay and keeps resume trivial.

    ``init_embeddings`` = (vectors (V, E), found (V,) bool): pretrained rows copied into the
    embedding table before training (``zhflow.tasks.pretrain``); rows not found keep their init.
    """
    tc = train_config
    say: Callable[[str], None] = log if log is not None else (lambda _msg: None)
    _check_split("train", train, model_config)
    _check_split("valid", valid, model_config)

    previous_threads = torch.get_num_threads()
    torch.set_num_threads(tc.num_threads or default_train_threads())
    try:
        return _train(
            model_config, tc, train, valid, on_epoch, checkpoint_dir, say, init_embeddings
        )
    finally:
        torch.set_num_threads(previous_threads)


@dataclass
class _Progress:
    """Where a training run stands after an epoch: what a checkpoint holds besides weights."""

    history: list[dict[str, Any]] = field(default_factory=list)
    wide_meta: dict[str, Any] = field(default_factory=dict)
    best_state: dict[str, torch.Tensor] = field(default_factory=dict)
    best_score: float = -1.0
    best_epoch: int = 0
    bad_epochs: int = 0
    start_epoch: int = 1
    prior_seconds: float = 0.0


@dataclass
class _Run:
    """One training run's fixed parts: the model, its optimiser, the data on the device."""

    model: RNNClassifier
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    criterion: nn.Module
    device: torch.device
    use_amp: bool
    train: tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # ids, lengths, labels
    valid: tuple[torch.Tensor, torch.Tensor, torch.Tensor]
    # The RNN's parameters, what the optimiser steps and the gradient norm is clipped over:
    # the wide branch has its own fit (``_train_wide``) and must not scale the RNN's steps.
    deep_params: list[nn.Parameter]


def _train(
    model_config: RNNConfig,
    tc: TrainConfig,
    train: dict[str, torch.Tensor],
    valid: dict[str, torch.Tensor],
    on_epoch: Callable[[dict[str, Any]], None] | None,
    checkpoint_dir: Path | str | None,
    say: Callable[[str], None],
    init_embeddings: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> TrainResult:
    """Seed, build, resume or fit the wide branch, run the epochs, keep the best, calibrate."""
    run = _start_run(model_config, tc, train, valid, init_embeddings)
    ckpt_path = Path(checkpoint_dir) / CHECKPOINT_NAME if checkpoint_dir is not None else None
    ckpt = _load_checkpoint(ckpt_path, model_config, tc, say) if ckpt_path else None
    if ckpt is not None:
        progress = _resume(run, ckpt)
        say(f"resuming from {ckpt_path} after epoch {ckpt['epoch']}")
    else:
        progress = _Progress(best_state=_cpu_state(run.model))
        progress.wide_meta = _train_wide(run.model, tc, train, valid, run.device, say)
    resumed_from = progress.start_epoch - 1
    wide_valid = _wide_valid_logits(run, valid) if on_epoch is not None else None
    n_params = count_parameters(run.model)
    if progress.start_epoch == 1:
        say(
            f"training {model_config.cell} ({n_params:,} parameters) on {run.device}: "
            f"{run.train[0].shape[0]:,} train / {run.valid[0].shape[0]:,} valid samples, "
            f"up to {tc.epochs} epochs"
        )
    started = time.perf_counter()
    for epoch in range(progress.start_epoch, tc.epochs + 1):
        if progress.bad_epochs >= tc.patience:
            break  # a resumed run that had already stopped early
        record, improved, deep_valid = _epoch(run, tc, epoch, progress)
        if ckpt_path is not None:
            seconds = progress.prior_seconds + time.perf_counter() - started
            _save_checkpoint(ckpt_path, run, model_config, tc, epoch, progress, seconds)
        say(
            f"epoch {epoch}/{tc.epochs}  train_loss {record['train_loss']:.4f}  "
            f"valid_loss {record['valid_loss']:.4f}  acc {record['valid_accuracy']:.4f}  "
            f"macro_f1 {record['valid_macro_f1']:.4f}  {record['samples_per_s']:,.0f} samples/s"
            f"  {record['seconds']:.1f}s" + ("  *" if improved else "")
        )
        if on_epoch is not None:
            on_epoch({**record, **_full_scores(run.model, deep_valid, wide_valid, run.valid[2])})
        if progress.bad_epochs >= tc.patience and epoch < tc.epochs:
            say(
                f"early stop: no better macro-F1 for {tc.patience} epochs; "
                f"best epoch {progress.best_epoch}"
            )
            break
    return _finish(run, tc, valid, progress, n_params, resumed_from, started, say)


def _start_run(
    model_config: RNNConfig,
    tc: TrainConfig,
    train: dict[str, torch.Tensor],
    valid: dict[str, torch.Tensor],
    init_embeddings: tuple[torch.Tensor, torch.Tensor] | None,
) -> _Run:
    """Seed every generator, build the model (its init draws from torch's), move the data."""
    device = pick_device(tc.device)
    random.seed(tc.seed)
    np.random.seed(tc.seed % 2**32)
    torch.manual_seed(tc.seed)
    model = build_model(model_config)
    if init_embeddings is not None:
        _copy_embeddings(model, *init_embeddings)
    model = model.to(device)
    # The RNN's parameters only: the wide branch has its own phase (``_train_wide``).
    deep_params = [p for name, p in model.named_parameters() if not name.startswith("wide.")]
    use_amp = tc.amp and device.type == "cuda"
    # Token ids and labels live on the device once; lengths stay on the CPU for packing.
    return _Run(
        model=model,
        optimizer=torch.optim.AdamW(deep_params, lr=tc.lr, weight_decay=tc.weight_decay),
        deep_params=deep_params,
        # Disabled (the CPU), the scaler and autocast are pass-throughs: the same fp32 math.
        scaler=torch.amp.GradScaler("cuda", enabled=use_amp),
        criterion=nn.CrossEntropyLoss(label_smoothing=tc.label_smoothing),
        device=device,
        use_amp=use_amp,
        train=(train["ids"].to(device), train["lengths"].to("cpu", torch.int64),
               train["labels"].to(device, torch.int64)),
        valid=(valid["ids"].to(device), valid["lengths"].to("cpu", torch.int64),
               valid["labels"].to("cpu", torch.int64)),
    )  # fmt: skip


def _resume(run: _Run, ckpt: dict[str, Any]) -> _Progress:
    """Weights, optimiser, scaler, random state and progress as a checkpoint left them."""
    run.model.load_state_dict(ckpt["model"])
    run.optimizer.load_state_dict(ckpt["optimizer"])
    if run.use_amp and ckpt.get("scaler"):
        run.scaler.load_state_dict(ckpt["scaler"])
    torch.set_rng_state(ckpt["torch_rng"])
    if run.device.type == "cuda" and ckpt["cuda_rng"]:
        torch.cuda.set_rng_state_all(ckpt["cuda_rng"])
    return _Progress(
        history=list(ckpt["history"]),
        wide_meta=dict(ckpt.get("wide") or {}),
        best_state=ckpt["best_state_dict"],
        best_score=float(ckpt["best_score"]),
        best_epoch=int(ckpt["best_epoch"]),
        bad_epochs=int(ckpt["bad_epochs"]),
        start_epoch=int(ckpt["epoch"]) + 1,
        prior_seconds=float(ckpt["seconds"]),
    )


def _fit_epoch(run: _Run, tc: TrainConfig, epoch: int) -> float:
    """One pass over the train split (this epoch's own shuffle); the mean training loss."""
    tr_ids, tr_lengths, tr_labels = run.train
    run.model.train()
    gen = torch.Generator().manual_seed(tc.seed * 1000 + epoch)
    batches = make_batches(tr_lengths, tc.batch_size, gen, tc.bucket_size_multiplier)
    loss_sum = torch.zeros((), device=run.device)
    for index in batches:
        ids, lengths, labels = collate(tr_ids, tr_lengths, tr_labels, index)
        run.optimizer.zero_grad(set_to_none=True)
        with torch.autocast(run.device.type, dtype=torch.float16, enabled=run.use_amp):
            loss = run.criterion(run.model.deep_logits(ids, lengths), labels)
        run.scaler.scale(loss).backward()
        if tc.clip_norm > 0:
            run.scaler.unscale_(run.optimizer)  # clip the true gradients, not the scaled ones
            nn.utils.clip_grad_norm_(run.deep_params, tc.clip_norm)
        run.scaler.step(run.optimizer)  # skips the step if the scaled gradients overflowed
        run.scaler.update()
        loss_sum += loss.detach() * len(index)
    train_loss = float(loss_sum) / tr_ids.shape[0]
    if not math.isfinite(train_loss):
        raise ZhflowError(f"training diverged at epoch {epoch} (loss {train_loss}); try a lower lr")
    return train_loss


def _wide_valid_logits(run: _Run, valid: dict[str, torch.Tensor]) -> torch.Tensor | None:
    """For a listener only (pruning a search on the whole model's score): the wide branch is
    fixed by now, so its validation logits are computed once. Nothing here touches the
    weights or a generator: training is the same with or without a listener."""
    if run.model.wide is None:
        return None
    va_ids, va_lengths, _ = run.valid
    with torch.inference_mode():
        return predict_logits(run.model.eval(), va_ids, va_lengths, 512, run.device,
                              split_bags(valid), "wide")  # fmt: skip


def _validate(run: _Run) -> tuple[dict[str, float], torch.Tensor]:
    """The RNN's own loss, accuracy and macro-F1 on the validation split, and its logits."""
    va_ids, va_lengths, va_labels = run.valid
    run.model.eval()
    with torch.inference_mode():
        logits = predict_logits(run.model, va_ids, va_lengths, 512, run.device, part="deep")
    preds = logits.argmax(dim=-1).numpy()
    y_true = va_labels.numpy()
    return {
        "valid_loss": float(F.cross_entropy(logits, va_labels)),
        "valid_accuracy": float((preds == y_true).mean()),
        "valid_macro_f1": macro_f1(y_true, preds, run.model.config.num_classes),
    }, logits


def _epoch(
    run: _Run, tc: TrainConfig, epoch: int, progress: _Progress
) -> tuple[dict[str, Any], bool, torch.Tensor]:
    """Train one epoch, validate, keep the weights if macro-F1 improved; the record, whether
    it improved, and the RNN's validation logits."""
    t0 = time.perf_counter()
    train_loss = _fit_epoch(run, tc, epoch)
    train_seconds = time.perf_counter() - t0
    scores, logits = _validate(run)
    record = {
        "epoch": epoch,
        "train_loss": train_loss,
        **scores,
        "samples_per_s": run.train[0].shape[0] / train_seconds if train_seconds > 0
        else float("inf"),
        "seconds": time.perf_counter() - t0,
    }  # fmt: skip
    progress.history.append(record)
    improved = scores["valid_macro_f1"] > progress.best_score
    if improved:
        progress.best_score, progress.best_epoch = scores["valid_macro_f1"], epoch
        progress.bad_epochs = 0
        progress.best_state = _cpu_state(run.model)
    else:
        progress.bad_epochs += 1
    return record, improved, logits


def _save_checkpoint(
    path: Path,
    run: _Run,
    model_config: RNNConfig,
    tc: TrainConfig,
    epoch: int,
    progress: _Progress,
    seconds: float,
) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        torch.save(
            {
                "format": _CHECKPOINT_FORMAT,
                "model_config": model_config.to_dict(),
                "train_config": _comparable(tc),
                "epoch": epoch,
                "model": _cpu_state(run.model),
                "optimizer": run.optimizer.state_dict(),
                "scaler": run.scaler.state_dict() if run.use_amp else {},
                "best_state_dict": progress.best_state,
                "best_score": progress.best_score,
                "best_epoch": progress.best_epoch,
                "bad_epochs": progress.bad_epochs,
                "wide": progress.wide_meta,
                "history": progress.history,
                "seconds": seconds,
                "torch_rng": torch.get_rng_state(),
                "cuda_rng": torch.cuda.get_rng_state_all() if run.device.type == "cuda" else [],
            },
            tmp,
        )


def _finish(
    run: _Run,
    tc: TrainConfig,
    valid: dict[str, torch.Tensor],
    progress: _Progress,
    n_params: int,
    resumed_from: int,
    started: float,
    say: Callable[[str], None],
) -> TrainResult:
    """The best epoch's weights, calibrated on the validation split."""
    run.model.load_state_dict(progress.best_state)
    meta: dict[str, Any] = {"parameters": n_params, "device": str(run.device), "amp": run.use_amp}
    if progress.wide_meta:
        meta["wide"] = progress.wide_meta
    if tc.calibrate:
        meta["calibration"] = calibrate(run.model, valid, run.device)
        say(f"calibrated on the valid split: {meta['calibration']}")
        if meta["calibration"].get("separated"):
            say("the valid split is separated without an error, so it cannot say how sure the "
                "model is: temperature kept at 1")  # fmt: skip
    return TrainResult(
        state_dict=_cpu_state(run.model),
        history=progress.history,
        best_epoch=progress.best_epoch,
        best_valid_macro_f1=progress.best_score,
        seconds=progress.prior_seconds + time.perf_counter() - started,
        resumed_from_epoch=resumed_from,
        meta=meta,
    )


def _full_scores(
    model: RNNClassifier, deep: torch.Tensor, wide: torch.Tensor | None, labels: torch.Tensor
) -> dict[str, float]:
    """Validation accuracy and macro-F1 of the RNN mixed with the wide branch (the mix as it
    stands, 0.5 before calibration); nothing without a wide branch (the RNN's are the model's)."""
    if wide is None:
        return {}
    with torch.inference_mode():
        preds = model.mix_logits(deep, wide).argmax(dim=-1).numpy()
    y_true = labels.numpy()
    return {
        "valid_full_accuracy": float((preds == y_true).mean()),
        "valid_full_macro_f1": macro_f1(y_true, preds, model.config.num_classes),
    }


def _copy_embeddings(model: RNNClassifier, vectors: torch.Tensor, found: torch.Tensor) -> None:
    if model.embedding is None:
        raise InputError("pretrained embeddings need --input embedding")
    table = model.embedding.weight
    if tuple(vectors.shape) != tuple(table.shape) or found.shape != (table.shape[0],):
        raise InputError(
            f"pretrained embeddings are {tuple(vectors.shape)}, the model's table is "
            f"{tuple(table.shape)}"
        )
    with torch.no_grad():
        table[found] = vectors[found].to(table.dtype)


@dataclass
class WideProblem:
    """What fitting the wide branch needs: both splits' bags and labels, on one device."""

    train_bags: RaggedBags
    train_labels: torch.Tensor  # (N,) int64, on ``device``
    valid_bags: RaggedBags
    valid_labels: torch.Tensor  # (M,) int64, on ``device``
    device: torch.device

    def valid_logits(self, wide: NgramLinear) -> torch.Tensor:
        rows = torch.arange(self.valid_labels.shape[0])
        return wide(gather_bags(self.valid_bags, rows).to(self.device))  # (M, C)


@dataclass
class WideFit:
    """The wide branch fitted on one view of the n-grams: its table, figures, valid logits."""

    meta: dict[str, Any]
    state: dict[str, torch.Tensor]
    valid_logits: torch.Tensor  # (M, C)


#: The wide branch's two views of a text's n-grams: all of them, and the characters alone.
WIDE_VIEWS = ("words+chars", "chars")


def wide_views(
    train: dict[str, torch.Tensor], valid: dict[str, torch.Tensor]
) -> dict[str, tuple[RaggedBags, RaggedBags]]:
    """(train, valid) bags per view: ``words+chars`` always, ``chars`` (word n-grams dropped)
    when the splits say which entries are word n-grams and both kinds occur in train."""
    tr_bags, va_bags = split_bags(train), split_bags(valid)
    if tr_bags is None or va_bags is None:
        raise InputError("the model has a wide n-gram branch but the splits carry no n-gram bags")
    views = {WIDE_VIEWS[0]: (tr_bags, va_bags)}
    if "bag_word_counts" in train and "bag_word_counts" in valid:
        words = int(train["bag_word_counts"].sum())
        if 0 < words < tr_bags.ids.shape[0]:
            views[WIDE_VIEWS[1]] = (
                without_word_ngrams(tr_bags, train["bag_word_counts"]),
                without_word_ngrams(va_bags, valid["bag_word_counts"]),
            )
    return views


def _train_wide(
    model: RNNClassifier,
    tc: TrainConfig,
    train: dict[str, torch.Tensor],
    valid: dict[str, torch.Tensor],
    device: torch.device,
    say: Callable[[str], None],
) -> dict[str, Any]:
    """Fit the wide branch alone on each view of the n-grams (:func:`wide_views`), and blend
    the two fits, ``w · (words+chars) + (1 − w) · chars``, with ``w`` fitted on the
    validation split (:func:`choose_blend`).

    Word n-grams help on most corpora and hurt on short texts: on a corpus of 16-character
    product snippets (10 classes) the characters alone were 1 point more accurate, and the
    blend's weight followed them; on the shared review corpora the two views are within 0.25
    points, either way, and the validation split cannot always tell which (picking the lower
    validation loss lost 0.24 points on one online_shopping split), so they are blended
    rather than picked (docs/BENCHMARKS.md). A character-only fit is the full model with its
    word rows at zero, so the blend is still one (F, C) table.

    Then, unless ``wide_hinge`` is 0, the squared hinge (LinearSVC's objective) on the
    characters' view is averaged in at that fixed weight, each fit divided by its own best
    validation temperature (:func:`_average_tempered`). TF-IDF + LinearSVC's edge over a
    logistic fit is its loss, not its features (the same figures on zhflow's own bags);
    it is largest on small corpora, where the RNN adds little (docs/BENCHMARKS.md).
    Deterministic without touching torch's global generator, so the RNN trained after it is
    the same with or without it."""
    wide = model.wide
    if wide is None:
        return {}
    labels = (train["labels"].to(device, torch.int64), valid["labels"].to(device, torch.int64))
    t0 = time.perf_counter()
    problems = {view: WideProblem(tr_bags, labels[0], va_bags, labels[1], device)
                for view, (tr_bags, va_bags) in wide_views(train, valid).items()}  # fmt: skip
    fits = {view: _fit_wide_view(wide, tc, problem, _prefixed(say, f"[{view}] "))
            for view, problem in problems.items()}  # fmt: skip
    wide.zero_grad(set_to_none=True)  # AdamW's last batch: an (F, C) tensor nothing reads
    out: dict[str, Any] = {"views": {v: f.meta for v, f in fits.items()}}
    if len(fits) == 1:
        ((out["view"], logistic),) = fits.items()
    else:
        full, chars = fits[WIDE_VIEWS[0]], fits[WIDE_VIEWS[1]]
        weight, loss, logistic = _blend_fits(full, chars, labels[1])
        losses = ", ".join(f"{v} {f.meta['valid_loss']:.4f}" for v, f in fits.items())
        say(f"wide branch: {weight:g} x words+chars + {1 - weight:g} x chars (valid loss "
            f"{losses}; blend {loss:.4f})")  # fmt: skip
        out["view"] = {1.0: WIDE_VIEWS[0], 0.0: WIDE_VIEWS[1]}.get(weight, "blend")
        out["view_blend"] = {"words_weight": weight, "valid_loss": loss}
    kept = logistic
    if tc.wide_hinge > 0:
        view = WIDE_VIEWS[1] if WIDE_VIEWS[1] in problems else WIDE_VIEWS[0]
        hinge = _fit_wide_hinge(wide, tc, problems[view], _prefixed(say, f"[{view}] "))
        kept, mixed = _average_tempered(logistic, hinge, labels[1], tc.wide_hinge)
        out["hinge"] = {**mixed, "view": view, **hinge.meta}
        say(f"wide branch: {1 - tc.wide_hinge:g} x logistic / {mixed['logistic_temperature']:.3g}"
            f" + {tc.wide_hinge:g} x squared hinge (C={hinge.meta['c']:g}) / "
            f"{mixed['hinge_temperature']:.3g}")  # fmt: skip
    wide.load_state_dict(kept.state)
    return out | {"seconds": time.perf_counter() - t0}


def _prefixed(say: Callable[[str], None], prefix: str) -> Callable[[str], None]:
    return lambda message: say(prefix + message)


def _fit_wide_view(
    wide: NgramLinear, tc: TrainConfig, problem: WideProblem, say: Callable[[str], None]
) -> WideFit:
    """Fit ``wide`` on one view two ways, and blend the two fits on the validation split.

    - ``lbfgs``: the L2 logistic regression's optimum for each C (tasks/linear.py);
    - ``adamw``: minibatch AdamW from zero, stopped early on validation loss.

    Neither wins everywhere: on ChnSentiCorp_htl_all (6k train texts) the exact L2 fit is
    0.5 points more accurate, on the demo corpus (28k texts, 500k n-grams) early-stopped
    AdamW is 1 point more accurate (docs/BENCHMARKS.md). Picking one by validation loss was
    wrong on small validation splits (776 rows); their blend (:func:`choose_blend`) was at
    least as good as the better one on average, and it is still one linear model. Both fits
    are cheap beside the RNN. Leaves ``wide`` holding the last fit; the blend is returned."""
    solvers = ("lbfgs", "adamw") if tc.wide_solver == "auto" else (tc.wide_solver,)
    fits = {}
    for solver in solvers:
        wide.reset_parameters()
        fit_wide = _fit_wide_lbfgs if solver == "lbfgs" else _fit_wide_adamw
        meta = fit_wide(wide, tc, problem, say)
        with torch.inference_mode():
            logits = problem.valid_logits(wide)  # (M, C)
        state = {k: v.detach().clone() for k, v in wide.state_dict().items()}
        fits[solver] = WideFit(meta, state, logits)
    out: dict[str, Any] = {k: f.meta for k, f in fits.items()}
    if len(fits) == 1:
        (fit,) = fits.values()
        return WideFit({"solver": solvers[0], **out, "valid_loss": fit.meta["valid_loss"]},
                       fit.state, fit.valid_logits)  # fmt: skip
    exact, early = fits["lbfgs"], fits["adamw"]
    weight, loss, blended = _blend_fits(exact, early, problem.valid_labels)
    say(f"wide branch: {weight:g} x lbfgs + {1 - weight:g} x adamw (valid loss "
        + ", ".join(f"{k} {f.meta['valid_loss']:.4f}" for k, f in fits.items())
        + f"; blend {loss:.4f} at its best temperature)")  # fmt: skip
    solver = {1.0: "lbfgs", 0.0: "adamw"}.get(weight, "blend")
    meta = {"solver": solver, "blend": {"lbfgs_weight": weight, "valid_loss": loss}, **out,
            "valid_loss": loss}  # fmt: skip
    return WideFit(meta, blended.state, blended.valid_logits)


def _blend_fits(
    first: WideFit, second: WideFit, labels: torch.Tensor
) -> tuple[float, float, WideFit]:
    """:func:`choose_blend`'s weight and loss for two fits, and their blended table and
    validation logits (linear in the table, so blended the same way)."""
    weight, loss = choose_blend(first.valid_logits, second.valid_logits, labels)
    state = {k: weight * first.state[k] + (1 - weight) * second.state[k] for k in first.state}
    logits = weight * first.valid_logits + (1 - weight) * second.valid_logits
    return weight, loss, WideFit({}, state, logits)


#: Candidate weights of the first fit in a blend of two (the exact fit; the words+chars view).
BLEND_GRID = tuple(k / 10 for k in range(11))


def choose_blend(
    first: torch.Tensor, second: torch.Tensor, labels: torch.Tensor
) -> tuple[float, float]:
    """The weight w of ``BLEND_GRID`` whose blend ``w * first + (1 - w) * second`` of two
    linear models' validation logits (M, C) has the lowest log-loss, and that loss: the
    exact and the early-stopped fit of one view, then the two views' blends.

    The blend of two linear models' logits is the linear model with the blended weights, so
    the wide branch stays one table. Each w is scored at its best temperature
    (:func:`fit_temperature`): the two fits differ in scale, and the model's temperature is
    fitted later anyway; what is compared is how well each blend ranks the classes."""
    best: tuple[float, float] | None = None  # (loss, weight)
    for weight in BLEND_GRID:
        _, loss = fit_temperature(weight * first + (1 - weight) * second, labels)
        if best is None or loss < best[0] - 1e-9:
            best = (loss, weight)
    assert best is not None
    return best[1], best[0]


def _fit_full_batch(
    fit_path: Callable[[FullBatch, tuple[float, ...], int], LinearFit], wide: NgramLinear,
    problem: WideProblem, cs: tuple[float, ...], max_iter: int,
) -> LinearFit:  # fmt: skip
    """One of tasks/linear.py's paths over ``problem``'s rows as sparse CSR matrices."""
    num_features, num_classes = wide.bag.weight.shape
    data = FullBatch.of(
        bag_matrix(problem.train_bags, num_features).to(problem.device),  # (N, F)
        problem.train_labels,
        bag_matrix(problem.valid_bags, num_features).to(problem.device),  # (M, F)
        problem.valid_labels,
        num_classes,
    )
    return fit_path(data, cs, max_iter)


def _fit_wide_lbfgs(
    wide: NgramLinear, tc: TrainConfig, problem: WideProblem, say: Callable[[str], None]
) -> dict[str, Any]:
    fit = _fit_full_batch(fit_logistic_path, wide, problem, tc.wide_c, tc.wide_max_iter)
    for step in fit.path:
        say(f"wide lbfgs C={step['c']:g}  valid_loss {step['valid_loss']:.4f}  "
            f"acc {step['valid_accuracy']:.4f}  ({step['evaluations']} evaluations)")  # fmt: skip
    with torch.no_grad():
        wide.bag.weight.copy_(fit.weight)
        wide.bias.copy_(fit.bias)
    best = min(fit.path, key=lambda p: p["valid_loss"])
    return {"c": fit.c, "path": fit.path, "valid_loss": best["valid_loss"]}


def _fit_wide_hinge(
    wide: NgramLinear, tc: TrainConfig, problem: WideProblem, say: Callable[[str], None]
) -> WideFit:
    """The L2 squared hinge (LinearSVC's objective) for each C of ``wide_hinge_c``, the most
    accurate on the validation split kept (tasks/linear.py)."""
    fit = _fit_full_batch(fit_squared_hinge_path, wide, problem, tc.wide_hinge_c,
                          tc.wide_max_iter)  # fmt: skip
    for step in fit.path:
        say(f"wide squared hinge C={step['c']:g}  acc {step['valid_accuracy']:.4f}  "
            f"({step['evaluations']} evaluations)")  # fmt: skip
    state = {"bag.weight": fit.weight, "bias": fit.bias}
    with torch.no_grad():
        wide.load_state_dict(state)
    with torch.inference_mode():
        logits = problem.valid_logits(wide)  # (M, C) margins
    return WideFit({"c": fit.c, "path": fit.path}, state, logits)


def _average_tempered(
    first: WideFit, second: WideFit, labels: torch.Tensor, weight: float
) -> tuple[WideFit, dict[str, float]]:
    """``(1 - weight) · first / T1 + weight · second / T2``, each fit divided by its own
    best temperature on the validation split (:func:`fit_temperature`), so that two fits of
    different scales (log-odds, hinge margins) count as ``weight`` says. Linear in the
    tables, so still one (F, C) table."""
    t1, _ = fit_temperature(first.valid_logits, labels)
    t2, _ = fit_temperature(second.valid_logits, labels)
    a, b = (1 - weight) / t1, weight / t2
    state = {k: a * first.state[k] + b * second.state[k] for k in first.state}
    logits = a * first.valid_logits + b * second.valid_logits  # (M, C)
    _, loss = fit_temperature(logits, labels)
    return WideFit({}, state, logits), {"weight": weight, "logistic_temperature": t1,
                                        "hinge_temperature": t2, "valid_loss": loss}  # fmt: skip


def _fit_wide_adamw(
    wide: NgramLinear, tc: TrainConfig, problem: WideProblem, say: Callable[[str], None]
) -> dict[str, Any]:
    """Batch order from its own generator; the epoch with the lowest validation loss kept."""
    bags, labels = problem.train_bags, problem.train_labels
    starts = bags.starts
    optimizer = torch.optim.AdamW(wide.parameters(), lr=tc.wide_lr, weight_decay=0.0)
    best_loss, best_epoch, bad, history = math.inf, 0, 0, []
    best = {k: v.detach().clone() for k, v in wide.state_dict().items()}
    for epoch in range(1, tc.wide_epochs + 1):
        gen = torch.Generator().manual_seed(tc.seed * 1000 + 500 + epoch)
        for index in torch.randperm(len(labels), generator=gen).split(tc.batch_size):
            batch = gather_bags(bags, index, starts).to(problem.device)
            loss = F.cross_entropy(wide(batch), labels[index.to(problem.device)])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        with torch.inference_mode():
            logits = problem.valid_logits(wide)
        valid_loss = float(F.cross_entropy(logits, problem.valid_labels))
        accuracy = float((logits.argmax(-1) == problem.valid_labels).float().mean())
        history.append({"epoch": epoch, "valid_loss": valid_loss, "valid_accuracy": accuracy})
        say(f"wide adamw epoch {epoch}/{tc.wide_epochs}  valid_loss {valid_loss:.4f}  "
            f"acc {accuracy:.4f}")  # fmt: skip
        if valid_loss < best_loss:
            best_loss, best_epoch, bad = valid_loss, epoch, 0
            best = {k: v.detach().clone() for k, v in wide.state_dict().items()}
        else:
            bad += 1
            if bad >= tc.patience:
                break
    wide.load_state_dict(best)
    return {"epochs": history, "best_epoch": best_epoch, "valid_loss": best_loss}


#: Candidate weights of the wide branch in the mix, and temperatures (log-spaced, 0.05..20).
MIX_GRID = tuple(round(k / 20, 2) for k in range(21))
TEMPERATURE_GRID = tuple(float(t) for t in np.exp(np.linspace(np.log(0.05), np.log(20.0), 121)))


def fit_temperature(logits: torch.Tensor, labels: torch.Tensor) -> tuple[float, float]:
    """The temperature of ``TEMPERATURE_GRID`` with the lowest log-loss, and that loss.

    A grid, not an optimiser: deterministic, and one-dimensional, so exhaustive is cheap."""
    losses = [float(F.cross_entropy(logits / t, labels)) for t in TEMPERATURE_GRID]
    k = int(np.argmin(losses))
    return TEMPERATURE_GRID[k], losses[k]


def calibrate(
    model: RNNClassifier, valid: dict[str, torch.Tensor], device: torch.device
) -> dict[str, Any]:
    """Fit the mix (with a wide branch) and the temperature on the validation split.

    Each candidate mix gets its best temperature; the pair with the lowest validation
    log-loss wins. Sets the model's ``mix`` and ``temperature`` buffers; returns the figures.
    """
    labels = valid["labels"].to("cpu", torch.int64)
    bags = split_bags(valid)
    model.eval()  # a resumed, already finished run never ran an epoch: still in train mode
    with torch.inference_mode():
        deep = predict_logits(model, valid["ids"], valid["lengths"], 512, device, bags, "deep")
        wide = (
            predict_logits(model, valid["ids"], valid["lengths"], 512, device, bags, "wide")
            if model.wide is not None
            else None
        )
    model.temperature.fill_(1.0)

    def mixed(mix: float) -> torch.Tensor:  # the model's own mixing, at temperature 1
        if wide is not None:
            model.mix.fill_(mix)
        return model.mix_logits(deep, wide)

    raw_loss = float(F.cross_entropy(mixed(UNCALIBRATED_MIX), labels))
    fit = fit_mix_and_temperature(mixed, labels, MIX_GRID if wide is not None else (1.0,))
    with torch.no_grad():
        model.temperature.fill_(fit.temperature)
        if model.wide is not None:
            model.mix.fill_(fit.mix)
    out: dict[str, Any] = {"temperature": round(fit.temperature, 4),
                           "valid_nll_before": round(raw_loss, 4),
                           "valid_nll_after": round(fit.loss, 4)}  # fmt: skip
    if wide is not None:
        out["mix"] = fit.mix
    if fit.separated:
        out["separated"] = True  # the temperature was kept at 1 (fit_mix_and_temperature)
    return out


@dataclass(frozen=True)
class Calibration:
    mix: float
    temperature: float
    loss: float  # validation log-loss at this mix and temperature
    separated: bool  # the validation split did not bound the temperature: kept at 1


def fit_mix_and_temperature(
    mixed: Callable[[float], torch.Tensor], labels: torch.Tensor, mixes: tuple[float, ...]
) -> Calibration:
    """The mix of ``mixes`` and temperature with the lowest validation log-loss; ``mixed(m)``
    gives the validation logits (M, C) at mix ``m`` and temperature 1.

    A validation split the model separates (every row right, with room to spare) does not
    bound the temperature from below: its log-loss keeps falling as the temperature shrinks,
    down to the grid's floor, where every confidence rounds to 1.0 (seen on small corpora).
    Nothing in a few dozen right answers says the model is that sure of the next text, so
    then the temperature stays at 1 (the model as trained) and the mix is chosen at it."""
    best: tuple[float, float, float] | None = None  # (loss, mix, temperature)
    for mix in mixes:
        temperature, loss = fit_temperature(mixed(mix), labels)
        if best is None or loss < best[0] - 1e-9:
            best = (loss, mix, temperature)
    assert best is not None
    if best[2] > TEMPERATURE_GRID[0]:
        return Calibration(best[1], best[2], best[0], separated=False)
    at_one = [(float(F.cross_entropy(mixed(mix), labels)), mix) for mix in mixes]
    loss, mix = min(at_one, key=lambda pair: pair[0])  # the first of equal losses
    return Calibration(mix, 1.0, loss, separated=True)
