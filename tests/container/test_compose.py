"""The three compose files, validated by real compose implementations' `config` (they run for real in
test_engine_local.py and test_engine_variants.py)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from container_support import COMPOSE_FILES, HERE, IMPLEMENTATION_PARAMS, ROOT, resolved_config, run_compose

SERVER_FLAGS = {
    line.strip()
    for line in (HERE / "tensorflow_model_server_flags.txt").read_text().splitlines()
    if line.strip() and not line.startswith("#")
}


def service(config: dict, name: str) -> dict:
    assert name in config["services"], f"no service {name!r} in {sorted(config['services'])}"
    return config["services"][name]


def published(ports) -> set:
    """(host_ip, published, target) of every port, from either implementation's output format."""
    out = set()
    for port in ports:
        if isinstance(port, dict):
            out.add((port.get("host_ip"), str(port["published"]), str(port["target"])))
        else:
            match = re.fullmatch(r"(.+):(\d+):(\d+)(?:/tcp)?", port)
            assert match, port
            host_ip, host_port, target = match.groups()
            out.add((host_ip, host_port, target))
    return out


def volume_map(volumes) -> dict:
    """container path -> (host path, read_only), from either implementation's output format."""
    out = {}
    for volume in volumes:
        if isinstance(volume, dict):
            out[volume["target"]] = (volume["source"], bool(volume.get("read_only")))
        else:
            source, target, *mode = volume.split(":")
            out[target] = (source, bool(mode) and mode[0] == "ro")
    return out


@pytest.mark.parametrize("implementation", IMPLEMENTATION_PARAMS)
@pytest.mark.parametrize("variant", sorted(COMPOSE_FILES))
def test_compose_file_is_valid_and_serving_waits_for_a_successful_export(implementation, variant):
    config = resolved_config(implementation, COMPOSE_FILES[variant])

    serving = service(config, "serving")
    export = service(config, "export")
    assert serving["depends_on"]["export"]["condition"] == "service_completed_successfully"
    assert export["restart"] == "no"
    assert serving["restart"] in ("unless-stopped", "always")
    assert serving["healthcheck"]["test"] == ["CMD", "bash", "/models-config/healthcheck.sh"]
    assert serving["entrypoint"] == ["tensorflow_model_server"]
    assert published(serving["ports"]) == {("127.0.0.1", "8500", "8500"), ("127.0.0.1", "8501", "8501")}
    volumes = volume_map(serving["volumes"])
    assert volumes["/models"] == (str(ROOT / "models"), True)
    assert volumes["/models-config"] == (str(ROOT / "serving"), True)
    assert volume_map(export["volumes"])["/models"] == (str(ROOT / "models"), False)
    # The export job reads the served models.config so that it never prunes a pinned version.
    assert volume_map(export["volumes"])["/models-config"] == (str(ROOT / "serving"), True)
    assert "--model-config-file=/models-config/models.config" in export["command"]


@pytest.mark.parametrize("implementation", IMPLEMENTATION_PARAMS)
def test_bind_address_variable_exposes_the_ports(implementation):
    config = resolved_config(implementation, COMPOSE_FILES["scann"], BIND_ADDRESS="0.0.0.0", REST_PORT="9501")
    assert published(service(config, "serving")["ports"]) == {("0.0.0.0", "8500", "8500"), ("0.0.0.0", "9501", "8501")}


@pytest.mark.parametrize("implementation", IMPLEMENTATION_PARAMS)
def test_versions_come_only_from_env_file(implementation, tmp_path):
    empty = tmp_path / "empty.env"
    empty.write_text("")
    result = run_compose(implementation, ["--env-file", str(empty), "-f", COMPOSE_FILES["scann"], "config"])
    assert result.returncode != 0
    assert "set in .env" in result.stderr


