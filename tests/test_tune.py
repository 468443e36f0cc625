"""`bench tune`: budgeted keras-tuner searches on the digits set, in-process and as chief + worker."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from bench import cli, config, data, discover, plan, results, tune

REPO = Path(__file__).resolve().parent.parent

# Flatten 8x8 -> Dense(units) -> Dense(10): 4 units is 64*4+4 + 4*10+10 = 310 parameters, 64 units is 4,810.
UNITS_OVER_AND_UNDER = "hp.Choice('units', [4, 64])"
UNITS_ALL_SMALL = "hp.Int('units', 2, 12)"

ENTRY = '''
"""A dense net with a tunable width; its own callback logs every training run."""
import json
import keras

MARKER = {marker!r}


class LogTraining(keras.callbacks.Callback):
    def on_train_begin(self, logs=None):
        self.epochs = 0

    def on_epoch_end(self, epoch, logs=None):
        self.epochs += 1

    def on_train_end(self, logs=None):
        with open(MARKER, "a") as f:
            f.write(json.dumps({{"epochs": self.epochs}}) + "\\n")


def callbacks():
    return [LogTraining()]


def build_hypermodel(hp, input_shape, num_classes):
    units = {units}
    return keras.Sequential([
        keras.Input(input_shape),
        keras.layers.Flatten(),
        keras.layers.Dense(units, activation="relu"),
        keras.layers.Dense(num_classes, activation="softmax"),
    ])


def build_model(input_shape, num_classes):
    import keras_tuner
    return build_hypermodel(keras_tuner.HyperParameters(), input_shape, num_classes)
'''

CONFIG = """
[tool.bench]
dataset = "digits"
validation_size = 300
max_epochs = {epochs}
batch_size = 64
learning_rate = 0.01

[tool.bench.early_stopping]
monitor = "val_loss"
patience = 0
min_delta = {min_delta}
"""


class Project:
    """An entry, a config, and results/tuning folders, all under one tmp folder."""

    def __init__(self, root: Path, units: str, epochs: int = 1, min_delta: float = 0.0001):
        self.root = root
        self.marker = root / "trainings.jsonl"
        self.entry = root / "submissions" / "tunable_dense.py"
        self.entry.parent.mkdir(parents=True, exist_ok=True)
        self.entry.write_text(ENTRY.format(marker=str(self.marker), units=units))
        self.config = root / "pyproject.toml"
        self.config.write_text(CONFIG.format(epochs=epochs, min_delta=min_delta))
        self.results, self.tuning = root / "results", root / "tuning"

    def flags(self, *extra) -> list[str]:
        return [str(self.entry), "--config", str(self.config), "--results", str(self.results),
                "--tuning-dir", str(self.tuning), *map(str, extra)]

    def tune(self, *extra) -> int:
        return cli.main(["tune", *self.flags(*extra)])

    def challenge(self, **overrides) -> config.Challenge:
        return config.load(self.config, results=str(self.results), **overrides)

    @property
    def search_dir(self) -> Path:
        return self.tuning / "digits" / "tunable_dense"

    def saved(self) -> dict:
        return json.loads((self.results / "digits" / "tunable_dense" / tune.HYPERPARAMETERS_FILE).read_text())

    def trials(self) -> dict[str, dict]:
        """keras-tuner's record of each trial, with the outcome bench wrote beside it."""
        found = {}
        for trial_file in sorted(self.search_dir.glob("trial_*/trial.json")):
            trial = json.loads(trial_file.read_text())
            trial["outcome"] = results.read(trial_file.parent / tune.TRIAL_OUTCOME_FILE)
            trial["checkpointed"] = any(trial_file.parent.glob("checkpoint*"))
            found[trial["trial_id"]] = trial
        return found

    def trainings(self) -> list[dict]:
        return [json.loads(line) for line in self.marker.read_text().splitlines()] if self.marker.exists() else []


@pytest.fixture(scope="module")
def tuned(tmp_path_factory):
    """One search over a width that is under (4 units) or over (64 units) a budget of 1,000.

    Early stopping that never sees an improvement after the first epoch (min_delta 10) stops
    each 3-epoch run after its second epoch, which shows the challenge's callbacks apply."""
    project = Project(tmp_path_factory.mktemp("tuned"), UNITS_OVER_AND_UNDER, epochs=3, min_delta=10.0)
    assert project.tune("--max-params", 1000, "--trials", 4) == 0
    return project


def test_over_budget_candidate_is_a_failed_trial_that_never_trains(tuned):
    trials = tuned.trials()
    # Two values in the space: random search tries each once, then runs out of new candidates.
    assert len(trials) == 2
    by_status = {t["status"]: t for t in trials.values()}
    assert set(by_status) == {"COMPLETED", "FAILED"}
    rejected, trained = by_status["FAILED"], by_status["COMPLETED"]
    assert rejected["hyperparameters"]["values"]["units"] == 64
    assert rejected["outcome"]["reason"] == "4,810 parameters is over the budget of 1,000: rejected before training"
    assert not rejected["checkpointed"] and trained["checkpointed"]
    # Only the candidate under the budget trained, with the entry's own callback and the
    # challenge's early stopping (2 of 3 epochs) in force.
    assert tuned.trainings() == [{"epochs": 2}]
    saved = tuned.saved()
    assert saved["values"] == {"units": 4}
    assert (saved["total_params"], saved["trained_trials"], saved["over_budget_trials"], saved["failed_trials"]) == (310, 1, 1, 0)
    assert saved["best_value"] == pytest.approx(trained["score"], abs=1e-6)


