"""How `bench` scales: --jobs, rendering a big board, re-running a cached board, and a run's per-epoch cost.

Run from the repository root:  python benchmarks/scale.py [--data-dir DIR]

Prints, from one run:
1. wall time of `evaluate --jobs 1` and `--jobs 2` on the same 6 generated digits entries (5 epochs each),
   their ratio (target >= 1.4x on 2 cores) and whether both gave the same records;
2. `leaderboard` on 1,000 synthetic records with per-image correctness: render time (target < 2 s) and whether TensorFlow was imported;
3. `evaluate` on an unchanged board of 200 cached MNIST entries x 3 seeds: wall time (target < 30 s),
   worker subprocesses started and whether TensorFlow was imported (targets: 0 and no);
4. seconds per epoch of seed 004's 158-parameter model on MNIST (batch 1024, one thread), in the harness's
   fit and in a bare model.fit on the same arrays, after the first epoch (which traces the graphs).
Every command runs in a fresh process, with the repository's pyproject.toml and results in a temporary folder.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402

from bench import config, data, discover, plan, results, runner, scoring  # noqa: E402  (after the path is set)

JOBS_ENTRIES = 6
JOBS_EPOCHS = 5
BOARD_RECORDS = 1000
TEST_IMAGES = 10_000
CACHED_ENTRIES = 200
PROBE_EPOCHS = 4
# Fields that say when and how fast a run went, not what it produced.
TIMING_FIELDS = {"wall_seconds", "train_seconds", "worker_seconds", "finished_at", "stage_seconds", "export_seconds", "audit_seconds"}

# Runs a CLI command in this fresh interpreter and reports what it cost; worker subprocesses are counted.
MEASURE = textwrap.dedent("""
    import json, resource, subprocess, sys, time
    started_workers = []
    class CountedPopen(subprocess.Popen):
        def __init__(self, *args, **kwargs):
            started_workers.append(args)
            super().__init__(*args, **kwargs)
    subprocess.Popen = CountedPopen
    from bench.cli import main
    began = time.perf_counter()
    code = main(sys.argv[1:])
    workers = resource.getrusage(resource.RUSAGE_CHILDREN)
    print(json.dumps({"code": code, "seconds": time.perf_counter() - began, "subprocesses": len(started_workers),
                      "worker_cpu_seconds": workers.ru_utime + workers.ru_stime, "tensorflow": "tensorflow" in sys.modules}))
