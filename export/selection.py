"""What is served, chosen on a validation split carved out of the training part (never the test part).

With ``TrainConfig.validation_fraction > 0`` (the ``default`` preset):

1. the training part is split into a fitting part and a validation part (``export.data.validation_split``:
   random for the random split, each user's latest ratings for the time split);
2. the towers train on the fitting part, scored on validation after every epoch, and stop early
   (``patience``) at the best epoch (``export.train.EarlyStopping``); with ``tune_budget_s > 0`` this is a
   search over the recipe's hyperparameters (export/tune.py) and the best trial is kept;
3. with ``ease_rank > 0``, EASE's factors (export/ease.py) are fitted on the fitting part too: for each of
   the lambdas and ranks ``ease_offered`` gives (the configured ones; where a fit is cheap ``LAMBDAS`` too; up to
   ``EXACT_RANK_UP_TO`` users the exact rank, which reproduces full-rank EASE for the known users) EASE's factors
   alone are scored on validation (each lambda at the configured rank, then the larger ranks at the best lambda)
   and the best is kept; then each
   of ``BLENDS`` (towers alone, EASE alone, weighted sums of both) is scored on validation for the
   ``exclude_seen`` signature, by the mean of its seen-excluded top-10 and top-100 hit rates (a blend chosen on
   top-10 alone lost to EASE at top-100 on the test part of synthetic data). ``serving_default`` always keeps
   the towers alone: EASE ranks a user's seen titles high, which costs the plain signature's hit rates
   (measured on synthetic data: top-100 without exclusion 0.47 -> 0.44 for a blend that wins seen-excluded
   top-10), so the blend serves only where seen titles are excluded;
4. the towers are refitted on the whole training part with the chosen settings for the best epoch count and,
   if the chosen candidate uses EASE, EASE is refitted there too. Above ``tune.LARGE_DATA`` training ratings
   the early-stopped towers are kept instead: the validation part is then a tenth of millions of ratings, and a
   refit would double the training time for a tenth more data (the manifest's ``training.validation.refit``).

The validation metric is the seen-excluded top-10 hit rate (what users of ``exclude_seen`` get). Without
validation (the ``seed`` preset) the towers train on the training part as the tutorial does.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from export import distributed, ease, tune
from export import evaluate as evaluation
from export.train import Trained, train
from export.vectors import Blend, popularity, retrieval_vectors

METRIC = "top_10_exclude_seen"
METRIC_ROW = "exclude_seen"
# Tuning trials and the blend for exclude_seen are chosen on both columns users of exclude_seen get (and the
# comparison with the baselines judges): the mean of the seen-excluded top-10 and top-100 hit rates on
# validation. Early stopping watches METRIC alone.
BLEND_KS = (10, 100)
BLEND_CRITERION = "mean_top_10_top_100_exclude_seen"
# (towers' weight, EASE's weight relative to the towers' score spread)
BLENDS = ((1.0, 0.0), (1.0, 0.25), (1.0, 0.5), (1.0, 1.0), (1.0, 2.0), (0.0, 1.0))
# EASE's lambdas tried for exclude_seen where a fit is cheap (ease_offered), and the largest exact rank offered.
LAMBDAS = (250.0, 1000.0)
CHEAP_LAMBDA_TITLES = 2_048
EXACT_RANK_UP_TO = 1_024


@dataclasses.dataclass(frozen=True)
class Fitted:
    trained: Trained
    blend: Blend | None  # exclude_seen's blend with EASE (None: the towers alone, as serving_default)
    validation: dict | None  # for the manifest's training.validation


def blend_for(
    trained: Trained,
    pop: np.ndarray,
    factors: tuple[np.ndarray, np.ndarray],
    tower: float,
    weight: float,
    sample: int = 256,
) -> Blend:
    """EASE's factors scaled so that ``weight`` 1 gives them the same score spread as the towers."""
    user_factors, item_factors = factors
    rows = np.arange(1, min(len(trained.user_ids), sample) + 1)
    towers = retrieval_vectors(trained, pop)
    spread = float(np.std(towers.queries[rows] @ towers.candidates.T))
    theirs = float(np.std(user_factors[rows] @ item_factors.T)) or 1.0
    queries = np.zeros((len(trained.user_ids) + 1, user_factors.shape[1]), dtype=np.float32)
    queries[1:] = user_factors[1:] * (weight * spread / theirs)
    return Blend(tower=tower, user_factors=queries, item_factors=item_factors)


