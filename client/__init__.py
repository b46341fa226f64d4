"""Thin client for the two-tower retrieval bundle: one API over TF Serving's REST and gRPC, no TensorFlow.

    import client
    with client.connect("grpc://localhost:8500") as c:        # or http://localhost:8501; TLS: grpcs://, https://
        print(c.recommend("42", k=5))                           # Recommendations([Hit(title=..., ...), ...], ...)

Importing this package loads neither TensorFlow nor, until a client is made, requests or grpc.
Errors: :mod:`client.errors` (one tree, canonical status names, for both transports).
"""

from client.client import Client, connect
from client.credentials import Tls
from client.errors import *  # noqa: F403 - the exception tree is part of the public API
from client.errors import __all__ as _errors_all
from client.frames import to_pandas
from client.results import Hit, ModelMetadata, Recommendations, Signature, TensorSpec, VersionStatus
from client.settings import URL_ENV, Retry, Settings
from client.tensors import Tensor

__all__ = [
    "Client",
    "connect",
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
