"""cnn_baseline with 80 % of its dense head pruned, sparse from the first step: counts nonzero weights and storage bits.

The architecture is `cnn_baseline`'s (2,685 parameters: conv 3x3 x4 -> max-pool -> conv 3x3 x5 -> max-pool
-> dense 10 from 7 x 7 x 5 features). Before the first epoch the callback zeroes the SPARSITY smallest-magnitude
weights of the dense kernel (2,450 of the 2,685), which at initialisation is a random choice (random pruning at
initialisation, as studied by Liu et al. 2022, "The Unreasonable Effectiveness of Random Pruning"), and
re-applies the mask after every training step, so every epoch that early stopping can restore is as sparse.
(A gradual schedule, Zhu & Gupta 2017, was tried first: early stopping restored an epoch from the middle of the
ramp, 56 % sparse.) Keras 3 has no pruning API (the TensorFlow Model Optimization toolkit targets Keras 2), hence
the callback. The board's `nonzero_params` and `storage_bits` (a one-bit mask per element plus the nonzero values,
as the MicroNet Challenge counted sparse tensors) show what pruning saves; `total_params` counts every weight.
"""

import keras
import numpy as np

AUTHOR = "bench examples"
# 100 epochs: past them the pruned head's validation loss still fell, by about 1e-5 an epoch at the smallest learning
# rate, for hundreds of epochs (a first run reached epoch 306 at 96.02 % validation accuracy, 95.94 % at epoch 93).
TRAINING = {"batch_size": 100, "optimizer": "adam", "learning_rate": 0.001, "epochs": 100}
SPARSITY = 0.8  # fraction of the dense kernel set to zero


def build_model(input_shape=(28, 28), num_classes=10):
    inputs = keras.Input(input_shape)
    h = keras.layers.Reshape((*input_shape[:2], 1))(inputs)
    h = keras.layers.Conv2D(4, 3, padding="same", activation="relu")(h)
    h = keras.layers.MaxPooling2D(2)(h)
    h = keras.layers.Conv2D(5, 3, padding="same", activation="relu")(h)
    h = keras.layers.MaxPooling2D(2)(h)
    h = keras.layers.Flatten()(h)
    outputs = keras.layers.Dense(num_classes, activation="softmax", name="head")(h)
    return keras.Model(inputs, outputs, name="cnn_baseline_pruned")


class MagnitudePruning(keras.callbacks.Callback):
    """Keeps the `sparsity` smallest-magnitude weights of one layer's kernel, chosen when training starts, at zero."""

    def __init__(self, layer_name: str, sparsity: float):
        super().__init__()
        self.layer_name, self.sparsity = layer_name, sparsity
        self.mask = None

    def on_train_begin(self, logs=None):
        kernel = self.model.get_layer(self.layer_name).kernel
        weights = keras.ops.convert_to_numpy(kernel)
        pruned = np.argsort(np.abs(weights), axis=None)[:round(self.sparsity * weights.size)]
        mask = np.ones(weights.size, dtype=weights.dtype)
        mask[pruned] = 0.0
        self.mask = mask.reshape(weights.shape)
        kernel.assign(weights * self.mask)

    def on_train_batch_end(self, batch, logs=None):
        kernel = self.model.get_layer(self.layer_name).kernel
        kernel.assign(kernel * self.mask)  # the optimizer's step moved some pruned weights off zero


def callbacks():
    return [MagnitudePruning("head", SPARSITY)]
