"""The stock variant's promise: a BruteForce export needs no op that stock tensorflow/serving lacks.

Stock TF Serving registers TensorFlow's C++ ops (plus TF-Text's and TF-DF's), never ScaNN's, and cannot run
Python-function ops. Each SavedModel's op types (graph and function library) are checked in a fresh
interpreter that imports TensorFlow but not ScaNN, so only TensorFlow's own op registry answers. The ScaNN
store is the control: the same check must find its Scann ops.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

OPS_OF_SAVED_MODEL = r"""
import json, sys
from tensorflow.core.protobuf import saved_model_pb2
from tensorflow.python.framework import op_def_registry
import tensorflow  # registers TensorFlow's own ops, and nothing of ScaNN
assert "scann" not in sys.modules
reports = {}
for path in sys.argv[1:]:
    model = saved_model_pb2.SavedModel()
    model.ParseFromString(open(path, "rb").read())
    ops = set()
    for graph in (mg.graph_def for mg in model.meta_graphs):
        ops.update(node.op for node in graph.node)
        for function in graph.library.function:
            ops.update(node.op for node in function.node_def)
    function_names = {f.signature.name for mg in model.meta_graphs for f in mg.graph_def.library.function}
    ops -= function_names  # calls to library functions appear as ops named after the function
    reports[path] = {"ops": sorted(ops), "unregistered": sorted(o for o in ops if op_def_registry.get(o) is None)}
print(json.dumps(reports))
"""
PYTHON_ONLY_OPS = {"PyFunc", "PyFuncStateless", "EagerPyFunc"}


def op_reports(saved_model_pbs) -> dict:
    """{saved_model.pb path: {"ops": [...], "unregistered": [...]}} from one fresh interpreter."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    result = subprocess.run(
        [sys.executable, "-c", OPS_OF_SAVED_MODEL, *map(str, saved_model_pbs)],
        capture_output=True,
        text=True,
        timeout=180,
        env=env,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return {Path(k): v for k, v in json.loads(result.stdout.strip().splitlines()[-1]).items()}


def saved_models(store: Path) -> list:
    return sorted(store.glob("*/[0-9]*/saved_model.pb"))


def test_brute_force_exports_use_only_ops_stock_tf_serving_has(brute_force_store):
    models = saved_models(Path(brute_force_store))
    assert {p.parts[-3] for p in models} == {"retrieval", "similar_movies"}
    for saved_model_pb, report in op_reports(models).items():
        assert report["ops"], saved_model_pb
        assert report["unregistered"] == [], f"{saved_model_pb}: ops stock TF Serving lacks: {report['unregistered']}"
        assert not PYTHON_ONLY_OPS & set(report["ops"])


def test_scann_exports_need_the_scann_ops_that_only_the_custom_build_has(model_store):
    models = saved_models(Path(model_store))
    assert len(models) == 2
    for saved_model_pb, report in op_reports(models).items():
        assert any(op.startswith("Scann>") for op in report["unregistered"]), (saved_model_pb, report["unregistered"])
