"""Seed 001's GradNet: 50 dense layers, 48 of them gated y = g*relu(Wx+b) + (1-g)*x, g annealed 0 -> 1.

Source: seed 001 (a TF 1.x notebook after "GradNets: Dynamic Interpolation Between Neural
Architectures", arXiv:1511.06827). 784 -> dense 50 relu -> 48 gated 50-unit layers -> dense 10
softmax, dropout 0.05 after every hidden layer, weights from a truncated normal (stddev 0.1),
g = min(t / tau, 1) with t the epoch (fractional, updated every batch) and tau = 10, batch 50,
Adam at 1e-3. At g = 0 the net is a two-layer perceptron; as g grows every gated layer turns from
the identity into a ReLU layer, so depth is switched on gradually. The transcript stops in the
first epoch (iteration 800, g = 0.07, test accuracy about 0.85 and climbing), so the seed
reports no final figure. Left out: the seed's exponential learning-rate decay (the harness's
ReduceLROnPlateau plays that part) and its L1 penalty 50 * mean|W| on the hidden weights.

g is one non-trainable variable shared by the gated layers, annealed by the callback that
`callbacks()` returns. It is a weight of the model, so it counts as 1 of the 162,161
parameters: that way EarlyStopping's restore_best_weights brings back the g the chosen weights
were trained with, and the scored model is the one validation picked.
"""

import keras
from keras import ops

AUTHOR = "seed 001 (re-implemented)"
TRAINING = {"batch_size": 50, "optimizer": "adam", "learning_rate": 0.001, "epochs": 20}  # the seed ran 20 epochs

DEPTH = 50  # all layers, input and output layers included, as in the seed
WIDTH = 50
TAU = 10  # epochs over which g goes from 0 to 1
DROPOUT = 0.05  # the seed's keep_prob 0.95
INIT = keras.initializers.TruncatedNormal(stddev=0.1)


class GatedRelu(keras.layers.Layer):
    """y = g * relu(W x + b) + (1 - g) * x, with g a variable shared by all the gated layers."""

    def __init__(self, gate, **kwargs):
        super().__init__(**kwargs)
        self.gate = gate

    def build(self, input_shape):
        width = input_shape[-1]
        self.kernel = self.add_weight(shape=(width, width), initializer=INIT, name="kernel")
        self.bias = self.add_weight(shape=(width,), initializer="zeros", name="bias")

    def call(self, x):
        return self.gate * ops.relu(ops.matmul(x, self.kernel) + self.bias) + (1.0 - self.gate) * x

    def macs_per_image(self):
        return int(ops.size(self.kernel))  # the matmul; bench/macs.py cannot see into this layer


class GateAnnealing(keras.callbacks.Callback):
    """Sets g = min(t / tau, 1) before every batch, t the fractional epoch."""

    def __init__(self, tau):
        super().__init__()
        self.tau = tau
        self.epoch = 0
        self.gate = None

    def on_train_begin(self, logs=None):
        gated = [layer for layer in self.model.layers if isinstance(layer, GatedRelu)]
        self.gate = gated[0].gate if gated else None  # depth 2 has no gated layer, nothing to anneal

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_begin(self, batch, logs=None):
        if self.gate is not None:
            steps = self.params.get("steps") or 1
            self.gate.assign(min((self.epoch + batch / steps) / self.tau, 1.0))


def callbacks():
    return [GateAnnealing(TAU)]


def build_model(input_shape=(28, 28), num_classes=10, depth=DEPTH, width=WIDTH):
    if depth < 2:
        raise ValueError(f"depth counts the input and output layers, so it must be at least 2, got {depth}")
    gate = keras.Variable(0.0, trainable=False, name="gate")
    inputs = keras.Input(input_shape)
    h = keras.layers.Flatten()(inputs)
    h = keras.layers.Dense(width, activation="relu", kernel_initializer=INIT)(h)
    h = keras.layers.Dropout(DROPOUT)(h)
    for _ in range(depth - 2):
        h = GatedRelu(gate)(h)
        h = keras.layers.Dropout(DROPOUT)(h)
    outputs = keras.layers.Dense(num_classes, activation="softmax", kernel_initializer=INIT)(h)
    return keras.Model(inputs, outputs, name="gradnet")
