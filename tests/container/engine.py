"""A real Docker engine for the container tests: reach one, or start Debian's dockerd as root.

Used by tests/container/conftest.py's session fixture ``engine``. Nothing here is a mock: the tests build
the bundle's images and run its compose files with the real docker-compose against this engine.

- An engine is *reachable* when ``docker version`` answers on ``DOCKER_HOST`` (or the default socket).
- Otherwise, as root, Debian's ``dockerd`` is started with the settings these machines need (cgroupfs driver:
  cgroup v1 without systemd; fixed default ulimits: the process may not raise rlimits), its state under
  ``BUNDLE_DOCKERD_DIR`` (default /tmp/dockerd, kept between runs so built images are reused), and stopped by
  the pid it wrote when the session ends.
- Base images that cannot be pulled (no registry reachable) are made from Debian packages with debootstrap:
  ``python:3.11-slim-bookworm`` is a minbase bookworm with python3, venv and pip, tagged with that name. Its
  root file system tarball is cached under ``~/.cache/retrieval-bundle`` for later runs.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

STATE_DIR = Path(os.environ.get("BUNDLE_DOCKERD_DIR", "/tmp/dockerd"))
CACHE_DIR = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "retrieval-bundle"
DEBIAN_PACKAGES = ("docker.io", "docker-compose", "debootstrap")


class EngineUnavailable(RuntimeError):
    """No engine is reachable and none can be started here; the message says why and what to do."""


@dataclass
class Engine:
    host: str  # the DOCKER_HOST value that reaches it
    started_pid: int | None = None  # set when this module started dockerd (and must stop it)
    log: Path | None = None
    notes: list = field(default_factory=list)

    def env(self, **extra) -> dict:
        env = dict(os.environ, DOCKER_HOST=self.host)
        env.update(extra)
        return env

    def docker(self, *args, timeout: float = 120, check: bool = True, **kwargs) -> subprocess.CompletedProcess:
        result = subprocess.run(
            [docker_cli(), *args], env=self.env(), capture_output=True, text=True, timeout=timeout, **kwargs
        )
        if check and result.returncode != 0:
            raise AssertionError(f"docker {' '.join(args)} failed ({result.returncode}):\n{result.stderr[-4000:]}")
        return result

    def stop(self) -> None:
        """Stops the dockerd this module started (by the pid it wrote), and only that one."""
        if self.started_pid is None:
            return
        try:
            os.kill(self.started_pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and _alive(self.started_pid):
            time.sleep(0.5)
        if _alive(self.started_pid):
            os.kill(self.started_pid, signal.SIGKILL)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie child still "exists"; reap it if it is ours.
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
        return done == 0
    except ChildProcessError:
        return True


def docker_cli() -> str:
    path = shutil.which("docker")
    if not path:
        raise EngineUnavailable("no docker client on PATH: apt-get install -y docker.io")
    return path


def reachable(host: str) -> bool:
    try:
        result = subprocess.run(
            [docker_cli(), "version", "--format", "{{.Server.Version}}"],
            env=dict(os.environ, DOCKER_HOST=host),
            capture_output=True,
            text=True,
            timeout=20,
        )
    except (subprocess.TimeoutExpired, EngineUnavailable):
        return False
    return result.returncode == 0 and bool(result.stdout.strip())


def candidate_hosts() -> list:
    hosts = [os.environ["DOCKER_HOST"]] if os.environ.get("DOCKER_HOST") else []
    hosts += [f"unix://{STATE_DIR / 'docker.sock'}", "unix:///var/run/docker.sock"]
    return list(dict.fromkeys(hosts))


def install_debian_packages() -> None:
    missing = [
        p
        for p, binary in zip(DEBIAN_PACKAGES, ("dockerd", "docker-compose", "debootstrap"), strict=True)
        if not shutil.which(binary, path="/usr/sbin:/usr/bin:/sbin:/bin:/usr/local/bin")
    ]
    if not missing:
        return
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        raise EngineUnavailable(f"missing {' '.join(missing)}: install these Debian packages (as root)")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    for command in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", *missing]):
        result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900)
        if result.returncode != 0:
            raise EngineUnavailable(f"{' '.join(command)} failed:\n{result.stderr[-2000:]}")


def start_dockerd(timeout: float = 90) -> Engine:
    if os.geteuid() != 0:
        raise EngineUnavailable(
            "no Docker engine is reachable and starting dockerd needs root; "
            "start one and set DOCKER_HOST, or run the tests as root"
        )
    install_debian_packages()
    dockerd = shutil.which("dockerd", path="/usr/sbin:/usr/bin:/usr/local/bin")
    if dockerd is None:
        raise EngineUnavailable("no Docker engine is reachable and dockerd is not installed (Debian: docker.io)")
    STATE_DIR.mkdir(parents=True, exist_ok=True)
    socket, pidfile, log = STATE_DIR / "docker.sock", STATE_DIR / "pid", STATE_DIR / "dockerd.log"
    if pidfile.exists():  # a dead engine's leftovers; a live one would have answered on its socket
        old = pidfile.read_text().strip()
        if old.isdigit() and _alive(int(old)):
            raise EngineUnavailable(f"dockerd (pid {old}, {pidfile}) runs but does not answer on {socket}")
        pidfile.unlink()
    command = [
        dockerd,
        "--host",
        f"unix://{socket}",
        "--data-root",
        str(STATE_DIR / "root"),
        "--exec-root",
        str(STATE_DIR / "exec"),
        "--pidfile",
        str(pidfile),
        "--exec-opt",
        "native.cgroupdriver=cgroupfs",
        "--default-ulimit",
        "nofile=1024:1024",
        "--default-ulimit",
        "nproc=1000:1000",
    ]
    with open(log, "ab") as out:
        process = subprocess.Popen(
            command, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
        )
    host = f"unix://{socket}"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise EngineUnavailable(f"dockerd exited ({process.returncode}):\n{log.read_text()[-3000:]}")
        if reachable(host):
            pid = int(pidfile.read_text().strip()) if pidfile.exists() else process.pid
            return Engine(host=host, started_pid=pid, log=log, notes=[f"started dockerd (pid {pid}, {STATE_DIR})"])
        time.sleep(1)
    process.terminate()
    raise EngineUnavailable(f"dockerd did not answer within {timeout:.0f} s:\n{log.read_text()[-3000:]}")


def connect() -> Engine:
    """An engine that answers: a running one if reachable, else one started here (see the module doc)."""
    for host in candidate_hosts():
        if reachable(host):
            return Engine(host=host, notes=[f"using the running engine at {host}"])
    return start_dockerd()


def ensure_python_base(engine: Engine, image: str = "python:3.11-slim-bookworm", suite: str = "bookworm") -> str:
    """``image`` present in the engine: already there, pulled, imported from the cache, or built with debootstrap.

    Returns how it got there (for the test log).
    """
    if engine.docker("image", "inspect", image, check=False).returncode == 0:
        return f"{image}: present"
    try:
        if engine.docker("pull", image, check=False, timeout=60).returncode == 0:
            return f"{image}: pulled"
    except subprocess.TimeoutExpired:
        pass
    tarball = CACHE_DIR / f"{image.replace(':', '-').replace('/', '_')}-rootfs.tar"
    how = "imported from the cached stand-in"
    if not tarball.exists():
        how = "built as a stand-in from Debian packages (debootstrap)"
        build_python_rootfs(tarball, suite)
    with open(tarball, "rb") as data:
        result = subprocess.run(
            [docker_cli(), "import", "--change", 'CMD ["python3"]', "-", image],
            stdin=data,
            env=engine.env(),
            capture_output=True,
            text=True,
            timeout=600,
        )
    if result.returncode != 0:
        raise EngineUnavailable(f"docker import {image} failed:\n{result.stderr[-2000:]}")
    return f"{image}: {how} ({tarball})"


def build_python_rootfs(tarball: Path, suite: str) -> None:
    """A minbase Debian with python3, venv and pip, as close to python:*-slim as packages allow, tarred."""
    if os.geteuid() != 0:
        raise EngineUnavailable("the base image cannot be pulled and building a stand-in with debootstrap needs root")
    install_debian_packages()
    tarball.parent.mkdir(parents=True, exist_ok=True)
    work = tarball.parent / "rootfs.tmp"
    if work.exists():
        shutil.rmtree(work)
    result = subprocess.run(
        [
            "debootstrap",
            "--variant=minbase",
            "--include=python3,python3-venv,python3-pip,ca-certificates",
            suite,
            str(work),
        ],
        capture_output=True,
        text=True,
        timeout=1200,
    )
    if result.returncode != 0:
        raise EngineUnavailable(f"debootstrap failed:\n{result.stdout[-2000:]}{result.stderr[-2000:]}")
    # pip may install into the system Python (as in the real image); `python` is the interpreter's name there.
    for managed in (work / "usr" / "lib").glob("python3*/EXTERNALLY-MANAGED"):
        managed.unlink()
    (work / "usr" / "bin" / "python").symlink_to("python3")
    # The host's CA bundle: this network's TLS interception needs it for pip inside builds.
    host_cas = Path("/etc/ssl/certs/ca-certificates.crt")
    if host_cas.exists():
        shutil.copyfile(host_cas, work / "etc" / "ssl" / "certs" / "ca-certificates.crt")
    (work / "etc" / "pip.conf").write_text("[global]\ncert = /etc/ssl/certs/ca-certificates.crt\n")
    partial = tarball.with_suffix(".partial")
    subprocess.run(["tar", "-C", str(work), "-cf", str(partial), "."], check=True, timeout=600)
    partial.rename(tarball)  # only a complete tarball is ever cached
    shutil.rmtree(work)
