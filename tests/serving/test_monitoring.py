"""serving.monitoring: counters, latency histograms and TF Serving's Prometheus text form."""

from __future__ import annotations

import re
import threading

from google.protobuf import text_format

from serving.monitoring import (
    DEFAULT_PATH,
    LATENCY_BUCKETS_US,
    REQUEST_COUNT,
    REQUEST_LATENCY,
    Metrics,
    MonitoringConfig,
    prometheus_path,
)

SAMPLE = re.compile(r"^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(?P<labels>.*)\})? (?P<value>\S+)$")


def parse(text: str) -> tuple[dict[str, str], list[tuple[str, dict[str, str], float]]]:
    """A minimal Prometheus text parser: TYPE lines and samples (name, labels, value)."""
    types, samples = {}, []
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ")
            types[name] = kind
            continue
        match = SAMPLE.match(line)
        assert match, f"not a Prometheus sample line: {line!r}"
        labels = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', match["labels"] or ""))
        samples.append((match["name"], labels, float(match["value"])))
    return types, samples


def test_names_are_tf_serving_metric_names_sanitized_for_prometheus():
    assert REQUEST_COUNT == ":tensorflow:serving:request_count"
    assert REQUEST_LATENCY == ":tensorflow:serving:request_latency"
    assert LATENCY_BUCKETS_US[:3] == (10.0, 18.0, 10.0 * 1.8**2) and len(LATENCY_BUCKETS_US) == 33


def test_requests_errors_and_latency_per_model_version_and_signature():
    metrics = Metrics()
    metrics.record("retrieval", 3, "serving_default", "Predict", "OK", 0.002, entrypoint="REST")
    metrics.record("retrieval", 3, "serving_default", "Predict", "OK", 0.004, entrypoint="REST")
    metrics.record("retrieval", None, "serving_default", "Predict", "NOT_FOUND", 0.0001, entrypoint="GRPC")
    metrics.record("retrieval", 4, "exclude_seen", "Predict", "OK", 0.5, entrypoint="REST")
    types, samples = parse(metrics.render())
    assert types == {REQUEST_COUNT: "counter", REQUEST_LATENCY: "histogram"}
    counts = {(s[1]["version"], s[1]["signature_name"], s[1]["status"]): s[2] for s in samples if s[0] == REQUEST_COUNT}
    assert counts == {
        ("3", "serving_default", "OK"): 2,
        ("", "serving_default", "NOT_FOUND"): 1,
        ("4", "exclude_seen", "OK"): 1,
    }
    assert metrics.request_count("retrieval") == 4
    assert metrics.request_count("retrieval", status="NOT_FOUND") == 1
    assert metrics.request_count("retrieval", version="3") == 2

    v3 = [s for s in samples if s[1].get("version") == "3" and s[0].startswith(REQUEST_LATENCY)]
    by_name = {}
    for name, labels, value in v3:
        by_name.setdefault(name, []).append((labels, value))
    assert by_name[REQUEST_LATENCY + "_count"][0][1] == 2
    assert abs(by_name[REQUEST_LATENCY + "_sum"][0][1] - 6000.0) < 1e-6  # microseconds, as TF Serving
    buckets = by_name[REQUEST_LATENCY + "_bucket"]
    assert buckets[-1][0]["le"] == "+Inf" and buckets[-1][1] == 2
    cumulative = [value for _, value in buckets]
    assert cumulative == sorted(cumulative)  # cumulative counts never decrease
    below_2ms = [value for labels, value in buckets if labels["le"] != "+Inf" and float(labels["le"]) < 2000]
    assert max(below_2ms) == 0
    assert len(buckets) == 34


def test_label_values_are_escaped():
    metrics = Metrics()
    metrics.record('we"ird\\model', 1, "s", "Predict", "OK", 0.001)
    assert ':tensorflow:serving:request_count{model_name="we\\"ird\\\\model"' in metrics.render()


def test_record_is_thread_safe():
    metrics = Metrics()

    def hammer():
        for _ in range(2000):
            metrics.record("m", 1, "s", "Predict", "OK", 0.001, entrypoint="REST")

    threads = [threading.Thread(target=hammer) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert metrics.request_count("m") == 16000
    _, samples = parse(metrics.render())
    assert [s[2] for s in samples if s[0] == REQUEST_LATENCY + "_count"] == [16000]


def test_prometheus_path_follows_the_monitoring_config():
    assert prometheus_path(None) is None
    assert prometheus_path(MonitoringConfig()) is None
    enabled = text_format.Parse("prometheus_config { enable: true }", MonitoringConfig())
    assert prometheus_path(enabled) == DEFAULT_PATH == "/monitoring/prometheus/metrics"
    custom = text_format.Parse('prometheus_config { enable: true path: "/metrics" }', MonitoringConfig())
    assert prometheus_path(custom) == "/metrics"
    assert type(custom).DESCRIPTOR.full_name == "tensorflow.serving.MonitoringConfig"


def test_page_is_valid_prometheus_text_with_tf_serving_spelling():
    """prometheus_client's own parser reads the page; the names, counts and limits are TF Serving's spelling
    (no ``_total``/``_created`` series, no HELP lines, integer counts, ``%g`` bucket limits)."""
    from prometheus_client.parser import text_string_to_metric_families

    metrics = Metrics()
    for _ in range(3):
        metrics.record("retrieval", 1, "serving_default", "Predict", "OK", 0.00002, entrypoint="GRPC")
    page = metrics.render()
    families = {f.name: f for f in text_string_to_metric_families(page)}
    assert set(families) == {REQUEST_COUNT, REQUEST_LATENCY}
    assert [s.value for s in families[REQUEST_COUNT].samples] == [3.0]
    assert "_total" not in page and "_created" not in page and "# HELP" not in page
    assert f"{REQUEST_COUNT}{{" in page and page.count("\n# TYPE ") == 1
    assert ',le="32.4"} 3' in page and ',le="18"} 0' in page  # 20 us lands in the (18, 32.4] bucket
    assert (
        f'{REQUEST_LATENCY}_sum{{model_name="retrieval",version="1",signature_name="serving_default",'
        f'API="Predict",entrypoint="GRPC"}} 60' in page
    )
