"""Training across machines (export/distributed.py): TF_CONFIG, and two real worker processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from export.config import ConfigError
from export.distributed import Worker, worker
from serving.testing import free_port

ROOT = Path(__file__).resolve().parents[2]
ARGS = ["--data", "synthetic", "--synthetic-size", "tiny", "--tune-budget", "0", "--index", "brute_force",
        "--models", "retrieval", "--no-gate"]  # fmt: skip


def _tf_config(ports: list[int], index: int) -> str:
    return json.dumps({"cluster": {"worker": [f"127.0.0.1:{p}" for p in ports]},
                       "task": {"type": "worker", "index": index}})  # fmt: skip


def test_tf_config_names_this_workers_place_or_none_to_train_alone():
    assert worker({}) is None
    assert worker({"TF_CONFIG": _tf_config([1], 0)}) is None  # one worker: train alone
    assert worker({"TF_CONFIG": _tf_config([1, 2, 3], 2)}) == Worker(2, 3)
    assert Worker(0, 2).chief and not Worker(1, 2).chief


@pytest.mark.parametrize(
    "text, message",
    [
        ("{not json", "TF_CONFIG is not the JSON TensorFlow expects"),
        (json.dumps({"cluster": {"worker": ["a:1", "b:1"], "ps": ["c:1"]}, "task": {"type": "worker", "index": 0}}),
         "only a cluster of workers"),
        (_tf_config([1, 2], 5), "task index 5 is not one of the 2 workers"),
    ],
)  # fmt: skip
def test_a_bad_tf_config_is_one_clear_error(text, message):
    with pytest.raises(ConfigError, match=message):
        worker({"TF_CONFIG": text})


@pytest.mark.slow
def test_the_cli_refuses_a_bad_tf_config_in_one_line(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(ROOT), TF_CONFIG="{not json")
    proc = subprocess.run([sys.executable, "-m", "export", *ARGS, "--model-base-path", str(tmp_path / "m")],
                          cwd=str(ROOT), env=env, capture_output=True, text=True, timeout=120)  # fmt: skip
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith("export: error: TF_CONFIG is not the JSON")
    assert not (tmp_path / "m").exists()


def _answers(base: Path) -> np.ndarray:
    import scann  # noqa: F401  (registers ScaNN's ops, as serving does; tests/conftest.py set TF_USE_LEGACY_KERAS)
    import tensorflow as tf

    [version] = [p for p in (base / "retrieval").iterdir() if p.name.isdigit()]
    model = tf.saved_model.load(str(version))
    users = tf.constant([str(i) for i in range(1, 61)])  # every user of the tiny data set
    return model.signatures["serving_default"](user_id=users)["movie_titles"].numpy()


def _overlap(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.mean([len(set(x) & set(y)) / len(x) for x, y in zip(a, b, strict=True)]))


def _same(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.mean([set(x) == set(y) for x, y in zip(a, b, strict=True)]))


@pytest.mark.slow
def test_two_workers_train_one_model_that_answers_like_a_one_process_run(tmp_path):
    """Two local worker processes (TF_CONFIG, as a Kubernetes training Job sets it) train one model; worker 0
    publishes, worker 1 never touches its store. Both start from the same seeded weights and the full
    softmax's objective is the one-process one, so the model answers as a one-process run on the same data
    and seed does: the same top-10 for most users (floating-point sums in another order aside), far closer
    than a one-process run with another seed."""
    env = dict(os.environ, PYTHONPATH=str(ROOT), TF_CPP_MIN_LOG_LEVEL="2")
    ports = [free_port(), free_port()]
    workers = [
        subprocess.Popen(
            [sys.executable, "-m", "export", *ARGS, "--model-base-path", str(tmp_path / f"worker{i}")],
            cwd=str(ROOT), env=dict(env, TF_CONFIG=_tf_config(ports, i)),
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        for i in range(2)
    ]  # fmt: skip
    outputs = [w.communicate(timeout=600)[0] for w in workers]
    for w, out in zip(workers, outputs, strict=True):
        assert w.returncode == 0, out[-3000:]
    assert "distributed training: worker 0 of 2" in outputs[0] and "retrieval: published version" in outputs[0]
    assert "worker 1 of 2: trained; worker 0 evaluates, validates and publishes" in outputs[1]
    assert not (tmp_path / "worker1").exists()
    manifest = json.loads(next((tmp_path / "worker0").glob("retrieval/*/assets.extra/manifest.json")).read_text())
    assert manifest["training"]["validation"]["best_epoch"] >= 1

    for seed in ("42", "43"):
        alone = subprocess.run(
            [sys.executable, "-m", "export", *ARGS, "--train-seed", seed, "--model-base-path",
             str(tmp_path / f"alone{seed}")],
            cwd=str(ROOT), env=env, capture_output=True, text=True, timeout=600,
        )  # fmt: skip
        assert alone.returncode == 0, alone.stderr[-3000:]
    two = _answers(tmp_path / "worker0")
    one, other_seed = _answers(tmp_path / "alone42"), _answers(tmp_path / "alone43")
    agreement, same, run_to_run = _overlap(two, one), _same(two, one), _overlap(one, other_seed)
    print(
        f"two workers vs one process: mean top-10 overlap {agreement:.3f}, the same top-10 for {same:.0%} of "
        f"users; one process, seed 42 vs 43: overlap {run_to_run:.3f}"
    )
    assert same >= 0.5 and agreement >= 0.9
    assert agreement > run_to_run + 0.2
