"""The store: atomic publish under SIGKILL, strictly increasing versions, pruning that keeps what it must."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from export import publish

ROOT = Path(__file__).resolve().parents[2]


def _tree(path: Path) -> dict[str, int]:
    return {str(p.relative_to(path)): p.stat().st_size for p in sorted(path.rglob("*")) if p.is_file()}


def _numeric(base: Path) -> list[Path]:
    return sorted((p for p in base.iterdir() if p.name.isdigit()), key=lambda p: int(p.name)) if base.exists() else []


def _assert_only_complete_versions(base: Path, reference: Path) -> None:
    """Every numeric folder holds the complete SavedModel; its manifest carries its own version."""
    expected = {k for k in _tree(reference) if not k.endswith("manifest.json")}
    for version in _numeric(base):
        files = _tree(version)
        assert {k for k in files if not k.endswith("manifest.json")} == expected, f"partial version {version}"
        ref_sizes = _tree(reference)
        assert all(files[k] == ref_sizes[k] for k in expected), f"truncated file in {version}"
        manifest = json.loads((version / "assets.extra" / "manifest.json").read_text())
        assert manifest["version"] == int(version.name)


def _make_versions(base: Path, numbers) -> None:
    for n in numbers:
        (base / str(n)).mkdir(parents=True)
        (base / str(n) / "saved_model.pb").write_bytes(b"x")


# ------------------------------------------------------------------ versions


def test_next_version_is_now_or_one_past_the_newest_whichever_is_greater(tmp_path):
    assert publish.next_version(tmp_path / "missing", now=1_700_000_000) == 1_700_000_000
    _make_versions(tmp_path, [5, 1_800_000_000])
    (tmp_path / ".staging-1-abc").mkdir()
    (tmp_path / "tmp-9999999999").mkdir()  # non-numeric names are not versions
    assert publish.versions(tmp_path) == [5, 1_800_000_000]
    assert publish.next_version(tmp_path, now=1_700_000_000) == 1_800_000_001


def test_publish_never_overwrites_an_existing_version(tmp_path):
    base = tmp_path / "retrieval"
    _make_versions(base, [100])
    staged = publish.staging_dir(base)
    (staged / "saved_model.pb").write_bytes(b"new")
    stamped = []
    version = publish.publish(staged, base, 100, before_rename=stamped.append)
    assert version == 101
    assert stamped[-1] == 101
    assert (base / "100" / "saved_model.pb").read_bytes() == b"x"
    assert (base / "101" / "saved_model.pb").read_bytes() == b"new"
    assert not staged.exists()


@pytest.mark.slow
def test_versions_increase_across_exports_and_pruning_keeps_newest_previous_and_pinned(
    tmp_path, model_store, make_model_store
):
    root = tmp_path / "models"
    shutil.copytree(model_store, root)
    base = root / "retrieval"
    served = _numeric(base)[-1]
    for old in (1, 2, 3):  # older versions, complete copies
        shutil.copytree(served, base / str(old))
    config = tmp_path / "models.config"
    config.write_text(
        textwrap.dedent(f"""
        model_config_list {{
          config {{ name: "retrieval" base_path: "{base}" model_platform: "tensorflow"
                   model_version_policy {{ latest {{ num_versions: 1 }} }}
                   version_labels {{ key: "stable" value: 2 }} }}
          config {{ name: "similar_movies" base_path: "{root / "similar_movies"}" model_platform: "tensorflow" }}
        }}""")
    )

    make_model_store(root, extra_args=["--keep", "1", "--model-config-file", config, "--models", "retrieval"])

    versions = [int(p.name) for p in _numeric(base)]
    new = versions[-1]
    assert new > int(served.name)
    # keep=1 keeps the new one; the one served until now and the label-pinned 2 are never removed.
    assert versions == [2, int(served.name), new]
    assert len(_numeric(root / "similar_movies")) == 1  # --models retrieval left similar_movies alone
    assert not [p for p in base.iterdir() if not p.name.isdigit()]  # no leftovers


# ------------------------------------------------------------------ pruning


def test_prune_keeps_the_newest_n(tmp_path):
    _make_versions(tmp_path, [1, 2, 3, 4, 5])
    assert publish.prune(tmp_path, keep=3) == [1, 2]
    assert publish.versions(tmp_path) == [3, 4, 5]


def test_prune_never_removes_the_newest_or_a_protected_version(tmp_path):
    _make_versions(tmp_path, [10, 20, 30, 40])
    assert publish.prune(tmp_path, keep=1, protected={20}) == [10, 30]
    assert publish.versions(tmp_path) == [20, 40]
    assert publish.prune(tmp_path, keep=0) == [20]
    assert publish.versions(tmp_path) == [40]


def test_pinned_versions_come_from_labels_and_specific_policies(tmp_path):
    config = tmp_path / "models.config"
    config.write_text(
        textwrap.dedent("""
        model_config_list {
          config { name: "retrieval" base_path: "/models/retrieval" model_platform: "tensorflow"
                   model_version_policy { specific { versions: 7 versions: 9 } }
                   version_labels { key: "stable" value: 7 } version_labels { key: "canary" value: 11 } }
          config { name: "similar_movies" base_path: "/models/similar_movies" model_platform: "tensorflow"
                   version_labels { key: "stable" value: 3 } }
        }""")
    )
    assert publish.pinned_versions(config, "retrieval") == {7, 9, 11}
    assert publish.pinned_versions(config, "similar_movies") == {3}
    assert publish.pinned_versions(None, "retrieval") == set()
    config.write_text("model_config_list { config { name: ")
    with pytest.raises(publish.PublishError, match="cannot read --model-config-file"):
        publish.pinned_versions(config, "retrieval")


def test_clean_stale_removes_leftovers_of_dead_processes_only(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (tmp_path / f".staging-{dead.pid}-abc").mkdir()
    running = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        alive = tmp_path / f".staging-{running.pid}-def"
        alive.mkdir()
        ours = publish.staging_dir(tmp_path)
        (tmp_path / ".staging-garbage").mkdir()
        _make_versions(tmp_path, [1])
        removed = {p.name for p in publish.clean_stale(tmp_path)}
    finally:
        running.kill()
        running.wait()
    assert removed == {f".staging-{dead.pid}-abc", ".staging-garbage"}
    assert alive.exists() and ours.exists() and (tmp_path / "1").exists()


def test_clean_stale_removes_a_leftover_bearing_our_pid_that_we_did_not_make(tmp_path):
    # In a container, `python -m export` is PID 1 on every run: a killed run's leftover carries the pid
    # of the next run, which must still remove it.
    earlier_run = tmp_path / f".staging-{os.getpid()}-0123abcd"
    earlier_run.mkdir()
    ours = publish.staging_dir(tmp_path)
    assert {p.name for p in publish.clean_stale(tmp_path)} == {earlier_run.name}
    assert ours.exists() and not earlier_run.exists()


def test_unwritable_store_is_a_publish_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(publish.PublishError, match="not writable"):
        publish.ensure_writable(blocker / "models")


# ------------------------------------------------------------------ atomicity under SIGKILL

# One publish as an export does it: clean leftovers, stage a copy, stamp its manifest, rename, prune.
_PUBLISH_ONCE = textwrap.dedent("""
    publish.clean_stale(base)
    staged = publish.staging_dir(base)
    shutil.copytree(source, staged, dirs_exist_ok=True)
    def stamp(version):
        path = staged / "assets.extra" / "manifest.json"
        manifest = json.loads(path.read_text())
        manifest["version"] = version
        path.write_text(json.dumps(manifest))
    publish.publish(staged, base, publish.next_version(base), stamp)
    publish.prune(base, keep=2)
