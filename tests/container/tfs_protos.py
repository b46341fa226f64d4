"""TF Serving's config messages as Python classes, for parsing the files in serving/ as the server would.

``ModelServerConfig`` comes from the tensorflow-serving-api wheel. ``MonitoringConfig`` and
``BatchingParameters`` are not in that wheel, so their upstream ``.proto`` files (tests/container/protos/)
are compiled here with grpcio-tools' protoc; TensorFlow's own imports (config.proto, named_tensor.proto)
are resolved from the descriptors that the tensorflow wheel carries. The result lives in a private
descriptor pool, so it cannot clash with any other module registering the same files.
"""

from __future__ import annotations

import functools
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

PROTO_ROOT = Path(__file__).parent / "protos"
MONITORING_PROTO = "tensorflow_serving/config/monitoring_config.proto"
SESSION_BUNDLE_PROTO = "tensorflow_serving/servables/tensorflow/session_bundle_config.proto"


def _descriptor_set(*modules) -> descriptor_pb2.FileDescriptorSet:
    """The FileDescriptorSet of ``modules``' files and everything they import, dependencies first."""
    files = descriptor_pb2.FileDescriptorSet()
    seen: set[str] = set()

    def add(file_descriptor) -> None:
        if file_descriptor.name in seen:
            return
        for dependency in file_descriptor.dependencies:
            add(dependency)
        seen.add(file_descriptor.name)
        proto = descriptor_pb2.FileDescriptorProto()
        file_descriptor.CopyToProto(proto)
        files.file.append(proto)

    for module in modules:
        add(module.DESCRIPTOR)
    return files


@functools.cache
def _pool() -> descriptor_pool.DescriptorPool:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from google.protobuf import wrappers_pb2
    from tensorflow.core.protobuf import config_pb2, named_tensor_pb2

    with tempfile.TemporaryDirectory() as tmp:
        imports = Path(tmp, "imports.pb")
        imports.write_bytes(_descriptor_set(config_pb2, named_tensor_pb2, wrappers_pb2).SerializeToString())
        compiled = Path(tmp, "compiled.pb")
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "grpc_tools.protoc",
                f"--proto_path={PROTO_ROOT}",
                f"--descriptor_set_in={imports}",
                "--include_imports",
                f"--descriptor_set_out={compiled}",
                MONITORING_PROTO,
                SESSION_BUNDLE_PROTO,
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
        if result.returncode != 0:
            raise RuntimeError(f"protoc failed on {PROTO_ROOT}: {result.stderr}")
        files = descriptor_pb2.FileDescriptorSet.FromString(compiled.read_bytes())
    pool = descriptor_pool.DescriptorPool()
    for file_proto in files.file:
        pool.Add(file_proto)
    return pool


def message_class(full_name: str):
    """The generated class of ``tensorflow.serving.<Message>`` from the compiled upstream protos."""
    return message_factory.GetMessageClass(_pool().FindMessageTypeByName(full_name))


def monitoring_config():
    return message_class("tensorflow.serving.MonitoringConfig")()


def batching_parameters():
    return message_class("tensorflow.serving.BatchingParameters")()


def model_server_config():
    from tensorflow_serving.config import model_server_config_pb2

    return model_server_config_pb2.ModelServerConfig()
