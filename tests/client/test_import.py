"""Importing the client never loads TensorFlow (nor numpy, nor pandas); transports load only when a client is
made (asyncio and aiohttp: when the async client is first named, and an async REST client made)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from client_fakes import CLIENT_SRC, PYTHONPATH, ROOT

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10: the same parser from PyPI, in the test extra
    import tomli as tomllib

HEAVY = ("tensorflow", "tensorflow_serving", "tf_keras", "keras", "numpy", "scann", "pandas")
PROBE = r"""
import json, sys
stages = {}
def loaded():
    return sorted({m.split(".")[0] for m in sys.modules} & {"tensorflow", "tensorflow_serving", "tf_keras",
                   "keras", "numpy", "scann", "pandas", "requests", "grpc"})
import retrieval_client as client
stages["import"] = loaded()
stages["asyncio"] = sorted({"asyncio", "aiohttp"} & set(sys.modules))
with client.connect("http://127.0.0.1:1") as rest:
    stages["rest"] = loaded()
with client.connect("grpc://127.0.0.1:1") as rpc:
    stages["grpc"] = loaded()
    try:
        rpc.recommend("1", timeout=0.5)
    except client.ServingError as exc:
        stages["error"] = exc.code
from retrieval_client import cli  # the CLI too
import asyncio
async def main():
    async with client.connect_async("http://127.0.0.1:1", timeout=0.5) as c:
        try:
            await c.status()
        except client.ServingError as exc:
            stages["async_error"] = exc.code
asyncio.run(main())
stages["aiohttp"] = "aiohttp" in sys.modules
stages["all"] = loaded()
print(json.dumps(stages))
"""


def test_importing_and_using_the_client_never_loads_tensorflow():
    proc = subprocess.run(
        [sys.executable, "-c", PROBE],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=str(ROOT),
        env=dict(os.environ, PYTHONPATH=PYTHONPATH),
    )
    assert proc.returncode == 0, proc.stderr
    stages = json.loads(proc.stdout)
    assert stages["import"] == [] and stages["asyncio"] == []  # not even requests, grpc, asyncio or aiohttp yet
    assert stages["rest"] == ["requests"]
    assert stages["grpc"] == ["grpc", "requests"]
    assert stages["error"] in ("UNAVAILABLE", "DEADLINE_EXCEEDED")
    assert stages["async_error"] == "UNAVAILABLE" and stages["aiohttp"]
    assert not set(stages["all"]) & set(HEAVY)


def test_the_development_install_maps_retrieval_client_to_client_folder():
    """scripts/setup.sh's editable install of the main project imports the client from client/retrieval_client."""
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert setuptools["packages"]["find"]["where"] == [".", "client"]
    assert "retrieval_client*" in setuptools["packages"]["find"]["include"]
    assert not any(p.startswith("client") for p in setuptools["packages"]["find"]["include"])
    assert (CLIENT_SRC / "retrieval_client" / "__init__.py").is_file() and not (CLIENT_SRC / "__init__.py").exists()
