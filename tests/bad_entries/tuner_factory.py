"""A keras-tuner model function handed in as the factory, as keras-tuner's guide writes it."""
import keras


def build_model(hp):
    units = hp.Int("units", min_value=16, max_value=64, step=16)
    return keras.Sequential([keras.Input((8, 8)), keras.layers.Flatten(), keras.layers.Dense(units, activation="relu"),
                             keras.layers.Dense(10, activation="softmax")])
