"""The seam between :class:`client.Client` and the wire: one :class:`Transport` per protocol.

Both transports take the same arguments and return the same types; the client chooses one from the URL
scheme. Each module is imported only when a client for its scheme is made, so ``import client`` loads
neither requests nor grpc.
"""

from __future__ import annotations

from client.credentials import Headers, Tls
from client.settings import Endpoint
from client.transports.base import Transport

__all__ = ["Transport", "for_endpoint"]


def for_endpoint(endpoint: Endpoint, tls: Tls | None = None, headers: Headers = ()) -> Transport:
    """The transport a URL asks for: http/https -> REST, grpc/grpcs -> gRPC; ``tls`` is used by https and grpcs,
    ``headers`` go on every request of either."""
    if endpoint.grpc:
        from client.transports.grpc import GrpcTransport

        return GrpcTransport(endpoint, tls=tls, metadata=headers)
    from client.transports.rest import RestTransport

    return RestTransport(endpoint, tls=tls, headers=headers)
