"""Request metrics of the local server, rendered as TF Serving's Prometheus page.

TF Serving counts requests in ``/tensorflow/serving/request_count`` (labels ``model_name``, ``status``) and
times them in ``/tensorflow/serving/request_latency`` (labels ``model_name``, ``API``, ``entrypoint``; a
histogram in microseconds with buckets ``10 * 1.8**i``, 33 of them, then ``+Inf``); its exporter
(``util/prometheus_exporter.cc``) turns every character outside ``[a-zA-Z0-9_]`` into ``:``, which gives
``:tensorflow:serving:request_count``. The same names, bucket limits and number formats are used here, with
the labels ``version`` and ``signature_name`` added so that requests, errors (``status`` other than ``OK``)
and latency can be read per model, version and signature; queries written for TF Serving's label sets
(``sum by (model_name, status)``) work unchanged.

The service layer (:class:`serving.service.Call`) calls :meth:`Metrics.record` once per request, with TF
Serving's API name (``Predict``, ``GetModelMetadata``, ``GetModelStatus``, ``Classify``, ``Regress``) and
``entrypoint`` ``"REST"`` or ``"GRPC"``; the REST server serves :meth:`Metrics.render` at the monitoring config's path.
:data:`MonitoringConfig` is TF Serving's ``--monitoring_config_file`` message (the tensorflow-serving-api
wheel does not ship its ``_pb2``).

The counters and histograms are prometheus_client's ``Counter`` and ``Histogram`` in a registry of each
:class:`Metrics` (not the process-wide default one): label-name validation, a lock per series (two requests
of different models do not contend), the bucket search and cumulative ``_bucket``/``_sum``/``_count``
samples. Its text writer (``generate_latest``) is not used, because it cannot write TF Serving's page: it
always names a counter's family and samples ``<name>_total`` (TF Serving: ``:tensorflow:serving:request_count``
with no suffix) and writes ``# HELP`` lines and ``_created`` series that TF Serving's exporter does not.
:meth:`Metrics.render` writes the page from the registry's samples instead (``registry.collect()``), in TF
Serving's format: ``# TYPE`` lines only, counts as integers, bucket limits and sums as ``%g``.
"""

from __future__ import annotations

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from prometheus_client import CollectorRegistry, Counter, Histogram

DEFAULT_PATH = "/monitoring/prometheus/metrics"
REQUEST_COUNT = ":tensorflow:serving:request_count"
REQUEST_LATENCY = ":tensorflow:serving:request_latency"

# tensorflow/core/lib/monitoring Buckets::Exponential(10, 1.8, 33); the exporter prints the last as +Inf.
LATENCY_BUCKETS_US = tuple(10.0 * 1.8**i for i in range(33))


def _number(value: float) -> str:
    """``absl::StrCat(double)``: six significant digits, as printf's ``%g``."""
    return f"{value:g}"


