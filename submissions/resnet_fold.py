"""Seed 002's ResNet as a fold: functools.reduce over conv blocks with the skip map x + f(x).

Source: seed 002 (an autograd notebook, "this is actually just fold..."). It writes a network as
a fold of a list of layer functions F = [f1, ..., fn] over the input with a combining map:
ff_map = lambda z, f: f(z) gives a feed-forward net, skip_map = lambda z, f: f(z) + z a ResNet.
The seed ran it on random 3x3 data only, so it reports no accuracy. Here the fold runs over
`blocks` conv blocks f(x) = relu(conv3x3(x)) of `channels` maps at 14 x 14, between a conv stem
(3x3, then 2x2 max-pool) and a global-average-pool + dense softmax head: 14,250 parameters with the
defaults. `feedforward_fold` is the same network folded with the feed-forward map.
"""

import functools

import keras

AUTHOR = "seed 002 (re-implemented)"
TRAINING = {"batch_size": 128, "optimizer": "adam", "learning_rate": 0.001}


def skip_map(z, f):
    return keras.layers.Add()([f(z), z])


def build_model(input_shape=(28, 28), num_classes=10, blocks=6, channels=16):
    inputs = keras.Input(input_shape)
    h = keras.layers.Reshape((*input_shape[:2], 1))(inputs)
    h = keras.layers.Conv2D(channels, 3, padding="same", activation="relu", name="stem")(h)
    h = keras.layers.MaxPooling2D(2)(h)
    layers = [
        keras.layers.Conv2D(channels, 3, padding="same", activation="relu", name=f"f{i + 1}") for i in range(blocks)
    ]
    h = functools.reduce(skip_map, layers, h)
    h = keras.layers.GlobalAveragePooling2D()(h)
    outputs = keras.layers.Dense(num_classes, activation="softmax")(h)
    return keras.Model(inputs, outputs, name=f"resnet_fold_{blocks}")
