"""Frontier, under 1,000 parameters: a 14-channel separable block shared by four residual steps, spatial head.

Target (issue 3): >= 99.0 % MNIST test accuracy, mean of 3 seeds, with fewer than 1,000 parameters;
the best public record under 1,000 (99.03 % at 697) chose its run on the test set.
906 parameters: stem 140, shared block 336, squeeze 60, dense 370.

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
this layout 95.4 % (C=14, 906 parameters) and 95.1 % (C=12, head 4, 806); an unshared
stack of four separable convs with global pooling (970) 89.3 %; our `separable_697` 92.0 %.
Ten short epochs say which design learns faster, not where it lands: the target is unverified.
"""

import keras

AUTHOR = "bench (frontier)"
TRAINING = {"batch_size": 128, "optimizer": "adam", "learning_rate": 0.003}

CHANNELS = 14
HEAD_CHANNELS = 4
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
    h = keras.layers.Conv2D(head_channels, 1, activation="relu", name="squeeze")(h)
    h = keras.layers.MaxPooling2D(2)(h)
    h = keras.layers.Flatten()(h)
    outputs = keras.layers.Dense(num_classes, activation="softmax")(h)
    return keras.Model(inputs, outputs, name=f"shared_separable_{channels}x{head_channels}")
