"""Runners (TFX InfraValidator's model server runner): the answers of the in-memory module, and of the staged
SavedModel loaded in a fresh Python process by serving.bundle (export/validate_child.py), as TF Serving loads it.

An answer is ``{output name: numpy array}`` with the outputs of ``OUTPUTS`` the signature has.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from export.validation import ValidationError
from export.validation.requests import Request

logger = logging.getLogger(__name__)

_ROOT = Path(__file__).resolve().parents[2]
# The outputs an answer holds (docs/contract.md), with their dtypes: those of the child's JSON restored.
OUTPUTS = {"movie_titles": object, "scores": np.float32, "movie_ids": object, "fallback": bool, "unmatched": np.int64}
RANKED = ("movie_titles", "scores")  # every signature's
FLAGS = ("fallback", "unmatched")  # per-row outputs beside the ranked ones


def in_memory(module, requests: list[Request]) -> list[dict]:
    """The in-memory module's answers (titles, scores and the flags its signature has)."""
    import tensorflow as tf

    signatures = module.signatures()
    answers = []
    for request in requests:
        inputs = {k: tf.constant(np.array(v, dtype=object).astype(str)) for k, v in request.inputs.items()}
        out = signatures[request.signature_name](**inputs)
        answers.append(
            {
                "movie_titles": np.vectorize(lambda b: b.decode("utf-8"), otypes=[object])(out["movie_titles"].numpy()),
                "scores": out["scores"].numpy(),
                **{flag: out[flag].numpy() for flag in FLAGS if flag in out},
            }
        )
    return answers


def in_fresh_process(saved_model: Path, requests: list[Request], timeout_s: float) -> list[dict]:
    """Answers of the staged SavedModel loaded by serving.bundle in a fresh Python process; ValidationError when
    it cannot load or answer within ``timeout_s``."""
    with tempfile.TemporaryDirectory(prefix="export-validate-") as tmp:
        req_path, out_path = Path(tmp) / "requests.json", Path(tmp) / "answers.json"
        req_path.write_text(json.dumps([r.wire() for r in requests]), encoding="utf-8")
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([str(_ROOT)] + [p for p in [env.get("PYTHONPATH")] if p])
        env["EXPORT_VALIDATE_PARENT_PID"] = str(os.getpid())  # the child exits if this process dies
        # Absolute: the child runs in the package root, not in the caller's working directory.
        cmd = [
            sys.executable,
            "-m",
            "export.validate_child",
            str(Path(saved_model).resolve()),
            str(req_path),
            str(out_path),
        ]
        try:
            proc = subprocess.run(cmd, cwd=str(_ROOT), env=env, capture_output=True, text=True, timeout=timeout_s)
        except subprocess.TimeoutExpired as exc:
            _dump(exc.stderr)
            raise ValidationError(f"loading {saved_model.name} in a fresh process took over {timeout_s:.0f} s") from exc
        if proc.returncode != 0:
            _dump(proc.stderr)
            last = [line for line in (proc.stderr or "").strip().splitlines() if line.strip()]
            raise ValidationError(
                f"the staged SavedModel failed to load or answer in a fresh process: "
                f"{last[-1] if last else 'exit code ' + str(proc.returncode)}"
            )
        raw = json.loads(out_path.read_text(encoding="utf-8"))
    return [
        {name: np.array(a[name], dtype=dtype) for name, dtype in OUTPUTS.items() if name in a or name in RANKED}
        for a in raw
    ]


def _dump(stderr) -> None:
    if stderr:
        text = stderr if isinstance(stderr, str) else stderr.decode("utf-8", "replace")
        logger.error("validation subprocess stderr:\n%s", text[-20000:])
