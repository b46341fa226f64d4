"""The client installs alone, under a name of its own: ``pip install ./client`` puts ``retrieval_client`` (and
its dist-info and console script) into site-packages and nothing else, so an application with its own
``client.py`` and ``serving/`` imports ours unharmed.

The install is real (pip builds client/pyproject.toml with setuptools, into a ``--target`` folder); the
dependencies are the ones already installed here (``--no-deps``: no network), and the pins pip would install
are checked against the main pyproject's ``client-deps`` extra instead.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from email.parser import Parser
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from client_fakes import CLIENT_SRC, ROOT

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10: the same parser from PyPI, in the test extra
    import tomli as tomllib

pytestmark = pytest.mark.slow  # pip builds and installs ./client (5-10 s), then runs it

APP_CLIENT = '''"""The application's own client module (a name apps use)."""
WHO = "the app's client.py"
'''
APP = """
import sys
import client, serving                  # the application's own modules, first on sys.path
import retrieval_client                 # ours, from site-packages
from retrieval_client import Client, Recommendations
assert client.WHO == "the app's client.py", client.__file__
assert serving.WHO == "the app's serving package", serving.__file__
assert retrieval_client.__file__.startswith(sys.argv[2]), retrieval_client.__file__
with Client(sys.argv[1], timeout=30) as c:
    hits = c.recommend("42", k=3)
assert isinstance(hits, Recommendations) and len(hits) == 3
print(retrieval_client.__version__, [h.title for h in hits])
"""


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """``pip install ./client`` (a copy of it: pip builds in the source folder) into a fresh target folder."""
    work = tmp_path_factory.mktemp("client_install")
    source = work / "client"
    shutil.copytree(CLIENT_SRC, source, ignore=shutil.ignore_patterns("__pycache__", "build", "*.egg-info"))
    target = work / "site-packages"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--disable-pip-version-check",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "--target",
            str(target),
            str(source),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return target


def _env(target: Path) -> dict[str, str]:
    """The installed copy first: neither this checkout's folders nor an editable install may answer for it."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return dict(env, PYTHONPATH=str(target))


def _distribution(target: Path) -> dict:
    [info] = target.glob("retrieval_client-*.dist-info")
    metadata = Parser().parsestr((info / "METADATA").read_text())
    return {
        "version": metadata["Version"],
        "name": metadata["Name"],
        "requires": metadata.get_all("Requires-Dist") or [],
        "top_level": sorted({Path(line.split(",")[0]).parts[0] for line in (info / "RECORD").read_text().splitlines()}),
        "info": info.name,
    }


def test_site_packages_holds_retrieval_client_and_nothing_of_export_or_serving(installed):
    names = sorted(p.name for p in installed.iterdir())
    dist = _distribution(installed)
    assert names == sorted(["bin", dist["info"], "retrieval_client"]), names
    assert dist["name"] == "retrieval-client"
    # what the wheel installs into site-packages (its RECORD; the console script is recorded as ../../bin/...)
    assert set(dist["top_level"]) - {".."} == {dist["info"], "retrieval_client"}, dist["top_level"]
    assert not {"client", "export", "serving"} & set(names)
    # the protos, their sources and stubs, and py.typed go too (mypy reads the client's types from them)
    package = installed / "retrieval_client"
    assert (package / "py.typed").is_file() and (package / "protos" / "predict_pb2.pyi").is_file()
    assert (package / "protos" / "predict.proto").is_file() and (package / "transports" / "grpc_aio.py").is_file()


def test_its_dependencies_are_the_main_pyproject_s_client_deps_and_pandas_is_an_extra(installed):
    dist = _distribution(installed)
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pins = {(r.name, r.specifier) for r in map(Requirement, project["optional-dependencies"]["client-deps"])}
    plain = {(r.name, r.specifier) for r in map(Requirement, dist["requires"]) if r.marker is None}
    assert plain == pins and {name for name, _ in pins} == {"requests", "grpcio", "protobuf", "aiohttp"}
    assert [r for r in dist["requires"] if "extra ==" in r] == ['pandas>=2; extra == "pandas"']
    assert not any(r.startswith(("tensorflow", "numpy", "scann")) for r in dist["requires"])
    assert "client" not in project["optional-dependencies"]  # the old extra installed export/ and serving/ too


def test_version_matches_the_distribution_and_the_cli_prints_it(installed):
    dist = _distribution(installed)
    env = _env(installed)
    code = "import retrieval_client; print(retrieval_client.__version__, retrieval_client.__file__)"
    version, where = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=installed.parent, check=True
    ).stdout.split()
    assert version == dist["version"] and re.fullmatch(r"\d+\.\d+\.\d+", version)
    assert where.startswith(str(installed))
    module = subprocess.run(
        [sys.executable, "-m", "retrieval_client", "--version"], capture_output=True, text=True, env=env
    )
    script = subprocess.run(
        [installed / "bin" / "retrieval-client", "--version"], capture_output=True, text=True, env=env
    )
    assert (module.returncode, module.stdout) == (0, f"python -m retrieval_client {version}\n"), module.stderr
    assert (script.returncode, script.stdout) == (0, f"retrieval-client {version}\n"), script.stderr


def test_python_m_and_the_console_script_run_the_cli(installed, local_server):
    env = _env(installed)
    for command in ([sys.executable, "-m", "retrieval_client"], [str(installed / "bin" / "retrieval-client")]):
        help_ = subprocess.run([*command, "--help"], capture_output=True, text=True, env=env, timeout=60)
        assert help_.returncode == 0 and "{recommend,similar,status,metadata}" in help_.stdout, help_.stderr
        answer = subprocess.run(
            [*command, "recommend", "42", "-k", "2", "--url", local_server.grpc_url, "--json"],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
        )
        assert answer.returncode == 0, answer.stderr
        assert len(json.loads(answer.stdout)["42"]["hits"]) == 2


def test_an_app_with_its_own_client_py_and_serving_package_imports_ours_unharmed(installed, local_server, tmp_path):
    app = tmp_path / "app"
    (app / "serving").mkdir(parents=True)
    (app / "client.py").write_text(APP_CLIENT)
    (app / "serving" / "__init__.py").write_text('WHO = "the app\'s serving package"\n')
    (app / "main.py").write_text(APP)
    proc = subprocess.run(
        [sys.executable, "main.py", local_server.rest_url, str(installed)],
        capture_output=True,
        text=True,
        cwd=app,
        env=_env(installed),
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.startswith(_distribution(installed)["version"] + " [")
