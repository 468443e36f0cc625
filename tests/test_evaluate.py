"""`python -m bench evaluate` end to end: subprocess per entry, statuses, the cache, --strict, records."""

from __future__ import annotations

import contextlib
import io
import json
import re
import textwrap
from pathlib import Path

import pytest

from bench import cli, results, stages
from conftest import DENSE_ENTRY


def evaluate_in(folder):
    """evaluate(*args): the CLI on digits with results and the board inside `folder`."""

    def call(*args):
        return cli.main([
            "evaluate", *map(str, args), "--dataset", "digits", "--validation-size", "300", "--seeds", "1",
            "--epochs", "2", "--results", str(folder / "results"), "--leaderboard", str(folder / "board.md"),
        ])

    return call


@pytest.fixture
def evaluate(tmp_path):
    return evaluate_in(tmp_path)


def record_of(tmp_path, name, seed=0):
    return json.loads((tmp_path / "results" / "digits" / name / f"seed{seed}.json").read_text())


def test_bad_entries_do_not_stop_the_others_and_strict_fails(tmp_path, write_entry, evaluate, capsys):
    write_entry("dense", DENSE_ENTRY)
    write_entry("crashes", "import os\ndef build_model():\n    os._exit(3)\n")
    write_entry("bad-name", DENSE_ENTRY)
    assert evaluate(tmp_path / "submissions") == 0
    assert record_of(tmp_path, "dense")["status"] == "OK"
    crashed = record_of(tmp_path, "crashes")
    assert crashed["status"] == "FAILED" and "exit code 3" in crashed["message"]
    err = capsys.readouterr().err
    assert "'bad-name' may use only letters, digits and '_'" in err and "bad_name.py" in err
    board = (tmp_path / "board.md").read_text()
    assert "| crashes" in board and "FAILED" in board
    assert evaluate("--strict", tmp_path / "submissions") == 1


def test_timeout_is_reported_and_the_run_carries_on(tmp_path, write_entry, evaluate):
    write_entry("sleepy", "import time\ndef build_model():\n    time.sleep(60)\n")
    assert cli.main(["evaluate", str(tmp_path / "submissions"), "--dataset", "digits", "--validation-size", "300",
                     "--seeds", "1", "--time-limit", "8", "--results", str(tmp_path / "results"),
                     "--leaderboard", str(tmp_path / "board.md")]) == 0
    record = record_of(tmp_path, "sleepy")
    assert record["status"] == "TIMEOUT" and "time limit of 8 s" in record["message"]


@pytest.fixture(scope="module")
def dense_runs(tmp_path_factory):
    """One results folder through four evaluates of DENSE_ENTRY: trained, run again (a cache hit), forced (the same
    seed trained again) and trained after an edit; {step: (the record after it, what it printed)}. The tests below
    each read the steps they are about, so the three trainings are shared instead of done six times."""
    tmp = tmp_path_factory.mktemp("dense_runs")
    entry = tmp / "submissions" / "dense.py"
    entry.parent.mkdir()
    evaluate, steps = evaluate_in(tmp), {}
    for step, source, flags in [("first", DENSE_ENTRY, []), ("cached", DENSE_ENTRY, []), ("forced", DENSE_ENTRY, ["--force"]),
                                ("edited", DENSE_ENTRY.replace("Dense(12", "Dense(13"), [])]:
        entry.write_text(textwrap.dedent(source))
        printed = io.StringIO()
        with contextlib.redirect_stdout(printed):
            evaluate(*flags, entry)
        steps[step] = (record_of(tmp, "dense"), printed.getvalue())
    return steps


def test_cache_hit_miss_after_edit_and_force(dense_runs):
    first, _ = dense_runs["first"]
    cached, printed = dense_runs["cached"]
    assert "cached  dense seed 0" in printed
    assert cached["finished_at"] == first["finished_at"]

    edited, printed = dense_runs["edited"]
    assert "start   dense seed 0" in printed
    assert edited["key"]["submission"] != first["key"]["submission"]
    assert edited["total_params"] == 64 * 13 + 13 + 13 * 10 + 10

    assert "start   dense seed 0" in dense_runs["forced"][1]


