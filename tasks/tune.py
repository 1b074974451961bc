"""Model selection, the pure half: the search space, what a trial samples, how trials count
and rank, and the ``zhflow run`` command line that reproduces a winner.

No Prefect here (``flows/tune.py`` runs the study); Optuna is imported only where a trial or a
pruner is made, so reading a space costs nothing.

A space names ``zhflow run`` settings by their ``train_pipeline`` parameter names (``hidden``,
``embedding_dim``...; the flag spellings ``embedding-dim``, ``cell`` for ``model`` and
``token-vectors`` for ``input`` are accepted too). Each entry is

- a constant: ``epochs: 4``;
- a list of choices: ``hidden: [64, 128, 256]``;
- a range: ``lr: {low: 0.0005, high: 0.005, log: true}`` (integers when the setting is an
  integer, optional ``step``);
- any of these as a mapping with ``when``: ``dropout: {low: 0.0, high: 0.5, when: {layers: 2}}``
  is sampled only when an earlier entry took one of the listed values (otherwise the setting
  keeps ``zhflow run``'s default and the trial does not vary it).

A space is checked when it is read, before any work: every value a trial can draw (each
constant and choice, both ends of a range) within ``zhflow run``'s flag ranges, and the configs
a trial builds from its settings built for every combination of those values (:class:`Rules`,
given by ``flows/tune.py``).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import shlex
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from zhflow.tasks.errors import InputError

#: ``train_pipeline`` settings a space may search: model, training, tokenizer and vocabulary.
#: (Corpus, split and seed flags stay fixed: changing them would change the validation split
#: the trials are compared on.)
TUNABLE = (
    "tokenizer", "mode", "hmm", "model", "layers", "hidden", "embedding_dim", "bidirectional",
    "dropout", "input", "ngram_features", "wide", "wide_word_ngrams", "wide_char_ngrams",
    "wide_min_df", "epochs", "batch_size", "lr", "max_len", "min_freq", "max_vocab", "ngram",
)  # fmt: skip
#: The settings that decide the data stages (tokens, n-grams, vocabulary, encoding): trials
#: that agree on these share one prepared data set.
DATA_SETTINGS = (
    "tokenizer", "mode", "hmm", "wide", "wide_word_ngrams", "wide_char_ngrams", "wide_min_df",
    "max_len", "min_freq", "max_vocab", "ngram",
)  # fmt: skip
#: ``zhflow run``'s flag spellings whose parameter name differs (``--cell`` sets ``model``),
#: accepted in a space for the parameter they set.
SPACE_ALIASES = {"cell": "model", "token_vectors": "input"}
METRICS = ("macro_f1", "accuracy")
PRUNERS = ("median", "halving", "none")

#: The default space: what moves accuracy on the shared corpora (docs/BENCHMARKS.md) at a
#: cost a CPU can search. Characters against words, the wide branch and its n-gram sizes,
#: the RNN's size and the learning rate matter most; epochs are an upper bound (early stopping
#: and pruning end most trials sooner).
DEFAULT_SPACE: dict[str, Any] = {
    "tokenizer": ["jieba", "char"],
    "wide": [True, False],
    "wide_word_ngrams": {"low": 1, "high": 3, "when": {"wide": True, "tokenizer": "jieba"}},
    "wide_char_ngrams": {"low": 1, "high": 4, "when": {"wide": True}},
    "model": ["gru", "lstm"],
    "bidirectional": [True, False],
    "layers": [1, 2],
    "dropout": {"low": 0.0, "high": 0.5, "when": {"layers": 2}},
    "hidden": [64, 128, 256],
    "embedding_dim": [64, 128, 256],
    "ngram_features": [0, 2],
    "lr": {"low": 5e-4, "high": 5e-3, "log": True},
    "batch_size": [32, 64, 128],
    "epochs": [4, 6, 8],
    "max_len": [100, 200, 400],
}


@dataclass(frozen=True)
class Dimension:
    """One searched (or fixed) setting of a space."""

    name: str
    choices: tuple[Any, ...] | None = None
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    integer: bool = False  # a range over integers
    when: tuple[tuple[str, tuple[Any, ...]], ...] = field(default_factory=tuple)

    @property
    def constant(self) -> bool:
        return self.choices is not None and len(self.choices) == 1

    def applies(self, settings: Mapping[str, Any]) -> bool:
        """Whether ``when`` holds for the settings sampled so far."""
        return all(settings.get(name) in allowed for name, allowed in self.when)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name}
        if self.choices is not None:
            out["choices"] = list(self.choices)
        else:
            out.update(low=self.low, high=self.high, log=self.log, step=self.step,
                       integer=self.integer)  # fmt: skip
        if self.when:
            out["when"] = {name: list(allowed) for name, allowed in self.when}
        return out


def _where(source: str, name: str) -> str:
    return f"{source}: {name}" if source else name


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _dimension(name: str, entry: Any, default: Any, seen: Sequence[str], source: str) -> Dimension:
    where = _where(source, name)
    when: tuple[tuple[str, tuple[Any, ...]], ...] = ()
    if isinstance(entry, Mapping):
        entry = dict(entry)
        raw_when = entry.pop("when", None) or {}
        if not isinstance(raw_when, Mapping):
            raise InputError(f"{where}: 'when' must map earlier settings to values")
        for other, allowed in raw_when.items():
            other = _setting_name(other)
            if other not in seen:
                raise InputError(f"{where}: 'when' names {other!r}, not an earlier entry")
            allowed = tuple(allowed) if isinstance(allowed, list | tuple) else (allowed,)
            when += ((other, allowed),)
        unknown = sorted(set(entry) - {"choices", "value", "low", "high", "log", "step"})
        if unknown:
            raise InputError(f"{where}: unknown keys {', '.join(unknown)} "
                             "(use choices, value, low/high/log/step, when)")  # fmt: skip
        if "choices" in entry or "value" in entry:
            choices = entry["choices"] if "choices" in entry else [entry["value"]]
            return _choice_dimension(name, choices, default, when, where)
        return _range_dimension(name, entry, default, when, where)
    if isinstance(entry, list | tuple):
        return _choice_dimension(name, entry, default, when, where)
    return _choice_dimension(name, [entry], default, when, where)


def _same_kind(value: Any, default: Any) -> bool:
    if isinstance(default, bool) or isinstance(value, bool):
        return isinstance(value, bool) and isinstance(default, bool)
    if isinstance(default, int):
        return isinstance(value, int)
    if isinstance(default, float):
        return _is_number(value)
    if isinstance(default, str):
        return isinstance(value, str)
    return True


def _choice_dimension(name: str, choices: Any, default: Any, when: tuple, where: str) -> Dimension:
    if not isinstance(choices, list | tuple) or not choices:
        raise InputError(f"{where}: choices must be a non-empty list")
    for value in choices:
        if not _same_kind(value, default):
            raise InputError(f"{where}: {value!r} is not a {type(default).__name__}")
    if len(set(map(json.dumps, choices))) != len(choices):
        raise InputError(f"{where}: a choice is listed twice")
    values = tuple(float(v) if isinstance(default, float) else v for v in choices)
    return Dimension(name=name, choices=values, when=when)


def _range_dimension(name: str, entry: dict, default: Any, when: tuple, where: str) -> Dimension:
    if "low" not in entry or "high" not in entry:
        raise InputError(f"{where}: a range needs low and high (or give choices)")
    if isinstance(default, bool) or not isinstance(default, int | float):
        raise InputError(f"{where}: {name} is not a number; give choices")
    low, high, step, log = entry["low"], entry["high"], entry.get("step"), entry.get("log", False)
    integer = isinstance(default, int)
    for label, value in (("low", low), ("high", high)) + ((("step", step),) if step else ()):
        if not _is_number(value) or (integer and not isinstance(value, int)):
            kind = "an integer" if integer else "a number"
            raise InputError(f"{where}: {label} must be {kind}, got {value!r}")
    if not isinstance(log, bool):
        raise InputError(f"{where}: log must be true or false")
    if low > high:
        raise InputError(f"{where}: low {low} is above high {high}")
    if log and (low <= 0 or step):
        raise InputError(f"{where}: a log range needs low > 0 and no step")
    if step is not None and step <= 0:
        raise InputError(f"{where}: step must be positive")
    return Dimension(name=name, low=low, high=high, log=log, step=step, integer=integer, when=when)


def _setting_name(raw: Any) -> str:
    """A space's name for a setting as its ``train_pipeline`` parameter name."""
    name = str(raw).replace("-", "_")
    return SPACE_ALIASES.get(name, name)


