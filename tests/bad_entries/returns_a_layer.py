"""A layer returned where a model is expected."""
import keras


def build_model(input_shape, num_classes):
    return keras.layers.Dense(num_classes, activation="softmax")
