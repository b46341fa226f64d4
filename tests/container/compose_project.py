"""A compose project on a real Docker engine, run from a copy of this checkout (tests/container/test_engine_*.py).

The copy is what a user has after `git clone` (the working tree, without .git, .venv or ./models), so the
compose files run unchanged and their relative mounts (./models, ./serving, ./data) land in the copy, never
in the developer's own ./models. Each project has its own name and free host ports.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from pathlib import Path

from container_support import IMPLEMENTATIONS, ROOT, compose_env
from engine import Engine
from server_process import free_port
from server_process import versions as store_versions

TOP_LEVEL_IGNORED = {".git", ".venv", "models", "data", "build", ".pytest_cache"}  # only at the root
IGNORED_ANYWHERE = shutil.ignore_patterns("__pycache__", "*.egg-info", "*.pyc")


def _ignore(folder: str, names: list) -> set:
    ignored = set(IGNORED_ANYWHERE(folder, names))
    if Path(folder) == ROOT:
        ignored |= TOP_LEVEL_IGNORED & set(names)
    return ignored


def checkout_copy(destination: Path) -> Path:
    shutil.copytree(ROOT, destination, ignore=_ignore, symlinks=True)
    return destination


class ComposeProject:
    """``docker-compose -p NAME -f FILE ...`` in ``root`` against ``engine``, with the given variables.

    ``implementation``: "compose-v1.29" (Debian's docker-compose, the default) or "compose-v2" (the Go
    ``docker compose`` that most users run; container_support.py)."""

    def __init__(
        self,
        engine: Engine,
        root: Path,
        name: str,
        compose_file: str,
        implementation: str = "compose-v1.29",
        **variables: str,
    ) -> None:
        self.engine, self.root, self.name, self.file = engine, Path(root), name, compose_file
        self.implementation = implementation
        self.grpc_port, self.rest_port = free_port(), free_port()
        self.variables = {"GRPC_PORT": str(self.grpc_port), "REST_PORT": str(self.rest_port), **variables}

    @property
    def models(self) -> Path:
        return self.root / "models"

    def compose(
        self, *args: str, timeout: float = 900, check: bool = True, **variables: str
    ) -> subprocess.CompletedProcess:
        env = compose_env(
            DOCKER_HOST=self.engine.host, COMPOSE_PROJECT_NAME=self.name, **{**self.variables, **variables}
        )
        result = subprocess.run(
            [*IMPLEMENTATIONS[self.implementation](), "-f", self.file, *args],
            cwd=str(self.root),
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"{self.implementation} -f {self.file} {' '.join(args)} failed ({result.returncode}):\n"
                f"{result.stdout[-3000:]}\n{result.stderr[-6000:]}"
            )
        return result

    def containers(self, service: str | None = None) -> list:
        """Ids of this project's containers (all states), optionally of one service."""
        filters = ["--filter", f"label=com.docker.compose.project={self.name}"]
        if service:
            filters += ["--filter", f"label=com.docker.compose.service={service}"]
        return self.engine.docker("ps", "-aq", *filters).stdout.split()

    def networks(self) -> list:
        return self.engine.docker(
            "network", "ls", "-q", "--filter", f"label=com.docker.compose.project={self.name}"
        ).stdout.split()

    def inspect(self, container: str) -> dict:
        return json.loads(self.engine.docker("inspect", container).stdout)[0]

    def only_container(self, service: str) -> dict:
        ids = self.containers(service)
        assert len(ids) == 1, f"{service}: expected one container, found {ids}"
        return self.inspect(ids[0])

    def logs(self, service: str) -> str:
        """What the service's containers printed (stdout, then stderr), as `docker logs` gives it."""
        out = []
        for container in self.containers(service):
            result = self.engine.docker("logs", container, check=False)
            out += [result.stdout, result.stderr]
        return "".join(out)

    def wait_exited(self, service: str, timeout: float) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            state = self.only_container(service)["State"]
            if state["Status"] == "exited":
                return state
            assert time.monotonic() < deadline, f"{service} still {state['Status']} after {timeout:.0f} s"
            time.sleep(1)

    def wait_healthy(self, service: str, timeout: float) -> dict:
        """Waits for the engine's own healthcheck to report ``healthy``; fails on ``unhealthy`` or an exit."""
        deadline = time.monotonic() + timeout
        while True:
            state = self.only_container(service)["State"]
            health = (state.get("Health") or {}).get("Status")
            if health == "healthy":
                return state
            assert state["Status"] == "running", f"{service} is {state['Status']}:\n{self.logs(service)[-4000:]}"
            assert health != "unhealthy", f"{service} unhealthy: {state['Health']['Log'][-1:]}"
            assert time.monotonic() < deadline, (
                f"{service} not healthy after {timeout:.0f} s ({health}):\n{self.logs(service)[-4000:]}"
            )
            time.sleep(1)

    def down(self) -> subprocess.CompletedProcess:
        return self.compose("down", "--volumes", "--remove-orphans", timeout=300, check=False)


def versions(base: Path) -> list:
    """A model's version numbers, [] before the export created its folder."""
    return store_versions(base) if base.is_dir() else []


def tree_digest(root: Path) -> dict:
    """path -> (size, mtime_ns) of every file under ``root``: equal digests mean nothing was touched."""
    return {
        str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }
