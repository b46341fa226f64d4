"""Thin client for the two-tower retrieval bundle: one API over TF Serving's REST and gRPC, no TensorFlow.

    import retrieval_client
    with retrieval_client.connect("grpc://localhost:8500") as c:  # or http://localhost:8501; TLS: grpcs://, https://
        print(c.recommend("42", k=5))  # Recommendations([Hit(title=..., ...), ...], ...)

asyncio: ``retrieval_client.AsyncClient`` / ``retrieval_client.connect_async`` (:mod:`retrieval_client.aio`), the
same API awaited. The CLI: ``retrieval-client`` or ``python -m retrieval_client`` (:mod:`retrieval_client.cli`).

Importing this package loads neither TensorFlow nor, until a client is made, requests, grpc or aiohttp
(nor asyncio: :mod:`retrieval_client.aio` is imported when ``AsyncClient`` or ``connect_async`` is first named).
Errors: :mod:`retrieval_client.errors` (one tree, canonical status names, for both transports).
"""

from typing import TYPE_CHECKING, Any

# The distribution's version too (client/pyproject.toml reads it from here); a literal, for setuptools to read.
__version__ = "0.1.0"

from retrieval_client.client import Client, connect
from retrieval_client.credentials import Tls
from retrieval_client.errors import *  # noqa: F403 - the exception tree is part of the public API
from retrieval_client.errors import __all__ as _errors_all
from retrieval_client.frames import to_pandas
from retrieval_client.results import Hit, ModelMetadata, Recommendations, Signature, TensorSpec, VersionStatus
from retrieval_client.settings import URL_ENV, Retry, Settings
from retrieval_client.tensors import Tensor

if TYPE_CHECKING:
    from retrieval_client.aio import AsyncClient, connect_async

__all__ = [
    "AsyncClient",
    "Client",
    "connect",
    "connect_async",
    "Hit",
    "ModelMetadata",
    "Recommendations",
    "Signature",
    "TensorSpec",
    "VersionStatus",
    "Retry",
    "Settings",
    "Tensor",
    "Tls",
    "URL_ENV",
    "to_pandas",
    "__version__",
    *_errors_all,
]


def __getattr__(name: str) -> Any:
    """``AsyncClient`` and ``connect_async``, imported when first asked for (asyncio is not cheap to import)."""
    if name in ("AsyncClient", "connect_async"):
        from retrieval_client import aio

        return getattr(aio, name)
    raise AttributeError(f"module 'retrieval_client' has no attribute {name!r}")
