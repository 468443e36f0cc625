"""The factory's arguments named as in another course's template."""

import keras


def build_model(shape, classes):
    inputs = keras.Input(shape)
    x = keras.layers.Flatten()(inputs)
    return keras.Model(inputs, keras.layers.Dense(classes, activation="softmax")(x))
