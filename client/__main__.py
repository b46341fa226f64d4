"""``python -m client``: see client/cli.py; ``python -m client --version`` prints the bundle's version."""

import sys

DISTRIBUTION = "retrieval-serving-bundle"  # pyproject.toml's name


def version() -> str:
    """The bundle's version, from the installed distribution's metadata (a source tree not installed: say so)."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as installed

    try:
        return installed(DISTRIBUTION)
    except PackageNotFoundError:
        return "unknown (not installed: pip install -e .)"


if sys.argv[1:] == ["--version"]:  # client/cli.py's --version is a subcommand's (a model version)
    print(f"python -m client {version()}")
    sys.exit(0)

from client.cli import main  # noqa: E402

sys.exit(main())
