"""check_against_data: what the loaded data makes impossible is refused before any training, in one line."""

from __future__ import annotations

import dataclasses
import shutil
from collections import namedtuple

import pytest

from export.config import ConfigError, ExportConfig, IndexConfig, preset
from export.data import check_against_data, load, preflight


def _data(tmp_path, titles: int):
    """Your own interactions over ``titles`` items (no catalogue: each id is its title)."""
    lines = ["user_id,item_id"] + [f"u{u},i{i}" for u in range(4) for i in range(titles)]
    (tmp_path / "events.csv").write_text("\n".join(lines) + "\n")
    return load(str(tmp_path / "events.csv"))


def _config(tmp_path, **index) -> ExportConfig:
    return ExportConfig(
        data="events.csv", train=preset("seed"), index=IndexConfig(**index), model_base_path=tmp_path / "models"
    )


def _refusal(config, data) -> str:
    with pytest.raises(ConfigError) as error:
        check_against_data(config, data)
    message = str(error.value)
    assert "\n" not in message
    return message


def test_a_fitting_export_passes(tmp_path):
    check_against_data(_config(tmp_path, k=10), _data(tmp_path, 40))  # the store's folder need not exist yet


def test_k_above_the_titles_minus_one_is_refused_naming_the_largest_k(tmp_path):
    data = _data(tmp_path, 40)
    message = _refusal(_config(tmp_path, k=100000), data)
    assert message.startswith("--k 100000 needs a catalogue of more than 100000 titles, and the data has 40")
    assert message.endswith("use --k 39 or less")
    assert _refusal(_config(tmp_path, k=40), data).startswith(
        "--k 40 needs"
    )  # K = titles: similar_movies never answers the query
    check_against_data(_config(tmp_path, k=39), data)


@pytest.mark.parametrize("titles", [3, 15])
def test_a_catalogue_too_small_for_scann_is_refused_suggesting_brute_force(tmp_path, titles):
    data = _data(tmp_path, titles)
    message = _refusal(_config(tmp_path, k=2), data)
    assert message == (
        f"the catalogue has {titles} title(s), fewer than the 16 a ScaNN index needs (its asymmetric hashing "
        "trains 16 centres); use --index brute_force"
    )
    check_against_data(_config(tmp_path, k=2, kind="brute_force"), data)
    check_against_data(_config(tmp_path, k=2, kind="auto"), data)  # auto is BruteForce this small
    check_against_data(_config(tmp_path, k=2), _data(tmp_path, 16))


def test_too_small_for_scann_and_for_k_says_both_fixes(tmp_path):
    assert _refusal(_config(tmp_path, k=10), _data(tmp_path, 3)).endswith("use --index brute_force and --k 2 or less")


def test_too_little_free_space_is_refused_with_the_figures(tmp_path, monkeypatch):
    data = _data(tmp_path, 40)
    config = _config(tmp_path, k=10)
    needed = preflight.expected_bytes(config, data)
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10 * needed, 9 * needed, needed - 1))
    message = _refusal(config, data)
    assert f"free under {tmp_path}" in message  # the nearest existing folder of --model-base-path
    assert message.endswith("free some space or pass --model-base-path on a larger disk")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10 * needed, 9 * needed, needed))
    check_against_data(config, data)
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10 * needed, 10 * needed, 0))
    check_against_data(config, data, disk=False)  # a helper worker: it never writes the store


def test_the_size_estimate_grows_with_the_catalogue_and_the_models(tmp_path):
    config = _config(tmp_path)
    small = _data(tmp_path, 20)
    large = _data(tmp_path, 400)
    assert preflight.expected_bytes(config, large) > preflight.expected_bytes(config, small)
    one = dataclasses.replace(config, models=("retrieval",))
    assert preflight.expected_bytes(one, large) < preflight.expected_bytes(config, large)
