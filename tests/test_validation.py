"""Validation is the harness's (issue 28, item 4): the training process gets the validation images only, the
runner answers each epoch's val_loss and val_accuracy from the labels it holds, and a record's epochs, validation
history and timings are what the runner answered and timed, whatever the entry writes or asks.

The protocol's pieces are tested in this process; one sandboxed evaluation on digits (30 epochs) runs the
entries that try to get around it, each beside an honest twin that must score the same.
"""

from __future__ import annotations

import json
import os
import shutil
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from bench import cli, config, received, validation

CASES = Path(__file__).parent / "cases"
RNG = np.random.default_rng(0)

# fc2_16's model and callbacks (a batch hook keeps it on model.fit, where its wrapper acts), without its wrapper.
TWIN = '''
import keras


class _KeepFit(keras.callbacks.Callback):
    def on_train_batch_end(self, batch, logs=None):  # a batch hook keeps the entry on model.fit
        pass


def build_model(input_shape, num_classes):
    inputs = keras.Input(input_shape)
    x = keras.layers.Flatten()(inputs)
    x = keras.layers.Dense(64, activation="relu")(x)
    outputs = keras.layers.Dense(num_classes, activation="softmax")(x)
    return keras.Model(inputs, outputs)


def callbacks():
    return [_KeepFit()]
'''
ENTRIES = {
    "honest_twin": TWIN,
    # Trains as the twin, then rewrites its result at exit: one epoch, no time, a perfect validation, extra epochs.
    "forger": TWIN + '''
import atexit, json, os, sys


def _forge():
    path = os.path.join(json.load(open(sys.argv[1]))["output"], "result.json")
    record = json.load(open(path))
    record.update(epochs=1, train_seconds=0, export_seconds=0, worker_seconds={"tensorflow_import": 0, "after_import": 0})
    record["history"] = {"loss": [0.01] * 31, "val_loss": [0.0] * 31, "val_accuracy": [1.0] * 31}
    json.dump(record, open(path, "w"))


atexit.register(_forge)
''',
    # Asks for 1000 epochs twice, in TRAINING and in its own fit call, and drops EarlyStopping, which could end it sooner.
    "greedy": TWIN + '''
TRAINING = {"epochs": 1000}
_fit = keras.Model.fit


def _fit_longer(self, x=None, y=None, **kwargs):
    kwargs["epochs"] = 1000
    kwargs["callbacks"] = [c for c in kwargs.get("callbacks") or [] if not isinstance(c, keras.callbacks.EarlyStopping)]
    return _fit(self, x, y, **kwargs)


keras.Model.fit = _fit_longer
''',
}
# As greedy, and it undoes the stop the harness's last answer asks for: its next request is refused.
ENTRIES["stubborn"] = ENTRIES["greedy"] + '''

class _KeepGoing(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        self.model.stop_training = False


def callbacks():
    return [_KeepFit(), _KeepGoing()]
'''
EPOCHS = 30


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory, mnist_dir):
    """fc2_16 and the entries above, evaluated once in bubblewrap on digits for EPOCHS epochs; records by entry."""
    tmp = tmp_path_factory.mktemp("validation")
    folder = tmp / "submissions"
    folder.mkdir()
    shutil.copy(CASES / "fc2_16_fit_on_validation.py", folder)
    for name, source in ENTRIES.items():
        (folder / f"{name}.py").write_text(f'"""{name}."""\n' + textwrap.dedent(source))
    code = cli.main(["evaluate", str(folder), "--dataset", "digits", "--validation-size", "300", "--seeds", "1",
                     "--epochs", str(EPOCHS), "--sandbox", "required", "--engine", "keras", "--jobs", "2",
                     "--results", str(tmp / "results"), "--leaderboard", str(tmp / "board.md")])
    records = {p.parent.name: json.loads(p.read_text()) for p in (tmp / "results" / "digits").glob("*/seed0.json")}
    return {"code": code, "records": records}


def test_training_on_the_validation_data_finds_no_labels_and_scores_as_its_twin(evaluated):
    cheat, twin = evaluated["records"]["fc2_16_fit_on_validation"], evaluated["records"]["honest_twin"]
    assert cheat["status"] == twin["status"] == "OK", (cheat["message"], twin["message"])
    assert cheat["sandbox"] == twin["sandbox"] == "bubblewrap"
    # Its Model.fit wrapper is handed no validation_data, so it trains exactly as its twin does.
    assert cheat["test_accuracy"] == twin["test_accuracy"]
    assert cheat["epochs"] == twin["epochs"] and cheat["history"]["val_loss"] == twin["history"]["val_loss"]


