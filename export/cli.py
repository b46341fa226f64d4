"""``python -m export``: a thin map from flags onto ExportConfig and ``pipeline.run``.

Every error exits non-zero with one line on stderr: ``export: error: <reason>`` (2 for bad flags or
settings, 1 for data, validation and publishing failures). A version the gate refuses (export/gate.py) is one
line ``export: refused by the gate: ...`` and exit 3, or 0 with ``--on-refusal keep-serving`` when the store
still holds a version of every model.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
from pathlib import Path

import export  # noqa: F401
from export.config import INDEX_KINDS, MODEL_NAMES, PRESETS, SPLIT_KINDS, ConfigError, ExportConfig, IndexConfig, preset

logger = logging.getLogger("export")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, not argparse's usage block
        raise ConfigError(message)


def _optional_float(value: str) -> float | None:
    """A float, or None for an empty value (as compose passes an unset variable: --tune-budget=)."""
    return None if value.strip() == "" else float(value)


def parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="python -m export",
        description="Train a two-tower retrieval model on MovieLens, evaluate it, and publish validated "
        "TF Serving versions of `retrieval` and `similar_movies` into a model store.",
    )
    p.add_argument(
        "--data",
        default="tfds",
        help="tfds (MovieLens 100K) | tfds:1m, tfds:20m, tfds:25m, tfds:latest-small | synthetic | "
        "a GroupLens folder or zip (ml-100k, ml-1m, ml-10m, ml-20m, ml-25m, "
        "ml-latest) | your own interactions, FILE.csv/.tsv/.parquet (default tfds)",
    )
    p.add_argument("--user-column", default="user_id", help="your file's user column (default user_id)")
    p.add_argument("--item-column", default="item_id", help="your file's item column (default item_id)")
    p.add_argument("--time-column", help="your file's time column (default timestamp if present, else row order)")
    p.add_argument("--items", help="a catalogue CSV/Parquet for your file: item ids and titles")
    p.add_argument("--item-id-column", default="item_id", help="the catalogue's id column (default item_id)")
    p.add_argument("--title-column", default="title", help="the catalogue's title column (default title)")
    p.add_argument("--preset", default="default", help=f"training recipe: {' | '.join(PRESETS)} (default default)")
    p.add_argument(
        "--model-base-path",
        default="models",
        type=Path,
        help="store root: publishes DIR/retrieval/<version> and DIR/similar_movies/<version> (default models)",
    )
    p.add_argument("--index", default="scann", help=f"{' | '.join(INDEX_KINDS)} (default scann)")
    p.add_argument("--k", type=int, default=10, help="results per query, fixed at export (default 10)")
    p.add_argument("--epochs", type=int, help="override the preset's number of epochs")
    p.add_argument("--models", default=",".join(MODEL_NAMES), help="comma-separated models to publish")
    p.add_argument("--synthetic-size", default="movielens", help="tiny | movielens (with --data synthetic)")
    p.add_argument("--seed", type=int, default=0, help="synthetic data seed (default 0)")
    p.add_argument("--train-seed", type=int, help="override the preset's tf.random.set_seed value")
    p.add_argument(
        "--user-features",
        help="comma-separated side features for the user tower: "
        "user_age,user_gender,user_occupation (default: the preset's)",
    )
    p.add_argument("--movie-features", help="comma-separated side features for the movie tower: movie_genres")
    p.add_argument("--split", default="random", help=f"{' | '.join(SPLIT_KINDS)} (default random: the seed's)")
    p.add_argument("--keep", type=int, default=3, help="versions kept per model when pruning (default 3)")
    p.add_argument(
        "--recall-threshold",
        type=float,
        default=0.95,
        help="minimum recall@10 of the index against exact search (default 0.95)",
    )
    p.add_argument(
        "--model-config-file",
        type=Path,
        help="a TF Serving models.config: versions it pins (labels, specific) are never pruned",
    )
    p.add_argument("--validation-timeout", type=float, default=300.0, help="seconds for the fresh-process check")
    # The gate before publish (export/gate.py); a refusal exits 3 (EXIT_REFUSED) unless --on-refusal says otherwise.
    p.add_argument(
        "--gate",
        nargs="?",
        const="on",
        default="on",
        choices=("on", "off"),
        help="on: publish only a version that beats popularity and is not worse than the served one; off: publish "
        "without judging",
    )
    p.add_argument("--no-gate", dest="gate", action="store_const", const="off", help="the same as --gate=off")
    p.add_argument(
        "--gate-tolerance",
        type=float,
        help="how far (hit rate) below the served version is worse (default: the 95%% interval of the difference)",
    )
    p.add_argument(
        "--on-refusal",
        choices=("fail", "keep-serving"),
        default="fail",
        help="fail: a refused version exits 3; keep-serving: exit 0 when the store still holds a version of every "
        "model, which keeps serving (compose, Kubernetes), 3 otherwise",
    )
    scann = IndexConfig()
    p.add_argument("--scann-num-leaves", type=int, help="partitions (default: about sqrt(candidates))")
    p.add_argument(
        "--scann-leaves-to-search",
        type=int,
        help="partitions searched per query (default: chosen by measuring recall and latency)",
    )
    p.add_argument("--scann-training-iterations", type=int, default=scann.training_iterations)
    p.add_argument("--scann-dimensions-per-block", type=int, default=scann.dimensions_per_block)
    p.add_argument(
        "--scann-reorder",
        type=int,
        help="exact re-scoring of this many candidates (0 = off; default: chosen with the leaves)",
    )
    p.add_argument(
        "--validation-fraction",
        type=float,
        help="hold out this fraction of the training part to stop early and choose on (0: none; "
        "default: the preset's, 0.1 for default, 0 for seed)",
    )
    p.add_argument("--patience", type=int, help="epochs without a better validation score before stopping")
    p.add_argument(
        "--ease-rank", type=int, help="rank of EASE's factors offered beside the towers on validation (0: towers only)"
    )
    p.add_argument(
        "--tune",
        action="store_true",
        help="search the recipe's hyperparameters on validation (the default preset does, 300 s)",
    )
    p.add_argument(
        "--tune-budget",
        type=_optional_float,
        help="seconds for the search (0: none; default or empty: the preset's, 300 for default, 0 for seed)",
    )
    p.add_argument("--tune-trials", type=int, help="at most this many trials (default 16)")
    p.add_argument("--ease-lambda", type=float, default=500.0, help="L2 weight of the EASE baseline (default 500)")
    p.add_argument(
        "--baseline-max-items",
        type=int,
        default=12_000,
        help="skip the EASE and item-kNN baselines above this many titles (default 12000: ~3.5 GB)",
    )
    p.add_argument(
        "--user-tower",
        help="id | history | id+history: the user's id embedding, a bag of the user's "
        "training items, or both (default: the preset's, id; tuning may choose)",
    )
    p.add_argument(
        "--temperature",
        type=float,
        help="train on cosine similarity over this temperature (0: raw dot products, the default)",
    )
    p.add_argument(
        "--log-q",
        action=argparse.BooleanOptionalAction,
        help="log-Q correction of the in-batch softmax (default: on for default, off for seed)",
    )
    p.add_argument("--weight-decay", type=float, help="AdamW's decoupled weight decay (default 0: none)")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return p


def config_from_args(args: argparse.Namespace) -> ExportConfig:
    train = preset(args.preset)
    overrides = {}
    if args.epochs is not None:
        overrides["epochs"] = args.epochs
    if args.train_seed is not None:
        overrides["seed"] = args.train_seed
    for flag in (
        "validation_fraction",
        "patience",
        "ease_rank",
        "tune_trials",
        "user_tower",
        "temperature",
        "log_q",
        "weight_decay",
    ):
        if getattr(args, flag) is not None:
            overrides[flag] = getattr(args, flag)
    if args.tune_budget is not None:
        overrides["tune_budget_s"] = args.tune_budget
    elif args.tune and not train.tune_budget_s:
        overrides["tune_budget_s"] = 300.0
    for flag in ("user_features", "movie_features"):
        value = getattr(args, flag)
        if value is not None:
            overrides[flag] = tuple(v.strip() for v in value.split(",") if v.strip())
    if overrides:
        train = dataclasses.replace(train, **overrides)
    defaults = IndexConfig()
    # Search settings given on the command line are used as they are; otherwise the export measures them.
    autotune = args.scann_leaves_to_search is None and args.scann_reorder is None
    index = IndexConfig(
        kind=args.index,
        k=args.k,
        num_leaves=args.scann_num_leaves,
        num_leaves_to_search=args.scann_leaves_to_search or defaults.num_leaves_to_search,
        training_iterations=args.scann_training_iterations,
        dimensions_per_block=args.scann_dimensions_per_block,
        num_reordering_candidates=(
            defaults.num_reordering_candidates if args.scann_reorder is None else args.scann_reorder or None
        ),
        autotune=autotune,
    )
    if args.data.startswith("tfds:"):
        from export.data.tfds import names

        try:
            names(args.data.partition(":")[2])  # an unknown size: one line before anything runs
        except ValueError as exc:  # DataError
            raise ConfigError(str(exc)) from None
    elif args.data not in ("tfds", "synthetic") and not Path(args.data).exists():
        raise ConfigError(
            f"--data {args.data}: no such file or folder (use tfds, synthetic, a GroupLens folder/zip "
            f"or your own CSV/Parquet file)"
        )
    # An empty value is the flag's default (docker-compose.yml passes each as ${EXPORT_...:-}).
    if args.items and not Path(args.items).is_file():
        raise ConfigError(f"--items {args.items}: no such file (a CSV/Parquet catalogue of item ids and titles)")
    columns = {
        "user": args.user_column or "user_id",
        "item": args.item_column or "item_id",
        "time": args.time_column or "timestamp",
        "time_given": bool(args.time_column),
        "items_file": args.items or None,
        "item_id": args.item_id_column or "item_id",
        "title": args.title_column or "title",
    }
    return ExportConfig(
        data=args.data,
        train=train,
        index=index,
        model_base_path=args.model_base_path,
        models=tuple(m.strip() for m in args.models.split(",") if m.strip()),
        split=args.split,
        synthetic_size=args.synthetic_size,
        keep=args.keep,
        recall_threshold=args.recall_threshold,
        model_config_file=args.model_config_file,
        validation_timeout_s=args.validation_timeout,
        ease_lambda=args.ease_lambda,
        baseline_max_items=args.baseline_max_items,
        data_columns=columns,
        gate=args.gate == "on",
        gate_tolerance=args.gate_tolerance,
        on_refusal=args.on_refusal,
    )


def _fail(message: str | BaseException, code: int) -> int:
    line = " ".join(str(message).split())
    print(f"export: error: {line}", file=sys.stderr)
    return code


def main(argv: list[str] | None = None) -> int:
    try:
        args = parser().parse_args(argv)
        config = config_from_args(args)
    except ConfigError as exc:
        return _fail(exc, 2)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    for noisy in ("absl", "tensorflow", "h5py"):
        logging.getLogger(noisy).setLevel(logging.WARNING)

    from export import distributed, pipeline
    from export.data import DataError
    from export.gate import EXIT_REFUSED, Refused
    from export.publish import PublishError
    from export.validate import ValidationError

    try:
        distributed.start()  # with TF_CONFIG naming several workers: before TensorFlow runs anything else
        pipeline.run(config, synthetic_seed=args.seed)  # reports each version as it is published
    except ConfigError as exc:
        return _fail(exc, 2)
    except Refused as exc:  # one line; exit 0 only when asked to and an older version keeps serving
        print(f"export: {exc}", file=sys.stderr)
        return 0 if config.on_refusal == "keep-serving" and exc.serving else EXIT_REFUSED
    except (DataError, PublishError, ValidationError, OSError, ValueError) as exc:
        logger.debug("export failed", exc_info=True)
        return _fail(exc, 1)
    except KeyboardInterrupt:
        return _fail("interrupted; nothing was published after the last 'published' line", 130)
    except Exception as exc:  # anything else (a TensorFlow runtime error...): still one line
        logger.debug("export failed", exc_info=True)
        return _fail(f"{type(exc).__name__}: {exc} (rerun with -v for the traceback)", 1)
    return 0
