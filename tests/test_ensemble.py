"""Seed ensembles (models/ensemble.py): deterministic, sealed in one bundle, scored as one."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch

from tests.helpers import train_tiny_bundle
from zhflow.models.ensemble import MeanEnsemble, classifiers, uncalibrated
from zhflow.models.rnn import UNCALIBRATED_MIX, RNNClassifier, RNNConfig
from zhflow.tasks.bundle import load_bundle
from zhflow.tasks.encode import encode_tokens
from zhflow.tasks.score import ragged_bags, score_file
from zhflow.tasks.segment import segment_texts
from zhflow.tasks.storage import sha256_file
from zhflow.tasks.tables import vocab_to_index
from zhflow.tasks.train import predict_proba

TEXTS = ["味道不错，下次还点", "太难吃了", "物流太慢，包装破损"]


@pytest.fixture(scope="module")
def ensemble_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return train_tiny_bundle(tmp_path_factory.mktemp("e") / "b", epochs=1, wide=True, members=2)


def _inputs(bundle) -> tuple:
    tokens = segment_texts(TEXTS, bundle.tokenizer)
    ids, lengths = encode_tokens(tokens, vocab_to_index(bundle.vocab), bundle.max_len)
    return ids, lengths, ragged_bags(bundle.featurizer(tokens))


def test_ensemble_is_deterministic_for_a_seed(ensemble_dir: Path, tmp_path: Path) -> None:
    again = train_tiny_bundle(tmp_path / "again", epochs=1, wide=True, members=2)
    other = train_tiny_bundle(tmp_path / "other", epochs=1, wide=True, members=2, seed=5)
    weights = "weights.safetensors"
    assert sha256_file(again / weights) == sha256_file(ensemble_dir / weights)
    assert sha256_file(other / weights) != sha256_file(ensemble_dir / weights)


def test_ensemble_averages_its_members_probabilities(ensemble_dir: Path) -> None:
    bundle = load_bundle(ensemble_dir)
    assert isinstance(bundle.model, MeanEnsemble) and len(classifiers(bundle.model)) == 2
    ids, lengths, bags = _inputs(bundle)
    mean = np.mean(
        [predict_proba(m, ids, lengths, bags=bags) for m in classifiers(bundle.model)], axis=0
    )
    assert np.allclose(predict_proba(bundle.model, ids, lengths, bags=bags), mean, atol=1e-6)
    first, second = classifiers(bundle.model)
    assert not torch.equal(first.head.weight, second.head.weight)  # two seeds, two models


def test_ensemble_bundle_round_trips_and_scores_the_same_rows(
    ensemble_dir: Path, tmp_path: Path
) -> None:
    import shutil

    bundle = load_bundle(ensemble_dir)
    ids, lengths, bags = _inputs(bundle)
    before = predict_proba(bundle.model, ids, lengths, bags=bags)
    moved = load_bundle(shutil.copytree(ensemble_dir, tmp_path / "moved"))
    assert np.array_equal(before, predict_proba(moved.model, ids, lengths, bags=bags))
    source = tmp_path / "in.csv"
    pl.DataFrame({"text": TEXTS}).write_csv(source)
    score_file(moved, source, tmp_path / "out.parquet", workers=1)
    probs = pl.read_parquet(tmp_path / "out.parquet").select(
        [f"prob_{label}" for label in bundle.labels]
    )
    assert np.allclose(probs.to_numpy(), before, atol=1e-6)


def test_uncalibrated_sets_every_temperature_to_one_and_restores() -> None:
    cfg = RNNConfig(vocab_size=8, num_classes=2, embedding_dim=4, hidden_size=4)
    members = [RNNClassifier(cfg), RNNClassifier(cfg)]
    members[0].temperature.fill_(2.0)
    members[1].temperature.fill_(0.5)
    ensemble = MeanEnsemble(members)
    with uncalibrated(ensemble):
        assert [float(m.temperature) for m in members] == [1.0, 1.0]
    assert [float(m.temperature) for m in members] == [2.0, 0.5]


def test_uncalibrated_also_undoes_the_fitted_mix() -> None:
    """Before calibration = what ``TrainConfig(calibrate=False)`` trains: mix 0.5, T 1."""
    cfg = RNNConfig(vocab_size=8, num_classes=2, embedding_dim=4, hidden_size=4,
                    wide_features=5)  # fmt: skip
    model = RNNClassifier(cfg)
    assert float(model.mix) == UNCALIBRATED_MIX
    model.mix.fill_(0.85)
    model.temperature.fill_(1.3)
    with uncalibrated(model):
        assert (float(model.mix), float(model.temperature)) == (UNCALIBRATED_MIX, 1.0)
    assert (float(model.mix), float(model.temperature)) == pytest.approx((0.85, 1.3))
    with pytest.raises(ValueError, match="share one config"):
        MeanEnsemble([RNNClassifier(cfg), RNNClassifier(RNNConfig(vocab_size=9, num_classes=2))])


def test_info_names_the_members_of_an_ensemble(ensemble_dir: Path, tmp_path: Path) -> None:
    import json

    from click.testing import CliRunner

    from zhflow.flows.cli import main

    single = train_tiny_bundle(tmp_path / "single", epochs=1)
    for bundle, members, said in (
        (ensemble_dir, 2, "2 members (--seeds)"),
        (single, 1, "1 member"),
    ):
        info = json.loads(CliRunner().invoke(main, ["info", str(bundle), "--json"]).stdout)
        assert info["ensemble"] == members
        assert f"ensemble:   {said}" in CliRunner().invoke(main, ["info", str(bundle)]).stdout
