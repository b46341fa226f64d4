"""The private descriptor pool every generated module of this package registers into.

Our messages keep TF Serving's full names (``tensorflow.TensorProto``, ``tensorflow.serving.PredictRequest``)
so that they are wire-compatible, including ``google.protobuf.Any`` type URLs. TensorFlow registers the same
names in protobuf's *default* pool, and a pool refuses a second definition of a name. Registering ours in a
pool of their own lets ``import tensorflow`` and ``import retrieval_client`` live in one process, in either order;
the price is that our classes are not TensorFlow's (exchange them as bytes: ``SerializeToString`` /
``FromString``). ``compile.py`` points the generated code here.
"""

from google.protobuf import any_pb2, descriptor_pool, wrappers_pb2

POOL = descriptor_pool.DescriptorPool()
# The well-known types our files import must be in the same pool.
for _file in (wrappers_pb2.DESCRIPTOR, any_pb2.DESCRIPTOR):
    POOL.AddSerializedFile(_file.serialized_pb)
