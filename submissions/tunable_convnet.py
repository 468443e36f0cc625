"""A two-conv net whose widths, kernel, batch norm and learning rate are left to `bench tune`.

Layers: conv k x k (filters_1) -> [batch norm] -> max-pool 2 -> conv k x k (filters_2) -> global
average pool -> dense softmax. Global pooling keeps the classifier at (filters_2 + 1) * classes
weights whatever the image size, so the same space fits MNIST and the 8x8 digits.
Untuned (every hyperparameter at its default) it has 426 parameters on one-channel images. The
space runs from 146 to 3,626 parameters, and 36 of its 64 shapes fit in 1,000, so a search with
`--max-params 1000` both trains and rejects candidates.
"""

import keras
import keras_tuner

AUTHOR = "bench examples"
TRAINING = {"batch_size": 64}


def build_hypermodel(hp, input_shape, num_classes):
    filters_1 = hp.Int("filters_1", 2, 8, step=2, default=4)
    filters_2 = hp.Int("filters_2", 4, 16, step=4, default=8)
    kernel_size = hp.Choice("kernel_size", [3, 5], default=3)
    batch_norm = hp.Boolean("batch_norm", default=False)
    learning_rate = hp.Choice("learning_rate", [3e-3, 1e-2, 3e-2], default=1e-2)

    inputs = keras.Input(input_shape)
    # Grey images come as (height, width): convolutions need a channel axis.
    x = keras.layers.Reshape((*input_shape, 1))(inputs) if len(input_shape) == 2 else inputs
    x = keras.layers.Conv2D(filters_1, kernel_size, padding="same", activation=None if batch_norm else "relu")(x)
    if batch_norm:
        x = keras.layers.BatchNormalization()(x)
        x = keras.layers.Activation("relu")(x)
    x = keras.layers.MaxPooling2D(2)(x)
    x = keras.layers.Conv2D(filters_2, kernel_size, padding="same", activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(num_classes, activation="softmax")(x)
    model = keras.Model(inputs, outputs)
    model.compile(optimizer=keras.optimizers.Adam(learning_rate), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def build_model(input_shape, num_classes):
    """The untuned entry: a fresh HyperParameters answers every hp call with its default."""
    return build_hypermodel(keras_tuner.HyperParameters(), input_shape, num_classes)
