"""The model bundle: one folder with everything needed to score new text, and nothing pickled.

```
bundle/
  weights.safetensors   model weights (safetensors: a tensor container that cannot run code)
  config.json           format, model config, tokenizer spec + identity, max_len, versions
  vocab.parquet         id, token, count, doc_freq
  labels.json           {"labels": [...]}: class id -> label
  metrics.json          test-split metrics of this model
  user_dict.txt         copies of the tokenizer's user dictionary / stopwords, when used
  stopwords.txt
  _manifest.json        size + sha256 of every file
```
Loading re-hashes every file against the manifest and checks that the parts agree with each
other and with this installation (tokenizer engine version), so an altered, truncated or
mismatched bundle is refused with one clear line instead of producing wrong predictions.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from zhflow.models import registry
from zhflow.models.ensemble import MeanEnsemble
from zhflow.models.rnn import RNNClassifier, RNNConfig
from zhflow.tasks import catalog
from zhflow.tasks.encode import load_label_map, save_label_map
from zhflow.tasks.errors import BundleError
from zhflow.tasks.features import NgramFeaturizer, NgramSpec
from zhflow.tasks.segment import TokenizerSpec
from zhflow.tasks.storage import (
    MANIFEST,
    manifest_problem,
    sha256_file,
    verify_artifact,
    write_json_atomic,
)
from zhflow.tasks.tables import featurizer_from_table

BUNDLE_FORMAT = "zhflow-bundle/1"
FEATURES = catalog.FEATURES_PARQUET
REQUIRED = (
    catalog.WEIGHTS_SAFETENSORS,
    catalog.CONFIG_JSON,
    catalog.VOCAB_PARQUET,
    catalog.LABELS_JSON,
    MANIFEST,
)


@dataclass
class Bundle:
    """A loaded, verified bundle: ready-to-run model plus its tokenizer, vocab and labels."""

    path: Path
    model: RNNClassifier | MeanEnsemble  # one classifier, or a seed ensemble of them
    config: dict[str, Any]
    tokenizer: TokenizerSpec
    vocab: pl.DataFrame
    labels: list[str]
    max_len: int
    digest: str
    featurizer: NgramFeaturizer | None = None  # the wide branch's input, when it has one


def write_bundle(
    out: Path,
    state_dict: dict[str, torch.Tensor],
    model_config: RNNConfig,
    tokenizer: TokenizerSpec,
    vocab: pl.DataFrame,
    labels: list[str],
    max_len: int,
    metrics: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
    features: tuple[pl.DataFrame, dict[str, Any]] | None = None,
) -> None:
    """Write a bundle's files into ``out`` (an artifact folder the caller moves into place).

    ``features``: the wide branch's feature table and its ``NgramSpec`` dict."""
    out.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().cpu().contiguous() for k, v in state_dict.items()},
              str(out / catalog.WEIGHTS_SAFETENSORS))  # fmt: skip
    spec = tokenizer.to_dict()
    for field, name in (("user_dict", catalog.USER_DICT_TXT), ("stopwords", catalog.STOPWORDS_TXT)):
        if spec[field]:
            shutil.copyfile(spec[field], out / name)
            spec[field] = name  # relative to the bundle, resolved on load
    vocab.write_parquet(out / catalog.VOCAB_PARQUET)
    save_label_map(out / catalog.LABELS_JSON, labels)
    if metrics is not None:
        write_json_atomic(out / catalog.METRICS_JSON, metrics)
    config = {
        "format": BUNDLE_FORMAT,
        "model": model_config.to_dict(),
        "tokenizer": {"spec": spec, "identity": tokenizer.identity()},
        "max_len": max_len,
        "num_labels": len(labels),
        "vocab_size": vocab.height,
        "torch_version": torch.__version__,
        **(extra or {}),
    }
    if features is not None:
        features[0].write_parquet(out / FEATURES)
        config["wide"] = {"spec": dict(features[1]), "num_features": features[0].height}
    write_json_atomic(out / catalog.CONFIG_JSON, config)


def _fail(path: Path, why: str) -> BundleError:
    return BundleError(f"{path}: refused model bundle: {why}")


#: What reading a malformed config, vocab or labels file can raise.
_UNREADABLE = (ValueError, KeyError, TypeError, AttributeError, OSError, pl.exceptions.PolarsError)


