"""What `bench evaluate` costs beyond a bare `model.fit` of the same model, data and epochs, and what the
sandbox, the saved model and the audit (rebuild, count, predict) add to a run.

Run from the repository root:
    python benchmarks/harness_overhead.py [--entry PATH] [--epochs N] [--repeats N] [--baseline CHECKOUT]

Sides run in fresh processes, interleaved, on the same training/validation split: a bare script,
`python -m bench evaluate --force --sandbox off` and the same with `--sandbox required` (bubblewrap), and with
`--baseline` the sandboxed run of another checkout of bench (`git worktree add /tmp/base <commit>`), so a
change to the stages is measured side by side in one run. The bare script is timed from just after
`import tensorflow` to the end of `model.fit`; the harness's `train_seconds` is the runner's clock over the
whole training stage (start-up, training, finalize, saving; a baseline from before the runner answered
validations recorded its worker's own fit time instead), so it is printed beside the bare fit plus
TensorFlow's start-up. The runner records each stage's wall time (`stage_seconds`: the training and
audit subprocesses, start-up included) and `export_seconds` (last validation answer to the stage's end: saving
the model; a baseline's is its export call alone). Targets: the sandbox slows training by under 3 % (sandboxed / off), and the fixed cost per run
(export + audit stage + the sandbox's start-up) stays under 5 s.
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


def run_harness(entry, epochs, data_dir, env, sandbox, checkout=REPO):
    env = {**env, "PYTHONPATH": str(checkout)}
    with tempfile.TemporaryDirectory() as results:
        subprocess.run([sys.executable, "-m", "bench", "evaluate", str(REPO / entry), "--seeds", "1", "--epochs", str(epochs), "--force",
                        "--sandbox", sandbox, "--data-dir", data_dir, "--results", results, "--leaderboard", f"{results}/board.md",
                        "--config", str(REPO / "pyproject.toml")],
                       capture_output=True, text=True, env=env, cwd=checkout, check=True)
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
    parser.add_argument("--baseline", help="another checkout of bench, run sandboxed beside this one")
    args = parser.parse_args()
    data_dir = str(Path(args.data_dir).resolve())
    # One fixed thread budget for both sides: the comparison is about the harness, not the scheduler.
    env = {**os.environ, "BENCH_THREADS": "2", "TF_CPP_MIN_LOG_LEVEL": "2"}
    sides = {"bare": [], "off": [], "boxed": [], **({"baseline": []} if args.baseline else {})}
    for _ in range(args.repeats):
        sides["bare"].append(run_bare(args.entry, args.epochs, data_dir, 5000, {**env, "PYTHONPATH": str(REPO)}))
        sides["off"].append(run_harness(args.entry, args.epochs, data_dir, env, "off"))
        sides["boxed"].append(run_harness(args.entry, args.epochs, data_dir, env, "required"))
        if args.baseline:
            sides["baseline"].append(run_harness(args.entry, args.epochs, data_dir, env, "required", Path(args.baseline).resolve()))
    best = lambda side, key: min(r[key] for r in sides[side])
    for run in sides["bare"]:
        run["fit_and_import"] = run["fit"] + run["tensorflow_import"]
    print(f"entry {args.entry}, {args.epochs} epochs on MNIST, best of {args.repeats} interleaved runs")
    columns = ["off", "boxed", *(["baseline"] if args.baseline else [])]
    print(f"{'':40}{'sandbox off':>13}{'bubblewrap':>12}" + (f"{'baseline':>10}{'boxed/base':>11}" if args.baseline else ""))
    print(f"{'bare model.fit + TensorFlow import':40}{best('bare', 'fit_and_import'):13.2f}")
    for key, label in (("fit", "train_seconds (recorded)"), ("tensorflow_import", "TensorFlow import (start-up)"),
                       ("export", "export (model.keras; graph if custom)"), ("startup", "process start-up beyond TensorFlow"),
                       ("train_stage", "training stage, wall"), ("audit_stage", "audit stage (rebuild, count, predict)"),
                       ("wall", "whole run, wall")):
        values = [best(side, key) for side in columns]
        ratio = f"{values[1] / values[2]:11.3f}" if args.baseline else ""
        print(f"{label:40}" + "".join(f"{v:{13 if i == 0 else 12 if i == 1 else 10}.2f}" for i, v in enumerate(values)) + ratio)
    print(f"{'test accuracy':40}" + "".join(f"{sides[side][0]['test_accuracy']:{13 if i == 0 else 12 if i == 1 else 10}.4f}"
                                            for i, side in enumerate(columns)))
    print(f"sandbox's cost to training: {100 * (best('boxed', 'fit') / best('off', 'fit') - 1):+.1f} % (target under 3 %)")
    for side in columns[1:]:
        fixed = best(side, "export") + best(side, "audit_stage") + best(side, "startup") - best("off", "startup")
        print(f"fixed cost per run, {side} (export + audit stage + sandbox start-up): {fixed:.2f} s (target under 5 s)")


if __name__ == "__main__":
    main()
