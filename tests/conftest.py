"""Shared fixtures: model stores published by the real export CLI on tiny synthetic data.

    publish_store(root, *, index="scann", k=10, seed=0, epochs=1, preset="default", extra_args=()) -> root
        runs ``python -m export --data synthetic --synthetic-size tiny ...`` in a subprocess and returns
        ``root``, a TF Serving store holding ``retrieval/<version>/`` and ``similar_movies/<version>/``
        (60 users "1".."60", ~150 titles; K = k), with ``--no-gate`` unless ``extra_args`` say ``--gate``. Raises
        AssertionError with the CLI's output on failure.

    make_model_store   session fixture: the ``publish_store`` factory itself
    export_cli         session fixture: ``run_export(args, timeout=300)`` -> CompletedProcess of
                       ``python -m export ARGS`` (never raises on a non-zero exit)
    model_store        session fixture: a ScaNN store root (Path), built once per session
    brute_force_store  session fixture: a BruteForce store root (Path), built once per session

Never write into ``model_store`` / ``brute_force_store`` (shared by every test): publish into your own
``tmp_path`` with ``make_model_store(tmp_path / "models", ...)`` or copy the store first.

Markers (registered in pyproject.toml): ``engine`` (a real Docker engine) sits on its test modules; ``slow`` and
``root`` are given here, from SLOW and NEEDS_ROOT, so that the fast lane (README: ``scripts/test.sh --fast``)
is chosen in one place, from one measured ``--durations=0`` run, without touching every part's test files.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXPORT_TIMEOUT_S = 300

# Tests that take a second or more each on the 2-core machine, measured with --durations=0 (a real export,
# a server process per test, TensorFlow in a child, packages installed, a training run, a deadline waited
# out): a module, or a test with all its parameters. Shared fixtures (the two stores) are paid once, not here.
SLOW = (
    "tests/test_readme.py::test_demo_command_trains_publishes_serves_and_recommends_for_user_42_offline",  # 38 s
    "tests/export/test_cli.py",  # the export CLI, end to end, per test (5-36 s)
    "tests/export/test_round_trip.py",  # fresh-process validation per test (4-9 s)
    # the export CLI, two runs each, refused by the gate (export/gate.py)
    "tests/export/test_gate.py::test_cli_refuses_a_model_that_does_not_beat_popularity_into_an_empty_store_and_no_gate_publishes_it",
    "tests/export/test_gate.py::test_cli_refuses_a_version_worse_than_the_served_one_and_the_store_keeps_the_old_one",
    "tests/export/test_distributed.py::test_two_workers_train_one_model_that_answers_like_a_one_process_run",
    "tests/export/test_distributed.py::test_the_cli_refuses_a_bad_tf_config_in_one_line",
    "tests/export/test_publish.py::test_versions_increase_across_exports_and_pruning_keeps_newest_previous_and_pinned",
    "tests/export/test_publish.py::test_publish_killed_at_random_points_leaves_no_partial_numeric_version",
    "tests/export/test_publish.py::test_export_killed_at_random_points_publishes_nothing_partial",
    "tests/export/test_publish.py::test_publish_killed_at_every_file_system_step_leaves_old_or_new_complete_version",
    "tests/export/test_publish.py::test_an_export_killed_between_the_two_renames_leaves_two_complete_models_that_serve",
    "tests/export/test_selection.py::test_fit_chooses_on_validation_and_refits_on_the_whole_training_part",
    "tests/export/test_tables.py::test_export_cli_trains_on_your_own_file",
    "tests/serving/test_lifecycle.py",  # a server process per test, waiting for loads and polls (4-7 s)
    "tests/serving/test_flags.py::test_relative_base_path_in_config_aborts_start",
    "tests/serving/test_flags.py::test_grpc_receive_size_limit_from_channel_arguments",
    "tests/serving/test_batching.py::test_concurrent_requests_are_batched_and_padded_as_tf_serving_pads",
    "tests/container/test_stock_variant.py",  # both stores exported, then loaded against stock TF Serving's ops
    "tests/client/test_compat.py",  # pip-installs old protobuf/grpcio into .venv/compat
    "tests/client/test_package.py",  # pip builds and installs ./client (5-10 s), then runs it
    "tests/deploy/test_replicas.py",  # replicas of the server under load, one killed mid-load
    "tests/deploy/test_k8s_pod_local.py",  # the rendered pod's server and probes
    "tests/deploy/test_k8s_policy.py::test_overlay_passes_checkov_with_every_skip_justified",  # checkov, per overlay
    "tests/deploy/test_k8s_policy.py::test_checkov_does_fail_a_root_pod_with_a_writable_root_filesystem",
    "tests/client/test_protos.py::test_our_bytes_parse_with_tensorflow_serving_api_and_back",  # TF in a child
    "tests/client/test_protos.py::test_tensorflow_and_the_client_share_one_process_in_either_order",
    # 1-2 s each
    "tests/export/test_model.py::test_log_q_correction_uses_each_movies_share_of_the_training_ratings",
    "tests/export/test_model.py::test_a_bag_of_items_user_tower_averages_the_training_items_and_leaves_the_target_out",
    "tests/export/test_selection.py::test_a_catalogue_too_large_for_a_full_softmax_trains_in_batch_with_log_q",
    "tests/export/test_validate_child.py::test_validation_child_exits_when_the_export_process_is_killed",
    "tests/export/test_data.py::test_random_split_is_the_seed_tutorials_split",
    "tests/export/test_data.py::test_tfds_download_gives_up_when_the_host_never_answers",
    "tests/serving/test_rest_server.py::test_num_threads_caps_requests_processed_at_once",
    "tests/serving/test_rest_server.py::test_deadline_exceeded_answers_at_the_deadline_and_keeps_the_connection",
    "tests/deploy/test_object_store.py::test_server_polling_mid_copy_never_loads_a_half_version",
    "tests/deploy/test_object_store.py::test_control_saved_model_pb_first_is_loaded_half_copied",
    "tests/client/test_errors.py::test_a_retry_whose_backoff_overran_the_deadline_is_deadline_exceeded_not_sent",
    "tests/client/test_connections.py::test_rest_calls_reuse_one_pooled_connection",
)
# Tests that need root: private network and mount namespaces (unshare, nsenter; tests/container/namespaces.py).
NEEDS_ROOT = ("tests/container/test_healthcheck.py",)


def _listed(nodeid: str, entries: tuple[str, ...]) -> bool:
    return any(nodeid == e or nodeid.startswith((e + "::", e + "[")) for e in entries)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        nodeid = Path(item.path).relative_to(ROOT).as_posix() + item.nodeid[item.nodeid.index("::") :]
        if _listed(nodeid, SLOW):
            item.add_marker(pytest.mark.slow)
        if _listed(nodeid, NEEDS_ROOT):
            item.add_marker(pytest.mark.root)


def export_env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + [p for p in [env.get("PYTHONPATH")] if p])
    env.setdefault("TF_USE_LEGACY_KERAS", "1")
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    return env


# The quickest whole export: tiny synthetic data, the seed preset for one epoch, an exact index; --no-gate: such a
# model does not beat popularity (nor can any on 800 test ratings), and these exports test publishing, not quality.
QUICK_EXPORT = ("--data", "synthetic", "--synthetic-size", "tiny", "--preset", "seed", "--epochs", "1",
                "--index", "brute_force", "--no-gate")  # fmt: skip


@pytest.fixture
def quick_export() -> list[str]:
    """The CLI arguments of the quickest whole export (QUICK_EXPORT), to extend per test."""
    return list(QUICK_EXPORT)


def run_export(args, timeout: float = EXPORT_TIMEOUT_S, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    """``python -m export ARGS`` from ``cwd`` (the repo root); returns the completed process (never raises on
    exit code)."""
    return subprocess.run(
        [sys.executable, "-m", "export", *map(str, args)],
        cwd=str(cwd),
        env=export_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def publish_store(
    root: Path,
    *,
    index: str = "scann",
    k: int = 10,
    seed: int = 0,
    epochs: int = 1,
    preset: str = "default",
    extra_args=(),
) -> Path:
    root = Path(root)
    proc = run_export(
        [
            "--data",
            "synthetic",
            "--synthetic-size",
            "tiny",
            "--seed",
            seed,
            "--preset",
            preset,
            "--epochs",
            epochs,
            "--index",
            index,
            "--k",
            k,
            "--model-base-path",
            root,
            # no hyperparameter search unless asked for: stores are fixtures, not tuning runs; nor the gate (tiny data
            # cannot beat popularity outside its interval), unless asked for
            *([] if "--tune-budget" in map(str, extra_args) else ["--tune-budget", "0"]),
            *([] if {"--gate", "--no-gate"} & set(map(str, extra_args)) else ["--no-gate"]),
            *extra_args,
        ]
    )
    if proc.returncode != 0:
        raise AssertionError(
            f"export failed ({proc.returncode}):\nSTDOUT:\n{proc.stdout[-4000:]}\nSTDERR:\n{proc.stderr[-8000:]}"
        )
    return root


@pytest.fixture(scope="session")
def make_model_store():
    return publish_store


@pytest.fixture(scope="session")
def export_cli():
    return run_export


@pytest.fixture(scope="session")
def model_store(tmp_path_factory) -> Path:
    return publish_store(tmp_path_factory.mktemp("scann_store") / "models", index="scann")


@pytest.fixture(scope="session")
def brute_force_store(tmp_path_factory) -> Path:
    return publish_store(tmp_path_factory.mktemp("brute_force_store") / "models", index="brute_force")