def parse_space(
    data: Any, defaults: Mapping[str, Any], source: str = "", rules: Rules | None = None
) -> list[Dimension]:
    """A space (mapping of setting to entry, in sampling order) checked against ``defaults``
    (``train_pipeline``'s defaults: they give each setting's type, and the settings a trial
    does not vary) and, when given, ``rules`` (:func:`check_space`)."""
    if not isinstance(data, Mapping) or not data:
        raise InputError(f"{source or 'space'}: must be a non-empty mapping of settings")
    dims: list[Dimension] = []
    for raw_name, entry in data.items():
        name = _setting_name(raw_name)
        if name not in TUNABLE:
            raise InputError(
                f"{_where(source, str(raw_name))}: not a tunable setting "
                f"(one of: {', '.join(TUNABLE)})"
            )
        if name in (d.name for d in dims):
            raise InputError(f"{_where(source, name)}: listed twice")
        dims.append(_dimension(name, entry, defaults[name], [d.name for d in dims], source))
    if rules is not None:
        check_space(dims, defaults, rules, source)
    return dims


def load_space(
    path: str | Path, defaults: Mapping[str, Any], rules: Rules | None = None
) -> list[Dimension]:
    """A space from a YAML or JSON file (by suffix; YAML otherwise, a superset of JSON)."""
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: cannot read the space ({exc})") from None
    try:
        if file.suffix.lower() == ".json":
            data = json.loads(text)
        else:
            import yaml

            data = yaml.safe_load(text)  # safe: plain data, never objects
    except Exception as exc:
        first = " ".join(str(exc).split())[:200]
        raise InputError(
            f"{path}: not valid {file.suffix.lstrip('.') or 'YAML'} ({first})"
        ) from None
    return parse_space(data, defaults, source=str(path), rules=rules)


