"""The seam between :class:`retrieval_client.Client` and the wire: one :class:`Transport` per protocol.

Both transports take the same arguments and return the same types; the client chooses one from the URL
scheme. Each module is imported only when a client for its scheme is made, so ``import retrieval_client`` loads
neither requests nor grpc.
"""

from __future__ import annotations

from retrieval_client.credentials import Headers, Tls
from retrieval_client.settings import Endpoint
from retrieval_client.transports.base import AsyncTransport, Transport

__all__ = ["AsyncTransport", "Transport", "for_endpoint", "for_endpoint_async"]


def for_endpoint(endpoint: Endpoint, tls: Tls | None = None, headers: Headers = ()) -> Transport:
    """The transport a URL asks for: http/https -> REST, grpc/grpcs -> gRPC; ``tls`` is used by https and grpcs,
    ``headers`` go on every request of either."""
    if endpoint.grpc:
        from retrieval_client.transports.grpc import GrpcTransport

        return GrpcTransport(endpoint, tls=tls, metadata=headers)
    from retrieval_client.transports.rest import RestTransport

    return RestTransport(endpoint, tls=tls, headers=headers)


def for_endpoint_async(endpoint: Endpoint, tls: Tls | None = None, headers: Headers = ()) -> AsyncTransport:
    """:func:`for_endpoint` for asyncio: ``grpc.aio`` for grpc/grpcs, aiohttp for http/https."""
    if endpoint.grpc:
        from retrieval_client.transports.grpc_aio import AsyncGrpcTransport

        return AsyncGrpcTransport(endpoint, tls=tls, metadata=headers)
    from retrieval_client.transports.rest_aio import AsyncRestTransport

    return AsyncRestTransport(endpoint, tls=tls, headers=headers)
