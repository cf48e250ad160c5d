"""The benchmarks' and the process-level tests' children are stopped by one helper: asked to
stop, then killed if they do not, and reaped either way (no zombie, no child left running)."""

from __future__ import annotations

import signal
import subprocess
import sys

from bench.common import stop_process

#: prints once its SIGTERM handling is set, then waits far longer than any test
CHILD = ("import signal, sys, time\n"
         "if sys.argv[1] == 'ignore':\n"
         "    signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
         "print('ready', flush=True)\n"
         "time.sleep(120)\n")


def child(on_term: str) -> subprocess.Popen[str]:
    proc = subprocess.Popen([sys.executable, "-c", CHILD, on_term], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    with proc.stdout:  # it writes nothing more
        assert proc.stdout.readline() == "ready\n"
    return proc


def test_a_child_that_stops_on_sigterm_is_not_killed() -> None:
    proc = child("obey")
    stop_process(proc, timeout_s=30)
    assert proc.returncode == -signal.SIGTERM


def test_a_child_that_ignores_sigterm_is_killed_and_reaped() -> None:
    proc = child("ignore")
    stop_process(proc, timeout_s=0.5)
    assert proc.returncode == -signal.SIGKILL
