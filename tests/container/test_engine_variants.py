"""The export services of all three compose files on a real engine, a bad --data, and what cannot run here.

- docker-compose.yml (ScaNN TF Serving build) and docker-compose.stock.yml (stock TF Serving, BruteForce):
  their export service runs for real exactly as `up` runs it. Their serving images cannot be had on a
  machine with no registry (tensorflow/serving:* cannot be pulled, so neither the stock image nor the
  ScaNN build's base); the tests try, and say so in pytest's output when it fails.
- docker-compose.local.yml with a --data that does not exist: the export container exits non-zero with one
  line saying what is wrong, and serving is never started.
- docker-compose.local.yml on your own interactions: a CSV with other column names and a catalogue, named
  by the EXPORT_* variables; the published models answer with the catalogue's ids.
- docker-compose.local.yml with Docker Compose v2 (the Go `docker compose`): up, healthy, answers, down.
"""

from __future__ import annotations

import json
import time

import pytest

from compose_project import ComposeProject, checkout_copy, versions
from container_support import say

pytestmark = pytest.mark.engine

EXPORT_TIMEOUT_S = 900


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return checkout_copy(tmp_path_factory.mktemp("compose-variants") / "bundle")


def project_name(tag: str) -> str:
    return f"rb{tag}{time.monotonic_ns() % 10**7}"


@pytest.mark.parametrize(
    "compose_file, index", [("docker-compose.yml", "scann"), ("docker-compose.stock.yml", "brute_force")]
)
def test_export_service_runs_for_real_and_publishes_its_index(engine, bundle, compose_file, index, request):
    project = ComposeProject(
        engine,
        bundle,
        project_name(index.replace("_", "")),
        compose_file,
        EXPORT_DATA="synthetic",
        EXPORT_PRESET="seed",
        EXPORT_GATE="off",  # the seed preset does not beat popularity: the gate would refuse it (test_engine_local)
    )
    before = {model: versions(bundle / "models" / model) for model in ("retrieval", "similar_movies")}
    try:
        # `up export`: the export service alone, with the command line `up` gives it (the image is the
        # export image every variant shares, built by the build step of whichever runs first).
        project.compose("build", "export", timeout=1800)
        project.compose("up", "--no-color", "export", timeout=EXPORT_TIMEOUT_S)
        state = project.only_container("export")["State"]
        assert state["ExitCode"] == 0, project.logs("export")[-4000:]
        for model in ("retrieval", "similar_movies"):
            new = sorted(set(versions(bundle / "models" / model)) - set(before[model]))
            assert len(new) == 1, (model, new)
            manifest = json.loads(
                (bundle / "models" / model / str(new[0]) / "assets.extra" / "manifest.json").read_text()
            )
            assert manifest["index"]["kind"] == index
            assert manifest["training"]["parameters"]["preset"] == "seed"  # EXPORT_PRESET reached the job
            assert manifest["data"]["source"]["kind"] == "synthetic"
        # What the serving container needs from a registry: the stock image itself, or the devel image the
        # ScaNN build starts from.
        serving = yaml_config(project)["services"]["serving"]
        needed = (
            f"tensorflow/serving:{serving['build']['args']['TF_SERVING_VERSION']}-devel"
            if "build" in serving
            else serving["image"]
        )
        pulled = engine.docker("pull", needed, check=False, timeout=120)
        if pulled.returncode == 0:
            say(request.config, f"{compose_file}: {needed} could be pulled (its serving is not run by these tests)")
        else:
            reason = (pulled.stderr.strip().splitlines() or ["no message"])[-1]
            say(
                request.config,
                f"NOT RUN HERE: {compose_file}'s serving container needs {needed}, which "
                f"cannot be pulled on this machine ({reason[:140]})",
            )
    finally:
        project.down()


def yaml_config(project: ComposeProject) -> dict:
    import yaml

    return yaml.safe_load(project.compose("config").stdout)


def test_bad_data_fails_the_export_with_one_line_and_serving_never_starts(engine, bundle):
    project = ComposeProject(
        engine, bundle, project_name("baddata"), "docker-compose.local.yml", EXPORT_DATA="/data/no-such-folder"
    )
    before = {model: versions(bundle / "models" / model) for model in ("retrieval", "similar_movies")}
    try:
        project.compose("build", timeout=1800)
        result = project.compose("up", "-d", "--no-color", timeout=EXPORT_TIMEOUT_S, check=False)
        assert result.returncode != 0
        state = project.only_container("export")["State"]
        assert state["Status"] == "exited" and state["ExitCode"] != 0
        lines = [line for line in project.logs("export").splitlines() if line.strip()]
        assert len(lines) == 1, lines
        assert "--data /data/no-such-folder" in lines[0] and "no such file or folder" in lines[0]
        for container in project.containers("serving"):
            serving = project.inspect(container)["State"]
            assert not serving["Running"] and serving["StartedAt"].startswith("0001-01-01"), serving
        assert {model: versions(bundle / "models" / model) for model in before} == before  # nothing published
    finally:
        project.down()
    assert project.containers() == [] and project.networks() == []


