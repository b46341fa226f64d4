"""The whole ``default`` export on synthetic data of MovieLens latest-small's shape (671 users, 9,125 titles with a
long tail, 100,004 ratings: ``SyntheticSpec.latest_small``), as ``python -m export --data synthetic
--synthetic-size latest-small`` runs it; prints each step's wall time, the total, peak RSS, what the search did and
the seen-excluded test hit rates of the model against EASE, item-kNN and popularity.

    python benchmarks/export_latest_small.py [--tune-budget S] [--index scann|brute_force] [--seed N] [--json]

The export runs in a child process (its peak RSS is its own and its validation grandchild's, ``ru_maxrss``), which
generates the data ("generate", not part of the export) and runs ``export.pipeline.run`` with the ``default``
preset, timing the report lines the pipeline prints (as benchmarks/export_scaling.py does): "search" the
hyperparameter search (export/tune.py), "choose exclude_seen" EASE's lambda and rank and the blend on validation,
"refit" the towers (and EASE's factors) on the whole training part, "evaluate" the test table with EASE and
item-kNN, "history" by_history's choice, its new-user test and the known-user comparison
(export/history_selection.py, export/history_evaluation.py), "index + validate" the three indexes, SavedModels and
fresh-process validations, "publish" the gate and the publish. The run's whole time is from the start of the export
(after generation) to the last version published.
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

# (step, a fragment of the report line that ends it); each step runs from the previous step's end
STEPS = (
    ("search", "tune: "),
    ("choose exclude_seen", "validation seen-excluded top-10 / top-100 for exclude_seen"),
    ("refit", "evaluating on "),
    ("evaluate", "test top-k accuracy"),
    ("history", "known users, by_history"),
    ("index + validate", "staged and validated"),
    ("publish", "published version"),
)


def child(tune_budget: float | None, index: str, seed: int, store: Path) -> dict:
    import dataclasses

    from export import environment

    environment.configure()  # before TensorFlow is imported
    from export import pipeline
    from export.config import DEFAULT, ExportConfig, IndexConfig
    from export.data import load
    from export.data.synthetic import SyntheticSpec

    began = time.perf_counter()
    data = load("synthetic", synthetic=SyntheticSpec.latest_small(seed))
    start = time.perf_counter()
    marks: list[tuple[float, str]] = []

    def report(line: str) -> None:
        marks.append((time.perf_counter(), str(line)))
        print(line, file=sys.stderr, flush=True)

    train = DEFAULT if tune_budget is None else dataclasses.replace(DEFAULT, tune_budget_s=tune_budget)
    config = ExportConfig(
        data="synthetic",
        synthetic_size="latest-small",
        train=train,
        index=IndexConfig(kind=index, autotune=True),  # as the CLI does without --scann-* flags
        model_base_path=store,
        gate=False,
    )
    result = pipeline.run(config, data=data, report=report)
    end = time.perf_counter()
    steps, previous = {}, start
    for name, fragment in STEPS:
        times = [t for t, line in marks if fragment in line]
        if not times:  # e.g. no search with --tune-budget 0
            continue
        stop = max(times)
        steps[name] = round(stop - previous, 1)
        previous = stop
    manifest = json.loads(next(store.glob("retrieval/*/assets.extra/manifest.json")).read_text())
    validation = manifest["training"]["validation"]
    tuning = validation.get("tuning") or {}
    metrics = result.metrics

    def row(name: str) -> list[float] | None:
        got = metrics.get(f"{name}_exclude_seen")
        return None if got is None else [round(got["top_10"], 4), round(got["top_100"], 4)]

    return {
        "generate": round(start - began, 1),
        "seconds": round(end - start, 1),
        "steps": steps,
        "trials": len(tuning.get("trials", [])),
        "stopped": tuning.get("stopped"),
        "stopped_by": tuning.get("stopped_by"),
        "best_epoch": validation.get("best_epoch"),
        "exclude_seen": validation.get("blends", {}).get("chosen"),
        "ease_lambda": validation.get("blends", {}).get("ease_lambda"),
        "ease_rank": validation.get("blends", {}).get("ease_rank"),
        "test": {name: row(name) for name in ("model", "ease", "item_knn", "popularity")},
        "ci95": metrics["ci95"].get("model_exclude_seen", {}).get("top_10"),
    }


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--tune-budget", type=float, help="seconds (default: the default preset's)")
    p.add_argument("--index", default="scann")
    p.add_argument("--seed", type=int, default=0, help="synthetic data seed")
    p.add_argument("--json", action="store_true", help="print the result as one JSON line too")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--store", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        print(json.dumps(child(args.tune_budget, args.index, args.seed, Path(args.store))))
        return
    with tempfile.TemporaryDirectory() as store:
        command = [
            sys.executable,
            __file__,
            "--child",
            "--store",
            store,
            "--index",
            args.index,
            "--seed",
            str(args.seed),
        ]
        if args.tune_budget is not None:
            command += ["--tune-budget", str(args.tune_budget)]
        proc = subprocess.run(command, stdout=subprocess.PIPE, text=True)
        if proc.returncode != 0:
            sys.exit(f"export_latest_small: the export failed (exit {proc.returncode}); its output is above")
        peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20  # GiB
    row = json.loads(proc.stdout.strip().splitlines()[-1])
    steps = ", ".join(f"{k} {v:.0f} s" for k, v in row["steps"].items())
    print(f"latest-small: export {row['seconds']:.0f} s ({steps}); generate {row['generate']:.0f} s apart")
    print(f"peak RSS {peak:.2f} GiB; load average {os.getloadavg()[0]:.1f} at the end")
    print(
        f"search: {row['trials']} trial(s) {row['stopped_by']}, stopped: {row['stopped']}; refit epochs "
        f"{row['best_epoch']}; exclude_seen {row['exclude_seen']} (EASE lambda {row['ease_lambda']}, rank "
        f"{row['ease_rank']})"
    )
    print(
        "test, seen excluded, top-10 / top-100: "
        + ", ".join(f"{name} {v[0]:.4f} / {v[1]:.4f}" for name, v in row["test"].items() if v is not None)
        + f" (±{row['ci95']:.4f} at top-10)"
    )
    if args.json:
        print(json.dumps(row))


if __name__ == "__main__":
    main()
