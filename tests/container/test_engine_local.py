"""`docker compose -f docker-compose.local.yml up` for real: images built, export job run, server healthy.

Everything runs on a real Docker engine (the session fixture ``engine``) through the real compose file and
Debian's docker-compose 1.29, in a copy of this checkout (compose_project.py). The tests run in file order
and share one project: build, up, a new version under load, a corrupt version, down.
"""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from compose_project import ComposeProject, checkout_copy, tree_digest, versions
from container_support import say

pytestmark = pytest.mark.engine

COMPOSE_FILE = "docker-compose.local.yml"
MODELS = ("retrieval", "similar_movies")
USER = "42"
EXPORT_TIMEOUT_S = 900
HEALTHY_TIMEOUT_S = 240


@pytest.fixture(scope="module")
def project(engine, tmp_path_factory):
    root = checkout_copy(tmp_path_factory.mktemp("compose-local") / "bundle")
    # EXPORT_TUNE_BUDGET: 30 s of tuning instead of the default preset's 300 (CI time).
    project = ComposeProject(
        engine,
        root,
        f"rbtest{time.monotonic_ns() % 10**8}",
        COMPOSE_FILE,
        EXPORT_DATA="synthetic",
        EXPORT_TUNE_BUDGET="30",
    )
    yield project
    project.down()


@pytest.fixture(scope="module")
def started(project):
    """`docker-compose build`, then `up -d` with EXPORT_DATA=synthetic (what a user without network runs)."""
    project.compose("build", timeout=1800)
    project.compose("up", "-d", timeout=EXPORT_TIMEOUT_S)
    return project


def rest_and_grpc(project):
    import retrieval_client as client

    return (
        client.connect(f"http://127.0.0.1:{project.rest_port}", timeout=30),
        client.connect(f"grpc://127.0.0.1:{project.grpc_port}", timeout=30),
    )


def titles(hits) -> list:
    return [hit.title for hit in hits]


def test_both_images_build_and_share_their_dependency_layer(started, engine):
    config = started.compose("config").stdout
    import yaml

    images = {name: service["image"] for name, service in yaml.safe_load(config)["services"].items()}
    layers = {}
    for service, image in images.items():
        info = engine.docker("image", "inspect", image, "--format", "{{json .RootFS.Layers}}").stdout
        layers[service] = yaml.safe_load(info)
    # The base plus the dependency layer (TensorFlow, ScaNN, ...) are the same layers, not rebuilt twice.
    shared = [a for a, b in zip(layers["export"], layers["serving"], strict=False) if a == b]
    assert len(shared) >= 3, layers
    size = int(engine.docker("image", "inspect", images["serving"], "--format", "{{.Size}}").stdout)
    assert size > 10**9  # TensorFlow is in it
    user = engine.docker("image", "inspect", images["serving"], "--format", "{{.Config.User}}").stdout.strip()
    assert user not in ("", "0", "root"), "the serving image must not run as root"


def test_export_exits_0_and_publishes_both_models_readable_by_the_serving_user(started):
    state = started.wait_exited("export", EXPORT_TIMEOUT_S)
    assert state["ExitCode"] == 0, started.logs("export")[-4000:]
    for model in MODELS:
        found = versions(started.models / model)
        assert len(found) == 1, (model, found)
        version = started.models / model / str(found[0])
        assert (version / "saved_model.pb").is_file() and (version / "assets.extra" / "manifest.json").is_file()
        for path in [version, *version.rglob("*")]:
            mode = path.stat().st_mode
            needed = 0o005 if path.is_dir() else 0o004  # others: read (and enter) — the serving user is "other"
            assert mode & needed == needed, f"{path} is {oct(mode)}: the non-root serving container cannot read it"


def test_serving_turns_healthy_by_the_engines_own_healthcheck(started):
    state = started.wait_healthy("serving", HEALTHY_TIMEOUT_S)
    log = state["Health"]["Log"][-1]
    assert log["ExitCode"] == 0 and "AVAILABLE" in log["Output"], log


