"""Make ScaNN's Bazel packages buildable as an external repository of TensorFlow Serving.

serving/Dockerfile runs this inside tensorflow/serving:<version>-devel over ScaNN's source (the folder
holding MODULE.bazel and scann/), then appends WORKSPACE.scann (next to this file) to TF Serving's
WORKSPACE. ScaNN 1.4 builds with bzlmod; TF Serving 2.20 builds with bzlmod off, so the repository names
in ScaNN's BUILD and .bzl files (the apparent names of its MODULE.bazel) are rewritten to the
repositories of TF Serving's workspace, following google-research's scann/tf_serving recipe:

* ``@local_config_tf`` (ScaNN's repository rule over the *installed* TensorFlow wheel) -> the TensorFlow
  that TF Serving builds from source, through the aliases TF Serving's WORKSPACE adds to
  ``@org_tensorflow`` for these same pip-style names (both are //tensorflow/core:tensorflow).
* ``@eigen`` (the bzlmod Eigen module) -> ``@eigen_archive//:eigen3``, TensorFlow's Eigen: the ops share
  Eigen types (thread pools, tensors) with TensorFlow, so they must compile against the same Eigen.
* ``@com_google_highway`` -> ``@scann_com_google_highway``: Highway at the version ScaNN pins, defined
  under a name of its own by WORKSPACE.scann, because TensorFlow's workspace defines com_google_highway
  (an older one) before WORKSPACE.scann is read.
* the pybind11 rules (Python bindings, useless in a C++ server) are dropped with their ``load``.
* ``scann_ops_static``, the op definitions and kernels (both ``alwayslink``), is added next to
  ``_scann_ops.so``, for SUPPORTED_TENSORFLOW_OPS in tensorflow_serving/model_servers/BUILD.

It reads the BUILD and .bzl files under scann/ (the op library's packages; the root package and
build_deps/ serve the pip build and are never loaded).

Whatever it cannot account for stops the image build here with one line on stderr and exit status 1: an
external label it has no mapping for, a MODULE.bazel dependency it does not know, a Highway or cnpy pin in
MODULE.bazel that WORKSPACE.scann does not match, or a layout without the op targets. A ScaNN bump thus
fails at this step, not hours later inside Bazel.

Usage: python3 adapt_scann.py SCANN_WORKSPACE_DIR [WORKSPACE_SCANN]
"""

import ast
import re
import sys
from pathlib import Path
from typing import NoReturn

# Whole labels rewritten one for one; any other label of these repositories is an error.
LABEL_REWRITES = {
    # TF Serving 2.20's WORKSPACE appends these aliases of //tensorflow/core:tensorflow to @org_tensorflow's
    # root BUILD (patch_cmds of its tensorflow_http_archive). Two distinct labels, so that a deps list
    # naming both pip-style targets does not end up naming one target twice (a Bazel error).
    "@local_config_tf//:libtensorflow_framework": "@org_tensorflow//:tensorflow_libtensorflow_framework",
    "@local_config_tf//:tf_header_lib": "@org_tensorflow//:tensorflow_tf_header_lib",
    # @eigen is short for @eigen//:eigen, the bzlmod Eigen module's library; TensorFlow's Eigen target.
    "@eigen": "@eigen_archive//:eigen3",
    "@eigen//:eigen": "@eigen_archive//:eigen3",
}
LABEL_MAPPED_REPOS = {"local_config_tf", "eigen"}
# Repositories renamed, whatever the target.
REPO_RENAMES = {"com_google_highway": "scann_com_google_highway"}
# Repositories TF Serving 2.20's workspace defines under the names ScaNN uses (cnpy: WORKSPACE.scann).
KEPT_REPOS = {
    "bazel_tools",
    "cnpy",
    "com_google_absl",
    "com_google_googletest",
    "com_google_protobuf",
    "platforms",
    "rules_cc",
    "rules_python",
    "zlib",
}
# Names the rewritten labels use: accepted as they are, so that the script can run twice on a tree.
ADAPTED_REPOS = {"org_tensorflow", "eigen_archive", *REPO_RENAMES.values()}
# pybind11_bazel's rules, dropped with the load() that brings them.
DROPPED_REPO = "pybind11_bazel"
DROPPED_RULES = ("pybind_library", "pybind_extension")
# Repositories of ScaNN's MODULE.bazel that none of the op library's packages use (Python toolchain).
UNUSED_MODULE_REPOS = {"local_config_python", "local_toolchains"}
HANDLED_REPOS = LABEL_MAPPED_REPOS | set(REPO_RENAMES) | KEPT_REPOS | {DROPPED_REPO} | UNUSED_MODULE_REPOS

