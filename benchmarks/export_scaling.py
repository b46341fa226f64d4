"""The whole export (load, train, evaluate, index, validate, publish) on MovieLens-shaped synthetic data of
growing size; prints wall time per step, time per rating and peak RSS for each size.

    python benchmarks/export_scaling.py [--sizes 100k,1m] [--tune-budget 0] [--index scann] [--max-epochs N]

Sizes (users x movies, ratings), as the MovieLens releases: 100k (943 x 1,682), 1m (6,040 x 3,706),
10m (69,878 x 10,677), 25m (162,541 x 62,423). Each size's synthetic data (export/data/synthetic.py) is made once
and written as a GroupLens release in ML-25M's format (ratings.csv, movies.csv) under the cache folder
(``$XDG_CACHE_HOME``, else ~/.cache, /retrieval-bundle/synthetic/SIZE): making it is not part of the export and
is printed apart ("generate"). Each size then runs in a child process, so that its peak RSS is its own
(``ru_maxrss`` of the child and of its validation grandchild, which loads the SavedModels afresh): it loads
the release with the export's own loader ("load", what ``--data FOLDER`` costs) and runs
``export.pipeline.run`` with the ``default`` preset (tuning off unless ``--tune-budget`` says otherwise: tuning
takes its budget at every size), timing each report line the pipeline prints (``--max-epochs`` caps the
preset's 40, so that sizes compare at the same number of passes over their data): "train" is selection,
early stopping and the refit (the manifest's ``training.total_seconds``), "evaluate" runs until the
evaluation table, "index + validate" until the last model is staged and validated, "publish" until the last
version is published.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

SIZES = {  # users, movies, ratings
    "100k": (943, 1_682, 100_000),
    "1m": (6_040, 3_706, 1_000_209),
    "10m": (69_878, 10_677, 10_000_054),
    "25m": (162_541, 62_423, 25_000_095),
}


def release(size: str) -> tuple[Path, float]:
    """The size's synthetic data as a GroupLens release folder (made on first use); (folder, seconds to make)."""
    folder = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache", "retrieval-bundle", "synthetic", size)
    if (folder / "movies.csv").exists():
        return folder, 0.0
    import numpy as np
    import pyarrow as pa
    import pyarrow.csv as csv

    from export.data.records import GENRES
    from export.data.synthetic import SyntheticSpec, generate

    start = time.perf_counter()
    users, movies, ratings = SIZES[size]
    data = generate(SyntheticSpec(users=users, movies=movies, ratings=ratings, seed=0))
    staging = folder.with_name(f".{size}.partial")
    staging.mkdir(parents=True, exist_ok=True)
    r = data.ratings
    table = pa.table(
        {
            "userId": np.asarray(r.user_id).astype(np.int64),
            "movieId": np.asarray(r.movie_id).astype(np.int64),
            "rating": r.user_rating,
            "timestamp": r.timestamp,
        }
    )
    csv.write_csv(table, staging / "ratings.csv")
    m = data.movies
    genres = ["|".join(GENRES[g] for g in row) or "(no genres listed)" for row in m.movie_genres]
    movies_table = pa.table(
        {"movieId": np.asarray(m.movie_id).astype(np.int64), "title": m.movie_title, "genres": genres}
    )
    csv.write_csv(movies_table, staging / "movies.csv")
    staging.rename(folder)  # whole or not at all: an interrupted run leaves only the .partial folder
    return folder, time.perf_counter() - start


