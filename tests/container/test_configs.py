"""serving/models.config, monitoring.config and batching.config, parsed with TF Serving's own protos."""

from __future__ import annotations

import re

import pytest
from google.protobuf import text_format

from container_support import ROOT

SERVING = ROOT / "serving"


def parse(path, message):
    return text_format.Parse(path.read_text(), message)


def test_models_config_serves_both_models_from_the_mounted_store_latest_version(tfs_protos):
    config = parse(SERVING / "models.config", tfs_protos.model_server_config())

    models = {c.name: c for c in config.model_config_list.config}
    assert sorted(models) == ["retrieval", "similar_movies"]
    for name, model in models.items():
        assert model.base_path == f"/models/{name}"
        assert model.model_platform == "tensorflow"
        assert model.model_version_policy.WhichOneof("policy_choice") == "latest"
        assert model.model_version_policy.latest.num_versions == 1
        assert not model.version_labels


def commented_examples(text: str) -> list:
    """The ``#   config { ... }`` blocks of the examples section, uncommented."""
    blocks, current = [], None
    for line in text.splitlines():
        body = line[4:] if line.startswith("#   ") else None
        if body is not None and body.startswith("config {"):
            current = [body]
        elif current is not None and body is not None:
            current.append(body)
            if body == "}":
                blocks.append("\n".join(current))
                current = None
    return blocks


def test_rollback_and_label_examples_in_models_config_are_valid_configs(tfs_protos):
    examples = commented_examples((SERVING / "models.config").read_text())
    assert len(examples) == 2

    rollback, canary = (
        text_format.Parse(
            f"model_config_list {{ {block} }}", tfs_protos.model_server_config()
        ).model_config_list.config[0]
        for block in examples
    )
    assert list(rollback.model_version_policy.specific.versions) == [3]
    assert list(canary.model_version_policy.specific.versions) == [3, 4]
    assert dict(canary.version_labels) == {"stable": 3, "canary": 4}
    # A label may only name a version the policy loads.
    assert set(canary.version_labels.values()) <= set(canary.model_version_policy.specific.versions)


def test_a_typo_in_models_config_is_a_parse_error(tfs_protos):
    broken = re.sub(r"base_path", "base_pth", (SERVING / "models.config").read_text(), count=1)
    with pytest.raises(text_format.ParseError, match="base_pth"):
        text_format.Parse(broken, tfs_protos.model_server_config())


def test_monitoring_config_enables_prometheus_at_tf_servings_path(tfs_protos):
    config = parse(SERVING / "monitoring.config", tfs_protos.monitoring_config())
    assert config.prometheus_config.enable is True
    assert config.prometheus_config.path == "/monitoring/prometheus/metrics"


def test_batching_config_is_valid_batching_parameters(tfs_protos):
    params = parse(SERVING / "batching.config", tfs_protos.batching_parameters())
    for field in ("max_batch_size", "batch_timeout_micros", "max_enqueued_batches", "num_batch_threads"):
        assert params.HasField(field), field
    assert params.max_batch_size.value >= 1
    assert params.num_batch_threads.value >= 1
    assert 0 < params.batch_timeout_micros.value <= 100_000
    # allowed_batch_sizes, if ever set, must be increasing and end at max_batch_size (TF Serving checks).
    sizes = list(params.allowed_batch_sizes)
    assert not sizes or (sizes == sorted(sizes) and sizes[-1] == params.max_batch_size.value)
    # exclude_seen's [-1, -1] input needs padding to batch requests of different widths.
    assert params.pad_variable_length_inputs is True
