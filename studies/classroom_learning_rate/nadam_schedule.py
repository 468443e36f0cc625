"""Is Keras 3's Nadam why seed 004's model learns more slowly here than in the seed's log?

Run from the repository root:  python studies/classroom_learning_rate/nadam_schedule.py [--epochs 140] [--seed 0]

Seed 004 ran tf.keras 2, whose Nadam warms its momentum up over thousands of steps:
mu_t = beta_1 * (1 - 0.5 * 0.96 ** (0.004 * t)). Keras 3 dropped the 0.004, so its momentum reaches
beta_1 within a few hundred steps. This script trains `submissions/classroom_158.py` at the seed's
learning rate (0.001) once with each schedule, on the harness's own training/validation split, and
prints the training loss and validation accuracy at a few epochs. The seed's log: loss 0.4407 at epoch 140.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
from keras import ops  # noqa: E402

from bench import data  # noqa: E402
from bench.train import import_submission  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
SEED_LEARNING_RATE = 0.001  # Nadam's default, which the seed's compile("nadam", ...) used
VALIDATION_SIZE = 5000  # the board's validation_size
TF_KERAS_2_SCHEDULE_DECAY = 0.004  # tf.keras 2's Nadam(schedule_decay=0.004) default


class TfKeras2Nadam(keras.optimizers.Nadam):
    """Keras 3's Nadam with tf.keras 2's slower momentum warm-up; everything else as Keras 3 does it."""

    def momentum_at(self, step, dtype):
        warm_up = ops.power(ops.cast(0.96, dtype), TF_KERAS_2_SCHEDULE_DECAY * step)
        return ops.cast(self.beta_1, dtype) * (1.0 - 0.5 * warm_up)

    def _backend_update_step(self, grads, trainable_variables, learning_rate):
        # Keep the running product of momenta in step with the slower schedule, then update the weights.
        dtype = self._u_product.dtype
        step = ops.cast(self.iterations + 1, dtype)
        self.assign(self._u_product, self._u_product * self.momentum_at(step, dtype))
        keras.optimizers.Optimizer._backend_update_step(self, grads, trainable_variables, learning_rate)

    def update_step(self, gradient, variable, learning_rate):
        dtype = variable.dtype
        step = ops.cast(self.iterations + 1, dtype)
        momentum_now, momentum_next = self.momentum_at(step, dtype), self.momentum_at(step + 1, dtype)
        product_now = ops.cast(self._u_product, dtype)
        beta_1, beta_2 = ops.cast(self.beta_1, dtype), ops.cast(self.beta_2, dtype)
        m = self._momentums[self._get_variable_index(variable)]
        v = self._velocities[self._get_variable_index(variable)]
        self.assign(m, beta_1 * m + (1 - beta_1) * gradient)
        self.assign(v, beta_2 * v + (1 - beta_2) * ops.square(gradient))
        nesterov_m = (momentum_next * m / (1 - product_now * momentum_next)
                      + (1 - momentum_now) * gradient / (1 - product_now))
        v_corrected = v / (1 - ops.power(beta_2, step))
        step_size = ops.cast(learning_rate, dtype)
        self.assign_sub(variable, step_size * nesterov_m / (ops.sqrt(v_corrected) + self.epsilon))


def seed_model():
    entry = import_submission(REPO / "submissions" / "classroom_158.py")
    return entry.build_model(), entry.TRAINING["batch_size"]


def train(optimizer_class, args, split):
    (x_fit, y_fit), (x_val, y_val) = split
    keras.utils.set_random_seed(args.seed)
    model, batch_size = seed_model()
    model.compile(optimizer_class(SEED_LEARNING_RATE), "sparse_categorical_crossentropy", metrics=["accuracy"])
    history = model.fit(x_fit, y_fit, validation_data=(x_val, y_val), epochs=args.epochs,
                        batch_size=batch_size, verbose=0).history
    return history


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=140)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data-dir", default=os.environ.get("BENCH_DATA_DIR", "../shared/data"))
    args = parser.parse_args()
    import tensorflow as tf

    # One thread, as the harness trains: the figures do not depend on the machine's core count.
    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    dataset = data.load("mnist", args.data_dir)
    split = data.split_validation(dataset.x_train, dataset.y_train, VALIDATION_SIZE)
    schedules = {"Keras 3, 0.96 ** t": keras.optimizers.Nadam, "tf.keras 2, 0.96 ** (0.004 t)": TfKeras2Nadam}
    histories = {label: train(optimizer_class, args, split) for label, optimizer_class in schedules.items()}
    print(f"submissions/classroom_158.py, Nadam({SEED_LEARNING_RATE}), seed {args.seed}, "
          f"{len(split[0][0]):,} training images; training loss / validation accuracy")
    print(f"{'epoch':>6}" + "".join(f"{label:>32}" for label in histories))
    for epoch in sorted({e for e in (1, 10, 50, 100, 140, args.epochs) if e <= args.epochs}):
        cells = [f"{h['loss'][epoch - 1]:.4f} / {h['val_accuracy'][epoch - 1]:.4f}" for h in histories.values()]
        print(f"{epoch:>6}" + "".join(f"{cell:>32}" for cell in cells))


if __name__ == "__main__":
    main()
