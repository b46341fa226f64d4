#!/usr/bin/env bash
# ScaNN's source for serving/Dockerfile: the scann/ folder of google-research at one commit, and nothing else.
# google-research/google-research has no ScaNN tags (releases are PyPI uploads) and is huge; instead of
# streaming the archive of the whole repository, fetch that one commit (--depth=1) without file contents
# (--filter=blob:none: commit and trees only) and check out scann/ alone (a sparse checkout, so that only
# scann/'s files are downloaded). Then check that the commit is the wanted ScaNN release.
#
# The sparse checkout is set up with git's plumbing (core.sparseCheckout and info/sparse-checkout, non-cone
# pattern /scann/): `git sparse-checkout set` changed its defaults between git 2.34 (Ubuntu 22.04, the devel
# image) and 2.37, and cone mode would also check out the repository's top-level files.
#
# Usage: fetch_scann.sh REPOSITORY COMMIT VERSION DEST
#   REPOSITORY  URL of google-research (SCANN_GIT_REPOSITORY; the tests use a file:// one)
#   COMMIT      the full 40-hex commit id (SCANN_GIT_COMMIT)
#   VERSION     the ScaNN release scann/pyproject.toml must name at COMMIT (SCANN_VERSION)
#   DEST        the git work tree to create; ScaNN's workspace ends up in DEST/scann
set -euo pipefail

fail() {
    echo "fetch_scann: $*" >&2
    exit 1
}

if [ "$#" -ne 4 ]; then
    echo "usage: fetch_scann.sh REPOSITORY COMMIT VERSION DEST" >&2
    exit 2
fi
repository=$1
commit=$2
version=$3
dest=$4

[[ $commit =~ ^[0-9a-f]{40}$ ]] || fail "SCANN_GIT_COMMIT=$commit is not a full 40-character commit id"

git init -q "$dest"
cd "$dest"
git remote add origin "$repository"
git config core.sparseCheckout true
git config core.sparseCheckoutCone false
printf '/scann/\n' >"$(git rev-parse --git-path info/sparse-checkout)"
git fetch -q --depth=1 --filter=blob:none origin "$commit" || fail "could not fetch commit $commit from $repository"
git -c advice.detachedHead=false checkout -q FETCH_HEAD
[ "$(git rev-parse HEAD)" = "$commit" ] || fail "fetched $(git rev-parse HEAD), not $commit"

[ -f scann/pyproject.toml ] || fail "$repository at $commit has no scann/pyproject.toml: not ScaNN's layout"
if ! grep -qx "version = \"${version}\"" scann/pyproject.toml; then
    fail "SCANN_GIT_COMMIT=${commit} is not ScaNN ${version} (scann/pyproject.toml:" \
        "$(grep -m 1 '^version' scann/pyproject.toml || echo 'no version line'))"
fi
echo "fetch_scann: ScaNN ${version} (google-research ${commit}) in ${dest}/scann"