def test_forged_epochs_history_and_timings_are_replaced_by_the_harnesss(evaluated):
    forged, twin = evaluated["records"]["forger"], evaluated["records"]["honest_twin"]
    assert forged["status"] == "OK", forged["message"]
    assert forged["epochs"] == twin["epochs"] == len(forged["history"]["val_loss"]) > 1
    assert forged["history"]["val_loss"] == twin["history"]["val_loss"] and max(forged["history"]["val_accuracy"]) < 1.0
    assert len(forged["history"]["loss"]) == forged["epochs"]  # the claimed extra epochs are cut to the answered ones
    assert forged["train_seconds"] > 0 and forged["export_seconds"] > 0
    # The whole training stage, finalize and saving included: work after the last answer is not hidden.
    assert forged["train_seconds"] == pytest.approx(forged["stage_seconds"]["train"], abs=0.5)
    assert forged["train_seconds"] > forged["export_seconds"]
    assert forged["test_accuracy"] == twin["test_accuracy"]


def test_max_epochs_is_the_harnesss_whatever_training_or_the_entrys_fit_asks(evaluated):
    greedy = evaluated["records"]["greedy"]
    assert greedy["status"] == "OK", greedy["message"]
    assert greedy["epochs"] == EPOCHS == len(greedy["history"]["val_loss"]) == len(greedy["history"]["loss"])
    stubborn = evaluated["records"]["stubborn"]
    assert stubborn["status"] == "FAILED" and f"max_epochs ({EPOCHS})" in stubborn["message"]
    assert "test_accuracy" not in stubborn


def test_honest_records_hold_the_harnesss_epochs_and_times(evaluated):
    twin = evaluated["records"]["honest_twin"]
    assert twin["epochs"] == len(twin["history"]["val_loss"]) == len(twin["history"]["loss"]) <= EPOCHS
    assert set(twin["history"]) >= {"loss", "accuracy", "val_loss", "val_accuracy", "learning_rate"}
    assert 0 < twin["train_seconds"] <= twin["stage_seconds"]["train"] + 0.5  # the whole stage, as the runner clocked it
    assert all(0 <= seconds <= twin["stage_seconds"]["train"] for seconds in twin["worker_seconds"].values())


# ---- the protocol, in this process ---------------------------------------------------------------------------

def _outputs(images=300, classes=10, logits=False):
    values = RNG.normal(size=(images, classes)).astype("float32")
    if logits:
        return values
    return (np.exp(values) / np.exp(values).sum(1, keepdims=True)).astype("float32")


@pytest.mark.parametrize("from_logits", [False, True])
def test_the_answer_is_kerass_cross_entropy_and_accuracy_rounded(from_logits):
    import keras

    labels = RNG.integers(0, 10, size=300)
    values = _outputs(logits=from_logits)
    if not from_logits:
        values[0, labels[0]] = 0.0  # a zero probability: clipped as Keras clips it
    answer = validation.Harness(labels, 10, None).answer(0, values, from_logits)
    one_hot = np.eye(10, dtype="float32")[labels]
    expected = float(np.mean(keras.losses.categorical_crossentropy(one_hot, values, from_logits=from_logits)))
    assert answer.val_loss == pytest.approx(expected, abs=2e-6)
    assert answer.val_accuracy == round(float(np.mean(values.argmax(1) == labels)), 6)
    assert answer.val_loss == round(answer.val_loss, validation.ANSWER_DECIMALS)


def test_each_epoch_is_answered_once_in_order_and_never_past_max_epochs():
    harness = validation.Harness(RNG.integers(0, 10, size=300), 10, 2)
    assert not harness.answer(0, _outputs(), False).last
    assert harness.answer(1, _outputs(), False).last
    with pytest.raises(validation.ProtocolError, match=r"max_epochs \(2\)"):
        harness.answer(2, _outputs(), False)
    assert len(harness.answers) == 2 and "max_epochs" in harness.problem
    again = validation.Harness(RNG.integers(0, 10, size=300), 10, 5)
    again.answer(0, _outputs(), False)
    with pytest.raises(validation.ProtocolError, match="epoch 1's validation after 1 answered"):
        again.answer(0, _outputs(), False)
    with pytest.raises(validation.ProtocolError, match="epoch 1's validation"):  # refused once, refused from then on
        again.answer(1, _outputs(), False)


