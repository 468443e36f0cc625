"""The submission contract, run in-process on the digits set: the worker's run_job() trains and exports,
bench.audit counts and predicts from the export, and the runner's score() turns predictions into accuracy.
(The same stages in their sandboxed subprocesses are tested in test_integrity.py and test_evaluate.py.)"""

from __future__ import annotations

import pytest

from conftest import DENSE_ENTRY, run_in_process as run


def test_factory_taking_shape_and_classes_trains_and_scores(write_entry):
    record = run(write_entry("dense", DENSE_ENTRY))
    assert record["status"] == "OK", record["message"]
    # Flatten 64 -> Dense 12 (64*12+12) -> Dense 10 (12*10+10)
    assert record["total_params"] == record["trainable_params"] == 64 * 12 + 12 + 12 * 10 + 10
    assert record["epochs"] == 2 and len(record["history"]["val_loss"]) == 2
    assert 0.0 <= record["test_accuracy"] <= 1.0 and record["train_seconds"] > 0


def test_factory_without_arguments_and_own_compile_with_one_hot_loss(write_entry):
    path = write_entry("seed004_style", '''
        import keras
        TRAINING = {"batch_size": 32}
        def build_model():
            inputs = keras.layers.Input((8, 8))
            x = keras.layers.Flatten()(inputs)
            outputs = keras.layers.Dense(10, activation="softmax")(x)
            model = keras.Model(inputs, outputs)
            model.compile("nadam", "categorical_crossentropy", metrics=["accuracy"])
            return model
    ''')
    record = run(path, max_epochs=5)
    assert record["status"] == "OK", record["message"]
    assert record["total_params"] == 650
    # One-hot labels reached the categorical loss: it learned something beyond chance (10 %).
    assert 0.0 <= record["test_accuracy"] <= 1.0 and record["test_correct"]["images"] == 360  # scored on digits' test split


def test_compiled_model_keeps_its_optimizer(write_entry):
    path = write_entry("own_sgd", '''
        import keras
        def build_model(input_shape, num_classes):
            model = keras.Sequential([keras.Input(input_shape), keras.layers.Flatten(), keras.layers.Dense(num_classes, activation="softmax")])
            model.compile(optimizer=keras.optimizers.SGD(learning_rate=0.0), loss="sparse_categorical_crossentropy")
            return model
    ''')
    record = run(path)
    assert record["status"] == "OK", record["message"]
    # A learning rate of zero (the submitter's own optimizer) leaves the loss where it started.
    assert record["history"]["loss"][0] == pytest.approx(record["history"]["loss"][1], rel=1e-6)


def test_uncompiled_logits_model_with_from_logits(write_entry):
    path = write_entry("logits", '''
        import keras
        FROM_LOGITS = True
        TRAINING = {"optimizer": "adam", "learning_rate": 0.01, "batch_size": 32}
        def build_model(input_shape, num_classes):
            return keras.Sequential([keras.Input(input_shape), keras.layers.Flatten(), keras.layers.Dense(num_classes)])
    ''')
    record = run(path, max_epochs=4)
    assert record["status"] == "OK", record["message"]
    assert record["test_accuracy"] > 0.7


def test_subclassed_model_is_built_on_a_sample_and_shared_layer_counted_once(write_entry):
    path = write_entry("subclassed", '''
        import keras
        class Twice(keras.Model):
            def __init__(self):
                super().__init__()
                self.flatten = keras.layers.Flatten()
                self.shared = keras.layers.Dense(64, activation="relu")
                self.head = keras.layers.Dense(10, activation="softmax")
            def call(self, x):
                x = self.flatten(x)
                return self.head(self.shared(self.shared(x)))
        def build_model():
            return Twice()
    ''')
    record = run(path)
    assert record["status"] == "OK", record["message"]
    assert record["total_params"] == (64 * 64 + 64) + (64 * 10 + 10)


def test_model_without_weights_is_invalid(write_entry):
    path = write_entry("empty", '''
        import keras
        class Nothing(keras.Model):
            def call(self, x):
                return keras.ops.zeros((keras.ops.shape(x)[0], 10))
        def build_model():
            return Nothing()
    ''')
    record = run(path)
    assert record["status"] == "INVALID"
    assert "no weights" in record["message"]


def test_factory_returning_something_else_is_invalid(write_entry):
    record = run(write_entry("not_model", "def build_model():\n    return 'a model'\n"))
    assert record["status"] == "INVALID"
    assert "not a keras.Model" in record["message"]


def test_missing_build_model_is_invalid(write_entry):
    record = run(write_entry("no_factory", "def make():\n    pass\n"))
    assert record["status"] == "INVALID" and "build_model" in record["message"]


def test_wrong_output_shape_is_invalid(write_entry):
    path = write_entry("seven", '''
        import keras
        def build_model(input_shape, num_classes):
            return keras.Sequential([keras.Input(input_shape), keras.layers.Flatten(), keras.layers.Dense(7)])
    ''')
    record = run(path)
    assert record["status"] == "INVALID"
    assert "(7,)" in record["message"] and "10 units" in record["message"]


def test_wrong_input_shape_is_invalid_with_a_hint(write_entry):
    path = write_entry("mnist_shaped", '''
        import keras
        def build_model():
            inputs = keras.Input((28, 28))
            return keras.Model(inputs, keras.layers.Dense(10)(keras.layers.Flatten()(inputs)))
    ''')
    record = run(path)
    assert record["status"] == "INVALID"
    assert "(8, 8)" in record["message"] and "input_shape" in record["message"]


def test_over_budget_is_detected_before_training(write_entry):
    record = run(write_entry("dense", DENSE_ENTRY), max_params=100)
    assert record["status"] == "OVER_BUDGET"
    assert "910 parameters" in record["message"] and "100" in record["message"]
    assert "history" not in record and "test_accuracy" not in record


