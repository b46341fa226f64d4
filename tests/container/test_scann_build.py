"""serving/scann_build/adapt_scann.py run on ScaNN 1.4.2's real BUILD files, checked against TF Serving 2.20.

The data in tests/container/data/scann_build/ is upstream text (origins in its README.md): ScaNN's BUILD
files and MODULE.bazel as serving/Dockerfile fetches them, TF Serving 2.20.0's WORKSPACE and workspace.bzl,
and the repository names of TF Serving 2.20's workspace (with the script that lists them).

Then serving/Dockerfile's other build-stage steps, each run as its RUN line says (build args' defaults in the
environment, image paths mapped to local ones): the check of the devel image's TF Serving tree, the sparse
blob-less fetch of scann/ (from a google-research repository made here), and the early build of ScaNN's op
library (with a stand-in bazel), and the order of the steps.
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


# ---- serving/Dockerfile's build-stage steps, run as the Dockerfile runs them (issue 19 §7) ----------------

DOCKERFILE = ROOT / "serving" / "Dockerfile"
TF_SERVING = DATA / "tf_serving"
VERSION_H = Path("tensorflow_serving", "model_servers", "version.h")
# Where serving/Dockerfile copies serving/scann_build/.
IMAGE_BUILD_DIR = "/scann-build/"


def build_stage() -> str:
    text = DOCKERFILE.read_text()
    start = text.index("FROM tensorflow/serving:${TF_SERVING_VERSION}-devel AS build")
    return text[start : text.index("\nFROM ", start + 1)]


def build_args() -> dict:
    """{name: default} of the build stage's ARGs, quotes removed, with the global ARG TF_SERVING_VERSION."""
    text = DOCKERFILE.read_text()
    args = dict(re.findall(r"^ARG (TF_SERVING_VERSION)=(\S+)$", text, flags=re.M))
    for name, value in re.findall(r"^ARG ([A-Z_]+)=(.*)$", build_stage(), flags=re.M):
        args[name] = value.strip().strip('"')
    return args


def run_steps() -> list:
    """The build stage's RUN commands, in order, joined as Docker joins continued lines."""
    steps, lines = [], build_stage().splitlines()
    for i, line in enumerate(lines):
        if line.startswith("RUN "):
            command = []
            for part in lines[i:]:
                command.append(part.rstrip().removesuffix("\\"))
                if not part.rstrip().endswith("\\"):
                    break
            steps.append("".join(command)[len("RUN ") :])
    return steps


def step(script: str) -> str:
    """The one RUN command of the build stage that runs serving/scann_build/<script>."""
    found = [command for command in run_steps() if f"{IMAGE_BUILD_DIR}{script}" in command]
    assert len(found) == 1, f"serving/Dockerfile runs {script} in {len(found)} steps"
    return found[0]


def run_step(script: str, paths: dict, env: dict, cwd: Path) -> subprocess.CompletedProcess:
    """serving/Dockerfile's step running ``script``, with the image's paths mapped to ``paths`` (the
    scripts' folder to serving/scann_build/) and the build args in the environment, as Docker runs it."""
    command = step(script)
    for image_path, local in {IMAGE_BUILD_DIR: f"{BUILD_DIR}/", **paths}.items():
        assert image_path in command, (image_path, command)
        command = command.replace(image_path, str(local))
    return subprocess.run(
        ["bash", "-o", "pipefail", "-c", command],  # serving/Dockerfile's SHELL
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin", **build_args(), **env},
    )


def one_error_line(result: subprocess.CompletedProcess, prefix: str) -> str:
    """The script's one line of error (after whatever git or bazel said), exit status 1."""
    assert result.returncode == 1, result.stdout + result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith(f"{prefix}: ")]
    assert len(lines) == 1, result.stderr
    return lines[0]


