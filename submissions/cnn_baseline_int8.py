"""cnn_baseline with its dense head quantized to int8 after training: storage counts 8 bits a weight.

The architecture is `cnn_baseline`'s (conv 3x3 x4 -> max-pool -> conv 3x3 x5 -> max-pool -> dense 10 from
7 x 7 x 5 features). It trains in float32 as usual; then the optional `finalize(model)` hook, which the harness
calls with the trained model (the best validation weights restored), runs `model.quantize("int8")`, Keras 3's
post-training quantization, which replaces the dense kernel by int8 values and a float32 scale per output unit
(absolute-max scaling). Keras 3.15 quantizes Dense layers, not Conv2D, so the two convolutions stay float32.
The exported model is the quantized one: its accuracy is what the board scores, and `storage_bits` counts the
int8 kernel at 8 bits and the scales at 32 (`total_params` counts the 10 scales as parameters too).
"""

import keras

AUTHOR = "bench examples"
TRAINING = {"batch_size": 100, "optimizer": "adam", "learning_rate": 0.001}


def build_model(input_shape=(28, 28), num_classes=10):
    inputs = keras.Input(input_shape)
    h = keras.layers.Reshape((*input_shape[:2], 1))(inputs)
    h = keras.layers.Conv2D(4, 3, padding="same", activation="relu")(h)
    h = keras.layers.MaxPooling2D(2)(h)
    h = keras.layers.Conv2D(5, 3, padding="same", activation="relu")(h)
    h = keras.layers.MaxPooling2D(2)(h)
    h = keras.layers.Flatten()(h)
    outputs = keras.layers.Dense(num_classes, activation="softmax", name="head")(h)
    return keras.Model(inputs, outputs, name="cnn_baseline_int8")


def finalize(model):
    model.quantize("int8")
    return model