# ------------------------------------------------------------------------------------------
# what a trial can draw, checked before any trial runs

#: Why a value is refused (one phrase: ``0 is below 1``), or None when it is fine.
Bound = Callable[[Any], str | None]
#: Builds a config from a trial's settings (all of ``train_pipeline``'s, defaults filled in),
#: raising ValueError or InputError with the reason when they do not make one.
Build = Callable[[Mapping[str, Any]], object]
#: The settings a config reads, and how it is built.
Check = tuple[tuple[str, ...], Build]
#: A check with more combinations of extreme values than this tries each value on its own
#: (with the other settings at their defaults): long choice lists multiply.
MAX_COMBINATIONS = 10_000


@dataclass(frozen=True)
class Rules:
    """What a trial's settings must pass: each value its setting's bound (``zhflow run``'s flag
    range or choices), then each check on every combination a trial can draw."""

    bounds: Mapping[str, Bound] = field(default_factory=dict)
    checks: Sequence[Check] = ()


def out_of_range(
    value: float, low: float | None = None, high: float | None = None,
    low_open: bool = False, high_open: bool = False,
) -> str | None:  # fmt: skip
    """Why ``value`` is outside ``low``..``high`` (``None``: no bound; open: the end excluded,
    as click's ``IntRange``/``FloatRange``), or None."""
    if low is not None and (value < low or (low_open and value == low)):
        return f"{value!r} is {'not above' if low_open else 'below'} {low!r}"
    if high is not None and (value > high or (high_open and value == high)):
        return f"{value!r} is {'not below' if high_open else 'above'} {high!r}"
    return None