def test_the_build_stage_fails_early_the_model_server_build_comes_last():
    steps = run_steps()
    order = [
        f"{IMAGE_BUILD_DIR}check_serving_tree.sh",
        f"{IMAGE_BUILD_DIR}fetch_scann.sh",
        f"{IMAGE_BUILD_DIR}adapt_scann.py",
        f"{IMAGE_BUILD_DIR}build_scann_ops.sh",
        "tensorflow_serving/model_servers:tensorflow_model_server",
    ]
    positions = [next(i for i, command in enumerate(steps) if marker in command) for marker in order]
    assert positions == list(range(len(order))), "each check runs in its own step, the server build last"
    # The tree check needs only the scripts: nothing is fetched or built on a wrong devel image.
    stage = build_stage()
    assert stage.index(f"COPY scann_build/ {IMAGE_BUILD_DIR}") < stage.index("RUN ")


def bazel_options(command: str) -> list:
    """The build-arg expansions a bazel step passes as options, in order."""
    return re.findall(r"\$\{(?:BAZEL_BUILD_FLAGS|TF_SERVING_BAZEL_OPTIONS|TF_SERVING_BUILD_OPTIONS)\}", command)


def test_the_scann_step_and_the_model_server_build_share_bazels_options():
    """The server build reuses the ScaNN step's actions (same output base) only with the same options."""
    server = next(c for c in run_steps() if "tensorflow_serving/model_servers:tensorflow_model_server" in c)
    scann = step("build_scann_ops.sh")
    assert (
        bazel_options(scann)
        == bazel_options(server)
        == [
            "${BAZEL_BUILD_FLAGS}",
            "${TF_SERVING_BAZEL_OPTIONS}",
            "${TF_SERVING_BUILD_OPTIONS}",
        ]
    )
    assert server.startswith("bazel build ${BAZEL_BUILD_FLAGS} ")
    # TF Serving's Dockerfile.devel passes these (with --curses=yes) to the same bazel build.
    assert build_args()["BAZEL_BUILD_FLAGS"].split() == [
        "--color=yes",
        "--curses=no",
        "--verbose_failures",
        "--output_filter=DONT_MATCH_ANYTHING",
    ]


# -- 1. the devel image holds TF Serving <TF_SERVING_VERSION>'s source


def test_tree_check_reads_version_h_and_workspace_against_the_build_args():
    command = step("check_serving_tree.sh")
    assert command == (
        f'bash {IMAGE_BUILD_DIR}check_serving_tree.sh /tensorflow-serving "${{TF_SERVING_VERSION}}" '
        '"${TENSORFLOW_GIT_COMMIT}"'
    )
    script = (BUILD_DIR / "check_serving_tree.sh").read_text()
    assert f"$tree/{VERSION_H.as_posix()}" in script and "$tree/WORKSPACE" in script
    # The expected values are the build args, whose defaults are TF Serving 2.20.0's (vendored) files.
    _, org_tensorflow = calls(SERVING_WORKSPACE)["org_tensorflow"]
    assert build_args()["TENSORFLOW_GIT_COMMIT"] == org_tensorflow["git_commit"]
    assert build_args()["TF_SERVING_VERSION"] == "2.20.0"


