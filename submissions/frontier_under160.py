"""Frontier, under 160 parameters: seed 004's 158-parameter layout, trained at a 10x learning rate.

Target (issue 3): >= 93.0 % MNIST test accuracy, mean of 3 seeds, with fewer than 160 parameters
(seed 004's 158-parameter classroom model reported 91.12 %).

The layout is seed 004's, unchanged: avg-pool 2 -> conv 3x3x3 sigmoid -> conv 3x3x1 sigmoid ->
avg-pool 3 -> conv 3x3x10 softmax, 158 parameters. What changes is the training: Nadam at 0.01
instead of its default 0.001, with the board's ReduceLROnPlateau taking the rate down when
validation loss stalls. At 0.001 this model is still learning after 1,000 epochs (the
`classroom_158` row); at 0.01 it covers the same ground in under a hundred. In a short exploration
(one seed, 80 epochs, a plain `model.fit`), 0.01 came out ahead of 0.003 (too slow) and 0.03 (stalls
early without a decay).

What was tried before, and why it went: a 2-channel depthwise-separable block shared by four
residual steps with a 3 x 3 spatial head (147 parameters, the design of the other frontier
entries). On the board it reached 87.91 / 82.76 / 87.93 % (seeds 0 / 1 / 2), below seed 004's
model: with one map in front of the head, the whole net's information passes through nine
numbers, as here, but its 2-channel block learns less from the image than seed 004's two
full convs do. Its first version, with a ReLU on that one head map, left seed 1 dead at chance.
"""

import keras

AUTHOR = "bench (frontier)"
TRAINING = {"batch_size": 1024}
LEARNING_RATE = 0.01


def build_model(input_shape=(28, 28), num_classes=10):
    inputs = keras.Input(input_shape)
    h = keras.layers.Reshape((*input_shape[:2], 1))(inputs)
    h = keras.layers.AvgPool2D(2)(h)
    h = keras.layers.Conv2D(3, 3, activation="sigmoid")(h)
    h = keras.layers.Conv2D(1, 3, activation="sigmoid")(h)
    h = keras.layers.AvgPool2D(3)(h)
    h = keras.layers.Conv2D(num_classes, 3, activation="softmax")(h)
    outputs = keras.layers.Flatten()(h)
    model = keras.Model(inputs, outputs, name="classroom_layout_fast")
    model.compile(keras.optimizers.Nadam(LEARNING_RATE), "sparse_categorical_crossentropy", metrics=["accuracy"])
    return model
