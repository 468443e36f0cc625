"""Which of the models students typically write does bench.engine train? A coverage report.

Run from the repository root:  python benchmarks/student_models.py

The collection: 18 small MNIST models in the style of Keras's own examples ("Simple MNIST convnet", the
Sequential and functional API guides, "Image classification from scratch" with its augmentation block) and of
course notebooks (a dense net with dropout, LeNet-5, a batch-normalised convnet, a residual block, an
Inception-style concatenation, squeeze-and-excitation gating, an LSTM over rows). Each is built for (28, 28)
images and 10 classes, compiled with Adam and sparse categorical cross-entropy, as `bench.train` does, with
the challenge's standard callbacks; then `bench.engine.plan` says whether the engine runs it or names the first
thing that sends it to `model.fit`. Nothing is trained: `plan` only compares one forward pass with Keras's.

The last line is `coverage <runs>/<models> (<share> %)`.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

INPUT_SHAPE, CLASSES = (28, 28), 10


def models(keras) -> dict:
    """name -> a function building that model (uncompiled)."""
    layers = keras.layers

    def image_input():
        inputs = keras.Input(INPUT_SHAPE)
        return inputs, layers.Reshape((*INPUT_SHAPE, 1))(inputs)

    def head(x, dropout=None):
        x = layers.Flatten()(x) if len(x.shape) > 2 else x
        if dropout:
            x = layers.Dropout(dropout)(x)
        return layers.Dense(CLASSES, activation="softmax")(x)

    def dense_net():
        return keras.Sequential([keras.Input(INPUT_SHAPE), layers.Flatten(), layers.Dense(128, activation="relu"),
                                 layers.Dense(CLASSES, activation="softmax")])

    def dense_net_dropout():
        return keras.Sequential([keras.Input(INPUT_SHAPE), layers.Flatten(), layers.Dense(128, activation="relu"),
                                 layers.Dropout(0.2), layers.Dense(CLASSES, activation="softmax")])

    def dense_net_noise():
        return keras.Sequential([keras.Input(INPUT_SHAPE), layers.Flatten(), layers.GaussianNoise(0.1),
                                 layers.Dense(64, activation="relu"), layers.Dense(CLASSES, activation="softmax")])

    def simple_mnist_convnet():  # Keras example "Simple MNIST convnet"
        inputs, x = image_input()
        x = layers.Conv2D(32, 3, activation="relu")(x)
        x = layers.MaxPooling2D(2)(x)
        x = layers.Conv2D(64, 3, activation="relu")(x)
        x = layers.MaxPooling2D(2)(x)
        return keras.Model(inputs, head(x, dropout=0.5))

    def lenet5():
        inputs, x = image_input()
        x = layers.Conv2D(6, 5, padding="same", activation="tanh")(x)
        x = layers.AveragePooling2D(2)(x)
        x = layers.Conv2D(16, 5, activation="tanh")(x)
        x = layers.AveragePooling2D(2)(x)
        x = layers.Flatten()(x)
        x = layers.Dense(120, activation="tanh")(x)
        x = layers.Dense(84, activation="tanh")(x)
        return keras.Model(inputs, head(x))

    def batchnorm_convnet():
        inputs, x = image_input()
        for filters in (8, 16):
            x = layers.Conv2D(filters, 3, strides=2, padding="same", use_bias=False)(x)
            x = layers.BatchNormalization()(x)
            x = layers.Activation("relu")(x)
        return keras.Model(inputs, head(layers.GlobalAveragePooling2D()(x)))

    def augmented_convnet():  # "Image classification from scratch": augmentation inside the model
        inputs, x = image_input()
        x = layers.RandomRotation(0.05)(x)
        x = layers.RandomTranslation(0.1, 0.1)(x)
        x = layers.Conv2D(8, 3, activation="relu")(x)
        x = layers.MaxPooling2D(2)(x)
        return keras.Model(inputs, head(layers.GlobalAveragePooling2D()(x)))

    def residual_block():
        inputs, x = image_input()
        x = layers.Conv2D(8, 3, strides=2, padding="same", activation="relu")(x)
        y = layers.Conv2D(8, 3, padding="same", activation="relu")(x)
        y = layers.Conv2D(8, 3, padding="same")(y)
        x = layers.Activation("relu")(layers.Add()([x, y]))
        return keras.Model(inputs, head(layers.GlobalAveragePooling2D()(x)))

    def inception_concatenate():
        inputs, x = image_input()
        x = layers.Conv2D(8, 3, strides=2, padding="same", activation="relu")(x)
        branches = [layers.Conv2D(4, size, padding="same", activation="relu")(x) for size in (1, 3, 5)]
        x = layers.Concatenate()(branches)
        return keras.Model(inputs, head(layers.GlobalAveragePooling2D()(x)))

    def squeeze_excitation():
        inputs, x = image_input()
        x = layers.Conv2D(8, 3, strides=2, padding="same", activation="relu")(x)
        gate = layers.GlobalAveragePooling2D()(x)
        gate = layers.Dense(2, activation="relu")(gate)
        gate = layers.Dense(8, activation="sigmoid")(gate)
        x = layers.Multiply()([x, layers.Reshape((1, 1, 8))(gate)])
        return keras.Model(inputs, head(layers.GlobalAveragePooling2D()(x)))

    def separable_convnet():
        inputs, x = image_input()
        x = layers.Conv2D(8, 3, strides=2, activation="relu")(x)
        x = layers.SeparableConv2D(16, 3, strides=2, activation="relu")(x)
        return keras.Model(inputs, head(layers.GlobalAveragePooling2D()(x)))

    def depthwise_convnet():
        inputs, x = image_input()
        x = layers.Conv2D(8, 3, strides=2, activation="relu")(x)
        x = layers.DepthwiseConv2D(3, activation="relu")(x)
        x = layers.Conv2D(16, 1, activation="relu")(x)
        return keras.Model(inputs, head(layers.GlobalMaxPooling2D()(x)))

    def leaky_relu_convnet():
        inputs, x = image_input()
        x = layers.Conv2D(8, 3, strides=2)(x)
        x = layers.LeakyReLU(0.1)(x)
        x = layers.Conv2D(16, 3, strides=2)(x)
        x = layers.ReLU()(x)
        return keras.Model(inputs, head(x))

    def spatial_dropout_convnet():
        inputs, x = image_input()
        x = layers.Conv2D(16, 3, strides=2, activation="relu")(x)
        x = layers.SpatialDropout2D(0.1)(x)
        return keras.Model(inputs, head(layers.GlobalAveragePooling2D()(x)))

    def layernorm_dense():
        return keras.Sequential([keras.Input(INPUT_SHAPE), layers.Flatten(), layers.Dense(64),
                                 layers.LayerNormalization(), layers.Activation("gelu"),
                                 layers.Dense(CLASSES, activation="softmax")])

    def elu_dense_he():
        return keras.Sequential([keras.Input(INPUT_SHAPE), layers.Flatten(),
                                 layers.Dense(64, activation="elu", kernel_initializer="he_normal"),
                                 layers.Dense(32, activation="elu", kernel_initializer="he_normal"),
                                 layers.Dense(CLASSES, activation="softmax")])

    def lstm_rows():  # Keras example: an RNN reading the image row by row
        return keras.Sequential([keras.Input(INPUT_SHAPE), layers.LSTM(32), layers.Dense(CLASSES, activation="softmax")])

    def average_pool_skip():
        inputs, x = image_input()
        a = layers.Conv2D(8, 3, strides=2, padding="same", activation="relu")(x)
        b = layers.AveragePooling2D(2)(layers.Conv2D(8, 1, activation="relu")(x))
        x = layers.Average()([a, b])
        return keras.Model(inputs, head(layers.GlobalAveragePooling2D()(x)))

    return {function.__name__: function for function in (
        dense_net, dense_net_dropout, dense_net_noise, simple_mnist_convnet, lenet5, batchnorm_convnet,
        augmented_convnet, residual_block, inception_concatenate, squeeze_excitation, separable_convnet,
        depthwise_convnet, leaky_relu_convnet, spatial_dropout_convnet, layernorm_dense, elu_dense_he, lstm_rows,
        average_pool_skip)}


def main() -> None:
    import keras
    import numpy as np

    from bench import config, engine, train

    challenge = config.from_dict({"engine": "auto"})
    sample = np.random.default_rng(0).random((engine.CHECK_IMAGES, *INPUT_SHAPE), dtype=np.float32)
    runs = 0
    built = models(keras)
    for name, build in built.items():
        keras.utils.set_random_seed(0)
        model = build()
        model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
        callbacks, _ = train.training_callbacks(None, challenge)
        try:
            engine.plan(model, callbacks, sample, "sparse", threads=1)
        except engine.Unsupported as reason:
            print(f"model.fit  {name:<24} {model.count_params():>7,} params  the engine does not run {reason}")
        else:
            runs += 1
            print(f"engine     {name:<24} {model.count_params():>7,} params")
    print(f"coverage {runs}/{len(built)} ({100 * runs / len(built):.0f} %)")


if __name__ == "__main__":
    main()
