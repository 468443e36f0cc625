"""A factory that downloads MNIST itself, as a tutorial script does before it builds its model."""
import keras


def build_model(input_shape, num_classes):
    (x_train, y_train), _ = keras.datasets.mnist.load_data()
    return keras.Sequential([keras.Input(input_shape), keras.layers.Flatten(),
                             keras.layers.Dense(num_classes, activation="softmax")])
