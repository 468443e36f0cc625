"""A head with 7 units on a 10-class dataset."""
import keras


def build_model(input_shape, num_classes):
    return keras.Sequential([keras.Input(input_shape), keras.layers.Flatten(),
                             keras.layers.Dense(7, activation="softmax")])