def test_tree_check_accepts_tf_serving_2_20_0(tmp_path):
    result = run_step("check_serving_tree.sh", {"/tensorflow-serving": TF_SERVING}, {}, tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout == (
        "check_serving_tree: TF Serving 2.20.0, building TensorFlow 72fbba3d20f4616d7312b5e2b7f79daf6e82f2fa\n"
    )


def serving_tree(tmp_path: Path, file: Path, old: str, new: str) -> Path:
    tree = tmp_path / "tensorflow-serving"
    shutil.copytree(TF_SERVING, tree)
    replace_in(tree / file, old, new)
    return tree


@pytest.mark.parametrize(
    "file, old, new, expected",
    [
        # What Dockerfile.devel's default (HEAD) puts in the image: master's version.h says 0.0.0.
        (
            VERSION_H,
            "MAJOR_VERSION 2\n#define TF_MODELSERVER_MINOR_VERSION 20",
            "MAJOR_VERSION 0\n#define TF_MODELSERVER_MINOR_VERSION 0",
            "holds TF Serving 0.0.0 (per ",
        ),
        (VERSION_H, "PATCH_VERSION 0", "PATCH_VERSION 1", "holds TF Serving 2.20.1 (per "),
        (VERSION_H, 'VERSION_SUFFIX ""', 'VERSION_SUFFIX "-rc0"', "holds TF Serving 2.20.0-rc0 (per "),
        (
            Path("WORKSPACE"),
            'git_commit = "72fbba3d20f4616d7312b5e2b7f79daf6e82f2fa"',
            'git_commit = "' + "1" * 40 + '"',
            "builds TensorFlow at " + "1" * 40 + ", not TENSORFLOW_GIT_COMMIT=72fbba3d",
        ),
        (
            Path("WORKSPACE"),
            '    git_commit = "72fbba3d',
            '    # "72fbba3d',
            "builds TensorFlow at no git_commit found",
        ),
    ],
)
def test_tree_check_refuses_another_source_in_seconds(tmp_path, file, old, new, expected):
    tree = serving_tree(tmp_path, file, old, new)
    result = run_step("check_serving_tree.sh", {"/tensorflow-serving": tree}, {}, tmp_path)
    assert expected in one_error_line(result, "check_serving_tree")
    assert len(result.stderr.splitlines()) == 1


def test_tree_check_compares_with_the_build_args_not_constants(tmp_path):
    # The same 2.20.0 tree, other build args: refused, naming the arg.
    paths = {"/tensorflow-serving": TF_SERVING}
    result = run_step("check_serving_tree.sh", paths, {"TF_SERVING_VERSION": "2.21.0"}, tmp_path)
    assert "holds TF Serving 2.20.0 (per " in one_error_line(result, "check_serving_tree")
    assert "not TF_SERVING_VERSION=2.21.0" in result.stderr
    result = run_step("check_serving_tree.sh", paths, {"TENSORFLOW_GIT_COMMIT": "2" * 40}, tmp_path)
    assert f"not TENSORFLOW_GIT_COMMIT={'2' * 40}" in one_error_line(result, "check_serving_tree")
    # No TF Serving tree at all (an image that is not the devel one).
    result = run_step("check_serving_tree.sh", {"/tensorflow-serving": tmp_path / "none"}, {}, tmp_path)
    assert "is not TF Serving's source tree" in one_error_line(result, "check_serving_tree")


# -- 2. ScaNN's op library on its own, before the model server

FAKE_BAZEL = """#!/bin/bash
printf '%s\\n' "$*" >> "$FAKE_BAZEL_LOG"
case "$1" in
    cquery) [ -z "${FAKE_CQUERY_FAILS:-}" ] || { echo "ERROR: no such package" >&2; exit 1; }
            cat "$FAKE_CQUERY_OUTPUT" ;;
    build) exit "${FAKE_BUILD_STATUS:-0}" ;;
    *) exit 2 ;;
esac
"""


def scann_libraries(root: Path) -> list:
    """Labels of the cc_library targets of a (adapted) ScaNN tree, as cquery prints them."""
    return sorted(
        f"@com_google_scann//{path.parent.relative_to(root).as_posix()}:{name}"
        for path in starlark_files(root)
        for name, (function, _) in calls(path).items()
        if function == "cc_library"
    )


def run_scann_ops_step(tmp_path: Path, cquery_output: list, **env) -> tuple:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / "bazel").write_text(FAKE_BAZEL)
    (bin_dir / "bazel").chmod(0o755)
    (tmp_path / "cquery.txt").write_text("".join(f"{label}\n" for label in cquery_output))
    log = tmp_path / "bazel.log"
    log.write_text("")
    environment = {
        "PATH": f"{bin_dir}:/usr/bin:/bin",
        "FAKE_BAZEL_LOG": str(log),
        "FAKE_CQUERY_OUTPUT": str(tmp_path / "cquery.txt"),
        **env,
    }
    result = run_step("build_scann_ops.sh", {}, environment, tmp_path)
    return result, [line.split() for line in log.read_text().splitlines()]


