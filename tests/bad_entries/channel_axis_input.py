"""Keras's "Simple MNIST convnet" example: an Input with a channel axis, (28, 28, 1) there, (8, 8, 1) for digits,
on images that have none."""
import keras


def build_model(input_shape, num_classes):
    inputs = keras.Input(shape=(8, 8, 1))
    x = keras.layers.Conv2D(4, 3, activation="relu")(inputs)
    x = keras.layers.Flatten()(x)
    return keras.Model(inputs, keras.layers.Dense(num_classes, activation="softmax")(x))
