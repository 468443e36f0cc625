"""bench.engine's recurrent layers (LSTM, GRU, SimpleRNN): forward values and gradients equal Keras's on TensorFlow,
returning the last output or the whole sequence; an LSTM reading digit images row by row (the coverage report's
`lstm_rows`) is planned and learns on the engine; every setting that changes the computation goes to model.fit,
named."""

from __future__ import annotations

import sys
from pathlib import Path

import jax.numpy as jnp
import keras
import numpy as np
import pytest
import tensorflow as tf

from bench import engine
from test_engine import assert_layer_matches_keras, compiled, digits

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
import student_models  # noqa: E402

L = keras.layers
WEIGHTS = np.random.default_rng(1)
TIME, FEATURES = 6, 3

RECURRENT = {
    "lstm": lambda **kw: L.LSTM(5, **kw),
    "lstm_relu_no_bias": lambda **kw: L.LSTM(4, activation="relu", use_bias=False, unroll=True, **kw),
    "gru": lambda **kw: L.GRU(5, **kw),
    "gru_reset_before": lambda **kw: L.GRU(5, reset_after=False, **kw),
    "gru_no_bias": lambda **kw: L.GRU(4, use_bias=False, recurrent_activation="tanh", **kw),
    "simple_rnn": lambda **kw: L.SimpleRNN(5, **kw),
    "simple_rnn_linear_no_bias": lambda **kw: L.SimpleRNN(4, activation=None, use_bias=False, **kw),
}


@pytest.mark.parametrize("return_sequences", [False, True])
@pytest.mark.parametrize("kind", sorted(RECURRENT))
def test_recurrent_layers_equal_keras_forward_and_gradient(kind, return_sequences):
    layer = RECURRENT[kind](return_sequences=return_sequences)
    layer.build((None, TIME, FEATURES))
    # Random biases too (zeros and the forget gate's ones would hide a bias in the wrong gate).
    layer.set_weights([WEIGHTS.normal(scale=0.6, size=w.shape).astype("float32") for w in layer.get_weights()])
    assert_layer_matches_keras(layer, (TIME, FEATURES), atol=2e-5)


def rows_model(recurrent=None, functional=False, optimizer="adam"):
    """An RNN reading 8x8 digit images row by row (8 steps of 8 features)."""
    recurrent = L.LSTM(12) if recurrent is None else recurrent
    if not functional:
        return compiled(keras.Sequential([keras.Input((8, 8)), recurrent, L.Dense(10, activation="softmax")]), optimizer)
    inputs = keras.Input((8, 8))
    x = L.Flatten()(recurrent(inputs))
    return compiled(keras.Model(inputs, L.Dense(10, activation="softmax")(x)), optimizer)


def test_the_coverage_reports_lstm_rows_model_is_planned_by_the_engine():
    keras.utils.set_random_seed(0)
    model = student_models.models(keras)["lstm_rows"]()
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    x = np.random.default_rng(0).random((engine.CHECK_IMAGES, 28, 28), dtype=np.float32)
    found = engine.plan(model, [], x, "sparse")
    assert [type(layer).__name__ for layer in found.layers] == ["LSTM", "Dense"]


def _stacked():
    return compiled(keras.Sequential([keras.Input((8, 8)), L.LSTM(6, return_sequences=True), L.LayerNormalization(),
                                      L.SimpleRNN(5, return_sequences=True), L.GRU(4), L.Dense(10, "softmax")]))


def _convolutional_recurrent():
    """A convolution over the image, its rows (height, width * channels) read by a GRU."""
    inputs = keras.Input((8, 8))
    x = L.Conv2D(3, 3, padding="same", activation="relu")(L.Reshape((8, 8, 1))(inputs))
    x = L.GRU(6, return_sequences=True)(L.Reshape((8, 24))(x))
    return compiled(keras.Model(inputs, L.Dense(10, "softmax")(L.Flatten()(x))))


@pytest.mark.parametrize("build", [_stacked, _convolutional_recurrent])
def test_stacked_and_convolutional_recurrent_models_are_planned(build):
    # plan compares the engine's forward pass with Keras's on these images (engine.FORWARD_TOLERANCE).
    x, _ = digits(engine.CHECK_IMAGES)
    keras.utils.set_random_seed(0)
    model = build()
    for layer in model.layers:  # random biases, so a misplaced one shows
        layer.set_weights([np.random.default_rng(2).normal(scale=0.5, size=w.shape).astype("float32") for w in layer.get_weights()])
    engine.plan(model, [], x, "one_hot")


