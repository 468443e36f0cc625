"""Honest students' ordinary Keras code (issue 29): what works is trained as written, what cannot work is refused
before training with words that say why, and a failure is kept or retried by whose doing it is.

The files from public bug reports are in tests/cases/ (fc2_*: each docstring says what a correct harness does);
the rest are written here. Every stage runs in this process on `digits` (conftest.run_in_process)."""

from __future__ import annotations

import json
import shutil
import socket
import urllib.error
from pathlib import Path

import pytest

from bench import cli, config, containment, discover, plan, results, runner, score, stages, train
from bench.status import EntryProblem
from conftest import run_in_process

CASES = Path(__file__).parent / "cases"


def case(name: str, tmp_path: Path) -> Path:
    """A copy of tests/cases/NAME.py in its own submissions folder (the run writes beside it)."""
    folder = tmp_path / "submissions"
    folder.mkdir(exist_ok=True)
    return Path(shutil.copy(CASES / f"{name}.py", folder))


# --- labels chosen by what the loss accepts -------------------------------------------------------------------


def test_a_custom_loss_over_integer_labels_gets_integer_labels(tmp_path):
    """fc2_03: `penalised_xent` calls sparse_categorical_crossentropy; its name has no "sparse" in it."""
    record = run_in_process(case("fc2_03_custom_sparse_loss", tmp_path), mode="check")
    assert record["status"] == "OK", record["message"]


class _File:
    """A stand-in for an entry's module, with the given attributes."""

    def __init__(self, **attributes):
        self.__dict__.update(attributes)


def test_labels_follow_the_loss_then_the_files_declaration():
    import keras

    def takes_both(y_true, y_pred):
        return keras.ops.mean(y_pred, axis=-1) * 0.0

    def takes_neither(y_true, y_pred):
        raise ValueError("not written yet")

    notes = []
    assert train.labels_for_loss(keras.losses.sparse_categorical_crossentropy, _File(), 10, notes) == "sparse"
    assert train.labels_for_loss("categorical_crossentropy", _File(), 10, notes) == "one_hot"
    # Both forms work: the file says which; without a word, the name decides (no "sparse": one-hot).
    assert train.labels_for_loss(takes_both, _File(LABELS="integer"), 10, notes) == "sparse"
    assert train.labels_for_loss(takes_both, _File(), 10, notes) == "one_hot"
    with pytest.raises(EntryProblem, match="fails on one-hot labels"):
        train.labels_for_loss(keras.losses.sparse_categorical_crossentropy, _File(LABELS="one_hot"), 10, [])
    with pytest.raises(EntryProblem, match='set LABELS = "integer" or LABELS = "one_hot"'):
        train.labels_for_loss(takes_both, _File(LABELS="ints"), 10, [])
    with pytest.raises(EntryProblem, match="fails on integer labels.*not written yet.*and on one-hot labels"):
        train.labels_for_loss(takes_neither, _File(), 10, [])


# --- the factory's compile kept; callbacks that could never act refused ------------------------------------

OWN_METRIC = '''
    import keras

    def build_model(input_shape, num_classes):
        model = keras.Sequential([keras.Input(input_shape), keras.layers.Flatten(),
                                  keras.layers.Dense(num_classes, activation="softmax")])
        model.compile("adam", "sparse_categorical_crossentropy",
                      metrics=[keras.metrics.SparseTopKCategoricalAccuracy(k=2, name="top2")])
        return model

    def callbacks():
        # No epoch improves top2 by a whole 1.0: an EarlyStopping that acts stops after the second epoch.
        return [keras.callbacks.EarlyStopping(monitor="{monitor}", mode="max", min_delta=1.0, patience=1)]
'''


def test_the_factorys_metric_stays_and_its_own_early_stopping_acts(write_entry):
    record = run_in_process(write_entry("own_metric", OWN_METRIC.replace("{monitor}", "top2")), max_epochs=4)
    assert record["status"] == "OK", record["message"]
    assert len(record["history"]["top2"]) == record["epochs"] == 2


def test_a_callback_monitoring_a_validation_value_never_answered_is_invalid_in_check(write_entry):
    record = run_in_process(write_entry("val_metric", OWN_METRIC.replace("{monitor}", "val_top2")), mode="check")
    assert record["status"] == "INVALID"
    assert "'val_top2'" in record["message"] and "val_loss and val_accuracy only" in record["message"]


