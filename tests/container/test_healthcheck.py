"""serving/healthcheck.sh (the compose healthcheck) against canned TF Serving status answers.

Each case runs a small HTTP server on port 8501 inside its own network namespace, answering
GET /v1/models/<name> as TF Serving would, and runs the very script docker-compose runs, with bash.
The live counterpart (the engine running it in the served container) is in test_engine_local.py.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

import namespaces
from container_support import ROOT

pytestmark = pytest.mark.root

HEALTHCHECK = ROOT / "serving" / "healthcheck.sh"

FAKE_SERVER = r"""
import json, sys
from http.server import BaseHTTPRequestHandler, HTTPServer
answers = json.loads(sys.argv[1])
class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        status, body = answers.get(self.path, [404, {"error": "Servable not found for request: Latest(x)"}])
        data = json.dumps(body, indent=1).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
    def log_message(self, *args):
        pass
HTTPServer(("127.0.0.1", 8501), Handler).serve_forever()
"""


def status(*states) -> list:
    """A 200 GET /v1/models/<name> answer with one entry per (version, state), newest first."""
    return [
        200,
        {
            "model_version_status": [
                {"version": str(version), "state": state, "status": {"error_code": "OK", "error_message": ""}}
                for version, state in states
            ]
        },
    ]


AVAILABLE = status((2, "AVAILABLE"))
NOT_FOUND = [404, {"error": "Servable not found for request: Latest(similar_movies)"}]

CASES = {
    "both models available": ({"retrieval": AVAILABLE, "similar_movies": AVAILABLE}, 0),
    "new version loading while the old one serves": (
        {"retrieval": status((3, "LOADING"), (2, "AVAILABLE")), "similar_movies": AVAILABLE},
        0,
    ),
    "one model not found": ({"retrieval": AVAILABLE, "similar_movies": NOT_FOUND}, 1),
    "both models still loading": ({"retrieval": status((2, "LOADING")), "similar_movies": status((2, "LOADING"))}, 1),
    "model unloaded": ({"retrieval": AVAILABLE, "similar_movies": status((2, "END"))}, 1),
    "AVAILABLE only in an error message": (
        {
            "retrieval": AVAILABLE,
            "similar_movies": [
                200,
                {
                    "model_version_status": [
                        {
                            "version": "2",
                            "state": "LOADING",
                            "status": {"error_code": "UNKNOWN", "error_message": '"state": "AVAILABLE" was expected'},
                        }
                    ]
                },
            ],
        },
        1,
    ),
    "server error": ({"retrieval": [500, {"error": "internal"}], "similar_movies": AVAILABLE}, 1),
}


@pytest.fixture
def fake_tf_serving(tmp_path):
    started = []

    def start(answers: dict) -> namespaces.Namespaced:
        paths = {f"/v1/models/{name}": answer for name, answer in answers.items()}
        server = namespaces.start(
            [sys.executable, "-c", FAKE_SERVER, json.dumps(paths)],
            workdir=tmp_path,
            log=tmp_path / f"fake-{len(started)}.log",
        )
        started.append(server)
        listening = namespaces.wait_until(
            lambda: server.run(["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/8501"], mount=False).returncode == 0,
            timeout=30,
            interval=0.1,
            alive=server.alive,
        )
        assert listening, f"fake TF Serving did not start:\n{server.log_text()}"
        return server

    yield start
    for server in started:
        server.stop()


@pytest.mark.parametrize("case", sorted(CASES))
def test_healthcheck_is_healthy_only_when_every_model_has_an_available_version(fake_tf_serving, case):
    answers, expected = CASES[case]
    server = fake_tf_serving(answers)

    result = server.run(["bash", str(HEALTHCHECK)], mount=False)

    assert result.returncode == expected, result.stdout + result.stderr
    assert ("healthy:" if expected == 0 else "unhealthy:") in result.stdout


def test_healthcheck_is_unhealthy_when_nothing_listens(tmp_path):
    result = subprocess.run(
        ["unshare", "--net", "bash", "-c", 'ip link set lo up; exec bash "$0"', str(HEALTHCHECK)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 1
    assert "nothing listens on REST port 8501" in result.stdout


def test_healthcheck_uses_no_tool_the_runtime_image_lacks():
    # tensorflow/serving's runtime image is a bare Ubuntu with bash: no curl, wget, python or nc.
    script = HEALTHCHECK.read_text()
    body = "\n".join(line for line in script.splitlines() if not line.lstrip().startswith("#"))
    for tool in ("curl", "wget", "python", " nc ", "netcat", "timeout "):
        assert tool not in body, tool
    assert "/dev/tcp/" in body
