"""The README's classroom walkthrough, scripted, on digits: a teacher sets the rules with a hidden test set,
three students add files (one with a mistake), a student's try-out leaves the committed board alone, the
pull request's smoke command passes, the main-branch evaluate scores everyone, and the CSV gives grades."""

from __future__ import annotations

import io
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bench import cli, config, data

REPO = Path(__file__).resolve().parent.parent
RULES = """[tool.bench]
dataset = "digits"
validation_size = 0.2
seeds = 1
max_epochs = 3
max_params = 5000
"""
BOB = '''"""bob: one dense layer."""
import keras
AUTHOR = "Bob"
def build_model(input_shape, num_classes):
    return keras.Sequential([keras.Input(input_shape), keras.layers.Flatten(), keras.layers.Dense(num_classes, activation="softmax")])
'''
CARL = '''"""carl: logits without FROM_LOGITS."""
import keras
AUTHOR = "Carl"
def build_model(input_shape, num_classes):
    return keras.Sequential([keras.Input(input_shape), keras.layers.Flatten(), keras.layers.Dense(num_classes)])
'''


def git(folder: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(folder), *args], capture_output=True, text=True, check=True).stdout


def bench(*args: str) -> int:
    return cli.main(list(args))


@pytest.fixture
def course(tmp_path, monkeypatch):
    """A teacher's repository: the rules committed, the hidden test set outside it, nothing else."""
    project = tmp_path / "course"
    project.mkdir()
    (project / "pyproject.toml").write_text(RULES)
    (project / ".gitignore").write_text((REPO / ".gitignore").read_text())
    (project / "submissions").mkdir()
    git(project, "init", "-q")
    git(project, "-c", "user.name=t", "-c", "user.email=t@example.org", "add", "-A")
    git(project, "-c", "user.name=t", "-c", "user.email=t@example.org", "commit", "-qm", "rules")
    # The hidden set: digits' test images as the dataset stores them (whole numbers 0..16), kept outside the repo.
    digits = data.load("digits")
    hidden = tmp_path / "secret" / "hidden.npz"
    hidden.parent.mkdir()
    np.savez(hidden, x_test=np.rint(digits.x_test[:200] * 16).astype("uint8"), y_test=digits.y_test[:200])
    monkeypatch.chdir(project)
    monkeypatch.delenv(config.TEST_SET_ENV, raising=False)
    return project, hidden


def test_the_classroom_walkthrough_end_to_end(course, capsys, monkeypatch):
    project, hidden = course

    # A student: a starter, a check, a try-out. Only their file shows in `git status`.
    assert bench("new", "ada", "--author", "Ada") == 0
    # The trusted run's hidden-set path is set on students' machines by mistake: check never needs it.
    monkeypatch.setenv(config.TEST_SET_ENV, str(project / "nowhere.npz"))
    assert bench("check", "submissions/ada.py") == 0
    monkeypatch.delenv(config.TEST_SET_ENV)
    assert bench("evaluate", "submissions/ada.py", "--epochs", "1") == 0
    assert "try-out" in capsys.readouterr().err
    assert git(project, "status", "--porcelain", "--untracked-files=all") == "?? submissions/ada.py\n"

    # Two more students, one with a mistake; their pull requests run the workflow's smoke command.
    (project / "submissions" / "bob.py").write_text(BOB)
    (project / "submissions" / "carl.py").write_text(CARL)
    smoke = ["evaluate", "--smoke", "--strict", "--results", str(project.parent / "runner" / "smoke"),
             "--leaderboard", str(project.parent / "runner" / "smoke" / "board.md")]
    assert bench(*smoke, "submissions/ada.py", "submissions/bob.py") == 0
    assert bench(*smoke, "submissions/carl.py") == 1  # --strict: the mistake fails the pull request
    assert "set FROM_LOGITS = True" in capsys.readouterr().out
    assert git(project, "status", "--porcelain", "--untracked-files=all").splitlines() == ["?? submissions/ada.py", "?? submissions/bob.py", "?? submissions/carl.py"]

    # Main branch: the teacher's trusted run scores the hidden set; the board and records change there only.
    monkeypatch.setenv(config.TEST_SET_ENV, str(hidden))
    assert bench("evaluate", "--sandbox", "required") == 0
    board = (project / "leaderboard.md").read_text()
    assert "hidden.npz" in board
    for name in ("ada", "bob", "carl"):
        assert name in board
    assert "INVALID" in board

    capsys.readouterr()
    assert bench("leaderboard", "--format", "csv") == 0
    csv = capsys.readouterr().out
    assert not csv.endswith("\n\n")
    grades = pd.read_csv(io.StringIO(csv)).set_index("entry")
    assert set(grades.index) == {"ada", "bob", "carl"}
    assert grades.loc["carl", "status"] == "INVALID" and grades.loc["bob", "status"] == "OK"
    assert 0.1 < grades.loc["bob", "test_accuracy"] <= 1.0


TUNED = '''"""tuned: a hidden layer whose width bench tune chose."""
import keras
def build_hypermodel(hp, input_shape, num_classes):
    units = hp.Int("units", 2, 16, default=4)
    return keras.Sequential([keras.Input(input_shape), keras.layers.Flatten(), keras.layers.Dense(units, activation="relu"),
                             keras.layers.Dense(num_classes, activation="softmax")])
def build_model(input_shape, num_classes):
    import keras_tuner
    return build_hypermodel(keras_tuner.HyperParameters(), input_shape, num_classes)
'''


def test_a_try_out_of_a_tuned_entry_trains_with_the_tuned_values(course):
    """Try-outs write to .bench/try/, but the values `bench tune` saved stay beside the challenge's records."""
    import json

    from bench import discover

    project, _ = course
    entry = project / "submissions" / "tuned.py"
    entry.write_text(TUNED)
    saved = project / "results" / "digits" / "tuned" / "hyperparameters.json"
    saved.parent.mkdir(parents=True)
    saved.write_text(json.dumps({"values": {"units": 12}, "submission": discover.read(entry).file_hash}))
    assert bench("evaluate", "submissions/tuned.py", "--epochs", "1") == 0
    record = json.loads((project / ".bench" / "try" / "results" / "digits" / "tuned" / "seed0.json").read_text())
    assert record["total_params"] == 64 * 12 + 12 + 12 * 10 + 10  # 12 units, not the default 4