""")


def cli(*args, env=None) -> dict:
    """`python -m bench ARGS` in a fresh process: exit code, seconds inside main(), subprocesses, TF imported."""
    began = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", MEASURE, *map(str, args)], cwd=REPO, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "2", **(env or {})})
    if done.returncode != 0:
        raise SystemExit(f"python -m bench {' '.join(map(str, args))} failed:\n{done.stdout[-3000:]}{done.stderr[-3000:]}")
    return {**json.loads(done.stdout.strip().splitlines()[-1]), "process_seconds": time.perf_counter() - began}


def small_entries(folder: Path) -> Path:
    """Six different small digits models."""
    folder.mkdir(parents=True)
    layers = [
        "keras.layers.Flatten(), keras.layers.Dense(16, activation='relu')",
        "keras.layers.Flatten(), keras.layers.Dense(32, activation='relu'), keras.layers.Dense(16, activation='relu')",
        "keras.layers.Flatten(), keras.layers.Dense(64, activation='tanh')",
        "keras.layers.Reshape((8, 8, 1)), keras.layers.Conv2D(8, 3, activation='relu'), keras.layers.Flatten()",
        "keras.layers.Reshape((8, 8, 1)), keras.layers.Conv2D(8, 3, activation='relu'), keras.layers.Conv2D(16, 3, activation='relu'), keras.layers.GlobalAveragePooling2D()",
        "keras.layers.Reshape((8, 8, 1)), keras.layers.SeparableConv2D(16, 3, activation='relu'), keras.layers.Flatten()",
    ]
    for number, hidden in enumerate(layers[:JOBS_ENTRIES]):
        (folder / f"small_{number}.py").write_text(textwrap.dedent(f'''\
            """Small digits model {number}."""
            import keras
            TRAINING = {{"batch_size": 64}}
            def build_model(input_shape, num_classes):
                return keras.Sequential([keras.Input(input_shape), {hidden}, keras.layers.Dense(num_classes, activation="softmax")])
            '''))
    return folder


def jobs_speedup(work: Path) -> None:
    entries = small_entries(work / "jobs_entries")
    timings, cpu, boards = {}, {}, {}
    load_before = os.getloadavg()[0]
    for jobs in (1, 2):
        out = work / f"jobs{jobs}"
        measured = cli("evaluate", entries, "--dataset", "digits", "--validation-size", "300", "--seeds", "1",
                       "--epochs", JOBS_EPOCHS, "--jobs", jobs, "--results", out, "--leaderboard", out / "board.md")
        timings[jobs], cpu[jobs] = measured["process_seconds"], measured["worker_cpu_seconds"]
        boards[jobs] = {r["entry"]: {k: v for k, v in r.items() if k not in TIMING_FIELDS} for r in results.load_all(out)}
    same = boards[1] == boards[2] and len(boards[1]) == JOBS_ENTRIES
    print(f"1. evaluate, {JOBS_ENTRIES} digits entries x {JOBS_EPOCHS} epochs, {os.cpu_count()} cores")
    print(f"   --jobs 1: {timings[1]:6.1f} s   --jobs 2: {timings[2]:6.1f} s   speed-up {timings[1] / timings[2]:.2f}x (target >= 1.4x)")
    print(f"   records identical apart from timings: {'yes' if same else 'NO'}")
    # Other processes on the cores take their share: the CPU the workers got per wall second says how much was left.
    print(f"   workers' CPU seconds: {cpu[1]:.1f} and {cpu[2]:.1f}, i.e. {cpu[1] / timings[1]:.2f} and {cpu[2] / timings[2]:.2f} "
          f"cores busy on average; load average before: {load_before:.1f}, after: {os.getloadavg()[0]:.1f}")


def synthetic_board(challenge: config.Challenge, submissions: list[discover.Submission], fingerprint: str,
                    failures: bool, per_image: bool = False) -> int:
    """Records whose cache keys match these submissions, as the runner stores them: OK, and with `failures`
    one entry in ten FAILED (evaluate retrains those, so a cached board has none); with `per_image`, each OK
    record holds its correctness on TEST_IMAGES test images, which the board's significance tests read."""
    rng = random.Random(0)
    runs = plan.plan(challenge, submissions, fingerprint, list(range(challenge.seeds)))
    for run in runs:
        params = 100 + int(run.submission.name.rsplit("_", 1)[1]) * 37
        failed = failures and run.submission.name.endswith("7")
        partial = {"status": "FAILED" if failed else "OK", "message": "ValueError: synthetic" if failed else "", "notes": []}
        if not failed:
            accuracy = min(0.995, 0.80 + 0.04 * rng.random() + 0.03 * len(str(params)))
            correct = [rng.random() < accuracy for _ in range(TEST_IMAGES)] if per_image else None
            partial.update(total_params=params, trainable_params=params, epochs=40, train_seconds=60.0,
                           val_accuracy=accuracy, test_accuracy=sum(correct) / TEST_IMAGES if per_image else accuracy,
                           nonzero_params=params, weight_tensors=[["float32", params, params]],
                           **({"test_correct": scoring.pack_correct(np.array(correct))} if per_image else {}),
                           history={"loss": [1.0, 0.5], "val_loss": [1.1, 0.6], "accuracy": [0.7, accuracy]})
        runner.store(challenge, run, partial, 61.0, 1, log=lambda line: None)
    return len(runs)


