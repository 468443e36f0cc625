"""Seed 004's classroom-challenge model: 158 parameters, pooled input, three tiny sigmoid/softmax convs.

Source: seed 004 (an intermediate Q&A of a classroom "fewest parameters" MNIST challenge).
Layers: avg-pool 2 -> conv 3x3x3 sigmoid -> conv 3x3x1 sigmoid -> avg-pool 3 -> conv 3x3x10 softmax.
The seed trained it with nadam, batch 1024 and categorical cross-entropy, early-stopped on the
training loss, and reported 91.12 % MNIST test accuracy at 158 parameters.
Kept as the seed wrote it: a hard-coded (28, 28) input, compiled by the factory itself.
"""

import keras

AUTHOR = "seed 004"
TRAINING = {"batch_size": 1024}


def build_model():
    inputs = keras.layers.Input((28, 28))
    x = keras.layers.Reshape((28, 28, 1))(inputs)
    x = keras.layers.AvgPool2D((2, 2))(x)
    x = keras.layers.Conv2D(3, 3, activation="sigmoid", padding="valid")(x)
    x = keras.layers.Conv2D(1, 3, activation="sigmoid", padding="valid")(x)
    x = keras.layers.AvgPool2D((3, 3))(x)
    x = keras.layers.Conv2D(10, 3, activation="softmax", padding="valid")(x)
    outputs = keras.layers.Reshape((-1,))(x)
    model = keras.Model(inputs, outputs)
    # metrics by keyword: Keras 3 reads a third positional argument as loss_weights.
    model.compile("nadam", "categorical_crossentropy", metrics=["accuracy"])
    return model
