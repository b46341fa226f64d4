"""docker-compose.yml's export job command, verbatim, publishes a store that models.config serves.

The command comes from `docker compose config` with EXPORT_DATA=synthetic and EXPORT_PRESET=seed (the
variables a user sets; the job has no network here), run as the image's entrypoint (`python -m export`)
in a private mount namespace where /models is an empty temporary store and /models-config is serving/,
mounted as the compose file mounts them.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

import namespaces
from container_support import COMPOSE_FILES, ROOT, resolved_config

EXPORT_TIMEOUT_S = 600


@pytest.fixture(scope="module")
def exported_store(tmp_path_factory):
    config = resolved_config("compose-v2", COMPOSE_FILES["scann"], EXPORT_DATA="synthetic", EXPORT_PRESET="seed")
    export = config["services"]["export"]
    dockerfile = (ROOT / export["build"]["dockerfile"]).read_text()
    assert 'ENTRYPOINT ["python", "-m", "export"]' in dockerfile
    mounts = {v["target"]: (Path(v["source"]), bool(v.get("read_only"))) for v in export["volumes"]
              if v["type"] == "bind"}
    assert mounts["/models"] == (ROOT / "models", False)

    store = tmp_path_factory.mktemp("compose-export") / "models"
    store.mkdir()
    log = store.parent / "export.log"
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + [p for p in [env.get("PYTHONPATH")] if p])
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    env.setdefault("TF_USE_LEGACY_KERAS", "1")
    job = namespaces.start([sys.executable, "-m", "export", *export["command"]], workdir=store.parent, log=log,
                           env=env, binds=[(store, "/models", False),
                                           (mounts["/models-config"][0], "/models-config", True)])
    try:
        code = job.process.wait(timeout=EXPORT_TIMEOUT_S)
    finally:
        job.stop()
    assert code == 0, f"the compose export command failed ({code}):\n{job.log_text()[-6000:]}"
    return store, export["command"]


def test_compose_export_command_publishes_both_models_as_numbered_versions(exported_store):
    store, command = exported_store
    assert "--data=synthetic" in command and "--model-base-path=/models" in command
    for model in ("retrieval", "similar_movies"):
        versions = [p for p in (store / model).iterdir() if p.name.isdigit()]
        assert len(versions) == 1, sorted(p.name for p in (store / model).iterdir())
        version = versions[0]
        assert (version / "saved_model.pb").is_file()
        assert (version / "assets.extra" / "tf_serving_warmup_requests").is_file()
        manifest = json.loads((version / "assets.extra" / "manifest.json").read_text())
        assert manifest["model_name"] == model
        assert str(manifest["version"]) == version.name
        assert manifest["index"]["kind"] == "scann"  # EXPORT_INDEX's default in docker-compose.yml


def test_compose_export_writes_where_models_config_points(exported_store, tfs_protos):
    from google.protobuf import text_format

    store, _ = exported_store
    config = text_format.Parse((ROOT / "serving" / "models.config").read_text(), tfs_protos.model_server_config())
    for model in config.model_config_list.config:
        # base_path is a container path under the /models mount; the export wrote the same path.
        relative = Path(model.base_path).relative_to("/models")
        assert any(p.name.isdigit() for p in (store / relative).iterdir()), model.base_path
