"""A harness for ``python -m serving`` in a subprocess: free ports, start, wait until it serves, stop.

The one harness the tests (tests/serving/server_process.py adds gRPC helpers on top) and the benchmarks
(benchmarks/serving_latency.py, benchmarks/client_overhead.py) start the local server with. It lives in the
package rather than under tests/ so that a benchmark imports it as any module (no pytest pythonpath), and so
that anyone testing an application against the local server has it too. It imports neither TensorFlow nor
gRPC: only the server subprocess does.

    with ServerProcess("--model_name=retrieval", "--model_base_path=/models/retrieval", rest=True) as server:
        ...  # server.port (gRPC), server.rest_port; server.log holds the server's output so far
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]  # the checkout (or site-packages): the server's cwd and PYTHONPATH
READY_LINE = "Running gRPC ModelServer at"  # what tensorflow_model_server logs once gRPC serves
REST_READY_LINE = "Exporting HTTP/REST API at:"


class ServerFailed(AssertionError):
    """The server exited, or did not log what was waited for, in time; the message ends with its log."""


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on now (bound and released: another process may take it before use)."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def server_env(root: Path = ROOT, **extra: str) -> dict:
    """The environment for ``python -m serving``: ``root`` (this checkout) first on PYTHONPATH, loopback host,
    quiet TF."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(root)] + [p for p in [env.get("PYTHONPATH")] if p])
    env["SERVING_HOST"] = "127.0.0.1"
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    env.update(extra)
    return env


class ServerProcess:
    """``python -m serving --port=P --rest_api_port=R *flags`` on free 127.0.0.1 ports (REST only when
    ``rest``); :meth:`start` waits for the gRPC (and REST) ready lines of its log, :meth:`stop` sends SIGTERM
    and waits for the exit. ``root`` runs the server of another checkout of this project (a baseline); ``env``
    adds to the server's environment."""

    def __init__(
        self, *flags: str, rest: bool = False, root: Path = ROOT, env: Mapping[str, str] | None = None
    ) -> None:
        self.root = Path(root)
        self.env = dict(env or {})
        self.port = free_port()
        self.rest_port = free_port() if rest else 0
        self.args = [
            sys.executable,
            "-m",
            "serving",
            f"--port={self.port}",
            f"--rest_api_port={self.rest_port}",
            *flags,
        ]
        self.lines: list[str] = []
        self.proc: subprocess.Popen[str] | None = None

    @property
    def _started(self) -> subprocess.Popen[str]:
        """The server's process; only after start()."""
        assert self.proc is not None, "start() the server first"
        return self.proc

    @property
    def pid(self) -> int:
        return self._started.pid

    def start(self, timeout: float = 120.0, *, wait_ready: bool = True) -> ServerProcess:
        self.proc = subprocess.Popen(
            self.args,
            cwd=str(self.root),
            env=server_env(self.root, **self.env),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            bufsize=1,
        )
        threading.Thread(target=self._pump, daemon=True).start()
        if wait_ready:
            try:
                self.wait_for_line(READY_LINE, timeout)
                if self.rest_port:
                    self.wait_for_line(REST_READY_LINE, timeout)
            except BaseException:
                self.stop()
                raise
        return self

    def _pump(self) -> None:
        stdout = self._started.stdout
        assert stdout is not None  # stdout=subprocess.PIPE
        for line in stdout:
            self.lines.append(line.rstrip("\n"))

    @property
    def log(self) -> str:
        return "\n".join(self.lines)

    def wait_for_line(self, text: str, timeout: float = 60.0) -> str:
        """The first log line containing ``text``; ServerFailed if the server exits or ``timeout`` passes."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in list(self.lines):
                if text in line:
                    return line
            if self._started.poll() is not None:
                time.sleep(0.2)  # let the pump drain
                raise ServerFailed(f"server exited ({self._started.returncode}) before {text!r}:\n{self.log[-6000:]}")
            time.sleep(0.05)
        raise ServerFailed(f"no {text!r} within {timeout}s:\n{self.log[-6000:]}")

    def wait_exit(self, timeout: float = 60.0) -> int:
        code = self._started.wait(timeout)
        time.sleep(0.2)
        return code

    def stop(self) -> int | None:
        """SIGTERM, then the exit code; ServerFailed (after a SIGKILL) if it does not exit within 60 s."""
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
            raise ServerFailed(f"server did not stop on SIGTERM:\n{self.log[-4000:]}") from None

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