def ease_factors(
    trained: Trained, users: np.ndarray, items: np.ndarray, config, lam: float | None = None, rank: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """EASE's factors (export/ease.py) of the ratings ``users`` x ``items`` over ``trained``'s users and titles,
    row 0 (the unknown user) zeros; ``lam`` and ``rank`` default to the configured ones."""
    seen = ease.history(trained.user_ids, trained.movie_titles, users, items)
    lam = config.ease_lambda if lam is None else lam
    rank = config.train.ease_rank if rank is None else rank
    user_factors, item_factors = ease.factors(seen.without_first_row(), lam, rank)
    return np.concatenate([np.zeros((1, user_factors.shape[1]), np.float32), user_factors]), item_factors


def ease_offered(config, users: int, titles: int) -> tuple[tuple[float, ...], tuple[int, ...]]:
    """(lambdas, ranks) of EASE's factors offered to exclude_seen: the configured lambda, and ``LAMBDAS`` too
    where a fit is cheap (fewer users than titles: ``ease.scores`` from the users' side, see ``ease.dual_scores_apply``;
    or at most ``CHEAP_LAMBDA_TITLES``);
    the configured rank, and the exact rank min(users, titles) up to ``EXACT_RANK_UP_TO`` (the known users' EASE
    scores X B have at most that rank, so those factors give exactly EASE's scores)."""
    cheap = users < titles or titles <= CHEAP_LAMBDA_TITLES
    lambdas = tuple(sorted({config.ease_lambda, *LAMBDAS})) if cheap else (config.ease_lambda,)
    exact = min(users, titles)
    ranks: tuple[int, ...] = (config.train.ease_rank,)
    if config.train.ease_rank < exact <= EXACT_RANK_UP_TO:
        ranks += (exact,)
    return lambdas, ranks


def fit(config, data, train_idx: np.ndarray, report=print) -> Fitted:
    """Train what ``config`` asks for on ``train_idx`` (see the module doc); returns the final model."""
    n_users = len(data.ratings.coded("user_id").vocabulary)
    tc = tune.affordable(config.train, len(data.movies), report, ratings=len(train_idx), users=n_users)
    if tc.tune_budget_s > 0 and distributed.strategy() is not None:
        report("tuning: off across workers (each worker's time budget would end at a different trial)")
        tc = dataclasses.replace(tc, tune_budget_s=0.0)
    if tc.validation_fraction <= 0:
        return Fitted(train(tc, data, train_idx), None, None)
    from export.data import validation_split

    fit_idx, val_idx = validation_split(data.ratings, train_idx, kind=config.split, fraction=tc.validation_fraction)
    users, titles = data.ratings.coded("user_id"), data.ratings.coded("movie_title")
    fit_users, fit_titles, val_users, val_titles = users[fit_idx], titles[fit_idx], users[val_idx], titles[val_idx]
    report(
        f"validation: {len(val_idx)} of {len(train_idx)} training ratings held out ({config.split}); "
        f"{len(fit_idx)} to fit"
    )

    def rates(trained: Trained, blend: Blend | None = None, ks=(10,)) -> dict:
        """Seen-excluded hit rates on the validation part (with ``blend``: of exclude_seen's blended vectors)."""
        pop = popularity(trained.movie_titles, fit_titles)
        vectors = retrieval_vectors(trained, pop, blend)
        return evaluation.exclude_seen_rates(vectors, fit_users, fit_titles, val_users, val_titles, ks=ks)

    def score(trained: Trained) -> float:
        return rates(trained)["top_10"]

    def criterion(trained: Trained, blend: Blend | None = None) -> float:
        return _mean(rates(trained, blend, ks=BLEND_KS))

    tuning = None
    if tc.tune_budget_s > 0:
        first, tuning = tune.search(
            tc,
            data,
            fit_idx,
            score,
            METRIC,
            tc.tune_budget_s,
            tc.tune_trials,
            report,
            criterion=criterion,
            criterion_name=BLEND_CRITERION,
        )
        tc = dataclasses.replace(first.config, epochs=tc.epochs)
    else:
        first = train(tc, data, fit_idx, validation=score, metric=METRIC, report=report)
    summary = dict(first.validation or {})
    summary.update(fraction=tc.validation_fraction, ratings=len(val_idx))
    if tuning is not None:
        summary["tuning"] = tuning
    best_epoch = summary["best_epoch"]

    chosen = (1.0, 0.0)
    ease_lambda, ease_rank = config.ease_lambda, tc.ease_rank
    skipped = ease.fits(len(first.user_ids), len(first.movie_titles), config.baseline_max_items)
    if tc.ease_rank and skipped is None:
        report(
            f"validation: EASE's rank-{tc.ease_rank} factors for exclude_seen "
            f"({len(first.user_ids):,} users x {len(first.movie_titles):,} titles)"
        )
        pop = popularity(first.movie_titles, fit_titles)
        lambdas, ranks = ease_offered(config, len(first.user_ids), len(first.movie_titles))
        # EASE's factors alone: each lambda at the configured rank, then the larger ranks at the best lambda (an
        # exact SVD costs more than a randomised one at rank 64); the best is blended.
        variants: list[dict] = []
        factors = None
        offered = [(lam, ranks[0]) for lam in lambdas]
        while offered:
            lam, rank = offered.pop(0)
            candidate = ease_factors(first, fit_users, fit_titles, config, lam, rank)
            got = rates(first, blend_for(first, pop, candidate, 0.0, 1.0), ks=BLEND_KS)
            variants.append(
                {
                    "lambda": lam,
                    "rank": rank,
                    **{f"{METRIC_ROW}_{k}": round(v, 6) for k, v in got.items()},
                    BLEND_CRITERION: round(_mean(got), 6),
                }
            )
            if max(variants, key=lambda v: v[BLEND_CRITERION]) is variants[-1]:  # the first best wins ties
                factors, ease_lambda, ease_rank = candidate, lam, rank
            if not offered and rank == ranks[0]:
                offered = [(ease_lambda, r) for r in ranks[1:]]
        report(
            "validation seen-excluded top-10 / top-100 of EASE's factors alone: "
            + ", ".join(
                f"lambda {v['lambda']:g} rank {v['rank']} {v[f'{METRIC_ROW}_top_10']:.4f} / "
                f"{v[f'{METRIC_ROW}_top_100']:.4f}"
                for v in variants
            )
            + f" -> lambda {ease_lambda:g}, rank {ease_rank}"
        )
        assert factors is not None
        trials = []
        for tower, weight in BLENDS:
            blend = None if weight == 0 else blend_for(first, pop, factors, tower, weight)
            got = rates(first, blend, ks=BLEND_KS)
            trials.append(
                {
                    "tower": tower,
                    "ease": weight,
                    **{f"{METRIC_ROW}_{k}": round(v, 6) for k, v in got.items()},
                    BLEND_CRITERION: round(_mean(got), 6),
                }
            )
        # The first best wins ties: the towers alone come first.
        best = max(trials, key=lambda t: t[BLEND_CRITERION])
        chosen = (best["tower"], best["ease"])
        summary["blends"] = {
            "ease_lambda": ease_lambda,
            "ease_rank": ease_rank,
            "ease_variants": variants,
            "trials": trials,
            "criterion": BLEND_CRITERION,
            "signature": "exclude_seen",
            "chosen": {"tower": chosen[0], "ease": chosen[1]},
        }
        report(
            "validation seen-excluded top-10 / top-100 for exclude_seen: "
            + ", ".join(
                f"{_name(t['tower'], t['ease'])} {t[f'{METRIC_ROW}_top_10']:.4f} / {t[f'{METRIC_ROW}_top_100']:.4f}"
                for t in trials
            )
            + f" -> {_name(*chosen)}"
        )
    elif tc.ease_rank:
        summary["blends"] = {"skipped": skipped}
        report(f"validation: EASE factors skipped: {skipped}")

    if len(train_idx) > tune.LARGE_DATA:
        summary["refit"] = (
            f"no: {len(train_idx)} training ratings > {tune.LARGE_DATA}; the early-stopped towers are kept"
        )
        report(f"refit: {summary['refit']}")
        final = dataclasses.replace(first, config=dataclasses.replace(tc, epochs=best_epoch))
    else:
        summary["refit"] = f"on all {len(train_idx)} training ratings for {best_epoch} epochs"
        report(f"refitting {summary['refit']}")
        final = train(dataclasses.replace(tc, epochs=best_epoch), data, train_idx)
    blend = None
    if chosen[1] > 0:
        all_titles = titles[train_idx]
        factors = ease_factors(final, users[train_idx], all_titles, config, ease_lambda, ease_rank)
        blend = blend_for(final, popularity(final.movie_titles, all_titles), factors, *chosen)
    return Fitted(dataclasses.replace(final, validation=summary), blend, summary)  # final.config: tuned


def _mean(rates: dict) -> float:
    """BLEND_CRITERION of seen-excluded hit rates at BLEND_KS: their mean."""
    return sum(rates.values()) / len(rates)


def _name(tower: float, weight: float) -> str:
    if weight == 0:
        return "towers"
    return "EASE" if tower == 0 else f"towers+{weight:g}xEASE"
