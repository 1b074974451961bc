"""The work dir's leaderboard file: entries from run summaries, merged, written atomically."""

from __future__ import annotations

import json
import threading
from pathlib import Path

from zhflow.flows import leaderboard as lb

SUMMARY = {
    "corpus": ["/data/reviews.csv"],
    "accuracy": 0.8123,
    "macro_f1": 0.8011,
    "model": "/w/bundle/aaa",
    "tasks": [{"name": "model", "state": "Completed"}, {"name": "metrics", "state": "Cached"}],
}
TOKENIZER = {"engine": "jieba", "mode": "precise", "hmm": False, "user_dict": None}
MODEL = {"cell": "lstm", "hidden_size": 128, "num_layers": 1, "bidirectional": True,
         "input": "embedding"}  # fmt: skip
TRAIN = {"epochs": 6, "lr": 0.002, "batch_size": 64, "seed": 42, "amp": False}
DATA = {"max_len": 200, "min_freq": 2, "max_vocab": 50_000}


def _entry(run: str, bundle: str, f1: float, cached: bool = False) -> dict:
    state = "Cached" if cached else "Completed"
    summary = {**SUMMARY, "model": bundle, "macro_f1": f1,
               "tasks": [{"name": "model", "state": state}]}  # fmt: skip
    return lb.make_entry(run, summary, TOKENIZER, MODEL, TRAIN, DATA)


def test_entry_describes_the_run() -> None:
    entry = lb.make_entry("reviews-lstm-train", SUMMARY, TOKENIZER, MODEL, TRAIN, DATA)
    assert entry["corpus"] == "reviews.csv"
    assert entry["tokenizer"] == "jieba precise no-HMM"
    assert entry["model"] == "bilstm h128 x1"
    assert (
        entry["settings"]
        == "epochs 6 · lr 0.002 · batch_size 64 · max_len 200 · min_freq 2 · seed 42"
    )
    assert entry["cached"] is False and entry["bundle"] == "/w/bundle/aaa"
    assert lb.describe_tokenizer({"engine": "char"}) == "char"
    gru = {"cell": "gru", "hidden_size": 8, "num_layers": 2, "bidirectional": False,
           "input": "onehot", "wide": True}  # fmt: skip
    assert lb.describe_model(gru) == "gru h8 x2 onehot +wide"
    assert lb.state_message(SUMMARY) == "accuracy 0.8123, macro-F1 0.8011"


def test_record_keeps_one_entry_per_bundle_best_first(tmp_path: Path) -> None:
    lb.record(tmp_path, _entry("first", "/w/bundle/a", 0.70))
    lb.record(tmp_path, _entry("second", "/w/bundle/b", 0.90))
    board = lb.record(tmp_path, _entry("first-again", "/w/bundle/a", 0.70, cached=True))
    assert [(e["run"], e["cached"]) for e in board] == [("second", False), ("first-again", True)]
    on_disk = json.loads((tmp_path / lb.BOARD_FILE).read_text(encoding="utf-8"))
    assert on_disk == {"version": lb.BOARD_VERSION, "entries": board}
    assert not list((tmp_path / "runs").glob("*.tmp"))


def test_concurrent_runs_both_land(tmp_path: Path) -> None:
    entries = [_entry(f"r{i}", f"/b/{i}", i / 10) for i in range(6)]
    threads = [threading.Thread(target=lb.record, args=(tmp_path, e)) for e in entries]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(e["run"] for e in lb.read_board(tmp_path / lb.BOARD_FILE)) == [
        f"r{i}" for i in range(6)
    ]


def test_an_unreadable_board_is_kept_aside_not_overwritten(tmp_path: Path) -> None:
    path = tmp_path / lb.BOARD_FILE
    path.parent.mkdir(parents=True)
    path.write_text("{not json", encoding="utf-8")
    board = lb.record(tmp_path, _entry("new", "/b/new", 0.5))
    assert [e["run"] for e in board] == ["new"]
    assert path.with_name(path.name + ".bad").read_text(encoding="utf-8") == "{not json"
