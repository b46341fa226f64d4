"""The prediction and model services both transports answer from, over a typed server core.

TF Serving's REST handler (``model_servers/http_rest_api_handler.cc``) and its gRPC services
(``prediction_service_impl.cc``, ``model_service_impl.cc``) are codecs over shared implementations:
``GetModelStatusImpl`` (``get_model_status_impl.cc``), ``GetModelMetadataImpl``
(``servables/tensorflow/get_model_metadata_impl.cc``), ``TensorflowPredictor`` (``predict_impl.cc``) and the
classifier/regressor signature checks (``classifier.cc``, ``regressor.cc``). :class:`Service` is that layer
here: it answers status, metadata, predict and classify/regress, and records one metric per request
(:class:`Call`). The transports only turn their wire format into its arguments, and its answers (or a
:class:`~serving.errors.StatusError`) back into theirs.

:class:`ServingCore` is what the service needs from a server core (``serving.core.ServerCore``, or a fake in
the tests), as a :class:`typing.Protocol`: resolve and hold a version (:meth:`ServingCore.servable`), report
version states (:meth:`ServingCore.model_status`) and adopt a new config (:meth:`ServingCore.reload_config`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from typing import Any, Protocol

import numpy as np

from serving.bundle import CLASSIFY_METHOD, DEFAULT_SIGNATURE, REGRESS_METHOD
from serving.errors import StatusError, code_number, invalid_argument
from serving.monitoring import Metrics

SIGNATURE_DEF_FIELD = "signature_def"  # the one metadata field TF Serving's GetModelMetadata supports

SignatureDefs = Mapping[str, Any]  # signature name -> tensorflow.SignatureDef proto (TensorFlow has no stubs)
Inputs = Mapping[str, np.ndarray]
InputDecoder = Callable[[SignatureDefs], Inputs]  # a request's inputs, read against the held version's signatures


class Servable(Protocol):
    """One version of a model, held for the length of a request."""

    @property
    def version(self) -> int: ...

    @property
    def signature_defs(self) -> SignatureDefs: ...

    def run(
        self,
        signature_name: str,
        inputs: Inputs,
        *,
        output_filter: Sequence[str] = (),
        timeout_ms: float | None = None,
    ) -> dict[str, np.ndarray]:
        """Run a signature ("" is ``serving_default``): inputs by alias in, outputs by alias out."""
        ...


class VersionStatus(Protocol):
    """One version's state: ``state`` is a ``ModelVersionStatus.State`` name, ``error_code`` a canonical name."""

    @property
    def version(self) -> int: ...

    @property
    def state(self) -> str: ...

    @property
    def error_code(self) -> str: ...

    @property
    def error_message(self) -> str: ...


class ServingCore(Protocol):
    """What the transports need from a server core (docs/serving-core.md).

    A version is picked by ``model_name`` plus at most one of ``version`` and ``label``; with neither, the
    newest AVAILABLE version. Failures are raised as :class:`~serving.errors.StatusError`.
    """

    def servable(
        self, model_name: str, *, version: int | None = None, label: str | None = None
    ) -> AbstractContextManager[Servable]:
        """The resolved version, held (never unloaded) until the block ends."""
        ...

    def model_status(
        self, model_name: str, *, version: int | None = None, label: str | None = None
    ) -> Sequence[VersionStatus]:
        """The statuses of the model's versions (or of the one asked for), newest first."""
        ...

    def reload_config(self, config: Any) -> None:
        """Adopt a ``ModelServerConfig`` proto; returns once newly added models are available."""
        ...