def _label_value(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"')


def _labels(labels: dict[str, str]) -> str:
    return ",".join(f'{n}="{_label_value(v)}"' for n, v in labels.items())


_COUNT_LABELS = ("model_name", "version", "signature_name", "API", "entrypoint", "status")
_LATENCY_LABELS = ("model_name", "version", "signature_name", "API", "entrypoint")


class Metrics:
    """Thread-safe request counters and latency histograms keyed by model, version and signature."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._count = Counter(REQUEST_COUNT, "The total number of requests.", _COUNT_LABELS, registry=self.registry)
        self._latency = Histogram(
            REQUEST_LATENCY,
            "Distribution of request latency in microseconds.",
            _LATENCY_LABELS,
            buckets=LATENCY_BUCKETS_US,
            registry=self.registry,
        )

    def record(
        self,
        model: str,
        version: int | str | None,
        signature: str,
        api: str,
        code: str,
        seconds: float,
        *,
        entrypoint: str = "",
    ) -> None:
        """Count one request that ended with canonical ``code`` ("OK", "NOT_FOUND", ...) after ``seconds``.

        ``version`` is the version that answered (or was asked for; None/"" when unknown).
        """
        key = (model, "" if version is None else str(version), signature or "", api, entrypoint)
        self._count.labels(*key, code).inc()
        self._latency.labels(*key).observe(max(0.0, seconds) * 1e6)

    def request_count(self, model: str, *, status: str | None = None, **labels: str) -> int:
        """Sum of requests for ``model`` (optionally one ``status``, and label=value filters such as version)."""
        wanted = {"model_name": model, **labels}
        if status is not None:
            wanted["status"] = status
        total = 0.0
        for family in self._count.collect():
            for sample in family.samples:
                if sample.name == REQUEST_COUNT + "_total" and all(
                    sample.labels.get(k) == str(v) for k, v in wanted.items()
                ):
                    total += sample.value
        return int(total)

    def render(self) -> str:
        """The Prometheus text page, as TF Serving's ``PrometheusExporter::GeneratePage`` writes it."""
        lines = []
        for family in self.registry.collect():
            lines.append(f"# TYPE {family.name} {family.type}")
            for sample in family.samples:
                suffix = sample.name[len(family.name) :]
                if suffix == "_created":
                    continue
                if suffix == "_total":  # TF Serving's counters carry no suffix
                    suffix = ""
                labels = dict(sample.labels)
                if "le" in labels:  # prometheus_client spells limits as repr(); TF Serving as %g
                    le = float(labels["le"])
                    labels["le"] = "+Inf" if le == float("inf") else _number(le)
                value = _number(sample.value) if suffix == "_sum" else str(int(sample.value))
                lines.append(f"{family.name}{suffix}{{{_labels(labels)}}} {value}")
        return "\n".join(lines) + "\n"


def _monitoring_config_class():
    """``tensorflow.serving.MonitoringConfig`` (config/monitoring_config.proto).

    The tensorflow-serving-api wheel does not ship ``monitoring_config_pb2``, so the two messages are
    declared here, field for field, in the default descriptor pool (text-format files parse as in TF Serving).
    """
    try:
        from tensorflow_serving.config import monitoring_config_pb2

        return monitoring_config_pb2.MonitoringConfig
    except ImportError:
        pass
    pool = descriptor_pool.Default()
    try:
        descriptor = pool.FindMessageTypeByName("tensorflow.serving.MonitoringConfig")
    except KeyError:
        proto = descriptor_pb2.FileDescriptorProto(
            name="tensorflow_serving/config/monitoring_config.proto", package="tensorflow.serving", syntax="proto3"
        )
        F = descriptor_pb2.FieldDescriptorProto
        prometheus = proto.message_type.add(name="PrometheusConfig")
        prometheus.field.add(name="enable", number=1, type=F.TYPE_BOOL, label=F.LABEL_OPTIONAL, json_name="enable")
        prometheus.field.add(name="path", number=2, type=F.TYPE_STRING, label=F.LABEL_OPTIONAL, json_name="path")
        monitoring = proto.message_type.add(name="MonitoringConfig")
        monitoring.field.add(
            name="prometheus_config",
            number=1,
            type=F.TYPE_MESSAGE,
            label=F.LABEL_OPTIONAL,
            type_name=".tensorflow.serving.PrometheusConfig",
            json_name="prometheusConfig",
        )
        pool.Add(proto)
        descriptor = pool.FindMessageTypeByName("tensorflow.serving.MonitoringConfig")
    return message_factory.GetMessageClass(descriptor)


MonitoringConfig = _monitoring_config_class()


def prometheus_path(monitoring_config) -> str | None:
    """The path the Prometheus page is served at, or None when the monitoring config does not enable it."""
    if monitoring_config is None:
        return None
    prometheus = monitoring_config.prometheus_config
    if not prometheus.enable:
        return None
    return prometheus.path or DEFAULT_PATH
