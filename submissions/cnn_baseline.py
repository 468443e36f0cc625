"""Seed 000's plain-CNN baseline: two small conv + max-pool stages and a dense softmax, 2,685 parameters.

Source: seed 000 ("Iterated Networks") compared its iterated nets with a `cnn_model` that reached
96.77 % MNIST test accuracy after 20k steps (its iterated 5 x 5 net: 98.33 %). The seed's
`models.py` is not in the transcript, so this architecture is ours: a plain CNN sized to match
the iterated nets (2,685 against their 2,740 parameters) and ending in the same head, a dense
layer from 7 x 7 x 5 features. conv 3x3 x4 relu -> max-pool 2 -> conv 3x3 x5 relu -> max-pool 2
-> dense 10 softmax. The difference from `iterated_unrolled` is depth through weight sharing,
not size. A guess at the seed's own baseline, unverified: its 20k steps and `tf.contrib.learn`
MNIST loader match TensorFlow 1.x's layers tutorial, whose CNN (conv 32 @ 5x5, conv 64 @ 5x5,
dense 1024; about 3.3M parameters) trained by SGD at 0.001 reaches about 97 %.
"""

import keras

AUTHOR = "seed 000 (re-implemented)"
TRAINING = {"batch_size": 100, "optimizer": "adam", "learning_rate": 0.001}


def build_model(input_shape=(28, 28), num_classes=10):
    inputs = keras.Input(input_shape)
    h = keras.layers.Reshape((*input_shape[:2], 1))(inputs)
    h = keras.layers.Conv2D(4, 3, padding="same", activation="relu")(h)
    h = keras.layers.MaxPooling2D(2)(h)
    h = keras.layers.Conv2D(5, 3, padding="same", activation="relu")(h)
    h = keras.layers.MaxPooling2D(2)(h)
    h = keras.layers.Flatten()(h)
    outputs = keras.layers.Dense(num_classes, activation="softmax")(h)
    return keras.Model(inputs, outputs, name="cnn_baseline")
