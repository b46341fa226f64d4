"""Hyperparameter search for the towers within a time budget, chosen on the validation split (Optuna's TPE).

Each trial trains on the fitting part with early stopping on validation (export/train.py) and scores its
best epoch; the first trial is the preset's own settings, so tuning can only find something at least as
good on validation. The search space is the recipe's: embedding dimension, L2 weight, learning rate, the
loss and the user tower (id alone, or with a bag of the user's training items); epochs come from early
stopping, on the seen-excluded top-10. Trials are ranked by the mean of the seen-excluded top-10 and top-100
hit rates at their best epoch (the criterion export/selection.py passes): on synthetic data the in-batch
softmax trailed the full softmax by 0.004 at top-10 and led it by 0.028 at top-100 on the test part, so
ranking on top-10 alone would throw that away. Both losses are searched while a full softmax is affordable
(``full_softmax_affordable``: titles, and training ratings x titles); beyond, a full softmax costs a
catalogue-wide product per batch and the in-batch softmax (with the log-Q correction) is the only one. The study
stops at ``budget_s`` seconds or ``max_trials`` trials, whichever comes first (a trial that has started
finishes); the last line says how many trials ran, how many were pruned or cut at their time cap, and why the
search stopped (``stop_reason``). Each trial stops early on its own validation curve (``patience``), and two
bounds let the budget see several configurations on data where an epoch costs seconds (a full softmax over
thousands of titles): Optuna's ``MedianPruner`` (each epoch's validation figure is reported with
``trial.report``; from epoch ``PRUNE_WARMUP_EPOCHS`` on, a trial whose best so far is below the median of the
finished trials' at that epoch is pruned, as in Optuna's pruning examples and Google Vizier's median stopping
rule), and a time cap per trial of the budget over ``MIN_TRIALS``, or what is left of the budget if less (its
training stops at the first epoch end past it, the best epoch kept: the search ends within an epoch of its
budget). A pruned trial is never chosen; the refit (export/selection.py) reuses the best trial's settings and
epoch count. While it runs, ``SearchProgress`` prints a line at least
every ``PROGRESS_EVERY_S`` seconds (trial, epoch and batch, the latest validation figure, the time left of the
budget) from a timer thread (export/train.py's ``Ticker``), so that a trial of minutes is not silent. Optuna is
used rather than KerasTuner because the objective is not a Keras metric (the seen-excluded hit rate over the whole
catalogue) and the budget is wall-clock time.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable

import numpy as np

from export import train as training
from export.config import TrainConfig
from export.train import Progress, Ticker, Trained, train

PROGRESS_EVERY_S = training.PROGRESS_EVERY_S  # seconds between the search's progress lines

DIMENSIONS = (32, 64, 128)
# The user tower's id embedding alone, or with a bag of the user's training items (export/model.py).
USER_TOWERS = ("id", "id+history")
LOSSES = ("full_softmax", "in_batch_softmax")
FULL_SOFTMAX_UP_TO = 50_000  # titles
MIN_TRIALS = 4  # a trial trains for at most budget_s / MIN_TRIALS seconds (to its first epoch end past that)
PRUNE_WARMUP_EPOCHS = 2  # the first epoch at whose end the median pruner may stop a trial (n_warmup_steps)
# ... and training ratings x titles, a full softmax's logits per epoch, which is what an epoch costs: 0.7M x 3.7k
# (ML-1M's fitting part) took about 30 s an epoch here; ML-10M's is 29 times that.
FULL_SOFTMAX_CELLS = 20_000_000_000


def full_softmax_affordable(titles: int, ratings: int = 0) -> bool:
    return titles <= FULL_SOFTMAX_UP_TO and titles * ratings <= FULL_SOFTMAX_CELLS


def losses_for(titles: int, ratings: int = 0) -> tuple[str, ...]:
    return LOSSES if full_softmax_affordable(titles, ratings) else ("in_batch_softmax",)


LAZY_ADAM_ROWS = 50_000  # users + titles: above, Adam's update of every row at every step outweighs the batch
LARGE_DATA = 5_000_000  # training ratings: above, an epoch is thousands of steps (and selection skips the refit)
RATING_PASSES = 50_000_000  # above LARGE_DATA: epochs capped at about this many ratings seen (at least 2)


def affordable(config: TrainConfig, titles: int, report=print, ratings: int = 0, users: int = 0) -> TrainConfig:
    """``config`` as this data can afford it, each change said:

    - the loss: above ``FULL_SOFTMAX_UP_TO`` titles, or ``FULL_SOFTMAX_CELLS`` training ratings x titles, a full
      softmax costs a titles-wide matrix product per batch, too much per epoch, so the in-batch softmax with
      the log-Q correction is used instead;
    - the optimizer: above ``LAZY_ADAM_ROWS`` users + titles, Adam becomes LazyAdam (export/model.py), which
      updates only the rows a batch looked up;
    - the epochs: above ``LARGE_DATA`` training ratings an epoch is thousands of steps (ML-25M: 20k), so
      early stopping waits one epoch (``patience`` 1) and at most ``RATING_PASSES`` / ratings epochs run (2 at
      ML-25M's size, 6 at ML-10M's)."""
    config = _affordable_loss(config, titles, report, ratings)
    if config.optimizer == "adam" and config.weight_decay == 0 and users + titles > LAZY_ADAM_ROWS:
        report(
            f"optimizer: LazyAdam ({users} users + {titles} titles > {LAZY_ADAM_ROWS}: Adam would update every "
            "row of both tables at every step)"
        )
        config = dataclasses.replace(config, optimizer="lazy_adam")
    if ratings > LARGE_DATA:
        epochs = min(config.epochs, max(2, RATING_PASSES // ratings))
        if (epochs, 1) != (config.epochs, config.patience):
            report(
                f"epochs: at most {epochs}, patience 1 ({ratings} training ratings > {LARGE_DATA}: an epoch is "
                f"{-(-ratings // config.batch_size)} steps)"
            )
            config = dataclasses.replace(config, epochs=epochs, patience=min(config.patience, 1))
    return config


def _affordable_loss(config: TrainConfig, titles: int, report, ratings: int) -> TrainConfig:
    if config.loss == "full_softmax" and not full_softmax_affordable(titles, ratings):
        why = (
            f"{titles} titles > {FULL_SOFTMAX_UP_TO}"
            if titles > FULL_SOFTMAX_UP_TO
            else f"{ratings} training ratings x {titles} titles > {FULL_SOFTMAX_CELLS:.0e} logits an epoch"
        )
        report(
            f"loss: in-batch softmax with log-Q correction ({why}: "
            "a full softmax would cost a catalogue-wide product per batch)"
        )
        return dataclasses.replace(config, loss="in_batch_softmax", log_q=True)
    return config


def _suggest(trial, base: TrainConfig, losses: tuple[str, ...]) -> TrainConfig:
    return dataclasses.replace(
        base,
        embedding_dimension=trial.suggest_categorical("embedding_dimension", list(DIMENSIONS)),
        l2=trial.suggest_float("l2", 1e-6, 1e-3, log=True),
        learning_rate=trial.suggest_float("learning_rate", 1e-3, 1e-2, log=True),
        loss=trial.suggest_categorical("loss", list(losses)),
        user_tower=trial.suggest_categorical("user_tower", list(USER_TOWERS)),
    )


def stop_reason(trials: int, max_trials: int, seconds: float, budget_s: float) -> str:
    """Why a search of ``trials`` trials (pruned ones included) in ``seconds`` stopped: the trial count or the
    budget."""
    if trials >= max_trials:
        return f"{max_trials} trials, the most --tune-trials allows"
    if seconds >= budget_s:
        return f"the {budget_s:g} s budget (--tune-budget) was spent; a started trial finishes"
    return "the sampler ended the study"


def trial_time_limit(budget_s: float) -> float:
    """Seconds of training a trial gets at most (its epochs stop at the first epoch end past it): the budget over
    ``MIN_TRIALS``, so that the search sees at least that many configurations when no trial is pruned."""
    return budget_s / MIN_TRIALS


def pruner():
    """Optuna's median stopping rule over the epochs' validation figures (see the module doc)."""
    import optuna

    return optuna.pruners.MedianPruner(n_startup_trials=1, n_warmup_steps=PRUNE_WARMUP_EPOCHS, interval_steps=1)


class SearchProgress:
    """The state of a running search, said as one line (``line``) that a ``Ticker`` reports every ``every_s``:
    the trial and its epoch and batch, the latest validation figure, the best trial so far, the budget left.

    The search calls ``begin`` / ``scoring`` / ``scored`` / ``end`` around each trial; ``line`` reads the
    trial's ``Progress`` (the optimizer's step counter), so training gets no per-batch hook."""

    def __init__(
        self,
        budget_s: float,
        max_trials: int,
        metric: str,
        criterion: str,
        every_s: float | None = None,
        report=print,
        clock=time.monotonic,
    ):
        self.budget_s, self.max_trials, self.metric, self.criterion = budget_s, max_trials, metric, criterion
        self.clock, self.start = clock, clock()
        self.finished = 0
        self.trial: int | None = None
        self.progress: Progress | None = None
        self.phase = ""  # "" while training, else what is being scored
        self.latest: tuple[int, float] | None = None  # (epoch, validation figure) of the current trial
        self.best: tuple[int, float] | None = None  # (trial, criterion) of the best finished trial
        self.ticker = Ticker(self.line, every_s, report) if every_s is not None else None

    def __enter__(self) -> SearchProgress:
        if self.ticker is not None:
            self.ticker.start()
        return self

    def __exit__(self, *exc) -> None:
        if self.ticker is not None:
            self.ticker.close()

    def begin(self, number: int, progress: Progress) -> None:
        """Trial ``number`` starts; ``progress`` is the callback its training runs with."""
        self.trial, self.progress, self.latest, self.phase = number, progress, None, ""

    def scoring(self, what: str) -> None:
        """Scoring on validation has begun (``what``: e.g. "epoch 3")."""
        self.phase = what

    def scored(self, value: float) -> None:
        """An epoch's validation figure (``metric``)."""
        epoch = self.progress.epoch + 1 if self.progress is not None else 0
        self.latest, self.phase = (epoch, value), ""

    def end(self, number: int, value: float | None) -> None:
        """Trial ``number`` finished with ``criterion`` ``value`` (None: it was pruned)."""
        self.finished += 1
        if value is not None and (self.best is None or value > self.best[1]):
            self.best = (number, value)
        self.trial, self.progress, self.latest, self.phase = None, None, None, ""

    def left(self) -> str:
        """The budget left, or how long ago it was spent."""
        left = self.budget_s - (self.clock() - self.start)
        if left > 0:
            return f"{left:.0f} s of the {self.budget_s:g} s budget left"
        return f"the {self.budget_s:g} s budget was spent {-left:.0f} s ago (a started trial finishes)"

    def line(self) -> str:
        """Where the search is now."""
        now = self.clock() - self.start
        progress = self.progress
        if self.trial is None or progress is None:
            where = f"{self.finished} trial(s) done, the next one starting"
        else:
            where = f"trial {self.trial} ({self.finished + 1} of at most {self.max_trials})"
            if not progress.started:
                where += ", building its model"
            else:
                epoch, done = f"epoch {progress.epoch + 1}/{progress.epochs}", progress.done()
                if self.phase:
                    where += f", {epoch}: scoring {self.phase} on validation"
                elif done >= progress.steps:
                    where += f", {epoch} done"
                else:
                    where += f", {epoch}: batch {done:,} of {progress.steps:,}"
            if self.latest is not None:
                where += f", validation {self.metric} {self.latest[1]:.4f} after epoch {self.latest[0]}"
        best = f"; best: trial {self.best[0]} ({self.criterion} {self.best[1]:.4f})" if self.best else ""
        return f"tune, {now:.0f} s: {where}{best}; {self.left()}"


