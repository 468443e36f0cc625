"""The README's classroom walkthrough, scripted, on digits: a teacher sets the rules with a hidden test set,
three students add files (one with a mistake), a student's try-out leaves the committed board alone, the
pull request's smoke command passes, the main-branch evaluate scores everyone, and the CSV gives grades. Then the
loop around it: a try-out and a smoke run kept apart, a try-out search that leaves the committed values alone, and
`clear` seen from a student's fresh clone."""

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


def committed_files(project: Path) -> dict[str, bytes]:
    return {name: (project / name).read_bytes() for name in git(project, "ls-files").split()}


def test_a_students_try_out_and_smoke_run_keep_apart_and_change_no_committed_file(course, capsys):
    """README step 4: a try-out goes to .bench/try/, a smoke run to .bench/smoke/; neither overwrites the other's
    records, and `git status` shows the student's file alone."""
    project, _ = course
    committed = committed_files(project)
    assert bench("new", "ada") == 0
    assert bench("evaluate", "submissions/ada.py", "--epochs", "1", "--sandbox", "off") == 0
    assert ".bench/try/" in capsys.readouterr().err
    tried = project / ".bench" / "try" / "results" / "digits" / "ada" / "seed0.json"
    before = tried.read_bytes()
    assert bench("evaluate", "--smoke", "submissions/ada.py", "--sandbox", "off") == 0
    assert "smoke run" in capsys.readouterr().err
    assert tried.read_bytes() == before
    assert (project / ".bench" / "smoke" / "results" / "digits" / "ada" / "seed0.json").is_file()
    assert (project / ".bench" / "smoke" / "leaderboard.md").is_file() and (project / ".bench" / "try" / "leaderboard.md").is_file()
    assert git(project, "status", "--porcelain", "--untracked-files=all") == "?? submissions/ada.py\n"
    assert committed_files(project) == committed


def test_a_tune_try_out_keeps_the_committed_values_and_its_board_shows_what_it_used(course, capsys):
    """`bench tune` with try-out settings writes its search and values under .bench/try/; the committed
    hyperparameters.json stays, and a try-out board marks the entry as tuned with whichever values it trained."""
    import json

    from bench import discover

    project, _ = course
    entry = project / "submissions" / "tuned.py"
    entry.write_text(TUNED.replace('hp.Int("units", 2, 16, default=4)', 'hp.Choice("units", [3, 12], default=12)'))
    saved = project / "results" / "digits" / "tuned" / "hyperparameters.json"
    saved.parent.mkdir(parents=True)
    saved.write_text(json.dumps({"values": {"units": 12}, "trained_trials": 7, "submission": discover.read(entry).file_hash}))
    git(project, "add", "-A")
    git(project, "-c", "user.name=t", "-c", "user.email=t@example.org", "commit", "-qm", "a tuned entry")
    committed = committed_files(project)

    # A try-out board of the committed values: trained with them, and marked as tuned.
    assert bench("evaluate", "submissions/tuned.py", "--epochs", "1", "--sandbox", "off") == 0
    record = json.loads((project / ".bench" / "try" / "results" / "digits" / "tuned" / "seed0.json").read_text())
    assert record["total_params"] == 64 * 12 + 12 + 12 * 10 + 10 and record["tuned_trials"] == 7
    assert "(tuned, 7 trials)" in (project / ".bench" / "try" / "leaderboard.md").read_text()

    # The search: a training limit and a validation size other than the challenge's.
    assert bench("tune", "submissions/tuned.py", "--max-params", "5000", "--trials", "2", "--epochs", "1",
                 "--train-limit", "600", "--validation-size", "0.2", "--fresh") == 0
    assert "try-out" in capsys.readouterr().err
    assert committed_files(project) == committed and not (project / "tuning").exists()
    tried = json.loads((project / ".bench" / "try" / "results" / "digits" / "tuned" / "hyperparameters.json").read_text())
    assert tried["search_dir"].startswith(".bench/try/tuning/")
    assert git(project, "status", "--porcelain", "--untracked-files=all") == ""

    # A try-out now trains with the try-out's values, and its board still says the entry is tuned.
    assert bench("evaluate", "submissions/tuned.py", "--epochs", "1", "--sandbox", "off", "--force") == 0
    record = json.loads((project / ".bench" / "try" / "results" / "digits" / "tuned" / "seed0.json").read_text())
    assert record["hyperparameters"] == tried["values"] and record["tuned_trials"] == tried["trained_trials"]
    assert f"(tuned, {tried['trained_trials']} trials)" in (project / ".bench" / "try" / "leaderboard.md").read_text()


def test_clear_in_a_fresh_clone_leaves_a_challenge_that_reads_as_new(tmp_path, monkeypatch, capsys):
    """README step 2, then a student's clone: the submissions folder is there, and neither the empty board's
    header nor pyproject.toml speaks of the example challenge (its one_seed_above, its entries)."""
    examples = sorted(p.stem for p in (REPO / "submissions").glob("*.py")) or ["an_example_entry"]
    teacher = tmp_path / "teacher"
    (teacher / "submissions").mkdir(parents=True)
    (teacher / "pyproject.toml").write_text((REPO / "pyproject.toml").read_text())
    (teacher / ".gitignore").write_text((REPO / ".gitignore").read_text())
    for name in examples:
        (teacher / "submissions" / f"{name}.py").write_text(f'"""{name}."""\n')
    (teacher / "results" / "mnist").mkdir(parents=True)
    (teacher / "leaderboard.md").write_text("an old board\n")
    (teacher / ".bench" / "smoke").mkdir(parents=True)
    git(teacher, "init", "-q")
    monkeypatch.chdir(teacher)
    assert bench("clear") == 0
    assert "would rewrite pyproject.toml" in capsys.readouterr().out
    assert bench("clear", "--yes") == 0
    assert not (teacher / ".bench" / "smoke").exists()
    git(teacher, "add", "-A")
    git(teacher, "-c", "user.name=t", "-c", "user.email=t@example.org", "commit", "-qm", "A new challenge")

    student = tmp_path / "student"
    subprocess.run(["git", "clone", "-q", str(teacher), str(student)], check=True, capture_output=True)
    monkeypatch.chdir(student)
    assert (student / "submissions").is_dir()
    assert bench("list") == 0 and "skipped" not in capsys.readouterr().err
    assert bench("leaderboard", "--check") == 0
    header = (student / "leaderboard.md").read_text()
    assert "No entry has finished OK yet." in header and "seed 0 alone" not in header
    rules = (student / "pyproject.toml").read_text()
    assert "example" not in rules.lower() and not [name for name in examples if name in rules]
    assert "one_seed_above" not in rules and "time_limit" not in rules
    challenge = config.load()
    assert challenge.one_seed_above is None and challenge.validation_size is None and challenge.max_params == 1_000_000
    assert bench("new", "ada") == 0 and (student / "submissions" / "ada.py").is_file()
