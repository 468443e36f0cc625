"""engine = "auto" (bench.engine_choice): both paths timed before the first epoch, the faster one trains, the probe
leaves no trace in the run, and the record's note says what was measured."""

from __future__ import annotations

import pytest

from bench import config, engine_choice
from bench.status import JAX_ENGINE, KERAS_ENGINE
from conftest import run_in_process

# Dropout draws from a seed generator and batch normalisation keeps moving statistics: state a probe that trains
# the model could leave changed.
NOISY_ENTRY = '''
    """Dense layers with batch normalisation and dropout."""
    import keras

    AUTHOR = "tests"
    TRAINING = {"batch_size": 64}

    def build_model(input_shape, num_classes):
        return keras.Sequential([
            keras.Input(input_shape),
            keras.layers.Flatten(),
            keras.layers.Dense(16),
            keras.layers.BatchNormalization(),
            keras.layers.ReLU(),
            keras.layers.Dropout(0.2),
            keras.layers.Dense(num_classes, activation="softmax"),
        ])
'''

EPOCHS = 3


def seeded_run(entry, **settings):
    """run_in_process as a fresh training process would start it: seeded (bench.train._prepare_tensorflow)."""
    from bench import train

    train._prepare_tensorflow(None, 0)
    return run_in_process(entry, **settings)


def forced(path: str, monkeypatch):
    """Let the probe run in full, then send the run down `path` whatever it measured."""
    measure = engine_choice.choose

    def choose(*args, **kwargs):
        choice = measure(*args, **kwargs)
        assert choice.steps == engine_choice.PROBE_STEPS and choice.engine_step_seconds > 0 and choice.keras_step_seconds > 0
        choice.engine = path
        return choice

    monkeypatch.setattr(engine_choice, "choose", choose)


@pytest.mark.parametrize("path, alone", [(KERAS_ENGINE, "keras"), (JAX_ENGINE, "jax")])
def test_a_run_after_the_probe_is_the_run_without_it_bit_for_bit(write_entry, monkeypatch, path, alone):
    entry = write_entry("noisy", NOISY_ENTRY)
    without = seeded_run(entry, engine=alone, max_epochs=EPOCHS)
    forced(path, monkeypatch)
    after = seeded_run(entry, engine="auto", max_epochs=EPOCHS)
    assert without["engine"] == after["engine"] == path, after.get("notes")
    assert after["history"] == without["history"]
    assert after["val_accuracy"] == without["val_accuracy"] and after["test_accuracy"] == without["test_accuracy"]


@pytest.mark.parametrize("engine_ms, keras_ms, path", [(3.0, 2.0, KERAS_ENGINE), (2.0, 3.0, JAX_ENGINE)])
def test_the_path_that_took_less_cpu_a_step_trains_and_the_note_says_so(write_entry, monkeypatch, engine_ms, keras_ms, path):
    from bench import engine

    real_timer = engine.step_timer
    monkeypatch.setattr(engine, "step_timer", lambda *args: (real_timer(*args), lambda: engine_ms / 1e3)[1])
    monkeypatch.setattr(engine_choice._FitStepTimer, "__call__", lambda self: keras_ms / 1e3)
    record = run_in_process(write_entry("dense_choice", NOISY_ENTRY), engine="auto", max_epochs=1)
    assert record["status"] == "OK" and record["engine"] == path
    [note] = [note for note in record["notes"] if note.startswith("engine auto:")]
    assert f"{engine_ms:.2f} ms of CPU on the batch-minor engine and {keras_ms:.2f} ms under model.fit" in note
    assert note.endswith("trained with " + ("model.fit" if path == KERAS_ENGINE else "the batch-minor engine"))


def test_a_model_the_engine_cannot_run_is_not_measured(write_entry):
    source = NOISY_ENTRY.replace('keras.layers.Dropout(0.2),', 'keras.layers.ActivityRegularization(l1=0.01),')
    record = run_in_process(write_entry("unrunnable", source), engine="auto", max_epochs=1)
    assert record["engine"] == KERAS_ENGINE
    assert not any(note.startswith("engine auto:") for note in record["notes"])
    assert any("does not run" in note for note in record["notes"])


def test_fewer_images_than_a_batch_train_on_the_engine_unmeasured(write_entry):
    source = NOISY_ENTRY.replace('"batch_size": 64', '"batch_size": 4096')
    record = run_in_process(write_entry("big_batch", source), engine="auto", max_epochs=1)
    assert record["engine"] == JAX_ENGINE
    assert "engine auto: fewer images than one batch, nothing to measure; trained with the batch-minor engine" in record["notes"]


def test_each_engine_setting_has_its_own_cache_key():
    hashes = {name: config.from_dict({"engine": name}).protocol_hash() for name in config.ENGINES}
    assert len(set(hashes.values())) == len(config.ENGINES) == 3
    with pytest.raises(config.ConfigError, match="'jax' .* or 'auto'"):
        config.from_dict({"engine": "fastest"})