def extremes(dim: Dimension) -> tuple[Any, ...]:
    """The values of ``dim`` a space is checked with: every choice, or both ends of a range."""
    if dim.choices is not None:
        return dim.choices
    return (dim.low,) if dim.low == dim.high else (dim.low, dim.high)


def combinations(dims: Sequence[Dimension], names: Iterable[str]) -> Iterator[dict[str, Any]]:
    """Every combination of extreme values a trial can draw for the settings ``names`` (and
    those their ``when`` reads): a setting whose ``when`` fails is left out, as in
    :func:`suggest`; settings the space does not name are not in a combination."""
    wanted = set(names)
    for dim in reversed(dims):  # a ``when`` reads earlier entries only
        if dim.name in wanted:
            wanted.update(name for name, _ in dim.when)
    chosen = [dim for dim in dims if dim.name in wanted]

    def walk(i: int, settings: dict[str, Any]) -> Iterator[dict[str, Any]]:
        if i == len(chosen):
            yield settings
        elif not chosen[i].applies(settings):
            yield from walk(i + 1, settings)
        else:
            for value in extremes(chosen[i]):
                yield from walk(i + 1, {**settings, chosen[i].name: value})

    return walk(0, {})


def _refusal(check: Build, settings: Mapping[str, Any]) -> str | None:
    try:
        check(settings)
    except (ValueError, InputError) as exc:
        return " ".join(str(exc).split()) or type(exc).__name__
    return None


def _blame(
    check: Build, defaults: Mapping[str, Any], combo: Mapping[str, Any], reason: str
) -> tuple[str, str]:
    """What to name for a refused combination: a setting refused on its own (with the other
    settings at their defaults), else the values that differ from the defaults, together."""
    varied = {name: value for name, value in combo.items() if value != defaults.get(name)}
    for name, value in varied.items():
        alone = _refusal(check, {**defaults, name: value})
        if alone is not None:
            return name, alone
    together = " with ".join(f"{name}: {value!r}" for name, value in varied.items())
    return together or ", ".join(combo) or "defaults", reason


def check_space(
    dims: Sequence[Dimension], defaults: Mapping[str, Any], rules: Rules, source: str = ""
) -> None:
    """Refuse a space a trial could draw unusable settings from, in one line naming the file,
    the setting (or the settings together) and why: each value a trial can draw against its
    bound, then each check on every combination of them (``defaults`` for the rest)."""
    for dim in dims:
        bound = rules.bounds.get(dim.name)
        if bound is None:
            continue
        for value in extremes(dim):
            reason = bound(value)
            if reason is not None:
                raise InputError(f"{_where(source, dim.name)}: {reason}")
    named = {dim.name for dim in dims}
    for names, check in rules.checks:
        if named.isdisjoint(names):
            continue  # the defaults alone: zhflow run's own
        combos = list(itertools.islice(combinations(dims, names), MAX_COMBINATIONS + 1))
        if len(combos) > MAX_COMBINATIONS:
            combos = [{d.name: v} for d in dims if d.name in names for v in extremes(d)]
        for combo in combos:
            reason = _refusal(check, {**defaults, **combo})
            if reason is not None:
                what, reason = _blame(check, defaults, combo, reason)
                raise InputError(f"{_where(source, what)}: {reason}")


def space_dicts(dims: Iterable[Dimension]) -> list[dict[str, Any]]:
    return [d.to_dict() for d in dims]


# ------------------------------------------------------------------------------------------
# trials