class Call:
    """One request as its metric records it: a context manager that times the block and, on exit, records
    ``api``, the model, the version and signature the handler filled in, and the outcome's canonical code
    (``OK``, the StatusError's code, ``INTERNAL`` for any other exception, ``DEADLINE_EXCEEDED`` when
    ``expired()`` says the transport's deadline passed)."""

    __slots__ = ("_expired", "_metrics", "_start", "api", "entrypoint", "model", "signature", "version")

    def __init__(
        self,
        metrics: Metrics | None,
        api: str,
        entrypoint: str,
        model: str,
        version: int | None,
        signature: str,
        expired: Callable[[], bool] | None,
    ) -> None:
        self._metrics, self._expired = metrics, expired
        self.api, self.entrypoint, self.model = api, entrypoint, model
        self.version, self.signature = version, signature
        self._start = 0.0

    def __enter__(self) -> Call:
        self._start = time.perf_counter()
        return self

    def __exit__(self, kind, error, traceback) -> None:
        if self._metrics is None:
            return
        if kind is None:
            code = "OK"
        elif isinstance(error, StatusError):
            code = error.code
        else:
            code = "INTERNAL"
        if self._expired is not None and self._expired():
            code = "DEADLINE_EXCEEDED"
        self._metrics.record(
            self.model,
            self.version,
            self.signature,
            self.api,
            code,
            time.perf_counter() - self._start,
            entrypoint=self.entrypoint,
        )