def test_error_in_factory_is_failed_with_submitters_line_first(write_entry):
    path = write_entry("typo", '''
        import keras
        def build_model(input_shape, num_classes):
            x = keras.Input(input_shape)
            return keras.Model(x, keras.layers.Dense(num_classes)(x) + undefined_name)
    ''')
    record = run(path)
    assert record["status"] == "FAILED"
    assert record["message"].startswith(f"{path}, line 5, in build_model")
    assert "NameError" in record["message"] and "undefined_name" in record["message"]
    assert "Traceback" in record["traceback"]


def test_import_error_is_failed(write_entry):
    record = run(write_entry("bad_import", "import no_such_module_anywhere\n"))
    assert record["status"] == "FAILED"
    assert "ModuleNotFoundError" in record["message"] and "line 1" in record["message"]


@pytest.mark.parametrize("training, expected", [
    ({"batchsize": 32}, "unknown key 'batchsize'"),
    ({"batch_size": "32"}, "TRAINING['batch_size'] = '32' has the wrong type"),
    ({"epochs": 0}, "must be positive"),
    # Every mistake at once, so the author mends them in one go (a helper's student fixed one and met the next).
    ({"epochs": 5.0, "learning_rate": "0.01", "optimizer": "adamm"}, "TRAINING['epochs'] = 5.0 has the wrong type; expected int; "
     "TRAINING['learning_rate'] = '0.01' has the wrong type; expected int or float; TRAINING['optimizer'] = 'adamm' is not a Keras optimizer"),
])
def test_bad_training_settings_are_invalid(write_entry, training, expected):
    source = DENSE_ENTRY.replace('TRAINING = {"batch_size": 64}', f"TRAINING = {training!r}")
    record = run(write_entry("dense", source))
    assert record["status"] == "INVALID"
    assert expected in record["message"]


def test_epochs_are_capped_by_the_challenge(write_entry):
    source = DENSE_ENTRY.replace('TRAINING = {"batch_size": 64}', 'TRAINING = {"batch_size": 64, "epochs": 50}')
    record = run(write_entry("dense", source), max_epochs=3)
    assert record["epochs"] == 3


def test_entry_callbacks_are_appended(write_entry):
    path = write_entry("stops_early", DENSE_ENTRY + '''
    class StopAfterFirstEpoch(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            self.model.stop_training = True

    def callbacks():
        return [StopAfterFirstEpoch()]
    ''')
    record = run(path, max_epochs=5)
    assert record["status"] == "OK", record["message"]
    assert record["epochs"] == 1


def test_check_mode_takes_one_step_and_does_not_train(write_entry):
    record = run(write_entry("dense", DENSE_ENTRY), mode="check")
    assert record["status"] == "OK"
    assert record["message"].startswith("check passed")
    assert "test_accuracy" not in record and "history" not in record


def test_best_validation_weights_are_scored_at_the_epoch_cap(write_entry):
    record = run(write_entry("dense", DENSE_ENTRY), max_epochs=4)
    history = record["history"]
    best = min(range(len(history["val_loss"])), key=history["val_loss"].__getitem__)
    # val_accuracy is recomputed on the restored weights: it matches the best val_loss epoch's.
    assert record["val_accuracy"] == pytest.approx(history["val_accuracy"][best], abs=1e-6)


def test_syntax_error_is_failed_with_its_line(write_entry):
    record = run(write_entry("broken_syntax", "import keras\ndef build_model(:\n    pass\n"))
    assert record["status"] == "FAILED"
    assert "line 2: SyntaxError" in record["message"]


def test_finalize_hook_decides_the_model_that_is_exported_and_scored(write_entry):
    """`finalize(model)` runs after training with the best weights restored: an int8-quantized head is what the
    audit counts (8-bit kernel plus float scales), and the run is scored on it."""
    entry = write_entry("quantized", DENSE_ENTRY + '''
    def finalize(model):
        model.quantize("int8")
        return model
''')
    record = run(entry, max_epochs=3)
    assert record["status"] == "OK", record["message"]
    assert sorted(t[:2] for t in record["weight_tensors"] if t[0] == "int8") == [["int8", 120], ["int8", 768]]
    assert record["total_params"] == 910 + 12 + 10  # a float32 scale per output unit of each Dense
    assert 0.0 <= record["test_accuracy"] <= 1.0 and record["test_correct"]["images"] == 360  # scored on digits' test split


@pytest.mark.parametrize("hook, words", [("finalize = 3", "finalize must be a function"),
                                          ("def finalize(model):\n        model.quantize('int8')", "returned NoneType, not a keras.Model")])
def test_a_broken_finalize_hook_is_invalid_with_what_to_return(write_entry, hook, words):
    record = run(write_entry("bad_finalize", DENSE_ENTRY + "\n    " + hook + "\n"), mode="check")
    assert record["status"] == "INVALID" and words in record["message"]


def test_the_training_process_starts_keras_without_unused_packages_and_the_entry_may_still_import_them(tmp_path):
    """bench.imports: `import keras` in the training process leaves out scikit-learn, pandas, matplotlib and JAX
    (a second of every run's start-up), and an entry that imports them afterwards gets them, the engine JAX too."""
    import subprocess
    import sys

    script = ("import sys\n"
              "from bench import train\n"
              "train._prepare_tensorflow(1, 0)\n"
              "print(sorted({m.split('.')[0] for m in sys.modules} & {'keras', 'sklearn', 'pandas', 'matplotlib', 'jax'}))\n"
              "import pandas, sklearn, matplotlib, jax\n"
              "print('imported', jax.numpy.ones(2).sum())\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                          env={**__import__("os").environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.splitlines() == ["['keras']", "imported 2.0"]
