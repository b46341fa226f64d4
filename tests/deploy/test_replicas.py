"""Several replicas, one store: three local servers (python -m serving) on one shared model store, behind
the client's own round robin (client.Client with three URLs). Under load: a new version reaches every
replica within the poll interval plus its load time with zero failed requests; a corrupt version never
replaces the good one anywhere; a replica killed while it loads a new version costs no user request
(the client fails over). Figures are printed (pytest -s shows them)."""

from __future__ import annotations

import os
import shutil
import signal
import threading
import time

import pytest

import retrieval_client as client
import server_process as sp

pytestmark = pytest.mark.slow

POLL_S = 1.0


class Load:
    """Bounded request loops (threads) through one round-robin client; records every failure."""

    def __init__(self, c: client.Client, threads: int = 2, max_requests: int = 20000, pause: float = 0.01) -> None:
        self.pause = pause  # between a thread's requests: load that leaves the 2 shared cores some room
        self.client, self.max_requests = c, max_requests
        self.ok = 0
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]

    def _run(self) -> None:
        while not self._stop.is_set() and self.ok + len(self.errors) < self.max_requests:
            try:
                hits = self.client.recommend("1", k=5)
                assert len(hits) == 5
                with self._lock:
                    self.ok += 1
                time.sleep(self.pause)
            except Exception as exc:
                with self._lock:
                    self.errors.append(repr(exc))

    def __enter__(self) -> Load:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(60)


@pytest.fixture
def replicas(model_store, tmp_path):
    store = tmp_path / "models"
    shutil.copytree(model_store, store)
    base = store / "retrieval"
    servers = [
        sp.ServerProcess(
            "--model_name=retrieval",
            f"--model_base_path={base}",
            f"--file_system_poll_wait_seconds={POLL_S:g}",
            "--max_num_load_retries=0",
        )
        for _ in range(3)
    ]
    for s in servers:
        s.start(wait_ready=False)
    for s in servers:
        s.wait_for_line(sp.READY_LINE, 180)
    rr = client.Client(
        [f"grpc://127.0.0.1:{s.port}" for s in servers],
        timeout=20.0,
        retry=client.Retry(attempts=6, backoff=0.05, max_backoff=0.5),
    )
    rr.wait_until_available(120, ["retrieval"])
    yield base, servers, rr
    rr.close()
    for s in servers:
        if s.proc.poll() is None:
            s.stop()


def state(server, version: int) -> str | None:
    try:
        return server.states("retrieval").get(version, ("",))[0] or None
    except Exception:
        return None


def watch(servers, version: int, timeout: float = 90.0) -> list[dict]:
    """When each replica logged that it began loading ``version`` (LOADING), loaded it (AVAILABLE) or gave
    up (END), in seconds from now; read from the servers' logs every 10 ms (a status RPC can be slow to
    answer while the same process loads a model)."""
    marks = {
        "LOADING": f"Loading servable version {{name: retrieval version: {version}}}",
        "AVAILABLE": f"Successfully loaded servable version {{name: retrieval version: {version}}}",
        "END": f"Loading servable: {{name: retrieval version: {version}}} failed",
    }
    t0 = time.monotonic()
    seen: list[dict[str, float]] = [{} for _ in servers]
    while time.monotonic() - t0 < timeout:
        for s, record in zip(servers, seen, strict=True):
            for line in list(s.lines[-200:]):
                for name, text in marks.items():
                    if text in line and name not in record:
                        record[name] = time.monotonic() - t0
        if all("AVAILABLE" in r or "END" in r for r in seen):
            return seen
        time.sleep(0.01)
    raise AssertionError(f"version {version} not settled on every replica in {timeout}s: {seen}")


def test_publish_corrupt_and_kill_mid_load_under_load(replicas):
    base, servers, rr = replicas
    v1 = sp.versions(base)[-1]
    transport = rr._transport
    with Load(rr) as load:
        time.sleep(1.0)
        # 1. A new version, published as the export does (staged, renamed), reaches every replica.
        v2 = v1 + 1
        sp.publish_copy(base, v1, v2)
        seen = watch(servers, v2)
        for record in seen:
            assert "AVAILABLE" in record and "END" not in record, seen
            detect = record["LOADING"]
            assert detect <= POLL_S + 1.0, f"{seen}: picked up {detect:.2f}s after publishing (poll {POLL_S}s)"
        for s in servers:
            assert s.predict("retrieval", sp_users()).model_spec.version.value == v2
        rollover = [(r["LOADING"], r["AVAILABLE"]) for r in seen]

        # 2. A corrupt version: it fails on every replica, v2 keeps serving everywhere.
        v3 = v2 + 1
        staging = base / "_staging-corrupt"
        shutil.copytree(base / str(v2), staging)
        (staging / "saved_model.pb").write_bytes(b"this is not a SavedModel")
        os.rename(staging, base / str(v3))
        seen_corrupt = watch(servers, v3)
        assert all("END" in r and "AVAILABLE" not in r for r in seen_corrupt), seen_corrupt
        for s in servers:
            assert state(s, v2) == "AVAILABLE"
            assert s.predict("retrieval", sp_users()).model_spec.version.value == v2
        shutil.rmtree(base / str(v3))

        # 3. A good version again, and one replica killed while it loads it.
        v4 = v3 + 1
        failovers_before = transport.failovers
        sp.publish_copy(base, v2, v4)
        victim = servers[0]
        deadline = time.monotonic() + 30
        loading = f"Loading servable version {{name: retrieval version: {v4}}}"
        loaded = f"Successfully loaded servable version {{name: retrieval version: {v4}}}"
        while not any(loading in line for line in victim.lines[-200:]):
            assert time.monotonic() < deadline, "the victim never started loading v4"
            time.sleep(0.002)
        assert not any(loaded in line for line in victim.lines[-200:]), "v4 loaded before the kill"
        victim.proc.send_signal(signal.SIGKILL)
        killed_at, ok_at_kill = time.monotonic(), load.ok
        victim.proc.wait(30)
        seen_after = watch(servers[1:], v4)
        assert all("AVAILABLE" in r for r in seen_after), seen_after
        for s in servers[1:]:
            assert s.predict("retrieval", sp_users()).model_spec.version.value == v4
        time.sleep(2.0)  # more load with one replica gone
        requests_after_kill = load.ok - ok_at_kill
    assert load.errors == [], load.errors[:5]
    failovers = transport.failovers - failovers_before
    assert failovers > 0, "no request met the killed replica: the failover was not exercised"
    print(f"\nreplicas: 3, poll interval {POLL_S:g}s, {load.ok} requests, 0 failed")
    for i, (detect, available) in enumerate(rollover):
        print(
            f"  replica {i}: v2 picked up {detect:.2f}s after publishing, AVAILABLE at {available:.2f}s "
            f"(load {available - detect:.2f}s)"
        )
    print("  corrupt v3: END on all 3 replicas, v2 kept serving")
    print(
        f"  replica 0 killed mid-load: {failovers} calls failed over, "
        f"{requests_after_kill} requests answered after the kill, 0 failed; v4 AVAILABLE on the other two"
    )
    assert requests_after_kill > 0 and time.monotonic() > killed_at


def sp_users() -> dict:
    return {"user_id": [b"1", b"2"]}
