"""A course's commands and settings: `new`, `evaluate --shard`, the hidden test set, `leaderboard --check`."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bench import cli, config, discover, results, runner
from conftest import DENSE_ENTRY


def test_new_writes_a_starter_that_passes_check(tmp_path, capsys):
    folder = tmp_path / "submissions"
    assert cli.main(["new", "ada_first_try", "--author", "Ada Lovelace", "--submissions", str(folder)]) == 0
    path = folder / "ada_first_try.py"
    assert f"python -m bench check {path.as_posix()}" in capsys.readouterr().out
    entry = discover.read(path)
    assert entry.ok and entry.author == "Ada Lovelace" and entry.summary.startswith("ada_first_try: replace this line")
    assert cli.main(["check", str(path), "--dataset", "digits", "--validation-size", "0.2"]) == 0
    # The starter's comments count its parameters: the count `check` reports must agree.
    assert "426 params" in capsys.readouterr().out


def test_new_refuses_to_overwrite_and_accepts_a_name_ending_in_py(tmp_path, capsys):
    folder = tmp_path / "submissions"
    assert cli.main(["new", "mine.py", "--submissions", str(folder)]) == 0
    (folder / "mine.py").write_text("my work")
    assert cli.main(["new", "mine", "--submissions", str(folder)]) == 2
    assert "mine.py already exists: choose another name" in capsys.readouterr().err
    assert (folder / "mine.py").read_text() == "my work"


@pytest.mark.parametrize("name, message", [
    ("my-model", "'my-model' is not an entry name: use letters, digits and '_' only, e.g. 'my_model'"),
    ("two words", "'two words' is not an entry name: use letters, digits and '_' only, e.g. 'two_words'"),
    ("modèle", "'modèle' is not an entry name: use letters, digits and '_' only, e.g. 'modele'"),
    ("_helper", "'_helper' starts with '_', which marks helper files, never entries: call it 'helper'"),
    ("", "'' is not an entry name"),
])
def test_new_rejects_bad_names_saying_what_to_use(tmp_path, capsys, name, message):
    assert cli.main(["new", name, "--submissions", str(tmp_path)]) == 2
    assert message in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def entries(tmp_path, names):
    for name in names:
        (tmp_path / f"{name}.py").write_text("def build_model():\n    pass\n")
    return discover.find([str(tmp_path)], str(tmp_path))


@pytest.mark.parametrize("count", [1, 2, 3, 5, 8])
def test_shards_partition_the_entries_exactly_and_evenly(tmp_path, count):
    found = entries(tmp_path, [f"entry_{i:02d}" for i in range(7)] + ["Zeta", "alpha"])
    shards = [cli.in_shard(found, index, count) for index in range(1, count + 1)]
    names = [s.name for shard in shards for s in shard]
    assert sorted(names) == sorted(s.name for s in found) and len(names) == len(set(names))
    assert max(map(len, shards)) - min(map(len, shards)) <= 1
    # The same shards whatever order the entries come in.
    assert [cli.in_shard(list(reversed(found)), index, count) for index in range(1, count + 1)] == shards


def test_evaluate_shard_plans_only_its_share(tmp_path, monkeypatch):
    (tmp_path / "submissions").mkdir()
    entries(tmp_path / "submissions", ["a", "b", "c", "d", "e"])
    planned = []
    monkeypatch.setattr(runner, "execute", lambda challenge, runs, **kwargs: planned.extend(r.submission.name for r in runs) or [])
    for index in (1, 2):
        assert cli.main(["evaluate", str(tmp_path / "submissions"), "--shard", f"{index}/2", "--dataset", "digits", "--seeds", "1",
                         "--validation-size", "300", "--results", str(tmp_path / "results"), "--leaderboard", str(tmp_path / "board.md")]) == 0
    assert planned == ["a", "c", "e", "b", "d"]


@pytest.mark.parametrize("shard", ["0/3", "4/3", "1/0", "2", "a/b", "-1/2"])
def test_a_bad_shard_says_how_to_write_one(shard, capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["evaluate", f"--shard={shard}"])
    assert exit_.value.code == 2
    assert "give I/N with 1 <= I <= N, e.g. --shard 2/4" in capsys.readouterr().err


def test_hidden_test_set_comes_from_the_environment_and_the_flag_wins(tmp_path, monkeypatch):
    monkeypatch.setenv(config.TEST_SET_ENV, "/from/env.npz")
    assert config.load(tmp_path / "none.toml").test_set == "/from/env.npz"
    assert config.load(tmp_path / "none.toml", test_set="/from/flag.npz").test_set == "/from/flag.npz"
    monkeypatch.delenv(config.TEST_SET_ENV)
    assert config.load(tmp_path / "none.toml").test_set is None


@pytest.mark.parametrize("arrays, message", [
    (None, "no such file"),
    ({"x_test": np.zeros((4, 8, 8), "uint8")}, "lacks ['y_test']: save it with np.savez(path, x_test=..., y_test=...)"),
    ({"x_test": np.zeros((4, 28, 28), "uint8"), "y_test": np.zeros(4, dtype="int64")}, "images of shape (28, 28), but digits's images have shape (8, 8)"),
    ({"x_test": np.zeros((4, 8, 8), "uint8"), "y_test": np.zeros(3, dtype="int64")}, "y_test must hold one integer label per image"),
    ({"x_test": np.zeros((4, 8, 8), "uint8"), "y_test": np.full(4, 10)}, "labels must lie in 0..9"),
    # Saved after scaling to [0, 1]: scaling again would divide by 16 (or 255) twice.
    ({"x_test": np.full((4, 8, 8), 0.5), "y_test": np.zeros(4, "int64")}, "whole numbers from 0 to 16 (e.g. uint8), not float64 values from 0.5 to 0.5"),
])
def test_a_bad_hidden_test_set_is_refused_before_any_training(tmp_path, write_entry, capsys, arrays, message):
    hidden = tmp_path / "hidden.npz"
    if arrays is not None:
        np.savez(hidden, **arrays)
    write_entry("dense", DENSE_ENTRY)
    code = cli.main(["evaluate", str(tmp_path / "submissions"), "--dataset", "digits", "--test-set", str(hidden),
                     "--results", str(tmp_path / "results"), "--leaderboard", str(tmp_path / "board.md")])
    assert code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "results").exists()


def test_memory_limit_below_what_tensorflow_needs_is_refused():
    with pytest.raises(config.ConfigError, match="memory_limit_mb must be a whole number of megabytes, at least 1024"):
        config.from_dict({"memory_limit_mb": 512})


def board_args(tmp_path):
    return ["leaderboard", "--dataset", "digits", "--seeds", "1", "--config", str(tmp_path / "none.toml"),
            "--results", str(tmp_path / "results"), "--leaderboard", str(tmp_path / "board.md")]


def ok_record(challenge, entry, **fields):
    return {"entry": entry, "dataset": "digits", "seed": 0, "status": "OK", "total_params": 90, "trainable_params": 90,
            "test_accuracy": 0.9, "epochs": 3, "train_seconds": 1.0, "key": {"config": challenge.protocol_hash()}, **fields}


def test_the_board_names_the_hidden_test_set_it_reports(tmp_path, capsys):
    challenge = config.from_dict({"dataset": "digits", "seeds": 1, "results": str(tmp_path / "results")})
    hidden = "hidden test set course.npz (10,000 images, sha256 0123456789ab)"
    results.write(results.record_path(challenge.results, "digits", "tiny", 0), ok_record(challenge, "tiny", test_set=hidden))
    assert cli.main(board_args(tmp_path)) == 0
    assert f"- Dataset: **digits**; test set: {hidden}" in (tmp_path / "board.md").read_text()


def test_leaderboard_check_fails_on_a_stale_or_missing_board(tmp_path, capsys):
    challenge = config.from_dict({"dataset": "digits", "seeds": 1, "results": str(tmp_path / "results")})
    results.write(results.record_path(challenge.results, "digits", "first", 0), ok_record(challenge, "first"))
    assert cli.main([*board_args(tmp_path), "--check"]) == 1  # never rendered
    assert cli.main(board_args(tmp_path)) == 0
    assert cli.main([*board_args(tmp_path), "--check"]) == 0
    # A record committed without re-rendering the board (as a pull request might) is caught too.
    results.write(results.record_path(challenge.results, "digits", "second", 0), ok_record(challenge, "second", test_accuracy=0.95))
    assert cli.main([*board_args(tmp_path), "--check"]) == 1
    err = capsys.readouterr().err
    assert "differs from what the records in" in err and "run `python -m bench leaderboard` and commit the result" in err


@pytest.mark.parametrize("flags", [["--dataset", "digits", "--validation-size", "5000"], ["--train-limit", "5000", "--validation-size", "5000"]])
def test_a_validation_size_that_does_not_fit_is_one_error_before_any_worker(tmp_path, write_entry, capsys, flags, mnist_dir):
    """An explicit 5,000 validation images do not fit digits' 1,437 training images, nor 5,000 out of 5,000: one
    message, exit status 2, no worker, no record, no board (it once started 33 workers and wrote an
    empty board). A --train-limit or --dataset alone takes the default rule instead (tests/test_data_config.py,
    tests/test_own_data.py)."""
    write_entry("dense", DENSE_ENTRY)
    code = cli.main(["evaluate", str(tmp_path / "submissions"), *flags, "--data-dir", mnist_dir,
                     "--results", str(tmp_path / "results"), "--leaderboard", str(tmp_path / "board.md")])
    captured = capsys.readouterr()
    assert code == 2
    assert captured.err.count("error: validation_size=5000 does not fit") == 1
    assert "or a fraction such as 0.1" in captured.err
    assert "start" not in captured.out
    assert not (tmp_path / "results").exists() and not (tmp_path / "board.md").exists()


def test_a_name_with_an_accent_gets_the_same_suggestion_from_new_and_from_discovery(tmp_path, capsys):
    folder = tmp_path / "submissions"
    assert cli.main(["new", "josé", "--submissions", str(folder)]) == 2
    assert "e.g. 'jose'" in capsys.readouterr().err
    folder.mkdir(exist_ok=True)
    (folder / "josé_model.py").write_text(DENSE_ENTRY)
    (skipped,) = discover.find(None, str(folder))
    assert not skipped.ok and "rename the file, e.g. to jose_model.py" in skipped.problem


def test_the_summary_line_names_skipped_files(tmp_path, write_entry, capsys):
    write_entry("josé_model", DENSE_ENTRY)
    code = cli.main(["evaluate", str(tmp_path / "submissions"), "--dataset", "digits", "--validation-size", "0.2",
                     "--results", str(tmp_path / "results"), "--leaderboard", str(tmp_path / "board.md")])
    out = capsys.readouterr().out
    assert code == 0
    assert "0 run(s), 0 not OK, 1 file(s) skipped (josé_model.py)" in out


def test_list_marks_records_the_board_would_leave_out(tmp_path, write_entry, capsys):
    entry = write_entry("dense", DENSE_ENTRY)
    flags = ["--dataset", "digits", "--validation-size", "0.2", "--seeds", "1", "--results", str(tmp_path / "results")]
    assert cli.main(["evaluate", str(entry), *flags, "--epochs", "1", "--leaderboard", str(tmp_path / "board.md")]) == 0
    capsys.readouterr()

    def listed(*extra):
        assert cli.main(["list", str(entry), *flags, *extra]) == 0
        return capsys.readouterr().out.split(maxsplit=1)[1].split("  ")[0].strip()

    assert listed("--epochs", "1") == "OK"
    assert listed("--epochs", "2") == "OK(other settings)"
    entry.write_text(DENSE_ENTRY + "\n# edited\n")
    assert listed("--epochs", "1") == "OK(stale)"


def test_clear_leaves_a_fork_whose_tests_do_not_need_the_example_entries(tmp_path):
    """The README's step 2 on a copy of this repository: `bench clear` lists, `--yes` removes and writes an
    empty board, and every test the fork still collects is the harness's own, naming no example entry."""
    import shutil
    import subprocess
    import sys

    repo = Path(__file__).resolve().parent.parent
    fork = tmp_path / "fork"
    listed = subprocess.run(["git", "-C", str(repo), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                            capture_output=True, text=True, check=True).stdout
    for name in filter(None, listed.split("\0")):
        if (repo / name).is_file():
            (fork / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(repo / name, fork / name)
    examples = sorted(p.stem for p in (fork / "submissions").glob("*.py"))
    assert len(examples) > 5 and (fork / "leaderboard.png").is_file() and (fork / "studies").is_dir()

    def bench(*args):
        return subprocess.run([sys.executable, "-m", "bench", *args], cwd=fork, capture_output=True, text=True)

    dry = bench("clear")
    assert dry.returncode == 0 and "would remove: submissions/, results/, leaderboard.md, leaderboard.png, studies/" in dry.stdout
    assert len(list((fork / "submissions").glob("*.py"))) == len(examples)  # a dry run removes nothing
    done = bench("clear", "--yes")
    assert done.returncode == 0, done.stderr
    assert [p.name for p in (fork / "submissions").iterdir()] == ["README.md"]  # git keeps the folder
    assert not any((fork / p).exists() for p in ("results", "leaderboard.png", "studies"))
    board = (fork / "leaderboard.md").read_text()
    assert "No entry has finished OK yet." in board and "- Sandbox: no runs yet." in board
    assert bench("leaderboard", "--check").returncode == 0

    collected = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q"], cwd=fork,
                               capture_output=True, text=True)
    assert collected.returncode == 0, collected.stdout[-2000:]
    test_ids = [line for line in collected.stdout.splitlines() if "::" in line]
    assert test_ids and all(line.startswith("tests/") for line in test_ids)
    for test_file in (fork / "tests").rglob("*.py"):
        text = test_file.read_text()
        assert not [name for name in examples if name in text], test_file


def test_the_predictions_fingerprint_on_a_hidden_test_set_cannot_be_recomputed_without_it(tmp_path):
    """An entry that predicts class 1 on a few hidden images (those with a rare pixel lit) and 0 elsewhere: a plain
    sha256 of its predictions, which its author hashed guess by guess from the validation split's predictions, named
    those images."""
    import hashlib

    from bench import arrays, score

    val, test = np.zeros(4, "int64"), np.zeros(6, "int64")
    test[[2, 5]] = 1
    np.save(tmp_path / "val_predictions.npy", val)
    np.save(tmp_path / "test_predictions.npy", test)
    audited = {"status": "OK", "path": "rebuilt", "total_params": 10, "notes": []}
    plain = hashlib.sha256(b"val 4;" + val.tobytes() + b"test 6;" + test.tobytes()).hexdigest()

    def fingerprint(digest):
        prepared = arrays.Inputs(tmp_path, tmp_path, 10, np.zeros(4, "int64"), np.zeros(6, "int64"),
                                 "hidden test set hidden.npz (6 images, sha256 0123456789ab)", {})
        prepared.test_digest = digest
        return score.score(config.from_dict({}), {"status": "OK"}, audited, prepared, tmp_path, "train")["predictions_sha256"]

    assert fingerprint("a" * 64) == fingerprint("a" * 64) != plain  # seeds that agree still agree
    assert fingerprint("b" * 64) not in (plain, fingerprint("a" * 64))