# --- refused before training, with the cause named --------------------------------------------------------


def test_two_outputs_are_invalid_naming_the_count_not_a_shape_per_batch(tmp_path):
    record = run_in_process(case("fc2_04_aux_output", tmp_path), mode="check")
    assert record["status"] == "INVALID"
    assert "the model has 2 outputs" in record["message"] and "keras.Model(inputs, main_output)" in record["message"]
    assert "per batch" not in record["message"]


def test_a_keras_tuner_factory_is_pointed_at_build_hypermodel(tmp_path):
    record = run_in_process(case("fc2_14_tuner_style_factory", tmp_path), mode="check")
    assert record["status"] == "INVALID"
    assert "build_hypermodel(hp, input_shape, num_classes)" in record["message"] and "Tune an entry" in record["message"]
    assert "Name them input_shape" not in record["message"]


CHANNEL_AXIS = '''
    import keras

    def build_model(input_shape, num_classes):  # Keras's "Simple MNIST convnet", sized for digits
        inputs = keras.Input(shape=(8, 8, 1))
        x = keras.layers.Conv2D(4, 3, activation="relu")(inputs)
        x = keras.layers.Flatten()(x)
        return keras.Model(inputs, keras.layers.Dense(num_classes, activation="softmax")(x))
'''


def test_an_input_with_a_channel_axis_the_images_lack_is_invalid_before_training(write_entry):
    """Keras adds the missing axis when it calls the model, so the sample call alone let this train in full."""
    path = write_entry("channel_axis", CHANNEL_AXIS)
    for mode in ("check", "train"):
        record = run_in_process(path, mode=mode)
        assert record["status"] == "INVALID"
        assert record["message"].startswith("your Input is (8, 8, 1), the images are (8, 8): take `input_shape` from "
                                            "`build_model`'s argument, or Reshape")
        assert "epochs" not in record  # refused before any epoch


def test_an_input_with_free_axes_fits_any_size():
    import keras

    inputs = keras.Input((None, 8))  # rows of 8 pixels, any number of them
    model = keras.Model(inputs, keras.layers.Dense(10, activation="softmax")(keras.layers.GlobalAveragePooling1D()(inputs)))
    train.check_input_shape(model, (8, 8))  # no error
    train.check_input_shape(model, (28, 8))
    with pytest.raises(EntryProblem, match=r"your Input is \(None, 8\), the images are \(8, 8, 1\)"):
        train.check_input_shape(model, (8, 8, 1))


# --- no network in the sandbox ------------------------------------------------------------------------------


def test_a_download_is_explained_as_the_sandbox_having_no_network(tmp_path):
    """What keras.utils.get_file raises without a resolver: its own Exception, chaining urllib's URLError."""
    entry = tmp_path / "downloads.py"
    entry.write_text("")
    try:
        try:
            raise urllib.error.URLError(socket.gaierror(-3, "Temporary failure in name resolution"))
        except urllib.error.URLError as error:
            raise Exception(f"URL fetch failure on https://storage.googleapis.com/mnist.npz: None -- {error.reason}")
    except Exception as error:
        message = train.explain(error, entry, "submissions/downloads.py")
    assert "the sandbox it trains in has no network" in message
    assert "build_model's arguments" in message and "weights=None" in message
    assert "Errno" not in message  # the resolver's words differ from machine to machine
    try:
        try:
            raise BrokenPipeError(32, "Broken pipe")
        except BrokenPipeError:
            raise RuntimeError("the harness stopped answering validations") from None
    except RuntimeError as error:
        assert "network" not in train.explain(error, entry)  # a closed pipe to the runner is not a download


# --- a process that exits: the cause, not a library's stray line -------------------------------------------


def ended(tail: list[str], returncode: int, limit=None) -> dict:
    return stages._ended_early({"limit": limit, "tail": tail, "returncode": returncode}, 60, 1000, stages.QUOTED_STAGE)


def test_an_exit_is_explained_by_its_exit_code_not_by_a_stray_line():
    partial = ended(["Fontconfig error: Cannot load default config file"], 0)
    assert partial["status"] == "FAILED" and "Fontconfig" not in partial["message"]
    assert partial["message"].startswith("training ended without a result (exit code 0); the process exited before")
    assert "os._exit()" in partial["message"]