def test_record_holds_key_versions_and_history(dense_runs):
    record = dense_runs["first"][0]
    assert set(record["key"]) >= {"submission", "config", "dataset", "seed", "harness", "hash"}
    assert set(record["versions"]) >= {"python", "tensorflow", "keras", "cpu"}
    flags = next(line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags")).split()
    assert record["versions"]["cpu_isa"] == ("avx512" if "avx512f" in flags else "avx2" if "avx2" in flags else "older than avx2")
    assert record["versions"]["cpu_model"].startswith("family ")
    assert record["summary"] == "A small dense net." and record["author"] == "tests"
    assert len(record["history"]["loss"]) == record["epochs"] == 2


def test_same_seed_gives_the_same_record(dense_runs):
    first, again = dense_runs["first"][0], dense_runs["forced"][0]
    assert again["finished_at"] != first["finished_at"]  # --force trained it again
    assert again["history"] == first["history"] and again["test_accuracy"] == first["test_accuracy"]


def audit_starts(monkeypatch) -> list:
    """The audits `check` starts, in order, each as the number of training steps begun before it."""
    starts, trainings = [], []
    start, train_then_audit = stages.AuditStage.start, stages._train_then_audit
    monkeypatch.setattr(stages.AuditStage, "start", lambda self, limit: (starts.append(len(trainings)), start(self, limit))[1])
    monkeypatch.setattr(stages, "_train_then_audit", lambda *args: (trainings.append(1), train_then_audit(*args))[1])
    return starts


def test_check_command_reports_each_entry(tmp_path, write_entry, capsys, monkeypatch):
    starts = audit_starts(monkeypatch)
    write_entry("dense", DENSE_ENTRY)
    write_entry("seven", "import keras\ndef build_model(input_shape, num_classes):\n"
                "    return keras.Sequential([keras.Input(input_shape), keras.layers.Flatten(), keras.layers.Dense(7)])\n")
    code = cli.main(["check", str(tmp_path / "submissions"), "--dataset", "digits", "--validation-size", "0.2"])
    captured = capsys.readouterr()
    out = captured.out
    assert code == 1
    assert "OK" in out and "dense" in out and "910 params" in out
    assert "INVALID" in out and "expected (10,)" in out
    # What it is doing goes to stderr, one line per stage with the seconds so far; stdout keeps the results alone.
    said = [re.sub(r"^\[ *[\d.]+ s\] ", "", line) for line in captured.err.splitlines() if re.match(r"^\[ *[\d.]+ s\] ", line)]
    assert said == ["loading digits ...",
                    "dense: importing, building and taking one training step in the sandbox ...",
                    "dense: auditing the exported model in the sandbox ...",
                    "seven: importing, building and taking one training step in the sandbox ...",
                    "done"]
    assert "sandbox ..." not in out
    # In a folder, each audit waits for its training step: the invalid entry gets none, and no process is left.
    assert starts == [1] and not stages._live


def test_checking_one_entry_starts_its_audit_beside_training_and_ends_it_when_training_fails(write_entry, capsys, monkeypatch):
    starts = audit_starts(monkeypatch)
    seven = write_entry("seven", "import keras\ndef build_model(input_shape, num_classes):\n"
                        "    return keras.Sequential([keras.Input(input_shape), keras.layers.Flatten(), keras.layers.Dense(7)])\n")
    assert cli.main(["check", str(seven), "--dataset", "digits", "--validation-size", "0.2"]) == 1
    assert "INVALID" in capsys.readouterr().out
    assert starts == [0] and not stages._live


def test_missing_dataset_says_where_it_looked(tmp_path, write_entry, monkeypatch, capsys):
    import keras

    def offline():
        raise OSError("no network")

    monkeypatch.setattr(keras.datasets.fashion_mnist, "load_data", offline)
    monkeypatch.delenv("BENCH_DATA_DIR", raising=False)
    monkeypatch.setattr("bench.data.SYSTEM_DIRS", {})
    write_entry("dense", DENSE_ENTRY)
    code = cli.main(["evaluate", str(tmp_path / "submissions"), "--dataset", "fashion_mnist",
                     "--data-dir", str(tmp_path / "nowhere"), "--results", str(tmp_path / "results")])
    err = capsys.readouterr().err
    assert code == 2
    assert str(tmp_path / "nowhere" / "fashion_mnist.npz") in err
    assert "no network" in err and "--data-dir" in err


def test_interrupted_write_leaves_no_partial_record(tmp_path, monkeypatch):
    path = tmp_path / "r" / "seed0.json"
    results.write(path, {"status": "OK", "n": 1})

    def killed(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(json, "dump", killed)
    with pytest.raises(KeyboardInterrupt):
        results.write(path, {"status": "OK", "n": 2})
    monkeypatch.undo()
    assert json.loads(path.read_text()) == {"status": "OK", "n": 1}
    assert [p.name for p in path.parent.iterdir()] == ["seed0.json"]


TINY_ENTRY = '''
    import keras
    def build_model(input_shape, num_classes):
        return keras.Sequential([keras.Input(input_shape), keras.layers.Flatten(),
                                 keras.layers.Dense(num_classes, activation="softmax")])
'''


def test_entries_above_one_seed_above_train_seed_0_only_and_a_rerun_trains_nothing(tmp_path, write_entry, capsys):
    write_entry("tiny", TINY_ENTRY)  # 650 parameters on digits
    write_entry("dense", DENSE_ENTRY)  # 910
    settings = tmp_path / "pyproject.toml"
    settings.write_text("[tool.bench]\nseeds = 2\none_seed_above = 800\n")
    command = ["--config", str(settings), "evaluate", str(tmp_path / "submissions"), "--dataset", "digits",
               "--validation-size", "300", "--epochs", "1", "--results", str(tmp_path / "results"),
               "--leaderboard", str(tmp_path / "board.md"), "--jobs", "2"]
    assert cli.main(command) == 0
    trained = {p.relative_to(tmp_path / "results" / "digits").as_posix()
               for p in (tmp_path / "results" / "digits").rglob("seed*.json")}
    assert trained == {"tiny/seed0.json", "tiny/seed1.json", "dense/seed0.json"}
    assert "seed 0 alone is trained for entries above 800 parameters" in (tmp_path / "board.md").read_text()
    capsys.readouterr()
    assert cli.main(command) == 0
    out = capsys.readouterr().out
    assert "start" not in out and out.count("cached") == 3


SLEEPER = '''
    import os, time, keras
    def build_model(input_shape, num_classes):
        with open({pid_file!r}, "w") as handle:  # sandbox off in this test: the entry may write here
            handle.write(str(os.getpid()))
        time.sleep(600)
'''


@pytest.mark.parametrize("signal_name, exit_status", [("SIGINT", 130), ("SIGTERM", 143)])
def test_ctrl_c_stops_the_runs_in_flight_at_once_and_keeps_finished_records(tmp_path, write_entry, signal_name, exit_status):
    """Ctrl-C (or SIGTERM, as `kill` and a cancelled CI job send) while a quick entry has finished and a slow one
    trains: 'stopping' at once, the slow worker ended, the quick record kept, the slow run left for next time (no
    record), exit status 128 + the signal's number, and no temporary folder (a copy of the dataset each) left."""
    import os
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    pid_file = tmp_path / "sleeper.pid"
    quick = write_entry("quick", TINY_ENTRY)
    slow = write_entry("slow", SLEEPER.format(pid_file=str(pid_file)))
    # As from a terminal: a shell that started these tests in the background (`cmd &` without job control)
    # hands every child SIGINT ignored, and Python then installs no Ctrl-C handler, so give it back first.
    as_from_a_terminal = ("import runpy, signal; signal.signal(signal.SIGINT, signal.default_int_handler); "
                          "runpy.run_module('bench', run_name='__main__', alter_sys=True)")
    command = [sys.executable, "-c", as_from_a_terminal, "evaluate", str(quick), str(slow), "--jobs", "2", "--sandbox", "off",
               "--dataset", "digits", "--validation-size", "300", "--seeds", "1", "--epochs", "1",
               "--results", str(tmp_path / "results"), "--leaderboard", str(tmp_path / "board.md")]
    temporary = tmp_path / "tmp"
    temporary.mkdir()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               cwd=Path(__file__).resolve().parent.parent, env={**os.environ, "TMPDIR": str(temporary)})
    quick_record = tmp_path / "results" / "digits" / "quick" / "seed0.json"
    deadline = time.monotonic() + 240
    while not (quick_record.exists() and pid_file.exists()) and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.5)
    assert quick_record.exists() and pid_file.exists(), "the quick run should finish while the slow one sleeps"
    sleeper = int(pid_file.read_text())

    assert list(temporary.glob("bench-arrays-*")), "the dataset's copy should be under TMPDIR while runs train"
    process.send_signal(getattr(signal, signal_name))  # a terminal's Ctrl-C reaches the evaluate process
    interrupted = time.monotonic()
    output, _ = process.communicate(timeout=60)
    ended_after = time.monotonic() - interrupted
    assert process.returncode == exit_status, output
    assert "stopping" in output and "interrupted" in output
    assert ended_after < 30, f"took {ended_after:.0f} s to stop"  # generous: the slow run would sleep 600 s
    status = Path(f"/proc/{sleeper}/status")
    assert not status.exists() or "State:\tZ" in status.read_text(), "the slow entry's worker is still running"
    assert json.loads(quick_record.read_text())["status"] == "OK"
    assert not (tmp_path / "results" / "digits" / "slow").exists() or not list((tmp_path / "results" / "digits" / "slow").glob("seed*.json"))
    # bench-writers-<uid> is the registry of evaluations writing records (containment.WRITERS), kept for all of them.
    assert sorted(p.name for p in temporary.iterdir() if not p.name.startswith("bench-writers-")) == []


