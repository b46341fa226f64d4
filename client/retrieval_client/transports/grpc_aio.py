"""TF Serving's gRPC API for asyncio: one ``grpc.aio`` channel, the same requests, answers and errors as
:class:`retrieval_client.transports.grpc.GrpcTransport` (its
:class:`~retrieval_client.transports.grpc.GrpcCodec`); only the calls are awaited.

The channel is opened on the first call, in the event loop that makes it (a ``grpc.aio`` channel belongs to
one loop). The seam for tests is the same as the sync transport's: ``channel=`` (anything with
``unary_unary(...)`` returning awaitable callables).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import grpc
from google.protobuf.message import Message

from retrieval_client.credentials import Headers, Tls
from retrieval_client.results import ModelMetadata, VersionStatus
from retrieval_client.settings import Endpoint, ModelRef
from retrieval_client.tensors import Tensor
from retrieval_client.transports.grpc import GrpcCodec, Methods, open_aio_channel


class AsyncGrpcTransport(GrpcCodec):
    def __init__(
        self, endpoint: Endpoint, *, tls: Tls | None = None, metadata: Headers = (), channel: Any = None
    ) -> None:
        super().__init__(endpoint, tls, metadata)
        self._channel: Any = channel
        self._methods = Methods(channel) if channel is not None else None

    def _open(self) -> Methods:
        if self._methods is None:
            self._channel = open_aio_channel(self.endpoint, self.tls)
            self._methods = Methods(self._channel)
        return self._methods

    # -- the AsyncTransport interface ----------------------------------------------------------------------
    async def predict(
        self, model: ModelRef, inputs: Mapping[str, Tensor], output_filter: Sequence[str] | None, timeout: float
    ) -> dict[str, Any]:
        request = self._predict_request(model, inputs, output_filter)
        return self._predict_result(await self._call(self._open().predict, request, timeout), output_filter)

    async def status(self, model: ModelRef, timeout: float) -> list[VersionStatus]:
        return self._status_result(await self._call(self._open().status, self._status_request(model), timeout))

    async def metadata(self, model: ModelRef, timeout: float) -> ModelMetadata:
        response = await self._call(self._open().metadata, self._metadata_request(model), timeout)
        return self._metadata_result(model, response)

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close()

    async def _call(self, method: Callable[..., Any], request: Message, timeout: float) -> Any:
        try:
            return await method(request, **self._options(timeout))
        except grpc.RpcError as exc:  # grpc.aio.AioRpcError is one
            raise self._error(exc) from exc
