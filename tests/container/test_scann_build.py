"""serving/scann_build/adapt_scann.py run on ScaNN 1.4.2's real BUILD files, checked against TF Serving 2.20.

The data in tests/container/data/scann_build/ is upstream text (origins in its README.md): ScaNN's BUILD
files and MODULE.bazel as serving/Dockerfile fetches them, TF Serving 2.20.0's WORKSPACE and workspace.bzl,
and the repository names of TF Serving 2.20's workspace (with the script that lists them).
"""

from __future__ import annotations

import ast
import importlib.util
import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path
from types import ModuleType

import pytest

from container_support import ROOT

DATA = ROOT / "tests" / "container" / "data" / "scann_build"
SCANN = DATA / "scann"
BUILD_DIR = ROOT / "serving" / "scann_build"
ADAPT = BUILD_DIR / "adapt_scann.py"
WORKSPACE_SCANN = BUILD_DIR / "WORKSPACE.scann"
SERVING_WORKSPACE = DATA / "tf_serving" / "WORKSPACE"
OPS_BUILD = Path("scann", "scann_ops", "cc", "BUILD.bazel")
STATIC_OPS = "@com_google_scann//scann/scann_ops/cc:scann_ops_static"
TF_ALIASES = ["@org_tensorflow//:tensorflow_libtensorflow_framework", "@org_tensorflow//:tensorflow_tf_header_lib"]
# Repository names no adapted label may use: the pip-wheel TensorFlow, bzlmod module names (ScaNN's
# MODULE.bazel) and the pip hub, and the Highway name TensorFlow's workspace owns.
FORBIDDEN_REPOS = {
    "local_config_tf",
    "eigen",
    "highway",
    "abseil-cpp",
    "protobuf",
    "googletest",
    "pybind11",
    "pybind11_bazel",
    "pypi",
    "com_google_highway",
}
LABEL = re.compile(r"""["'](@@?([A-Za-z0-9_.~+-]*)(//[^"'\s]*)?)["']""")


def load_module(path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(path.stem, path)
    assert spec is not None and spec.loader is not None, path
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_adapt(root: Path, *extra: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(ADAPT), str(root), *map(str, extra)], capture_output=True, text=True, timeout=60
    )


def scann_copy(tmp_path: Path) -> Path:
    root = tmp_path / "scann"
    shutil.copytree(SCANN, root)
    return root


def starlark_files(root: Path) -> list:
    return sorted(p for p in (root / "scann").rglob("*") if p.name in ("BUILD", "BUILD.bazel") or p.suffix == ".bzl")


def labels(root: Path) -> list:
    """(file, label, repository) for every external label in the tree's BUILD and .bzl files."""
    return [
        (path.relative_to(root).as_posix(), label, repo)
        for path in starlark_files(root)
        for label, repo, _ in LABEL.findall(path.read_text())
    ]


def calls(path: Path) -> dict:
    """{name: (function, {keyword: value})} for the calls with a literal name in a Starlark file."""
    found = {}
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            keywords = {k.arg: k.value for k in node.keywords if k.arg}
            if isinstance(keywords.get("name"), ast.Constant):
                values = {}
                for key, value in keywords.items():
                    try:
                        values[key] = ast.literal_eval(value)
                    except ValueError:
                        values[key] = value
                found[values["name"]] = (node.func.id, values)
    return found


def listed(path: Path) -> dict:
    rows = [line.split("\t") for line in path.read_text().splitlines() if line and not line.startswith("#")]
    return dict(rows)


def known_repositories() -> set:
    """Repositories of TF Serving 2.20's workspace once WORKSPACE.scann is appended."""
    workspace_scann = {name for name, (function, _) in calls(WORKSPACE_SCANN).items() if function != "load"}
    return (
        set(listed(DATA / "workspace_repositories.txt"))
        | set(listed(DATA / "tensorflow_repositories.txt"))
        | workspace_scann
    )


@pytest.fixture(scope="module")
def adapted(tmp_path_factory) -> tuple:
    root = scann_copy(tmp_path_factory.mktemp("adapted"))
    return root, run_adapt(root)


def test_adapt_succeeds_on_scann_1_4_2(adapted):
    root, result = adapted
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert (root / "WORKSPACE").is_file()  # local_repository() needs a workspace marker
    reported = set(result.stdout.split("now reference:", 1)[1].split())
    assert reported == {repo for _, _, repo in labels(root)}


