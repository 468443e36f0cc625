"""A package the evaluator does not install."""
import keras
import tensorflow_addons


def build_model(input_shape, num_classes):
    return keras.Sequential([keras.Input(input_shape), keras.layers.Flatten(),
                             keras.layers.Dense(num_classes, activation="softmax")])
