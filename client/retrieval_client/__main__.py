"""``python -m retrieval_client``: the CLI of :mod:`retrieval_client.cli` (``--version`` prints the client's)."""

import sys

from retrieval_client.cli import main

sys.exit(main(prog="python -m retrieval_client"))
