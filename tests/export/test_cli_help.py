"""``--help`` shows every flag's choices and default; ``--version`` works for export, serving and client."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest

from export.cli import parser

ROOT = Path(__file__).resolve().parents[2]


def _flags() -> list[argparse.Action]:
    return [a for a in parser()._actions if a.option_strings and a.dest not in ("help", "version")]


def test_help_shows_a_default_for_every_flag():
    formatter = parser()._get_formatter()
    for action in _flags():
        shown = formatter._expand_help(action)  # what --help prints for the flag, "%(default)s" filled in
        assert "default" in shown, f"{action.option_strings[0]}: {shown!r}"
    text = parser().format_help()
    assert "(default: tfds)" in text and "(default: 10)" in text


def test_help_shows_the_choices_of_every_flag_that_has_them():
    text = " ".join(parser().format_help().split())
    for flag, choices in {
        "--preset": "{seed,default}",
        "--index": "{scann,brute_force,auto}",
        "--split": "{random,time}",
        "--synthetic-size": "{tiny,movielens,latest-small}",
        "--user-tower": "{id,history,id+history}",
    }.items():
        assert f"{flag} {choices}" in text, flag
    assert "of retrieval, similar_movies" in text  # --models is a list: its names are in its help


def test_preset_defaults_in_help_are_the_presets_values():
    from export.config import PRESETS

    text = " ".join(parser().format_help().split())
    assert f"seed {PRESETS['seed'].epochs}, default {PRESETS['default'].epochs}" in text
    assert "(default: the preset's: seed off, default on)" in text  # --log-q


@pytest.mark.parametrize(
    "module, expected",
    [
        ("export", "python -m export {v}"),
        ("serving", "TensorFlow ModelServer: local stand-in (serving/ of retrieval-serving-bundle {v})"),
    ],
)
def test_version_prints_the_installed_distribution_s_version(module, expected):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, "-m", module, "--version"], capture_output=True, text=True, env=env, cwd=ROOT, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[0] == expected.format(v=version("retrieval-serving-bundle"))


def test_version_without_an_installed_distribution_says_so(monkeypatch):
    import importlib.metadata

    from export import cli

    def missing(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "version", missing)
    assert cli.version().startswith("unknown (not installed")
