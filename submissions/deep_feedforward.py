"""Seed 003's deep feed-forward net: 10 hidden dense layers of 64 ReLU units, He-initialised.

Source: seed 003 (a TF 1.x notebook on why deep feed-forward nets stop training). With uniform
initial weights in +-1/sqrt(fan-in) (+-0.0357 for the first layer, +-0.125 after it), plain SGD
and batch 30 on mean-centred MNIST, its 10-hidden-layer ReLU net of 64 units started flat, with
vanishing gradients in all but the last layers, before reaching 99.54 % *training* accuracy
(it reports no test accuracy); the seed concludes that better initialisations solve this.
Here `init` defaults to He-normal, the scaling made for ReLU; `init="seed_uniform"` restores the
seed's ranges (any Keras initializer name works too), so a study can compare the two.
Training as in the seed: plain SGD, batch 32; the seed summed its loss over the batch at rate
0.001, which is rate 0.03 on the mean loss Keras uses. 88,330 parameters.
"""

import keras

AUTHOR = "seed 003 (re-implemented)"
TRAINING = {"batch_size": 32, "optimizer": "sgd", "learning_rate": 0.03}

HIDDEN_LAYERS = 10
UNITS = 64
MNIST_PIXEL_MEAN = 0.1307  # the seed centred its inputs


def seed_uniform(fan_in):
    limit = 1.0 / fan_in**0.5
    return keras.initializers.RandomUniform(-limit, limit)


def build_model(input_shape=(28, 28), num_classes=10, init="he_normal"):
    inputs = keras.Input(input_shape)
    h = keras.layers.Flatten()(inputs)
    h = keras.layers.Rescaling(1.0, offset=-MNIST_PIXEL_MEAN)(h)
    for _ in range(HIDDEN_LAYERS):
        fan_in = h.shape[-1]
        initializer = seed_uniform(fan_in) if init == "seed_uniform" else keras.initializers.get(init)
        h = keras.layers.Dense(UNITS, activation="relu", kernel_initializer=initializer)(h)
    initializer = seed_uniform(UNITS) if init == "seed_uniform" else "glorot_uniform"
    outputs = keras.layers.Dense(num_classes, activation="softmax", kernel_initializer=initializer)(h)
    return keras.Model(inputs, outputs, name=f"deep_feedforward_{init}")
