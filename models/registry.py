"""Model types: name -> class, the bundle's ``model.model_type`` (``zhflow run --model-type``).

Every type is an ``RNNClassifier`` in interface: ``deep_logits(ids, lengths)`` is the
architecture; the wide n-gram branch, the mix of the two and the softmax temperature around
it (``forward``, ``mix_logits``), training, calibration, bundles and scoring are shared. A new
architecture (a CNN, a Transformer encoder) is one file in models/ with a subclass that builds
its layers and overrides ``deep_logits``, plus one line in :data:`MODEL_TYPES` (or
``register_model_type`` from any module imported before the model is built or loaded).

Entries name their class as ``"module:Class"`` so that reading the registry (the CLI's
choices) imports no torch; the class is imported when a model is built.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from zhflow.models.rnn import RNNClassifier, RNNConfig

#: name -> class or "module:Class". "rnn": embedding -> RNN/LSTM/GRU (``--cell``) -> last
#: step + max pool -> linear.
MODEL_TYPES: dict[str, type[RNNClassifier] | str] = {"rnn": "zhflow.models.rnn:RNNClassifier"}


def register_model_type(name: str, cls: type[RNNClassifier] | str) -> None:
    MODEL_TYPES[name] = cls


def model_class(name: str) -> type[RNNClassifier]:
    from zhflow.models.rnn import RNNClassifier

    entry = MODEL_TYPES.get(name)
    if entry is None:
        raise ValueError(f"unknown model type {name!r} (choose from {', '.join(MODEL_TYPES)})")
    if isinstance(entry, str):
        module, _, attribute = entry.partition(":")
        entry = getattr(importlib.import_module(module), attribute)
    if not (isinstance(entry, type) and issubclass(entry, RNNClassifier)):
        raise TypeError(f"model type {name!r} must be an RNNClassifier subclass, got {entry!r}")
    return entry


def build_model(config: RNNConfig) -> RNNClassifier:
    """A fresh model of ``config.model_type``; its init draws from torch's global generator."""
    return model_class(config.model_type)(config)
