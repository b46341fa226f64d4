"""Child side of the pre-publish validation: load a staged SavedModel the way TF Serving does and answer
requests read from a JSON file (``python -m export.validate_child SAVED_MODEL REQUESTS.json OUT.json``).

Loading and calling go through ``serving.bundle.SavedModelBundle`` (tag ``serve``, warmup replayed,
signatures called by their tensor names): the one implementation of "load like TF Serving".

REQUESTS.json: ``[{"signature_name": ..., "inputs": {name: nested list of str}}, ...]`` (``Request.wire()`` of
export/validation/requests.py). OUT.json: ``[{name: nested list (str or float)}, ...]`` in the same order; the
parent, export/validation/runners.py's ``in_fresh_process``, restores each output's dtype (its ``OUTPUTS``).

The parent passes its pid in ``EXPORT_VALIDATE_PARENT_PID``: on Linux the child is killed as soon as that
process dies (a killed export leaves no child loading a model until its deadline).
"""

from __future__ import annotations

import json
import os
import signal
import sys

import numpy as np

from export import environment


def _to_array(value) -> np.ndarray:
    array = np.array(value, dtype=object)
    return np.vectorize(lambda s: s.encode("utf-8"), otypes=[object])(array) if array.size else array


def _to_json(array: np.ndarray):
    if array.dtype == object:
        return (
            np.vectorize(lambda b: b.decode("utf-8", "replace") if isinstance(b, bytes) else str(b), otypes=[object])(
                array
            ).tolist()
            if array.size
            else array.tolist()
        )
    return array.astype(float).tolist()


def exit_with_parent(parent_pid: int) -> None:
    """Have the kernel kill this process when ``parent_pid`` (its parent) dies: Linux's ``PR_SET_PDEATHSIG``,
    which works even while the main thread is stuck in TensorFlow holding the GIL. Elsewhere a no-op."""
    try:
        import ctypes

        if ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL, 0, 0, 0) != 0:  # PR_SET_PDEATHSIG = 1
            return
    except (OSError, AttributeError):  # not Linux
        return
    if os.getppid() != parent_pid:  # it died before the kernel was watching
        os._exit(1)


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print("usage: python -m export.validate_child SAVED_MODEL REQUESTS.json OUT.json", file=sys.stderr)
        return 2
    saved_model, requests_path, out_path = argv
    environment.configure()  # before serving.bundle imports TensorFlow
    if os.environ.get("EXPORT_VALIDATE_PARENT_PID"):
        exit_with_parent(int(os.environ["EXPORT_VALIDATE_PARENT_PID"]))
    from serving.bundle import SavedModelBundle

    with open(requests_path, encoding="utf-8") as f:
        requests = json.load(f)
    bundle = SavedModelBundle.load(saved_model, tags=("serve",), run_warmup=True)
    try:
        answers = []
        for request in requests:
            inputs = {name: _to_array(value) for name, value in request["inputs"].items()}
            outputs = bundle.run(request["signature_name"], inputs)
            answers.append({name: _to_json(np.asarray(value)) for name, value in outputs.items()})
    finally:
        bundle.close()
    with open(out_path, "w", encoding="utf-8") as f:
        json.dump(answers, f)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
