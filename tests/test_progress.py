"""Terminal progress bars (flows/progress.py): drawn when stderr is a terminal (or forced),
absent otherwise, fed by the same hooks as the Prefect progress artifacts."""

from __future__ import annotations

import pytest

from zhflow.flows import progress


def test_no_bars_when_stderr_is_not_a_terminal(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("ZHFLOW_PROGRESS", raising=False)
    assert progress.bars_wanted() is False  # pytest captures stderr: not a TTY
    seen: list[int] = []
    with progress.terminal_bars():
        listener = progress.scoring_listener(seen.append, lambda: pytest.fail("not needed"))
        assert listener == seen.append  # no bar listens: the scorer's callback, unchanged
        listener(3)
    assert seen == [3] and capsys.readouterr().err == ""
    monkeypatch.setenv("ZHFLOW_PROGRESS", "0")
    assert progress.bars_wanted() is False


def test_forced_bars_show_scoring_segmentation_and_epochs(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from zhflow.tasks import stages  # the training flow has loaded it: its hooks get a bar

    monkeypatch.setenv("ZHFLOW_PROGRESS", "1")
    monkeypatch.setenv("COLUMNS", "160")
    seen: list[int] = []
    with progress.terminal_bars(epochs=3):
        stages.SEGMENT_HOOKS.notify({"done": 40, "total": 96})
        stages.SEGMENT_HOOKS.notify({"done": 96, "total": 96})
        stages.EPOCH_HOOKS.notify({"epoch": 2, "train_loss": 0.5, "valid_accuracy": 0.75,
                                   "valid_macro_f1": 0.7})  # fmt: skip
        listener = progress.scoring_listener(seen.append, lambda: 100)
        listener(60)
        listener(100)
    err = capsys.readouterr().err
    assert seen == [60, 100]
    assert "segmentation" in err and "96/96" in err
    assert "training epochs" in err and "2/3" in err and "valid acc 0.7500" in err
    assert "scoring" in err and "100/100" in err
    # The hooks are removed afterwards: nothing listens any more.
    assert progress.SCORE_HOOKS == [] and not stages.EPOCH_HOOKS.hooks
