"""benchmarks/seeds_together.py: several seeds of one entry trained in one vmapped program give each seed what its own
bench.engine.train run gives (its order, keys, initial weights, callbacks, stops), within the last bits of the
arithmetic; and engine.train itself is unchanged by the refactoring that lets vmap carry each seed's key."""

from __future__ import annotations

import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import keras
import numpy as np
import pytest

from bench import engine, validation
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
from seeds_together import train_seeds  # noqa: E402

L = keras.layers
EPOCHS = 4


def digits(images=400):
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    return (x[:images] / 16).reshape(-1, 8, 8).astype("float32"), y[:images].astype("int64")


X, Y = digits()
X_FIT, Y_FIT, X_VAL, Y_VAL = X[:300], Y[:300], X[300:], Y[300:]  # 300 = 4 batches of 64 and a remainder of 44


def model_for(seed, learning_rate=0.01, dropout=0.2, width=6):
    """A small convnet with dropout (so each seed's keys matter), built after seeding with `seed`, as a run would."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((8, 8))
    x = L.Conv2D(width, 3, activation="relu")(L.Reshape((8, 8, 1))(inputs))
    x = L.Dropout(dropout)(L.Flatten()(L.MaxPooling2D(2)(x)))
    model = keras.Model(inputs, L.Dense(10, activation="softmax")(x))
    model.compile(keras.optimizers.Adam(learning_rate), "categorical_crossentropy", metrics=["accuracy"])
    return model


def callbacks_for(extra=()):
    return [keras.callbacks.ReduceLROnPlateau("val_loss", factor=0.5, patience=1, min_delta=1e-4, min_lr=1e-12),
            keras.callbacks.EarlyStopping("val_loss", patience=10, min_delta=1e-5, restore_best_weights=True), *extra]


def alone(seed, extra=(), answers=None, **model_options):
    model, callbacks = model_for(seed, **model_options), callbacks_for(extra)
    history = engine.train(engine.plan(model, callbacks, X, "one_hot"), callbacks, X_FIT, Y_FIT, X_VAL,
                           Y_VAL if answers is None else answers, EPOCHS, 64, seed)
    return history, model


def together(seeds, extras=None, answers=None, **model_options):
    models = [model_for(seed, **model_options) for seed in seeds]
    callbacks = [callbacks_for(extra) for extra in (extras or [()] * len(seeds))]
    plans = [engine.plan(m, c, X, "one_hot") for m, c in zip(models, callbacks)]
    histories = train_seeds(plans, callbacks, X_FIT, Y_FIT, X_VAL, answers or [Y_VAL] * len(seeds), EPOCHS, 64, seeds)
    return histories, models


def assert_close_to_alone(history, separate, rtol=1e-4):
    assert set(history) == set(separate) and len(history["loss"]) == len(separate["loss"])
    assert history["loss"][0] == pytest.approx(separate["loss"][0], rel=1e-5)
    for name in separate:
        np.testing.assert_allclose(history[name], separate[name], rtol=rtol, err_msg=name)


def committed_step_function(found, seed):
    """engine._step_function as committed before train_seeds (5ba04a1), verbatim: the run's key a closed-over constant."""
    update = engine._optimizer_update(found.optimizer, found.hyper)
    run_key = jax.random.PRNGKey(seed)

    def step(carry, batch):
        weights, state, lr = carry
        x, y = batch
        key = jax.random.fold_in(run_key, state["step"].astype(jnp.int32))

        def loss_and_outputs(weights):
            moved = {}
            outputs = found.forward(weights, x, key, moved)
            losses = engine.per_image_loss(outputs, y, found.from_logits)
            return losses.mean(), (losses, outputs, moved)

        (_, (losses, outputs, moved)), grads = jax.value_and_grad(loss_and_outputs, has_aux=True)(weights)
        weights, state = update(weights, grads, state, lr)
        weights = [layer_weights[:-2] + list(moved[layer.name]) if layer.name in moved else layer_weights
                   for layer, layer_weights in zip(found.layers, weights)]
        return (weights, state, lr), (losses.sum(), engine._correct(found.outputs(outputs), y).sum())

    return step


def test_train_alone_is_unchanged_bit_for_bit(monkeypatch):
    now, model_now = alone(3)
    with monkeypatch.context() as patched:
        patched.setattr(engine, "_step_function", committed_step_function)
        before, model_before = alone(3)
    assert now == before
    for got, expected in zip(model_now.get_weights(), model_before.get_weights()):
        np.testing.assert_array_equal(got, expected)


def test_seeds_together_give_each_seed_its_own_runs_history():
    seeds = [0, 1, 2]
    histories, models = together(seeds)
    for seed, history, model in zip(seeds, histories, models):
        separate, separate_model = alone(seed)
        assert_close_to_alone(history, separate)
        for got, expected in zip(model.get_weights(), separate_model.get_weights()):
            np.testing.assert_allclose(got, expected, atol=1e-4)
        assert int(model.optimizer.iterations.numpy()) == int(separate_model.optimizer.iterations.numpy()) == EPOCHS * 5
    # Their own initial weights and orders: three different runs, and the same three again when run again.
    assert len({h["loss"][0] for h in histories}) == 3
    assert together(seeds)[0] == histories


class StopAt(keras.callbacks.Callback):
    def __init__(self, epoch, hook="on_epoch_end"):
        super().__init__()
        self.epoch = epoch
        setattr(self, hook, self.stop)

    def stop(self, epoch, logs=None):
        if epoch == self.epoch:
            self.model.stop_training = True


@pytest.mark.parametrize("hook, epochs_run, steps", [("on_epoch_begin", 2, 6)])
def test_a_seed_that_stops_stops_alone_and_the_others_go_on(hook, epochs_run, steps):
    """Seed 1 stops at the start of epoch 1: fit's one step, then stop (two epochs of 5 steps would be 10)."""
    class Asks:
        def __init__(self):
            self.epochs, self.local = [], validation.channel(Y_VAL)

        def ask(self, epoch, values, from_logits):
            self.epochs.append(epoch)
            return self.local.ask(epoch, values, from_logits)

    asks = Asks()
    histories, models = together([0, 1, 2], extras=[(), (StopAt(1, hook),), ()], answers=[Y_VAL, asks, Y_VAL])
    assert [len(h["loss"]) for h in histories] == [EPOCHS, epochs_run, EPOCHS]
    assert asks.epochs == list(range(epochs_run))  # asked no more once stopped
    assert [int(m.optimizer.iterations.numpy()) for m in models] == [EPOCHS * 5, steps, EPOCHS * 5]
    separate, separate_model = alone(1, extra=(StopAt(1, hook),))
    assert_close_to_alone(histories[1], separate)
    for got, expected in zip(models[1].get_weights(), separate_model.get_weights()):
        np.testing.assert_allclose(got, expected, atol=1e-4)


def test_models_of_another_architecture_do_not_train_together():
    plans = [engine.plan(model_for(0), [], X, "one_hot"), engine.plan(model_for(1, width=5), [], X, "one_hot")]
    with pytest.raises(engine.Unsupported, match="seed 1's model is not seed 0's architecture"):
        train_seeds(plans, [[], []], X_FIT, Y_FIT, X_VAL, [Y_VAL, Y_VAL], 1, 64, [0, 1])
    plans[1] = engine.plan(model_for(1, dropout=0.3), [], X, "one_hot")
    with pytest.raises(engine.Unsupported):
        train_seeds(plans, [[], []], X_FIT, Y_FIT, X_VAL, [Y_VAL, Y_VAL], 1, 64, [0, 1])
