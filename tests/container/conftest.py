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


@pytest.fixture(scope="session")
def engine(request):
    """A real Docker engine (reached, or dockerd started as root and stopped at the end) with the Python base
    image the Dockerfiles start from (pulled, or made from Debian packages); see engine.py."""
    import engine as engine_module

    try:
        reached = engine_module.connect()
        for note in reached.notes:
            container_support.say(request.config, note)
        container_support.say(request.config, engine_module.ensure_python_base(reached))
    except engine_module.EngineUnavailable as exc:
        pytest.fail(f"the real-engine tests need a Docker engine: {exc}", pytrace=False)
    yield reached
    if reached.started_pid is not None:
        container_support.say(request.config, f"stopping the dockerd this run started (pid {reached.started_pid})")
    reached.stop()
