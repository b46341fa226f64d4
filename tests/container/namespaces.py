"""Run a process as the container would see the world, without a container engine.

``unshare --mount --net`` gives the process its own mount table and its own network stack (loopback
only). Inside, the host folders are bind-mounted at the container paths of the compose file (/models,
/models-config), so the compose command line runs verbatim, fixed ports 8500/8501 included, without
touching the host's ports or the host's mount table. ``nsenter`` runs probes (the healthcheck, HTTP and
gRPC clients) inside the same namespaces. Needs root (as the session and CI run), util-linux and iproute2.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

SETUP = """set -e
ip link set lo up
mount --make-rprivate /
while [ "$#" -gt 0 ] && [ "$1" != "--" ]; do
  mount --bind "$1" "$2"
  if [ "$3" = ro ]; then mount -o remount,bind,ro "$2"; fi
  shift 3
done
shift
cd "$NS_WORKDIR"
exec "$@"
"""


@dataclass
class Namespaced:
    """A process in its own mount and network namespaces; ``run`` executes a command inside them."""

    process: subprocess.Popen
    log: Path
    created_mountpoints: list = field(default_factory=list)

    @property
    def pid(self) -> int:
        return self.process.pid

    def run(self, command, timeout: float = 30, env=None, mount: bool = True) -> subprocess.CompletedProcess:
        namespaces = ["-n", "-m"] if mount else ["-n"]
        return subprocess.run(
            ["nsenter", "-t", str(self.pid), *namespaces, "--", *command],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=env,
        )

    def alive(self) -> bool:
        return self.process.poll() is None

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def stop(self) -> None:
        if self.alive():
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        for path in reversed(self.created_mountpoints):
            with contextlib.suppress(OSError):
                path.rmdir()


def start(command, *, binds=(), workdir: Path, log: Path, env=None) -> Namespaced:
    """Start ``command`` in new mount+net namespaces with ``binds`` = [(host, container_path, read_only)]."""
    created = []
    arguments = []
    for host, target, read_only in binds:
        target = Path(target)
        if not target.exists():
            for parent in reversed([target, *target.parents]):
                if not parent.exists():
                    parent.mkdir()
                    created.append(parent)
        arguments += [str(host), str(target), "ro" if read_only else "rw"]
    environment = dict(env if env is not None else os.environ)
    environment["NS_WORKDIR"] = str(workdir)
    with open(log, "wb") as handle:  # the child keeps its own copy of the descriptor
        process = subprocess.Popen(
            ["unshare", "--mount", "--net", "bash", "-c", SETUP, "ns-setup", *arguments, "--", *command],
            stdout=handle,
            stderr=subprocess.STDOUT,
            env=environment,
        )
    return Namespaced(process=process, log=log, created_mountpoints=created)


def wait_until(predicate, timeout: float, interval: float = 1.0, alive=lambda: True):
    """Poll ``predicate()`` until it returns a truthy value; returns the last value (falsy on timeout)."""
    deadline = time.monotonic() + timeout
    value = predicate()
    while not value and time.monotonic() < deadline and alive():
        time.sleep(interval)
        value = predicate()
    return value