def test_every_external_label_names_a_repository_of_tf_servings_workspace(adapted):
    root, _ = adapted
    known = known_repositories()
    unknown = [(path, label) for path, label, repo in labels(root) if repo not in known]
    assert not unknown, f"labels naming repositories TF Serving 2.20's workspace does not define: {unknown}"
    used = {repo for _, _, repo in labels(root)}
    assert {"org_tensorflow", "eigen_archive", "scann_com_google_highway", "cnpy", "com_google_absl"} <= used
    # The same check on ScaNN's own text fails: it is not vacuous.
    original = {repo for _, _, repo in labels(SCANN)}
    assert {"local_config_tf", "eigen", "com_google_highway", "pybind11_bazel"} <= original - known


def test_no_pip_style_or_bzlmod_only_name_survives(adapted):
    root, _ = adapted
    survivors = [(path, label) for path, label, repo in labels(root) if repo in FORBIDDEN_REPOS]
    assert not survivors
    for path in starlark_files(root):
        functions = {function for function, _ in calls(path).values()}
        assert not functions & {"pybind_library", "pybind_extension"}, path
        assert "pybind11" not in path.read_text(), path


def test_tensorflow_comes_from_tf_servings_aliases(adapted):
    root, _ = adapted
    _, tf_dependency = calls(root / "scann" / "oss_wrappers" / "BUILD.bazel")["tf_dependency"]
    assert tf_dependency["deps"] == TF_ALIASES
    # TF Serving 2.20.0's WORKSPACE adds exactly these aliases to @org_tensorflow (patch_cmds), for TF Text's
    # identical pip-style labels, both to the TensorFlow the server itself links.
    _, org_tensorflow = calls(SERVING_WORKSPACE)["org_tensorflow"]
    aliases = dict(re.findall(r'alias\(name = "([^"]+)", actual = "([^"]+)"', "\n".join(org_tensorflow["patch_cmds"])))
    assert {f"@org_tensorflow//:{name}": actual for name, actual in aliases.items()} == dict.fromkeys(
        TF_ALIASES, "//tensorflow/core:tensorflow"
    )


def test_eigen_is_tensorflows(adapted):
    root, _ = adapted
    before = Counter(label for _, label, repo in labels(SCANN) if repo == "eigen")
    after = Counter(label for _, label, repo in labels(root) if repo == "eigen_archive")
    assert sum(before.values()) >= 3  # oss_wrappers:scann_threadpool, utils:gmm_utils, utils:pca_utils
    assert after == Counter({"@eigen_archive//:eigen3": sum(before.values())})


def test_highway_is_scanns_own_and_at_scanns_version(adapted):
    root, _ = adapted
    before = Counter(label.split("//", 1)[1] for _, label, repo in labels(SCANN) if repo == "com_google_highway")
    after = Counter(label.split("//", 1)[1] for _, label, repo in labels(root) if repo == "scann_com_google_highway")
    assert before and after == before  # same targets (hwy, hwy/contrib/sort:vqsort), other repository
    module = calls(SCANN / "MODULE.bazel")
    defined = calls(WORKSPACE_SCANN)
    assert "com_google_highway" not in defined  # a maybe() there would keep TensorFlow's definition
    function, highway = defined["scann_com_google_highway"]
    assert function == "http_archive"
    version = next(kw["version"] for f, kw in module.values() if f == "bazel_dep" and kw["name"] == "highway")
    assert highway["strip_prefix"] == f"highway-{version}"
    assert highway["urls"] == [f"https://github.com/google/highway/archive/refs/tags/{version}.tar.gz"]
    assert re.fullmatch(r"[0-9a-f]{64}", highway["sha256"])
    # Highway's BUILD files load @rules_license; it gets the one WORKSPACE.scann pins, which maps itself.
    assert highway["repo_mapping"] == {"@rules_license": "@scann_rules_license"}
    assert defined["scann_rules_license"][1]["repo_mapping"] == {"@rules_license": "@scann_rules_license"}