OPS_BUILD = Path("scann", "scann_ops", "cc", "BUILD.bazel")
OPS_TARGETS = ("scann_ops", "scann_ops_kernels")
STATIC_OPS_RULE = """
# Added by serving/scann_build/adapt_scann.py: the ops and kernels, linked statically into
# tensorflow_model_server (added to SUPPORTED_TENSORFLOW_OPS in tensorflow_serving/model_servers/BUILD).
# Both deps are alwayslink, which is what keeps their op and kernel registrations in the binary.
cc_library(
    name = "scann_ops_static",
    alwayslink = 1,
    deps = [
        ":scann_ops",
        ":scann_ops_kernels",
    ],
)
"""

# A label in a string literal: "@repo//pkg:target", "@repo" or canonical "@@repo//...".
LABEL_LITERAL = re.compile(r"""(["'])(@@?[^"'\s]*)\1""")
LABEL = re.compile(r"@@?([A-Za-z0-9_.~+-]*)(//[^\s]*)?")
# The innermost [...] lists, where a label twice is an error.
LIST_LITERAL = re.compile(r"\[([^\[\]]*)\]")
STRING_LITERAL = re.compile(r'"([^"\n]*)"')


class AdaptError(Exception):
    """What stops the adaptation; its text is the single line printed."""


def fail(message: str) -> NoReturn:
    raise AdaptError(message)


def call_end(text: str, open_paren: int) -> int:
    """Index just past the ``)`` matching ``text[open_paren]``, skipping strings and comments."""
    depth, i = 0, open_paren
    while i < len(text):
        c = text[i]
        if c in "\"'":
            quote = text[i : i + 3] if text[i : i + 3] in ('"""', "'''") else c
            end = text.find(quote, i + len(quote))
            if end < 0:
                fail(f"unterminated string at offset {i}")
            i = end + len(quote)
            continue
        if c == "#":
            i = text.find("\n", i)
            i = len(text) if i < 0 else i
            continue
        depth += {"(": 1, ")": -1}.get(c, 0)
        i += 1
        if depth == 0:
            return i
    fail(f"unbalanced parentheses from offset {open_paren}")


def drop_calls(text: str, function: str, first_arg_prefix: str = "") -> str:
    """Remove the top-level ``function(...)`` calls whose text after ``(`` starts with first_arg_prefix."""
    out, pos = [], 0
    for match in re.finditer(rf"^{re.escape(function)}\(", text, flags=re.M):
        if match.start() < pos or not text.startswith(first_arg_prefix, match.end()):
            continue
        out.append(text[pos : match.start()])
        pos = call_end(text, match.end() - 1)
        if text.startswith("\n", pos):
            pos += 1
    out.append(text[pos:])
    return "".join(out)


def map_label(label: str) -> str:
    """The label to use in TF Serving's workspace; AdaptError naming the label when there is none."""
    if label in LABEL_REWRITES:
        return LABEL_REWRITES[label]
    match = LABEL.fullmatch(label)
    repo, target = (match.group(1), match.group(2) or "") if match else (None, "")
    if repo in REPO_RENAMES:
        return f"@{REPO_RENAMES[repo]}{target}"
    if repo in KEPT_REPOS or repo in ADAPTED_REPOS:
        return label
    raise AdaptError(label)


def adapt_text(text: str) -> tuple:
    """(adapted text, labels without a mapping) for one BUILD or .bzl file."""
    adapted = drop_calls(text, "load", f'"@{DROPPED_REPO}//')
    for rule in DROPPED_RULES:
        adapted = drop_calls(adapted, rule)
    if adapted != text:  # tidy the blank lines the dropped calls leave
        adapted = re.sub(r"\n{3,}", "\n\n", adapted).strip("\n") + "\n"
    unknown = []

    def rewrite(match):
        try:
            return match.group(1) + map_label(match.group(2)) + match.group(1)
        except AdaptError:
            unknown.append(match.group(2))
            return match.group(0)

    return LABEL_LITERAL.sub(rewrite, adapted), unknown


def duplicated_labels(text: str) -> list:
    """Labels named twice in one list (e.g. two labels rewritten to the same target)."""
    duplicates = []
    for items in LIST_LITERAL.findall(text):
        seen = set()
        for value in STRING_LITERAL.findall(items):
            if value[:1] in "@/:" and value in seen:
                duplicates.append(value)
            seen.add(value)
    return duplicates


def parse_starlark(text: str, filename: str) -> ast.Module:
    """BUILD, .bzl and MODULE.bazel files are Starlark, whose syntax is a subset of Python's."""
    try:
        return ast.parse(text, filename=filename)
    except SyntaxError as error:
        fail(f"{filename} does not parse: {error}")


def calls_by_name(text: str, filename: str) -> dict:
    """{name: {keyword: value}} for the calls with a literal name = "..." in a Starlark file."""
    calls = {}
    for node in ast.walk(parse_starlark(text, filename)):
        if isinstance(node, ast.Call):
            keywords = {k.arg: k.value for k in node.keywords if k.arg}
            name = keywords.get("name")
            if isinstance(name, ast.Constant) and isinstance(name.value, str):
                calls[name.value] = {key: getattr(value, "value", value) for key, value in keywords.items()}
    return calls