def test_a_killed_evaluate_takes_its_unsandboxed_worker_with_it(tmp_path, write_entry):
    """SIGKILL leaves the evaluate process no time to end its runs; without the sandbox's own watch, the kernel
    must end the worker (its parent-death signal), or an entry keeps running with no time limit."""
    import os
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    pid_file = tmp_path / "sleeper.pid"
    slow = write_entry("slow", SLEEPER.format(pid_file=str(pid_file)))
    command = [sys.executable, "-m", "bench", "evaluate", str(slow), "--sandbox", "off", "--dataset", "digits",
               "--validation-size", "300", "--seeds", "1", "--epochs", "1",
               "--results", str(tmp_path / "results"), "--leaderboard", str(tmp_path / "board.md")]
    temporary = tmp_path / "tmp"  # what a killed evaluate cannot remove lands here, not in /tmp
    temporary.mkdir()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               cwd=Path(__file__).resolve().parent.parent, env={**os.environ, "TMPDIR": str(temporary)})
    deadline = time.monotonic() + 240
    while not pid_file.exists() and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.5)
    assert pid_file.exists(), "the slow entry should have started"
    sleeper = int(pid_file.read_text())
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    status = Path(f"/proc/{sleeper}/status")
    deadline = time.monotonic() + 30
    while status.exists() and "State:\tZ" not in status.read_text() and time.monotonic() < deadline:
        time.sleep(0.2)
    alive = status.exists() and "State:\tZ" not in status.read_text()
    if alive:
        os.kill(sleeper, signal.SIGKILL)
    assert not alive, "the worker outlived the evaluate process that started it"


