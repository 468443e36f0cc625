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
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


# Each instruction set a measurement can be capped to, as the environment that caps both libraries: oneDNN (which
# TensorFlow's kernels use) and XLA's CPU code generator (JAX's). "native": whatever the CPU has.
ISA_CAPS = {
    "native": {},
    "avx2": {"ONEDNN_MAX_CPU_ISA": "AVX2", "XLA_FLAGS": "--xla_cpu_max_isa=AVX2"},
}


# Defined in every measurement's process before its script runs: the set-up bench.train does for an entry, so each
# script says only what it measures. The script calls train._prepare_tensorflow(1, seed) before any of them.
PRELUDE = textwrap.dedent("""
    import json, sys, time
    from bench import config, engine, train


    def mnist(data_file, fit_images, validation_images, validation_last=True):
        \"\"\"(x_fit, y_fit, x_val, y_val) from mnist.npz's training images, scaled to [0, 1]: the first `fit_images`,
        validated on the last `validation_images` (or, not validation_last, on the ones right after the fit images).\"\"\"
        import numpy as np
        with np.load(data_file) as arrays:
            x, y = (arrays["x_train"] / 255).astype("float32"), arrays["y_train"].astype("int64")
        start = len(x) - validation_images if validation_last else fit_images
        return x[:fit_images], y[:fit_images], x[start:start + validation_images], y[start:start + validation_images]


    def entry_model(entry, settings, x_fit):
        \"\"\"(module, training, challenge, model, label_kind) for the entry file, as bench.train builds and compiles
        it under a challenge of `settings` (a config dict).\"\"\"
        challenge = config.from_dict(settings)
        module = train.import_submission(train.Path(entry))
        training = train.validated_training(module, challenge)
        model = train.build(module, x_fit, 10, {}, None)
        return module, training, challenge, model, train.compile_if_needed(model, module, training, challenge, [])


    def epoch_clock():
        \"\"\"A callback and the list it appends the process's CPU time to at each epoch's end.\"\"\"
        import keras
        ends = []

        class Clock(keras.callbacks.Callback):
            def on_epoch_end(self, epoch, logs=None):
                ends.append(time.process_time())

        return Clock(), ends
""")


def cpu_has_avx512() -> bool:
    try:
        return " avx512f" in Path("/proc/cpuinfo").read_text()
    except OSError:
        return False


def run_pinned(script: str, arguments: list[str], cpu: int, what: str, isa: str = "native",
               env: dict | None = None) -> dict:
    """Run `python -c PRELUDE+script *arguments` from the repository root on core `cpu`, on TensorFlow's Keras,
    with ISA_CAPS[isa] and `env` added to this process's environment.

    Returns the JSON object the script prints as its last line. Raises SystemExit naming `what` (the run, for
    the person reading) with the end of the script's stderr when it exits non-zero.
    """
    pin = ["taskset", "-c", str(cpu)] if shutil.which("taskset") else []
    env = {**os.environ, "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "2", "KERAS_BACKEND": "tensorflow", **ISA_CAPS[isa],
           **(env or {})}
    done = subprocess.run([*pin, sys.executable, "-c", PRELUDE + textwrap.dedent(script), *arguments], capture_output=True, text=True,
                          env=env, cwd=REPO)
    if done.returncode != 0:
        raise SystemExit(f"{what} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])
