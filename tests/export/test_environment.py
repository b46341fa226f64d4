"""export/environment.py: importing export sets nothing; the processes that start there configure TensorFlow's
environment before TensorFlow is imported."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from export import environment

ROOT = Path(__file__).resolve().parents[2]
_PRINT = "import os; print(os.environ.get('TF_USE_LEGACY_KERAS'), os.environ.get('TF_CPP_MIN_LOG_LEVEL'))"


def _run(code: str, **overrides: str) -> str:
    env = {k: v for k, v in os.environ.items() if k not in environment.DEFAULTS}
    env.update(PYTHONPATH=str(ROOT), **overrides)
    proc = subprocess.run([sys.executable, "-c", code], cwd=str(ROOT), env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


def test_importing_export_sets_no_environment_variable():
    assert _run(f"import export, export.cli; {_PRINT}") == "None None"


def test_python_m_export_and_the_validation_child_configure_at_start_without_overriding_a_choice():
    assert _run(f"import export.__main__; {_PRINT}") == "1 2"
    assert _run(f"import export.__main__; {_PRINT}", TF_CPP_MIN_LOG_LEVEL="0") == "1 0"
    child = "import export.validate_child as c\ntry:\n    c.main(['/nonexistent'] * 3)\nexcept OSError:\n    pass\n"
    assert _run(child + _PRINT) == "1 2"