def test_progress_lines_from_runs_in_flight_never_run_together(capfd):
    """Runs in flight log from several threads; each line must come out whole (print() could split them)."""
    import threading

    from bench import runner

    def chatter(name):
        for i in range(300):
            runner.say(f"start   {name} seed {i}")

    threads = [threading.Thread(target=chatter, args=(f"entry{n}",)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    lines = capfd.readouterr().out.splitlines()
    assert len(lines) == 6 * 300
    assert all(line.count("start") == 1 and line.startswith("start   entry") for line in lines)


def test_editing_a_helper_beside_the_entry_changes_its_cache_key(tmp_path, write_entry):
    """The `_*.py` helpers are copied into the sandbox with the entry: a record made with an old helper is stale."""
    from bench import config, discover, plan

    entry = write_entry("uses_helper", "from _shared import WIDTH\n" + DENSE_ENTRY)
    challenge = config.from_dict({"dataset": "digits"})
    key = lambda: plan.plan(challenge, discover.find([str(entry)], None), "fingerprint", [0])[0].key["hash"]
    without = key()
    (entry.parent / "_shared.py").write_text("WIDTH = 4\n")
    first = key()
    (entry.parent / "_shared.py").write_text("WIDTH = 8\n")
    assert len({without, first, key()}) == 3


def test_ctrl_c_while_a_finished_run_is_being_stored_still_ends_the_runs_in_flight(tmp_path, write_entry, monkeypatch):
    """The interrupt can land in the runner's own code between two finished runs, not while the executor waits:
    the executor is closed all the same (its threads would otherwise keep the process alive until they finish)."""
    from bench import config, discover, plan, runner

    challenge = config.from_dict({"dataset": "digits", "validation_size": 300, "sandbox": "off",
                                  "results": str(tmp_path / "results"), "leaderboard": str(tmp_path / "board.md")})
    entries = [str(write_entry(name, DENSE_ENTRY)) for name in ("first", "second")]
    runs = plan.plan(challenge, discover.find(entries, "submissions"), "fingerprint", [0])
    closed = []

    class OneStillTraining:
        def train(self, challenge, todo, threads, log, extra_job, on_start=None):
            try:
                yield next(iter(todo)), {"status": "FAILED", "message": "finished"}, 1.0
                raise AssertionError("the runner asked for the run still in flight after Ctrl-C")
            finally:
                closed.append("ended the run in flight")

    def ctrl_c(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(runner, "store", ctrl_c)
    with pytest.raises(KeyboardInterrupt):
        runner.execute(challenge, runs, executor=OneStillTraining(), log=lambda line: None)
    assert closed == ["ended the run in flight"]


def test_an_entrys_other_seeds_start_as_soon_as_its_own_seed_0_is_recorded(tmp_path, write_entry):
    """Under one_seed_above, a small entry's seeds 1-2 join the runs in flight when its seed 0 is stored, while a
    bigger entry's seed 0 still trains (no core waits for the slowest seed 0); the big entry keeps seed 0 alone."""
    from bench import config, discover, plan, runner

    challenge = config.from_dict({"dataset": "digits", "validation_size": 300, "sandbox": "off", "seeds": 3,
                                  "results": str(tmp_path / "results"), "leaderboard": str(tmp_path / "board.md")})
    entries = [str(write_entry(name, DENSE_ENTRY)) for name in ("a_small", "b_big")]
    runs = plan.plan(challenge, discover.find(entries, "submissions"), "fingerprint", [0, 1, 2])
    params = {"a_small": 100, "b_big": 5000}

    class InOrderHandedOver:
        """Finishes one run per yield, the first handed over first, and notes what it holds after each."""

        def __init__(self):
            self.finished, self.held = [], []

        def train(self, challenge, todo, threads, log, extra_job, on_start=None):
            while left := [index for index in todo if index not in self.finished]:
                self.finished.append(left[0])
                yield left[0], {"status": "OK", "message": "", "total_params": params[todo[left[0]].path.parent.name]}, 1.0
                self.held.append(sorted(todo[index].label for index in todo if index not in self.finished))

    executor = InOrderHandedOver()
    records = runner.execute(challenge, runs, executor=executor, log=lambda line: None, one_seed_above=1000)
    # Right after a_small's seed 0 is stored, its other seeds are queued while b_big's seed 0 is still unfinished.
    assert executor.held[0] == ["a_small seed 1", "a_small seed 2", "b_big seed 0"]
    assert [runs[index].label for index in executor.finished] == ["a_small seed 0", "b_big seed 0", "a_small seed 1", "a_small seed 2"]
    assert sorted((r["run_name"], r["seed"]) for r in records) == [("a_small", 0), ("a_small", 1), ("a_small", 2), ("b_big", 0)]
    assert not (tmp_path / "results" / "digits" / "b_big" / "seed1.json").exists()