def suggest(trial: Any, dims: Sequence[Dimension]) -> dict[str, Any]:
    """The settings of one trial: each dimension that applies, sampled by ``trial`` (an
    ``optuna.Trial``) or constant; dimensions whose ``when`` fails are left out."""
    settings: dict[str, Any] = {}
    for dim in dims:
        if not dim.applies(settings):
            continue
        if dim.constant:
            assert dim.choices is not None
            settings[dim.name] = dim.choices[0]
        elif dim.choices is not None:
            settings[dim.name] = trial.suggest_categorical(dim.name, list(dim.choices))
        elif dim.integer:
            settings[dim.name] = trial.suggest_int(
                dim.name, int(dim.low or 0), int(dim.high or 0), step=int(dim.step or 1),
                log=dim.log)  # fmt: skip
        else:
            low, high = float(dim.low or 0), float(dim.high or 0)
            settings[dim.name] = trial.suggest_float(
                dim.name, low, high, step=dim.step, log=dim.log
            )
    return settings


def data_settings(settings: Mapping[str, Any]) -> dict[str, Any]:
    """The part of a trial's settings that decides its data stages."""
    return {k: settings[k] for k in DATA_SETTINGS if k in settings}


def epoch_score(record: Mapping[str, Any], metric: str) -> float:
    """A training epoch's validation score for pruning: the whole model's (the RNN mixed with
    the wide branch, ``valid_full_*``) when training reports it, else the RNN's."""
    return float(record.get(f"valid_full_{metric}", record[f"valid_{metric}"]))


def make_pruner(kind: str, startup_trials: int = 3) -> Any:
    """Median pruning (from any epoch, once ``startup_trials`` trials have finished: a trial
    whose score is below the median of the others' at the same epoch stops), successive
    halving, or none. Epochs are steps 1, 2, ...; no warm-up: a trial trains a few epochs at
    most, so waiting one would leave little to save."""
    import optuna

    if kind == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=startup_trials, n_warmup_steps=0)
    if kind == "halving":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=3)
    if kind == "none":
        return optuna.pruners.NopPruner()
    raise InputError(f"--pruner must be one of {', '.join(PRUNERS)}, got {kind!r}")


def study_name(identity: Mapping[str, Any]) -> str:
    """The study of a search: its corpus digest, fixed flags, space, metric, pruner and seed.
    The same search run again continues the same study; a changed one starts its own."""
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()
    return f"zhflow-tune-{digest[:16]}"


def describe(settings: Mapping[str, Any]) -> str:
    """A trial's settings in one short line: ``char · gru · hidden 64 · lr 0.0021``..."""
    parts = []
    for name, value in settings.items():
        if name in ("tokenizer", "model"):
            parts.append(str(value))
        elif isinstance(value, bool):
            parts.append(name.replace("_", "-") if value else f"no-{name.replace('_', '-')}")
        elif isinstance(value, float):
            parts.append(f"{name} {value:.3g}")
        else:
            parts.append(f"{name} {value}")
    return " · ".join(parts)


# ------------------------------------------------------------------------------------------
# the study's trials (optuna FrozenTrials, or anything with number/state/value/params...)


def state_name(trial: Any) -> str:
    """``complete``, ``pruned``, ``fail``, ``running``, ``waiting``; ``interrupted`` for a
    trial a killed tune left running (it is tried again and does not count). A tune records
    every failure it sees with its ``error``: a failed trial without one was interrupted."""
    name = str(getattr(trial.state, "name", trial.state)).lower()
    if name == "fail" and "error" not in trial.user_attrs:
        return "interrupted"
    return name


def tally(trials: Iterable[Any]) -> dict[str, int]:
    """Finished trials by outcome: ``completed``, ``pruned``, ``failed`` (and ``interrupted``,
    not counted towards ``--trials``)."""
    counts = {"completed": 0, "pruned": 0, "failed": 0, "interrupted": 0}
    names = {"complete": "completed", "pruned": "pruned", "fail": "failed"}
    for trial in trials:
        state = state_name(trial)
        if state in names:
            counts[names[state]] += 1
        elif state == "interrupted":
            counts["interrupted"] += 1
    return counts


def finished(counts: Mapping[str, int]) -> int:
    return counts["completed"] + counts["pruned"] + counts["failed"]


