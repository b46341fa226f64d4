"""``assets.extra/manifest.json``: what made a version (docs/contract.md lists the fields)."""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
from importlib import metadata
from pathlib import Path

MANIFEST_FILE = "manifest.json"
_LIBRARIES = ("tensorflow", "tf-keras", "tensorflow-recommenders", "scann", "tensorflow-serving-api")


def library_versions() -> dict:
    out: dict[str, str | None] = {}
    for name in _LIBRARIES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def build(
    *,
    model_name: str,
    version: int | None,
    source: dict,
    counts: dict,
    split: str,
    train_config,
    training: dict,
    metrics: dict,
    index: dict,
    recall_at_10: float | None,
    k: int,
) -> dict:
    return {
        "model_name": model_name,
        "version": version,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "data": {"source": source, "counts": counts, "split": split},
        "training": {"parameters": dataclasses.asdict(train_config), **training},
        "metrics": metrics,
        "index": {**index, "recall_at_10": recall_at_10},
        "k": k,
        "libraries": library_versions(),
    }


def write(saved_model_dir: Path, manifest: dict) -> Path:
    extra = Path(saved_model_dir) / "assets.extra"
    extra.mkdir(parents=True, exist_ok=True)
    path = extra / MANIFEST_FILE
    path.write_text(json.dumps(manifest, indent=2, sort_keys=False, default=str) + "\n", encoding="utf-8")
    return path


def read(saved_model_dir: Path) -> dict:
    return json.loads((Path(saved_model_dir) / "assets.extra" / MANIFEST_FILE).read_text(encoding="utf-8"))
