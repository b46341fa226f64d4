"""tensorflow_model_server's command line: the same flag names, defaults and value syntax.

TF Serving parses flags with ``tensorflow::Flags`` (``--name=value``; a bool also as bare ``--name``;
bools read ``true``/``false``/``1``/``0``). This parser accepts those forms, plus ``--name value`` for
non-bool flags. Unlike TF Serving, which prints ``unknown argument: ...`` and carries on, an unknown flag or
a stray argument is an error here.

The flags are absl.flags definitions (one ``FlagValues`` per parse, not absl's global ``FLAGS``), made from
:class:`ServerOptions`' fields, so names, types and defaults have one source: absl gives typed flag objects
with their help text and defaults (the usage text is read from them), ``--name value`` and bare-bool
handling, and "Missing value" for a flag at the end of the line. Where absl accepts more than
``tensorflow::Flags``, :func:`_check_tf_syntax` runs first and answers as TF Serving's "unknown argument"
does: absl's ``--noNAME`` for bools, single-dash ``-name``, ``--flagfile`` and ``--undefok``, and ``--``
(tensorflow_model_server would not start with them, so a compose file that works here must work there).
Values go through parsers with TF's syntax instead of absl's (absl reads ``t``, ``TRUE``, ``0x10``; TF and
this module only ``true``/``false``/``1``/``0`` and decimal integers) and TF's "Couldn't interpret value ...
for flag ..." message. Follows tensorflow_serving/model_servers/main.cc.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields
from typing import Any, cast

from absl import flags as absl_flags

_CPUS = os.cpu_count() or 1


class FlagError(ValueError):
    """A bad command line; the message is what to print before the usage text."""


@dataclass(frozen=True)
class ServerOptions:
    """tensorflow_model_server's options (main.cc / server.h), validated on construction."""

    port: int = 8500
    rest_api_port: int = 8501
    rest_api_num_threads: int = 4 * _CPUS
    rest_api_timeout_in_ms: int = 30000
    model_name: str = "default"
    model_base_path: str = ""
    model_config_file: str = ""
    model_config_file_poll_wait_seconds: int = 0
    file_system_poll_wait_seconds: int = 1
    monitoring_config_file: str = ""
    enable_batching: bool = False
    batching_parameters_file: str = ""
    enable_model_warmup: bool = True
    allow_version_labels_for_unavailable_models: bool = False
    max_num_load_retries: int = 5
    load_retry_interval_micros: int = 60 * 1000 * 1000
    saved_model_tags: str = "serve"
    grpc_max_threads: int = 4 * _CPUS
    grpc_channel_arguments: str = ""
    ssl_config_file: str = ""
    tensorflow_session_parallelism: int = 0
    tensorflow_intra_op_parallelism: int = 0
    tensorflow_inter_op_parallelism: int = 0
    version: bool = False

    def __post_init__(self) -> None:
        for name in ("port", "rest_api_port"):
            value = getattr(self, name)
            if not 0 <= value <= 65535:
                raise FlagError(f"--{name} must be a TCP port in 0..65535 (got {value})")
        for name in ("rest_api_num_threads", "grpc_max_threads", "rest_api_timeout_in_ms"):
            if getattr(self, name) <= 0:
                raise FlagError(f"--{name} must be positive (got {getattr(self, name)})")
        if self.max_num_load_retries < 0:
            raise FlagError(f"--max_num_load_retries must be >= 0 (got {self.max_num_load_retries})")
        if self.version:
            return
        if not self.model_base_path and not self.model_config_file:
            raise FlagError("Both server_options.model_base_path and server_options.model_config_file are empty!")
        if self.batching_parameters_file and not self.enable_batching:
            raise FlagError(
                "server_options.batching_parameters_file is set without setting server_options.enable_batching to true."
            )
        self.channel_arguments()  # validates the syntax

    def channel_arguments(self) -> tuple[tuple[str, int | str], ...]:
        """``--grpc_channel_arguments=k=v,k2=v2`` as grpc options (ints where they parse, as TF Serving)."""
        result: list[tuple[str, int | str]] = []
        for item in filter(None, self.grpc_channel_arguments.split(",")):
            key, sep, value = item.partition("=")
            if not sep or not key:
                raise FlagError(f"--grpc_channel_arguments: expected key=value, got {item!r}")
            try:
                result.append((key, int(value)))
            except ValueError:
                result.append((key, value))
        return tuple(result)