def test_static_op_library_is_there_with_alwayslink(adapted):
    root, _ = adapted
    targets = calls(root / OPS_BUILD)
    function, static = targets["scann_ops_static"]
    assert function == "cc_library"
    assert static["alwayslink"] == 1 and static["deps"] == [":scann_ops", ":scann_ops_kernels"]
    # alwayslink on a library without sources keeps nothing; the registrations live in these two.
    for target in ("scann_ops", "scann_ops_kernels"):
        assert targets[target][1].get("alwayslink") == 1, target
    # The label serving/Dockerfile adds to SUPPORTED_TENSORFLOW_OPS is this target: @com_google_scann is
    # WORKSPACE.scann's local_repository over the folder the Dockerfile adapts.
    dockerfile = (ROOT / "serving" / "Dockerfile").read_text()
    assert STATIC_OPS in dockerfile
    function, scann_repo = calls(WORKSPACE_SCANN)["com_google_scann"]
    assert function == "local_repository"
    assert f"adapt_scann.py {scann_repo['path']}" in dockerfile
    repo, package, target = re.fullmatch(r"@(\w+)//([\w/]+):(\w+)", STATIC_OPS).groups()
    assert repo == "com_google_scann" and Path(package, "BUILD.bazel") == OPS_BUILD and target in targets


def test_no_label_twice_in_one_list(adapted):
    root, _ = adapted
    adapt_scann = load_module(ADAPT)
    for path in starlark_files(root):
        assert adapt_scann.duplicated_labels(path.read_text()) == [], path
    assert adapt_scann.duplicated_labels('deps = [\n    "@a//:x",\n    "@a//:x",\n]') == ["@a//:x"]


def test_adapting_twice_changes_nothing(adapted, tmp_path):
    root, _ = adapted
    again = tmp_path / "again"
    shutil.copytree(root, again)
    result = run_adapt(again)
    assert result.returncode == 0, result.stderr
    assert [p.read_text() for p in starlark_files(again)] == [p.read_text() for p in starlark_files(root)]


def replace_in(path: Path, old: str, new: str):
    text = path.read_text()
    assert old in text, (path, old)
    path.write_text(text.replace(old, new, 1))


@pytest.mark.parametrize(
    "file, old, new, expected",
    [
        # A dependency a future ScaNN adds, unknown to TF Serving's workspace.
        ("scann/utils/BUILD.bazel", '"@cnpy",', '"@cnpy",\n        "@fmt//:fmt",', "no mapping for @fmt//:fmt"),
        # A pip-style TensorFlow target other than the two TF Serving aliases.
        (
            "scann/oss_wrappers/BUILD.bazel",
            '"@local_config_tf//:tf_header_lib"',
            '"@local_config_tf//:libtensorflow_cc"',
            "no mapping for @local_config_tf//:libtensorflow_cc",
        ),
        ("scann/utils/BUILD.bazel", '"@eigen",', '"@pypi//numpy",', "no mapping for @pypi//numpy"),
        # A bzlmod dependency adapt_scann.py does not know.
        (
            "MODULE.bazel",
            'bazel_dep(name = "zlib"',
            'bazel_dep(name = "fmt", version = "11.0.2")\nbazel_dep(name = "zlib"',
            "brings @fmt",
        ),
        # A Highway bump in ScaNN without the same bump in WORKSPACE.scann.
        (
            "MODULE.bazel",
            'name = "highway", version = "1.3.0"',
            'name = "highway", version = "1.4.0"',
            "pins highway-1.4.0",
        ),
        ("MODULE.bazel", "57184ee0db37cac383fc29175950747a46a8b512", "0" * 40, "pins cnpy at 0000"),
        # Op libraries that would not register their ops when linked into the server.
        (
            str(OPS_BUILD),
            '    alwayslink = 1,\n)\n\ncc_library(\n    name = "scann_ops_kernels"',
            ')\n\ncc_library(\n    name = "scann_ops_kernels"',
            "scann_ops is not alwayslink",
        ),
    ],
)
def test_adapt_fails_loudly_on_what_it_cannot_map(tmp_path, file, old, new, expected):
    root = scann_copy(tmp_path)
    replace_in(root / file, old, new)
    before = {p: p.read_text() for p in starlark_files(root)}
    result = run_adapt(root)
    assert result.returncode == 1
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("adapt_scann: ") and expected in lines[0], result.stderr
    assert {p: p.read_text() for p in starlark_files(root)} == before  # nothing half-adapted


