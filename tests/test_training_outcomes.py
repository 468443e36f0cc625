"""Training outcomes reported honestly (issue 14): the files in tests/cases/ that once trained on the wrong
loss, diverged to NaN and ranked, crashed after 20 epochs, or failed with Keras's words instead of ours.
Each ends with a status and a message that says which line of the entry to change."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

from bench import cli, leaderboard, results, train
from conftest import run_in_process

CASES = Path(__file__).parent / "cases"


def case(name: str, tmp_path: Path) -> Path:
    """A copy of tests/cases/NAME.py in its own submissions folder (the run writes beside it)."""
    folder = tmp_path / "submissions"
    folder.mkdir(exist_ok=True)
    return Path(shutil.copy(CASES / f"{name}.py", folder))


def test_logits_without_the_flag_are_caught_by_check_naming_the_flag(tmp_path):
    record = run_in_process(case("fc_01_logits_no_flag", tmp_path), mode="check")
    assert record["status"] == "INVALID"
    assert "set FROM_LOGITS = True" in record["message"]


def test_probabilities_with_the_flag_are_caught_too(tmp_path, write_entry):
    path = write_entry("softmax_flagged", '''
        import keras
        FROM_LOGITS = True
        def build_model(input_shape, num_classes):
            return keras.Sequential([keras.Input(input_shape), keras.layers.Flatten(),
                                     keras.layers.Dense(num_classes, activation="softmax")])
    ''')
    record = run_in_process(path, mode="check")
    assert record["status"] == "INVALID"
    assert "FROM_LOGITS = True but the model outputs probabilities" in record["message"]


def test_the_logits_flag_is_honoured_when_training_names_the_loss(tmp_path, write_entry):
    """fc_02 outputs logits, sets FROM_LOGITS and names its loss: it must learn as its softmax twin does."""
    logits = run_in_process(case("fc_02_logits_flag_with_loss_key", tmp_path), max_epochs=8)
    source = (CASES / "fc_02_logits_flag_with_loss_key.py").read_text()
    twin = write_entry("softmax_twin", source.replace("FROM_LOGITS = True\n", "")
                       .replace("outputs = keras.layers.Dense(num_classes)(x)",
                                'outputs = keras.layers.Dense(num_classes, activation="softmax")(x)'))
    probabilities = run_in_process(twin, max_epochs=8)
    assert logits["status"] == probabilities["status"] == "OK"
    # Read as probabilities, raw logits train to near chance (23 % on MNIST); read as logits they learn.
    assert probabilities["val_accuracy"] > 0.8
    assert logits["val_accuracy"] > probabilities["val_accuracy"] - 0.1


def test_a_loss_by_name_with_from_logits_reads_logits():
    import keras
    import numpy as np

    labels, logits = np.array([0, 2]), np.array([[2.0, -1.0, 0.5], [0.0, 0.0, 3.0]], dtype="float32")
    loss = train.named_loss("sparse_categorical_crossentropy", from_logits=True)
    expected = keras.losses.sparse_categorical_crossentropy(labels, logits, from_logits=True)
    np.testing.assert_allclose(np.asarray(loss(labels, logits)), np.asarray(expected), rtol=1e-6)
    assert train.named_loss("sparse_categorical_crossentropy", from_logits=False) == "sparse_categorical_crossentropy"


def test_a_learning_rate_schedule_trains_without_reduce_lr_on_plateau_and_says_so(tmp_path):
    record = run_in_process(case("fc_04_schedule_vs_plateau", tmp_path), max_epochs=3)
    assert record["status"] == "OK", record["message"]
    assert len(record["history"]["loss"]) == 3
    assert any("ReduceLROnPlateau" in note and "schedule" in note for note in record["notes"])


def test_a_misspelt_optimizer_is_invalid_and_lists_the_valid_names(tmp_path):
    record = run_in_process(case("fc_19_bad_optimizer_name", tmp_path), mode="check")
    assert record["status"] == "INVALID"
    assert "'adamm'" in record["message"] and "adam" in record["message"].replace("'adamm'", "")
    assert "optimizer" in record["message"]


def test_a_misspelt_loss_is_invalid_and_lists_the_valid_names(write_entry):
    path = write_entry("bad_loss", '''
        import keras
        TRAINING = {"loss": "sparse_categorical_crosentropy"}
        def build_model(input_shape, num_classes):
            return keras.Sequential([keras.Input(input_shape), keras.layers.Flatten(),
                                     keras.layers.Dense(num_classes, activation="softmax")])
    ''')
    record = run_in_process(path, mode="check")
    assert record["status"] == "INVALID"
    assert "'sparse_categorical_crosentropy'" in record["message"] and "sparse_categorical_crossentropy" in record["message"]


def test_an_error_inside_a_lambda_shows_its_cause(tmp_path):
    record = run_in_process(case("fc_16_lambda_backend", tmp_path), mode="check")
    assert record["status"] == "FAILED"
    # Keras's wrapper says only "Exception encountered when calling Lambda.call()"; the cause names the call.
    assert "expand_dims" in record["message"]
    assert "fc_16_lambda_backend.py" in record["message"]


def test_factory_arguments_with_other_names_are_told_the_names(write_entry):
    path = write_entry("shape_classes", '''
        import keras
        def build_model(shape, classes):
            return keras.Sequential([keras.Input(shape), keras.layers.Flatten(), keras.layers.Dense(classes, activation="softmax")])
    ''')
    record = run_in_process(path, mode="check")
    assert record["status"] == "INVALID"
    assert "input_shape" in record["message"] and "num_classes" in record["message"]


def strict_json(path: Path) -> dict:
    """The record, refusing NaN/Infinity tokens as strict JSON parsers do."""
    def refuse(token):
        raise ValueError(f"{path} holds {token}, which is not JSON")
    return json.loads(path.read_text(), parse_constant=refuse)


def test_divergence_is_failed_not_ranked_with_strict_json_and_the_pipe_is_escaped(tmp_path):
    """One evaluate on digits: fc_05 diverges (FAILED, retried, off the ranking), fc_03's pipes stay in their cells."""
    nan = case("fc_05_diverges_nan", tmp_path)
    pipe = case("fc_03_pipe_in_author", tmp_path)
    board = tmp_path / "board.md"
    code = cli.main(["evaluate", str(nan), str(pipe), "--dataset", "digits", "--validation-size", "0.2", "--seeds", "1",
                     "--epochs", "2", "--results", str(tmp_path / "results"), "--leaderboard", str(board)])
    assert code == 0
    diverged = strict_json(tmp_path / "results" / "digits" / "fc_05_diverges_nan" / "seed0.json")
    assert diverged["status"] == "FAILED"
    assert "training diverged at epoch 1" in diverged["message"] and "learning rate" in diverged["message"]
    assert all(value is None or math.isfinite(value) for values in diverged.get("history", {}).values() for value in values)

    text = board.read_text()
    ranked = [line for line in text.splitlines() if line.startswith("|") and "fc_03_pipe_in_author" in line]
    assert len(ranked) == 1
    header = next(line for line in text.splitlines() if line.startswith("| #"))
    cells = lambda line: len(line.replace("\\|", "").split("|"))
    assert cells(ranked[0]) == cells(header)
    assert "Ada \\| Lovelace" in ranked[0]
    failed_rows = [line for line in text.splitlines() if "fc_05_diverges_nan" in line]
    assert failed_rows and all("FAILED" in line for line in failed_rows)
    assert not any(line.startswith("| 1 ") and "fc_05" in line for line in text.splitlines())
    assert results.load_all(tmp_path / "results") and leaderboard.cell("a|b\nc") == "a\\|b c"


def test_check_of_a_model_whose_one_step_diverges_says_so_rather_than_blaming_the_batch(tmp_path, capsys):
    """fc_05 in `check`: its single step at a learning rate of 1e30 leaves NaN weights. NaN differs from itself, so
    the audit's batch test once reported "the model's predictions depend on the other images in the batch"."""
    code = cli.main(["check", str(case("fc_05_diverges_nan", tmp_path)), "--dataset", "digits", "--validation-size", "0.2",
                     "--results", str(tmp_path / "results")])
    out = capsys.readouterr().out
    assert code == 1
    assert "FAILED" in out and "outputs are NaN or infinite" in out and "Lower the learning rate" in out, out
    assert "depend on the other images" not in out