def test_your_own_interactions_export_through_the_compose_file(engine, bundle, tmp_path):
    """EXPORT_DATA names a CSV under /data, the EXPORT_*_COLUMN variables its columns and EXPORT_ITEMS its
    catalogue (where two items share a name): the export service trains on it and publishes models that
    answer by the catalogue's ids."""
    import numpy as np

    from serving.bundle import SavedModelBundle

    rng = np.random.default_rng(0)
    folder = tmp_path / "shop"
    folder.mkdir()
    skus = [f"sku-{i:03d}" for i in range(150)]
    names = [f"Item {i}" for i in range(150)]
    names[7] = names[8] = "Twin Lamp"  # two items, one display name
    (folder / "items.csv").write_text(
        "sku,name\n" + "".join(f"{s},{n}\n" for s, n in zip(skus, names, strict=True)), encoding="utf-8"
    )
    who = rng.integers(0, 60, 4000)
    what = (who * 2 + rng.integers(0, 40, 4000)) % 150  # each user's taste: a window of the catalogue
    (folder / "events.csv").write_text(
        "who,what,at\n" + "".join(f"u{u},{skus[m]},{t}\n" for t, (u, m) in enumerate(zip(who, what, strict=True))),
        encoding="utf-8",
    )
    project = ComposeProject(
        engine,
        bundle,
        project_name("own"),
        "docker-compose.local.yml",
        MOVIELENS_DIR=str(folder),
        EXPORT_DATA="/data/events.csv",
        EXPORT_USER_COLUMN="who",
        EXPORT_ITEM_COLUMN="what",
        EXPORT_TIME_COLUMN="at",
        EXPORT_ITEMS="/data/items.csv",
        EXPORT_ITEM_ID_COLUMN="sku",
        EXPORT_TITLE_COLUMN="name",
        EXPORT_PRESET="seed",
        EXPORT_GATE="off",  # a tiny made-up catalogue: nothing beats popularity there
    )
    before = {model: versions(bundle / "models" / model) for model in ("retrieval", "similar_movies")}
    try:
        project.compose("build", "export", timeout=1800)
        project.compose("up", "--no-color", "export", timeout=EXPORT_TIMEOUT_S)
        assert project.only_container("export")["State"]["ExitCode"] == 0, project.logs("export")[-4000:]
    finally:
        project.down()
    new = {model: sorted(set(versions(bundle / "models" / model)) - set(before[model])) for model in before}
    assert [len(v) for v in new.values()] == [1, 1], new
    path = {model: bundle / "models" / model / str(v[0]) for model, v in new.items()}
    source = json.loads((path["retrieval"] / "assets.extra" / "manifest.json").read_text())["data"]["source"]
    pairs = len(set(zip(who.tolist(), what.tolist(), strict=True)))  # a repeated (user, item) keeps its first row
    assert source["kind"] == "own" and source["sizes"] == {"ratings": pairs, "movies": 150, "users": 60}
    assert source["rows"]["dropped"]["duplicates"] == 4000 - pairs
    similar = SavedModelBundle.load(str(path["similar_movies"]), run_warmup=True)
    try:
        by_id = similar.run("by_id", {"movie_id": np.array([b"sku-007", b"sku-008", b"sku-100"], dtype=object)})
        by_title = similar.run(
            "serving_default",
            {"movie_title": np.array([b"Twin Lamp [sku-007]", b"Twin Lamp [sku-008]", b"Item 100"], dtype=object)},
        )
    finally:
        similar.close()
    assert by_id["movie_titles"].tolist() == by_title["movie_titles"].tolist()
    rows = [[i.decode() for i in row] for row in by_id["movie_ids"].tolist()]
    assert {i for row in rows for i in row} <= set(skus)  # answers carry the catalogue's ids
    assert "sku-100" not in rows[2]  # never the query itself


def test_docker_compose_v2_runs_the_local_variant_too(engine, bundle):
    """The Go `docker compose` users run (v2.40, BuildKit builds through the engine), not only 1.29."""
    import retrieval_client as client

    project = ComposeProject(
        engine,
        bundle,
        project_name("v2"),
        "docker-compose.local.yml",
        implementation="compose-v2",
        EXPORT_DATA="synthetic",
        EXPORT_TUNE_BUDGET="0",
    )
    try:
        project.compose("up", "-d", "--build", timeout=1800)
        assert project.wait_exited("export", EXPORT_TIMEOUT_S)["ExitCode"] == 0, project.logs("export")[-4000:]
        project.wait_healthy("serving", 240)
        with (
            client.connect(f"http://127.0.0.1:{project.rest_port}", timeout=30) as rest,
            client.connect(f"grpc://127.0.0.1:{project.grpc_port}", timeout=30) as grpc,
        ):
            assert [h.title for h in rest.recommend("42", k=5)] == [h.title for h in grpc.recommend("42", k=5)]
    finally:
        project.down()
    assert project.containers() == [] and project.networks() == []
