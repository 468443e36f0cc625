"""Candidate training engines for tiny models, measured against today's path (issue 16's first step).

Run from the repository root:  python benchmarks/engine_probe.py [--entry PATH ...] [--epochs N] [--repeats N]
Needs JAX (pip install "jax[cpu]"); the harness itself does not use these engines yet.

Each variant runs in a fresh process pinned to one core (taskset, when there is one) with one thread, on
the same MNIST training images (49,152 of them, a whole number of batches for batch sizes up to 1,024),
interleaved A B C ... A B C ... over `--repeats`; the best repeat of each is kept. The clock is the
process's CPU time for `--epochs` epochs after one warm-up epoch (compilation excluded):
- `tensorflow-fit`: today's path, Keras's `model.fit` on TensorFlow;
- `jax-fit`: `model.fit` with Keras on JAX, its convolutions and average pooling in bench.tap_sum's form;
- `jax-scan`: Keras on JAX without `fit`: the stateless train step (`stateless_call`, the loss, `jax.grad`,
  `optimizer.stateless_apply`) run by one jitted `lax.scan` over an epoch's batches, with tap-sum ops;
- `jax-scan-vmap3`: the same with three seeds' copies of the model trained as one program (`jax.vmap`).
Prints CPU seconds per seed-epoch and the ratio today / variant (above 1: faster than today).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TRAIN_IMAGES = 49_152
VARIANTS = {"tensorflow-fit": ("tensorflow", "fit", 1), "jax-fit": ("jax", "fit", 1),
            "jax-scan": ("jax", "scan", 1), "jax-scan-vmap3": ("jax", "scan", 3)}

PROBE = textwrap.dedent("""
    import importlib.util, json, os, sys, time
    entry, mode, seeds, epochs, data_file = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
    import numpy as np, keras
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf
        tf.config.threading.set_intra_op_parallelism_threads(1)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    else:
        from bench import tap_sum
        tap_sum.install()
    spec = importlib.util.spec_from_file_location("entry", entry)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    with np.load(data_file) as arrays:
        x = (arrays["x_train"][:TRAIN_IMAGES] / 255).astype("float32")
        y = np.eye(10, dtype="float32")[arrays["y_train"][:TRAIN_IMAGES]]
    batch = getattr(module, "TRAINING", {}).get("batch_size", 128)

    def built(seed):
        keras.utils.set_random_seed(seed)
        model = module.build_model()
        if not model.compiled:
            model.compile(getattr(module, "TRAINING", {}).get("optimizer", "adam"), "categorical_crossentropy")
        return model

    if mode == "fit":
        model = built(0)
        model.fit(x[:2 * batch], y[:2 * batch], batch_size=batch, epochs=1, verbose=0)  # compile the step
        started = time.process_time()
        model.fit(x, y, batch_size=batch, epochs=epochs, verbose=0)
    else:
        import jax, jax.numpy as jnp
        models = [built(seed) for seed in range(seeds)]
        for model in models:
            model.optimizer.build(model.trainable_variables)
        model = models[0]
        def stacked(variables_of):  # each variable's values over the seeds' models, stacked on a new first axis
            return [jnp.stack(values) for values in zip(*[[v.value for v in variables_of(m)] for m in models])]

        state = (stacked(lambda m: m.trainable_variables), stacked(lambda m: m.non_trainable_variables),
                 stacked(lambda m: m.optimizer.variables))
        loss = keras.losses.get(model.loss)
        xs, ys = jnp.asarray(x), jnp.asarray(y)

        def step(state, data):
            trainable, non_trainable, optimizer = state
            def loss_of(trainable):
                predicted, updated = model.stateless_call(trainable, non_trainable, data[0], training=True)
                return jnp.mean(loss(data[1], predicted)), updated
            (_, non_trainable), grads = jax.value_and_grad(loss_of, has_aux=True)(trainable)
            trainable, optimizer = model.optimizer.stateless_apply(optimizer, grads, trainable)
            return (trainable, non_trainable, optimizer), None

        def epoch(state, order):
            batches = (xs[order].reshape(-1, batch, *xs.shape[1:]), ys[order].reshape(-1, batch, ys.shape[-1]))
            return jax.lax.scan(step, state, batches)[0]

        run = jax.jit(jax.vmap(epoch))
        orders = jnp.stack([jnp.asarray(np.random.default_rng(seed).permutation(TRAIN_IMAGES)) for seed in range(seeds)])
        jax.block_until_ready(run(state, orders))  # compile
        started = time.process_time()
        for _ in range(epochs):
            state = run(state, orders)
        jax.block_until_ready(state)
    print(json.dumps({"cpu_per_seed_epoch": (time.process_time() - started) / epochs / seeds}))
""").replace("TRAIN_IMAGES", str(TRAIN_IMAGES))


def measure(entry: str, variant: str, epochs: int, data_file: str) -> float:
    backend, mode, seeds = VARIANTS[variant]
    pin = ["taskset", "-c", "0"] if shutil.which("taskset") else []
    env = {**os.environ, "KERAS_BACKEND": backend, "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "2",
           "XLA_FLAGS": "--xla_cpu_multi_thread_eigen=false", "TF_NUM_INTRAOP_THREADS": "1", "TF_NUM_INTEROP_THREADS": "1"}
    done = subprocess.run([*pin, sys.executable, "-c", PROBE, entry, mode, str(seeds), str(epochs), data_file],
                          capture_output=True, text=True, env=env, cwd=REPO)
    if done.returncode != 0:
        raise SystemExit(f"{variant} on {entry} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])["cpu_per_seed_epoch"]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entry", action="append", help="entry file (default: classroom_158 and frontier_under1000)")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "mnist.npz"), help="mnist.npz")
    args = parser.parse_args()
    entries = args.entry or ["submissions/classroom_158.py", "submissions/frontier_under1000.py"]
    print(f"CPU seconds per seed-epoch, one core, one thread, best of {args.repeats} interleaved repeats, {args.epochs} epochs each "
          f"after a warm-up; {TRAIN_IMAGES:,} MNIST training images; load average at the start {os.getloadavg()[0]:.1f}")
    for entry in entries:
        best = {variant: float("inf") for variant in VARIANTS}
        for _ in range(args.repeats):
            for variant in VARIANTS:
                best[variant] = min(best[variant], measure(entry, variant, args.epochs, args.data))
        today = best["tensorflow-fit"]
        print(f"{Path(entry).stem}: " + "; ".join(f"{v} {s:.2f} s ({today / s:.2f}x)" for v, s in best.items()))
    print(f"load average at the end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
