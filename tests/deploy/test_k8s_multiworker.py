"""deploy/k8s/components/multiworker: the export trained across machines as an Indexed Job, its workers'
TF_CONFIG built from their completion index, read back by export/distributed.py as TensorFlow would."""

from __future__ import annotations

import json
import os
import shlex
import subprocess

import pytest

from export.distributed import Worker, worker
from k8s_support import container, find, pod_spec, render

pytestmark = pytest.mark.tools


def _job_and_service():
    docs = render("pvc-multiworker")
    return find(docs, "Job", "retrieval-train"), find(docs, "Service", "retrieval-train-workers"), docs


def test_each_worker_gets_its_own_tf_config_naming_every_worker_by_its_stable_hostname():
    job, service, _ = _job_and_service()
    spec = job["spec"]
    assert spec["completionMode"] == "Indexed" and spec["completions"] == spec["parallelism"]
    pod = pod_spec(job)
    assert pod["subdomain"] == service["metadata"]["name"] and service["spec"]["clusterIP"] == "None"
    assert service["spec"]["selector"].items() <= job["spec"]["template"]["metadata"]["labels"].items()
    c = container(pod, "export")
    assert c["command"] == ["sh", "-c"]
    [script] = c["args"]
    setup, _, command = script.partition("exec ")
    for index in range(spec["completions"]):
        env = {"JOB_COMPLETION_INDEX": str(index), "PATH": os.environ["PATH"]}
        shown = subprocess.run(["sh", "-c", setup + 'printf %s "$TF_CONFIG"'], env=env, capture_output=True,
                               text=True, check=True).stdout  # fmt: skip
        assert worker({"TF_CONFIG": shown}) == Worker(index, spec["completions"])
        hosts = json.loads(shown)["cluster"]["worker"]
        name, port = job["metadata"]["name"], service["spec"]["ports"][0]["port"]
        assert hosts == [f"{name}-{i}.{pod['subdomain']}:{port}" for i in range(spec["completions"])]
    assert c["ports"][0]["containerPort"] == port
    assert shlex.split(command)[:3] == ["python", "-m", "export"]


def test_the_workers_train_the_export_jobs_command_on_the_same_store():
    job, _, docs = _job_and_service()
    export = find(docs, "Job", "retrieval-export")
    train_args = shlex.split(container(pod_spec(job), "export")["args"][0].partition("exec ")[2])[3:]
    assert train_args == container(pod_spec(export), "export")["args"][:2] + [
        a for a in container(pod_spec(export), "export")["args"][2:] if not a.startswith("--tune-budget")
    ]  # the same flags, less the search (off across workers)
    assert container(pod_spec(job), "export")["image"] == container(pod_spec(export), "export")["image"]
    volumes = {v["name"]: v for v in pod_spec(job)["volumes"]}
    assert volumes["models"] == {v["name"]: v for v in pod_spec(export)["volumes"]}["models"]


def test_workers_accept_each_other_on_their_port_only():
    job, service, docs = _job_and_service()
    policy = find(docs, "NetworkPolicy", "retrieval-train")
    [rule] = policy["spec"]["ingress"]
    labels = job["spec"]["template"]["metadata"]["labels"]
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= labels.items()
    assert rule["from"][0]["podSelector"]["matchLabels"].items() <= labels.items()
    assert [p["port"] for p in rule["ports"]] == [service["spec"]["ports"][0]["port"]]
