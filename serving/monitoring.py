"""Request metrics of the local server, rendered as TF Serving's Prometheus page.

TF Serving counts requests in ``/tensorflow/serving/request_count`` (labels ``model_name``, ``status``) and
times them in ``/tensorflow/serving/request_latency`` (labels ``model_name``, ``API``, ``entrypoint``; a
histogram in microseconds with buckets ``10 * 1.8**i``, 33 of them, then ``+Inf``); its exporter
(``util/prometheus_exporter.cc``) turns every character outside ``[a-zA-Z0-9_]`` into ``:``, which gives
``:tensorflow:serving:request_count``. The same names, bucket limits and number formats are used here, with
the labels ``version`` and ``signature_name`` added so that requests, errors (``status`` other than ``OK``)
and latency can be read per model, version and signature; queries written for TF Serving's label sets
(``sum by (model_name, status)``) work unchanged.

Both transports call :meth:`Metrics.record` once per request, with TF Serving's API name (``Predict``,
``GetModelMetadata``, ``GetModelStatus``, ``Classify``, ``Regress``) and ``entrypoint`` ``"REST"`` or
``"GRPC"``; the REST server serves :meth:`Metrics.render` at the monitoring config's path.
:data:`MonitoringConfig` is TF Serving's ``--monitoring_config_file`` message (the tensorflow-serving-api
wheel does not ship its ``_pb2``).
"""

from __future__ import annotations

import bisect
import threading
from dataclasses import dataclass, field

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

DEFAULT_PATH = "/monitoring/prometheus/metrics"
REQUEST_COUNT = ":tensorflow:serving:request_count"
REQUEST_LATENCY = ":tensorflow:serving:request_latency"

# tensorflow/core/lib/monitoring Buckets::Exponential(10, 1.8, 33); the exporter prints the last as +Inf.
LATENCY_BUCKETS_US = tuple(10.0 * 1.8**i for i in range(33))


def _number(value: float) -> str:
    """``absl::StrCat(double)``: six significant digits, as printf's ``%g``."""
    return "%g" % value


def _label_value(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"')


def _labels(names: tuple[str, ...], values: tuple[str, ...]) -> str:
    return ",".join(f'{n}="{_label_value(v)}"' for n, v in zip(names, values))


@dataclass
class _Histogram:
    counts: list[int] = field(default_factory=lambda: [0] * (len(LATENCY_BUCKETS_US) + 1))
    total: float = 0.0

    def add(self, value: float) -> None:
        self.counts[bisect.bisect_left(LATENCY_BUCKETS_US, value)] += 1
        self.total += value


_COUNT_LABELS = ("model_name", "version", "signature_name", "API", "entrypoint", "status")
_LATENCY_LABELS = ("model_name", "version", "signature_name", "API", "entrypoint")


class Metrics:
    """Thread-safe request counters and latency histograms keyed by model, version and signature."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[tuple[str, ...], int] = {}
        self._latency: dict[tuple[str, ...], _Histogram] = {}

    def record(self, model: str, version: int | str | None, signature: str, api: str, code: str,
               seconds: float, *, entrypoint: str = "") -> None:
        """Count one request that ended with canonical ``code`` ("OK", "NOT_FOUND", ...) after ``seconds``.

        ``version`` is the version that answered (or was asked for; None/"" when unknown).
        """
        version_label = "" if version is None else str(version)
        key = (model, version_label, signature or "", api, entrypoint)
        micros = max(0.0, seconds) * 1e6
        with self._lock:
            count_key = key + (code,)
            self._counts[count_key] = self._counts.get(count_key, 0) + 1
            histogram = self._latency.get(key)
            if histogram is None:
                histogram = self._latency[key] = _Histogram()
            histogram.add(micros)

    def request_count(self, model: str, *, status: str | None = None, **labels: str) -> int:
        """Sum of requests for ``model`` (optionally one ``status``, and label=value filters such as version)."""
        wanted = {"model_name": model, **labels}
        if status is not None:
            wanted["status"] = status
        with self._lock:
            items = list(self._counts.items())
        total = 0
        for key, count in items:
            values = dict(zip(_COUNT_LABELS, key))
            if all(values.get(k) == str(v) for k, v in wanted.items()):
                total += count
        return total

    def render(self) -> str:
        """The Prometheus text page, as TF Serving's ``PrometheusExporter::GeneratePage`` writes it."""
        with self._lock:
            counts = sorted(self._counts.items())
            latency = sorted((k, list(h.counts), h.total) for k, h in self._latency.items())
        lines = [f"# TYPE {REQUEST_COUNT} counter"]
        for key, count in counts:
            lines.append(f"{REQUEST_COUNT}{{{_labels(_COUNT_LABELS, key)}}} {count}")
        lines.append(f"# TYPE {REQUEST_LATENCY} histogram")
        for key, buckets, total in latency:
            labels = _labels(_LATENCY_LABELS, key)
            cumulative = 0
            for i, n in enumerate(buckets):
                cumulative += n
                limit = _number(LATENCY_BUCKETS_US[i]) if i < len(LATENCY_BUCKETS_US) else "+Inf"
                lines.append(f'{REQUEST_LATENCY}_bucket{{{labels},le="{limit}"}} {cumulative}')
            lines.append(f"{REQUEST_LATENCY}_sum{{{labels}}} {_number(total)}")
            lines.append(f"{REQUEST_LATENCY}_count{{{labels}}} {cumulative}")
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
        proto = descriptor_pb2.FileDescriptorProto(name="tensorflow_serving/config/monitoring_config.proto",
                                                   package="tensorflow.serving", syntax="proto3")
        F = descriptor_pb2.FieldDescriptorProto
        prometheus = proto.message_type.add(name="PrometheusConfig")
        prometheus.field.add(name="enable", number=1, type=F.TYPE_BOOL, label=F.LABEL_OPTIONAL, json_name="enable")
        prometheus.field.add(name="path", number=2, type=F.TYPE_STRING, label=F.LABEL_OPTIONAL, json_name="path")
        monitoring = proto.message_type.add(name="MonitoringConfig")
        monitoring.field.add(name="prometheus_config", number=1, type=F.TYPE_MESSAGE, label=F.LABEL_OPTIONAL,
                             type_name=".tensorflow.serving.PrometheusConfig", json_name="prometheusConfig")
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