def _served(labels=300, max_epochs=3):
    served = validation.Served(validation.Harness(RNG.integers(0, 10, size=labels), 10, max_epochs))
    requests, answers = (os.dup(fd) for fd in served.child_fds)  # what the child inherits
    served.start()
    return served, requests, answers


def test_answers_go_through_the_pipes_and_the_last_says_so():
    served, requests, answers = _served(max_epochs=2)
    with served:
        client = validation.Client(requests, answers, timeout=10)
        first, second = client.ask(0, _outputs(), False), client.ask(1, _outputs(), True)
        assert (first.epoch, first.last, second.epoch, second.last) == (0, False, 1, True)
        with pytest.raises(validation.ProtocolError, match="stopped answering"):
            client.ask(2, _outputs(), False)
    assert [a.val_loss for a in served.harness.answers] == [first.val_loss, second.val_loss]
    assert "max_epochs (2)" in served.harness.problem
    os.close(requests), os.close(answers)


@pytest.mark.parametrize("message, why", [
    (b"GARBAGE!" * 100, "not one"),
    (validation.REQUEST.pack(validation.REQUEST_MAGIC, 0, 0, 299, 10), "299 x 10"),
    (validation.REQUEST.pack(validation.REQUEST_MAGIC, 0, 0xFF, 300, 10), "not one"),
    (validation.REQUEST.pack(validation.REQUEST_MAGIC, 5, 0, 300, 10) + _outputs().tobytes(), "epoch 6's validation after 0"),
])
def test_a_malformed_request_ends_the_answers_and_fails_only_that_run(message, why):
    served, requests, answers = _served()
    with served:
        os.write(requests, message)
        assert os.read(answers, 100) == b""  # end-of-file: the harness answers no more
    assert why in served.harness.problem and not served.harness.answers
    os.close(requests), os.close(answers)


def test_a_trainer_that_stops_mid_request_or_never_ends_one_never_blocks_the_runner():
    served, requests, answers = _served()
    os.write(requests, validation.REQUEST.pack(validation.REQUEST_MAGIC, 0, 0, 300, 10) + b"\0" * 100)  # and then nothing
    started = time.monotonic()
    served.close()
    assert time.monotonic() - started < 2 and not served.harness.answers and not served._thread.is_alive()
    os.close(requests), os.close(answers)


def test_the_record_takes_epochs_validation_and_times_from_the_harness_alone():
    claims = {"status": "OK", "message": "", "epochs": 1, "train_seconds": 0, "export_seconds": 0,
              "worker_seconds": {"tensorflow_import": 1e9},
              "history": {"loss": [1.0, 0.9, 0.8], "val_loss": [0.0] * 3, "val_accuracy": [1.0] * 3, "val_extra": [1.0]}}
    measured = {"epochs": 2, "history": {"val_loss": [1.1, 1.0], "val_accuracy": [0.5, 0.6]}, "train_seconds": 30.0, "export_seconds": 2.0}
    record = received.checked_claims(claims, config.Challenge(), {}, measured)
    assert record["epochs"] == 2 and (record["train_seconds"], record["export_seconds"]) == (30.0, 2.0)
    assert record["history"] == {"loss": [1.0, 0.9], "val_loss": [1.1, 1.0], "val_accuracy": [0.5, 0.6]}
    assert record["worker_seconds"] == {"tensorflow_import": 32.0}
    # Success without a single validation asked is not a run the harness saw train.
    unasked = received.checked_claims(claims, config.Challenge(), {}, {**measured, "epochs": 0, "history": {}})
    assert unasked["status"] == "FAILED" and "without asking the harness" in unasked["message"]
    # Check mode trains no epoch: nothing of the kind is recorded.
    assert not {"epochs", "train_seconds", "export_seconds"} & set(received.checked_claims(claims, config.Challenge(), {}))


def test_a_forged_monitor_claim_fails_its_run_instead_of_the_plot():
    claims = {"status": "OK", "message": "", "monitor": {"every_steps": 5, "probe_images": 256, "layers": ["a"],
                                                          "activation_layers": [], "step": [0, 5], "probe_loss": [1.0, 0.9],
                                                          "gradient_norm": [[1.0]], "weight_norm": [[1.0], [1.0]],
                                                          "activation_mean": [[], []], "activation_std": [[], []]}}
    record = received.checked_claims(claims, config.Challenge(), {"monitor": 5})
    assert record["status"] == "FAILED" and "monitor" in record["message"]
    claims["monitor"]["gradient_norm"] = [[1.0], [0.5]]
    assert received.checked_claims(claims, config.Challenge(), {"monitor": 5})["status"] == "OK"
