"""Regenerate the ``*_pb2.py`` / ``*_pb2_grpc.py`` modules of this folder from its ``.proto`` files.

    python -m client.protos.compile           # rewrite the generated modules in place
    python -m client.protos.compile --check   # exit 1 if they differ from what would be generated

Reproducible: protoc from ``grpcio-tools`` (pin in the ``test`` extra), the ``.proto`` files under their
``client/protos/`` path (so that their file names never collide with TensorFlow's), and one rewrite: the
modules register into the private pool of :mod:`client.protos._pool` instead of protobuf's default pool.
Only modules that define a service get a ``_pb2_grpc.py``.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent  # the folder holding client/
_DEFAULT_POOL = "_descriptor_pool.Default().AddSerializedFile("
_PRIVATE_POOL = "_pool.POOL.AddSerializedFile("
_POOL_IMPORT = "from client.protos import _pool\n"


def _protoc(out_dir: Path) -> None:
    """Run grpcio-tools' protoc in a child process: its extension module must not share a process with
    other protobuf/abseil builds already loaded (seen: a segfault on import after h5py and TensorFlow)."""
    import grpc_tools

    include = Path(grpc_tools.__file__).parent / "_proto"
    protos = sorted(p.relative_to(ROOT).as_posix() for p in HERE.glob("*.proto"))
    args = [sys.executable, "-m", "grpc_tools.protoc", f"-I{ROOT}", f"-I{include}", f"--python_out={out_dir}",
            f"--grpc_python_out={out_dir}"]
    done = subprocess.run(args + protos, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"protoc failed on {protos}: {done.stderr.strip()}")


def _rewrite(name: str, text: str) -> str:
    if name.endswith("_pb2.py"):
        if text.count(_DEFAULT_POOL) != 1:
            raise RuntimeError(f"{name}: expected one {_DEFAULT_POOL!r} in protoc's output")
        text = text.replace(_DEFAULT_POOL, _PRIVATE_POOL)
        marker = "# @@protoc_insertion_point(imports)\n"
        text = text.replace(marker, marker + "\n" + _POOL_IMPORT, 1)
    return text


def generate() -> dict[str, str]:
    """File name -> content of every generated module, as this folder should hold them."""
    with tempfile.TemporaryDirectory() as tmp:
        _protoc(Path(tmp))
        out = Path(tmp) / "client" / "protos"
        files = {}
        for path in sorted(out.iterdir()):
            text = path.read_text()
            if path.name.endswith("_pb2_grpc.py") and "_to_server(" not in text:
                continue  # no service in that file
            files[path.name] = _rewrite(path.name, text)
        return files


def _existing() -> dict[str, str]:
    return {p.name: p.read_text() for p in sorted(HERE.glob("*_pb2*.py"))}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m client.protos.compile", description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only compare; exit 1 if anything differs")
    args = parser.parse_args(argv)
    wanted, have = generate(), _existing()
    stale = sorted(n for n in wanted.keys() | have.keys() if wanted.get(n) != have.get(n))
    if args.check:
        for name in stale:
            print(f"stale: client/protos/{name}", file=sys.stderr)
        return 1 if stale else 0
    for name in stale:
        path = HERE / name
        if name in wanted:
            path.write_text(wanted[name])
        else:
            os.remove(path)
        print(f"wrote client/protos/{name}" if name in wanted else f"removed client/protos/{name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
