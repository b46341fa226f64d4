"""Shared fixtures: model stores published by the real export CLI on tiny synthetic data.

    publish_store(root, *, index="scann", k=10, seed=0, epochs=1, preset="default", extra_args=()) -> root
        runs ``python -m export --data synthetic --synthetic-size tiny ...`` in a subprocess and returns
        ``root``, a TF Serving store holding ``retrieval/<version>/`` and ``similar_movies/<version>/``
        (60 users "1".."60", ~150 titles; K = k). Raises AssertionError with the CLI's output on failure.

    make_model_store   session fixture: the ``publish_store`` factory itself
    export_cli         session fixture: ``run_export(args, timeout=300)`` -> CompletedProcess of
                       ``python -m export ARGS`` (never raises on a non-zero exit)
    model_store        session fixture: a ScaNN store root (Path), built once per session
    brute_force_store  session fixture: a BruteForce store root (Path), built once per session

Never write into ``model_store`` / ``brute_force_store`` (shared by every test): publish into your own
``tmp_path`` with ``make_model_store(tmp_path / "models", ...)`` or copy the store first.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXPORT_TIMEOUT_S = 300


def export_env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + [p for p in [env.get("PYTHONPATH")] if p])
    env.setdefault("TF_USE_LEGACY_KERAS", "1")
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    return env


def run_export(args, timeout: float = EXPORT_TIMEOUT_S) -> subprocess.CompletedProcess:
    """``python -m export ARGS`` from the repo root; returns the completed process (never raises on exit code)."""
    return subprocess.run(
        [sys.executable, "-m", "export", *map(str, args)],
        cwd=str(ROOT),
        env=export_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def publish_store(
    root: Path,
    *,
    index: str = "scann",
    k: int = 10,
    seed: int = 0,
    epochs: int = 1,
    preset: str = "default",
    extra_args=(),
) -> Path:
    root = Path(root)
    proc = run_export(
        [
            "--data",
            "synthetic",
            "--synthetic-size",
            "tiny",
            "--seed",
            seed,
            "--preset",
            preset,
            "--epochs",
            epochs,
            "--index",
            index,
            "--k",
            k,
            "--model-base-path",
            root,
            # no hyperparameter search unless asked for: stores are fixtures, not tuning runs
            *([] if "--tune-budget" in map(str, extra_args) else ["--tune-budget", "0"]),
            *extra_args,
        ]
    )
    if proc.returncode != 0:
        raise AssertionError(
            f"export failed ({proc.returncode}):\nSTDOUT:\n{proc.stdout[-4000:]}\nSTDERR:\n{proc.stderr[-8000:]}"
        )
    return root


@pytest.fixture(scope="session")
def make_model_store():
    return publish_store


@pytest.fixture(scope="session")
def export_cli():
    return run_export


@pytest.fixture(scope="session")
def model_store(tmp_path_factory) -> Path:
    return publish_store(tmp_path_factory.mktemp("scann_store") / "models", index="scann")


@pytest.fixture(scope="session")
def brute_force_store(tmp_path_factory) -> Path:
    return publish_store(tmp_path_factory.mktemp("brute_force_store") / "models", index="brute_force")