def child(size: str, tune_budget: float, index: str, store: Path, max_epochs: int | None) -> dict:
    import dataclasses

    from export import pipeline
    from export.config import DEFAULT, ExportConfig, IndexConfig
    from export.data import load

    users, movies, ratings = SIZES[size]
    folder, _ = release(size)
    start = time.perf_counter()
    data = load(str(folder))
    loaded = time.perf_counter()
    marks: list[tuple[float, str]] = []

    def report(line: str) -> None:
        marks.append((time.perf_counter(), str(line)))
        print(line, file=sys.stderr, flush=True)

    config = ExportConfig(
        data=str(folder),
        train=dataclasses.replace(DEFAULT, tune_budget_s=tune_budget, epochs=max_epochs or DEFAULT.epochs),
        index=IndexConfig(kind=index, autotune=True),  # as the CLI does without --scann-* flags
        model_base_path=store,
    )
    result = pipeline.run(config, data=data, report=report)
    end = time.perf_counter()

    def last(prefix_or_part: str) -> float:
        return max(t for t, line in marks if prefix_or_part in line)

    manifest = json.loads(next(store.glob("retrieval/*/assets.extra/manifest.json")).read_text())
    run_start = loaded
    trained = run_start + manifest["training"]["total_seconds"]
    evaluated = last("test top-k accuracy")  # the evaluation table
    validated = last("staged and validated")
    published = last("published version")
    steps = {
        "load": loaded - start,
        "train": trained - run_start,
        "evaluate": evaluated - trained,
        "index + validate": validated - evaluated,
        "publish": published - validated,
    }
    return {
        "size": size,
        "ratings": ratings,
        "users": users,
        "movies": movies,
        "seconds": end - start,
        "steps": {k: round(v, 1) for k, v in steps.items()},
        "best_epoch": manifest["training"]["validation"]["best_epoch"],
        "loss": manifest["training"]["parameters"]["loss"],
        "top_100_exclude_seen": result.metrics["model_exclude_seen"]["top_100"],
        "recall": result.recall,
    }


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--sizes", default="100k,1m", help=f"comma-separated, of {', '.join(SIZES)}")
    p.add_argument("--tune-budget", type=float, default=0.0)
    p.add_argument("--index", default="scann")
    p.add_argument("--max-epochs", type=int, help="most epochs (default: the default preset's)")
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--store", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.tune_budget, args.index, Path(args.store), args.max_epochs)))
        return
    sizes = [s.strip() for s in args.sizes.split(",") if s.strip()]
    unknown = [s for s in sizes if s not in SIZES]
    if unknown:
        p.error(f"unknown sizes {unknown}; choose from {', '.join(SIZES)}")
    rows = []
    for size in sizes:
        folder, made = release(size)
        if made:
            print(f"{size}: generate {made:.0f} s (once, into {folder}; not part of the export)", flush=True)
        with tempfile.TemporaryDirectory() as store:
            before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
            proc = subprocess.run(
                [
                    sys.executable,
                    __file__,
                    "--child",
                    size,
                    "--store",
                    store,
                    "--tune-budget",
                    str(args.tune_budget),
                    "--index",
                    args.index,
                    *(["--max-epochs", str(args.max_epochs)] if args.max_epochs else []),
                ],
                stdout=subprocess.PIPE,
                text=True,
            )
            if proc.returncode != 0:
                sys.exit(f"export_scaling: the {size} export failed (exit {proc.returncode}); its output is above")
            peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # KiB, the largest child so far
            row = json.loads(proc.stdout.strip().splitlines()[-1])
            row["peak_rss_gib"] = round(peak / 2**20, 2) if peak > before else None  # None: not a new maximum
            rows.append(row)
            steps = ", ".join(f"{k} {v:.0f} s" for k, v in row["steps"].items())
            print(
                f"{size}: {row['ratings']:,} ratings, {row['seconds']:.0f} s ({steps}); "
                f"{1e6 * row['seconds'] / row['ratings']:.0f} us/rating; peak RSS "
                f"{row['peak_rss_gib'] if row['peak_rss_gib'] is not None else '<= previous'} GiB; "
                f"loss {row['loss']}, best epoch {row['best_epoch']}, seen-excluded top-100 "
                f"{row['top_100_exclude_seen']:.3f}",
                flush=True,
            )
    if len(rows) >= 2:
        first, last = rows[0], rows[-1]
        ratio = (last["seconds"] / last["ratings"]) / (first["seconds"] / first["ratings"])
        print(f"time per rating, {last['size']} / {first['size']}: {ratio:.2f}")


if __name__ == "__main__":
    main()
