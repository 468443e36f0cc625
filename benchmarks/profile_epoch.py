"""Where the time of one MNIST epoch of seed 004's 158-parameter model goes.

Run from the repository root:  python benchmarks/profile_epoch.py [--data-dir DIR] [--epochs N]

Prints, from one run, on one TensorFlow thread as the harness trains (submissions/classroom_158.py, batch 1024):
1. a bare `model.fit(..., epochs=1)` on the 55,000 training images, no validation, and one epoch inside a longer fit;
2. the same optimizer steps with the fit loop taken away: fit's own compiled step (`model.train_function`)
   called once per pre-batched tensor, and all steps inside one tf.function (no Python between steps);
3. the forward pass alone: `model(x, training=False)` in a tf.function, one call per batch;
4. each layer alone, forward + the backward training needs, on random inputs of its recorded shape;
5. the arithmetic: multiply-accumulates x 3 (forward + backward) x 55,000 images at a measured matmul rate;
6. a cProfile of one model.fit(epochs=1) call: top functions by cumulative time, and by own time;
then a short conclusion. Every time is the median of --epochs repeats after one discarded call (which traces
the graphs), as CPU seconds of this process and, in brackets, wall seconds.
"""

from __future__ import annotations

import argparse
import cProfile
import math
import os
import pstats
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench import data, macs, train  # noqa: E402  (after the path is set)

VALIDATION_SIZE = 5000  # the harness's split, so the epoch has its 55,000 images
MATMUL_SIZE = 1024
PROFILE_ROWS = 12
OWN_ROWS = 6


def measure(run, repeats: int) -> tuple[float, float]:
    """Median (CPU, wall) seconds of run() over `repeats` calls, after one discarded call that traces graphs."""
    run()
    cpu, wall = [], []
    for _ in range(repeats):
        started = time.process_time(), time.perf_counter()
        run()
        cpu.append(time.process_time() - started[0])
        wall.append(time.perf_counter() - started[1])
    return statistics.median(cpu), statistics.median(wall)


