"""The client on the oldest protobuf and grpcio it claims (client/pyproject.toml's dependencies) and on the
majors in between, each in a venv of its own with nothing but the client's three dependencies, against the
real local server: same answers as this interpreter's newest versions get, same errors.

The venvs are built once (pip, from the package index) under ``.venv/compat/`` and reused."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from client_fakes import PYTHONPATH

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
# (protobuf, grpcio): the floor of the client's dependencies, then one release of each later protobuf major.
VERSIONS = [("4.25.0", "1.49.1"), ("5.29.5", "1.60.1"), ("6.33.1", "1.70.0")]

SCRIPT = r"""
import json, sys
import google.protobuf, grpc
from retrieval_client import Client, NotFoundError, InvalidArgumentError
out = {"versions": [google.protobuf.__version__, grpc.__version__], "tensorflow": "tensorflow" in sys.modules}
for kind, url in zip(("rest", "grpc"), sys.argv[1:]):
    with Client(url, timeout=30) as c:
        hits = c.recommend("42", k=5)
        row = {"recommend": [[h.title, h.score] for h in hits],
               "batch": [[h.title for h in r] for r in c.recommend(["1", "2"], k=3)],
               "exclude": [h.title for h in c.recommend("42", k=5, exclude=[hits[0].title])],
               "similar": [h.title for h in c.similar(hits[0].title, k=3)],
               "status": [[v.version, v.state, v.error_code] for v in c.status()],
               "metadata": {n: [sorted(s.inputs), sorted(s.outputs)] for n, s in c.metadata().signatures.items()},
               "predict": c.predict("retrieval", {"user_id": ["7"]}, output_filter=["scores"])}
        for name, call in (("missing_version", lambda: c.recommend("1", version=999)),
                           ("bad_k", lambda: c.recommend("1", k=10**6))):
            try:
                call()
                row[name] = None
            except (NotFoundError, InvalidArgumentError) as exc:
                row[name] = type(exc).__name__
        out[kind] = row
print(json.dumps(out))
"""


def _venv(protobuf: str, grpcio: str) -> Path:
    where = ROOT / ".venv" / "compat" / f"protobuf-{protobuf}-grpcio-{grpcio}"
    python = where / "bin" / "python"
    if not (where / "ready").exists():
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(where)], check=True, timeout=300)
        done = subprocess.run(
            [
                str(python),
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                f"protobuf=={protobuf}",
                f"grpcio=={grpcio}",
                "requests",
            ],
            capture_output=True,
            text=True,
            timeout=900,
            check=False,
        )
        assert done.returncode == 0, f"pip could not install protobuf {protobuf} / grpcio {grpcio}:\n{done.stderr}"
        (where / "ready").write_text("")
    return python


def _answers(python: Path, server) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env["PYTHONPATH"] = PYTHONPATH
    done = subprocess.run(
        [str(python), "-c", SCRIPT, server.rest_url, server.grpc_url],
        cwd=str(ROOT),
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, f"{python}: exit {done.returncode}\n{done.stderr[-4000:]}"
    return json.loads(done.stdout)


@pytest.fixture(scope="module")
def reference(local_server) -> dict:
    return _answers(Path(sys.executable), local_server)


@pytest.mark.parametrize("protobuf, grpcio", VERSIONS)
def test_the_client_answers_alike_on_older_protobuf_and_grpcio(local_server, reference, protobuf, grpcio):
    answers = _answers(_venv(protobuf, grpcio), local_server)
    assert answers["versions"] == [protobuf, grpcio]
    assert answers["tensorflow"] is False
    for kind in ("rest", "grpc"):
        assert answers[kind] == reference[kind], kind
    assert reference["rest"]["missing_version"] == "NotFoundError"
    assert reference["grpc"]["bad_k"] == "InvalidArgumentError"


def test_the_client_s_dependencies_claim_the_oldest_versions_tested():
    text = (ROOT / "client" / "pyproject.toml").read_text()
    protobuf, grpcio = VERSIONS[0]
    assert f'"protobuf>={protobuf},<8"' in text and f'"grpcio>={grpcio},<2"' in text
