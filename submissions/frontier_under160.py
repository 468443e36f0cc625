"""Frontier, under 160 parameters: seed 004's 158-parameter layout with tanh in place of sigmoid.

Target (issue 3): >= 93.0 % MNIST test accuracy, mean of 3 seeds, with fewer than 160 parameters
(seed 004's 158-parameter classroom model reported 91.12 %).

Layout as in `classroom_158`: avg-pool 2 -> conv 3x3x3 -> conv 3x3x1 -> avg-pool 3 -> conv 3x3x10
softmax, 158 parameters, Nadam at 0.01, batch 1024. The one change is the hidden activation: tanh is
centred on zero, so the next layer's inputs are not all positive and its gradients do not all share a
sign. In a short exploration (a plain `model.fit` on the board's 55,000/5,000 split, Nadam 0.01, 80
epochs, no schedule), validation accuracy at epoch 80 was 91.18 / 89.52 % with tanh against
91.06 / 88.68 % with sigmoid (seeds 0 / 1). Other variants of that exploration, seed 0 only, all
below sigmoid: swish 88.70, max-pool in place of the second avg-pool 89.46, no first pooling (full
28x28 convs, avg-pool 8) 86.38, a stride-2 first conv instead of the first pooling 87.70, pooling
after the first conv instead of before 88.78.

Before that this entry was the seed's sigmoid layout at Nadam 0.01, which `classroom_158` now is
(91.48 +- 0.83 %); before that, a 2-channel depthwise-separable block shared by four residual steps
with a 3 x 3 spatial head (147 parameters): 86.20 +- 2.98 % (87.91 / 82.76 / 87.93).
"""

import keras

AUTHOR = "bench (frontier)"
TRAINING = {"batch_size": 1024}
LEARNING_RATE = 0.01


def build_model(input_shape=(28, 28), num_classes=10):
    inputs = keras.Input(input_shape)
    h = keras.layers.Reshape((*input_shape[:2], 1))(inputs)
    h = keras.layers.AvgPool2D(2)(h)
    h = keras.layers.Conv2D(3, 3, activation="tanh")(h)
    h = keras.layers.Conv2D(1, 3, activation="tanh")(h)
    h = keras.layers.AvgPool2D(3)(h)
    h = keras.layers.Conv2D(num_classes, 3, activation="softmax")(h)
    outputs = keras.layers.Flatten()(h)
    model = keras.Model(inputs, outputs, name="classroom_layout_tanh")
    model.compile(keras.optimizers.Nadam(LEARNING_RATE), "sparse_categorical_crossentropy", metrics=["accuracy"])
    return model
