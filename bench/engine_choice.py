"""`engine = "auto"`: train on whichever path, bench.engine or `model.fit`, takes less CPU a step for this model on
this machine, measured in the training process before the first epoch.

Why measure rather than rule: the same entry is faster on the engine on one CPU and slower on another. On a 2-core
AMD EPYC with AVX-512, `benchmarks/speed.py` measured the engine alone 1.89x as fast as `model.fit` for
`classroom_158` and 0.58x for `frontier_under1000`; capped to AVX2 on the same machine 3.67x and 1.02x; on an
AVX2-only machine earlier, 6.55x and 3.03x (README, "The training engine"). Neither the instruction set nor the
model's size orders them, so `auto` times both paths here, on this run's own batches.

What is timed: `PROBE_STEPS` optimizer steps on the first full batches of the fit images, in order, for each path,
`PROBE_ROUNDS` times in turn (engine, fit, engine, fit), keeping each path's fastest round: process CPU time (every
thread's), after each path's compile or trace. The engine trains a copy of the weights; `model.fit`'s steps run
`train_on_batch`, after which every model and optimizer variable (random-seed state included) is put back, so the
run that follows starts from the state it would have had without the probe (tests/test_engine_choice.py checks
that a run `auto` sends to `model.fit` has the history of one under `engine = "keras"`, bit for bit). Its cost is
the engine's compile (which a run on the engine pays again for its epoch-long scan) and 2 x PROBE_STEPS x
PROBE_ROUNDS steps: a few seconds, said in the note.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from bench.status import JAX_ENGINE, KERAS_ENGINE

# Steps per round: enough that a round of a small model lasts well past the clock's resolution and a step's
# fixed overhead (the dispatch that a longer run shares) is in it as it is in an epoch; few enough that the probe
# of a big model costs a fraction of an epoch.
PROBE_STEPS = 16
PROBE_ROUNDS = 2


@dataclass
class Choice:
    """Which path trains this run, and the measurements behind it (CPU seconds per optimizer step)."""
    engine: str  # bench.status.JAX_ENGINE or KERAS_ENGINE
    engine_step_seconds: float | None
    keras_step_seconds: float | None
    steps: int
    probe_seconds: float

    def note(self) -> str:
        """One line for the record's notes: what was measured and what it decided."""
        path = "the batch-minor engine" if self.engine == JAX_ENGINE else "model.fit"
        if self.steps == 0:
            return f"engine auto: fewer images than one batch, nothing to measure; trained with {path}"
        return (f"engine auto: a training step took {self.engine_step_seconds * 1e3:.2f} ms of CPU on the batch-minor "
                f"engine and {self.keras_step_seconds * 1e3:.2f} ms under model.fit (best of {PROBE_ROUNDS} rounds of "
                f"{self.steps} steps; measuring took {self.probe_seconds:.1f} s): trained with {path}")


def choose(found, model, x_fit: np.ndarray, y_fit: np.ndarray, batch_size: int, labels_for_fit: np.ndarray) -> Choice:
    """Time both paths on `x_fit`'s first batches and pick the one with fewer CPU seconds a step (the engine on a tie).

    `found`: bench.engine's plan for `model` (so the engine runs it); x_fit (images, *input_shape) float32, y_fit
    (images,) integer labels for the engine, `labels_for_fit` the same labels as `model.fit` is given them (one-hot
    or sparse). The model and its optimizer are left as they were."""
    from bench import engine

    started = time.process_time()
    steps = min(PROBE_STEPS, len(x_fit) // batch_size)
    if steps == 0:
        return Choice(JAX_ENGINE, None, None, 0, 0.0)
    images = steps * batch_size
    engine_round = engine.step_timer(found, x_fit[:images], y_fit[:images], batch_size)
    keras_round = _FitStepTimer(model, x_fit[:images], labels_for_fit[:images], batch_size)
    engine_seconds, keras_seconds = [], []
    for _ in range(PROBE_ROUNDS):
        engine_seconds.append(engine_round())
        keras_seconds.append(keras_round())
    keras_round.restore()
    best_engine, best_keras = min(engine_seconds), min(keras_seconds)
    path = JAX_ENGINE if best_engine <= best_keras else KERAS_ENGINE
    return Choice(path, best_engine, best_keras, steps, time.process_time() - started)


class _FitStepTimer:
    """Rounds of `train_on_batch` (the train function `model.fit` then reuses), and `restore()` to undo them."""

    def __init__(self, model, x: np.ndarray, y: np.ndarray, batch_size: int):
        self.model, self.batch_size = model, batch_size
        self.x, self.y = x, y
        # Built before the snapshot, so the snapshot holds the optimizer's starting slots (fit would build the same).
        model.optimizer.build(model.trainable_variables)
        self.variables = list(model.variables) + list(model.optimizer.variables)
        self.saved = [np.array(variable.numpy(), copy=True) for variable in self.variables]
        self.model.train_on_batch(x[:batch_size], y[:batch_size])  # the trace

    def __call__(self) -> float:
        start = time.process_time()
        for first in range(0, len(self.x), self.batch_size):
            self.model.train_on_batch(self.x[first:first + self.batch_size], self.y[first:first + self.batch_size])
        return (time.process_time() - start) / (len(self.x) // self.batch_size)

    def restore(self) -> None:
        for variable, value in zip(self.variables, self.saved):
            variable.assign(value)
        self.model.reset_metrics()
