"""Thin client for the two-tower retrieval bundle: one API over TF Serving's REST and gRPC, no TensorFlow.

    import client
    with client.connect("grpc://localhost:8500") as c:        # or http://localhost:8501; TLS: grpcs://, https://
        print(c.recommend("42", k=5))                           # Recommendations([Hit(title=..., ...), ...], ...)

asyncio: ``client.AsyncClient`` / ``client.connect_async`` (:mod:`client.aio`), the same API awaited.

Importing this package loads neither TensorFlow nor, until a client is made, requests, grpc or aiohttp
(nor asyncio: :mod:`client.aio` is imported when ``AsyncClient`` or ``connect_async`` is first named).
Errors: :mod:`client.errors` (one tree, canonical status names, for both transports).
"""

from typing import TYPE_CHECKING, Any

from client.client import Client, connect
from client.credentials import Tls
from client.errors import *  # noqa: F403 - the exception tree is part of the public API
from client.errors import __all__ as _errors_all
from client.frames import to_pandas
from client.results import Hit, ModelMetadata, Recommendations, Signature, TensorSpec, VersionStatus
from client.settings import URL_ENV, Retry, Settings
from client.tensors import Tensor

if TYPE_CHECKING:
    from client.aio import AsyncClient, connect_async

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
    *_errors_all,
]


def __getattr__(name: str) -> Any:
    """``AsyncClient`` and ``connect_async``, imported when first asked for (asyncio is not cheap to import)."""
    if name in ("AsyncClient", "connect_async"):
        from client import aio

        return getattr(aio, name)
    raise AttributeError(f"module 'client' has no attribute {name!r}")