""")

_PUBLISH_LOOP = textwrap.dedent("""
    import json, shutil, sys
    from pathlib import Path
    from export import publish
    source, base = Path(sys.argv[1]), Path(sys.argv[2])
    print("ready", flush=True)
    while True:
""") + textwrap.indent(_PUBLISH_ONCE, "    ")


@pytest.mark.slow
def test_publish_killed_at_random_points_leaves_no_partial_numeric_version(tmp_path, model_store):
    source = _numeric(model_store / "retrieval")[-1]
    base = tmp_path / "retrieval"
    rng = random.Random()
    seed = rng.randrange(1 << 30)
    rng.seed(seed)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    seen: set[int] = set()
    for _ in range(12):
        proc = subprocess.Popen(
            [sys.executable, "-c", _PUBLISH_LOOP, str(source), str(base)],
            cwd=str(ROOT),
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        assert proc.stdout.readline().strip() == b"ready"
        time.sleep(rng.uniform(0.0, 0.4))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        proc.stdout.close()
        _assert_only_complete_versions(base, source)
        new = {int(p.name) for p in _numeric(base)} - seen
        assert not new or min(new) > max(seen, default=-1), f"seed {seed}: {sorted(new)} after {sorted(seen)}"
        seen |= new
    assert seen, "no version was ever published: the kills came too early to test anything"
    publish.clean_stale(base)
    assert all(p.name.isdigit() for p in base.iterdir()), f"seed {seed}"


def _export_command(quick_export: list[str], root) -> list[str]:
    return [sys.executable, "-m", "export", *quick_export, "--model-base-path", str(root)]


@pytest.mark.slow
def test_export_killed_at_random_points_publishes_nothing_partial(tmp_path, quick_export):
    root = tmp_path / "models"
    rng = random.Random()
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    args = _export_command(quick_export, root)
    for delay in (rng.uniform(2.0, 10.0),):  # the publish-loop test above covers many more kill points
        proc = subprocess.Popen(args, cwd=str(ROOT), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        for model in ("retrieval", "similar_movies"):
            for version in _numeric(root / model):
                manifest = json.loads((version / "assets.extra" / "manifest.json").read_text())
                assert manifest["version"] == int(version.name)
                assert (version / "saved_model.pb").exists() and (version / "variables").is_dir()
    # The next run cleans the leftovers and publishes a complete version above any earlier one.
    before = {m: [int(p.name) for p in _numeric(root / m)] for m in ("retrieval", "similar_movies")}
    done = subprocess.run(args, cwd=str(ROOT), env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    for model in ("retrieval", "similar_movies"):
        names = [p.name for p in (root / model).iterdir()]
        assert all(n.isdigit() for n in names), names
        assert int(_numeric(root / model)[-1].name) > max(before[model] + [0])


# A deterministic companion to the random kills above: the same publish, killed at EVERY file-system step
# it takes (counted by a Python audit hook: open for writing, mkdir, rename, remove, rmtree, ...), so no
# point between "staging begins" and "pruning ends" goes untested.
_PUBLISH_ONCE_KILLED_AT = (
    textwrap.dedent("""
    import json, os, shutil, signal, sys
    from pathlib import Path
    from export import publish
    source, base, kill_at = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
    WATCHED = {"os.mkdir", "os.rename", "os.replace", "os.remove", "os.rmdir", "shutil.rmtree",
               "shutil.copyfile", "os.truncate"}
    steps = 0
    def hook(event, args):
        global steps
        writing = event == "open" and len(args) > 1 and isinstance(args[1], str) and any(m in args[1] for m in "wax+")
        if event in WATCHED or writing:
            steps += 1
            if steps == kill_at:
                os.kill(os.getpid(), signal.SIGKILL)
    sys.addaudithook(hook)
