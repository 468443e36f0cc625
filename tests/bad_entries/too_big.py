"""A dense layer far over the parameter budget."""
import keras


def build_model(input_shape, num_classes):
    return keras.Sequential([keras.Input(input_shape), keras.layers.Flatten(),
                             keras.layers.Dense(20000, activation="relu"),
                             keras.layers.Dense(num_classes, activation="softmax")])
