"""bench.engine and Keras's image augmentation layers: identity while predicting, as Keras; while training the
layer's own transform for the engine's draw equals what Keras on TensorFlow (model.fit's backend) computes for that
draw, the engine's affine resampling equals TensorFlow's ImageProjectiveTransformV3 in every fill mode, the draws
follow the layer's own distribution, and a model with augmentation plans and trains on the engine; what it does not
run is refused with the reason."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import keras
import numpy as np
import pytest
import tensorflow as tf

from bench import engine
from bench.status import JAX_ENGINE
from conftest import run_in_process

L = keras.layers
RNG = np.random.default_rng(0)
# Not square and two channels, so a height/width or channel mix-up shows.
IMAGES = RNG.random((16, 9, 11, 2)).astype("float32")

LAYERS = {
    "flip": lambda: L.RandomFlip(),
    "flip_horizontal": lambda: L.RandomFlip("horizontal"),
    "flip_vertical": lambda: L.RandomFlip("vertical"),
    "translation": lambda: L.RandomTranslation(0.3, (-0.2, 0.4)),
    "translation_constant_nearest": lambda: L.RandomTranslation(0.2, 0.2, fill_mode="constant", fill_value=0.5,
                                                                interpolation="nearest"),
    "rotation": lambda: L.RandomRotation(0.2),
    "rotation_nearest": lambda: L.RandomRotation((-0.3, 0.1), fill_mode="nearest", interpolation="nearest"),
    "rotation_constant": lambda: L.RandomRotation(0.5, fill_mode="constant", fill_value=-1.0),
    "zoom": lambda: L.RandomZoom(0.3, (-0.2, 0.1)),
    "zoom_one_factor": lambda: L.RandomZoom(0.3),
    "zoom_in_constant": lambda: L.RandomZoom((-0.5, -0.2), fill_mode="constant"),
    "zoom_out_wrap": lambda: L.RandomZoom((0.2, 0.6), fill_mode="wrap", interpolation="nearest"),
    "translation_wrap": lambda: L.RandomTranslation(0.4, 0.4, fill_mode="wrap"),
    "contrast": lambda: L.RandomContrast(0.5, value_range=(0, 1)),
    "contrast_default_range": lambda: L.RandomContrast(0.9),
    "brightness": lambda: L.RandomBrightness(0.2, value_range=(0, 1)),
    "brightness_low": lambda: L.RandomBrightness((-0.5, 0.1)),
    "flip_channels_first": lambda: L.RandomFlip("horizontal", data_format="channels_first"),
    "translation_channels_first": lambda: L.RandomTranslation(0.2, 0.3, data_format="channels_first"),
    "rotation_channels_first": lambda: L.RandomRotation(0.3, fill_mode="constant", data_format="channels_first"),
}


def keras_layout(x):
    """This engine's (..., batch) layout back to Keras's (batch, ...)."""
    return np.moveaxis(np.asarray(engine.to_keras_order(x)), -1, 0)


def engine_train(layer, images, key):
    """The engine's translation of `layer` while training, on Keras-layout `images`, back in Keras's layout."""
    return keras_layout(engine.LAYERS[type(layer).__name__](layer, [], jnp.asarray(engine.to_batch_minor(images)), key=key))


def on_tensorflow(transformation):
    """The engine's draw (JAX arrays) as the TensorFlow tensors Keras's layer takes under model.fit."""
    return {name: tf.constant(np.asarray(value)) if isinstance(value, jax.Array) else value
            for name, value in transformation.items()}


def model_with(layer, input_shape=IMAGES.shape[1:]):
    inputs = keras.Input(input_shape)
    outputs = L.Dense(10, activation="softmax")(L.Flatten()(layer(inputs)))
    model = keras.Model(inputs, outputs)
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


@pytest.mark.parametrize("name", LAYERS)
def test_predicting_the_engine_equals_keras_and_leaves_the_images_as_they_are(name):
    keras.utils.set_random_seed(0)
    layer = LAYERS[name]()
    model = model_with(layer)
    plan = engine.plan(model, [], IMAGES, "sparse")  # not refused: its forward pass matched Keras's
    expected = np.asarray(model(IMAGES, training=False))
    got = np.asarray(plan.outputs(plan.forward(plan.read_weights(), jnp.asarray(engine.to_batch_minor(IMAGES))))).T
    np.testing.assert_allclose(got, expected, atol=1e-6)
    np.testing.assert_array_equal(np.asarray(layer(IMAGES, training=False)), IMAGES)  # what Keras predicts through
    x = jnp.asarray(engine.to_batch_minor(IMAGES))
    assert engine.LAYERS[type(layer).__name__](layer, [], x) is x


@pytest.mark.parametrize("name", LAYERS)
def test_training_the_transform_of_the_engines_draw_equals_keras_on_tensorflow(name):
    layer = LAYERS[name]()
    layer.build(IMAGES.shape)
    for seed in range(3):
        key = jax.random.PRNGKey(seed)
        transformation = engine.augmentation_draw(layer, jnp.asarray(IMAGES), key)
        got = engine_train(layer, IMAGES, key)
        expected = np.asarray(layer.transform_images(tf.constant(IMAGES), on_tensorflow(transformation), training=True))
        np.testing.assert_allclose(got, expected, atol=2e-6)
        assert np.abs(got - IMAGES).max() > 0.05  # the draw changed the images
        assert layer.backend.name == "tensorflow"  # the layer's own backend is TensorFlow again
    np.testing.assert_array_equal(engine_train(layer, IMAGES, key), got)  # a key gives one draw
    assert not np.array_equal(engine_train(layer, IMAGES, jax.random.PRNGKey(99)), got)


def draws(transformations) -> np.ndarray:
    """(images, values) of the per-image numbers a layer drew (its matrix left out: the angle is drawn)."""
    columns = []
    for name, value in transformations[0].items():
        if name in ("input_shape", "rotation_matrix") or not hasattr(value, "shape") or not np.ndim(value):
            continue
        stacked = np.concatenate([np.asarray(t[name], dtype=np.float64).reshape(len(IMAGES), -1) for t in transformations])
        columns.append(stacked)
    return np.concatenate(columns, axis=1)


@pytest.mark.parametrize("name", [name for name in LAYERS if "channels_first" not in name])
def test_the_engines_draws_follow_the_layers_own_distribution(name):
    """The same quantiles, and the same dependence between a layer's draws, as Keras's own draws on TensorFlow."""
    layer = LAYERS[name]()
    layer.build(IMAGES.shape)
    rounds = 60  # 960 images
    ours = draws([engine.augmentation_draw(layer, jnp.asarray(IMAGES), jax.random.PRNGKey(seed)) for seed in range(rounds)])
    keras.utils.set_random_seed(0)
    theirs = draws([layer.get_random_transformation(tf.constant(IMAGES), training=True) for _ in range(rounds)])
    assert ours.shape == theirs.shape
    for column, (mine, keras_own) in enumerate(zip(ours.T, theirs.T)):
        if set(np.unique(keras_own)) <= {0.0, 1.0}:  # a flip: how often
            assert set(np.unique(mine)) <= {0.0, 1.0} and abs(mine.mean() - keras_own.mean()) < 0.07
            continue
        quantiles = np.linspace(0, 1, 11)
        spread = keras_own.max() - keras_own.min()
        difference = np.abs(np.quantile(mine, quantiles) - np.quantile(keras_own, quantiles))
        assert difference.max() < 0.06 * spread, (column, np.quantile(mine, quantiles), np.quantile(keras_own, quantiles))
    if ours.shape[1] > 1:
        np.testing.assert_allclose(np.corrcoef(ours.T), np.corrcoef(theirs.T), atol=0.12)


def test_a_translation_moves_a_pixel_by_the_drawn_offset():
    layer = L.RandomTranslation(0.3, 0.4, fill_mode="constant", interpolation="nearest")
    images = np.zeros((16, 9, 11, 1), "float32")
    images[:, 4, 5, 0] = 1.0
    key = jax.random.PRNGKey(7)
    moved = engine_train(layer, images, key)
    offsets = np.asarray(engine.augmentation_draw(layer, jnp.asarray(images), key)["translations"])  # (dx, dy)
    for image, (dx, dy) in zip(moved, offsets):
        row, column = 4 + np.round(dy), 5 + np.round(dx)
        if 0 <= row < 9 and 0 <= column < 11:
            assert image[int(row), int(column), 0] == 1.0 and image.sum() == 1.0
        else:
            assert image.sum() == 0.0


def shifted_rotations(rounds=10, images=IMAGES):
    """Rotation matrices of any angle, shifted up to 40 pixels (past every edge), every fourth on half pixels."""
    rotation = L.RandomRotation(0.5)
    keras.utils.set_random_seed(1)
    transforms = []
    for round_ in range(rounds):
        transform = np.array(rotation.get_random_transformation(images, training=True)["rotation_matrix"])
        transform[:, [2, 5]] += RNG.uniform(-40, 40, (len(images), 2))
        if round_ % 4 == 0:
            transform[:, :6] = np.round(transform[:, :6] * 2) / 2  # sampling points on whole and half pixels
        transforms.append(transform.astype("float32"))
    return transforms


@pytest.mark.parametrize("interpolation", ["bilinear", "nearest"])
@pytest.mark.parametrize("fill_mode", ["constant", "nearest", "reflect", "wrap"])
@pytest.mark.parametrize("shape", [IMAGES.shape, (4, 1, 7, 1)])
def test_the_engines_affine_transform_equals_tensorflows(interpolation, fill_mode, shape):
    """engine.affine_transform against Keras's TensorFlow affine_transform (ImageProjectiveTransformV3, what
    model.fit runs), channels last and first, an image one pixel high included."""
    from keras.src.backend.tensorflow import image as tf_image

    images = RNG.random(shape).astype("float32")
    ours = jax.jit(lambda x, t, data_format: engine.affine_transform(x, t, interpolation, fill_mode, 0.3, data_format),
                   static_argnums=2)
    for transform in shifted_rotations(8, images):
        expected = np.asarray(tf_image.affine_transform(tf.constant(images), tf.constant(transform), interpolation, fill_mode, 0.3))
        np.testing.assert_allclose(np.asarray(ours(jnp.asarray(images), jnp.asarray(transform), "channels_last")), expected,
                                   atol=5e-6, rtol=0)
        first = np.asarray(ours(jnp.asarray(images.transpose(0, 3, 1, 2)), jnp.asarray(transform), "channels_first"))
        np.testing.assert_allclose(first.transpose(0, 2, 3, 1), expected, atol=5e-6, rtol=0)


def test_keras_jax_backend_resamples_otherwise_in_wrap_mode():
    """Why the engine has its own affine_transform: Keras's JAX one (keras.src.backend.jax.image) wraps each
    neighbour of a sampling point where TensorFlow wraps the point, so the two differ near the edges."""
    from keras.src.backend.jax import image as jax_image
    from keras.src.backend.tensorflow import image as tf_image

    worst = max(float(np.abs(np.asarray(jax_image.affine_transform(jnp.asarray(IMAGES), jnp.asarray(t), "bilinear", "wrap"))
                             - np.asarray(tf_image.affine_transform(tf.constant(IMAGES), tf.constant(t), "bilinear", "wrap"))).max())
                for t in shifted_rotations(4))
    assert worst > 0.1


def augmented_model(input_shape=(8, 8)):
    """Keras's "Image classification from scratch" augmentation block in a small digits convnet."""
    inputs = keras.Input(input_shape)
    x = L.Reshape((*input_shape, 1))(inputs)
    x = L.RandomFlip("horizontal")(x)
    x = L.RandomRotation(0.1)(x)
    x = L.RandomTranslation(0.1, 0.1)(x)
    x = L.RandomZoom(0.1)(x)
    x = L.RandomContrast(0.2, value_range=(0, 1))(x)
    x = L.RandomBrightness(0.1, value_range=(0, 1))(x)
    x = L.Conv2D(6, 3, activation="relu")(x)
    x = L.Flatten()(L.MaxPooling2D(2)(x))
    model = keras.Model(inputs, L.Dense(10, activation="softmax")(x))
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def digits(images=400):
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    return (x[:images] / 16).reshape(-1, 8, 8).astype("float32"), y[:images].astype("int64")


