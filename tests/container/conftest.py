"""Fixtures of the container checks; helpers live in container_support.py.

pytest runs with --import-mode=importlib, which puts no test folder on sys.path: this conftest adds
tests/container/ so that the test modules can import container_support and tfs_protos.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

import container_support  # noqa: E402


@pytest.fixture(scope="session")
def env_file() -> dict:
    return container_support.read_env_file()


@pytest.fixture(scope="session")
def scann_config() -> dict:
    """docker-compose.yml as Docker Compose v2 resolves it (the implementation users run)."""
    return container_support.resolved_config("compose-v2", container_support.COMPOSE_FILES["scann"])


@pytest.fixture(scope="session")
def tfs_protos():
    import tfs_protos

    return tfs_protos
