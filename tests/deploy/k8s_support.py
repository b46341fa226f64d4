"""Rendering deploy/k8s/ overlays with kubectl's kustomize, and the policy tools' venv (.venv-policy)."""

from __future__ import annotations

import functools
import shutil
import subprocess
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
OVERLAYS = ["pvc", "gcs", "local", "kserve", "pvc-multiworker"]
POLICY_BIN = ROOT / ".venv-policy" / "bin"


def kubectl() -> str:
    path = shutil.which("kubectl")
    assert path, "kubectl is missing (these machines come with 1.32; scripts/test.sh checks for it)"
    return path


@functools.cache
def render_text(overlay: str) -> str:
    result = subprocess.run(
        [kubectl(), "kustomize", str(K8S / "overlays" / overlay)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def render(overlay: str) -> list[dict]:
    return [d for d in yaml.safe_load_all(render_text(overlay)) if d]


def find(docs: list[dict], kind: str, name: str) -> dict:
    matches = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(matches) == 1, f"{kind}/{name}: {len(matches)} found"
    return matches[0]


def pod_spec(doc: dict) -> dict:
    if doc["kind"] == "CronJob":
        return doc["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    return doc["spec"]["template"]["spec"]


def container(spec: dict, name: str, key: str = "containers") -> dict:
    matches = [c for c in spec.get(key, []) if c["name"] == name]
    assert len(matches) == 1, f"container {name} in {key}: {len(matches)} found"
    return matches[0]


def policy_tool(name: str) -> str:
    """A tool of .venv-policy, made by scripts/setup-policy.sh (scripts/test.sh runs it; so does this)."""
    path = POLICY_BIN / name
    if not path.exists():
        subprocess.run(["bash", str(ROOT / "scripts" / "setup-policy.sh")], check=True, timeout=1200)
    assert path.exists(), f"{path} missing after scripts/setup-policy.sh"
    return str(path)