def test_a_model_with_augmentation_is_planned_and_trains_on_the_engine_the_same_for_the_same_seed():
    x, y = digits()

    def run(seed):
        keras.utils.set_random_seed(0)
        model = augmented_model()
        plan = engine.plan(model, [], x, "sparse")
        history = engine.train(plan, [], x[:300], y[:300], x[300:], y[300:], 3, 60, seed)  # full batches: one compile
        return model, plan, history

    model, plan, first = run(5)
    assert first == run(5)[2]  # another seed, other draws: the keys below
    assert all(np.isfinite(first["loss"])) and first["loss"][-1] < first["loss"][0]
    # Training, the images are augmented (each step its own draw); predicting, they are not.
    weights, batch = plan.read_weights(), jnp.asarray(engine.to_batch_minor(x[:64]))
    predicted = np.asarray(plan.forward(weights, batch))
    trained = [np.asarray(plan.forward(weights, batch, jax.random.PRNGKey(step), {})) for step in (0, 1)]
    assert np.abs(trained[0] - predicted).max() > 1e-3 and np.abs(trained[0] - trained[1]).max() > 1e-3
    np.testing.assert_allclose(np.asarray(plan.outputs(predicted)).T, np.asarray(model(x[:64], training=False)), atol=1e-5)
    # The layers run on TensorFlow again: Keras's own training call still works.
    assert np.asarray(model(x[:64], training=True)).shape == (64, 10)


