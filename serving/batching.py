"""``--batching_parameters_file``: TF Serving's ``BatchingParameters`` text proto, parsed and validated.

tensorflow-serving-api does not ship ``session_bundle_config_pb2``, so the message is declared here from
tensorflow_serving/servables/tensorflow/session_bundle_config.proto (same package, names and field numbers)
in a private descriptor pool. The local server validates the file but does not batch: each request runs on
its own (TF Serving's batching is a throughput optimisation; answers are the same).
"""

from __future__ import annotations

import functools
import logging

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, text_format, wrappers_pb2

logger = logging.getLogger(__name__)

_FIELDS = (  # name, number, label, type or message type
    ("max_batch_size", 1, "optional", ".google.protobuf.Int64Value"),
    ("batch_timeout_micros", 2, "optional", ".google.protobuf.Int64Value"),
    ("max_enqueued_batches", 3, "optional", ".google.protobuf.Int64Value"),
    ("num_batch_threads", 4, "optional", ".google.protobuf.Int64Value"),
    ("thread_pool_name", 5, "optional", ".google.protobuf.StringValue"),
    ("allowed_batch_sizes", 6, "repeated", descriptor_pb2.FieldDescriptorProto.TYPE_INT64),
    ("pad_variable_length_inputs", 7, "optional", descriptor_pb2.FieldDescriptorProto.TYPE_BOOL),
)


@functools.cache
def batching_parameters_class():
    """The ``tensorflow.serving.BatchingParameters`` message class."""
    try:  # a full tensorflow-serving build ships it
        from tensorflow_serving.servables.tensorflow import session_bundle_config_pb2

        return session_bundle_config_pb2.BatchingParameters
    except ImportError:
        pass
    pool = descriptor_pool.DescriptorPool()
    wrappers = descriptor_pb2.FileDescriptorProto()
    wrappers_pb2.DESCRIPTOR.CopyToProto(wrappers)
    pool.Add(wrappers)
    file = descriptor_pb2.FileDescriptorProto(name="tensorflow_serving/servables/tensorflow/session_bundle_config.proto",
                                              package="tensorflow.serving", syntax="proto3",
                                              dependency=["google/protobuf/wrappers.proto"])
    message = file.message_type.add(name="BatchingParameters")
    labels = {"optional": descriptor_pb2.FieldDescriptorProto.LABEL_OPTIONAL,
              "repeated": descriptor_pb2.FieldDescriptorProto.LABEL_REPEATED}
    for name, number, label, kind in _FIELDS:
        field = message.field.add(name=name, number=number, label=labels[label], json_name=name)
        if isinstance(kind, str):
            field.type = descriptor_pb2.FieldDescriptorProto.TYPE_MESSAGE
            field.type_name = kind
        else:
            field.type = kind
    pool.Add(file)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("tensorflow.serving.BatchingParameters"))


def parse_batching_parameters(text: str):
    """Parse text-format BatchingParameters; text_format.ParseError on bad syntax or types.

    Fields added to the proto after the version declared here are accepted with a warning, so a file
    written for a newer TF Serving still starts the server.
    """
    params = batching_parameters_class()()
    try:
        text_format.Parse(text, params)
    except text_format.ParseError as exc:
        if "has no field named" not in str(exc):
            raise
        params = batching_parameters_class()()
        text_format.Parse(text, params, allow_unknown_field=True)
        logger.warning("batching parameters: ignored fields unknown to this server (%s)", exc)
    return params
