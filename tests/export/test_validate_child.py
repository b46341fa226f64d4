"""The pre-publish validation child dies with its export process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _children(pid: int, marker: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if int(stat.rpartition(")")[2].split()[1]) == pid and marker in cmdline:
            found.append(int(entry.name))
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.slow
def test_validation_child_exits_when_the_export_process_is_killed(tmp_path):
    # The staged model's saved_model.pb is a FIFO nobody writes: the child blocks opening it, as a child
    # stuck in a long load would, and only a watch on its parent can end it.
    model = tmp_path / "staged"
    model.mkdir()
    os.mkfifo(model / "saved_model.pb")
    script = textwrap.dedent(f"""
        from pathlib import Path
        from export.validation.runners import in_fresh_process
        in_fresh_process(Path({str(model)!r}), [], timeout_s=600)
    """)
    parent = subprocess.Popen([sys.executable, "-c", script], cwd=str(ROOT), env=dict(os.environ, PYTHONPATH=str(ROOT)))
    child = None
    try:
        deadline = time.monotonic() + 60
        while child is None and time.monotonic() < deadline and parent.poll() is None:
            found = _children(parent.pid, "export.validate_child")
            child = found[0] if found else time.sleep(0.05)
        assert child is not None, "the export process never started its validation child"
        time.sleep(1.0)  # let the child get into its work
        assert _alive(child)
        parent.send_signal(signal.SIGKILL)
        parent.wait()
        deadline = time.monotonic() + 60
        while _alive(child) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _alive(child), "the validation child outlived the export process that started it"
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()
        if child is not None and _alive(child):
            os.kill(child, signal.SIGKILL)
