"""What `bench evaluate` costs beyond a bare `model.fit` of the same model, data and epochs.

Run from the repository root:  python benchmarks/harness_overhead.py [--entry PATH] [--epochs N] [--repeats N]

Both sides run in fresh processes, alternately, on the same training/validation split, and are timed from
just after `import tensorflow` to the test accuracy; TensorFlow's own start-up is printed separately.
The harness side is the real thing (`python -m bench evaluate --force`); its worker reports the split itself.
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


def run_harness(entry, epochs, data_dir, env):
    with tempfile.TemporaryDirectory() as results:
        subprocess.run([sys.executable, "-m", "bench", "evaluate", entry, "--seeds", "1", "--epochs", str(epochs), "--force",
                        "--data-dir", data_dir, "--results", results, "--leaderboard", f"{results}/board.md"],
                       capture_output=True, text=True, env=env, cwd=REPO, check=True)
        record = json.loads(next(Path(results).rglob("seed0.json")).read_text())
    return {**record["worker_seconds"], "fit": record["train_seconds"], "test_accuracy": record["test_accuracy"]}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entry", default="submissions/classroom_158.py")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--data-dir", default=os.environ.get("BENCH_DATA_DIR", "../shared/data"))
    args = parser.parse_args()
    # One fixed thread budget for both sides: the comparison is about the harness, not the scheduler.
    env = {**os.environ, "BENCH_THREADS": "2", "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": str(REPO)}
    bare, harness = [], []
    for _ in range(args.repeats):
        bare.append(run_bare(args.entry, args.epochs, args.data_dir, 5000, env))
        harness.append(run_harness(args.entry, args.epochs, args.data_dir, env))
    best = lambda runs, key: min(r[key] for r in runs)
    print(f"entry {args.entry}, {args.epochs} epochs on MNIST, best of {args.repeats} alternating runs")
    print(f"{'':34}{'bare model.fit':>16}{'bench evaluate':>16}{'ratio':>8}")
    for key, label in (("fit", "model.fit seconds"), ("after_import", "seconds after TensorFlow import"),
                       ("tensorflow_import", "TensorFlow import (start-up)")):
        b, h = best(bare, key), best(harness, key)
        print(f"{label:34}{b:16.2f}{h:16.2f}{h / b:8.3f}")
    print(f"{'test accuracy':34}{bare[0]['test_accuracy']:16.4f}{harness[0]['test_accuracy']:16.4f}")
    print("target: 'seconds after TensorFlow import' ratio <= 1.05")


if __name__ == "__main__":
    main()
