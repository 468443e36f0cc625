"""Frontier, under 160 parameters: a 2-channel separable block shared by four residual steps, 3x3 head.

Target (issue 3): >= 93.0 % MNIST test accuracy, mean of 3 seeds, with fewer than 160 parameters
(seed 004's 158-parameter classroom model reported 91.12 %). 147 parameters: stem 20, shared
block 24, squeeze 3, dense 100 (the same 3 x 3 x 1 -> 10 head as seed 004).

Design (ours), the same family in all three frontier entries:
- Depth from weight sharing (seed 000): one depthwise-separable 3x3 block is applied four times,
  twice at 14 x 14 and twice at 7 x 7, each a residual step h <- h + relu(block(h)) (seed 002's skip
  map), so the net is six convs deep and pays for two (stem and block).
- Separable convs: a C -> C separable 3x3 conv costs C*C + 10*C weights, a full one 9*C*C + C.
- A spatial head instead of global pooling: a 1x1 conv squeezes the 7 x 7 map to HEAD_CHANNELS maps,
  a max-pool takes them to 3 x 3 and a dense layer reads the positions. In short runs, global
  average pooling over 4-10 channels learnt far slower (58-77 % validation accuracy where the
  spatial head had 80-95 %).
- No BatchNorm: it costs 3-4 parameters a channel and, per application of the shared block, was
  unstable in a short run (validation accuracy 52 % then 30-40 %) and five times slower.
- No label smoothing or augmentation: these nets underfit (training and validation accuracy
  within half a point of each other), and both are regularisers.
- Input at full resolution for the stem only; everything after it runs at 14 x 14 or less.
Short comparison behind the choices (harness, seed 0, --train-limit 20000 so 15,000 fit and 5,000
validation images, 10 epochs, the choice made on validation accuracy only):
this layout 82.5 % at learning rate 0.01 (still rising about half a point an epoch) and
79.5 % at 0.003; seed 004's layout with ReLU instead of sigmoid 83.6 % at 0.01 (flat over its last
five epochs) and 80.5 % at 0.003, 79.8 % with a max-pool for its last average pool, 78.7 % with its
convs at full resolution; a 4-channel shared block with global pooling (146) 58-64 %.
Ten short epochs say which design learns faster, not where it lands: the target is unverified.
The squeeze conv is linear: with a ReLU there, seed 1 of the first board run started with its one
head map dead and never left chance (training loss 2.302 for 39 epochs; seeds 0 and 2 reached
89.0 and 87.3 %), so a single ReLU channel in front of the head was a coin toss per seed.
"""

import keras

AUTHOR = "bench (frontier)"
TRAINING = {"batch_size": 128, "optimizer": "adam", "learning_rate": 0.01}

CHANNELS = 2
HEAD_CHANNELS = 1
# After the stem (28 x 28): "pool" halves the map, "block" is one residual step with the shared weights.
PLAN = ("pool", "block", "block", "pool", "block", "block")


def build_model(input_shape=(28, 28), num_classes=10, channels=CHANNELS, head_channels=HEAD_CHANNELS):
    inputs = keras.Input(input_shape)
    h = keras.layers.Reshape((*input_shape[:2], 1))(inputs)
    h = keras.layers.Conv2D(channels, 3, padding="same", activation="relu", name="stem")(h)
    shared = keras.layers.SeparableConv2D(channels, 3, padding="same", activation="relu", name="shared_block")
    for step in PLAN:
        h = keras.layers.MaxPooling2D(2)(h) if step == "pool" else keras.layers.Add()([h, shared(h)])
    # The spatial head: squeeze to a few maps, pool 7x7 -> 3x3, and let a dense layer read positions.
    # Linear, not ReLU: one ReLU map that starts dead (all <= 0) passes no gradient, and the net never learns.
    h = keras.layers.Conv2D(head_channels, 1, name="squeeze")(h)
    h = keras.layers.MaxPooling2D(2)(h)
    h = keras.layers.Flatten()(h)
    outputs = keras.layers.Dense(num_classes, activation="softmax")(h)
    return keras.Model(inputs, outputs, name=f"shared_separable_{channels}x{head_channels}")
