"""Reference: LeNet-5 (LeCun et al., 1998) in its usual modern form, 61,706 parameters.

Source: LeNet-5, the classic MNIST convnet, usually quoted at about 61.7k parameters and
~98.9-99.05 % MNIST test accuracy (figures from single runs, often picked on the test set).
Layout: conv 6 @ 5x5 (padded, as the original's 32 x 32 input) -> 2x2 average pool -> conv 16 @ 5x5
-> 2x2 average pool -> dense 120 -> dense 84 -> dense 10 softmax, tanh activations. The usual
simplifications of the 1998 net: every C3 map sees all six S2 maps (the original wired a subset),
subsampling without trainable coefficients, and a softmax instead of the RBF output layer.
"""

import keras

AUTHOR = "LeCun et al. 1998 (re-implemented)"
TRAINING = {"batch_size": 128, "optimizer": "adam", "learning_rate": 0.001}


def build_model(input_shape=(28, 28), num_classes=10):
    inputs = keras.Input(input_shape)
    h = keras.layers.Reshape((*input_shape[:2], 1))(inputs)
    h = keras.layers.Conv2D(6, 5, padding="same", activation="tanh")(h)
    h = keras.layers.AveragePooling2D(2)(h)
    h = keras.layers.Conv2D(16, 5, activation="tanh")(h)
    h = keras.layers.AveragePooling2D(2)(h)
    h = keras.layers.Flatten()(h)
    h = keras.layers.Dense(120, activation="tanh")(h)
    h = keras.layers.Dense(84, activation="tanh")(h)
    outputs = keras.layers.Dense(num_classes, activation="softmax")(h)
    return keras.Model(inputs, outputs, name="lenet5")