""")
    + _PUBLISH_ONCE
    + "print(steps, flush=True)\n"
)


@pytest.mark.slow
def test_publish_killed_at_every_file_system_step_leaves_old_or_new_complete_version(tmp_path, model_store):
    source = _numeric(model_store / "retrieval")[-1]
    env = dict(os.environ, PYTHONPATH=str(ROOT))

    def run(base: Path, kill_at: int) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-c", _PUBLISH_ONCE_KILLED_AT, str(source), str(base), str(kill_at)],
            cwd=str(ROOT),
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )

    def fresh_base(name: str) -> tuple[Path, int]:
        base = tmp_path / name / "retrieval"
        for number in (5, 7):  # 7 is being served; 5 is what pruning (keep=2) removes after the publish
            shutil.copytree(source, base / str(number))
            manifest = base / str(number) / "assets.extra" / "manifest.json"
            manifest.write_text(json.dumps(dict(json.loads(manifest.read_text()), version=number)))
        return base, 7

    base, old = fresh_base("complete")
    done = run(base, kill_at=0)
    assert done.returncode == 0, done.stderr[-2000:]
    total = int(done.stdout.split()[-1])
    assert total > 10, f"only {total} file-system steps were seen: the audit hook is not watching the publish"
    assert [int(p.name) for p in _numeric(base)][:1] == [7] and len(_numeric(base)) == 2  # 5 pruned

    for kill_at in range(1, total + 1):
        base, old = fresh_base(f"killed-{kill_at}")
        killed = run(base, kill_at)
        assert killed.returncode == -signal.SIGKILL, f"step {kill_at}: not killed ({killed.returncode})"
        _assert_only_complete_versions(base, source)
        assert old in [int(p.name) for p in _numeric(base)], f"step {kill_at}: the serving version was lost"
        # The next publish cleans every leftover and completes.
        again = run(base, kill_at=0)
        assert again.returncode == 0, again.stderr[-2000:]
        assert all(p.name.isdigit() for p in base.iterdir()), f"step {kill_at}: leftovers {list(base.iterdir())}"
        assert int(_numeric(base)[-1].name) > old


_KILLED_AT_SECOND_RENAME = textwrap.dedent("""
    import os, signal, sys
    from pathlib import Path
    from export import cli
    def hook(event, args):
        if event == "os.rename" and Path(os.fspath(args[1])).parent.name == "similar_movies" \\
                and Path(os.fspath(args[1])).name.isdigit():
            sys.stdout.flush()
            os.kill(os.getpid(), signal.SIGKILL)
    sys.addaudithook(hook)
    sys.exit(cli.main(sys.argv[1:]))