def no_winner(trials: Iterable[Any], timed_out: float | None = None) -> str:
    """Why a study has no completed trial to choose: how many finished and how, the first
    error; or that ``--timeout`` (``timed_out``: it stopped the search) passed first."""
    trials = list(trials)
    counts = tally(trials)
    if timed_out is not None and not finished(counts):
        return f"no trial completed: --timeout {timed_out:g} s passed before any trial started"
    errors = [t.user_attrs["error"] for t in trials if t.user_attrs.get("error")]
    late = f"; --timeout {timed_out:g} s stopped the rest" if timed_out is not None else ""
    hint = f"; first error: {errors[0]}" if errors else ""
    return (f"no trial completed ({finished(counts)} finished: {counts['pruned']} pruned, "
            f"{counts['failed']} failed{late}){hint}")  # fmt: skip


def ranked(trials: Iterable[Any]) -> list[Any]:
    """Completed trials best first (ties: the earlier trial), then the others by number."""
    trials = list(trials)
    done = sorted((t for t in trials if state_name(t) == "complete"),
                  key=lambda t: (-float(t.value), t.number))  # fmt: skip
    rest = sorted((t for t in trials if state_name(t) != "complete"), key=lambda t: t.number)
    return done + rest


def leaderboard_rows(trials: Iterable[Any], metric: str) -> list[dict[str, Any]]:
    """The tune leaderboard: trial, settings, validation score, epochs, seconds, state."""
    rows = []
    for trial in ranked(trials):
        attrs = trial.user_attrs
        seconds = attrs.get("seconds")
        if seconds is None and trial.datetime_start and trial.datetime_complete:
            seconds = (trial.datetime_complete - trial.datetime_start).total_seconds()
        value = trial.value if state_name(trial) == "complete" else None
        rows.append({
            "trial": trial.number,
            "settings": attrs.get("label") or describe(trial.params),
            f"valid_{metric}": "" if value is None else f"{value:.4f}",
            "epochs": attrs.get("epochs", len(trial.intermediate_values) or ""),
            "seconds": "" if seconds is None else f"{float(seconds):.1f}",
            "state": state_name(trial),
            "note": attrs.get("error", ""),
        })  # fmt: skip
    return rows


# ------------------------------------------------------------------------------------------
# the winner as a `zhflow run` command line

#: ``train_pipeline`` parameters whose flag is not ``--`` + the name with dashes.
#: (Checked against ``zhflow run``'s options in tests/test_tune.py, so a rename shows up there.)
_FLAG_NAMES = {
    "fmt": "--format", "dask_workers": "--dask-workers", "ensemble_size": "--seeds",
    "model": "--cell", "input": "--token-vectors",
}  # fmt: skip
_BOOL_FLAGS = {"dedupe": ("--dedupe", "--keep-duplicates")}


def flag(name: str, value: Any) -> list[str]:
    """``zhflow run``'s flag(s) for one ``train_pipeline`` setting."""
    if isinstance(value, bool):
        on, off = _BOOL_FLAGS.get(name, (f"--{name.replace('_', '-')}",
                                         f"--no-{name.replace('_', '-')}"))  # fmt: skip
        return [on if value else off]
    option = _FLAG_NAMES.get(name, f"--{name.replace('_', '-')}")
    if isinstance(value, list | tuple):
        return [part for item in value for part in (option, str(item))]
    return [option, repr(value) if isinstance(value, float) else str(value)]


def run_command(
    corpus: Sequence[str] | None, fixed: Mapping[str, Any], settings: Mapping[str, Any],
    defaults: Mapping[str, Any],
) -> str:  # fmt: skip
    """The ``zhflow run`` line that trains the same model: the trial's settings, and the fixed
    flags that differ from their defaults (the work dir always, so its cache is reused)."""
    words = ["zhflow", "run", *(corpus or [])]
    for name, value in {**fixed, **settings}.items():
        if value is None or (name not in settings and name != "workdir"
                             and defaults.get(name) == value):  # fmt: skip
            continue
        words += flag(name, value)
    return shlex.join(words)
