"""MovieLens in, column arrays out: one interface over three sources, plus the train/test split.

    data = load("synthetic")                          # made up from a seed (export.data.synthetic)
    data = load("tfds")                               # tensorflow-datasets movielens/100k-{ratings,movies}
    data = load("tfds:1m")                            # ... or any size tfds has (export/data/tfds.py)
    data = load("/path/to/ml-100k") or load("/path/to/ml-100k.zip")   # GroupLens files
    train_idx, test_idx = split(data.ratings, kind="random")          # the seed tutorial's split
    check_against_data(config, data)  # settings the data makes impossible, and disk space (export/data/preflight.py)

Errors: DataError (a ValueError) with a one-line message that names the fix. No source ever falls back to
another: a failed tfds download is an error, never synthetic data in disguise.
"""

from __future__ import annotations

import logging
import os

from export.data.preflight import check_against_data
from export.data.records import (
    AGE_BUCKETS,
    GENRES,
    OCCUPATIONS,
    DataError,
    MovieLensData,
    Movies,
    Ratings,
    bucketize_age,
)
from export.data.split import split, validation_split
from export.data.synthetic import SyntheticSpec

__all__ = [
    "AGE_BUCKETS",
    "GENRES",
    "OCCUPATIONS",
    "DataError",
    "MovieLensData",
    "Movies",
    "Ratings",
    "SyntheticSpec",
    "bucketize_age",
    "check_against_data",
    "load",
    "split",
    "validation_split",
]

logger = logging.getLogger(__name__)


def load(
    source: str | os.PathLike = "tfds",
    *,
    synthetic: SyntheticSpec | None = None,
    data_dir: str | os.PathLike | None = None,
    download: bool = True,
    download_timeout: float = 10.0,
    columns=None,
) -> MovieLensData:
    """Load MovieLens from ``source``: "synthetic", "tfds" (or "tfds:SIZE"), a GroupLens folder or zip
    (ml-100k: export/data/grouplens.py, or the later releases: export/data/releases.py), or your own interactions
    file (CSV/TSV/Parquet, export/data/own_files.py; ``columns``, an ``own_files.Columns``, says where its columns
    are).

    synthetic: the spec for "synthetic" (default SyntheticSpec(): ML-100K's sizes, seed 0).
    data_dir, download, download_timeout: for "tfds" only: where TFDS keeps prepared data sets (TFDS'
        default when None); whether to download them when missing there; how long (seconds) to wait for
        the download host to answer before failing.
    """
    source_text = os.fspath(source)
    if synthetic is not None and source_text != "synthetic":
        raise DataError(f"a SyntheticSpec was given but source is {source_text!r}; use load('synthetic', ...)")
    if data_dir is not None and not (source_text == "tfds" or source_text.startswith("tfds:")):
        raise DataError(f"data_dir applies to source 'tfds' only (source is {source_text!r})")
    if source_text == "synthetic":
        from export.data.synthetic import generate

        return generate(synthetic if synthetic is not None else SyntheticSpec())
    if source_text == "tfds" or source_text.startswith("tfds:"):
        from export.data.tfds import load_tfds

        size = source_text.partition(":")[2] or "100k"
        return load_tfds(data_dir=data_dir, download=download, timeout=download_timeout, size=size)
    from export.data import own_files, releases

    if own_files.is_own_file(source_text):
        return own_files.load_own(source_text, columns if columns is not None else own_files.Columns())
    if os.path.exists(source_text):
        release = releases.find_release(source_text)
        if release:
            return releases.load_release(source_text, release)
    from export.data.grouplens import load_grouplens

    return load_grouplens(source_text)
