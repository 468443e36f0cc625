"""An auxiliary head beside the main one (deep supervision): two outputs where the harness scores one."""
import keras


def build_model(input_shape, num_classes):
    inputs = keras.Input(input_shape)
    x = keras.layers.Flatten()(inputs)
    aux = keras.layers.Dense(num_classes, activation="softmax", name="aux")(x)
    main = keras.layers.Dense(num_classes, activation="softmax", name="main")(keras.layers.Dense(16, activation="relu")(x))
    return keras.Model(inputs, [aux, main])
