"""Connection reuse over real sockets: one client keeps one TCP connection (REST) or one channel (gRPC)."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

import pytest

from client_fakes import grpc_test_server
from retrieval_client import Client
from retrieval_client.protos import get_model_status_pb2

STATUS = {
    "model_version_status": [
        {"version": "3", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}
    ]
}


class _StatusHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as TF Serving
    peers: ClassVar[set[tuple[str, int]]] = set()

    def do_GET(self):
        type(self).peers.add(self.client_address)
        body = json.dumps(STATUS).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.mark.slow
def test_rest_calls_reuse_one_pooled_connection():
    _StatusHandler.peers = set()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _StatusHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with Client(f"http://127.0.0.1:{server.server_address[1]}") as c:
            versions = [c.status() for _ in range(20)]
    finally:
        server.shutdown()
        server.server_close()
    assert versions[-1][0].version == 3 and len(_StatusHandler.peers) == 1


class _Models:
    def __init__(self) -> None:
        self.peers: set[str] = set()

    def GetModelStatus(self, request, context):
        self.peers.add(context.peer())
        return get_model_status_pb2.GetModelStatusResponse(
            model_version_status=[
                get_model_status_pb2.ModelVersionStatus(
                    version=3, state=get_model_status_pb2.ModelVersionStatus.AVAILABLE
                )
            ]
        )


def test_grpc_calls_share_one_channel_even_from_threads():
    models = _Models()
    server, port = grpc_test_server(
        "ModelService",
        "GetModelStatus",
        models.GetModelStatus,
        get_model_status_pb2.GetModelStatusRequest,
        get_model_status_pb2.GetModelStatusResponse,
    )
    try:
        with Client(f"grpc://127.0.0.1:{port}") as c:
            threads = [threading.Thread(target=lambda: [c.status() for _ in range(10)]) for _ in range(4)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            assert c.status()[0].state == "AVAILABLE"
    finally:
        server.stop(0)
    assert len(models.peers) == 1