def test_client_on_the_host_gets_the_models_answers_over_rest_and_grpc(started):
    from serving.bundle import SavedModelBundle

    started.wait_healthy("serving", HEALTHY_TIMEOUT_S)
    rest, grpc = rest_and_grpc(started)
    with rest, grpc:
        over_rest, over_grpc = rest.recommend(USER, k=5), grpc.recommend(USER, k=5)
        similar_rest = rest.similar(over_rest[0].title, k=5)
        similar_grpc = grpc.similar(over_rest[0].title, k=5)
        history = titles(over_rest)[:3]  # a new user's history, answered by by_history in the container
        history_rest, history_grpc = rest.recommend_for_history(history, k=5), grpc.recommend_for_history(history, k=5)
        statuses = {model: rest.status(model) for model in MODELS}
    assert titles(over_rest) == titles(over_grpc) and len(over_rest) == 5
    assert titles(history_rest) == titles(history_grpc) and len(history_rest) == 5
    assert not set(history) & set(titles(history_rest)) and history_rest.fallback is False
    assert titles(similar_rest) == titles(similar_grpc) and over_rest[0].title not in titles(similar_rest)
    for model in MODELS:
        assert [(s.version, s.state) for s in statuses[model]] == [(versions(started.models / model)[0], "AVAILABLE")]
    # The same answer as the published SavedModel gives in this process.
    version = started.models / "retrieval" / str(versions(started.models / "retrieval")[0])
    bundle = SavedModelBundle.load(str(version), run_warmup=False)
    try:
        expected = bundle.run("serving_default", {"user_id": np.array([USER.encode()])})["movie_titles"][0][:5]
    finally:
        bundle.close()
    assert titles(over_rest) == [t.decode() for t in expected]


def test_serving_exposes_metrics_answers_tf_servings_errors_and_cannot_write_the_store(started, engine):
    import json
    import urllib.error
    import urllib.request

    started.wait_healthy("serving", HEALTHY_TIMEOUT_S)
    base = f"http://127.0.0.1:{started.rest_port}"
    with urllib.request.urlopen(base + "/monitoring/prometheus/metrics", timeout=30) as response:
        metrics = response.read().decode()
    assert ":tensorflow:serving:request_count" in metrics and 'model_name="retrieval"' in metrics
    with pytest.raises(urllib.error.HTTPError) as missing:
        urllib.request.urlopen(base + "/v1/models/nope", timeout=30)
    assert missing.value.code == 404
    assert json.loads(missing.value.read()) == {"error": "Could not find any versions of model nope"}
    container = started.containers("serving")[0]
    write = engine.docker("exec", container, "touch", "/models/x", check=False)
    assert write.returncode != 0 and "Read-only file system" in write.stderr


class Load:
    """Clients calling recommend() in a loop over both transports until stopped; every answer is kept."""

    def __init__(self, project) -> None:
        self.clients = rest_and_grpc(project)
        self.answers: list = []
        self.failures: list = []
        self.stopping = threading.Event()
        self.threads = [threading.Thread(target=self._loop, args=(c,), daemon=True) for c in self.clients]

    def _loop(self, c) -> None:
        while not self.stopping.is_set():
            try:
                self.answers.append((time.monotonic(), tuple(titles(c.recommend(USER, k=5)))))
            except Exception as exc:
                self.failures.append(repr(exc))
            time.sleep(0.005)

    def __enter__(self) -> Load:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.stopping.set()
        for thread in self.threads:
            thread.join(timeout=60)
        for c in self.clients:
            c.close()


