"""The example entries of the committed MNIST board: each passes `python -m bench check` with the parameter and
MAC counts of its records, and each keeps the promises its docstring makes.

These tests belong to the examples, not to the harness: `python -m bench clear --yes` removes them with the
entries, so a course's own fork passes the test command whatever entries it has."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import keras
import numpy as np
import pytest

from bench import cli, config, discover, leaderboard, macs, results
from bench.train import count_params, import_submission

REPO = Path(__file__).resolve().parents[2]
SUBMISSIONS = REPO / "submissions"
MNIST_SHAPE = (28, 28)


def entry(name: str):
    return import_submission(SUBMISSIONS / f"{name}.py")


def test_every_submission_passes_bench_check(capsys):
    # The entries are MNIST-shaped (some pool 28x28 down to 3x3), so the check runs on MNIST, cut short;
    # MNIST comes from $BENCH_DATA_DIR or the download, as for `python -m bench check`.
    code = cli.main([
        "check", str(SUBMISSIONS), "--config", str(REPO / "pyproject.toml"),
        "--train-limit", "256", "--test-limit", "256", "--validation-size", "64",
        # The committed results folder: `check` only reads it (for the tuned hyperparameters the records used).
        "--results", str(REPO / "results"),
    ])
    printed = capsys.readouterr()
    statuses = {words[1]: words[0] for words in (line.split() for line in printed.out.splitlines()) if len(words) > 1}
    names = [s.name for s in discover.find(None, str(SUBMISSIONS))]
    assert names, f"no entries found in {SUBMISSIONS}"
    assert {n: statuses.get(n) for n in names} == {n: "OK" for n in names}, printed.out + printed.err
    assert code == 0
    # The audit counts parameters and MACs from the exported graph; the committed records counted them from the
    # Keras model (layer by layer). Both ways must agree on every committed entry.
    counted = {words[1]: (int(words[2].replace(",", "")), int(words[4].replace(",", "")))
               for words in (line.split() for line in printed.out.splitlines()) if len(words) > 5 and words[3] == "params"}
    recorded = {}
    for submission in discover.find(None, str(SUBMISSIONS)):
        record = REPO / "results" / "mnist" / submission.name / "seed0.json"
        saved = json.loads(record.read_text()) if record.is_file() else {}
        if saved.get("status") == "OK" and saved["key"]["submission"] == submission.file_hash:  # a record of this very file
            recorded[submission.name] = (saved["total_params"], saved["macs"])
    assert {n: counted.get(n) for n in recorded} == recorded


@pytest.mark.parametrize("kwargs", [{}, {"iterations": 0}, {"iterations": 1, "channels": 1}, {"iterations": 3, "channels": 2, "skip": False}])
def test_iterated_loop_has_the_unrolled_nets_parameters_and_function(kwargs):
    unrolled = entry("iterated_unrolled").build_model(MNIST_SHAPE, 10, **kwargs)
    loop = entry("iterated_loop").build_model(MNIST_SHAPE, 10, **kwargs)
    assert count_params(loop) == count_params(unrolled)
    loop.set_weights(unrolled.get_weights())
    images = np.random.default_rng(0).random((4, *MNIST_SHAPE), dtype=np.float32)
    np.testing.assert_allclose(loop.predict(images, verbose=0), unrolled.predict(images, verbose=0), atol=1e-5)


def test_iterated_default_size_and_loop_macs():
    # stem 1*9*5+5, shared conv 5*9*5+5, dense 7*7*5*10+10
    assert count_params(entry("iterated_unrolled").build_model(MNIST_SHAPE, 10))["total_params"] == 50 + 230 + 2460
    loop = entry("iterated_loop").build_model(MNIST_SHAPE, 10, iterations=4, channels=3)
    assert loop.get_layer("iterated_conv").macs_per_image() == 4 * 28 * 28 * 3 * 3 * 3 * 3


def test_gradnet_gate_counts_once_and_anneals_to_one():
    gradnet = entry("gradnet")
    model = gradnet.build_model(MNIST_SHAPE, 10, depth=4, width=8)
    # dense 784->8, two gated 8->8, dense 8->10, and the one shared gate
    assert count_params(model) == {"total_params": 785 * 8 + 2 * 72 + 90 + 1, "trainable_params": 785 * 8 + 2 * 72 + 90}
    gate = next(layer for layer in model.layers if isinstance(layer, gradnet.GatedRelu)).gate
    assert float(gate.numpy()) == 0.0
    model.compile("adam", "sparse_categorical_crossentropy")
    images = np.random.default_rng(0).random((64, *MNIST_SHAPE), dtype=np.float32)
    labels = np.arange(64) % 10
    seen = []
    note_gate = keras.callbacks.LambdaCallback(on_epoch_end=lambda epoch, logs: seen.append(float(gate.numpy())))
    model.fit(images, labels, batch_size=16, epochs=3, verbose=0, callbacks=[gradnet.GateAnnealing(tau=2), note_gate])
    # 4 batches an epoch: the last batch of epoch t starts at g = (t + 3/4) / 2, capped at 1
    assert seen == pytest.approx([0.375, 0.875, 1.0])


def test_deep_feedforward_init_choice():
    deep = entry("deep_feedforward")
    uniform = deep.build_model(MNIST_SHAPE, 10, init="seed_uniform")
    he = deep.build_model(MNIST_SHAPE, 10)
    first_uniform, first_he = (next(l for l in m.layers if isinstance(l, keras.layers.Dense)).kernel.numpy() for m in (uniform, he))
    assert np.abs(first_uniform).max() <= 1 / 28
    assert np.std(first_he) == pytest.approx(np.sqrt(2 / 784), rel=0.1)
    assert count_params(he)["total_params"] == 785 * 64 + 9 * 65 * 64 + 65 * 10


def test_classroom_158_is_seed_004s_model_with_its_own_compile_call():
    classroom = entry("classroom_158")
    model = classroom.build_model()  # the seed's style: no arguments, a hard-coded (28, 28) input
    assert count_params(model) == {"total_params": 158, "trainable_params": 158}
    assert tuple(model.input_shape) == (None, *MNIST_SHAPE)
    assert model.compiled and isinstance(model.optimizer, keras.optimizers.Nadam)
    assert model.loss == "categorical_crossentropy"  # the harness must feed it one-hot labels
    assert float(keras.ops.convert_to_numpy(model.optimizer.learning_rate)) == pytest.approx(0.01)


@pytest.mark.parametrize("kwargs", [{}, {"iterations": 0}, {"iterations": 3, "channels": 2}])
def test_iterated_entries_unrolled_graph_and_loop_hook_agree(kwargs):
    iterations, channels = kwargs.get("iterations", 5), kwargs.get("channels", 5)
    expected = 28 * 28 * channels * 9 + iterations * 28 * 28 * channels * 9 * channels + 7 * 7 * channels * 10
    for name in ("iterated_unrolled", "iterated_loop"):
        model = entry(name).build_model(MNIST_SHAPE, 10, **kwargs)
        assert macs.count(model) == macs.Count(expected, []), name


@pytest.mark.parametrize("rules", [
    {}, {"rule": "golf", "target": 0.98}, {"rule": "golf", "target": 0.98, "size": "storage_bits", "strict": True},
    {"rule": "micronet", "target": 0.98, "reference": "cnn_baseline", "float_bits": 16},
    {"rule": "threshold", "target": 0.97, "max_params": 5000}, {"rule": "points", "target": 0.98, "baseline": 0.9, "bonus": 5, "ceiling": 0.99},
])
def test_every_rule_renders_the_committed_mnist_board(rules):
    challenge = dataclasses.replace(config.load(REPO / "pyproject.toml"), scoring=config.scoring_from_dict(rules, "test"))
    records = results.load_all(REPO / "results", "mnist")
    frame = leaderboard.board(records, challenge)
    ok = frame[frame["status"] == "OK"]
    expected = {r["entry"] for r in leaderboard.board_records(records, challenge) if r["status"] == "OK"}
    assert len(expected) >= 15 and set(ok["entry"]) == expected and ok["rank"].notna().all() and ok["group"].notna().all()
    # Every record keeps which test images it got right: one seed shows the test set's binomial error, more their spread.
    assert ok["test_accuracy_se"].notna().all()
    text = leaderboard.render_markdown(frame, records, challenge, None)
    assert all(f"| {entry}" in text for entry in ok["entry"])
    exported = json.loads(leaderboard.export_frame(frame, "json"))
    assert set(leaderboard.EXPORT_COLUMNS) == set(exported[0])