def test_adapt_refuses_a_tree_it_does_not_recognise(tmp_path):
    root = scann_copy(tmp_path)
    (root / OPS_BUILD).write_text('cc_library(name = "scann_ops", alwayslink = 1)\n')
    result = run_adapt(root)
    assert result.returncode == 1
    assert "has no scann_ops_kernels target; ScaNN's layout changed" in result.stderr
    (root / "MODULE.bazel").unlink()
    assert "ScaNN's layout changed" in run_adapt(root).stderr


def test_workspace_scann_version_mismatch_is_caught(tmp_path):
    root = scann_copy(tmp_path)
    workspace_scann = tmp_path / "WORKSPACE.scann"
    workspace_scann.write_text(WORKSPACE_SCANN.read_text().replace("highway-1.3.0", "highway-1.0.7"))
    result = run_adapt(root, workspace_scann)
    assert result.returncode == 1 and "provides highway-1.0.7" in result.stderr


def test_the_repository_list_is_what_tf_servings_files_define():
    lister = load_module(DATA / "list_workspace_repositories.py")
    rows = listed(DATA / "workspace_repositories.txt")
    defined = {name for name, how in rows.items() if how == "defined"}
    assert defined == lister.defined_names(DATA / "tf_serving")
    assert {"org_tensorflow", "rules_cc", "bazel_skylib", "rules_pkg"} <= defined
    assert {"com_google_absl", "com_google_protobuf", "com_google_googletest", "rules_python"} <= set(rows)
    assert set(rows.values()) <= {"defined", "referenced", "tensorflow"}


def test_the_lister_follows_tensorflows_workspace_loads(tmp_path):
    """--tensorflow on a miniature TensorFlow tree laid out as TF Serving's WORKSPACE loads it."""
    tree = {
        "tensorflow/workspace3.bzl": 'load("//third_party/eigen3:workspace.bzl", eigen3 = "repo")\n'
        'def workspace():\n    eigen3()\n    http_archive(name = "rules_closure")\n',
        "third_party/eigen3/workspace.bzl": 'load("//third_party:repo.bzl", "tf_http_archive")\n'
        'def repo():\n    tf_http_archive(name = "eigen_archive")\n',
        "third_party/repo.bzl": "def tf_http_archive(name, **kwargs):\n    pass\n",
        "tensorflow/workspace2.bzl": 'load("@local_xla//third_party/absl:workspace.bzl", absl = "repo")\n',
        # // in a file of @local_xla is XLA's root, third_party/xla in TensorFlow's tree.
        "third_party/xla/third_party/absl/workspace.bzl": 'load("//third_party:repo.bzl", "xla_archive")\n'
        'def repo():\n    xla_archive(name = "com_google_absl")\n',
        "third_party/xla/third_party/repo.bzl": 'def xla_archive(name):\n    native.local_repository(name = "xla_x")\n',
        "tensorflow/workspace1.bzl": "",
        "tensorflow/workspace0.bzl": "",
        "third_party/py/python_init_rules.bzl": 'def python_init_rules():\n    http_archive(name = "rules_python")\n',
        "third_party/py/python_init_repositories.bzl": "",
        "third_party/py/python_init_toolchains.bzl": "",
        "third_party/py/python_init_pip.bzl": 'def python_init_pip():\n    pip_parse(name = "pypi")\n',
        "third_party/xla/third_party/py/python_wheel.bzl": "",
    }
    for name, text in tree.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    lister = load_module(DATA / "list_workspace_repositories.py")
    assert lister.tensorflow_names(DATA / "tf_serving", tmp_path) == {
        "rules_closure",
        "eigen_archive",
        "com_google_absl",
        "xla_x",
        "rules_python",
        "pypi",
    }
    (tmp_path / "third_party/py/python_init_pip.bzl").unlink()
    with pytest.raises(SystemExit, match=r"python_init_pip\.bzl is loaded but missing"):
        lister.tensorflow_names(DATA / "tf_serving", tmp_path)


def test_every_repository_adapt_scann_may_leave_is_known():
    adapt_scann = load_module(ADAPT)
    assert known_repositories() >= adapt_scann.KEPT_REPOS | adapt_scann.ADAPTED_REPOS
    assert not (adapt_scann.KEPT_REPOS | adapt_scann.ADAPTED_REPOS) & FORBIDDEN_REPOS
