"""What `bench evaluate` costs beyond a bare `model.fit` of the same model, data and epochs, and what the
sandbox and the audit of the exported model add to a run.

Run from the repository root:  python benchmarks/harness_overhead.py [--entry PATH] [--epochs N] [--repeats N]

Three sides run in fresh processes, interleaved, on the same training/validation split: a bare script,
`python -m bench evaluate --force --sandbox off` and the same with `--sandbox required` (bubblewrap).
The bare script and the training stage are timed from just after `import tensorflow` to the end of
training (TensorFlow's own start-up is printed separately); the runner records each stage's wall time
(`stage_seconds`: the training and audit subprocesses, start-up included) and the worker the export's.
Targets: the sandbox slows training by under 3 % (`model.fit` ratio, sandboxed / off), and the fixed cost
per run (export + audit stage + the sandbox's start-up) stays under 5 s.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

BARE = textwrap.dedent("""
    import json, sys, time, importlib.util
    started = time.perf_counter()
    import keras, tensorflow as tf
    imported = time.perf_counter()
    import numpy as np
    from bench import data
    entry, epochs, data_dir, validation_size, seed = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
    keras.utils.set_random_seed(seed)
    spec = importlib.util.spec_from_file_location("entry", entry)
    module = importlib.util.module_from_spec(spec); spec.loader.exec_module(module)
    dataset = data.load("mnist", data_dir)
    (x_fit, y_fit), (x_val, y_val) = data.split_validation(dataset.x_train, dataset.y_train, validation_size)
    model = module.build_model()
    one_hot = lambda y: np.eye(10, dtype="float32")[y]
    fit_started = time.perf_counter()
    model.fit(x_fit, one_hot(y_fit), validation_data=(x_val, one_hot(y_val)), epochs=epochs,
              batch_size=module.TRAINING["batch_size"], verbose=0)
    fit_seconds = time.perf_counter() - fit_started
    accuracy = float(np.mean(model.predict(dataset.x_test, verbose=0).argmax(-1) == dataset.y_test))
    print(json.dumps({"tensorflow_import": imported - started, "after_import": time.perf_counter() - imported,
                      "fit": fit_seconds, "test_accuracy": accuracy}))
""")


def run_bare(entry, epochs, data_dir, validation_size, env):
    out = subprocess.run([sys.executable, "-c", BARE, entry, str(epochs), data_dir, str(validation_size), "0"],
                         capture_output=True, text=True, env=env, cwd=REPO, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def run_harness(entry, epochs, data_dir, env, sandbox):
    with tempfile.TemporaryDirectory() as results:
        subprocess.run([sys.executable, "-m", "bench", "evaluate", entry, "--seeds", "1", "--epochs", str(epochs), "--force",
                        "--sandbox", sandbox, "--data-dir", data_dir, "--results", results, "--leaderboard", f"{results}/board.md"],
                       capture_output=True, text=True, env=env, cwd=REPO, check=True)
        record = json.loads(next(Path(results).rglob("seed0.json")).read_text())
    stages = record["stage_seconds"]
    return {**record["worker_seconds"], "fit": record["train_seconds"], "test_accuracy": record["test_accuracy"],
            "export": record["export_seconds"], "train_stage": stages["train"], "audit_stage": stages["audit"],
            # the training stage beyond TensorFlow's start-up, the worker's own work and the export: process and sandbox start-up
            "startup": stages["train"] - record["worker_seconds"]["tensorflow_import"] - record["worker_seconds"]["after_import"],
            "wall": record["wall_seconds"]}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entry", default="submissions/classroom_158.py")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--data-dir", default=os.environ.get("BENCH_DATA_DIR", "../shared/data"))
    args = parser.parse_args()
    # One fixed thread budget for both sides: the comparison is about the harness, not the scheduler.
    env = {**os.environ, "BENCH_THREADS": "2", "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": str(REPO)}
    bare, off, boxed = [], [], []
    for _ in range(args.repeats):
        bare.append(run_bare(args.entry, args.epochs, args.data_dir, 5000, env))
        off.append(run_harness(args.entry, args.epochs, args.data_dir, env, "off"))
        boxed.append(run_harness(args.entry, args.epochs, args.data_dir, env, "required"))
    best = lambda runs, key: min(r[key] for r in runs)
    print(f"entry {args.entry}, {args.epochs} epochs on MNIST, best of {args.repeats} interleaved runs")
    print(f"{'':38}{'bare model.fit':>15}{'sandbox off':>13}{'bubblewrap':>12}{'boxed/bare':>11}{'boxed/off':>10}")
    for key, label in (("fit", "model.fit seconds"), ("tensorflow_import", "TensorFlow import (start-up)")):
        b, o, x = best(bare, key), best(off, key), best(boxed, key)
        print(f"{label:38}{b:15.2f}{o:13.2f}{x:12.2f}{x / b:11.3f}{x / o:10.3f}")
    for key, label in (("export", "export (SavedModel + .keras)"), ("startup", "process start-up beyond TensorFlow"),
                       ("audit_stage", "audit stage (load, count, predict)"), ("wall", "whole run, wall")):
        o, x = best(off, key), best(boxed, key)
        print(f"{label:38}{'':15}{o:13.2f}{x:12.2f}{'':11}{x / o:10.3f}")
    fixed = best(boxed, "export") + best(boxed, "audit_stage") + best(boxed, "startup") - best(off, "startup")
    print(f"{'test accuracy':38}{bare[0]['test_accuracy']:15.4f}{off[0]['test_accuracy']:13.4f}{boxed[0]['test_accuracy']:12.4f}")
    print(f"sandbox's cost to training: {100 * (best(boxed, 'fit') / best(off, 'fit') - 1):+.1f} % (target under 3 %)")
    print(f"fixed cost per run (export + audit stage + sandbox start-up): {fixed:.2f} s (target under 5 s)")


if __name__ == "__main__":
    main()
