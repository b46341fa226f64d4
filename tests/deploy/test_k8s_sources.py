"""deploy/k8s/ says what the compose files say: the same command line, ports, mounts, healthcheck and
configs (byte-identical copies of serving/'s), and its variants differ from the base only as documented.
The probe commands exist in the images that run them (checked on the Dockerfiles)."""

from __future__ import annotations

import re

import pytest
import yaml

from k8s_support import K8S, OVERLAYS, ROOT, container, find, pod_spec, render

pytestmark = pytest.mark.tools

COMPOSE_SERVING = yaml.safe_load((ROOT / "serving" / "compose.serving.yml").read_text())["services"][
    "tensorflow-model-server"
]
COMPOSE_EXPORT = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]["export"]
CONFIGS = ["models.config", "monitoring.config", "batching.config", "healthcheck.sh"]
SERVING_OVERLAYS = [o for o in OVERLAYS if o != "kserve"]


def compose_default(arg: str) -> str:
    """docker compose's ${VAR:-default} interpolation with nothing set."""
    return re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", arg)


@pytest.mark.parametrize("name", CONFIGS)
def test_config_copies_are_identical_to_serving(name):
    assert (K8S / "config" / name).read_bytes() == (ROOT / "serving" / name).read_bytes(), (
        f"deploy/k8s/config/{name} differs from serving/{name}: run deploy/k8s/sync-config.sh"
    )


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_configmap_holds_the_serving_configs(overlay):
    configmap = next(d for d in render(overlay) if d["kind"] == "ConfigMap")
    assert sorted(configmap["data"]) == sorted(CONFIGS)
    for name in CONFIGS:
        if overlay == "gcs" and name == "models.config":
            continue  # test_gcs_models_config_is_serving_s_with_bucket_paths
        assert configmap["data"][name] == (ROOT / "serving" / name).read_text()


def serving_container(overlay: str) -> dict:
    return container(pod_spec(find(render(overlay), "Deployment", "tf-serving")), "tensorflow-model-server")


@pytest.mark.parametrize("overlay", SERVING_OVERLAYS)
def test_serving_runs_compose_s_command_line(overlay):
    c = serving_container(overlay)
    assert c["command"] == COMPOSE_SERVING["entrypoint"]
    expected = list(COMPOSE_SERVING["command"])
    if overlay == "gcs":  # the one documented difference: a retry budget that outlasts a version's copy
        expected[expected.index("--max_num_load_retries=2")] = "--max_num_load_retries=60"
    assert c["args"] == expected