def test_scann_step_builds_the_op_library_and_the_scann_libraries_under_it(adapted, tmp_path):
    root, _ = adapted
    # The label the step builds is the one the server links (SUPPORTED_TENSORFLOW_OPS), defined in the
    # adapted vendored BUILD files.
    assert build_args()["SCANN_OPS_TARGET"] == STATIC_OPS
    assert step("build_scann_ops.sh").startswith(f'bash {IMAGE_BUILD_DIR}build_scann_ops.sh "${{SCANN_OPS_TARGET}}" ')
    libraries = scann_libraries(root)
    assert STATIC_OPS in libraries and f"{STATIC_OPS.rsplit(':', 1)[0]}:scann_ops_kernels" in libraries
    ours = [label for label in libraries if label != STATIC_OPS]
    # cquery lists TensorFlow's and Abseil's libraries too, and a label once per configuration.
    output = [ours[0], "@org_tensorflow//tensorflow/core:framework", *ours, "@com_google_absl//absl/log:check"]
    result, calls_made = run_scann_ops_step(tmp_path, output)
    assert result.returncode == 0, result.stderr
    options = [*build_args()["BAZEL_BUILD_FLAGS"].split(), *build_args()["TF_SERVING_BUILD_OPTIONS"].split()]
    cquery, build = calls_made
    assert cquery[0] == "cquery" and cquery[1 : 1 + len(options)] == options
    assert f"deps({STATIC_OPS}))" in " ".join(cquery)
    assert build == ["build", *options, STATIC_OPS, *sorted(ours)]
    assert f"build_scann_ops: {len(ours)} libraries of @com_google_scann under {STATIC_OPS}" in result.stdout


@pytest.mark.parametrize(
    "cquery_output, env, expected, builds",
    [
        ([], {"FAKE_CQUERY_FAILS": "1"}, "bazel cannot analyse " + STATIC_OPS, False),
        (["@org_tensorflow//tensorflow/core:framework"], {}, "found no cc_library of @com_google_scann", False),
        ([STATIC_OPS], {"FAKE_BUILD_STATUS": "1"}, "does not build in TF Serving's workspace", True),
    ],
)
def test_scann_step_fails_with_one_line(tmp_path, cquery_output, env, expected, builds):
    result, calls_made = run_scann_ops_step(tmp_path, cquery_output, **env)
    assert expected in one_error_line(result, "build_scann_ops")
    assert [made[0] for made in calls_made] == (["cquery", "build"] if builds else ["cquery"])


# -- 3. scann/ alone, at the pinned commit, from a sparse blob-less fetch


def git(cwd: Path, *args: str, env: dict) -> str:
    return subprocess.run(["git", *args], cwd=cwd, env=env, capture_output=True, text=True, check=True).stdout


@pytest.fixture
def google_research(tmp_path) -> tuple:
    """A small google-research: scann/ (1.4.2) and other projects at one commit, then a later ScaNN commit."""
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(tmp_path),
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_CONFIG_GLOBAL": "/dev/null",
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@example.com",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@example.com",
    }
    repo = tmp_path / "google-research"
    files = {
        "README.md": "google-research\n",
        "scann/pyproject.toml": '[project]\nname = "scann"\nversion = "1.4.2"\n',
        "scann/MODULE.bazel": 'module(name = "scann")\n',
        "scann/scann/scann_ops/cc/BUILD.bazel": "# ops\n",
        "other_project/big.bin": "not wanted\n" * 100,
        "scann_like/keep_out.txt": "a sibling whose name starts with scann\n",
    }
    for name, text in files.items():
        (repo / name).parent.mkdir(parents=True, exist_ok=True)
        (repo / name).write_text(text)
    git(tmp_path, "init", "-q", str(repo), env=env)
    git(repo, "add", "-A", env=env)
    git(repo, "commit", "-qm", "ScaNN 1.4.2", env=env)
    release = git(repo, "rev-parse", "HEAD", env=env).strip()
    replace_in(repo / "scann/pyproject.toml", '"1.4.2"', '"1.4.3"')
    (repo / "scann/scann/later.cc").write_text("// later\n")
    git(repo, "add", "-A", env=env)
    git(repo, "commit", "-qm", "ScaNN 1.4.3", env=env)
    later = git(repo, "rev-parse", "HEAD", env=env).strip()
    git(repo, "config", "uploadpack.allowFilter", "true", env=env)  # as GitHub does
    return repo, release, later, env