def _read_manifest(path: Path) -> dict[str, Any]:
    """The manifest, checked before any file it lists is opened (see manifest_problem)."""
    try:
        manifest = json.loads((path / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise _fail(path, f"{MANIFEST} is unreadable ({exc})") from None
    problem = manifest_problem(path, manifest)
    if problem:
        raise _fail(path, problem)
    unlisted = [name for name in REQUIRED if name != MANIFEST and name not in manifest["files"]]
    if unlisted:
        raise _fail(path, f"{', '.join(unlisted)} not listed in {MANIFEST}")
    return manifest


def check_sealed(path: str | Path) -> dict[str, Any]:
    """The bundle's manifest, once the folder has the required files and every manifest
    entry is a plain file inside it. Cheap (nothing hashed, no listed file opened): the CLI
    runs it before a Prefect server starts; :func:`load_bundle` runs it first."""
    path = Path(path)
    missing = [name for name in REQUIRED if not (path / name).is_file()]
    if missing:
        raise _fail(path, why_no_bundle(path, missing))
    return _read_manifest(path)


def why_no_bundle(path: Path, missing: list[str]) -> str:
    """Why ``path``, lacking the bundle files ``missing``, is no bundle, said for what it is."""
    if not path.is_dir():
        return "a file, not a bundle folder" if path.exists() else "no such directory"
    if (path / catalog.LATEST_RUN).is_file():  # resolve_bundle found no bundle named there
        return (f"a work dir whose {catalog.LATEST_RUN} names no bundle (unreadable, or from an "
                "older version: a full `zhflow run` there rewrites it)")  # fmt: skip
    if (path / catalog.CACHE_DIR).is_dir():
        return "a work dir with no trained bundle yet (its runs so far stopped with --until)"
    return f"missing {', '.join(missing)}"


def _check_files(path: Path) -> tuple[str, set[str]]:
    """The bundle's digest and the names its manifest lists, once every listed file is
    a plain file inside the bundle and matches its size and hash."""
    manifest = check_sealed(path)
    digest = verify_artifact(path, deep=True)
    if digest is None:
        changed = [
            rel for rel, meta in manifest["files"].items()
            if (path / rel).stat().st_size != meta["size"]
            or sha256_file(path / rel) != meta["sha256"]
        ]  # fmt: skip
        raise _fail(
            path, f"{', '.join(changed) or MANIFEST} altered or truncated since it was written"
        )
    return digest, set(manifest["files"])


def _check_parts(path: Path, config: dict[str, Any], labels: list[str], listed: set[str]) -> None:
    """The config and labels make sense on their own (a re-sealed bundle can say anything)."""
    max_len = config.get("max_len")
    if isinstance(max_len, bool) or not isinstance(max_len, int) or max_len < 1:
        raise _fail(path, f"config.json: max_len must be an integer >= 1, got {max_len!r}")
    if not labels:
        raise _fail(path, "labels.json: no labels")
    if any(not label for label in labels):
        raise _fail(path, "labels.json: a label is empty")
    repeated = sorted({label for label in labels if labels.count(label) > 1})
    if repeated:
        raise _fail(path, f"labels.json: labels repeat ({', '.join(map(repr, repeated))})")
    if config.get("num_labels", len(labels)) != len(labels):
        raise _fail(
            path, f"config.json says {config.get('num_labels')!r} labels, labels.json has "
            f"{len(labels)}"
        )  # fmt: skip
    if config["model"].get("wide_features") and FEATURES not in listed:
        raise _fail(path, f"the model has a wide n-gram branch but no {FEATURES} in {MANIFEST}")
    spec = config["tokenizer"]["spec"]
    for field in ("user_dict", "stopwords"):
        name = spec.get(field)
        if name and (not isinstance(name, str) or name not in listed):
            raise _fail(path, f"config.json: {field} {name!r} is not a file listed in {MANIFEST}")


def _resolve_tokenizer(path: Path, tok: dict[str, Any]) -> TokenizerSpec:
    spec = dict(tok["spec"])
    for field in ("user_dict", "stopwords"):
        if spec.get(field):
            spec[field] = str(path / spec[field])
    tokenizer = TokenizerSpec.from_dict(spec)
    have, want = tokenizer.identity(), tok["identity"]
    diff = sorted(k for k in set(have) | set(want) if have.get(k) != want.get(k))
    if diff:
        details = ", ".join(f"{k}: bundle {want.get(k)!r}, here {have.get(k)!r}" for k in diff)
        raise _fail(path, f"tokenizer differs from the one it was trained with ({details})")
    return tokenizer


Model = RNNClassifier | MeanEnsemble

#: Networks a long-lived process loaded ahead of time (the warm worker, flows/worker.py), by
#: (real path, manifest digest, device); empty in any other process. Used only after every
#: file was re-hashed against the manifest, so a changed bundle is always loaded afresh.
PRELOADED: dict[tuple[str, str, str], Model] = {}


def resolve_bundle(bundle: str) -> str:
    """A bundle folder as is; a work dir (no ``config.json``, has ``runs/latest.json``) means
    the bundle of its last training run, so a scheduled scoring deployment follows retraining."""
    if not str(bundle).strip():  # Path("") would silently be the current directory
        raise BundleError("the bundle path is empty: name a bundle folder or a work dir")
    path = Path(bundle).expanduser()
    latest = path / catalog.LATEST_RUN
    if not (path / catalog.CONFIG_JSON).exists() and latest.is_file():
        try:
            model = json.loads(latest.read_text(encoding="utf-8")).get("model")
        except (OSError, ValueError, AttributeError):
            return bundle  # unreadable: the bundle check names the folder
        if model and isinstance(model, str):
            return str(path / model)  # relative to the work dir (absolute in old records)
    return bundle


def load_bundle(path: str | Path, device: torch.device | str = "cpu") -> Bundle:
    """Verify and load a bundle. Raises BundleError, naming the problem, on any mismatch."""
    path = Path(path)
    digest, listed = _check_files(path)
    try:
        config = json.loads((path / catalog.CONFIG_JSON).read_text(encoding="utf-8"))
        if not isinstance(config, dict) or config.get("format") != BUNDLE_FORMAT:
            found = config.get("format") if isinstance(config, dict) else None
            raise _fail(path, f"format {found!r}, expected {BUNDLE_FORMAT!r}")
        labels = load_label_map(path / catalog.LABELS_JSON)
        _check_parts(path, config, labels, listed)
        model_config = RNNConfig.from_dict(config["model"])
        tokenizer = _resolve_tokenizer(path, config["tokenizer"])
        vocab = pl.read_parquet(path / catalog.VOCAB_PARQUET)
        max_len = config["max_len"]
        featurizer = _load_featurizer(path, config, model_config)
    except BundleError:
        raise
    except _UNREADABLE as exc:
        raise _fail(path, f"unreadable config, vocab or labels ({exc})") from None
    if not {"id", "token"} <= set(vocab.columns):  # what encoding reads (tables.vocab_to_index)
        raise _fail(path, f"vocab has columns {vocab.columns}, needs 'id' and 'token'")
    if vocab.height != model_config.vocab_size:
        raise _fail(
            path, f"vocab has {vocab.height} rows, the model expects {model_config.vocab_size}"
        )
    if len(labels) != model_config.num_classes:
        raise _fail(path, f"{len(labels)} labels, the model expects {model_config.num_classes}")
    model = PRELOADED.get((os.path.realpath(path), digest, str(device)))
    if model is None:
        model = build_model(path, config, model_config, device)
    return Bundle(path, model, config, tokenizer, vocab, labels, max_len, digest, featurizer)


def build_model(
    path: Path, config: dict[str, Any], model_config: RNNConfig, device: torch.device | str
) -> Model:
    """The network with the bundle's weights, on ``device``, in eval mode."""
    try:
        state = load_file(str(path / catalog.WEIGHTS_SAFETENSORS))  # never unpickles
    except (SafetensorError, OSError, ValueError) as exc:
        raise _fail(path, f"weights.safetensors is not a valid safetensors file ({exc})") from None
    members = config.get("ensemble", 1)
    if isinstance(members, bool) or not isinstance(members, int) or members < 1:
        raise _fail(path, f"config.json: ensemble must be a positive integer, got {members!r}")
    model: RNNClassifier | MeanEnsemble = registry.build_model(model_config)
    if members > 1:  # a seed ensemble: members.<k>.<name> tensors (models/ensemble.py)
        model = MeanEnsemble([registry.build_model(model_config) for _ in range(members)])
    else:
        # Bundles from before calibration have no temperature: theirs is 1 (raw logits).
        state.setdefault("temperature", torch.tensor(1.0))
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).splitlines()[0] if str(exc) else "shape mismatch"
        raise _fail(path, f"weights do not fit the model config ({first})") from None
    model.to(device).eval()
    return model


def preload_model(path: str | Path) -> tuple[str, TokenizerSpec, Model]:
    """Digest, tokenizer and network (on the CPU) of a verified bundle, without its vocab and
    n-gram tables: polars is never used, so the process may still fork (flows/worker.py).
    ``load_bundle`` then takes the network from :data:`PRELOADED` and reads the rest."""
    path = Path(path)
    digest, _listed = _check_files(path)
    try:
        config = json.loads((path / catalog.CONFIG_JSON).read_text(encoding="utf-8"))
        model_config = RNNConfig.from_dict(config["model"])
        tokenizer = _resolve_tokenizer(path, config["tokenizer"])
    except BundleError:
        raise
    except _UNREADABLE as exc:
        raise _fail(path, f"unreadable config ({exc})") from None
    return digest, tokenizer, build_model(path, config, model_config, "cpu")


def _load_featurizer(
    path: Path, config: dict[str, Any], model_config: RNNConfig
) -> NgramFeaturizer | None:
    if not model_config.wide_features:
        return None
    if not (path / FEATURES).is_file() or "wide" not in config:
        raise _fail(path, f"the model has a wide n-gram branch but no {FEATURES}")
    features = pl.read_parquet(path / FEATURES)
    if features.height != model_config.wide_features:
        raise _fail(path, f"{FEATURES} has {features.height} rows, the model expects "
                    f"{model_config.wide_features}")  # fmt: skip
    return featurizer_from_table(features, NgramSpec.from_dict(config["wide"]["spec"]))