@pytest.mark.parametrize("overlay", SERVING_OVERLAYS)
def test_serving_ports_mounts_and_probes_match_compose(overlay):
    c = serving_container(overlay)
    compose_ports = sorted(int(p.rsplit(":", 1)[1]) for p in COMPOSE_SERVING["ports"])
    assert sorted(p["containerPort"] for p in c["ports"]) == compose_ports
    flags = dict(a[2:].split("=", 1) for a in c["args"])
    assert {int(flags["port"]), int(flags["rest_api_port"])} == set(compose_ports)
    compose_mounts = {v.split(":")[1] for v in COMPOSE_SERVING["volumes"]}
    mounts = {m["mountPath"] for m in c["volumeMounts"]}
    assert mounts - {"/tmp"} == (compose_mounts - {"/models"} if overlay == "gcs" else compose_mounts)
    assert all(m.get("readOnly") for m in c["volumeMounts"] if m["mountPath"] != "/tmp")
    healthcheck = COMPOSE_SERVING["healthcheck"]["test"]
    assert healthcheck[0] == "CMD"
    assert c["readinessProbe"]["exec"]["command"] == healthcheck[1:]
    assert c["startupProbe"]["exec"]["command"] == healthcheck[1:]
    # compose's timing: every 10 s, 10 s to answer, unready after 3 failures
    timing = COMPOSE_SERVING["healthcheck"]
    probe = c["readinessProbe"]
    assert f"{probe['periodSeconds']}s" == timing["interval"] and f"{probe['timeoutSeconds']}s" == timing["timeout"]
    assert probe["failureThreshold"] == timing["retries"]
    startup = c["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= int(timing["start_period"].rstrip("s"))
    # Liveness asks the REST server for the metrics page, which monitoring.config turns on at that path.
    monitoring = (ROOT / "serving" / "monitoring.config").read_text()
    assert f'path: "{c["livenessProbe"]["httpGet"]["path"]}"' in monitoring and "enable: true" in monitoring
    # Every config file a flag names is in the mounted ConfigMap.
    for value in flags.values():
        if value.startswith("/models-config/"):
            assert value.rsplit("/", 1)[1] in CONFIGS


@pytest.mark.parametrize("overlay", SERVING_OVERLAYS)
def test_serving_operations(overlay):
    docs = render(overlay)
    deployment = find(docs, "Deployment", "tf-serving")
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    assert "replicas" not in deployment["spec"], "the HPA owns the replica count"
    spec = pod_spec(deployment)
    assert spec["securityContext"]["runAsNonRoot"] is True and spec["securityContext"]["runAsUser"] > 0
    c = serving_container(overlay)
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    assert any(v["name"] == "tmp" and "emptyDir" in v for v in spec["volumes"])
    assert {"cpu", "memory"} <= set(c["resources"]["requests"]) and {"cpu", "memory"} <= set(c["resources"]["limits"])
    hpa = find(docs, "HorizontalPodAutoscaler", "tf-serving")
    assert hpa["spec"]["scaleTargetRef"]["name"] == "tf-serving"
    assert hpa["spec"]["metrics"][0]["resource"]["name"] == "cpu"
    assert hpa["spec"]["minReplicas"] >= 2
    find(docs, "PodDisruptionBudget", "tf-serving")
    plain, headless = find(docs, "Service", "tf-serving"), find(docs, "Service", "tf-serving-headless")
    assert headless["spec"]["clusterIP"] == "None"
    for service in (plain, headless):
        assert sorted(p["port"] for p in service["spec"]["ports"]) == [8500, 8501]
        assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
    volumes = {v["name"]: v for v in spec["volumes"]}
    if overlay == "gcs":
        assert "models" not in volumes
    else:
        assert volumes["models"]["persistentVolumeClaim"]["claimName"] == "models"


def export_pods(overlay: str) -> list[dict]:
    docs = render(overlay)
    return [pod_spec(find(docs, "Job", "retrieval-export")), pod_spec(find(docs, "CronJob", "retrieval-export"))]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_export_job_and_cronjob_run_compose_s_export_command(overlay):
    job, cron = export_pods(overlay)
    assert job == cron, "the CronJob runs the Job's pod spec"
    key = "initContainers" if overlay == "gcs" else "containers"
    export = container(job, "export", key)
    assert export["args"] == [compose_default(a) for a in COMPOSE_EXPORT["command"]]
    mounts = {m["mountPath"] for m in export["volumeMounts"]}
    assert {v.split(":")[1] for v in COMPOSE_EXPORT["volumes"][:2]} <= mounts  # /models, /models-config
    assert job["securityContext"]["runAsNonRoot"] is True
    assert export["securityContext"]["readOnlyRootFilesystem"] is True
    writable = {m["mountPath"] for m in export["volumeMounts"] if not m.get("readOnly")}
    env = {e["name"]: e["value"] for e in export["env"]}
    assert {"/models", "/tmp", env["TFDS_DATA_DIR"]} <= writable and env["HOME"] == "/tmp"
    assert {v["name"] for v in job["volumes"]} >= {m["name"] for m in export["volumeMounts"]}


def test_gcs_models_config_is_serving_s_with_bucket_paths():
    served = (ROOT / "serving" / "models.config").read_text()
    gcs = (K8S / "components" / "store-gcs" / "models.config").read_text()
    buckets = set(re.findall(r"gs://[^/\"]+/models", gcs))
    assert len(buckets) == 1
    (bucket,) = buckets
    assert gcs == served.replace('base_path: "/models/', f'base_path: "{bucket}/')
    job = export_pods("gcs")[0]
    copy = container(job, "copy-to-bucket")
    assert copy["command"] == ["python", "-m", "export.object_store"]
    assert f"--destination={bucket}" in copy["args"] and "--store=/models" in copy["args"]
    assert next(v for v in job["volumes"] if v["name"] == "models").get("emptyDir") is not None


def test_images_carry_the_tags_compose_builds():
    env = dict(
        line.split("=", 1) for line in (ROOT / ".env").read_text().splitlines() if line and not line.startswith("#")
    )
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]

    def tag(image: str) -> str:
        return re.sub(r"\$\{(\w+):\?[^}]*\}", lambda m: env[m.group(1)], image)

    serving_image, export_image = tag(compose["serving"]["image"]), tag(compose["export"]["image"])
    for overlay in OVERLAYS:
        docs = render(overlay)
        for pod in export_pods(overlay):
            for c in pod.get("initContainers", []) + pod["containers"]:
                assert c["image"] == export_image, (overlay, c["name"])
        if overlay == "kserve":
            images = {d["spec"]["predictor"]["tensorflow"]["image"] for d in docs if d["kind"] == "InferenceService"}
            assert images == {serving_image}
        else:
            assert serving_container(overlay)["image"] == serving_image