AUGMENTED_ENTRY = '''
    """A small convnet with an augmentation block."""
    import keras

    AUTHOR = "tests"
    TRAINING = {"batch_size": 64}

    def build_model(input_shape, num_classes):
        layers = keras.layers
        inputs = keras.Input(input_shape)
        x = layers.Reshape((*input_shape, 1))(inputs) if len(input_shape) == 2 else inputs
        x = layers.RandomRotation(0.05)(x)
        x = layers.RandomTranslation(0.1, 0.1)(x)
        x = layers.Conv2D(6, 3, activation="relu")(x)
        x = layers.GlobalAveragePooling2D()(x)
        return keras.Model(inputs, layers.Dense(num_classes, activation="softmax")(x))
'''


def test_an_entry_with_augmentation_trains_with_engine_jax(write_entry):
    record = run_in_process(write_entry("augmented", AUGMENTED_ENTRY), engine="jax")
    assert record["status"] == "OK" and record["engine"] == JAX_ENGINE, record.get("notes")
    assert not any("model.fit" in note for note in record["notes"])


def with_interpolation(layer, interpolation):
    layer.interpolation = interpolation  # after Keras checked it: the engine checks it again
    return layer


@pytest.mark.parametrize("why, layer, input_shape", [
    ("not a batch of images", lambda: L.RandomFlip(), (9, 11)),  # Keras would take the batch for an image's rows
    ("interpolation 'bicubic'", lambda: with_interpolation(L.RandomRotation(0.1), "bicubic"), (9, 11, 2)),
    ("RandomShear", lambda: L.RandomShear(0.1), (9, 11, 2)),
    ("RandomCrop", lambda: L.RandomCrop(5, 5), (9, 11, 2)),
    ("RandomGrayscale", lambda: L.RandomGrayscale(), (9, 11, 3)),
])
def test_what_it_cannot_run_is_named(why, layer, input_shape):
    model = model_with(layer(), input_shape)
    x = RNG.random((8, *input_shape)).astype("float32")
    with pytest.raises(engine.Unsupported, match=why):
        engine.plan(model, [], x, "sparse")