def show(label: str, seconds: tuple[float, float], width: int = 58) -> None:
    print(f"   {label:{width}} {seconds[0]:7.3f} s ({seconds[1]:.3f} s)")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=os.environ.get(data.DATA_DIR_ENV, str(REPO.parent / "shared" / "data")),
                        help="folder holding mnist.npz (default: $BENCH_DATA_DIR, else ../shared/data)")
    parser.add_argument("--epochs", type=int, default=3, help="steady-state repeats of each measurement (default 3)")
    args = parser.parse_args()
    repeats = args.epochs

    # What the harness's worker does before any op: one intra-op and one inter-op thread, seed 0, deterministic ops.
    train._prepare_tensorflow(1, 0)
    import keras
    import numpy as np
    import tensorflow as tf

    dataset = data.load("mnist", args.data_dir)
    (x_fit, y_fit), _ = data.split_validation(dataset.x_train, dataset.y_train, VALIDATION_SIZE)
    y_onehot = np.eye(10, dtype="float32")[y_fit]
    entry = train.import_submission(REPO / "submissions" / "classroom_158.py")
    batch_size = entry.TRAINING["batch_size"]
    keras.utils.set_random_seed(0)
    model = entry.build_model()
    images, steps = len(x_fit), math.ceil(len(x_fit) / batch_size)
    print(f"submissions/classroom_158.py: {model.count_params()} parameters, {images:,} images, batch {batch_size}, "
          f"{steps} steps an epoch, jit_compile={model.jit_compile}; median of {repeats} after one discarded, CPU s (wall s)")

    print("1. the fit loop")
    fit = measure(lambda: model.fit(x_fit, y_onehot, batch_size=batch_size, epochs=1, verbose=0), repeats)
    show("model.fit(epochs=1), no validation", fit)
    # Each fit call converts the arrays to tensors again; the harness calls fit once, so also time epochs inside one fit.
    marks = []
    mark = lambda epoch, logs: marks.append((time.process_time(), time.perf_counter()))
    model.fit(x_fit, y_onehot, batch_size=batch_size, epochs=repeats + 1, verbose=0,
              callbacks=[keras.callbacks.LambdaCallback(on_epoch_begin=mark, on_epoch_end=mark)])
    timed = [(end[0] - begin[0], end[1] - begin[1]) for begin, end in zip(marks[2::2], marks[3::2])]
    in_fit = statistics.median(cpu for cpu, _ in timed), statistics.median(wall for _, wall in timed)
    show(f"one epoch inside model.fit(epochs={repeats + 1}), no validation", in_fit)

    print("2. the same steps without the fit loop (tensors already batched)")
    batches = [(tf.constant(x_fit[i:i + batch_size]), tf.constant(y_onehot[i:i + batch_size]))
               for i in range(0, images, batch_size)]

    def step_calls():
        # model.train_function is the tf.function fit itself traced; given a plain iterable it runs one step on it.
        for batch in batches:
            model.train_function([batch])

    step = measure(step_calls, repeats)
    show(f"model.train_function, {steps} calls from Python", step)

    # All steps in one graph: a while loop over the full batches, then the short last one.
    full_x, full_y = tf.stack([x for x, _ in batches[:-1]]), tf.stack([y for _, y in batches[:-1]])
    last_x, last_y = batches[-1]

    @tf.function
    def epoch_in_graph():
        for i in tf.range(len(batches) - 1):
            model.train_step((full_x[i], full_y[i]))
        model.train_step((last_x, last_y))

    in_graph = measure(epoch_in_graph, repeats)
    show(f"model.train_step x {steps} inside one tf.function", in_graph)

    print("3. forward pass only")
    forward_step = tf.function(lambda x: model(x, training=False))
    forward = measure(lambda: [forward_step(x) for x, _ in batches], repeats)
    show(f"model(x, training=False) in a tf.function, {steps} calls", forward)

    print(f"4. each layer alone over {steps} batches, forward + backward (random inputs of the recorded shape)")
    layer_rows, weights_before = [], False
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        # Training differentiates a layer's input only if some earlier layer has weights to update;
        # before the first such layer TensorFlow runs the forward pass alone, so this does too.
        wrt_input = weights_before
        weights_before = weights_before or bool(layer.trainable_variables)

        @tf.function
        def one_batch(x, layer=layer, wrt_input=wrt_input):
            with tf.GradientTape() as tape:
                tape.watch(x)
                y = layer(x, training=True)
            sources = layer.trainable_variables + ([x] if wrt_input else [])
            # A non-scalar target gets an upstream gradient of ones: the backward pass with no loss op added.
            return tape.gradient(y, sources) if sources else y

        shape = tuple(layer.input.shape[1:])
        inputs = [tf.random.uniform((len(x),) + shape, seed=0) for x, _ in batches]
        seconds = measure(lambda: [one_batch(x) for x in inputs], repeats)
        backward = " + ".join(["weights"] * bool(layer.trainable_variables) + ["input"] * wrt_input) or "none (forward only)"
        layer_rows.append((layer, seconds))
        show(f"{layer.name:19} {str(shape):12} -> {str(tuple(layer.output.shape[1:])):12} backward: {backward}", seconds, 76)
    layers_cpu = sum(seconds[0] for _, seconds in layer_rows)
    # Each layer above pays TensorFlow's per-call cost once a batch; a call that does nothing shows how much.
    empty = tf.function(lambda x: x)
    show(f"{'an empty tf.function, for scale':76}", measure(lambda: [empty(x) for x, _ in batches], repeats), 76)
    print(f"   sum of layers {layers_cpu:.3f} s CPU; step minus layers (loss, metrics, optimizer, op dispatch): "
          f"{step[0] - layers_cpu:.3f} s")

    print("5. the arithmetic")
    per_image = macs.count(model).macs
    a, b = tf.random.uniform((MATMUL_SIZE, MATMUL_SIZE)), tf.random.uniform((MATMUL_SIZE, MATMUL_SIZE))
    matmul = tf.function(lambda: tf.matmul(a, b))
    matmul_cpu = measure(matmul, max(repeats, 5))[0]
    gflops = 2 * MATMUL_SIZE ** 3 / matmul_cpu / 1e9  # a multiply-accumulate is two floating-point operations
    epoch_flops = 2 * 3 * per_image * images  # forward, gradient w.r.t. inputs, gradient w.r.t. weights
    arithmetic = epoch_flops / (gflops * 1e9)
    print(f"   {per_image:,} MACs per image x 3 x {images:,} images = {epoch_flops / 2 / 1e9:.2f} GMAC "
          f"({epoch_flops / 1e9:.2f} GFLOP) an epoch")
    print(f"   {MATMUL_SIZE}x{MATMUL_SIZE} float32 matmul, 1 thread: {matmul_cpu * 1e3:.1f} ms CPU = {gflops:.1f} GFLOP/s; "
          f"the epoch's arithmetic at that rate: {arithmetic:.3f} s")

    print("6. cProfile of one model.fit(epochs=1) call (wall seconds under the profiler)")
    profiler = cProfile.Profile()
    profiler.runcall(model.fit, x_fit, y_onehot, batch_size=batch_size, epochs=1, verbose=0)
    # stats: (file, line, function) -> (primitive calls, calls, own time, cumulative time, callers)
    stats = pstats.Stats(profiler).stats
    # The cumulative list is mostly one chain of wrappers around the step; own time says where the rest went.
    for ordering, column, rows in (("cumulative time", 3, PROFILE_ROWS), ("own time", 2, OWN_ROWS)):
        print(f"   top {rows} by {ordering}:  {'cumtime':>8} {'tottime':>8} {'calls':>6}  function")
        for (file, line, function), (_, calls, own, cumulative, _) in sorted(stats.items(), key=lambda item: -item[1][column])[:rows]:
            where = f"{Path(file).parent.name}/{Path(file).name}:{line}" if line else file
            print(f"   {'':{len(ordering) + 11}} {cumulative:8.3f} {own:8.3f} {calls:6d}  {function} ({where})")

    print("Conclusion (CPU seconds)")
    print(f"   the steps called directly take {step[0] / in_fit[0]:.0%} of an epoch inside fit ({in_fit[0]:.3f} s), all in one "
          f"graph {in_graph[0] / in_fit[0]:.0%}: the fit loop's iterator and callbacks cost {in_fit[0] - step[0]:.3f} s an "
          f"epoch, and each fit call {fit[0] - in_fit[0]:.3f} s more to set up")
    heaviest, heaviest_seconds = max(layer_rows, key=lambda row: row[1][0])
    print(f"   the heaviest layer is {heaviest.name} ({heaviest_seconds[0] / layers_cpu:.0%} of the layers' time); "
          f"the forward pass is {forward[0] / step[0]:.0%} of a step's time")
    bound = "per-op and memory costs, not multiply-accumulates" if arithmetic < step[0] / 4 else "largely arithmetic"
    print(f"   the arithmetic at matmul speed would be {arithmetic:.3f} s, {arithmetic / step[0]:.1%} of the step time: "
          f"the step is bound by {bound}")


if __name__ == "__main__":
    main()