def test_scann_variant_builds_serving_from_serving_dockerfile(scann_config, env_file):
    serving = service(scann_config, "serving")
    assert Path(serving["build"]["context"]) == ROOT / "serving"
    assert serving["build"].get("dockerfile", "Dockerfile") == "Dockerfile"
    assert serving["build"]["args"] == {
        key: env_file[key] for key in ("TF_SERVING_VERSION", "SCANN_VERSION", "SCANN_GIT_COMMIT")
    }
    export = service(scann_config, "export")
    assert Path(export["build"]["context"]) == ROOT
    assert export["build"]["dockerfile"] == "export/Dockerfile"
    assert export["build"]["args"] == {
        key: env_file[key] for key in ("PYTHON_VERSION", "TENSORFLOW_VERSION", "SCANN_VERSION")
    }
    assert "--index=scann" in export["command"]
    assert "--model-base-path=/models" in export["command"]


def test_stock_variant_is_the_same_server_on_the_stock_image_with_brute_force_exports(scann_config, env_file):
    stock = resolved_config("compose-v2", COMPOSE_FILES["stock"])
    built, plain = service(scann_config, "serving"), service(stock, "serving")

    assert plain["image"] == f"tensorflow/serving:{env_file['TF_SERVING_VERSION']}"
    assert "build" not in plain
    for key in ("entrypoint", "command", "healthcheck", "ports", "volumes", "restart", "depends_on"):
        assert plain[key] == built[key], key
    export_args = service(stock, "export")["command"]
    assert "--index=brute_force" in export_args
    assert [a for a in export_args if not a.startswith("--index")] == [
        a for a in service(scann_config, "export")["command"] if not a.startswith("--index")
    ]


def test_local_variant_is_the_same_server_and_export_with_the_local_server_image(scann_config, env_file):
    local = resolved_config("compose-v2", COMPOSE_FILES["local"])
    built, ours = service(scann_config, "serving"), service(local, "serving")
    assert ours["image"] == (
        f"retrieval-bundle/serving-local:tf{env_file['TENSORFLOW_VERSION']}-scann{env_file['SCANN_VERSION']}"
    )
    assert Path(ours["build"]["context"]) == ROOT and ours["build"]["dockerfile"] == "serving/Dockerfile.local"
    assert ours["build"]["args"] == {
        key: env_file[key] for key in ("PYTHON_VERSION", "TENSORFLOW_VERSION", "SCANN_VERSION")
    }
    for key in ("entrypoint", "command", "healthcheck", "ports", "volumes", "restart", "depends_on"):
        assert ours[key] == built[key], key
    assert service(local, "export") == service(scann_config, "export")


def test_every_server_flag_is_one_tensorflow_model_server_accepts(scann_config):
    command = service(scann_config, "serving")["command"]
    names = []
    for argument in command:
        match = re.fullmatch(r"--([a-z_]+)=(.+)", argument)
        assert match, f"{argument!r} is not --flag=value"
        names.append(match.group(1))
    assert set(names) <= SERVER_FLAGS, sorted(set(names) - SERVER_FLAGS)
    assert len(names) == len(set(names)), "a flag is given twice"
    for required in (
        "port",
        "rest_api_port",
        "model_config_file",
        "model_config_file_poll_wait_seconds",
        "monitoring_config_file",
        "enable_batching",
        "batching_parameters_file",
    ):
        assert required in names


def test_files_named_in_the_command_and_healthcheck_are_in_the_mounted_serving_folder(scann_config):
    serving = service(scann_config, "serving")
    mounts = volume_map(serving["volumes"])
    paths = [a.split("=", 1)[1] for a in serving["command"] if "=/" in a]
    paths.append(serving["healthcheck"]["test"][-1])
    assert len(paths) == 4
    for path in paths:
        mount = next(m for m in mounts if path.startswith(m + "/"))
        host = Path(mounts[mount][0]) / Path(path).relative_to(mount)
        assert host.is_file(), f"{path} -> {host} does not exist"
