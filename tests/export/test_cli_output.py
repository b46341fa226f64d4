"""One stream of output: the export's own lines once, none of the libraries' noise by default, more with -v."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from export.cli import _duration

ROOT = Path(__file__).resolve().parents[2]


def _python(code: str) -> subprocess.CompletedProcess:
    """``code`` in a fresh interpreter (file descriptors and logging set up there, not in the test process)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("TF_CPP_MIN_LOG_LEVEL", None)
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, env=env, cwd=ROOT, timeout=60
    )


def test_native_log_lines_are_dropped_and_every_other_byte_reaches_stderr():
    proc = _python(
        r"""
        import os, sys
        from export.cli import _NativeLogFilter
        with _NativeLogFilter():
            os.write(2, b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n")
            os.write(2, b"I0000 00:00:1796662145.628733   15831 partitioner_factory_base.cc:58] Size of sampled\n")
            os.write(2, b"W0000 00:00:1796662145.629016   15831 gmm_utils.cc:1026] Could not normalize centroid\n")
            os.write(2, b"2026-12-07 16:47:47.429613: E external/local_xla/xla/stream_executor/cuda/"
                        b"cuda_platform.cc:51] failed call to cuInit: INTERNAL\n")
            print("export: error: kept", file=sys.stderr)
            os.write(2, b"progress 1\rprogress 2\r")
            os.write(2, b"I0000 in a sentence is kept\n")
            os.write(2, b"no newline at the end")
        print("|after", file=sys.stderr)
        """
    )
    assert proc.returncode == 0
    assert proc.stderr == (
        b"export: error: kept\nprogress 1\rprogress 2\rI0000 in a sentence is kept\nno newline at the end|after\n"
    )


@pytest.mark.parametrize("verbose", [False, True])
def test_the_default_shows_warnings_only_and_minus_v_shows_the_steps_logs_and_libraries(verbose):
    proc = _python(
        f"""
        import logging, os, warnings
        from export.cli import _one_stream
        _one_stream({verbose})
        logging.getLogger("export.publish").info("published /models/retrieval/1")
        logging.getLogger("export.publish").warning("a warning of our own")
        logging.getLogger("tensorflow").warning("Skipping full serialization of TF-Keras layer ScaNN")
        warnings.warn_explicit("a library warning", UserWarning, "x.py", 1, module="tensorflow.python.x")
        print(os.environ["TF_CPP_MIN_LOG_LEVEL"])
        """
    )
    err = proc.stderr.decode()
    assert "a warning of our own" in err
    assert ("published /models/retrieval/1" in err) is verbose  # the pipeline prints it once: logged with -v only
    assert ("Skipping full serialization" in err) is verbose
    assert ("a library warning" in err) is verbose
    assert proc.stdout.decode().strip() == ("1" if verbose else "3")


@pytest.mark.parametrize(
    "seconds, said", [(4.4, "4 s"), (59.6, "1 min 00 s"), (395, "6 min 35 s"), (3720, "1 h 02 min")]
)
def test_the_export_says_how_long_it_took(seconds, said):
    assert _duration(seconds) == said
