"""Seed 000's iterated net as a real loop: one 3x3 kernel iterated k times by keras.ops.fori_loop.

Source: seed 000 ("Iterated Networks"), which ran the same model unrolled and inside a
tf.while_loop and reported 98.5 % for the loop against 98.33 % unrolled (5 iterations x 5 channels,
20k steps, scored on the test set; 96.77 % for its plain CNN). Here the iterated conv is a layer
whose call runs `keras.ops.fori_loop`, so the graph holds the conv once whatever k is; the stem,
the skip (h <- relu(conv(h) + x0)) and the 7 x 7 x channels dense head are those of
`iterated_unrolled`, with the same weights in the same order, so the two entries have the same
parameter count (2,740 with the defaults) and the same function for the same weights. With
iterations=0 the loop layer is left out, as the unrolled entry leaves out its never-called conv.
`IteratedConv.macs_per_image()` gives the multiply-accumulates the loop spends per image.
Trained like `iterated_unrolled`: Adam at batch 100, at most 33 epochs (the seed's 20k steps).
"""

import keras
from keras import ops

AUTHOR = "seed 000 (re-implemented)"
TRAINING = {"batch_size": 100, "optimizer": "adam", "learning_rate": 0.001, "epochs": 33}  # the seed's 20k steps of 100

HEAD_POOL = 4  # 28x28 -> 7x7 before the dense layer
KERNEL_SIZE = 3


class IteratedConv(keras.layers.Layer):
    """h <- relu(conv(h) + x0) (or relu(conv(h)) without the skip), `iterations` times, one kernel."""

    def __init__(self, iterations, skip=True, **kwargs):
        super().__init__(**kwargs)
        self.iterations = iterations
        self.skip = skip

    def build(self, input_shape):
        channels = input_shape[-1]
        self.spatial = tuple(input_shape[1:3])
        self.kernel = self.add_weight(
            shape=(KERNEL_SIZE, KERNEL_SIZE, channels, channels), initializer="glorot_uniform", name="kernel"
        )
        self.bias = self.add_weight(shape=(channels,), initializer="zeros", name="bias")

    def call(self, first):
        def step(_, h):
            h = ops.conv(h, self.kernel, padding="same") + self.bias
            return ops.relu(h + first if self.skip else h)

        return ops.fori_loop(0, self.iterations, step, first)

    def macs_per_image(self):
        height, width = self.spatial
        return self.iterations * height * width * int(ops.size(self.kernel))

    def get_config(self):
        return {**super().get_config(), "iterations": self.iterations, "skip": self.skip}


def build_model(input_shape=(28, 28), num_classes=10, iterations=5, channels=5, skip=True):
    if iterations < 0 or channels < 1:
        raise ValueError(f"need iterations >= 0 and channels >= 1, got iterations={iterations}, channels={channels}")
    inputs = keras.Input(input_shape)
    image = keras.layers.Reshape((*input_shape[:2], 1))(inputs)
    h = keras.layers.Conv2D(channels, 3, padding="same", activation="relu", name="stem")(image)
    if iterations:
        h = IteratedConv(iterations, skip, name="iterated_conv")(h)
    h = keras.layers.AveragePooling2D(HEAD_POOL)(h)
    h = keras.layers.Flatten()(h)
    outputs = keras.layers.Dense(num_classes, activation="softmax", name="head")(h)
    return keras.Model(inputs, outputs, name=f"iterated_loop_{iterations}x{channels}")
