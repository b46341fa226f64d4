"""The hyperparameter search says how it is going: a line every PROGRESS_EVERY_S from a timer thread (trial, epoch,
batch, the latest validation figure, the budget left) and, at the end, how many trials ran and why it stopped."""

from __future__ import annotations

import dataclasses
import re
import threading
import time

import numpy as np
import pytest

from export import tune
from export.config import DEFAULT
from export.data import load, split
from export.data.synthetic import SyntheticSpec
from export.train import Progress, Ticker


class _Iterations:
    """The optimizer's step counter as the timer thread reads it (``.numpy()``)."""

    def __init__(self) -> None:
        self.value = 0

    def numpy(self) -> int:
        return self.value


class _Model:
    def __init__(self) -> None:
        self.optimizer = type("Optimizer", (), {})()
        self.optimizer.iterations = _Iterations()


def test_the_search_line_says_trial_epoch_batch_validation_best_and_budget_left():
    """Driven step by step on a fake clock, as the search drives it; no thread, no training."""
    now = [1000.0]
    watch = tune.SearchProgress(300, 16, "top_10_exclude_seen", "mean", clock=lambda: now[0])
    assert watch.ticker is None  # every_s None: only line()
    now[0] += 5
    assert watch.line() == "tune, 5 s: 0 trial(s) done, the next one starting; 295 s of the 300 s budget left"

    progress = Progress(60, 40, every_s=None, clock=lambda: now[0])
    model = _Model()
    progress.set_model(model)
    watch.begin(0, progress)
    building = "tune, 5 s: trial 0 (1 of at most 16), building its model; 295 s of the 300 s budget left"
    assert watch.line() == building
    progress.on_epoch_begin(0)
    model.optimizer.iterations.value = 7
    now[0] += 25
    assert watch.line() == (
        "tune, 30 s: trial 0 (1 of at most 16), epoch 1/40: batch 7 of 60; 270 s of the 300 s budget left"
    )
    watch.scoring("epoch 1")
    assert "epoch 1/40: scoring epoch 1 on validation;" in watch.line()
    watch.scored(0.21)
    model.optimizer.iterations.value = 60  # epoch 1's batches, scored; the next epoch not begun
    assert "epoch 1/40 done, validation top_10_exclude_seen 0.2100 after epoch 1;" in watch.line()
    progress.on_epoch_begin(1)
    model.optimizer.iterations.value = 70  # and 10 of epoch 2
    assert watch.line() == (
        "tune, 30 s: trial 0 (1 of at most 16), epoch 2/40: batch 10 of 60, validation top_10_exclude_seen 0.2100 "
        "after epoch 1; 270 s of the 300 s budget left"
    )
    watch.end(0, 0.65)
    watch.begin(1, Progress(60, 40, every_s=None, clock=lambda: now[0]))
    watch.end(1, 0.6)  # not better: trial 0 stays the best
    now[0] += 290
    assert watch.line() == (
        "tune, 320 s: 2 trial(s) done, the next one starting; best: trial 0 (mean 0.6500); "
        "the 300 s budget was spent 20 s ago (a started trial finishes)"
    )


def test_the_search_says_why_it_stopped():
    assert tune.stop_reason(16, 16, 12.0, 300) == "16 trials, the most --tune-trials allows"
    assert tune.stop_reason(16, 16, 400.0, 300) == "16 trials, the most --tune-trials allows"
    assert tune.stop_reason(8, 16, 352.0, 300) == "the 300 s budget (--tune-budget) was spent; a started trial finishes"
    assert tune.stop_reason(3, 16, 12.0, 300) == "the sampler ended the study"


def test_a_ticker_reports_its_line_until_closed_and_skips_none():
    lines: list[str] = []
    count = [0]

    def line() -> str | None:
        count[0] += 1
        return None if count[0] % 2 else f"tick {count[0]}"

    ticker = Ticker(line, every_s=0.001, report=lines.append)
    ticker.start()
    ticker.start()  # once only
    deadline = time.monotonic() + 10
    while len(lines) < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    ticker.close()
    assert lines[:3] == ["tick 2", "tick 4", "tick 6"]
    assert ticker.thread is not None and not ticker.thread.is_alive()
    after = len(lines)
    time.sleep(0.02)
    assert len(lines) == after  # nothing once closed
    assert not [t for t in threading.enumerate() if t.name == "export-progress" and t is ticker.thread]


@pytest.fixture(scope="module")
def data():
    return load("synthetic", synthetic=SyntheticSpec.tiny(5))


def _search(data, budget_s: float, max_trials: int, lines: list[str], score_s: float = 0.0):
    train_idx, _ = split(data.ratings, kind="random")
    base = dataclasses.replace(DEFAULT, epochs=2, patience=5)

    def score(trained) -> float:
        time.sleep(score_s)  # a validation of some length: the timer thread must report during it
        return float(np.abs(trained.user_vectors).mean())

    return tune.search(base, data, train_idx, score, "top_10_exclude_seen", budget_s, max_trials, lines.append)


