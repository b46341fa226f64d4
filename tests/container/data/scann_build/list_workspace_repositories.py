"""List the external repositories of TensorFlow Serving's Bazel workspace (WORKSPACE mode, bzlmod off).

Regenerates workspace_repositories.txt beside this file, which tests/container/test_scann_build.py reads:

    python3 tests/container/data/scann_build/list_workspace_repositories.py \\
        SERVING_CHECKOUT [--tensorflow TENSORFLOW_CHECKOUT] \\
        > tests/container/data/scann_build/workspace_repositories.txt

SERVING_CHECKOUT is tensorflow/serving at the tag serving/Dockerfile builds (2.20.0); TENSORFLOW_CHECKOUT,
if given, is tensorflow/tensorflow at the commit TF Serving's WORKSPACE pins (git_commit of org_tensorflow).
Each name comes with how it is known:

  defined     a repository rule call in TF Serving's WORKSPACE or tensorflow_serving/workspace.bzl names it
  referenced  a BUILD, .bzl or WORKSPACE file of TF Serving itself uses @name//..., so its workspace
              defines it (TF Serving builds)
  tensorflow  a repository rule call names it in tensorflow/workspace{0,1,2,3}.bzl, or in a .bzl file of
              TensorFlow's tree that these (or TF Serving's WORKSPACE) load, followed recursively

Only literal name = "..." arguments are read; Python 3 standard library only.
"""

import ast
import re
import sys
from pathlib import Path

SERVING_WORKSPACE_FILES = ("WORKSPACE", "tensorflow_serving/workspace.bzl")
TENSORFLOW_WORKSPACE_FILES = tuple(f"tensorflow/workspace{n}.bzl" for n in range(4))
# Repositories whose .bzl files live in TensorFlow's own tree (TensorFlow vendors XLA, and XLA vendors TSL).
TENSORFLOW_TREE_REPOS = {
    "org_tensorflow": "",
    "local_xla": "third_party/xla",
    "xla": "third_party/xla",
    "local_tsl": "third_party/xla/third_party/tsl",
    "tsl": "third_party/xla/third_party/tsl",
}
BUILD_FILE = re.compile(r"(^|/)(BUILD(\.bazel)?|WORKSPACE(\.bazel)?|[^/]*\.bzl|[^/]*\.BUILD)$")
REPO_REFERENCE = re.compile(r"""["']@@?([A-Za-z0-9_.~+-]+)//""")
LOAD_LABEL = re.compile(r"@?@?([A-Za-z0-9_.~+-]*)//([^:]*):(.+)")


def parse(path: Path) -> ast.Module:
    try:
        return ast.parse(path.read_text(), filename=str(path))
    except SyntaxError as error:
        sys.exit(f"list_workspace_repositories: {path} does not parse as Starlark-compatible Python: {error}")


def repository_names(tree: ast.Module) -> set:
    """Literal name = "..." arguments of the calls in a WORKSPACE or .bzl file (workspace() excepted)."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and not (isinstance(node.func, ast.Name) and node.func.id == "workspace"):
            for keyword in node.keywords:
                if keyword.arg == "name" and isinstance(keyword.value, ast.Constant):
                    names.add(keyword.value.value)
    return names


def loaded_files(tree: ast.Module, here: Path, repo_root, tensorflow: Path) -> list:
    """(file, root of its repository) for the files of TensorFlow's tree that a file's load()s name.

    ``repo_root`` is where ``//`` labels of the file point (None: outside TensorFlow's tree, not followed).
    """
    files = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "load" and node.args:
            label = getattr(node.args[0], "value", "")
            match = LOAD_LABEL.fullmatch(label)
            if label.startswith(":") and repo_root is not None:
                files.append((here.parent / label[1:], repo_root))
            elif match and match.group(1) == "" and repo_root is not None:
                files.append((repo_root / match.group(2) / match.group(3), repo_root))
            elif match and match.group(1) in TENSORFLOW_TREE_REPOS:
                root = tensorflow / TENSORFLOW_TREE_REPOS[match.group(1)]
                files.append((root / match.group(2) / match.group(3), root))
    return files


def defined_names(serving: Path) -> set:
    return set().union(*(repository_names(parse(serving / name)) for name in SERVING_WORKSPACE_FILES))


def referenced_names(serving: Path) -> set:
    names = set()
    for path in serving.rglob("*"):
        if path.is_file() and BUILD_FILE.search(path.relative_to(serving).as_posix()):
            names.update(REPO_REFERENCE.findall(path.read_text(errors="replace")))
    return names


def tensorflow_names(serving: Path, tensorflow: Path) -> set:
    todo = [(tensorflow / name, tensorflow) for name in TENSORFLOW_WORKSPACE_FILES]
    # TF Serving's WORKSPACE also loads @org_tensorflow//third_party/py:... and @local_xla//... macros.
    todo += loaded_files(parse(serving / "WORKSPACE"), serving / "WORKSPACE", None, tensorflow)
    names, seen = set(), set()
    while todo:
        path, repo_root = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        if not path.is_file():
            sys.exit(f"list_workspace_repositories: {path} is loaded but missing; wrong TensorFlow checkout?")
        tree = parse(path)
        names |= repository_names(tree)
        todo += loaded_files(tree, path, repo_root, tensorflow)
    return names


def main(argv: list) -> int:
    args = argv[1:]
    tensorflow = None
    if "--tensorflow" in args:
        index = args.index("--tensorflow")
        tensorflow = Path(args[index + 1])
        del args[index : index + 2]
    if len(args) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    serving = Path(args[0])
    rows = dict.fromkeys(referenced_names(serving), "referenced")
    if tensorflow:
        rows.update((name, "tensorflow") for name in tensorflow_names(serving, tensorflow))
    rows.update((name, "defined") for name in defined_names(serving))
    print("# External repositories of TF Serving's Bazel workspace; written by list_workspace_repositories.py")
    print("# (see its docstring and README.md here). name<TAB>how it is known.")
    for name in sorted(rows):
        print(f"{name}\t{rows[name]}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
