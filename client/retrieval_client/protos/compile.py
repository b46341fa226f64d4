"""Regenerate the ``*_pb2.py`` modules of this folder, and their ``*_pb2.pyi`` stubs, from its ``.proto`` files.

    python -m retrieval_client.protos.compile           # rewrite the generated modules in place
    python -m retrieval_client.protos.compile --check   # exit 1 if they differ from what would be generated

Reproducible: protoc from ``grpcio-tools`` (pin in the ``test`` extra), the ``.proto`` files under their
``retrieval_client/protos/`` path (so that their file names never collide with TensorFlow's), and two rewrites of the
modules (the ``*_pb2.pyi`` type stubs beside them, protoc's ``--pyi_out``, are kept as protoc writes them:
they give mypy and editors the message classes, which the modules only build at import time):

- the modules register into the private pool of :mod:`retrieval_client.protos._pool` instead of protobuf's default pool;
- protoc's gencode guard goes (``ValidateProtobufRuntimeVersion``: it refuses a protobuf runtime older than
  the protoc that wrote the file). What the modules call, the descriptor builder, is in every protobuf
  since 4.21; the client supports the runtimes ``tests/client/test_compat.py`` runs it on (4.25 to 7).

No ``*_pb2_grpc.py`` stubs: they tie the client to the grpcio of the generator (grpcio-tools adds a
version guard and 1.63+ arguments); ``retrieval_client.transports.grpc`` calls the methods by their paths instead.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent  # the folder holding retrieval_client/ (client/ in the repository)
_DEFAULT_POOL = "_descriptor_pool.Default().AddSerializedFile("
_PRIVATE_POOL = "_pool.POOL.AddSerializedFile("
_POOL_IMPORT = "from retrieval_client.protos import _pool\n"
_RUNTIME_IMPORT = "from google.protobuf import runtime_version as _runtime_version\n"
_RUNTIME_CHECK = re.compile(r"_runtime_version\.ValidateProtobufRuntimeVersion\(\n(?:    .*\n)*?\)\n")


def _protoc(out_dir: Path) -> None:
    """Run grpcio-tools' protoc in a child process: its extension module must not share a process with
    other protobuf/abseil builds already loaded (seen: a segfault on import after h5py and TensorFlow)."""
    import grpc_tools

    include = Path(grpc_tools.__file__).parent / "_proto"
    protos = sorted(p.relative_to(ROOT).as_posix() for p in HERE.glob("*.proto"))
    args = [
        sys.executable,
        "-m",
        "grpc_tools.protoc",
        f"-I{ROOT}",
        f"-I{include}",
        f"--python_out={out_dir}",
        f"--pyi_out={out_dir}",
    ]
    done = subprocess.run(args + protos, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"protoc failed on {protos}: {done.stderr.strip()}")


def _rewrite(name: str, text: str) -> str:
    if text.count(_DEFAULT_POOL) != 1 or text.count(_RUNTIME_IMPORT) != 1:
        raise RuntimeError(f"{name}: expected one {_DEFAULT_POOL!r} and one runtime_version import in protoc's output")
    text, checks = _RUNTIME_CHECK.subn("", text.replace(_DEFAULT_POOL, _PRIVATE_POOL).replace(_RUNTIME_IMPORT, ""))
    if checks != 1:
        raise RuntimeError(f"{name}: expected one ValidateProtobufRuntimeVersion call in protoc's output")
    marker = "# @@protoc_insertion_point(imports)\n"
    return text.replace(marker, marker + "\n" + _POOL_IMPORT, 1)


def generate() -> dict[str, str]:
    """File name -> content of every generated module, as this folder should hold them."""
    with tempfile.TemporaryDirectory() as tmp:
        _protoc(Path(tmp))
        out = Path(tmp) / "retrieval_client" / "protos"
        modules = {path.name: _rewrite(path.name, path.read_text()) for path in sorted(out.glob("*_pb2.py"))}
        stubs = {path.name: path.read_text() for path in sorted(out.glob("*_pb2.pyi"))}
        return {**modules, **stubs}


def _existing() -> dict[str, str]:
    return {p.name: p.read_text() for p in sorted(HERE.glob("*_pb2*.py*"))}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m retrieval_client.protos.compile", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--check", action="store_true", help="only compare; exit 1 if anything differs")
    args = parser.parse_args(argv)
    wanted, have = generate(), _existing()
    stale = sorted(n for n in wanted.keys() | have.keys() if wanted.get(n) != have.get(n))
    if args.check:
        for name in stale:
            print(f"stale: {HERE / name}", file=sys.stderr)
        return 1 if stale else 0
    for name in stale:
        path = HERE / name
        if name in wanted:
            path.write_text(wanted[name])
        else:
            os.remove(path)
        print(f"wrote {path}" if name in wanted else f"removed {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