def search(
    base: TrainConfig,
    data,
    fit_idx,
    score: Callable[[Trained], float],
    metric: str,
    budget_s: float,
    max_trials: int,
    report=print,
    criterion: Callable[[Trained], float] | None = None,
    criterion_name: str = "",
) -> tuple[Trained, dict]:
    """(the best trial's model, a summary of every trial) over ``fit_idx``.

    Each trial stops early on ``score`` (``metric``); trials are ranked by ``criterion`` of their best epoch
    (``criterion_name``; default: ``score`` itself)."""
    if criterion is None:
        criterion, criterion_name = score, metric
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    logging.getLogger("optuna").setLevel(logging.WARNING)
    study = optuna.create_study(
        direction="maximize", sampler=optuna.samplers.TPESampler(seed=base.seed), pruner=pruner()
    )
    first = {
        "embedding_dimension": base.embedding_dimension,
        "l2": base.l2,
        "learning_rate": base.learning_rate,
        "loss": base.loss,
        "user_tower": base.user_tower,
    }
    losses = losses_for(len(data.movies), len(fit_idx))
    if base.loss in losses and base.embedding_dimension in DIMENSIONS and base.user_tower in USER_TOWERS:
        study.enqueue_trial(first)  # the preset's own settings first
    models: dict[int, Trained] = {}
    values: dict[int, float] = {}
    trials: list[dict] = []
    start = time.perf_counter()
    steps = training.steps_per_epoch(base, len(fit_idx))
    watch = SearchProgress(budget_s, max_trials, metric, criterion_name, every_s=PROGRESS_EVERY_S, report=report)

    limit_s = trial_time_limit(budget_s)
    current: dict = {}  # the running trial and its reported curve

    def scored(trained: Trained) -> float:
        assert watch.progress is not None  # set by watch.begin before the trial trains
        epoch = watch.progress.epoch
        watch.scoring(f"epoch {epoch + 1}")
        value = float(score(trained))
        watch.scored(value)
        trial = current["trial"]
        current["curve"].append(value)
        trial.report(value, epoch + 1)
        if trial.should_prune():
            raise optuna.TrialPruned(f"epoch {epoch + 1}: {metric} {max(current['curve']):.4f} so far")
        return value

    def objective(trial) -> float:
        config = _suggest(trial, base, losses)
        began = time.perf_counter()
        progress = Progress(steps, config.epochs, every_s=None)
        watch.begin(trial.number, progress)
        current.update(trial=trial, curve=[])
        try:
            trained = train(
                config,
                data,
                fit_idx,
                verbose=0,
                validation=scored,
                metric=metric,
                report=lambda line: None,
                progress=progress,
                time_limit_s=min(limit_s, max(0.0, budget_s - (time.perf_counter() - start))),
            )
        except optuna.TrialPruned:
            curve = current["curve"]
            watch.end(trial.number, None)
            trials.append(
                {
                    "number": trial.number,
                    "params": dict(trial.params),
                    metric: round(max(curve), 6),
                    "best_epoch": int(np.argmax(curve)) + 1,
                    "epochs": len(curve),
                    "stopped_by": "pruned",
                    "seconds": round(time.perf_counter() - began, 2),
                }
            )
            report(
                f"tune trial {trial.number}: {_describe(config)}: pruned after epoch {len(curve)} (validation "
                f"{metric} {max(curve):.4f}, below the median of the finished trials; "
                f"{time.perf_counter() - began:.0f} s); {watch.left()}"
            )
            raise
        validation = trained.validation
        assert validation is not None  # train() records it when given validation=
        if criterion is not score:
            watch.scoring(f"the best epoch's {criterion_name}")
            value = float(criterion(trained))
        else:
            value = float(validation["best"])
        watch.end(trial.number, value)
        models[trial.number] = trained
        values[trial.number] = value
        # Only the best model so far is kept in memory (the earliest of equals).
        best = max(models, key=lambda n: (values[n], -n))
        for number in [n for n in models if n != best]:
            del models[number]
        trials.append(
            {
                "number": trial.number,
                "params": dict(trial.params),
                metric: round(float(validation["best"]), 6),
                criterion_name: round(value, 6),
                "best_epoch": validation["best_epoch"],
                "epochs": len(validation["curve"]),
                "stopped_by": validation["stopped_by"],
                "seconds": round(time.perf_counter() - began, 2),
            }
        )
        capped = " at its time cap" if validation["stopped_by"] == "time" else ""
        report(
            f"tune trial {trial.number}: {_describe(config)}: validation {criterion_name} {value:.4f} (epoch "
            f"{validation['best_epoch']} of {len(validation['curve'])}{capped}, "
            f"{time.perf_counter() - began:.0f} s); {watch.left()}"
        )
        return value

    with watch:
        study.optimize(objective, n_trials=max_trials, timeout=budget_s, gc_after_trial=True)
    [number] = models  # the best trial's (the earliest of equals: the preset's own settings win ties)
    best = next(t for t in trials if t["number"] == number)
    seconds = time.perf_counter() - start
    summary = {
        "budget_s": budget_s,
        "max_trials": max_trials,
        "seconds": round(seconds, 2),
        "stopped": stop_reason(len(trials), max_trials, seconds, budget_s),
        "sampler": "optuna TPE",
        "losses": list(losses),
        "criterion": criterion_name,
        "trials": trials,
        "best": best,
    }
    by = {why: sum(1 for t in trials if t.get("stopped_by") == why) for why in ("pruned", "patience", "time")}
    summary.update(pruner="optuna MedianPruner", trial_time_limit_s=round(limit_s, 1), stopped_by=by)
    report(
        f"tune: {len(trials)} trial(s) in {seconds:.0f} s ({by['pruned']} pruned by the median rule, "
        f"{by['patience']} stopped early on validation, {by['time']} at the {limit_s:.0f} s time cap), stopped: "
        f"{summary['stopped']}; best trial {number} ({criterion_name} {best[criterion_name]:.4f})"
    )
    return models[number], summary


def _describe(config: TrainConfig) -> str:
    return (
        f"dim {config.embedding_dimension}, l2 {config.l2:.2g}, lr {config.learning_rate:.2g}, {config.loss}, "
        f"user tower {config.user_tower}"
    )
