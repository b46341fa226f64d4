"""Shared fixtures: model stores published by the real export CLI on tiny synthetic data.

    publish_store(root, *, index="scann", k=10, seed=0, epochs=1, preset="default", extra_args=()) -> root
        runs ``python -m export --data synthetic --synthetic-size tiny ...`` in a subprocess and returns
        ``root``, a TF Serving store holding ``retrieval/<version>/`` and ``similar_movies/<version>/``
        (60 users "1".."60", ~150 titles; K = k), with ``--no-gate`` unless ``extra_args`` say ``--gate``. Raises
        AssertionError with the CLI's output on failure.

    make_model_store   session fixture: the ``publish_store`` factory itself
    export_cli         session fixture: ``run_export(args, timeout=300)`` -> CompletedProcess of
                       ``python -m export ARGS`` (never raises on a non-zero exit)
    model_store        session fixture: a ScaNN store root (Path), built once per session
    brute_force_store  session fixture: a BruteForce store root (Path), built once per session

Never write into ``model_store`` / ``brute_force_store`` (shared by every test): publish into your own
``tmp_path`` with ``make_model_store(tmp_path / "models", ...)`` or copy the store first.

Markers (registered in pyproject.toml) sit where a test is defined (a module's ``pytestmark``, a class, a
decorator): ``slow`` (a second or more: a real export, a server per test, TensorFlow in a child), ``engine`` (a
real Docker engine), ``root`` (network and mount namespaces), ``tools`` (a tool beyond Python that the full run
installs: kubectl, nginx, Debian's docker-compose, .venv-policy's checkov and kubernetes-validate). The fast lane
(README: ``scripts/test.sh --fast``) runs none of them; collection refuses a test that runs the export CLI per
test (``PER_TEST_EXPORT``) without ``slow``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from export import environment

environment.configure()  # this process's: before any test module imports TensorFlow (export/environment.py)

ROOT = Path(__file__).resolve().parent.parent
EXPORT_TIMEOUT_S = 300

# Fixtures that run the export CLI once per test (seconds each). A test that takes one is slow; its mark sits where
# it is defined (a module's ``pytestmark``, a class or a test decorator), and collection refuses one without it.
PER_TEST_EXPORT = ("export_cli", "make_model_store")


def unmarked_slow(items) -> list[str]:
    """The node ids of ``items`` that take a ``PER_TEST_EXPORT`` fixture but carry no ``slow`` mark."""
    return [
        item.nodeid
        for item in items
        if set(PER_TEST_EXPORT) & set(getattr(item, "fixturenames", ())) and item.get_closest_marker("slow") is None
    ]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    missing = unmarked_slow(items)
    if missing:
        raise pytest.UsageError(
            f"these tests run the export CLI ({', '.join(PER_TEST_EXPORT)}) but are not marked slow, so the fast "
            f"lane would run them: {', '.join(missing)}"
        )


def export_env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + [p for p in [env.get("PYTHONPATH")] if p])
    environment.configure(env)
    return env


# The quickest whole export: tiny synthetic data, the seed preset for one epoch, an exact index; --no-gate: such a
# model does not beat popularity (nor can any on 800 test ratings), and these exports test publishing, not quality.
QUICK_EXPORT = ("--data", "synthetic", "--synthetic-size", "tiny", "--preset", "seed", "--epochs", "1",
                "--index", "brute_force", "--no-gate")  # fmt: skip


@pytest.fixture
def quick_export() -> list[str]:
    """The CLI arguments of the quickest whole export (QUICK_EXPORT), to extend per test."""
    return list(QUICK_EXPORT)


def run_export(args, timeout: float = EXPORT_TIMEOUT_S, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    """``python -m export ARGS`` from ``cwd`` (the repo root); returns the completed process (never raises on
    exit code)."""
    return subprocess.run(
        [sys.executable, "-m", "export", *map(str, args)],
        cwd=str(cwd),
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
            # no hyperparameter search unless asked for: stores are fixtures, not tuning runs; nor the gate (tiny data
            # cannot beat popularity outside its interval), unless asked for
            *([] if "--tune-budget" in map(str, extra_args) else ["--tune-budget", "0"]),
            *([] if {"--gate", "--no-gate"} & set(map(str, extra_args)) else ["--no-gate"]),
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
