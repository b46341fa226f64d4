#!/usr/bin/env bash
# The first step of serving/Dockerfile's build stage: is the TF Serving source in the devel image the release
# the image is meant to build? tensorflow/serving:<version>-devel is built by TF Serving's Dockerfile.devel,
# whose TF_SERVING_VERSION_GIT_COMMIT defaults to HEAD, so the tag alone does not prove what the tree in
# /tensorflow-serving is. Two facts of the tree are compared with the build args that name them:
#   * tensorflow_serving/model_servers/version.h: MAJOR.MINOR.PATCH and SUFFIX == TF_SERVING_VERSION
#     (a tree from master says 0.0.0);
#   * WORKSPACE: the git_commit of org_tensorflow (the TensorFlow it builds) == TENSORFLOW_GIT_COMMIT.
# Seconds, against hours of Bazel on the wrong source. Exit 1 with one line on stderr on a mismatch.
#
# Usage: check_serving_tree.sh SERVING_TREE TF_SERVING_VERSION TENSORFLOW_GIT_COMMIT
set -euo pipefail

fail() {
    echo "check_serving_tree: $*" >&2
    exit 1
}

if [ "$#" -ne 3 ]; then
    echo "usage: check_serving_tree.sh SERVING_TREE TF_SERVING_VERSION TENSORFLOW_GIT_COMMIT" >&2
    exit 2
fi
tree=$1
version=$2
tensorflow_commit=$3

version_h=$tree/tensorflow_serving/model_servers/version.h
workspace=$tree/WORKSPACE
[ -f "$version_h" ] || fail "no $version_h: $tree is not TF Serving's source tree"
[ -f "$workspace" ] || fail "no $workspace: TF Serving's layout changed (bzlmod only?)"

define() { # the value of '#define TF_MODELSERVER_<name> <value>' in version.h, quotes removed
    sed -n "s/^#define TF_MODELSERVER_$1[[:space:]]\{1,\}\(.*\)$/\1/p" "$version_h" | head -n 1 | tr -d '"[:space:]'
}
found="$(define MAJOR_VERSION).$(define MINOR_VERSION).$(define PATCH_VERSION)$(define VERSION_SUFFIX)"
if [ "$found" != "$version" ]; then
    fail "the devel image holds TF Serving $found (per $version_h), not TF_SERVING_VERSION=$version;" \
        "its tag does not match its source (Dockerfile.devel builds HEAD unless given" \
        "TF_SERVING_VERSION_GIT_COMMIT): use a devel image built from the $version tag"
fi

# The org_tensorflow rule of the WORKSPACE, from its name = line to the ")" that closes it.
pinned=$(sed -n '/^[[:space:]]*name = "org_tensorflow",/,/^)/ s/^[[:space:]]*git_commit = "\([0-9a-f]*\)",.*$/\1/p' "$workspace")
if [ "$pinned" != "$tensorflow_commit" ]; then
    fail "$workspace builds TensorFlow at ${pinned:-no git_commit found}, not TENSORFLOW_GIT_COMMIT=$tensorflow_commit" \
        "(the TensorFlow commit TF Serving $version pins): set the build arg to the commit its release pins"
fi
echo "check_serving_tree: TF Serving $found, building TensorFlow $pinned"