def test_saved_hyperparameters_join_the_cache_key_and_evaluate_trains_with_them(tuned, capsys):
    challenge = tuned.challenge()
    submission = discover.read(tuned.entry)
    fingerprint = data.load("digits").fingerprint()
    untuned = plan.plan(challenge, [submission], fingerprint, [0])[0]
    planned = plan.plan(challenge, [submission], fingerprint, [0], hyperparameters_for=cli.tuned_hyperparameters(challenge))[0]
    assert planned.hyperparameters == {"units": 4} and untuned.hyperparameters is None
    assert planned.key["hash"] != untuned.key["hash"]
    assert planned.key["hyperparameters"] == config.sha256_of_json({"units": 4})

    # Other saved values give another key, so a new search retrains the entry.
    path = tune.hyperparameters_path(challenge, "tunable_dense")
    original = path.read_text()
    try:
        path.write_text(json.dumps({**tuned.saved(), "values": {"units": 5}}))
        replanned = plan.plan(challenge, [submission], fingerprint, [0], hyperparameters_for=cli.tuned_hyperparameters(challenge))[0]
        assert replanned.key["hash"] not in (planned.key["hash"], untuned.key["hash"])
    finally:
        path.write_text(original)

    leaderboard = tuned.root / "leaderboard.md"
    assert cli.main(["evaluate", str(tuned.entry), "--config", str(tuned.config), "--results", str(tuned.results),
                     "--seeds", "1", "--leaderboard", str(leaderboard)]) == 0
    record = results.read(results.record_path(tuned.results, "digits", "tunable_dense", 0))
    assert record["status"] == "OK", record["message"]
    assert record["hyperparameters"] == {"units": 4} and record["key"]["hash"] == planned.key["hash"]
    assert record["total_params"] == 310 and record["tuned_trials"] == 1
    capsys.readouterr()
    assert cli.main(["leaderboard", "--config", str(tuned.config), "--results", str(tuned.results), "--seeds", "1", "--format", "json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert row["entry"] == "tunable_dense" and row["tuned_trials"] == 1


def test_search_where_every_candidate_is_over_budget_says_so(tmp_path, capsys):
    project = Project(tmp_path, UNITS_OVER_AND_UNDER)
    assert project.tune("--max-params", 100, "--trials", 2) == 1
    error = capsys.readouterr().err
    assert "none of the 2 candidate(s) trained (2 over the budget of 100)" in error
    assert "raise --max-params" in error and "310 parameters is over the budget of 100" in error
    assert project.trainings() == []
    assert not tune.hyperparameters_path(project.challenge(), "tunable_dense").exists()


def test_rerun_continues_the_search_and_fresh_starts_over(tmp_path, capsys):
    project = Project(tmp_path, UNITS_ALL_SMALL)
    assert project.tune("--max-params", 1000, "--trials", 1) == 0
    assert "starting a new search" in capsys.readouterr().out
    first = project.trials()

    assert project.tune("--max-params", 1000, "--trials", 2) == 0
    assert "continuing the search" in capsys.readouterr().out
    continued = project.trials()
    assert len(continued) == 2 and continued["0"]["hyperparameters"] == first["0"]["hyperparameters"]
    assert len(project.trainings()) == 2, "the continued search trained only its one new trial"
    assert project.saved()["trained_trials"] == 2

    # Trials measured under another budget cannot silently join this search.
    assert project.tune("--max-params", 2000, "--trials", 3) == 2
    assert "max_params (1000 -> 2000)" in capsys.readouterr().err
    assert len(project.trials()) == 2

    # Trials train with model.fit whatever engine the board uses, so switching it keeps the search.
    project.config.write_text(project.config.read_text().replace("[tool.bench]\n", '[tool.bench]\nengine = "auto"\n', 1))
    assert project.challenge().engine == "auto"
    assert project.tune("--max-params", 1000, "--trials", 3) == 0
    assert "continuing the search" in capsys.readouterr().out and len(project.trials()) == 3

    assert project.tune("--max-params", 1000, "--trials", 1, "--fresh") == 0
    assert "starting over: deleting the earlier search" in capsys.readouterr().out
    assert len(project.trials()) == 1 and project.saved()["trained_trials"] == 1


def test_best_hyperparameters_for_untuned_and_unreadable_files(tmp_path):
    project = Project(tmp_path, UNITS_ALL_SMALL)
    challenge, submission = project.challenge(), discover.read(project.entry)
    assert tune.best_hyperparameters(challenge, submission) is None and tune.tuned_trials(challenge, submission) == 0
    path = tune.hyperparameters_path(challenge, "tunable_dense")
    path.parent.mkdir(parents=True)
    path.write_text("{not json")
    with pytest.raises(config.ConfigError, match="restore it from git or delete it"):
        tune.best_hyperparameters(challenge, submission)


PLAIN_ENTRY = """
import keras
def build_model(input_shape, num_classes):
    return keras.Sequential([keras.Input(input_shape), keras.layers.Flatten(), keras.layers.Dense(num_classes)])
"""


@pytest.mark.parametrize("tunable, extra, message", [
    (False, [], "has no build_hypermodel(hp, input_shape, num_classes), so there is nothing to tune"),
    (True, ["--tuner", "hyperband", "--trials", "3"], "--trials does not apply to --tuner hyperband"),
    (True, ["--worker", "w1", "--fresh"], "--fresh is for the chief"),
])
def test_clear_errors_before_any_search(tmp_path, capsys, tunable, extra, message):
    if tunable:
        entry = Project(tmp_path, UNITS_ALL_SMALL).entry
    else:
        entry = tmp_path / "plain.py"
        entry.write_text(PLAIN_ENTRY)
    assert cli.main(["tune", str(entry), "--dataset", "digits", "--tuning-dir", str(tmp_path / "tuning"), *extra]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "tuning").exists()


def test_hyperband_search_saves_only_the_entrys_own_values(tmp_path):
    project = Project(tmp_path, UNITS_ALL_SMALL)
    assert project.tune("--max-params", 1000, "--tuner", "hyperband") == 0
    saved = project.saved()
    # Hyperband adds its bookkeeping (tuner/epochs, tuner/round, ...) to each trial's values.
    assert any(name.startswith("tuner/") for t in project.trials().values() for name in t["hyperparameters"]["values"])
    assert saved["tuner"] == "hyperband" and list(saved["values"]) == ["units"]
    assert saved["trained_trials"] == len(project.trainings()) >= 1


def test_chief_and_worker_on_loopback_share_one_search(tmp_path):
    project = Project(tmp_path, UNITS_ALL_SMALL)
    port = _free_port()
    command = [sys.executable, "-m", "bench", "tune", *project.flags("--max-params", 1000, "--trials", 2, "--oracle-port", port)]
    env = {**os.environ, "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "2"}
    start = dict(cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    chief = subprocess.Popen(command + ["--chief"], **start)
    worker = subprocess.Popen(command + ["--worker", "w0"], **start)
    try:
        worker_out, _ = worker.communicate(timeout=300)
        chief_out, _ = chief.communicate(timeout=60)
    finally:
        for process in (chief, worker):
            if process.poll() is None:
                process.kill()
                process.wait()
    assert chief.returncode == 0, chief_out[-3000:]
    assert worker.returncode == 0, worker_out[-3000:]
    assert f"serving the search at 127.0.0.1:{port}" in chief_out

    trials = project.trials()
    assert sorted(trials) == ["0", "1"]
    # The chief's oracle recorded every trial; the worker trained each one and said so beside it.
    assert all(t["status"] == "COMPLETED" and t["checkpointed"] for t in trials.values())
    assert {t["outcome"]["tuner_id"] for t in trials.values()} == {"w0"}
    assert sorted(line.split()[3].rstrip(":") for line in worker_out.splitlines() if line.startswith("[bench] w0 trial")) == ["0", "1"]
    assert len(project.trainings()) == 2
    # The chief saved the search's best, which only the worker's training could have found.
    saved = project.saved()
    assert saved["trained_trials"] == 2
    assert saved["best_value"] == pytest.approx(max(t["score"] for t in trials.values()), abs=1e-6)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_a_search_on_a_file_of_ones_own_uses_its_shape_and_class_count(tmp_path, capsys):
    """160 float features in 5 classes (issue 30): 4 units cost 160*4+4 + 4*5+5 = 669 parameters, 64 cost 10,629."""
    import numpy as np

    rng = np.random.default_rng(0)
    labels = np.arange(400) % 5
    features = (rng.normal(size=(400, 160)) + labels[:, None] * 0.5).astype("float32")
    np.savez(tmp_path / "features5.npz", x_train=features[:300], y_train=labels[:300], x_test=features[300:], y_test=labels[300:])
    project = Project(tmp_path, UNITS_OVER_AND_UNDER)
    project.config.write_text(CONFIG.format(epochs=1, min_delta=0.0001).replace('dataset = "digits"\nvalidation_size = 300',
                                                                                  f'dataset = "{tmp_path / "features5.npz"}"\nvalidation_size = 60'))
    assert project.tune("--max-params", 1000, "--trials", 2) == 0
    saved = json.loads((project.results / "features5" / "tunable_dense" / tune.HYPERPARAMETERS_FILE).read_text())
    assert saved["values"] == {"units": 4} and saved["total_params"] == 669 and saved["dataset"] == "features5"
