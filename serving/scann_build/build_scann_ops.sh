#!/usr/bin/env bash
# serving/Dockerfile's early Bazel step: compile ScaNN's op library before tensorflow_model_server, so that
# a label, toolchain or compiler problem in ScaNN shows within minutes rather than after hours of building
# TensorFlow.
#
# TARGET (scann_ops_static, added by adapt_scann.py) has no sources: `bazel build TARGET` alone would only
# analyse it. So the ScaNN C++ libraries under it are listed with cquery, in the configuration of the build
# (the same options, select()s resolved the same way), and built with it: each library's own sources are
# compiled (with the TensorFlow, Abseil, Eigen and Highway headers they include), TensorFlow itself is not.
# Run with the options of the model-server build, whose later `bazel build` then reuses these actions
# (Bazel's output base is in this layer).
#
# Usage (in TF Serving's workspace, after adapt_scann.py and WORKSPACE.scann):
#   build_scann_ops.sh TARGET [BAZEL_OPTION...]
set -euo pipefail

fail() {
    echo "build_scann_ops: $*" >&2
    exit 1
}

if [ "$#" -lt 1 ]; then
    echo "usage: build_scann_ops.sh TARGET [BAZEL_OPTION...]" >&2
    exit 2
fi
target=$1
shift
repository=${target%%//*}
repository=${repository#@}
[[ $target == @*//*:* ]] || fail "$target is not a label of an external repository (@repo//package:name)"

if ! found=$(bazel cquery "$@" "kind(\"cc_library rule\", deps(${target}))" \
    --output=starlark --starlark:expr='str(target.label)'); then
    fail "bazel cannot analyse ${target} (see above): a label, repository or toolchain problem"
fi
mapfile -t libraries < <(printf '%s\n' "$found" | grep -E "^@@?${repository}//" | sort -u)
if [ "${#libraries[@]}" -eq 0 ]; then
    fail "cquery found no cc_library of @${repository} under ${target}"
fi
echo "build_scann_ops: ${#libraries[@]} libraries of @${repository} under ${target}"
if ! bazel build "$@" "$target" "${libraries[@]}"; then
    fail "ScaNN's op library does not build in TF Serving's workspace (see above)"
fi
echo "build_scann_ops: ${target} built"
