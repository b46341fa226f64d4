"""Settings: frozen dataclasses validated on construction, one preset per training recipe.

``seed`` is the TFRS retrieval tutorial exactly ("Recommending movies: retrieval", TensorFlow Recommenders,
https://www.tensorflow.org/recommenders/examples/basic_retrieval); ``default`` is the better recipe
(full softmax over the whole catalogue with a per-movie bias, validated, tuned, blended with EASE). CLI flags override
single fields through ``dataclasses.replace``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

MODEL_NAMES = ("retrieval", "similar_movies")
INDEX_KINDS = ("scann", "brute_force", "auto")
SPLIT_KINDS = ("random", "time")
SYNTHETIC_SIZES = ("tiny", "movielens", "latest-small")
LOSSES = ("in_batch_softmax", "full_softmax")
USER_TOWERS = ("id", "history", "id+history")
OPTIMIZERS = ("adagrad", "adam", "lazy_adam")  # lazy_adam: export/model.py LazyAdam
USER_FEATURES = ("user_age", "user_gender", "user_occupation")
MOVIE_FEATURES = ("movie_genres",)


MIN_TUNE_BUDGET_S = 30.0


class ConfigError(ValueError):
    """A setting that cannot work; the message names the value and the fix."""


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)


@dataclass(frozen=True)
class TrainConfig:
    """How the two-tower model is trained."""

    preset: str
    embedding_dimension: int
    loss: str
    movie_bias: bool
    l2: float
    optimizer: str
    learning_rate: float
    batch_size: int
    epochs: int
    shuffle_buffer: int
    seed: int = 42
    user_features: tuple[str, ...] = ()
    movie_features: tuple[str, ...] = ()
    # The user tower: its id's embedding ("id"), the mean embedding of the user's training items ("history",
    # a bag of items), or their sum ("id+history"); see export/model.py's Tower. Baked per user either way.
    user_tower: str = "id"
    # Cosine similarity over a temperature instead of raw dot products (0: raw); served as a dot product of the
    # unit user vector over the temperature with the unit movie vector.
    temperature: float = 0.0
    # The in-batch softmax subtracts log(each candidate's share of the training ratings) from its logits.
    log_q: bool = False
    # Adam's decoupled weight decay (AdamW) instead of, or beside, the L2 penalty (0: none).
    weight_decay: float = 0.0
    # Initial weights from seeds of their own (derived from ``seed``), so that one process and several workers
    # (export/distributed.py) start from the same weights; False: Keras' defaults under the global seed.
    seeded_init: bool = False
    # Validation (0: none, the tutorial's way): this fraction of the training part is held out, training
    # stops early on it (``patience`` epochs without improvement; ``epochs`` is then the most it runs) and is
    # then refitted on the whole training part for the best epoch count.
    validation_fraction: float = 0.0
    patience: int = 5
    # Candidates for serving chosen on validation: the towers alone, EASE's rank-``ease_rank`` factors
    # alone, or both (concatenated vectors: a weighted sum of the two scores, still one dot product).
    # 0: the towers only.
    ease_rank: int = 0
    # Hyperparameter search (export/tune.py) on the validation split, within this many seconds (0: none)
    # and at most ``tune_trials`` trials; the preset's own settings are the first trial.
    tune_budget_s: float = 0.0
    tune_trials: int = 16

    def __post_init__(self) -> None:
        _check(self.embedding_dimension > 0, f"embedding_dimension must be > 0 (got {self.embedding_dimension})")
        _check(self.loss in LOSSES, f"loss must be one of {LOSSES} (got {self.loss!r})")
        _check(self.temperature >= 0, f"temperature must be >= 0 (got {self.temperature})")
        _check(self.weight_decay >= 0, f"weight_decay must be >= 0 (got {self.weight_decay})")
        _check(
            self.weight_decay == 0 or self.optimizer == "adam",
            f"weight_decay needs the adam optimizer (AdamW); got {self.optimizer!r}",
        )
        _check(self.user_tower in USER_TOWERS, f"user_tower must be one of {USER_TOWERS} (got {self.user_tower!r})")
        _check(self.optimizer in OPTIMIZERS, f"optimizer must be one of {OPTIMIZERS} (got {self.optimizer!r})")
        _check(self.learning_rate > 0, f"learning_rate must be > 0 (got {self.learning_rate})")
        _check(self.l2 >= 0, f"l2 must be >= 0 (got {self.l2})")
        _check(self.batch_size > 0, f"batch_size must be > 0 (got {self.batch_size})")
        _check(self.epochs >= 1, f"--epochs must be >= 1 (got {self.epochs})")
        _check(self.shuffle_buffer >= 1, f"shuffle_buffer must be >= 1 (got {self.shuffle_buffer})")
        _check(
            self.validation_fraction == 0.0 or 0.0 < self.validation_fraction < 0.5,
            f"--validation-fraction must be in (0, 0.5), or 0 for none (got {self.validation_fraction})",
        )
        _check(self.patience >= 1, f"--patience must be >= 1 (got {self.patience})")
        _check(self.ease_rank >= 0, f"--ease-rank must be >= 0 (got {self.ease_rank})")
        _check(
            self.ease_rank == 0 or self.validation_fraction > 0,
            "--ease-rank needs a validation split to choose on: set --validation-fraction > 0",
        )
        _check(
            self.tune_budget_s == 0 or self.tune_budget_s >= MIN_TUNE_BUDGET_S,
            f"--tune-budget {self.tune_budget_s:g} s is too small for one trial (at least "
            f"{MIN_TUNE_BUDGET_S:g} s); raise it, or use 0 to skip tuning",
        )
        _check(
            self.tune_budget_s == 0 or self.validation_fraction > 0,
            "--tune needs a validation split to choose on: set --validation-fraction > 0",
        )
        _check(self.tune_trials >= 1, f"--tune-trials must be >= 1 (got {self.tune_trials})")
        unknown = set(self.user_features) - set(USER_FEATURES)
        _check(not unknown, f"unknown user features {sorted(unknown)}; known: {USER_FEATURES}")
        unknown = set(self.movie_features) - set(MOVIE_FEATURES)
        _check(not unknown, f"unknown movie features {sorted(unknown)}; known: {MOVIE_FEATURES}")


# The tutorial, exactly ("Recommending movies: retrieval",
# https://www.tensorflow.org/recommenders/examples/basic_retrieval): D=32, in-batch softmax
# (tfrs.tasks.Retrieval), Adagrad(0.1), train.shuffle(100_000).batch(8192).cache(), 3 epochs,
# tf.random.set_seed(42); no bias, no L2.
SEED = TrainConfig(
    preset="seed",
    embedding_dimension=32,
    loss="in_batch_softmax",
    movie_bias=False,
    l2=0.0,
    optimizer="adagrad",
    learning_rate=0.1,
    batch_size=8192,
    epochs=3,
    shuffle_buffer=100_000,
    seed=42,
)

# Better: a softmax over the whole catalogue (1.7k movies: cheap) with a per-movie bias, D=64, L2; up to 40
# epochs, stopped on a validation split; tuned for up to 5 minutes on it; served alone or blended with EASE's
# factors, whichever validates best.
DEFAULT = TrainConfig(
    preset="default",
    embedding_dimension=64,
    loss="full_softmax",
    movie_bias=True,
    l2=1e-4,
    optimizer="adam",
    learning_rate=3e-3,
    batch_size=1024,
    epochs=40,
    shuffle_buffer=100_000,
    seed=42,
    validation_fraction=0.1,
    patience=5,
    ease_rank=64,
    tune_budget_s=300.0,
    log_q=True,  # used only where the loss is the in-batch softmax (large catalogues, export/tune.py)
    seeded_init=True,
)

PRESETS: dict[str, TrainConfig] = {"seed": SEED, "default": DEFAULT}


def preset(name: str) -> TrainConfig:
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}")
    return PRESETS[name]


@dataclass(frozen=True)
class IndexConfig:
    """The nearest-neighbour index baked into each SavedModel.

    ScaNN parameters are those of ``tfrs.layers.factorized_top_k.ScaNN``. At build time ``num_leaves`` is
    clamped so a leaf holds >= 16 candidates on average, and re-ordering covers at least K candidates
    (export/index.py). Re-ordering (exact re-scoring of the best AH candidates) is on by default: without
    it, asymmetric hashing alone misses recall@10 >= 0.95 on large catalogues.
    """

    kind: str = "scann"
    k: int = 10
    num_leaves: int | None = None  # None: about sqrt(candidates)
    num_leaves_to_search: int = 20
    # Let the export choose leaves to search and re-ordering by measuring recall and latency on held-out
    # queries (export/index.py tune); the two fields above and below are then only the starting point.
    autotune: bool = False
    training_iterations: int = 12
    dimensions_per_block: int = 2
    num_reordering_candidates: int | None = 500

    def __post_init__(self) -> None:
        _check(self.kind in INDEX_KINDS, f"--index must be one of {INDEX_KINDS} (got {self.kind!r})")
        _check(self.k >= 1, f"--k must be >= 1 (got {self.k})")
        _check(
            self.num_leaves is None or self.num_leaves >= 1, f"--scann-num-leaves must be >= 1 (got {self.num_leaves})"
        )
        _check(
            1 <= self.num_leaves_to_search <= (self.num_leaves or self.num_leaves_to_search),
            f"--scann-leaves-to-search must be in [1, num_leaves={self.num_leaves}] (got {self.num_leaves_to_search})",
        )
        _check(self.training_iterations >= 1, "--scann-training-iterations must be >= 1")
        _check(self.dimensions_per_block >= 1, "--scann-dimensions-per-block must be >= 1")
        _check(
            self.num_reordering_candidates is None or self.num_reordering_candidates >= 1,
            f"--scann-reorder must be >= 1, or 0 to disable (got {self.num_reordering_candidates})",
        )

    def as_dict(self) -> dict:
        out = dataclasses.asdict(self)
        if self.kind == "brute_force":
            out = {"kind": self.kind, "k": self.k}
        return out


@dataclass(frozen=True)
class ExportConfig:
    """One export run: where the data comes from, what to train, where to publish."""

    data: str
    train: TrainConfig
    index: IndexConfig = field(default_factory=IndexConfig)
    model_base_path: Path = Path("models")
    models: tuple[str, ...] = MODEL_NAMES
    split: str = "random"
    synthetic_size: str = "movielens"
    keep: int = 3
    recall_threshold: float = 0.95
    model_config_file: Path | None = None
    validation_users: int = 64
    validation_timeout_s: float = 300.0
    score_tolerance: float = 1e-3
    data_columns: dict = field(default_factory=dict)  # export.data.own_files.Columns fields, for your own files
    ease_lambda: float = 500.0  # EASE's L2 weight (the evaluation's baseline)
    baseline_max_items: int = 12_000  # above this many titles EASE and item-kNN are skipped (memory)
    gate: bool = True  # publish only what beats popularity and is not worse than the served version (export/gate.py)
    gate_tolerance: float | None = None  # how far below the served version is "worse" (None: the 95 % interval)
    on_refusal: str = "fail"  # "keep-serving": a refusal exits 0 while an older version serves (export/cli.py)

    def __post_init__(self) -> None:
        _check(bool(self.data), "--data must be tfds, synthetic, a GroupLens folder/zip or your own CSV/Parquet file")
        _check(bool(self.models), "--models must name at least one of " + ",".join(MODEL_NAMES))
        unknown = [m for m in self.models if m not in MODEL_NAMES]
        _check(not unknown, f"unknown model(s) {unknown}; choose from {','.join(MODEL_NAMES)}")
        _check(self.split in SPLIT_KINDS, f"--split must be one of {SPLIT_KINDS} (got {self.split!r})")
        _check(
            self.synthetic_size in SYNTHETIC_SIZES,
            f"--synthetic-size must be one of {SYNTHETIC_SIZES} (got {self.synthetic_size!r})",
        )
        _check(self.keep >= 1, f"--keep must be >= 1 (got {self.keep})")
        _check(self.ease_lambda > 0, f"--ease-lambda must be > 0 (got {self.ease_lambda})")
        _check(self.baseline_max_items >= 0, f"--baseline-max-items must be >= 0 (got {self.baseline_max_items})")
        _check(
            0.0 <= self.recall_threshold <= 1.0, f"--recall-threshold must be in [0, 1] (got {self.recall_threshold})"
        )
        _check(self.validation_users >= 1, "validation_users must be >= 1")
        _check(
            self.gate_tolerance is None or self.gate_tolerance >= 0,
            f"--gate-tolerance must be >= 0 (got {self.gate_tolerance})",
        )
        _check(
            self.on_refusal in ("fail", "keep-serving"),
            f"--on-refusal must be fail or keep-serving (got {self.on_refusal!r})",
        )
        _check(self.validation_timeout_s > 0, "validation_timeout_s must be > 0")