def test_an_exit_after_a_traceback_quotes_the_error():
    tail = ["Traceback (most recent call last):", '  File "entry.py", line 3, in <module>', "    boom()",
            "ValueError: the entry's own error"]
    assert ended(tail, 1)["message"].startswith("training ended without a result (exit code 1): ValueError: the entry's own error;")


def test_a_process_killed_by_a_signal_without_a_name_is_one_failed_run_not_a_crashed_evaluation():
    """A red team's entry killed its own process with real-time signal 40 (no member of signal.Signals): outside the
    sandbox its return code -40 raised ValueError in the runner, which ended the evaluation and wrote no board."""
    assert ended([], -40)["message"].startswith("training ended without a result (killed by signal 40)")
    audit = stages._ended_early({"limit": None, "tail": [], "returncode": -40}, 60, 1000, "the audit of the exported model")
    assert audit["message"].startswith("the audit of the exported model ended without a result (killed by signal 40)")
    assert "SIGKILL" in ended([], -9)["message"]


# --- failures kept or retried by whose doing they are --------------------------------------------------------


def test_whose_doing_a_failure_is():
    assert ended([], 3)["failure_cause"] == "entry"  # an exit() in the entry: the same next time
    assert ended([], -9)["failure_cause"] == "outside"  # killed by a signal
    assert ended(["MemoryError"], 1)["failure_cause"] == "outside"
    assert ended([], 0, containment.MEMORY)["failure_cause"] == "outside"
    assert ended([], 0, containment.PROCESSES)["failure_cause"] == "entry"
    assert score.failure_cause(ended(["[bench] e seed 0: epoch 3/9"], -9, containment.TIME)) == "outside"  # TIMEOUT
    assert stages.training_failure_cause({"status": "FAILED", "message": "entry.py, line 4 -> ValueError: bug"}) == "entry"
    assert stages.training_failure_cause({"status": "FAILED", "message": "x", "traceback": "ResourceExhaustedError: OOM"}) == "outside"
    assert stages.training_failure_cause({"status": "FAILED", "message": "ProtocolError: " + stages.LATE_ANSWER}) == "outside"
    assert score.failure_cause({"status": "FAILED", "message": "the Ray task failed: node died"}) == "outside"
    assert score.failure_cause({"status": "INVALID", "message": "x"}) == "entry"


class Scripted:
    """An executor that answers every run with `partial` and counts the runs it was given."""

    def __init__(self, partial: dict):
        self.partial, self.trained = partial, 0

    def train(self, challenge, todo, threads, log, extra_job, on_start=None):
        for index in list(todo):
            self.trained += 1
            yield index, dict(self.partial), 1.0


def evaluations(tmp_path, write_entry, partial: dict):
    """evaluate(retry_failed=False) -> how many runs the executor trained; and the record's path."""
    challenge = config.from_dict({"dataset": "digits", "validation_size": 300, "sandbox": "off",
                                  "results": str(tmp_path / "results"), "leaderboard": str(tmp_path / "board.md")})
    runs = plan.plan(challenge, discover.find([str(write_entry("buggy", "def build_model():\n    return 1 / 0\n"))], "submissions"),
                       "fingerprint", [0])

    def evaluate(retry_failed=False) -> int:
        executor = Scripted(partial)
        runner.execute(challenge, runs, executor=executor, log=lambda line: None, retry_failed=retry_failed)
        return executor.trained

    return evaluate, runs[0].path


def test_the_entrys_own_failure_is_cached_retried_on_request_and_never_rewritten(tmp_path, write_entry):
    evaluate, path = evaluations(tmp_path, write_entry, {"status": "FAILED", "message": "buggy.py, line 2 -> ZeroDivisionError",
                                                         "failure_cause": "entry"})
    assert evaluate() == 1
    written = path.read_bytes()
    assert json.loads(written)["failure_cause"] == "entry"
    assert evaluate() == 0  # cached until the file changes, like INVALID
    assert evaluate(retry_failed=True) == 1
    assert path.read_bytes() == written  # the same failure: the record on disk stays as it was


