"""Reference: a 697-parameter net, one 3x3 conv then four depthwise-separable 3x3 convs, global pooling.

Source: the best public tiny-MNIST record we know of under 1,000 parameters: one 3x3 conv followed
by four depthwise-separable 3x3 convs with 5, 9, 10 and 8 channels, LeakyReLU, global average
pooling and a 10-way dense layer, reported at 99.03 % test accuracy with 697 parameters, the best
of about 700 runs, early-stopped on the test set. Re-run here under the clean protocol
(validation-only selection, mean of seeds); the code is ours, from those architecture facts.
The facts leave two things open. The first conv's width: 6 channels, with a bias on every layer
and no BatchNorm, is the one layout that gives exactly 697 (60 + 149 for conv and separable conv 6->5,
then 99 + 181 + 178 for 5->9->10->8, and 90 for the dense layer). And the down-sampling, which
costs no parameters: we max-pool 2x2 after the second, third and fourth convs (28 -> 14 -> 7 -> 3),
without which four 3x3 layers would see only 11 x 11 pixels before the global pool.
"""

import keras

AUTHOR = "public record (re-implemented)"
TRAINING = {"batch_size": 128, "optimizer": "adam", "learning_rate": 0.003}

FIRST_CONV = 6
SEPARABLE_CHANNELS = (5, 9, 10, 8)
POOL_AFTER = {0, 1, 2}  # indexes into SEPARABLE_CHANNELS


def build_model(input_shape=(28, 28), num_classes=10):
    inputs = keras.Input(input_shape)
    h = keras.layers.Reshape((*input_shape[:2], 1))(inputs)
    h = keras.layers.Conv2D(FIRST_CONV, 3, padding="same")(h)
    h = keras.layers.LeakyReLU()(h)
    for index, channels in enumerate(SEPARABLE_CHANNELS):
        h = keras.layers.SeparableConv2D(channels, 3, padding="same")(h)
        h = keras.layers.LeakyReLU()(h)
        if index in POOL_AFTER:
            h = keras.layers.MaxPooling2D(2)(h)
    h = keras.layers.GlobalAveragePooling2D()(h)
    outputs = keras.layers.Dense(num_classes, activation="softmax")(h)
    return keras.Model(inputs, outputs, name="separable_697")