def leaderboard_render(work: Path) -> None:
    out, seeds = work / "board1000", 2
    challenge = config.load(REPO / "pyproject.toml", dataset="digits", seeds=seeds, results=str(out))
    fake = [discover.Submission(f"entry_{i:04d}", Path(f"entry_{i:04d}.py"), f"synthetic entry {i}", f"author {i % 40}",
                                f"{i:064x}", False) for i in range(BOARD_RECORDS // seeds)]
    count = synthetic_board(challenge, fake, "synthetic-fingerprint", failures=True, per_image=True)
    measured = cli("leaderboard", "--dataset", "digits", "--seeds", seeds, "--results", out, "--leaderboard", out / "board.md")
    print(f"2. leaderboard on {count} synthetic records ({len(fake)} entries x {seeds} seeds, each with its correctness on "
          f"{TEST_IMAGES:,} test images for the significance tests)")
    print(f"   render {measured['seconds']:.2f} s (target < 2 s; whole command with start-up {measured['process_seconds']:.2f} s); "
          f"TensorFlow imported: {'yes' if measured['tensorflow'] else 'no'}")


def cached_rerun(work: Path, data_dir: str) -> None:
    folder, out = work / "cached_entries", work / "cached_results"
    folder.mkdir()
    for i in range(CACHED_ENTRIES):
        (folder / f"entry_{i:03d}.py").write_text(textwrap.dedent(f'''\
            """Dense {i + 1} units."""
            import keras
            def build_model(input_shape, num_classes):
                return keras.Sequential([keras.Input(input_shape), keras.layers.Flatten(),
                                         keras.layers.Dense({i + 1}, activation="relu"), keras.layers.Dense(num_classes, activation="softmax")])
            '''))
    challenge = config.load(REPO / "pyproject.toml", data_dir=data_dir, results=str(out))
    dataset = data.load(challenge.dataset, challenge.data_dir, challenge.train_limit, challenge.test_limit)
    submissions = discover.find([str(folder)], challenge.submissions)
    count = synthetic_board(challenge, submissions, dataset.fingerprint(), failures=False)
    runs = plan.plan(challenge, submissions, dataset.fingerprint(), list(range(challenge.seeds)))
    if not all(results.is_cached(run.path, run.key["hash"]) for run in runs):
        raise SystemExit("the synthetic records do not match their cache keys: evaluate would train 200 entries")
    # The time limit only bounds the damage if a key ever mismatched anyway; cache hits never start a worker.
    measured = cli("evaluate", folder, "--data-dir", data_dir, "--time-limit", 5, "--jobs", 1,
                   "--results", out, "--leaderboard", out / "board.md")
    print(f"3. evaluate on an unchanged board: {CACHED_ENTRIES} cached {challenge.dataset} entries x {challenge.seeds} seeds ({count} records)")
    print(f"   {measured['seconds']:.2f} s (target < 30 s; whole command with start-up {measured['process_seconds']:.2f} s); "
          f"worker subprocesses: {measured['subprocesses']}; TensorFlow imported: {'yes' if measured['tensorflow'] else 'no'}")


def epoch_cost(data_dir: str) -> None:
    probe = subprocess.run([sys.executable, __file__, "--epoch-probe", "--data-dir", data_dir], capture_output=True, text=True,
                           env={**os.environ, "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "2"}, cwd=REPO)
    if probe.returncode != 0:
        raise SystemExit(f"the epoch probe failed:\n{probe.stderr[-3000:]}")
    seconds = json.loads(probe.stdout.strip().splitlines()[-1])
    bare, bare_val, harness = seconds["bare"], seconds["bare_with_validation"], seconds["harness"]
    print(f"4. one epoch of submissions/classroom_158.py on MNIST (55,000 images, batch 1024, 1 thread), "
          f"median of epochs 2-{PROBE_EPOCHS}, CPU seconds (wall)")
    for label, value in (("bare model.fit", bare), ("bare model.fit + the same validation data", bare_val), ("bench's fit", harness)):
        print(f"   {label:44} {value['cpu']:.3f} s ({value['wall']:.3f} s)")
    print(f"   bench / bare: {harness['cpu'] / bare['cpu']:.3f}; bench / bare with validation: {harness['cpu'] / bare_val['cpu']:.3f}")


def epoch_probe(data_dir: str) -> None:
    """In this process: the same model, arrays and seed, trained three ways; prints per-epoch seconds as JSON."""
    import statistics
    import types

    from bench import train

    train._prepare_tensorflow(1, 0)
    import keras

    challenge = config.load(REPO / "pyproject.toml", data_dir=data_dir, max_epochs=PROBE_EPOCHS)
    dataset = data.load(challenge.dataset, challenge.data_dir)
    (x_fit, y_fit), (x_val, y_val) = data.split_validation(dataset.x_train, dataset.y_train, challenge.validation_size)
    entry = train.import_submission(REPO / "submissions" / "classroom_158.py")

    class EpochClock(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.cpu, self.wall = [], []

        def on_epoch_begin(self, epoch, logs=None):
            self.started = time.process_time(), time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            self.cpu.append(time.process_time() - self.started[0])
            self.wall.append(time.perf_counter() - self.started[1])

    def model():
        keras.utils.set_random_seed(0)
        return entry.build_model()

    def bare(validation: bool):
        clock = EpochClock()
        extra = {"validation_data": (x_val, train.encode(y_val, "one_hot", 10))} if validation else {}
        model().fit(x_fit, train.encode(y_fit, "one_hot", 10), epochs=PROBE_EPOCHS, batch_size=1024, verbose=0, callbacks=[clock], **extra)
        return clock

    def harness():
        clock, built = EpochClock(), model()
        training = train.validated_training(entry, challenge)
        label_kind = train.compile_if_needed(built, entry, training, challenge, [])
        with_clock = types.SimpleNamespace(callbacks=lambda: [clock])  # the entry-callbacks hook, as a submission would use it
        train.fit(built, with_clock, training, challenge, {"entry": "classroom_158", "seed": 0}, label_kind, 10, x_fit, y_fit,
                  x_val, y_val, [])
        return clock

    measured = {}
    for name, run in (("bare", lambda: bare(False)), ("bare_with_validation", lambda: bare(True)), ("harness", harness)):
        clock = run()
        measured[name] = {"cpu": statistics.median(clock.cpu[1:]), "wall": statistics.median(clock.wall[1:])}
    print(json.dumps(measured))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=os.environ.get(data.DATA_DIR_ENV, str(REPO.parent / "shared" / "data")),
                        help="folder holding mnist.npz (default: $BENCH_DATA_DIR, else ../shared/data)")
    parser.add_argument("--epoch-probe", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    data_dir = str(Path(args.data_dir).resolve())
    if args.epoch_probe:
        return epoch_probe(data_dir)
    with tempfile.TemporaryDirectory(prefix="bench-scale-") as work:
        jobs_speedup(Path(work))
        leaderboard_render(Path(work))
        cached_rerun(Path(work), data_dir)
    epoch_cost(data_dir)


if __name__ == "__main__":
    main()