_HELP = {
    "port": "TCP port to listen on for gRPC API. Disabled if port set to zero.",
    "rest_api_port": "Port to listen on for HTTP/REST API. If set to zero HTTP/REST API will not be exported. "
    "This port must be different than the one specified in --port.",
    "rest_api_num_threads": "Number of threads for HTTP/REST API processing.",
    "rest_api_timeout_in_ms": "Timeout for HTTP/REST API calls.",
    "model_name": "name of model (ignored if --model_config_file flag is set)",
    "model_base_path": "path to export (ignored if --model_config_file flag is set, otherwise required)",
    "model_config_file": "If non-empty, read an ascii ModelServerConfig protobuf from the supplied file name, and "
    "serve the models in that file.",
    "model_config_file_poll_wait_seconds": "Interval in seconds between each poll of the filesystem for "
    "model_config_file. If unset or set to zero, poll will be done exactly "
    "once and not periodically.",
    "file_system_poll_wait_seconds": "Interval in seconds between each poll of the filesystem for new model "
    "version. If set to zero poll will be exactly done once and not periodically.",
    "monitoring_config_file": "If non-empty, read an ascii MonitoringConfig protobuf from the supplied file name",
    "enable_batching": "enable batching",
    "batching_parameters_file": "If non-empty, read an ascii BatchingParameters protobuf from the supplied file name.",
    "enable_model_warmup": "Enables model warmup, which replays assets.extra/tf_serving_warmup_requests at load.",
    "allow_version_labels_for_unavailable_models": "If true, allows assigning unused version labels to models "
    "that are not available yet.",
    "max_num_load_retries": "maximum number of times it retries loading a model after the first failure, "
    "before giving up. If set to 0, a load is attempted only once.",
    "load_retry_interval_micros": "The interval, in microseconds, between each servable load retry.",
    "saved_model_tags": "Comma-separated set of tags corresponding to the meta graph def to load from SavedModel.",
    "grpc_max_threads": "Max grpc server threads to handle grpc messages.",
    "grpc_channel_arguments": "A comma separated list of arguments to be passed to the grpc server. "
    "(e.g. grpc.max_receive_message_length=1048576)",
    "ssl_config_file": "If non-empty, read an ascii SSLConfig protobuf from the supplied file name and set up a "
    "secure gRPC channel",
    "tensorflow_session_parallelism": "Number of threads to use for running a Tensorflow session.",
    "tensorflow_intra_op_parallelism": "Number of threads to use to parallelize the execution of an individual op.",
    "tensorflow_inter_op_parallelism": "Controls the number of operators that can be executed simultaneously.",
    "version": "Display version",
}
_TYPES = {f.name: f.type for f in fields(ServerOptions)}


class _TFParser(absl_flags.ArgumentParser):
    """A value as ``tensorflow::Flags`` reads it: bool ``true|false|1|0``, int64 in decimal, string as is."""

    def __init__(self, name: str, kind: str) -> None:
        self.name, self.kind = name, kind

    def flag_type(self) -> str:
        return self.kind

    def parse(self, argument):
        if not isinstance(argument, str):  # a default
            return argument
        return _convert(self.name, self.kind, argument)


def _flag_values() -> absl_flags.FlagValues:
    """A fresh absl FlagValues with one flag per ServerOptions field (names, types, defaults, help)."""
    values = absl_flags.FlagValues()
    for f in fields(ServerOptions):
        flag = absl_flags.Flag(
            _TFParser(f.name, cast(str, f.type)),  # a string: annotations are postponed (__future__)
            absl_flags.ArgumentSerializer(),
            f.name,
            f.default,
            _HELP.get(f.name, ""),
            boolean=f.type == "bool",
        )
        absl_flags.DEFINE_flag(flag, flag_values=values)
    return values


def usage(program: str = "python -m serving") -> str:
    lines = [f"usage: {program}", "Flags:"]
    defined = _flag_values()
    for name in defined:
        flag = defined[name]
        kind, default = flag.flag_type(), flag.default
        shown = str(default).lower() if kind == "bool" else f'"{default}"' if kind == "str" else default
        lines.append(f"\t--{name}={shown}\t{kind}\t{flag.help}")
    return "\n".join(lines) + "\n"


def _convert(name: str, kind: str, text: str):
    if kind == "bool":
        if text in ("true", "1"):
            return True
        if text in ("false", "0"):
            return False
    elif kind == "int":
        try:
            value = int(text, 10)
        except ValueError:
            pass
        else:
            if -(2**63) <= value < 2**63:
                return value
    else:
        return text
    raise ValueError(f"Couldn't interpret value {text} for flag {name}.")


def _check_tf_syntax(argv: list[str]) -> None:
    """Reject, in order, what ``tensorflow::Flags`` would not take but absl would (see the module doc)."""
    takes_next = False
    for arg in argv:
        if takes_next:  # the value of ``--name value``
            takes_next = False
            continue
        if arg in ("--help", "-h", "--helpfull"):
            raise FlagError("")
        name, sep, _ = arg[2:].partition("=")
        if not arg.startswith("--") or name not in _TYPES:
            raise FlagError(f"unknown argument: {arg}")
        takes_next = not sep and _TYPES[name] != "bool"


def parse_flags(argv: list[str]) -> ServerOptions:
    """Parse ``argv`` (without the program name) into ServerOptions; FlagError on any problem."""
    _check_tf_syntax(argv)
    values = _flag_values()
    try:
        values(["serving", *argv])
    except absl_flags.IllegalFlagValueError as exc:  # absl wraps the parser's ValueError: report TF's text
        cause = exc.__context__
        raise FlagError(str(cause) if isinstance(cause, ValueError) else str(exc)) from None
    except absl_flags.UnrecognizedFlagError as exc:
        raise FlagError(f"unknown argument: {exc.flagvalue}") from None
    except absl_flags.Error as exc:  # "Missing value for flag --port"
        raise FlagError(str(exc)) from None
    given: dict[str, Any] = {name: values[name].value for name in values if values[name].present}
    return ServerOptions(**given)
