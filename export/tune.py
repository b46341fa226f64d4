"""Hyperparameter search for the towers within a time budget, chosen on the validation split (Optuna's TPE).

Each trial trains on the fitting part with early stopping on validation (export/train.py) and scores its
best epoch; the first trial is the preset's own settings, so tuning can only find something at least as
good on validation. The search space is the recipe's: embedding dimension, L2 weight, learning rate and the
loss; epochs come from early stopping. The loss is searched only where both are affordable: below
``FULL_SOFTMAX_UP_TO`` titles a softmax over the whole catalogue is cheap and in-batch negatives lost every
trial on the synthetic data (validation top-10 0.10-0.13 against 0.20-0.22 in one 15-trial run), so the
search keeps the full softmax there and spends its budget on the other settings; above it, in-batch only. The study
stops at ``budget_s`` seconds or ``max_trials`` trials, whichever comes first (a trial that has started
finishes). Optuna is used rather than KerasTuner because the objective is not a Keras metric (the
seen-excluded hit rate over the whole catalogue) and the budget is wall-clock time.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from typing import Callable

from export.config import TrainConfig
from export.train import Trained, train

DIMENSIONS = (32, 64, 128)
LOSSES = ("full_softmax", "in_batch_softmax")
FULL_SOFTMAX_UP_TO = 50_000  # titles


def losses_for(titles: int) -> tuple[str, ...]:
    return ("full_softmax",) if titles <= FULL_SOFTMAX_UP_TO else ("in_batch_softmax",)


def _suggest(trial, base: TrainConfig, losses: tuple[str, ...]) -> TrainConfig:
    return dataclasses.replace(
        base,
        embedding_dimension=trial.suggest_categorical("embedding_dimension", list(DIMENSIONS)),
        l2=trial.suggest_float("l2", 1e-6, 1e-3, log=True),
        learning_rate=trial.suggest_float("learning_rate", 1e-3, 1e-2, log=True),
        loss=trial.suggest_categorical("loss", list(losses)),
    )


def search(base: TrainConfig, data, fit_idx, score: Callable[[Trained], float], metric: str, budget_s: float,
           max_trials: int, report=print) -> tuple[Trained, dict]:
    """(the best trial's model, a summary of every trial) over ``fit_idx``, scored by ``score``."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    logging.getLogger("optuna").setLevel(logging.WARNING)
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=base.seed))
    first = {"embedding_dimension": base.embedding_dimension, "l2": base.l2,
             "learning_rate": base.learning_rate, "loss": base.loss}
    losses = losses_for(len(data.movies))
    if base.loss in losses and base.embedding_dimension in DIMENSIONS:
        study.enqueue_trial(first)  # the preset's own settings first
    models: dict[int, Trained] = {}
    trials: list[dict] = []
    start = time.perf_counter()

    def objective(trial) -> float:
        config = _suggest(trial, base, losses)
        began = time.perf_counter()
        trained = train(config, data, fit_idx, verbose=0, validation=score, metric=metric, report=lambda line: None)
        value = float(trained.validation["best"])
        models[trial.number] = trained
        # Only the best model so far is kept in memory.
        best = max(models, key=lambda n: models[n].validation["best"])
        for number in [n for n in models if n != best]:
            del models[number]
        trials.append({"number": trial.number, "params": dict(trial.params), metric: round(value, 6),
                       "best_epoch": trained.validation["best_epoch"],
                       "seconds": round(time.perf_counter() - began, 2)})
        report(f"tune trial {trial.number}: dim {config.embedding_dimension}, l2 {config.l2:.2g}, "
               f"lr {config.learning_rate:.2g}, {config.loss}: validation {metric} {value:.4f} "
               f"(epoch {trained.validation['best_epoch']}, {time.perf_counter() - began:.0f} s)")
        return value

    study.optimize(objective, n_trials=max_trials, timeout=budget_s, gc_after_trial=True)
    [number] = models  # the best trial's (the earliest of equals: the preset's own settings win ties)
    best = next(t for t in trials if t["number"] == number)
    summary = {"budget_s": budget_s, "max_trials": max_trials, "seconds": round(time.perf_counter() - start, 2),
               "sampler": "optuna TPE", "losses": list(losses), "trials": trials, "best": best}
    report(f"tune: {len(trials)} trials in {summary['seconds']:.0f} s; best trial {number} ({metric} {best[metric]:.4f})")
    return models[number], summary