class Service:
    """Status, metadata, predict and classify/regress over a :class:`ServingCore`, for every transport."""

    def __init__(self, core: ServingCore, metrics: Metrics | None = None) -> None:
        self.core = core
        self.metrics = metrics

    def call(
        self,
        api: str,
        entrypoint: str,
        model: str,
        *,
        version: int | None = None,
        signature: str = "",
        expired: Callable[[], bool] | None = None,
        record: bool = True,
    ) -> Call:
        """The metric of one request (see :class:`Call`); ``record=False`` records nothing."""
        return Call(self.metrics if record else None, api, entrypoint, model, version, signature, expired)

    # ------------------------------------------------------------------ GetModelStatusImpl
    def model_status(self, model: str, *, version: int | None = None, label: str | None = None):
        """A ``GetModelStatusResponse``: the statuses of ``model``'s versions, newest first."""
        from tensorflow_serving.apis import get_model_status_pb2

        states = get_model_status_pb2.ModelVersionStatus.State
        response = get_model_status_pb2.GetModelStatusResponse()
        for status in self.core.model_status(model, version=version, label=label):
            entry = response.model_version_status.add()
            entry.version = int(status.version)
            entry.state = states.Value(str(status.state))
            entry.status.error_code = code_number(status.error_code or "OK")
            entry.status.error_message = status.error_message or ""
        return response

    # ------------------------------------------------------------------ GetModelMetadataImpl
    def model_metadata(
        self,
        call: Call,
        model: str,
        *,
        version: int | None = None,
        label: str | None = None,
        metadata_fields: Sequence[str] = (SIGNATURE_DEF_FIELD,),
    ):
        """A ``GetModelMetadataResponse``: the answering version and its ``SignatureDefMap`` packed under
        ``metadata["signature_def"]``."""
        from tensorflow_serving.apis import get_model_metadata_pb2

        signature_map = self.signature_def_map(
            call, model, version=version, label=label, metadata_fields=metadata_fields
        )
        response = get_model_metadata_pb2.GetModelMetadataResponse()
        response.model_spec.name = model
        response.model_spec.version.value = call.version
        response.metadata[SIGNATURE_DEF_FIELD].Pack(signature_map)
        return response

    def signature_def_map(
        self,
        call: Call,
        model: str,
        *,
        version: int | None = None,
        label: str | None = None,
        metadata_fields: Sequence[str] = (SIGNATURE_DEF_FIELD,),
    ):
        """The ``SignatureDefMap`` of the resolved version (whose number goes to ``call.version``), after TF
        Serving's checks of the requested metadata fields (``signature_def`` is the only one supported)."""
        from tensorflow_serving.apis import get_model_metadata_pb2

        if not metadata_fields:
            raise invalid_argument("GetModelMetadataRequest must specify at least one metadata_field")
        for name in metadata_fields:
            if name != SIGNATURE_DEF_FIELD:
                raise invalid_argument(f"Metadata field {name} is not supported")
        call.version, signature_defs = self.signature_defs(model, version=version, label=label)
        signature_map = get_model_metadata_pb2.SignatureDefMap()
        for name, signature_def in signature_defs.items():
            signature_map.signature_def[name].CopyFrom(signature_def)
        return signature_map

    def signature_defs(
        self, model: str, *, version: int | None = None, label: str | None = None
    ) -> tuple[int, dict[str, Any]]:
        """The resolved version and its signatures."""
        with self.core.servable(model, version=version, label=label) as servable:
            return servable.version, dict(servable.signature_defs)

    # ------------------------------------------------------------------ TensorflowPredictor
    def predict(
        self,
        call: Call,
        model: str,
        *,
        version: int | None = None,
        label: str | None = None,
        signature_name: str = "",
        inputs: Inputs | InputDecoder,
        output_filter: Sequence[str] = (),
        timeout_ms: float | None = None,
    ) -> dict[str, np.ndarray]:
        """Run a signature on the resolved version, held from reading the request to the answer.

        ``inputs`` is the tensors by alias, or a function that reads them against the held version's
        signatures (a JSON request, whose tensors' dtypes come from the signature). ``timeout_ms`` is the
        time left (``SavedModelBundle.run``). ``call.version`` is set to the version that answered.
        """
        with self.core.servable(model, version=version, label=label) as servable:
            feeds = inputs(servable.signature_defs) if callable(inputs) else inputs
            outputs = servable.run(signature_name, feeds, output_filter=output_filter, timeout_ms=timeout_ms)
            call.version = servable.version
        return outputs

    # ------------------------------------------------------------------ classifier.cc / regressor.cc
    def classify_regress(
        self,
        call: Call,
        model: str,
        *,
        regress: bool,
        version: int | None = None,
        label: str | None = None,
        signature_name: str = "",
        method_name_check: bool = False,
    ) -> None:
        """Classify or Regress: TF Serving's checks of the signature, then UNIMPLEMENTED (tf.Example inputs
        are not implemented by the local server; the bundle's models only have predict signatures).

        ``method_name_check`` is TF Serving's ``--enable_signature_method_name_check``: with it the signature
        must be a classify/regress one (the gRPC transport's answer); without it (TF Serving's default, the
        REST transport's answer) its inputs and outputs are checked as ``PreProcessClassification`` /
        ``PreProcessRegression`` do."""
        kind, method = ("Regression", REGRESS_METHOD) if regress else ("Classification", CLASSIFY_METHOD)
        name = signature_name or DEFAULT_SIGNATURE
        call.version, signatures = self.signature_defs(model, version=version, label=label)
        signature = signatures.get(name)
        if method_name_check:
            if signature is None:
                raise StatusError("FAILED_PRECONDITION", f'Serving signature key "{name}" not found.')
            if signature.method_name != method:
                raise invalid_argument(
                    f"Expected {kind.lower()} signature method_name to be {method}. Was: {signature.method_name}"
                )
            message = f"{kind} over tf.Example input is not implemented by the local server; use Predict"
        else:
            if signature is None:
                raise invalid_argument(f"No signature was found with the name: {name}")
            _check_signature(signature, regress)
            api = "Regress" if regress else "Classify"
            message = f"{api} over tf.Example inputs is not implemented by the local server; use :predict"
        raise StatusError("UNIMPLEMENTED", message)


def _check_signature(signature: Any, regress: bool) -> None:
    """``PreProcessClassification`` / ``PreProcessRegression``: one input named ``inputs``; for classify one
    or two outputs among ``classes`` and ``scores``, for regress one output named ``outputs``."""
    from google.protobuf import text_format

    debug = text_format.MessageToString(signature)
    if len(signature.inputs) != 1:
        raise invalid_argument("Expected one input Tensor.")
    if regress:
        if len(signature.outputs) != 1:
            raise invalid_argument("Expected one output Tensor.")
        if "inputs" not in signature.inputs:
            raise invalid_argument(f"No regression inputs found in SignatureDef: {debug}")
        if "outputs" not in signature.outputs:
            raise invalid_argument(f"No regression outputs found in SignatureDef: {debug}")
        return
    if len(signature.outputs) not in (1, 2):
        raise invalid_argument(f"Expected one or two output Tensors, found {len(signature.outputs)}")
    if "inputs" not in signature.inputs:
        raise invalid_argument(f"No classification inputs found in SignatureDef: {debug}")
    if "classes" not in signature.outputs and "scores" not in signature.outputs:
        raise invalid_argument(
            'Expected classification signature outputs to contain at least one of "classes" '
            f'or "scores". Signature was: {debug}'
        )
