"""Settings the loaded data makes impossible, and the room the store needs: checked before any training.

    data = load_data(config)
    check_against_data(config, data)   # right after loading: one ConfigError line, or nothing

Without these, each was found only after training, evaluation and index building (minutes): ``--k`` above
the catalogue, a catalogue too small for ScaNN (``InvalidArgumentError: ... Number of clusters per block (16)
is greater than asymmetric hashing training data size (3)``), a full disk when the SavedModel is written.
Each refusal is one line naming the figure and the flag that fixes it; the CLI prints it as
``export: error: ...`` (exit 2, a setting that cannot work).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np

from export.config import ConfigError, ExportConfig
from export.data.records import MovieLensData

# ScaNN's asymmetric hashing trains 16 centres per block (tfrs' ScaNN layer, fixed) on the candidates: fewer
# candidates than that and the index cannot be built.
SCANN_MIN_TITLES = 16
# The store's expected size, per served vector of d floats: the query table's row, or a candidate's vector
# plus ScaNN's copy of it for exact re-ordering (and its hashed codes); + a fixed part per model (graph, warmup
# records, report, manifest); all times a margin, since it is an estimate (the 1M-candidate benchmark's
# SavedModel was 307 MiB, this says about 1.2 GiB for it).
_FIXED_BYTES_PER_MODEL = 32 << 20
_MARGIN = 1.5


def titles_of(data: MovieLensData) -> int:
    """The number of candidates the export serves: the catalogue's distinct titles."""
    return len(np.unique(np.asarray(data.movies.movie_title, dtype=object).astype(str)))


def expected_bytes(config: ExportConfig, data: MovieLensData) -> int:
    """A rough upper estimate of the bytes one export writes into the store (both models, staged at once)."""
    titles = titles_of(data)
    users = len(np.unique(np.asarray(data.ratings.user_id, dtype=object).astype(str))) + 1  # + the unknown user
    # Vector width: the embedding, the bias and popularity columns, and EASE's factors if exclude_seen blends.
    width = config.train.embedding_dimension + 2 + config.train.ease_rank
    copies = 2  # candidates: the vectors, and the index's own copy
    rows = {
        "retrieval": users + copies * titles * (2 if config.train.ease_rank else 1),  # exclude_seen's own index
        "similar_movies": titles + copies * titles,
    }
    total = sum(rows[name] * width * 4 + _FIXED_BYTES_PER_MODEL for name in config.models)
    return int(total * _MARGIN)


def _existing(path: Path) -> Path:
    """``path`` or its nearest existing ancestor (the store may not exist yet): where free space is measured."""
    path = Path(os.path.abspath(path))
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _size(n: float) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def check_against_data(config: ExportConfig, data: MovieLensData, *, disk: bool = True) -> None:
    """ConfigError (one line: the figure and the fix) when the data makes a setting impossible: ``--k`` above
    the catalogue's titles minus one (``similar_movies`` never answers the query itself), ScaNN over fewer than
    ``SCANN_MIN_TITLES`` titles, or (``disk``: off for a worker that never writes the store) less free space
    under ``--model-base-path`` than ``expected_bytes``."""
    titles = titles_of(data)
    k = config.index.k
    too_many = k > titles - 1
    if config.index.kind == "scann" and titles < SCANN_MIN_TITLES:
        also = f" and --k {max(titles - 1, 1)} or less" if too_many else ""
        raise ConfigError(
            f"the catalogue has {titles} title(s), fewer than the {SCANN_MIN_TITLES} a ScaNN index needs "
            f"(its asymmetric hashing trains {SCANN_MIN_TITLES} centres); use --index brute_force{also}"
        )
    if too_many:
        fix = f"use --k {titles - 1} or less" if titles > 1 else "it needs at least 2 titles"
        raise ConfigError(
            f"--k {k} needs a catalogue of more than {k} titles, and the data has {titles} (similar_movies "
            f"never answers the query itself); {fix}"
        )
    if not disk:
        return
    where = _existing(config.model_base_path)
    free = shutil.disk_usage(where).free
    needed = expected_bytes(config, data)
    if free < needed:
        raise ConfigError(
            f"{_size(free)} free under {where}, and this export writes about {_size(needed)} (an estimate: "
            f"{titles:,} titles, {len(data.ratings):,} ratings, {', '.join(config.models)}); free some space "
            "or pass --model-base-path on a larger disk"
        )
