"""``python -m export``: a thin map from flags onto ExportConfig and ``pipeline.run``.

Every error exits non-zero with one line on stderr: ``export: error: <reason>`` (2 for bad flags or
settings, 1 for data, validation and publishing failures). A version the gate refuses (export/gate.py) is one
line ``export: refused by the gate: ...`` and exit 3, or 0 with ``--on-refusal keep-serving`` when the store
still holds a version of every model.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import logging
import os
import re
import sys
import threading
import time
import warnings
from pathlib import Path

from export.config import (
    INDEX_KINDS,
    MODEL_NAMES,
    MOVIE_FEATURES,
    PRESETS,
    SPLIT_KINDS,
    SYNTHETIC_SIZES,
    USER_FEATURES,
    USER_TOWERS,
    ConfigError,
    ExportConfig,
    IndexConfig,
    preset,
)

logger = logging.getLogger("export")


DISTRIBUTION = "retrieval-serving-bundle"  # pyproject.toml's name: --version reads its installed metadata


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, not argparse's usage block
        raise ConfigError(message)


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """``--help`` with each flag's default: "(default: X)" appended from the parser; a flag whose default is
    None (the preset's, or measured) or a switch says what applies in its own help text instead."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None or isinstance(action.default, bool) or action.default is argparse.SUPPRESS:
            return action.help
        return super()._get_help_string(action)


def version() -> str:
    """This bundle's version, from the installed distribution's metadata (a source tree not installed: say so)."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as installed

    try:
        return installed(DISTRIBUTION)
    except PackageNotFoundError:
        return "unknown (not installed: pip install -e .)"


def _preset_default(field: str) -> str:
    """What a flag that overrides a preset's ``field`` defaults to, each preset's value read from PRESETS."""

    def shown(value) -> str:
        if isinstance(value, tuple):
            return ",".join(value) or "none"
        if isinstance(value, bool):
            return "on" if value else "off"
        return f"{value:g}" if isinstance(value, float) else str(value)

    return "default: the preset's: " + ", ".join(f"{name} {shown(getattr(c, field))}" for name, c in PRESETS.items())


def _optional_float(value: str) -> float | None:
    """A float, or None for an empty value (as compose passes an unset variable: --tune-budget=)."""
    return None if value.strip() == "" else float(value)


def parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="python -m export",
        description="Train a two-tower retrieval model on MovieLens, evaluate it, and publish validated "
        "TF Serving versions of `retrieval` and `similar_movies` into a model store.",
        formatter_class=_HelpFormatter,
    )
    p.add_argument("--version", action="version", version=f"%(prog)s {version()}")
    p.add_argument(
        "--data",
        default="tfds",
        help="tfds (MovieLens 100K) | tfds:1m, tfds:20m, tfds:25m, tfds:latest-small | synthetic | "
        "a GroupLens folder or zip (ml-100k, ml-1m, ml-10m, ml-20m, ml-25m, "
        "ml-latest) | your own interactions, FILE.csv/.tsv/.parquet",
    )
    p.add_argument("--user-column", default="user_id", help="your file's user column")
    p.add_argument("--item-column", default="item_id", help="your file's item column")
    p.add_argument("--time-column", help="your file's time column (default: timestamp if present, else row order)")
    p.add_argument("--items", help="a catalogue CSV/Parquet for your file: item ids and titles (default: none)")
    p.add_argument("--item-id-column", default="item_id", help="the catalogue's id column")
    p.add_argument("--title-column", default="title", help="the catalogue's title column")
    p.add_argument("--preset", default="default", choices=tuple(PRESETS), help="training recipe")
    p.add_argument(
        "--model-base-path",
        default="models",
        type=Path,
        help="store root: publishes DIR/retrieval/<version> and DIR/similar_movies/<version>",
    )
    p.add_argument("--index", default="scann", choices=INDEX_KINDS, help="auto: brute_force below 20,000 candidates")
    p.add_argument("--k", type=int, default=10, help="results per query, fixed at export")
    p.add_argument("--epochs", type=int, help=f"override the preset's number of epochs ({_preset_default('epochs')})")
    p.add_argument(
        "--models",
        default=",".join(MODEL_NAMES),
        help=f"comma-separated models to publish, of {', '.join(MODEL_NAMES)}",
    )
    p.add_argument("--synthetic-size", default="movielens", choices=SYNTHETIC_SIZES, help="with --data synthetic")
    p.add_argument("--seed", type=int, default=0, help="synthetic data seed")
    p.add_argument(
        "--train-seed", type=int, help=f"override the preset's tf.random.set_seed value ({_preset_default('seed')})"
    )
    p.add_argument(
        "--user-features",
        help="comma-separated side features for the user tower, of "
        f"{','.join(USER_FEATURES)} ({_preset_default('user_features')})",
    )
    p.add_argument(
        "--movie-features",
        help=f"comma-separated side features for the movie tower, of {','.join(MOVIE_FEATURES)} "
        f"({_preset_default('movie_features')})",
    )
    p.add_argument(
        "--split", default="random", choices=SPLIT_KINDS, help="random: the seed's; time: earliest 80%% train"
    )
    p.add_argument("--keep", type=int, default=3, help="versions kept per model when pruning")
    p.add_argument(
        "--recall-threshold", type=float, default=0.95, help="minimum recall@10 of the index against exact search"
    )
    p.add_argument(
        "--model-config-file",
        type=Path,
        help="a TF Serving models.config: versions it pins (labels, specific) are never pruned (default: none)",
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
    p.add_argument(
        "--no-gate",
        dest="gate",
        action="store_const",
        const="off",
        help="the same as --gate=off (default: the gate is on)",
    )
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
    p.add_argument(
        "--scann-training-iterations", type=int, default=scann.training_iterations, help="ScaNN's k-means iterations"
    )
    p.add_argument(
        "--scann-dimensions-per-block",
        type=int,
        default=scann.dimensions_per_block,
        help="dimensions per asymmetric-hashing block",
    )
    p.add_argument(
        "--scann-reorder",
        type=int,
        help="exact re-scoring of this many candidates (0 = off; default: chosen with the leaves)",
    )
    p.add_argument(
        "--validation-fraction",
        type=float,
        help="hold out this fraction of the training part to stop early and choose on (0: none; "
        f"{_preset_default('validation_fraction')})",
    )
    p.add_argument(
        "--patience",
        type=int,
        help=f"epochs without a better validation score before stopping ({_preset_default('patience')})",
    )
    p.add_argument(
        "--ease-rank",
        type=int,
        help="rank of EASE's factors offered beside the towers on validation (0: towers only; "
        f"{_preset_default('ease_rank')})",
    )
    p.add_argument(
        "--tune",
        action="store_true",
        help="search the recipe's hyperparameters on validation (default: off; the default preset searches "
        "anyway, 300 s)",
    )
    p.add_argument(
        "--tune-budget",
        type=_optional_float,
        help=f"seconds for the search (0: none; empty: the preset's; {_preset_default('tune_budget_s')})",
    )
    p.add_argument("--tune-trials", type=int, help=f"at most this many trials ({_preset_default('tune_trials')})")
    p.add_argument("--ease-lambda", type=float, default=500.0, help="L2 weight of the EASE baseline")
    p.add_argument(
        "--baseline-max-items",
        type=int,
        default=12_000,
        help="skip the EASE and item-kNN baselines above this many titles (12000: ~3.5 GB)",
    )
    p.add_argument(
        "--user-tower",
        choices=USER_TOWERS,
        help="the user's id embedding, a bag of the user's training items, or both "
        f"({_preset_default('user_tower')}; tuning may choose)",
    )
    p.add_argument(
        "--temperature",
        type=float,
        help="train on cosine similarity over this temperature (0: raw dot products; "
        f"{_preset_default('temperature')})",
    )
    p.add_argument(
        "--log-q",
        action=argparse.BooleanOptionalAction,
        help=f"log-Q correction of the in-batch softmax ({_preset_default('log_q')})",
    )
    p.add_argument(
        "--weight-decay",
        type=float,
        help=f"AdamW's decoupled weight decay (0: none; {_preset_default('weight_decay')})",
    )
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging (default: off)")
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


# Python loggers and modules whose output is noise at the default verbosity (kept with -v): TensorFlow's,
# Keras' (e.g. "Skipping full serialization of TF-Keras layer ... ScaNN"), absl's, h5py's.
NOISY_LOGGERS = ("absl", "tensorflow", "tf_keras", "keras", "h5py")
NOISY_MODULES = r"(tensorflow|tf_keras|keras|tensorflow_recommenders|tensorflow_datasets|scann|absl|h5py)(\.|$)"


def _one_stream(verbose: bool) -> None:
    """The export's own lines only, at the default verbosity: the pipeline prints each step once on stdout, so
    its modules' INFO log lines (the same steps said again: "INFO export.publish: published ...") and the
    libraries' noise are shown only with -v. TensorFlow's and ScaNN's C++ logs ("failed call to cuInit",
    "Could not normalize centroid", absl's "All log messages before absl::InitializeLog()") obey
    TF_CPP_MIN_LOG_LEVEL, read when TensorFlow is first imported, after this: 3 hides all, 1 keeps warnings."""
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "1" if verbose else "3"
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    for noisy in NOISY_LOGGERS:
        logging.getLogger(noisy).setLevel(logging.WARNING if verbose else logging.ERROR)
    if not verbose:
        warnings.filterwarnings("ignore", module=NOISY_MODULES)


_LINE_ENDS = re.compile(rb"(?<=[\r\n])")


class _NativeLogFilter:
    """While open, lines written to file descriptor 2 that are C++ log records (glog/absl's "I0000 00:00:... file.cc:58]
    ...", TensorFlow's "2026-01-01 12:00:00.000000: E file.cc:51] ...", absl's "WARNING: All log messages before
    absl::InitializeLog() ...") are dropped; every other line reaches stderr as written. ScaNN's op library logs
    through its own absl, which TF_CPP_MIN_LOG_LEVEL does not reach ("Could not normalize centroid", "Size of
    sampled dataset", at every index build), and only a file descriptor sees those lines."""

    NATIVE = re.compile(
        rb"^(?:[IWEF]\d{4} \d\d:\d\d:[\d.]+ +\d+ \S+:\d+\] "
        rb"|\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+: [IWEF] \S+:\d+\] "
        rb"|WARNING: All log messages before absl::InitializeLog\(\) is called)"
    )

    def __enter__(self) -> _NativeLogFilter:
        sys.stderr.flush()
        self._stderr = os.dup(2)
        read, write = os.pipe()
        os.dup2(write, 2)
        os.close(write)
        self._pump = threading.Thread(target=self._forward, args=(read,), name="native-log-filter", daemon=True)
        self._pump.start()
        return self

    def _forward(self, read: int) -> None:
        """Pieces ending in a newline, or in a carriage return (progress bars redraw a line with it), are
        forwarded as they come unless they are native log records; a piece without either waits for its end."""
        pending = b""
        while chunk := os.read(read, 1 << 16):
            *pieces, pending = _LINE_ENDS.split(pending + chunk)
            for piece in pieces:
                self._write(piece)
        self._write(pending)
        os.close(read)

    def _write(self, piece: bytes) -> None:
        if piece and not self.NATIVE.match(piece):
            with contextlib.suppress(OSError):  # keep draining: a writer must never block on a full pipe
                os.write(self._stderr, piece)

    def __exit__(self, *exc_info: object) -> None:
        sys.stderr.flush()
        os.dup2(self._stderr, 2)  # closes the pipe's last writer (a child still running may hold another)
        self._pump.join(timeout=5)
        if not self._pump.is_alive():
            os.close(self._stderr)


def main(argv: list[str] | None = None) -> int:
    started = time.perf_counter()
    try:
        args = parser().parse_args(argv)
        config = config_from_args(args)
    except ConfigError as exc:
        return _fail(exc, 2)
    _one_stream(args.verbose)
    if args.verbose:
        return _run(config, args.seed, started)
    with _NativeLogFilter():
        return _run(config, args.seed, started)


def _run(config: ExportConfig, synthetic_seed: int, started: float) -> int:
    """The export itself; every failure one ``export: error:`` line and its exit code."""
    from export import distributed, pipeline
    from export.data import DataError
    from export.gate import EXIT_REFUSED, Refused
    from export.publish import PublishError
    from export.validation import ValidationError

    try:
        distributed.start()  # with TF_CONFIG naming several workers: before TensorFlow runs anything else
        pipeline.run(config, synthetic_seed=synthetic_seed)  # reports each version as it is published
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
    print(f"export: done in {_duration(time.perf_counter() - started)}")
    return 0


def _duration(seconds: float) -> str:
    """``seconds`` as people say it: "48 s", "6 min 35 s", "1 h 02 min"."""
    whole = round(seconds)
    if whole < 60:
        return f"{whole} s"
    if whole < 3600:
        return f"{whole // 60} min {whole % 60:02d} s"
    return f"{whole // 3600} h {whole % 3600 // 60:02d} min"
