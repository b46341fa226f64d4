"""``python -m serving``: a local tensorflow_model_server with TF Serving's flags."""

from __future__ import annotations

import logging
import os
import signal
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")

from serving.errors import StatusError
from serving.flags import FlagError, parse_flags, usage

DISTRIBUTION = "retrieval-serving-bundle"  # pyproject.toml's name


def _version() -> str:
    """What --version prints: tensorflow_model_server's two lines, naming this stand-in and the bundle's version
    (the installed distribution's metadata), and the TensorFlow it serves with."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        bundle = version(DISTRIBUTION)
    except PackageNotFoundError:
        bundle = "unknown (not installed: pip install -e .)"
    tensorflow = "not installed"
    for name in ("tensorflow", "tensorflow-cpu"):
        try:
            tensorflow = version(name)
            break
        except PackageNotFoundError:
            continue
    return (
        f"TensorFlow ModelServer: local stand-in (serving/ of {DISTRIBUTION} {bundle})\n"
        f"TensorFlow Library: {tensorflow}"
    )


def _verbose_modules(setting: str) -> None:
    """``TF_CPP_VMODULE`` (``name=level,...``), TensorFlow's per-file switch for ``VLOG`` lines: a module of
    this package named there with level 1 or more logs at DEBUG (``file_system_storage_path_source=1``: one
    line per completed poll, as TF Serving's file of that name logs its polls at VLOG(1))."""
    for part in setting.split(","):
        name, _, level = part.partition("=")
        if name.strip() and level.strip().isdigit() and int(level) >= 1:
            logging.getLogger(f"serving.{name.strip()}").setLevel(logging.DEBUG)


def main(argv: list[str] | None = None) -> int:
    try:
        options = parse_flags(sys.argv[1:] if argv is None else argv)
    except FlagError as exc:
        if str(exc):
            print(str(exc), file=sys.stderr)
        print(usage(), file=sys.stderr)
        return 0 if not str(exc) else 255
    if options.version:
        print(_version())
        return 0
    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stderr,
        format="%(asctime)s.%(msecs)03d: %(levelname).1s %(name)s] %(message)s",
        datefmt="%Y-%m-%d %H:%M:%S",
    )
    _verbose_modules(os.environ.get("TF_CPP_VMODULE", ""))
    from serving.server import ModelServer

    server = ModelServer(options)
    import threading

    def stop(signum, frame):  # finish in a thread: the handler must not block the main thread
        threading.Thread(target=server.stop, name="shutdown").start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        server.start()
    except StatusError as exc:
        if exc.code == "CANCELLED" and server.stopping:  # SIGTERM / Ctrl-C during start-up: stopped as asked
            server.wait()
            return 0
        print(f"Failed to start server. Error: {exc.code}: {exc.message}", file=sys.stderr)
        server.stop()
        return 255
    except (OSError, RuntimeError) as exc:  # grpcio reports a port it cannot bind as RuntimeError
        print(f"Failed to start server. Error: {exc}", file=sys.stderr)
        server.stop()
        return 255
    server.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
