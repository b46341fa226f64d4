"""Fixtures of the container checks; helpers live in container_support.py.

tests/container/ is on pytest's pythonpath (pyproject.toml), so test modules import container_support,
namespaces and tfs_protos by name.
"""

from __future__ import annotations


import pytest

import container_support


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
