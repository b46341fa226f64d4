"""``python -m export``: see export/cli.py. Configures the process environment (export/environment.py) before
TensorFlow is imported."""

import sys

from export import environment

environment.configure()

from export.cli import main  # noqa: E402  (TensorFlow reads the environment once, when imported)

if __name__ == "__main__":
    sys.exit(main())
