"""Frontier, under 500 parameters: a 9-channel separable block shared by four residual steps, spatial head.

Target (issue 3): >= 98.0 % MNIST test accuracy, mean of 3 seeds, with fewer than 500 parameters.
471 parameters: stem 90, shared block 171, squeeze 20, dense 190.

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
- The squeeze is linear (no ReLU; the max-pool after it is the head's non-linearity). With a ReLU, two
  maps are few enough to die together: from seed 1's initial weights both were zero on every image after
  the first epoch, under model.fit and on the engine alike (benchmarks/dead_units.py), and on the engine
  the run stayed at 11.35 % test accuracy. A linear map passes gradient on every image, so it cannot die.
Short comparison behind the choices (harness, seed 0, --train-limit 20000 so 15,000 fit and 5,000
validation images, 10 epochs, the choice made on validation accuracy only):
this layout 92.2 % (C=9, head 2, 471 parameters) and 88.5 % (C=8, 432); an unshared
stack of four separable convs with global pooling (487) 89.4 %; the shared block with global
pooling (C=10, 410) 77.1 %; the same with BatchNorm per application (C=9, 451) 52 %, unstable.
Ten short epochs say which design learns faster, not where it lands: the target is unverified.
The squeeze, the same 10-epoch setting on seeds 0, 1, 2 (`python -m bench evaluate <both files> --seeds 3
--epochs 10 --train-limit 20000 --engine auto`, 2026-12-02), validation accuracy: with ReLU 92.2 / 11.4 / 92.6 %,
linear 93.8 / 92.1 / 90.4 %.
"""

import keras

AUTHOR = "bench (frontier)"
TRAINING = {"batch_size": 128, "optimizer": "adam", "learning_rate": 0.003}

CHANNELS = 9
HEAD_CHANNELS = 2
# After the stem (28 x 28): "pool" halves the map, "block" is one residual step with the shared weights.
PLAN = ("pool", "block", "block", "pool", "block", "block")


def build_model(input_shape=(28, 28), num_classes=10, channels=CHANNELS, head_channels=HEAD_CHANNELS):
    inputs = keras.Input(input_shape)
    h = keras.layers.Reshape((*input_shape[:2], 1))(inputs)
    h = keras.layers.Conv2D(channels, 3, padding="same", activation="relu", name="stem")(h)
    shared = keras.layers.SeparableConv2D(channels, 3, padding="same", activation="relu", name="shared_block")
    for step in PLAN:
        h = keras.layers.MaxPooling2D(2)(h) if step == "pool" else keras.layers.Add()([h, shared(h)])
    # The spatial head: squeeze linearly to a few maps, pool 7x7 -> 3x3, and let a dense layer read positions.
    h = keras.layers.Conv2D(head_channels, 1, name="squeeze")(h)
    h = keras.layers.MaxPooling2D(2)(h)
    h = keras.layers.Flatten()(h)
    outputs = keras.layers.Dense(num_classes, activation="softmax")(h)
    return keras.Model(inputs, outputs, name=f"shared_separable_{channels}x{head_channels}")
