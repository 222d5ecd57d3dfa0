"""The CLI process keeps numpy's BLAS to one thread (no command does linear algebra), unless the user says otherwise."""

from __future__ import annotations

import os
import subprocess
import sys

PROBE = ("import aggregator.cli, numpy, os, threading; "
         "print(os.environ.get('OPENBLAS_NUM_THREADS'), len(os.listdir('/proc/self/task')))")


def _probe(env: dict[str, str]) -> tuple[str, int]:
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, check=True, capture_output=True, text=True)
    value, tasks = out.stdout.split()
    return value, int(tasks)


def test_blas_kept_to_one_thread_and_no_extra_threads_started() -> None:
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_NUM_THREADS"}
    value, tasks = _probe(env)
    assert value == "1"
    assert tasks == 1, f"importing numpy after the CLI started {tasks - 1} thread(s)"


def test_a_users_setting_wins() -> None:
    value, _ = _probe({**os.environ, "OPENBLAS_NUM_THREADS": "3"})
    assert value == "3"