def test_a_failure_from_outside_the_entry_is_retried(tmp_path, write_entry):
    evaluate, path = evaluations(tmp_path, write_entry, {"status": "FAILED", "message": "the Ray task failed: node died"})
    assert evaluate() == 1 and json.loads(path.read_text())["failure_cause"] == "outside"
    assert evaluate() == 1


def test_a_failure_from_outside_is_retried_three_times_in_a_row_then_kept(tmp_path, write_entry):
    """The cause is read from what ended the run, which the entry chooses: /tmp/fresh3/poc_reroll/reroll.py raised
    MemoryError in `finalize` whenever its best val_accuracy was below its bar and drew new weights from os.urandom on
    each retry, so every evaluate rolled again until it liked a run; one that sleeps past `time_limit` (TIMEOUT) held a
    core for the whole limit at every push. Three outside failures in a row are kept, until --retry-failed."""
    evaluate, path = evaluations(tmp_path, write_entry, {"status": "FAILED", "message": "build_model -> MemoryError: unlucky"})
    assert [evaluate() for _ in range(3)] == [1, 1, 1]
    record = json.loads(path.read_text())
    assert record["outside_failures"] == 3 and "retry-failed" in record["message"]
    assert evaluate() == 0  # kept
    assert evaluate(retry_failed=True) == 1
    timeout, path = evaluations(tmp_path / "t", write_entry, {"status": "TIMEOUT", "message": "training ran longer than the time limit"})
    assert [timeout() for _ in range(4)] == [1, 1, 1, 0]


def test_is_cached_reads_the_cause(tmp_path):
    key = {"hash": "k"}
    for record, cached, retried in (({"status": "FAILED", "failure_cause": "entry"}, True, False),
                                    ({"status": "FAILED", "failure_cause": "outside"}, False, False),
                                    ({"status": "FAILED"}, False, False),  # a record from before the field: retried
                                    ({"status": "TIMEOUT", "failure_cause": "outside"}, False, False),
                                    ({"status": "INVALID", "failure_cause": "entry"}, True, True)):
        results.write(tmp_path / "seed0.json", {**record, "key": key})
        assert results.is_cached(tmp_path / "seed0.json", "k") is cached
        assert results.is_cached(tmp_path / "seed0.json", "k", retry_failed=True) is retried


def test_evaluate_has_the_retry_flag():
    assert cli.build_parser().parse_args(["evaluate", "--retry-failed"]).retry_failed is True


OWN_TRAIN_STEP = '''
    import tensorflow as tf
    import keras

    class CustomModel(keras.Model):  # Keras's guide "Customizing what happens in fit() with TensorFlow"
        def train_step(self, data):
            x, y = data
            with tf.GradientTape() as tape:
                loss = self.compute_loss(y=y, y_pred=self(x, training=True))
            self.optimizer.apply_gradients(zip(tape.gradient(loss, self.trainable_variables), self.trainable_variables))
            for metric in self.metrics:
                metric.update_state(loss) if metric.name == "loss" else metric.update_state(y, self(x))
            return {m.name: m.result() for m in self.metrics}

    def build_model(input_shape, num_classes):
        inputs = keras.Input(input_shape)
        outputs = keras.layers.Dense(num_classes, activation="softmax")(keras.layers.Flatten()(inputs))
        return CustomModel(inputs, outputs)
'''


def test_the_keras_guides_own_train_step_passes_check_as_it_trains(write_entry):
    """check's one step went through train_on_batch, which hands train_step (x, y, None): `x, y = data` failed."""
    record = run_in_process(write_entry("own_train_step", OWN_TRAIN_STEP), mode="check")
    assert record["status"] == "OK", record["message"]


def test_metrics_passed_as_keras_2s_third_positional_argument_are_named_as_loss_weights(write_entry):
    """Keras 3 reads compile's third positional argument as loss_weights; its own error said only dtype='string'."""
    record = run_in_process(write_entry("positional_metrics", '''
        import keras

        def build_model(input_shape, num_classes):
            model = keras.Sequential([keras.Input(input_shape), keras.layers.Flatten(),
                                      keras.layers.Dense(num_classes, activation="softmax")])
            model.compile("adam", "sparse_categorical_crossentropy", ["accuracy"])
            return model
    '''), mode="check")
    assert record["status"] == "INVALID", record["message"]
    assert "loss_weights=['accuracy']" in record["message"] and 'metrics=["accuracy"]' in record["message"]


