"""tensorflow_model_server's flags: names, defaults, value forms, and start-up failures."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import grpc
import pytest

import server_process as sp
from serving.flags import FlagError, ServerOptions, parse_flags


def test_defaults_are_tf_serving_defaults():
    options = parse_flags(["--model_base_path=/m"])
    assert options.port == 8500
    assert options.rest_api_port == 8501
    assert options.model_name == "default"
    assert options.file_system_poll_wait_seconds == 1
    assert options.model_config_file_poll_wait_seconds == 0
    assert options.rest_api_timeout_in_ms == 30000
    assert options.enable_model_warmup is True
    assert options.enable_batching is False
    assert options.allow_version_labels_for_unavailable_models is False
    assert options.max_num_load_retries == 5
    assert options.ssl_config_file == ""  # gRPC without TLS


def test_ssl_config_file_is_taken_and_a_bad_one_aborts_start(tmp_path):
    assert parse_flags(["--model_base_path=/m", "--ssl_config_file", "/etc/ssl.config"]).ssl_config_file == (
        "/etc/ssl.config"
    )
    bad = tmp_path / "ssl.config"
    bad.write_text("server_key: 'k'\nserver_certificate: 'c'\n")  # TF Serving's field is server_cert
    proc = _run("--model_base_path=/nonexistent", f"--ssl_config_file={bad}", "--port=0", "--rest_api_port=0")
    assert proc.returncode != 0 and f"Invalid protobuf file: '{bad}'" in proc.stderr
    proc = _run("--model_base_path=/nonexistent", f"--ssl_config_file={tmp_path / 'none'}", "--port=0")
    assert proc.returncode != 0 and str(tmp_path / "none") in proc.stderr


def test_equals_and_space_forms_and_bool_forms():
    options = parse_flags(
        [
            "--port",
            "9000",
            "--rest_api_port=0",
            "--model_name=retrieval",
            "--model_base_path",
            "/m",
            "--enable_model_warmup=false",
            "--allow_version_labels_for_unavailable_models",
            "--enable_batching=1",
        ]
    )
    assert (options.port, options.rest_api_port, options.model_name) == (9000, 0, "retrieval")
    assert options.enable_model_warmup is False
    assert options.allow_version_labels_for_unavailable_models is True
    assert options.enable_batching is True


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--model_base_path=/m", "--no_such_flag=1"], "unknown argument: --no_such_flag=1"),
        (["--model_base_path=/m", "stray"], "unknown argument: stray"),
        (["--model_base_path=/m", "--port=abc"], "Couldn't interpret value abc for flag port."),
        (["--model_base_path=/m", "--enable_model_warmup=yes"], "Couldn't interpret value yes for flag"),
        ([], "Both server_options.model_base_path and server_options.model_config_file are empty!"),
        (["--model_base_path=/m", "--batching_parameters_file=/b"], "without setting server_options.enable_batching"),
        (["--model_base_path=/m", "--port=70000"], "--port must be a TCP port"),
    ],
)
def test_bad_command_lines_are_errors(argv, message):
    with pytest.raises(FlagError) as err:
        parse_flags(argv)
    assert message in str(err.value)


def test_options_are_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        ServerOptions(model_base_path="/m").port = 1


def _run(*args, timeout=120):
    return subprocess.run(
        [sys.executable, "-m", "serving", *args],
        cwd=str(sp.ROOT),
        env=sp.server_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_unknown_flag_fails_with_usage():
    proc = _run("--model_base_path=/m", "--bogus=1")
    assert proc.returncode != 0
    assert "unknown argument: --bogus=1" in proc.stderr
    assert "--model_config_file_poll_wait_seconds" in proc.stderr  # the usage text


def test_config_parse_error_aborts_start(tmp_path):
    config = tmp_path / "models.config"
    config.write_text("model_config_list { config { name: 'x' base_path: ")
    proc = _run(f"--model_config_file={config}", "--port=0", "--rest_api_port=0")
    assert proc.returncode != 0
    assert f"Invalid protobuf file: '{config}'" in proc.stderr


@pytest.mark.slow
def test_relative_base_path_in_config_aborts_start(tmp_path):
    config = sp.write_config(tmp_path / "models.config", [{"name": "x", "base_path": "models/x"}])
    proc = _run(f"--model_config_file={config}", "--port=0", "--rest_api_port=0")
    assert proc.returncode != 0
    assert "Expected model x to have an absolute path or URI; got base_path()=models/x" in proc.stderr


def test_batching_parameters_file_is_parsed(tmp_path):
    batching = tmp_path / "batching.config"
    batching.write_text("max_batch_size { value: 'not a number' }")
    proc = _run(
        "--model_base_path=/nonexistent",
        "--enable_batching",
        f"--batching_parameters_file={batching}",
        "--port=0",
        "--rest_api_port=0",
    )
    assert proc.returncode != 0
    assert f"Invalid protobuf file: '{batching}'" in proc.stderr


@pytest.mark.slow
def test_grpc_receive_size_limit_from_channel_arguments(model_store):
    base = model_store / "retrieval"
    with sp.ServerProcess(
        "--model_name=retrieval",
        f"--model_base_path={base}",
        "--grpc_channel_arguments=grpc.max_receive_message_length=4096",
    ) as server:
        assert server.predict("retrieval", {"user_id": [b"1"]}).outputs
        with pytest.raises(grpc.RpcError) as err:
            server.predict("retrieval", {"user_id": [b"x" * 10000]})
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert server.predict("retrieval", {"user_id": [b"1"]}).outputs, "server stays up"


@pytest.mark.parametrize(
    "argv, message",
    [
        # absl.flags would take these; tensorflow::Flags does not, so neither does the local server.
        (["--model_base_path=/m", "--noenable_batching"], "unknown argument: --noenable_batching"),
        (["-model_base_path=/m"], "unknown argument: -model_base_path=/m"),
        (["--model_base_path=/m", "--flagfile=/f"], "unknown argument: --flagfile=/f"),
        (["--model_base_path=/m", "--undefok=x"], "unknown argument: --undefok=x"),
        (["--model_base_path=/m", "--", "--port=1"], "unknown argument: --"),
        (["--model_base_path=/m", "--enable_batching=t"], "Couldn't interpret value t for flag enable_batching."),
        (["--model_base_path=/m", "--enable_batching=TRUE"], "Couldn't interpret value TRUE for flag enable_batching."),
        (["--model_base_path=/m", "--port=0x10"], "Couldn't interpret value 0x10 for flag port."),
        (["--model_base_path=/m", "--port"], "Missing value for flag --port"),
        (["--model_base_path=/m", "stray", "--bogus"], "unknown argument: stray"),  # the first one, in order
    ],
)
def test_what_absl_would_accept_but_tf_serving_does_not(argv, message):
    with pytest.raises(FlagError) as err:
        parse_flags(argv)
    assert str(err.value) == message


def test_last_value_wins_and_usage_shows_defaults():
    from serving.flags import usage

    options = parse_flags(
        [
            "--model_base_path=/m",
            "--port=1",
            "--port",
            "2",
            "--enable_batching",
            "--enable_batching=false",
            "--load_retry_interval_micros=9000000000",
        ]
    )
    assert (options.port, options.enable_batching, options.load_retry_interval_micros) == (2, False, 9000000000)
    text = usage()
    assert "\t--port=8500\tint\tTCP port to listen on for gRPC API." in text
    assert '\t--model_name="default"\tstr\t' in text and "\t--enable_model_warmup=true\tbool\t" in text
