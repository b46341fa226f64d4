"""The rendered serving pod, run without a cluster: the Deployment's command line and the ConfigMap's files
drive the bundle's local server (the stand-in for tensorflow_model_server, same flags), and the pod's own
probes are run against it: the readiness/startup exec command fails before the models are AVAILABLE and
passes after; the liveness httpGet path answers 200. Only the mount points are moved to temporary folders
and the ports to free ones (no namespaces needed)."""

from __future__ import annotations

import os
import subprocess
import time

import pytest
import requests

import server_process as sp
from k8s_support import container, find, pod_spec, render

pytestmark = [pytest.mark.slow, pytest.mark.tools]


def test_rendered_pod_command_and_configs_serve_and_its_probes_tell_ready(model_store, tmp_path):
    docs = render("pvc")
    c = container(pod_spec(find(docs, "Deployment", "tf-serving")), "tensorflow-model-server")
    configmap = next(d for d in docs if d["kind"] == "ConfigMap")
    config_dir = tmp_path / "models-config"
    config_dir.mkdir()
    for name, text in configmap["data"].items():
        if name == "models.config":
            text = text.replace('base_path: "/models/', f'base_path: "{model_store}/')
        (config_dir / name).write_text(text)

    def moved(value: str) -> str:
        return value.replace("/models-config/", f"{config_dir}/")

    flags = [moved(a) for a in c["args"] if not a.startswith(("--port=", "--rest_api_port="))]
    assert c["command"] == ["tensorflow_model_server"] and len(flags) == len(c["args"]) - 2
    server = sp.ServerProcess(*flags, rest=True)
    env = {**os.environ, **{e["name"]: e["value"] for e in c["env"]}}
    assert env["REST_API_PORT"] == "8501"  # what the pod gives the script; here the server's free port:
    env["REST_API_PORT"] = str(server.rest_port)
    probe = [moved(a) for a in c["readinessProbe"]["exec"]["command"]]
    assert probe == [moved(a) for a in c["startupProbe"]["exec"]["command"]]

    def ready() -> subprocess.CompletedProcess:
        return subprocess.run(
            probe, env=env, capture_output=True, text=True, timeout=c["readinessProbe"]["timeoutSeconds"]
        )

    server.start(wait_ready=False)
    try:
        early = ready()
        assert early.returncode != 0, early.stdout  # nothing AVAILABLE yet (not even listening)
        budget = c["startupProbe"]["periodSeconds"] * c["startupProbe"]["failureThreshold"]
        deadline = time.monotonic() + min(budget, 180)
        while (result := ready()).returncode != 0:
            assert time.monotonic() < deadline, f"{result.stdout}\n{server.log[-3000:]}"
            assert server.proc.poll() is None, server.log[-3000:]
            time.sleep(0.5)
        assert "retrieval similar_movies AVAILABLE" in result.stdout
        live = c["livenessProbe"]["httpGet"]
        answer = requests.get(f"http://127.0.0.1:{server.rest_port}{live['path']}", timeout=5)
        assert answer.status_code == 200 and ":tensorflow:" in answer.text
        assert server.predict("retrieval", {"user_id": [b"1"]}).model_spec.version.value > 0
    finally:
        server.stop()