def test_keras_short_loss_names_are_losses_and_a_typo_still_is_not(write_entry):
    """Older notebooks train with TRAINING's "mse": keras.losses.get knows it; the harness's list of names did not."""
    assert train.validated_training(_File(TRAINING={"loss": "mse"}), config.Challenge())["loss"] == "mse"
    with pytest.raises(EntryProblem, match="'msee' is not a Keras loss"):
        train.validated_training(_File(TRAINING={"loss": "msee"}), config.Challenge())
    record = run_in_process(write_entry("mse", '''
        import keras

        TRAINING = {"loss": "mse"}

        def build_model(input_shape, num_classes):
            return keras.Sequential([keras.Input(input_shape), keras.layers.Flatten(),
                                     keras.layers.Dense(num_classes, activation="softmax")])
    '''), mode="check")
    assert record["status"] == "OK", record["message"]


COMPILED_HEAD = '''
    import keras

    FROM_LOGITS = {flag}

    def build_model(input_shape, num_classes):
        model = keras.Sequential([keras.Input(input_shape), keras.layers.Flatten(), keras.layers.Dense(num_classes{softmax})])
        model.compile("adam", {loss}, metrics=["accuracy"])
        return model
'''


def test_a_compiled_loss_that_disagrees_with_the_head_is_named_not_from_logits(write_entry):
    """The factory's compiled loss decides, so "set FROM_LOGITS = True" (or "remove FROM_LOGITS") changed nothing."""
    logits = write_entry("logits_compiled", COMPILED_HEAD.format(flag=True, softmax="", loss='"sparse_categorical_crossentropy"'))
    record = run_in_process(logits, mode="check")
    assert record["status"] == "INVALID"
    assert "SparseCategoricalCrossentropy(from_logits=True)" in record["message"] and "'sparse_categorical_crossentropy'" in record["message"]
    probabilities = write_entry("softmax_compiled", COMPILED_HEAD.format(
        flag=False, softmax=', activation="softmax"', loss="keras.losses.SparseCategoricalCrossentropy(from_logits=True)"))
    record = run_in_process(probabilities, mode="check")
    assert record["status"] == "INVALID"
    assert record["message"].startswith("the loss build_model compiled (sparse_categorical_crossentropy) reads logits"), record["message"]


def test_a_dict_of_one_output_is_named_not_a_shape_of_nothing(write_entry):
    record = run_in_process(write_entry("dict_output", '''
        import keras

        def build_model(input_shape, num_classes):
            inputs = keras.Input(input_shape)
            outputs = keras.layers.Dense(num_classes, activation="softmax")(keras.layers.Flatten()(inputs))
            return keras.Model(inputs, {"digit": outputs})
    '''), mode="check")
    assert record["status"] == "INVALID"
    assert record["message"].startswith("the model returns a dict ('digit')") and "shape ()" not in record["message"]


def test_a_layer_that_breaks_the_models_shapes_at_inference_is_quoted_without_blaming_the_input(write_entry):
    """RandomCrop(6, 6) crops while tracing and passes the image whole at inference, so Dense gets 288 features, not
    128: the message quoted Keras's wrapper line ("Exception encountered when calling Functional.call().") and told a
    model whose Input is the images' shape to take input_shape."""
    record = run_in_process(write_entry("random_crop", '''
        import keras

        def build_model(input_shape, num_classes):
            inputs = keras.Input(input_shape)
            x = keras.layers.RandomCrop(6, 6)(keras.layers.Reshape((*input_shape, 1))(inputs))
            x = keras.layers.Flatten()(keras.layers.Conv2D(8, 3, activation="relu")(x))
            return keras.Model(inputs, keras.layers.Dense(num_classes, activation="softmax")(x))
    '''), mode="check")
    assert record["status"] == "INVALID"
    assert "expected axis -1 of input shape to have value 128" in record["message"], record["message"]
    assert "Exception encountered" not in record["message"] and "take input_shape" not in record["message"]
    assert "the model's layers disagree on a shape when it predicts" in record["message"]


