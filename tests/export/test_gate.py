"""export/gate.py: the gate before publish decides on real figures, keeps a refused version aside with its verdict,
and ``python -m export`` refuses in one line with its own exit code (the CLI tests at the end run the real export
on tiny synthetic data)."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from export import cli, gate, manifest, publish

# The test figures of two real exports on tiny synthetic data (800 test ratings, seen excluded): the default
# preset (EASE's factors for exclude_seen) and the seed preset for one epoch, against popularity.
POPULARITY = {"top_10": 0.3212, "top_100": 0.9975}
POPULARITY_CI = {"top_10": 0.0324, "top_100": 0.0035}

# The synthetic 100K's figures (docs/benchmarks.md): 0.228 / 0.615 against 0.145 / 0.419, on 20,000 test ratings
BIG = {
    "model_exclude_seen": {"top_10": 0.228, "top_100": 0.615},
    "popularity_exclude_seen": {"top_10": 0.145, "top_100": 0.419},
    "ci95": {
        "model_exclude_seen": {"top_10": 0.0058, "top_100": 0.0067},
        "popularity_exclude_seen": {"top_10": 0.0049, "top_100": 0.0068},
    },
}


def metrics(model: dict, model_ci: dict) -> dict:
    return {
        "model_exclude_seen": model,
        "popularity_exclude_seen": POPULARITY,
        "ci95": {"model_exclude_seen": model_ci, "popularity_exclude_seen": POPULARITY_CI},
    }


def hits(rate: float, n: int = 800, seed: int = 0) -> np.ndarray:
    """0/1 per rating with exactly ``rate`` of them 1, in a seeded order."""
    out = np.zeros(n, dtype=np.int8)
    out[: round(rate * n)] = 1
    return np.random.default_rng(seed).permutation(out)


# ---------------------------------------------------------------- (a) against popularity


def test_a_model_beats_popularity_only_when_both_differences_clear_their_interval():
    verdict = gate.against_popularity(BIG)
    assert verdict["passed"] is True
    assert verdict["columns"]["top_10"] == {
        "model": 0.228,
        "popularity": 0.145,
        "difference": 0.083,
        "ci95": round(float(np.hypot(0.0058, 0.0049)), 6),
    }


def test_a_tie_within_the_interval_and_a_worse_model_do_not_beat_popularity():
    # default preset on tiny data: 0.365 vs 0.3212 at top-10 is +0.0438, inside sqrt(0.0334² + 0.0324²) = 0.0465
    tie = gate.against_popularity(metrics({"top_10": 0.365, "top_100": 1.0}, {"top_10": 0.0334, "top_100": 0.0}))
    assert tie["passed"] is False
    assert tie["columns"]["top_10"]["difference"] == pytest.approx(0.0438)
    assert tie["columns"]["top_10"]["ci95"] == pytest.approx(0.0465, abs=1e-4)
    # seed preset, one epoch: far below at top-10
    worse = gate.against_popularity(
        metrics({"top_10": 0.0975, "top_100": 0.9975}, {"top_10": 0.0206, "top_100": 0.0035})
    )
    assert worse["passed"] is False and worse["columns"]["top_10"]["difference"] == pytest.approx(-0.2237)
    # above at top-10 by more than the interval, but not at top-100: both are needed
    half = gate.against_popularity(metrics({"top_10": 0.45, "top_100": 0.9975}, {"top_10": 0.0345, "top_100": 0.0035}))
    assert half["passed"] is False and half["columns"]["top_10"]["difference"] > half["columns"]["top_10"]["ci95"]


# ---------------------------------------------------------------- (b) against the served version


def test_the_same_answers_are_not_worse_and_a_clear_drop_is():
    served = {"top_10": hits(0.3375), "top_100": hits(0.99)}
    same = gate.not_worse(served, served, None)
    assert same["passed"] is True and same["columns"]["top_10"]["difference"] == 0.0
    assert same["columns"]["top_10"]["ci95"] == 0.0
    # the seed preset's staged version against the served default one, on the same 800 ratings
    dropped = gate.not_worse({"top_10": hits(0.0825, seed=1), "top_100": hits(0.99)}, served, None)
    assert dropped["passed"] is False
    column = dropped["columns"]["top_10"]
    assert (column["new"], column["served"], column["difference"]) == (0.0825, 0.3375, -0.255)
    assert column["tolerance"] == column["ci95"] and 0.02 < column["ci95"] < 0.06


def test_a_drop_within_the_interval_passes_unless_the_tolerance_is_tighter():
    served = hits(0.3375)
    new = served.copy()
    new[np.flatnonzero(served)[:10]] = 0  # 10 of 800 ratings lost, 6 gained: -0.005
    new[np.flatnonzero(served == 0)[:6]] = 1
    verdict = gate.not_worse({"top_10": new}, {"top_10": served}, None)["columns"]["top_10"]
    assert verdict["difference"] == -0.005
    assert verdict["ci95"] == pytest.approx(1.96 * np.std(new - served) / np.sqrt(800), abs=1e-6)  # 0.0098
    assert gate.not_worse({"top_10": new}, {"top_10": served}, None)["passed"] is True
    assert gate.not_worse({"top_10": new}, {"top_10": served}, 0.004)["passed"] is False
    assert gate.not_worse({"top_10": new}, {"top_10": served}, 0.005)["passed"] is True
    # only losses: 10 of 800 is outside the interval (0.0069)
    lost = served.copy()
    lost[np.flatnonzero(served)[:10]] = 0
    assert gate.not_worse({"top_10": lost}, {"top_10": served}, None)["passed"] is False
    better = gate.not_worse({"top_10": served}, {"top_10": new}, 0.0)
    assert better["passed"] is True and better["columns"]["top_10"]["difference"] == 0.005


def test_test_rows_exclude_the_training_titles_but_the_tested_ones_and_skip_unranked_titles():
    seen = {"u1": ["A", "B", "C"], "u2": ["A"], "u3": ["D"]}
    rows = gate.TestRows.of(
        np.array(["u1", "u1", "u2", "u9", "u3"], dtype=object),
        np.array(["D", "B", "Z", "A", "E"], dtype=object),  # Z: a title the new version does not rank
        seen,
        np.array(["A", "B", "C", "D", "E"], dtype=object),
    )
    assert rows.users == ["u1", "u3", "u9"]  # u2's only test title is unranked; u9 has no training titles
    assert rows.exclusions == [["A", "C"], ["D"], []]  # u1's tested B is not excluded
    assert rows.targets == ["D", "B", "A", "E"] and rows.rows.tolist() == [0, 0, 2, 1]
    [request] = rows.requests()
    assert request.signature_name == "exclude_seen" and request.inputs == {
        "user_id": ["u1", "u3", "u9"],
        "exclude_titles": [["A", "C"], ["D", ""], ["", ""]],
    }
    assert [r.inputs["user_id"] for r in rows.requests(batch=2)] == [["u1", "u3"], ["u9"]]
    answers = [{"movie_titles": [["D", "E", "B"], ["B", "A", "E"], ["B", "C", "E"]]}]
    assert {c: h.tolist() for c, h in rows.hits(answers, [1, 3]).items()} == {
        "top_1": [1, 0, 0, 0],
        "top_3": [1, 1, 0, 1],  # u9's A was not answered: a miss (an unknown user gets the popularity list)
    }


def test_test_rows_sample_users_with_a_seed():
    users = np.array([f"u{i}" for i in range(50) for _ in range(2)], dtype=object)
    titles = np.array(["A", "B"] * 50, dtype=object)
    rows = gate.TestRows.of(users, titles, {}, np.array(["A", "B"], dtype=object), max_users=10)
    again = gate.TestRows.of(users, titles, {}, np.array(["A", "B"], dtype=object), max_users=10)
    assert len(rows.users) == 10 and rows.users == again.users and len(rows.targets) == 20


def test_cutoffs_are_top_10_and_top_100_within_k():
    assert gate.cutoffs(10) == [10] and gate.cutoffs(140) == [10, 100] and gate.cutoffs(5) == [5]


# ---------------------------------------------------------------- the decision on a store


def _staged(root: Path, models=("retrieval", "similar_movies")) -> tuple[dict, dict, dict]:
    bases = {name: root / name for name in models}
    staged = {name: publish.staging_dir(base) for name, base in bases.items()}
    manifests = {name: {"model_name": name, "version": None} for name in models}
    for name, path in staged.items():
        manifest.write(path, manifests[name])
    return bases, staged, manifests


CONFIG = SimpleNamespace(gate=True, gate_tolerance=None, validation_timeout_s=60.0)
TEST = (np.array(["u1"], dtype=object), np.array(["A"], dtype=object))


def _check(config, figures, bases, staged, manifests):
    return gate.check(config, figures, staged, manifests, bases, TEST, {}, np.array(["A"]), report=lambda line: None)


def test_an_empty_store_is_gated_on_popularity_alone(tmp_path, monkeypatch):
    monkeypatch.setattr(gate, "against_served", lambda *a, **k: pytest.fail("nothing is served"))
    bases, staged, manifests = _staged(tmp_path)
    record = _check(CONFIG, BIG, bases, staged, manifests)
    assert record["decision"] == "published" and record["served"] is None
    for name, path in staged.items():  # still staged, to be published; the verdict in each manifest
        assert manifest.read(path)["gate"] == record == manifests[name]["gate"]


def test_a_refused_version_is_kept_aside_with_its_verdict_and_one_line(tmp_path):
    bases, staged, manifests = _staged(tmp_path)
    paths = dict(staged)
    with pytest.raises(gate.Refused) as refused:
        _check(CONFIG, metrics({"top_10": 0.0975, "top_100": 0.9975}, {"top_10": 0.02, "top_100": 0.0035}), bases,
               staged, manifests)  # fmt: skip
    assert staged == {} and refused.value.serving is False  # nothing left to publish; nothing serves
    line = str(refused.value)
    assert "\n" not in line and line.startswith("refused by the gate: it does not beat popularity")
    assert "top-10 0.0975 vs 0.3212" in line and "--no-gate" in line
    for name, base in bases.items():
        assert not paths[name].exists() and publish.versions(base) == []
        [kept] = [p for p in base.iterdir() if p.name.startswith(gate.REFUSED_PREFIX)]
        verdict = manifest.read(kept)["gate"]
        assert verdict["decision"] == "refused" and verdict["popularity"]["passed"] is False
        assert str(kept) in verdict["kept"] and kept.name in line
        publish.clean_stale(base)  # the next run's cleaning leaves it
        assert kept.exists()


def test_a_store_with_a_served_version_compares_with_it_and_says_when_it_keeps_serving(tmp_path, monkeypatch):
    bases, staged, manifests = _staged(tmp_path)
    for base in bases.values():
        (base / "1700000000").mkdir()
    calls = []

    def worse(new, served, rows, tolerance, timeout_s):
        calls.append((new, served, rows.users, tolerance))
        return {
            "passed": False,
            "columns": {"top_10": {"new": 0.08, "served": 0.34, "difference": -0.26, "ci95": 0.04, "tolerance": 0.04}},
            "users": 1,
            "ratings": 1,
        }

    monkeypatch.setattr(gate, "against_served", worse)
    with pytest.raises(gate.Refused) as refused:
        _check(CONFIG, BIG, bases, dict(staged), manifests)
    assert calls == [(staged["retrieval"], bases["retrieval"] / "1700000000", ["u1"], None)]
    assert refused.value.serving is True
    assert "worse than the served version 1700000000" in str(refused.value)
    assert "popularity" not in str(refused.value)  # (a) passed: only what failed is named
    # not worse: published, the comparison recorded; a served version that cannot answer is not compared
    for served, decision in (({"passed": True, "columns": {}, "users": 1, "ratings": 1}, "published"),
                             ({"passed": None, "why": "no answer"}, "published")):  # fmt: skip
        monkeypatch.setattr(gate, "against_served", lambda *a, s=served, **k: s)
        _, again, more = _staged(tmp_path / decision / str(served["passed"]))
        record = _check(CONFIG, BIG, bases, again, more)
        assert record["decision"] == decision and record["served"] == {
            "version": 1700000000,
            **served,
            "seconds": record["served"]["seconds"],
        }


def test_no_gate_publishes_without_judging_but_records_popularity(tmp_path, monkeypatch):
    monkeypatch.setattr(gate, "against_served", lambda *a, **k: pytest.fail("--no-gate judges nothing"))
    bases, staged, manifests = _staged(tmp_path)
    for base in bases.values():
        (base / "1700000000").mkdir()
    config = SimpleNamespace(gate=False, gate_tolerance=None, validation_timeout_s=60.0)
    record = _check(
        config,
        metrics({"top_10": 0.0975, "top_100": 0.9975}, {"top_10": 0.02, "top_100": 0.0035}),
        bases,
        staged,
        manifests,
    )
    assert record["decision"] == "published without the gate (--no-gate)"
    assert record["popularity"]["passed"] is False and len(staged) == 2


def test_only_the_newest_refused_versions_are_kept(tmp_path):
    base = tmp_path / "retrieval"
    for stamp in ("20260101T000000Z-1", "20260102T000000Z-1", "20260103T000000Z-1", "20260104T000000Z-1"):
        (base / f"{gate.REFUSED_PREFIX}{stamp}").mkdir(parents=True)
    (base / "17").mkdir()
    gate._prune_refused(base)
    assert sorted(p.name for p in base.iterdir()) == [
        *(f"{gate.REFUSED_PREFIX}2026010{d}T000000Z-1" for d in (2, 3, 4)),
        "17",
    ]


@pytest.mark.parametrize(
    "flags, serving, code",
    [([], True, 3), (["--on-refusal", "fail"], True, 3), (["--on-refusal", "keep-serving"], True, 0),
     (["--on-refusal", "keep-serving"], False, 3)],
)  # fmt: skip
def test_a_refusal_is_one_line_and_exit_3_or_0_when_asked_and_a_version_serves(
    flags, serving, code, monkeypatch, capsys, tmp_path
):
    from export import pipeline

    def refuse(config, **kwargs):
        raise gate.Refused("refused by the gate: figures; --no-gate publishes it anyway", serving)

    monkeypatch.setattr(pipeline, "run", refuse)
    assert cli.main(["--data", "synthetic", "--model-base-path", str(tmp_path), *flags]) == code
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("export:")]
    assert err == ["export: refused by the gate: figures; --no-gate publishes it anyway"]


def test_gate_flags_reach_the_config():
    config = cli.config_from_args(cli.parser().parse_args(["--data", "synthetic"]))
    assert config.gate is True and config.gate_tolerance is None
    for flags in (["--no-gate"], ["--gate=off"], ["--gate", "off"]):
        assert cli.config_from_args(cli.parser().parse_args(["--data", "synthetic", *flags])).gate is False
    assert cli.config_from_args(cli.parser().parse_args(["--data", "synthetic", "--gate"])).gate is True
    tolerance = cli.parser().parse_args(["--data", "synthetic", "--gate-tolerance", "0.01"])
    assert cli.config_from_args(tolerance).gate_tolerance == 0.01


# ---------------------------------------------------------------- the real export, end to end (slow)


def _versions(root: Path) -> dict:
    return {model: publish.versions(root / model) for model in ("retrieval", "similar_movies")}


def _refusal(proc) -> str:
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    refusals = [line for line in lines if line.startswith("export: refused by the gate: ")]
    assert len(refusals) == 1 and lines[-1] == refusals[0], proc.stderr[-3000:]
    assert "export: error" not in proc.stderr
    return refusals[0]


def _kept(root: Path, model: str) -> dict:
    [kept] = [p for p in (root / model).iterdir() if p.name.startswith(gate.REFUSED_PREFIX)]
    assert (kept / "saved_model.pb").is_file()
    return json.loads((kept / "assets.extra" / "manifest.json").read_text())


@pytest.mark.slow
def test_cli_refuses_a_model_that_does_not_beat_popularity_into_an_empty_store_and_no_gate_publishes_it(
    tmp_path, export_cli, quick_export
):
    root = tmp_path / "models"
    worse = [a for a in quick_export if a != "--no-gate"] + ["--model-base-path", root]
    proc = export_cli([*worse, "--on-refusal", "keep-serving"])  # nothing serves: still a refusal's exit code
    assert proc.returncode == gate.EXIT_REFUSED, proc.stderr[-3000:]
    line = _refusal(proc)
    assert "does not beat popularity" in line and "served version" not in line and "--no-gate" in line
    assert _versions(root) == {"retrieval": [], "similar_movies": []}
    for model in ("retrieval", "similar_movies"):
        verdict = _kept(root, model)["gate"]
        assert verdict["decision"] == "refused" and verdict["served"] is None
        assert verdict["popularity"]["passed"] is False
    proc = export_cli([*worse, "--no-gate"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    published = _versions(root)
    assert all(len(v) == 1 for v in published.values())
    record = manifest.read(root / "retrieval" / str(published["retrieval"][0]))["gate"]
    assert record["decision"] == "published without the gate (--no-gate)"


@pytest.mark.slow
def test_cli_refuses_a_version_worse_than_the_served_one_and_the_store_keeps_the_old_one(
    tmp_path, export_cli, quick_export
):
    root = tmp_path / "models"
    tiny = ["--data", "synthetic", "--synthetic-size", "tiny", "--index", "brute_force", "--model-base-path", root]
    good = export_cli([*tiny, "--epochs", "3", "--tune-budget", "0", "--no-gate"])  # tiny data: no model passes (a)
    assert good.returncode == 0, good.stderr[-3000:]
    served = _versions(root)
    proc = export_cli([*tiny, "--preset", "seed", "--epochs", "1"])
    assert proc.returncode == gate.EXIT_REFUSED, proc.stderr[-3000:]
    line = _refusal(proc)
    assert f"worse than the served version {served['retrieval'][0]} on " in line
    assert _versions(root) == served
    verdict = _kept(root, "retrieval")["gate"]
    assert verdict == _kept(root, "similar_movies")["gate"]
    comparison = verdict["served"]
    assert comparison["version"] == served["retrieval"][0] and comparison["passed"] is False
    assert comparison["ratings"] == 800 and list(comparison["columns"]) == ["top_10"]  # K = 10
    top_10 = comparison["columns"]["top_10"]
    assert top_10["new"] < top_10["served"] and top_10["difference"] < -top_10["tolerance"]