def wait_for(condition, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def test_run_export_under_load_moves_answers_to_the_new_version_with_no_failed_request(started, request):
    started.wait_healthy("serving", HEALTHY_TIMEOUT_S)
    old_version = versions(started.models / "retrieval")[-1]
    rest, _ = rest_and_grpc(started)
    with rest:
        old_answer = tuple(titles(rest.recommend(USER, k=5)))
    with Load(started) as load:
        time.sleep(2)
        # Another recipe (the seed preset, one epoch), so the new version's answers differ from the old one's.
        started.compose(
            "run",
            "--rm",
            "export",
            "--data=synthetic",
            "--preset=seed",
            "--epochs=1",
            "--no-gate",  # a worse recipe on purpose: the gate would refuse it (the next test)
            "--model-config-file=/models-config/models.config",
            timeout=EXPORT_TIMEOUT_S,
        )
        new_version = versions(started.models / "retrieval")[-1]
        assert new_version > old_version
        with rest_and_grpc(started)[0] as probe:
            # TF Serving lists an unloaded version as END; only the new one may be AVAILABLE.
            wait_for(
                lambda: [s.version for s in probe.status() if s.state == "AVAILABLE"] == [new_version],
                60,
                f"version {new_version} alone AVAILABLE",
            )
            new_answer = tuple(titles(probe.recommend(USER, k=5)))
        switched = time.monotonic()
        time.sleep(3)
    assert not load.failures, f"{len(load.failures)} failed requests, e.g. {load.failures[:3]}"
    assert new_answer != old_answer
    seen = {answer for _, answer in load.answers}
    assert seen <= {old_answer, new_answer}, seen - {old_answer, new_answer}
    assert old_answer in seen and new_answer in seen
    assert all(answer == new_answer for at, answer in load.answers if at > switched)
    assert len(load.answers) > 100
    say(
        request.config,
        f"rollover under load: {len(load.answers)} requests (REST + gRPC), "
        f"{len(load.failures)} failed, version {old_version} -> {new_version}",
    )


def test_the_gate_refuses_a_worse_version_and_the_served_one_keeps_answering(started, request):
    """export/gate.py on the real engine: `run --rm export` of a recipe that does not beat popularity, with the
    compose file's own --on-refusal=keep-serving: one line, exit 0 (an older version serves), nothing published,
    the refused version kept aside with its verdict, and the server still answers with the version it had."""
    import json

    started.wait_healthy("serving", HEALTHY_TIMEOUT_S)
    before = {model: versions(started.models / model) for model in MODELS}
    rest, grpc = rest_and_grpc(started)
    with rest, grpc:
        answer = titles(rest.recommend(USER, k=5))
        result = started.compose(
            "run",
            "--rm",
            "export",
            "--data=synthetic",
            "--preset=seed",
            "--epochs=1",
            "--model-config-file=/models-config/models.config",
            "--on-refusal=keep-serving",
            timeout=EXPORT_TIMEOUT_S,
            check=False,
        )
        output = result.stdout + result.stderr
        assert result.returncode == 0, output[-4000:]
        refusals = [line for line in output.splitlines() if "export: refused by the gate:" in line]
        assert len(refusals) == 1 and "--no-gate" in refusals[0], output[-4000:]
        assert {model: versions(started.models / model) for model in MODELS} == before
        [kept] = [p for p in (started.models / "retrieval").iterdir() if p.name.startswith(".refused-")]
        verdict = json.loads((kept / "assets.extra" / "manifest.json").read_text())["gate"]
        assert verdict["decision"] == "refused" and verdict["popularity"]["passed"] is False
        assert verdict["served"]["version"] == before["retrieval"][-1]
        states = {s.version: s.state for s in grpc.status()}
        assert states[before["retrieval"][-1]] == "AVAILABLE", states
        assert titles(rest.recommend(USER, k=5)) == answer == titles(grpc.recommend(USER, k=5))
    say(request.config, f"gate on the engine: {refusals[0][:200]}")


def test_a_corrupt_version_never_replaces_the_good_one_and_status_shows_it(started):
    started.wait_healthy("serving", HEALTHY_TIMEOUT_S)
    base = started.models / "retrieval"
    good = versions(base)[-1]
    rest, grpc = rest_and_grpc(started)
    with rest, grpc:
        answer = titles(rest.recommend(USER, k=5))
        staging = base / "tmp-corrupt"
        (staging / "variables").mkdir(parents=True)
        (staging / "saved_model.pb").write_bytes(b"this is not a SavedModel")
        staging.rename(base / str(good + 1))  # appears whole, as the export publishes
        # 1 s polls, a first try and two retries 5 s apart (the compose file's flags), then END.
        failed = wait_for(
            lambda: [s for s in rest.status() if s.version == good + 1 and s.state == "END"],
            60,
            f"version {good + 1} to fail loading",
        )
        assert failed[0].error_code != "OK" and failed[0].error_message
        states = {s.version: s.state for s in grpc.status()}
        assert states[good] == "AVAILABLE", states
        assert titles(rest.recommend(USER, k=5)) == answer == titles(grpc.recommend(USER, k=5))
    assert started.only_container("serving")["State"]["Health"]["Status"] == "healthy"


def test_down_removes_every_container_and_network_and_keeps_models(started):
    before = tree_digest(started.models)
    assert started.containers() and started.networks()
    result = started.down()
    assert result.returncode == 0, result.stderr
    assert started.containers() == [] and started.networks() == []
    assert tree_digest(started.models) == before and before