def test_a_near_miss_of_a_name_the_harness_reads_is_named_before_training(write_entry):
    """`Training = {...}` or `def finalise(model)` was never read: the entry trained with the defaults, unquantized."""
    record = run_in_process(write_entry("near_miss", '''
        import keras

        Training = {"learning_rate": 0.01, "epochs": 30}

        def build_model(input_shape, num_classes):
            return keras.Sequential([keras.Input(input_shape), keras.layers.Flatten(),
                                     keras.layers.Dense(num_classes, activation="softmax")])
    '''), mode="check")
    assert record["status"] == "INVALID"
    assert record["message"].startswith("your file defines Training, which the harness never reads: did you mean TRAINING?")

    def finalise(model):
        return model

    assert "did you mean finalize?" in train.misnamed(_File(finalise=finalise))
    assert "did you mean FROM_LOGITS?" in train.misnamed(_File(FROM_LOGIT=True))
    # A value of another kind is the file's own business, and the exact name beside a near miss is read as it is.
    assert train.misnamed(_File(training=True, labels=["zero", "one"], callback=keras_callback())) is None
    assert train.misnamed(_File(TRAINING={}, training={})) is None
    # A near miss the file's own code reads is its own variable: build_model passes from_logits to its loss.
    near_miss = write_entry("own_from_logits", '''
        import keras

        from_logits = True

        def build_model(input_shape, num_classes):
            model = keras.Sequential([keras.Input(input_shape), keras.layers.Flatten(), keras.layers.Dense(num_classes)])
            model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=from_logits), metrics=["accuracy"])
            return model
    ''')
    assert train.misnamed(train.import_submission(near_miss)) is None


def keras_callback():
    import keras

    return keras.callbacks.Callback()


def test_an_optimizer_or_loss_object_in_training_is_pointed_at_compiling_in_build_model():
    """TRAINING takes names; an SGD(momentum=0.9) there was only "the wrong type; expected str"."""
    import keras

    for key, value in (("optimizer", keras.optimizers.SGD(0.1, momentum=0.9)), ("loss", keras.losses.CategoricalCrossentropy(label_smoothing=0.1))):
        with pytest.raises(EntryProblem, match=f"TRAINING\\['{key}'\\] takes a name .* compile the model in build_model"):
            train.validated_training(_File(TRAINING={key: value}), config.Challenge())


def test_a_float16_model_that_diverges_is_told_about_float16(write_entry):
    """Layers with dtype="float16" (not mixed) diverge under Adam within an epoch or two: the message named only the
    learning rate, the loss and normalisation."""
    record = run_in_process(write_entry("float16", '''
        import keras

        def build_model(input_shape, num_classes):
            return keras.Sequential([keras.Input(input_shape), keras.layers.Flatten(),
                                     keras.layers.Dense(64, activation="relu", dtype="float16"),
                                     keras.layers.Dense(num_classes, activation="softmax", dtype="float16")])
    '''), max_epochs=4)
    assert record["status"] == "FAILED" and "training diverged" in record["message"], record["message"]
    assert 'set_global_policy("mixed_float16")' in record["message"]


def test_a_compiled_loss_of_the_entrys_own_on_logits_follows_from_logits(write_entry):
    """A loss function has no from_logits of its own: FROM_LOGITS = True, as the message asked, was ignored for a
    compiled model, so a custom loss on logits could never pass."""
    source = '''
        import keras

        FROM_LOGITS = True

        def smoothed_xent(y_true, logits):
            return keras.losses.sparse_categorical_crossentropy(y_true, logits, from_logits=True)

        def build_model(input_shape, num_classes):
            model = keras.Sequential([keras.Input(input_shape), keras.layers.Flatten(), keras.layers.Dense(num_classes)])
            model.compile("adam", smoothed_xent, metrics=["accuracy"])
            return model
    '''
    record = run_in_process(write_entry("own_loss_on_logits", source), max_epochs=2)
    assert record["status"] == "OK", record["message"]
    assert record["history"]["val_loss"][0] < 3  # read from the logits: probabilities' cross-entropy of logits is far off
    record = run_in_process(write_entry("own_loss_no_flag", source.replace("FROM_LOGITS = True", "")), mode="check")
    assert record["status"] == "INVALID" and "set FROM_LOGITS = True in your file" in record["message"]
