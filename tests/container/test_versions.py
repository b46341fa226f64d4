"""One place names the TensorFlow / TF Serving / ScaNN versions (.env); everything else must agree."""

from __future__ import annotations

import re
import sys
from importlib import metadata

import pytest

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10 (supported too): the same parser from PyPI, in the test extra
    import tomli as tomllib

from container_support import ROOT


def pins(extra: str) -> dict:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    out: dict[str, str] = {}
    for requirement in project["optional-dependencies"][extra]:
        match = re.fullmatch(r"([A-Za-z0-9_.\-]+)(?:\[[a-z,]+\])?==([^;\s]+)", requirement.strip())
        if match:
            out[match.group(1).lower()] = match.group(2)
    return out


def arg_defaults(dockerfile: str) -> dict:
    """ARG NAME=default lines of a Dockerfile (every stage); a name given two defaults is an error."""
    out: dict[str, str] = {}
    for name, value in re.findall(r"^ARG\s+([A-Z_]+)=(\S+)", (ROOT / dockerfile).read_text(), flags=re.M):
        value = value.strip('"')
        assert out.setdefault(name, value) == value, f"{dockerfile}: ARG {name} has two defaults"
    return out


@pytest.mark.parametrize("extra", ["export", "serving"])
def test_pyproject_pins_match_env_file(env_file, extra):
    pinned = pins(extra)
    assert pinned["tensorflow"] == env_file["TENSORFLOW_VERSION"]
    assert pinned["scann"] == env_file["SCANN_VERSION"]


def test_serving_api_pin_matches_tf_serving_version(env_file):
    assert pins("serving")["tensorflow-serving-api"] == env_file["TF_SERVING_VERSION"]


def test_tf_serving_and_tensorflow_are_the_same_release(env_file):
    def major_minor(version: str) -> list[str]:
        return version.split(".")[:2]

    assert major_minor(env_file["TF_SERVING_VERSION"]) == major_minor(env_file["TENSORFLOW_VERSION"])


@pytest.mark.parametrize(
    "dockerfile, names",
    [
        ("serving/Dockerfile", ("TF_SERVING_VERSION", "SCANN_VERSION", "SCANN_GIT_COMMIT")),
        ("export/Dockerfile", ("PYTHON_VERSION", "TENSORFLOW_VERSION", "SCANN_VERSION")),
        ("serving/Dockerfile.local", ("PYTHON_VERSION", "TENSORFLOW_VERSION", "SCANN_VERSION")),
    ],
)
def test_dockerfile_defaults_match_env_file(env_file, dockerfile, names):
    defaults = arg_defaults(dockerfile)
    for name in names:
        assert defaults.get(name) == env_file[name], f"{dockerfile}: ARG {name}"


def test_this_environment_runs_the_pinned_versions(env_file):
    # The local server and the export job tested here must be the releases the images install.
    assert metadata.version("tensorflow") == env_file["TENSORFLOW_VERSION"]
    assert metadata.version("scann") == env_file["SCANN_VERSION"]
    assert metadata.version("tensorflow-serving-api") == env_file["TF_SERVING_VERSION"]


def test_scann_commit_is_a_full_sha(env_file):
    assert re.fullmatch(r"[0-9a-f]{40}", env_file["SCANN_GIT_COMMIT"])