def module_dependencies(module_bazel: Path) -> dict:
    """{apparent repository name: (module or rule, version or commit)} from ScaNN's MODULE.bazel."""
    repos = {}
    for node in ast.walk(parse_starlark(module_bazel.read_text(), str(module_bazel))):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)):
            continue
        keywords = {k.arg: getattr(k.value, "value", None) for k in node.keywords if k.arg}
        if node.func.id == "bazel_dep":
            repos[keywords.get("repo_name") or keywords.get("name")] = (keywords.get("name"), keywords.get("version"))
        elif "name" in keywords and node.func.id not in ("module", "use_repo_rule", "use_extension"):
            repos[keywords["name"]] = (node.func.id, keywords.get("commit"))
    return repos


def check_module(root: Path, workspace_scann: Path):
    """ScaNN's dependencies are all handled, and WORKSPACE.scann pins what MODULE.bazel pins."""
    module_bazel = root / "MODULE.bazel"
    if not module_bazel.is_file():
        fail(f"no {module_bazel}: ScaNN's layout changed (adapt_scann.py reads ScaNN 1.4's MODULE.bazel)")
    repos = module_dependencies(module_bazel)
    unknown = sorted(set(repos) - HANDLED_REPOS)
    if unknown:
        fail(
            f"{module_bazel} brings {', '.join('@' + name for name in unknown)}, which adapt_scann.py "
            "does not map to TF Serving's workspace"
        )
    defined = calls_by_name(workspace_scann.read_text(), str(workspace_scann))
    if "com_google_highway" in repos:
        highway = defined.get(REPO_RENAMES["com_google_highway"], {}).get("strip_prefix", "")
        wanted = f"highway-{repos['com_google_highway'][1]}"
        if highway != wanted:
            fail(f"{module_bazel} pins {wanted}, {workspace_scann} provides {highway or 'no Highway'}")
    cnpy = defined.get("cnpy", {}).get("commit")
    if "cnpy" in repos and cnpy != repos["cnpy"][1]:
        fail(f"{module_bazel} pins cnpy at {repos['cnpy'][1]}, {workspace_scann} at {cnpy}")


def check_ops_build(text: str, path: Path):
    calls = calls_by_name(text, str(path))
    for target in OPS_TARGETS:
        if target not in calls:
            fail(f"{path} has no {target} target; ScaNN's layout changed")
        if calls[target].get("alwayslink") not in (1, True):
            fail(f"{path}: {target} is not alwayslink, its ops would not register in the server")


def adapt(root: Path, workspace_scann: Path) -> set:
    """Adapt the ScaNN workspace folder ``root`` in place; returns the external repositories now used."""
    check_module(root, workspace_scann)
    files = sorted(
        p
        for p in (root / "scann").rglob("*")
        if p.is_file() and (p.name in ("BUILD", "BUILD.bazel") or p.suffix == ".bzl")
    )
    if not files:
        fail(f"no BUILD files under {root / 'scann'}; is this ScaNN's workspace folder?")

    adapted, problems = {}, []
    for path in files:
        text = path.read_text()
        new_text, unknown = adapt_text(text)
        problems += [f"{path.relative_to(root)}: no mapping for {label}" for label in sorted(set(unknown))]
        problems += [
            f"{path.relative_to(root)}: {label} twice in one list" for label in sorted(set(duplicated_labels(new_text)))
        ]
        if new_text != text:
            adapted[path] = new_text
    if problems:
        fail("; ".join(problems))

    ops_build = root / OPS_BUILD
    if not ops_build.is_file():
        fail(f"no {ops_build}; ScaNN's layout changed")
    ops_text = adapted.get(ops_build, ops_build.read_text())
    check_ops_build(ops_text, ops_build)
    if 'name = "scann_ops_static"' not in ops_text:
        if not adapted:
            fail("nothing to adapt (no @local_config_tf, @eigen, Highway or pybind11 label); ScaNN's layout changed")
        adapted[ops_build] = ops_text.rstrip("\n") + "\n" + STATIC_OPS_RULE

    for path, text in adapted.items():
        path.write_text(text)
    # local_repository() wants a workspace marker file at the repository root.
    (root / "WORKSPACE").touch()

    externals: set[str] = set()
    for path in files:
        for _, label in LABEL_LITERAL.findall(path.read_text()):
            match = LABEL.fullmatch(label)
            assert match is not None, label  # every label passed map_label above, which needs this match
            externals.add(match.group(1))
    return externals


def main(argv: list) -> int:
    if len(argv) not in (2, 3):
        print(__doc__, file=sys.stderr)
        return 2
    root = Path(argv[1])
    workspace_scann = Path(argv[2]) if len(argv) == 3 else Path(__file__).resolve().parent / "WORKSPACE.scann"
    try:
        names = adapt(root, workspace_scann)
    except AdaptError as error:
        print(f"adapt_scann: {error}", file=sys.stderr)
        return 1
    print("adapt_scann: ScaNN's BUILD files now reference:", " ".join(sorted(names)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
