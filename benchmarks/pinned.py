"""One measurement in a fresh Python process pinned to one core, shared by speed.py and dead_units.py.

A fresh process per measurement keeps one run's compiled functions, caches and memory out of the next one's;
pinning (taskset, when there is one) keeps the scheduler from moving it between cores mid-measurement.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def run_pinned(script: str, arguments: list[str], cpu: int, what: str) -> dict:
    """Run `python -c script *arguments` from the repository root on core `cpu`, on TensorFlow's Keras.

    Returns the JSON object the script prints as its last line. Raises SystemExit naming `what` (the run, for
    the person reading) with the end of the script's stderr when it exits non-zero.
    """
    pin = ["taskset", "-c", str(cpu)] if shutil.which("taskset") else []
    env = {**os.environ, "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "2", "KERAS_BACKEND": "tensorflow"}
    done = subprocess.run([*pin, sys.executable, "-c", script, *arguments], capture_output=True, text=True,
                          env=env, cwd=REPO)
    if done.returncode != 0:
        raise SystemExit(f"{what} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])
