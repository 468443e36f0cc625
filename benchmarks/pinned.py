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


# Each instruction set a measurement can be capped to, as the environment that caps both libraries: oneDNN (which
# TensorFlow's kernels use) and XLA's CPU code generator (JAX's). "native": whatever the CPU has.
ISA_CAPS = {
    "native": {},
    "avx2": {"ONEDNN_MAX_CPU_ISA": "AVX2", "XLA_FLAGS": "--xla_cpu_max_isa=AVX2"},
}


def cpu_has_avx512() -> bool:
    try:
        return " avx512f" in Path("/proc/cpuinfo").read_text()
    except OSError:
        return False


def run_pinned(script: str, arguments: list[str], cpu: int, what: str, isa: str = "native",
               env: dict | None = None) -> dict:
    """Run `python -c script *arguments` from the repository root on core `cpu`, on TensorFlow's Keras, with
    ISA_CAPS[isa] and `env` added to this process's environment.

    Returns the JSON object the script prints as its last line. Raises SystemExit naming `what` (the run, for
    the person reading) with the end of the script's stderr when it exits non-zero.
    """
    pin = ["taskset", "-c", str(cpu)] if shutil.which("taskset") else []
    env = {**os.environ, "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "2", "KERAS_BACKEND": "tensorflow", **ISA_CAPS[isa],
           **(env or {})}
    done = subprocess.run([*pin, sys.executable, "-c", script, *arguments], capture_output=True, text=True,
                          env=env, cwd=REPO)
    if done.returncode != 0:
        raise SystemExit(f"{what} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])