@pytest.mark.parametrize("build", [
    lambda: rows_model(optimizer=keras.optimizers.Adam(0.01)),
    lambda: rows_model(L.GRU(12, return_sequences=True), functional=True, optimizer=keras.optimizers.Adam(0.01)),  # the whole sequence, flattened
], ids=["lstm_sequential", "gru_sequences_functional"])
def test_an_rnn_over_digit_rows_learns_on_the_engine(build):
    x, y = digits()
    keras.utils.set_random_seed(0)
    model = build()
    found = engine.plan(model, [], x, "one_hot")
    before = [w.copy() for w in model.get_weights()]
    history = engine.train(found, [], x[:300], y[:300], x[300:], y[300:], 4, 32, 0)
    # Falls every epoch (model.fit, same model and rate, fell alike: LSTM 2.30 -> 1.76 in 4 epochs, the engine 2.31 -> 1.89).
    assert all(later < earlier for earlier, later in zip(history["loss"], history["loss"][1:]))
    assert history["loss"][-1] < 0.9 * history["loss"][0] and history["val_loss"][-1] < 0.9 * history["val_loss"][0]
    # Every weight of the recurrent layer moved, and the model now holds what was trained.
    assert all(not np.allclose(a, b) for a, b in zip(before, model.get_weights()))
    loss, _ = model.evaluate(x[300:], np.eye(10)[y[300:]], verbose=0)
    assert loss == pytest.approx(history["val_loss"][-1], rel=1e-4)


def _stateful():
    model = keras.Sequential([keras.Input(batch_shape=(8, 8, 8)), L.LSTM(4, stateful=True), L.Dense(10, "softmax")])
    return compiled(model)


def _return_state():
    inputs = keras.Input((8, 8))
    output, _, _ = L.LSTM(4, return_state=True)(inputs)
    return compiled(keras.Model(inputs, L.Dense(10, "softmax")(output)))


@pytest.mark.parametrize("why, build", [
    ("go_backwards", lambda: rows_model(L.LSTM(4, go_backwards=True))),
    ("stateful", _stateful),
    ("return_state", _return_state),
    ("dropout=0.2", lambda: rows_model(L.GRU(4, dropout=0.2))),
    ("recurrent_dropout=0.2", lambda: rows_model(L.SimpleRNN(4, recurrent_dropout=0.2))),
    ("recurrent_regularizer", lambda: rows_model(L.LSTM(4, recurrent_regularizer="l2"))),
    ("recurrent_constraint", lambda: rows_model(L.GRU(4, recurrent_constraint="non_neg"))),
    ("kernel regularizer", lambda: rows_model(L.LSTM(4, kernel_regularizer="l2"))),
    ("activation 'hard_sigmoid'", lambda: rows_model(L.LSTM(4, recurrent_activation="hard_sigmoid"))),
    ("activation 'tanh'", lambda: rows_model(L.SimpleRNN(4, activation=tf.nn.tanh))),  # TensorFlow's, not Keras's
    ("Masking", lambda: compiled(keras.Sequential([keras.Input((8, 8)), L.Masking(), L.LSTM(4), L.Dense(10, "softmax")]))),
    ("Bidirectional", lambda: rows_model(L.Bidirectional(L.LSTM(4)))),
    ("Dense .* rank 3", lambda: compiled(keras.Sequential([keras.Input((8, 8)), L.LSTM(4, return_sequences=True),
                                                           L.Dense(10, "softmax")]))),
])
def test_what_changes_a_recurrent_layers_computation_is_named(why, build):
    model = build()
    x = np.random.default_rng(0).random((8, 8, 8), dtype=np.float32)
    with pytest.raises(engine.Unsupported, match=why):
        engine.plan(model, [], x, "one_hot")


def _called_with_a_mask(layer, inputs):
    return layer(L.Masking()(inputs))


def _called_with_an_initial_state(layer, inputs):
    return layer(inputs, initial_state=[keras.Input((4,))])


@pytest.mark.parametrize("why, call", [("mask", _called_with_a_mask), ("initial_state", _called_with_an_initial_state)])
def test_a_mask_or_an_initial_state_in_the_graph_is_refused_by_the_layer_itself(why, call):
    # The engine's graph walk drops call arguments; the layer reads them from its nodes.
    layer = L.GRU(4)
    call(layer, keras.Input((TIME, FEATURES)))
    weights = [jnp.asarray(w) for w in layer.get_weights()]
    with pytest.raises(engine.Unsupported, match=why):
        engine.LAYERS["GRU"](layer, weights, jnp.zeros((TIME, FEATURES, 2)))
