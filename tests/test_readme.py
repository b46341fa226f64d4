"""The README's two commands are the ones CI and this suite run, so they cannot go stale."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest

from server_process import free_port  # tests/serving is on pytest's pythonpath

ROOT = Path(__file__).resolve().parents[1]


def test_readme_gives_the_demo_and_test_commands_and_ci_runs_the_test_command():
    readme = (ROOT / "README.md").read_text()
    assert "bash scripts/demo.sh" in readme
    assert "bash scripts/test.sh" in readme
    ci = (ROOT / ".ci" / "run").read_text()
    assert "bash scripts/test.sh" in ci.splitlines(), ci  # the README's test command, as a line of its own


@pytest.mark.slow
def test_demo_command_trains_publishes_serves_and_recommends_for_user_42_offline(tmp_path):
    store = tmp_path / "models"
    env = dict(
        os.environ,
        MODEL_STORE=str(store),
        GRPC_PORT=str(free_port()),
        REST_PORT=str(free_port()),
        EXPORT_ARGS="--synthetic-size tiny --epochs 1 --no-gate",
        SERVING_HOST="127.0.0.1",
    )
    env.pop("MOVIELENS", None)
    done = subprocess.run(["bash", "scripts/demo.sh"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    # No network here: tfds fails, and the fallback to synthetic data is loud and recorded.
    assert "SYNTHETIC" in done.stderr
    for model in ("retrieval", "similar_movies"):
        versions = [p for p in (store / model).iterdir() if p.name.isdigit()]
        assert len(versions) == 1
        manifest = json.loads((versions[0] / "assets.extra" / "manifest.json").read_text())
        assert manifest["data"]["source"]["kind"] == "synthetic"
    sections = re.split(r"^--- ", done.stdout, flags=re.M)[1:]
    assert [s.splitlines()[0] for s in sections[:2]] == ["user 42, over REST", "user 42, over gRPC"]
    rest, grpc_, similar, history = (s.splitlines()[1:] for s in sections)
    top = re.search(r"^\s*1\s+\S+\s+-?\d+\.\d+\s+(.+?)\s*$", "\n".join(rest), re.M).group(1)  # rank, id, score, title
    assert sections[2].splitlines()[0] == f"movies similar to {top}"
    assert top not in "\n".join(similar[1:])  # a movie is never in its own list
    scored = re.compile(r"-?\d+\.\d+")
    assert sum(bool(scored.search(line)) for line in rest) == 10, rest
    assert rest == grpc_  # the same answer over both transports
    assert sum(bool(scored.search(line)) for line in similar) == 10, similar
    # A new user's history answers from the SavedModel: ten movies, never the history, not the fallback.
    assert sections[3].splitlines()[0] == f"a new user who liked {top} (by_history: no retraining)"
    assert sum(bool(scored.search(line)) for line in history) == 10, history
    assert top not in "\n".join(history[1:]) and "fallback" not in "\n".join(history)