def fetch(tmp_path: Path, repo: Path, commit: str, env: dict, version: str = "1.4.2") -> tuple:
    dest = tmp_path / "scann-src"
    args = {"SCANN_GIT_REPOSITORY": f"file://{repo}", "SCANN_GIT_COMMIT": commit, "SCANN_VERSION": version}
    return run_step("fetch_scann.sh", {"/scann-src": dest}, {**env, **args}, tmp_path), dest


def test_scann_fetch_step_uses_the_build_args():
    assert step("fetch_scann.sh") == (
        f'bash {IMAGE_BUILD_DIR}fetch_scann.sh "${{SCANN_GIT_REPOSITORY}}" "${{SCANN_GIT_COMMIT}}" '
        '"${SCANN_VERSION}" /scann-src'
    )
    assert build_args()["SCANN_GIT_REPOSITORY"] == "https://github.com/google-research/google-research.git"
    # ScaNN's workspace lands where WORKSPACE.scann's local_repository and adapt_scann.py look for it.
    assert calls(WORKSPACE_SCANN)["com_google_scann"][1]["path"] == "/scann-src/scann"
    assert "adapt_scann.py /scann-src/scann" in step("adapt_scann.py")
    stage = build_stage()
    assert "tar " not in stage and "archive/" not in stage  # no archive of the whole repository


def test_scann_fetch_step_brings_only_scann_at_the_commit(google_research, tmp_path):
    repo, release, _, env = google_research
    result, dest = fetch(tmp_path, repo, release, env)
    assert result.returncode == 0, result.stderr
    assert f"fetch_scann: ScaNN 1.4.2 (google-research {release})" in result.stdout
    work_tree = sorted(p.relative_to(dest).as_posix() for p in dest.rglob("*") if p.is_file() and ".git" not in p.parts)
    wanted = git(repo, "ls-tree", "-r", "--name-only", release, "scann", env=env).split()
    assert work_tree == sorted(wanted)  # not README.md, other_project/, scann_like/, nor later.cc
    for name in wanted:
        assert (dest / name).read_text() == git(repo, "show", f"{release}:{name}", env=env)
    assert git(dest, "rev-parse", "HEAD", env=env).strip() == release
    # One commit, no history; a blob-less (partial) fetch, whose only blobs are scann/'s.
    assert git(dest, "rev-parse", "--is-shallow-repository", env=env).strip() == "true"
    assert git(dest, "rev-list", "--count", "HEAD", env=env).strip() == "1"
    assert git(dest, "config", "remote.origin.partialclonefilter", env=env).strip() == "blob:none"
    objects = git(dest, "rev-list", "--objects", "--missing=print", "HEAD", env=env).split("\n")
    missing = {line[1:] for line in objects if line.startswith("?")}
    blobs = dict(reversed(line.split()[2:4]) for line in git(repo, "ls-tree", "-r", release, env=env).splitlines())
    assert missing == {blobs["README.md"], blobs["other_project/big.bin"], blobs["scann_like/keep_out.txt"]}


def test_scann_fetch_step_refuses_a_commit_that_is_not_the_release(google_research, tmp_path):
    repo, _, later, env = google_research
    result, _ = fetch(tmp_path, repo, later, env)
    line = one_error_line(result, "fetch_scann")
    assert f"SCANN_GIT_COMMIT={later} is not ScaNN 1.4.2" in line and 'version = "1.4.3"' in line


@pytest.mark.parametrize(
    "commit, expected",
    [
        ("634a79fb", "is not a full 40-character commit id"),
        ("3" * 40, "could not fetch commit " + "3" * 40),
    ],
)
def test_scann_fetch_step_refuses_a_commit_it_cannot_pin(google_research, tmp_path, commit, expected):
    repo, _, _, env = google_research
    result, _ = fetch(tmp_path, repo, commit, env)
    assert expected in one_error_line(result, "fetch_scann")