def test_the_search_reports_while_a_trial_runs_and_says_at_the_end_that_the_trials_ran_out(data, monkeypatch):
    monkeypatch.setattr(tune, "PROGRESS_EVERY_S", 0.005)  # the timer thread reports at once, and again
    lines: list[str] = []
    _, summary = _search(data, 600, 2, lines, score_s=0.05)
    trial_lines = [i for i, line in enumerate(lines) if line.startswith("tune trial ")]
    assert len(trial_lines) == 2 and len(summary["trials"]) == 2
    ticks = [line for line in lines[: trial_lines[0]] if line.startswith("tune, ")]
    assert ticks, lines[:5]  # progress during the first trial, before its own line
    pattern = re.compile(
        r"tune, \d+ s: trial 0 \(1 of at most 2\), (building its model|epoch [12]/2: "
        r"(batch \d+ of \d+|scoring epoch [12] on validation)|epoch [12]/2 done)"
        r"(, validation top_10_exclude_seen \d\.\d{4} after epoch [12])?; \d+ s of the 600 s budget left"
    )
    assert all(pattern.fullmatch(line) for line in ticks), ticks
    assert any("validation top_10_exclude_seen" in line for line in ticks)  # the latest figure, once there is one
    assert re.search(r"; \d+ s of the 600 s budget left$", lines[trial_lines[0]])
    assert summary["stopped"] == "2 trials, the most --tune-trials allows"
    assert re.fullmatch(
        r"tune: 2 trial\(s\) in \d+ s \(0 pruned by the median rule, 0 stopped early on validation, 0 at the 150 s "
        r"time cap\), stopped: 2 trials, the most --tune-trials allows; best trial [01] "
        r"\(top_10_exclude_seen \d\.\d{4}\)",
        lines[-1],
    )
    assert all(t["epochs"] == 2 for t in summary["trials"])
    assert not [t for t in threading.enumerate() if t.name == "export-progress"]  # the timer thread ended


def test_a_search_stopped_by_its_budget_says_so(data):
    lines: list[str] = []
    _, summary = _search(data, 0.01, 5, lines)
    assert len(summary["trials"]) == 1  # a started trial finishes; no other starts
    assert summary["stopped"] == "the 0.01 s budget (--tune-budget) was spent; a started trial finishes"
    assert "the 0.01 s budget was spent" in next(line for line in lines if line.startswith("tune trial 0:"))
    assert lines[-1].startswith("tune: 1 trial(s) in ") and "stopped: the 0.01 s budget" in lines[-1]


def _scripted_search(data, curves: dict[int, list[float]], budget_s: float = 600, max_trials: int = 3):
    """A search whose validation figure per trial and epoch is ``curves[trial][epoch]``."""
    train_idx, _ = split(data.ratings, kind="random")
    base = dataclasses.replace(DEFAULT, epochs=6, patience=6)
    calls: list[int] = []
    trial_of: dict[tuple, int] = {}

    def score(trained) -> float:
        key = (trained.config.l2, trained.config.learning_rate)  # what the sampler drew: one per trial
        trial = trial_of.setdefault(key, len(trial_of))
        calls.append(trial)
        epoch = sum(1 for c in calls if c == trial) - 1
        return curves[trial][epoch]

    lines: list[str] = []
    model, summary = tune.search(
        base, data, train_idx, score, "top_10_exclude_seen", budget_s, max_trials, lines.append
    )
    return model, summary, lines


def test_a_trial_below_the_median_of_the_finished_ones_is_pruned_after_the_warmup(data):
    curves = {0: [0.1, 0.2, 0.3, 0.4, 0.5, 0.6], 1: [0.2, 0.3, 0.1, 0.1, 0.1, 0.1], 2: [0.3] * 6}
    _, summary, lines = _scripted_search(data, curves)
    by = {t["number"]: t for t in summary["trials"]}
    # trial 1 leads at epochs 1-2, ties at 3, then its best so far (0.3) falls below trial 0's at epoch 4 (0.4)
    assert by[1]["stopped_by"] == "pruned" and by[1]["epochs"] == 4
    assert by[0]["stopped_by"] == "epochs" and by[0]["epochs"] == 6
    assert by[2]["stopped_by"] == "pruned"
    assert summary["stopped_by"] == {"pruned": 2, "patience": 0, "time": 0}
    assert summary["best"]["number"] == 0  # a pruned trial is never chosen
    assert any(line.startswith("tune trial 1: ") and "pruned after epoch 4" in line for line in lines)
    assert "(2 pruned by the median rule, 0 stopped early on validation" in lines[-1]


def test_a_trial_stops_at_its_time_cap_with_its_best_epoch_kept(data, monkeypatch):
    monkeypatch.setattr(tune, "MIN_TRIALS", 10**9)  # a cap of ~0 s: every trial stops after its first epoch
    _, summary, lines = _scripted_search(data, {0: [0.5] * 6}, max_trials=1)
    [trial] = summary["trials"]
    assert (trial["stopped_by"], trial["epochs"], trial["best_epoch"]) == ("time", 1, 1)
    assert "at its time cap" in next(line for line in lines if line.startswith("tune trial 0:"))
    assert tune.trial_time_limit(300) == 300 / 10**9