def test_kserve_runs_compose_s_flags_but_those_kserve_sets():
    runtime_set = {"port", "rest_api_port", "model_config_file", "model_config_file_poll_wait_seconds"}
    expected = [a for a in COMPOSE_SERVING["command"] if a[2:].split("=")[0] not in runtime_set]
    for isvc in (d for d in render("kserve") if d["kind"] == "InferenceService"):
        tf = isvc["spec"]["predictor"]["tensorflow"]
        assert sorted(tf["args"]) == sorted(expected)
        env = {e["name"]: e["value"] for e in tf["env"]}
        assert env["HEALTHCHECK_MODELS"] == isvc["metadata"]["name"] and env["REST_API_PORT"] == "8080"
        assert tf["readinessProbe"]["exec"]["command"] == COMPOSE_SERVING["healthcheck"]["test"][1:]


def test_local_overlay_never_pulls_and_binds_a_hostpath_volume():
    docs = render("local")
    pv = find(docs, "PersistentVolume", "retrieval-models-hostpath")
    pvc = find(docs, "PersistentVolumeClaim", "models")
    assert pv["spec"]["hostPath"]["path"] and pvc["spec"]["volumeName"] == pv["metadata"]["name"]
    assert pvc["spec"]["storageClassName"] == pv["spec"]["storageClassName"] == ""
    pods = [pod_spec(find(docs, "Deployment", "tf-serving")), *export_pods("local")]
    assert all(c["imagePullPolicy"] == "IfNotPresent" for p in pods for c in p["containers"])


def test_pvc_overlay_claims_read_write_many():
    assert find(render("pvc"), "PersistentVolumeClaim", "models")["spec"]["accessModes"] == ["ReadWriteMany"]


# -- the probe commands exist in the images that run them ----------------------------------------------------
def final_stage(dockerfile: str) -> str:
    text = (ROOT / dockerfile).read_text()
    return re.split(r"^FROM\s", text, flags=re.M)[-1]


def test_probe_commands_exist_in_the_serving_image():
    stage = final_stage("serving/Dockerfile")
    # The runtime stage is the stock tensorflow/serving image (Ubuntu: bash, no curl), with the binary the
    # Deployment's command names copied in; the probe script comes from the ConfigMap, run by bash, and
    # speaks HTTP over bash's /dev/tcp (no curl or wget needed).
    assert stage.startswith("tensorflow/serving:${TF_SERVING_VERSION}\n")
    assert "/usr/bin/tensorflow_model_server" in stage
    assert COMPOSE_SERVING["entrypoint"] == ["tensorflow_model_server"]
    script = (ROOT / "serving" / "healthcheck.sh").read_text()
    assert script.startswith("#!/usr/bin/env bash\n") and "/dev/tcp/" in script
    assert not re.search(r"^\s*[^#\n]*\b(curl|wget|python3?)\b", script, flags=re.M)
    c = serving_container("pvc")
    assert c["readinessProbe"]["exec"]["command"][0] == "bash"
    assert "exec" not in c["livenessProbe"]  # an httpGet probe: the kubelet makes the request


def test_export_image_has_the_copy_step():
    stage = final_stage("export/Dockerfile")
    assert stage.startswith("python:") and "COPY export/ export/" in stage
    assert (ROOT / "export" / "object_store.py").is_file()


def test_local_stand_in_image_is_a_drop_in_for_the_pod():
    # deploy/k8s/README.md offers serving/Dockerfile.local's image for kind/minikube (no TF Serving build):
    # it must answer to the same command, have bash for the probe, and run as the pods' user.
    stage = final_stage("serving/Dockerfile.local")
    assert re.match(r"python:\$\{PYTHON_VERSION\}-slim-bookworm\n", stage)  # Debian: bash is essential
    assert "/usr/local/bin/tensorflow_model_server" in stage
    assert re.search(r"^ENTRYPOINT \[\"tensorflow_model_server\"\]", stage, flags=re.M)
    uid = int(re.search(r"^USER (\d+)", stage, flags=re.M).group(1))
    spec = pod_spec(find(render("local"), "Deployment", "tf-serving"))
    assert spec["securityContext"]["runAsUser"] == uid
