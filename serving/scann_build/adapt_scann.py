"""Make ScaNN's Bazel packages buildable as an external repository of TensorFlow Serving.

serving/Dockerfile runs this inside tensorflow/serving:<version>-devel, following google-research's
scann/tf_serving recipe (its patches/scann/tf_serving.patch), brought up to ScaNN 1.4.x:

1. ScaNN links against the *installed* TensorFlow pip package through ``@local_config_tf`` (a repository
   rule of its own MODULE.bazel, absent from TF Serving's WORKSPACE). Inside TF Serving the ops must link
   against the TensorFlow that TF Serving builds from source, so those labels are rewritten to
   ``@org_tensorflow`` targets, as TF Serving's custom-op guide does (``tensorflow/core:framework``).
2. pybind11 rules (the Python bindings, useless in a C++ server) are dropped with their ``load``.
3. ``scann_ops_static``, an ``alwayslink`` library of the op definitions and kernels, is added next to
   ``_scann_ops.so`` so that the ops register themselves when linked into tensorflow_model_server.

Usage: python3 adapt_scann.py SCANN_WORKSPACE_DIR   (the folder holding MODULE.bazel and scann/)
Prints the external repositories the adapted BUILD files still reference; fails loudly if a step finds
nothing to change, so that a ScaNN layout change breaks the image build here, not at link time.
"""

import re
import sys
from pathlib import Path

LABEL_REWRITES = {
    "@local_config_tf//:libtensorflow_framework": "@org_tensorflow//tensorflow/core:framework",
    "@local_config_tf//:tf_header_lib": "@org_tensorflow//tensorflow/core:lib",
}
STATIC_OPS_RULE = '''
# Added by serving/scann_build/adapt_scann.py: the ops and kernels, linked statically into
# tensorflow_model_server (added to SUPPORTED_TENSORFLOW_OPS in tensorflow_serving/model_servers/BUILD).
cc_library(
    name = "scann_ops_static",
    alwayslink = 1,
    deps = [
        ":scann_ops",
        ":scann_ops_kernels",
    ],
)
'''


def drop_calls(text: str, function: str) -> str:
    """Remove every top-level ``function(...)`` call (balanced parentheses) from a BUILD file."""
    out, pos = [], 0
    for match in re.finditer(rf"^{re.escape(function)}\(", text, flags=re.M):
        if match.start() < pos:
            continue
        depth, i = 0, match.end() - 1
        while i < len(text):
            depth += {"(": 1, ")": -1}.get(text[i], 0)
            i += 1
            if depth == 0:
                break
        out.append(text[pos:match.start()])
        pos = i
    out.append(text[pos:])
    return "".join(out)


def adapt(root: Path) -> set:
    build_files = sorted(p for p in (root / "scann").rglob("*") if p.name in ("BUILD", "BUILD.bazel"))
    if not build_files:
        sys.exit(f"adapt_scann: no BUILD files under {root / 'scann'}; is this ScaNN's workspace folder?")
    rewritten = 0
    for path in build_files:
        text = original = path.read_text()
        for old, new in LABEL_REWRITES.items():
            text = text.replace(f'"{old}"', f'"{new}"')
        text = re.sub(r'^load\("@pybind11_bazel//[^\n]*\n', "", text, flags=re.M)
        for rule in ("pybind_library", "pybind_extension"):
            text = drop_calls(text, rule)
        if text != original:
            path.write_text(text)
            rewritten += 1
    if rewritten == 0:
        sys.exit("adapt_scann: no @local_config_tf or pybind11 reference found; ScaNN's layout changed")

    ops_build = root / "scann" / "scann_ops" / "cc" / "BUILD.bazel"
    text = ops_build.read_text()
    for target in ("scann_ops", "scann_ops_kernels"):
        if f'name = "{target}"' not in text:
            sys.exit(f"adapt_scann: {ops_build} has no {target} target; ScaNN's layout changed")
    if 'name = "scann_ops_static"' not in text:
        ops_build.write_text(text + STATIC_OPS_RULE)

    # local_repository() wants a workspace marker file at the repository root.
    (root / "WORKSPACE").touch()

    externals = set()
    for path in build_files:
        externals.update(re.findall(r'"@([A-Za-z0-9_.\-]+)//', path.read_text()))
    leftover = {name for name in externals if name == "local_config_tf" or name.startswith("pybind11")}
    if leftover:
        sys.exit(f"adapt_scann: still referenced after adapting: {sorted(leftover)}")
    return externals


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    names = adapt(Path(sys.argv[1]))
    print("adapt_scann: ScaNN BUILD files now reference:", " ".join(sorted(names)))