""")


@pytest.mark.slow
def test_an_export_killed_between_the_two_renames_leaves_two_complete_models_that_serve(tmp_path, quick_export):
    """The two models are published one after the other (two model base paths: no rename covers both). Killed
    right after ``retrieval``'s rename, the store holds a new ``retrieval`` beside the previous
    ``similar_movies``: each is a complete, self-contained version, and a server loads and answers both; the
    next export publishes both anew."""
    import requests

    from serving.testing import ServerProcess

    root = tmp_path / "models"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    args = _export_command(quick_export, root)
    first = subprocess.run(args, cwd=str(ROOT), env=env, capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr[-3000:]
    old = {m: _numeric(root / m)[-1].name for m in ("retrieval", "similar_movies")}

    # The same CLI, killed by an audit hook at the instant it would rename similar_movies' staged version.
    killed = subprocess.run(
        [sys.executable, "-c", _KILLED_AT_SECOND_RENAME, *args[3:]],
        cwd=str(ROOT),
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    assert "retrieval: published version" in killed.stdout
    new = _numeric(root / "retrieval")[-1].name
    assert int(new) > int(old["retrieval"])
    assert _numeric(root / "similar_movies")[-1].name == old["similar_movies"]

    config = tmp_path / "models.config"
    config.write_text(
        "model_config_list {\n"
        + "".join(
            f'  config {{ name: "{m}" base_path: "{root / m}" model_platform: "tensorflow" }}\n'
            for m in ("retrieval", "similar_movies")
        )
        + "}\n"
    )
    with ServerProcess(f"--model_config_file={config}", rest=True) as server:
        base = f"http://127.0.0.1:{server.rest_port}/v1/models"
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            states = {m: requests.get(f"{base}/{m}", timeout=10).json() for m in ("retrieval", "similar_movies")}
            if all(s.get("model_version_status", [{}])[0].get("state") == "AVAILABLE" for s in states.values()):
                break
            time.sleep(0.5)
        assert states["retrieval"]["model_version_status"][0]["version"] == new
        assert states["similar_movies"]["model_version_status"][0]["version"] == old["similar_movies"]
        for model, inputs in (("retrieval", {"user_id": ["1"]}), ("similar_movies", None)):
            if inputs is None:
                title = requests.post(
                    f"{base}/retrieval:predict", json={"inputs": {"user_id": ["1"]}}, timeout=30
                ).json()["outputs"]["movie_titles"][0][0]
                inputs = {"movie_title": [title]}
            answer = requests.post(f"{base}/{model}:predict", json={"inputs": inputs}, timeout=30)
            assert answer.status_code == 200 and len(answer.json()["outputs"]["movie_titles"][0]) == 10

    done = subprocess.run(args, cwd=str(ROOT), env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert int(_numeric(root / "similar_movies")[-1].name) > int(old["similar_movies"])
    assert int(_numeric(root / "retrieval")[-1].name) > int(new)
