"""Every Python example of client/README.md runs, as written but for its server's address.

Each example addresses the server as ``localhost:8501`` (REST) or ``localhost:8500`` (gRPC), in whatever URL
form it shows (``http://``, ``grpc://``, ``grpc://dns:///``); the test points them at the local server it
started and runs each in a fresh interpreter on this checkout's client. The one that needs TLS and a token
(it makes a ``Tls``) is run by tests/client/test_tls.py against its TLS deployment.
"""

from __future__ import annotations

import os
import subprocess
import sys
from urllib.parse import urlsplit

import pytest

from client_fakes import PYTHONPATH, ROOT, readme_examples

TLS = "Tls("  # the examples tests/client/test_tls.py runs
EXAMPLES = readme_examples()
LOCAL = [(heading, code) for heading, code in EXAMPLES if TLS not in code]


def test_every_example_is_run_here_or_by_the_tls_test():
    headings = [heading for heading, _ in EXAMPLES]
    # the quick start, Inputs, asyncio, Production's TLS example and its dns:/// example, at least
    assert len(EXAMPLES) >= 5 and {"Inputs", "asyncio", "Production"} <= set(headings), headings
    assert [heading for heading, code in EXAMPLES if TLS in code] == ["Production"]
    for _, code in LOCAL:
        assert "localhost:8501" in code or "localhost:8500" in code, code  # else it could not be pointed here


@pytest.mark.parametrize("heading, code", LOCAL, ids=[f"{i}-{h}" for i, (h, _) in enumerate(LOCAL)])
def test_the_example_runs_against_the_local_server(local_server, heading, code):
    rest, grpc = urlsplit(local_server.rest_url).port, urlsplit(local_server.grpc_url).port
    code = code.replace("localhost:8501", f"127.0.0.1:{rest}").replace("localhost:8500", f"127.0.0.1:{grpc}")
    proc = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=str(ROOT),
        env=dict(os.environ, PYTHONPATH=PYTHONPATH),
    )
    assert proc.returncode == 0, f"the example under {heading!r} failed:\n{code}\n{proc.stderr[-3000:]}"
    assert proc.stdout.strip(), "every example prints its answer"
    assert "Traceback" not in proc.stderr
