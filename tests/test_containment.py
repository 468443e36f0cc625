"""Hostile entries: each ends with a clear status and leaves every other record as it was.

The limits are checked twice: on small plain-Python children (fast, no TensorFlow), and through the
real runner, one worker subprocess per hostile entry, on digits with a 1,500 MB memory limit.
These runs use `sandbox = "off"`: the limits hold in every mode, and without the sandbox the entries
can write down what they saw and the processes they started where this test reads them. What the
sandbox adds (nothing of the machine to see or write) is tested in test_integrity.py.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from bench import config, containment, data, discover, plan, received, runner, stages

MEMORY_MB = 1500
TINY = {"dataset": "digits", "validation_size": 300, "max_epochs": 1, "seeds": 1, "memory_limit_mb": MEMORY_MB, "sandbox": "off"}
SECRETS = {"GITHUB_TOKEN": "ghp_secret", "AWS_SECRET_ACCESS_KEY": "aws_secret", "TF_TOKEN_app_terraform_io": "tf_secret",
           "OPENAI_API_KEY": "sk_secret", "DB_PASSWORD": "pw_secret"}

SMALL_MODEL = """
    def small_model(input_shape, num_classes):
        return keras.Sequential([keras.Input(input_shape), keras.layers.Flatten(), keras.layers.Dense(num_classes, activation="softmax")])
"""

HOSTILE = {
    "hog": """
        import numpy as np
        def build_model():
            hoard = []
            while True:
                hoard.append(np.ones(25_000_000))  # 200 MB at a time, every page touched
    """,
    "forker": """
        import os, time
        def build_model():
            for _ in range(6):  # 2**6 = 64 processes, each forking as it goes
                os.fork()
                # Each process notes itself as soon as it exists: the harness may stop the bomb before the last fork.
                with open(PIDS, "a") as f:
                    f.write(f"{os.getpid()}\\n")
            time.sleep(600)
    """,
    "exits": """
        import os, time
        def build_model():
            if os.fork() == 0:  # a child meant to outlive the run
                with open(PIDS, "a") as f:
                    f.write(f"{os.getpid()}\\n")
                time.sleep(600)
            os._exit(0)
    """,
    "printer": textwrap.dedent("""
        import sys, keras
        def build_model(input_shape, num_classes):
            chunk = "x" * 2**20
            for _ in range(1024):  # one line of 1 GiB
                sys.stdout.write(chunk)
            sys.stdout.write("\\n")
            for i in range(20_000):  # and more progress lines than any run makes
                print(f"[bench] printer seed 0: epoch {i}")
            return small_model(input_shape, num_classes)
    """) + textwrap.dedent(SMALL_MODEL),
    "tamper": textwrap.dedent("""
        import keras
        from pathlib import Path
        # submissions/ lies beside results/ and the board, as in the repository
        ROOT = Path(CHECKOUT)
        def build_model(input_shape, num_classes):
            rival = ROOT / "results" / "digits" / "rival" / "seed0.json"
            rival.write_text(rival.read_text().replace("0.97", "0.01"))
            (ROOT / "results" / "digits" / "other" / "seed0.json").unlink()
            fake = ROOT / "results" / "digits" / "fake" / "seed0.json"
            fake.parent.mkdir()
            fake.write_text("{}")
            (ROOT / "board.md").write_text("hacked")
            return small_model(input_shape, num_classes)
    """) + textwrap.dedent(SMALL_MODEL),
    # Writes the worker's result itself, claiming a perfect score, and leaves before the harness can.
    "forger": """
        import json, os, sys
        def build_model():
            output = json.load(open(sys.argv[1]))["output"]
            with open(os.path.join(output, "result.json"), "w") as f:
                json.dump({"status": "OK", "message": "", "total_params": 1, "trainable_params": 1, "test_accuracy": 1.0}, f)
            os._exit(0)
    """,
    # Sees what a worker sees, writes it down, and always predicts class 3.
    "spy": """
        import gc, json, os, sys, keras, numpy as np
        TRAINING = {"learning_rate": 1e-9, "batch_size": 64}
        def build_model(input_shape, num_classes):
            arrays = [o for o in gc.get_objects() if isinstance(o, np.ndarray)]
            seen = {
                "env": dict(os.environ), "cwd": os.getcwd(), "job": open(sys.argv[1]).read(),
                "holds_hidden_labels": any(a.shape == HIDDEN_LABELS.shape and (a == HIDDEN_LABELS).all() for a in arrays),
            }
            with open(SEEN, "w") as f:
                json.dump(seen, f)
            bias = [10.0 if c == 3 else 0.0 for c in range(num_classes)]
            return keras.Sequential([keras.Input(input_shape), keras.layers.Flatten(), keras.layers.Dense(
                num_classes, activation="softmax", kernel_initializer="zeros", bias_initializer=keras.initializers.Constant(bias))])
    """,
}


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def files_under(folder: Path) -> dict[str, str]:
    # Importing an entry leaves its bytecode in __pycache__/ (ignored by git): not a record.
    return {str(p.relative_to(folder)): sha256(p) for p in sorted(folder.rglob("*"))
            if p.is_file() and "__pycache__" not in p.parts}


def run_entries(tmp: Path, sources: dict[str, str], **settings):
    """Write the entries into tmp/submissions and evaluate them one at a time; (records by entry, logged lines)."""
    folder = tmp / "submissions"
    folder.mkdir(exist_ok=True)
    for name, source in sources.items():
        (folder / f"{name}.py").write_text(textwrap.dedent(source))
    challenge = config.from_dict({**TINY, "results": str(tmp / "results"), "leaderboard": str(tmp / "board.md"), **settings})
    runs = plan.plan(challenge, discover.find([str(folder)], str(folder)), data.load("digits").fingerprint(), [0])
    logged: list[str] = []
    records = runner.execute(challenge, runs, jobs=1, log=logged.append)
    return {r["entry"]: r for r in records}, logged


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    """The hostile entries evaluated once, next to two rivals' records, a board and a hidden test set."""
    tmp = tmp_path_factory.mktemp("hostile")
    for rival in ("rival", "other"):
        path = tmp / "results" / "digits" / rival / "seed0.json"
        path.parent.mkdir(parents=True)
        path.write_text(json.dumps({"entry": rival, "status": "OK", "test_accuracy": 0.97, "seed": 0}))
    (tmp / "board.md").write_text("# the board as the harness rendered it\n")
    # 40 digits images, 30 of them labelled 3: an entry that always answers 3 scores exactly 0.75.
    hidden_labels = np.array([3] * 30 + [0, 1, 2, 4, 5, 6, 7, 8, 9, 0])
    hidden = tmp / "outside_the_repo" / "hidden.npz"
    hidden.parent.mkdir()
    np.savez(hidden, x_test=(data.load("digits").x_test[:40] * 16).round().astype("uint8"), y_test=hidden_labels)
    before = files_under(tmp)
    sources = {name: f"PIDS = {str(tmp / (name + '.pids'))!r}\nSEEN = {str(tmp / 'seen.json')!r}\nCHECKOUT = {str(tmp)!r}\n"
               f"import numpy\nHIDDEN_LABELS = numpy.array({hidden_labels.tolist()})\n" + textwrap.dedent(source)
               for name, source in HOSTILE.items()}
    with pytest.MonkeyPatch.context() as patch:
        for name, value in SECRETS.items():
            patch.setenv(name, value)
        records, logged = run_entries(tmp, sources, test_set=str(hidden))
    return {"tmp": tmp, "records": records, "logged": logged, "before": before, "hidden": hidden}


def pids(tmp: Path, name: str) -> list[int]:
    return [int(line) for line in (tmp / f"{name}.pids").read_text().split()]


def test_other_records_and_the_board_are_unchanged_and_nothing_was_added(hostile):
    tmp, before = hostile["tmp"], hostile["before"]
    after = files_under(tmp)
    for path, digest in before.items():
        assert after[path] == digest, f"{path} changed"
    new_records = {f"results/digits/{name}/seed0.json" for name in HOSTILE}
    added = set(after) - set(before) - new_records - {f"{name}.pids" for name in HOSTILE} - {"seen.json"}
    assert added == {f"submissions/{name}.py" for name in HOSTILE}


def test_writing_into_results_and_the_board_is_undone_and_failed(hostile):
    record = hostile["records"]["tamper"]
    assert record["status"] == "FAILED"
    message = record["message"]
    assert "changed files it must not touch" in message and "They were restored" in message
    for name in ("rival/seed0.json", "other/seed0.json", "fake/seed0.json", "board.md"):
        assert name in message


def test_exhausting_memory_is_stopped_at_the_limit(hostile):
    record = hostile["records"]["hog"]
    assert record["status"] == "FAILED"
    assert "memory" in record["message"] and f"{MEMORY_MB:,} MB" in record["message"]


def test_a_fork_bomb_is_stopped_and_none_of_its_processes_survive(hostile):
    record = hostile["records"]["forker"]
    assert record["status"] == "FAILED"
    assert f"more than {containment.MAX_PROCESSES} processes" in record["message"]
    forked = pids(hostile["tmp"], "forker")
    assert forked and not any(alive(pid) for pid in forked)


def test_os_exit_is_failed_and_its_leftover_child_is_killed(hostile):
    record = hostile["records"]["exits"]
    assert record["status"] == "FAILED"
    assert "ended without a result (exit code 0)" in record["message"] and "os._exit()" in record["message"]
    assert not any(alive(pid) for pid in pids(hostile["tmp"], "exits"))


def test_printing_gigabytes_is_drained_within_bounds_and_none_of_it_is_shown(hostile):
    """The printer prints 20,000 lines that read like the runner's progress: none reaches the log. The log's progress
    lines for it are the runner's own, one per validation it answered, with the val_loss and val_accuracy it computed."""
    record = hostile["records"]["printer"]
    assert record["status"] == "OK", record["message"]
    shown = [line for line in hostile["logged"] if line.startswith("[bench] printer")]
    assert len(shown) == record["epochs"] >= 1
    for epoch, (line, loss) in enumerate(zip(shown, record["history"]["val_loss"]), start=1):
        assert line.startswith(f"[bench] printer seed 0: epoch {epoch}/") and f"val_loss={loss:.4f}" in line


def test_a_forged_result_file_is_not_a_score(hostile):
    """The training process's result file is a claim: its counts and accuracy are never read, and a run that trained
    no epoch the harness answered (the forger writes its result and exits) fails."""
    record = hostile["records"]["forger"]
    assert record["status"] == "FAILED" and "test_accuracy" not in record and record.get("total_params") is None
    assert "reported success without asking the harness for any validation" in record["message"]


@pytest.mark.parametrize("content, reason", [
    ("[1, 2", "Expecting"),
    ("[1, 2]", "no status and message"),
    ('{"status": "GREAT", "message": ""}', "no status and message"),
    ('{"status": "OK", "message": "", "train_macs": "10"}', "train_macs not numbers"),
    ('{"status": "OK", "message": "", "train_macs": true}', "train_macs not numbers"),
])
def test_a_result_file_that_is_not_a_record_fails_its_run(tmp_path, content, reason):
    path = tmp_path / "record.json"
    path.write_text(content)
    result = received.read_result(path)
    assert result["status"] == "FAILED" and "left a result that is not a record" in result["message"] and reason in result["message"]


def test_draining_a_gigabyte_line_keeps_the_parent_small():
    # In a fresh process, so that its peak memory is the drain's alone: reading the line whole would add 1 GiB.
    # The peak is VmHWM, which starts afresh at exec; ru_maxrss would carry over the pytest process's own
    # peak (Linux keeps it across fork and exec), hundreds of MB once TensorFlow is imported in the tests.
    code = textwrap.dedent('''
        import collections, re, subprocess, sys
        from bench import stages
        printer = "import sys\\nfor _ in range(1024): sys.stdout.write('x' * 2**20)\\n"
        child = subprocess.Popen([sys.executable, "-c", printer], stdout=subprocess.PIPE)
        tail = collections.deque(maxlen=stages.OUTPUT_TAIL_LINES)
        stages._drain(child.stdout, tail)
        child.wait()
        peak_kb = int(re.search(r"VmHWM:\\s+(\\d+) kB", open("/proc/self/status").read()).group(1))
        print(len(tail[0]), peak_kb // 1024)
    ''')
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}).stdout
    first_line_chars, peak_mb = map(int, out.split())
    assert first_line_chars == stages.MAX_LINE_CHARS and peak_mb < 200


def test_the_worker_sees_no_secrets_and_lives_in_a_temporary_folder(hostile):
    seen = json.loads((hostile["tmp"] / "seen.json").read_text())
    for name, value in SECRETS.items():
        assert name not in seen["env"] and value not in json.dumps(seen["env"])
    assert seen["env"]["HOME"].startswith(seen["cwd"])
    assert not seen["cwd"].startswith(str(hostile["tmp"]))


def test_the_hidden_test_set_is_scored_by_the_runner_and_its_labels_never_reach_the_worker(hostile):
    seen = json.loads((hostile["tmp"] / "seen.json").read_text())
    hidden = str(hostile["hidden"])
    assert hidden not in seen["job"] and hidden not in json.dumps(seen["env"])
    assert not seen["holds_hidden_labels"]
    record = hostile["records"]["spy"]
    assert record["status"] == "OK", record["message"]
    assert record["test_accuracy"] == 0.75  # 30 of the 40 hidden labels are 3, the spy's only answer
    assert record["test_set"].startswith("hidden test set hidden.npz (40 images, sha256 ")
    assert "test_predictions" not in record


def test_an_endless_loop_times_out_and_its_looping_child_is_killed(tmp_path):
    looper = f"""
        import os
        def build_model():
            if os.fork() == 0:
                with open({str(tmp_path / 'looper.pids')!r}, "a") as f:
                    f.write(f"{{os.getpid()}}\\n")
            while True:
                pass
    """
    # The limit counts from the worker's start, TensorFlow's import included: 15 s ran out before build_model on a
    # busy 2-core machine (CI beside two training runs), and then no child exists to check.
    records, _ = run_entries(tmp_path, {"looper": looper}, time_limit=40)
    assert records["looper"]["status"] == "TIMEOUT"
    assert "time limit of 40 s" in records["looper"]["message"]
    assert not any(alive(pid) for pid in pids(tmp_path, "looper"))


def test_the_hidden_test_set_changes_the_cache_key_and_the_memory_limit_does_not(tmp_path):
    hidden = tmp_path / "hidden.npz"
    np.savez(hidden, x_test=np.zeros((5, 8, 8), "uint8"), y_test=np.zeros(5, dtype="int64"))
    entry = tmp_path / "entry.py"
    entry.write_text("def build_model():\n    pass\n")
    key = lambda **s: plan.plan(config.from_dict({**TINY, **s}), [discover.read(entry)], "data", [0])[0].key["hash"]
    assert key() == key(memory_limit_mb=4096)
    with_hidden = key(test_set=str(hidden))
    assert with_hidden != key()
    moved = hidden.rename(tmp_path / "moved.npz")
    assert key(test_set=str(moved)) == with_hidden  # its content decides, not where it lies
    np.savez(moved, x_test=np.zeros((5, 8, 8), "uint8"), y_test=np.ones(5, dtype="int64"))
    assert key(test_set=str(moved)) != with_hidden


# The limits on plain Python children: fast, and each limit on its own.

def child(code: str, memory_mb: int | None = None) -> subprocess.Popen:
    worker = [sys.executable, "-c", textwrap.dedent(code)]
    return subprocess.Popen(containment.command(worker, memory_mb), start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def test_the_data_limit_turns_an_allocation_past_it_into_a_memory_error():
    process = child("big = bytearray(2 * 2**30)", memory_mb=1024)
    output = process.communicate(timeout=60)[0].decode()
    assert process.returncode == 1 and "MemoryError" in output


def test_memory_of_forked_children_together_is_stopped():
    # Each child stays under its own 1,024 MB data limit; together they hold about 1,600 MB.
    process = child("""
        import os, time
        for _ in range(4):
            if os.fork() == 0:
                hoard = b"x" * (400 * 2**20)
                break
        time.sleep(60)
    """, memory_mb=1024)
    try:
        assert containment.watch(process, time_limit=30, memory_mb=1024) == containment.MEMORY
    finally:
        containment.end_session(process.pid)
        process.wait()
    assert containment.session_members(process.pid) == []


def test_memory_is_measured_again_with_pss_only_when_the_rss_sum_passes_the_limit():
    # A parent and its forked child share the parent's 200 MB: RSS counts them twice, PSS once.
    process = child("""
        import os, sys, time
        shared = b"x" * (200 * 2**20)
        if os.fork() == 0:
            time.sleep(60)
        print("ready", flush=True)
        time.sleep(60)
    """)
    try:
        assert process.stdout.readline().strip() == b"ready"
        members = containment.session_members(process.pid)
        rss = containment.memory_of(members, limit=2**40)
        pss = containment.memory_of(members)
        assert len(members) == 2 and rss > 350 * 2**20 and pss < 300 * 2**20
        assert containment.memory_of(members, limit=300 * 2**20) < 300 * 2**20  # over the limit: PSS decides
    finally:
        containment.end_session(process.pid)
        process.wait()


def test_an_exponential_fork_bomb_is_stopped_even_in_new_process_groups(tmp_path):
    process = child(f"""
        import os, time
        for level in range(7):  # 2**7 = 128 processes
            if os.fork() == 0 and level == 3:
                os.setpgid(0, 0)  # leaves the process group, not the session
        with open({str(tmp_path / 'bomb.pids')!r}, "a") as f:
            f.write(f"{{os.getpid()}}\\n")
        time.sleep(60)
    """)
    try:
        assert containment.watch(process, time_limit=30, memory_mb=None) == containment.PROCESSES
    finally:
        containment.end_session(process.pid)
        process.wait()
    assert containment.session_members(process.pid) == []
    assert not any(alive(pid) for pid in pids(tmp_path, "bomb"))


def test_the_environment_keeps_the_allow_list_only(tmp_path):
    base = {**SECRETS, "PATH": "/usr/bin", "LANG": "C.UTF-8", "TF_CPP_MIN_LOG_LEVEL": "2", "HOME": "/root",
            "SSH_AUTH_SOCK": "/tmp/agent", "BENCH_TEST_SET": "/secret/hidden.npz", "BENCH_THREADS": "1"}
    env = containment.environment(base, tmp_path)
    assert {k: env[k] for k in ("PATH", "LANG", "TF_CPP_MIN_LOG_LEVEL", "BENCH_THREADS")} == \
        {"PATH": "/usr/bin", "LANG": "C.UTF-8", "TF_CPP_MIN_LOG_LEVEL": "2", "BENCH_THREADS": "1"}
    assert not set(env) & {*SECRETS, "SSH_AUTH_SOCK", "BENCH_TEST_SET"}
    assert env["HOME"] == str(tmp_path / "home") and Path(env["TMPDIR"]).is_dir()


def test_protected_files_put_back_what_changed_and_name_it(tmp_path):
    (tmp_path / "results" / "a").mkdir(parents=True)
    record = tmp_path / "results" / "a" / "seed0.json"
    record.write_text("original")
    protected = containment.ProtectedFiles(tmp_path / "results", tmp_path / "board.md")
    assert protected.restore() == []
    record.unlink()
    record.symlink_to(tmp_path / "elsewhere")
    (tmp_path / "board.md").write_text("new")
    assert protected.restore() == [str(tmp_path / "board.md"), str(record)]
    assert record.read_text() == "original" and not record.is_symlink() and not (tmp_path / "board.md").exists()
    record.write_text("written by the runner")
    protected.accept(record)
    assert protected.restore() == []


def test_changes_while_another_bench_command_writes_there_are_kept_and_logged(tmp_path):
    results = tmp_path / "results"
    results.mkdir()
    notes = []
    protected = containment.ProtectedFiles(results, log=notes.append)
    holder = subprocess.Popen([sys.executable, "-c", f"""
import sys, time
from bench import containment
with containment.writing({str(results)!r}):
    print("ready", flush=True)
    time.sleep(60)
"""], stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
    try:
        assert holder.stdout.readline() == "ready\n"
        (results / "its_record.json").write_text("written by the other command")
        assert protected.restore() == []
        assert (results / "its_record.json").exists()
        assert notes and f"bench process(es) [{holder.pid}] also wrote into {results}" in notes[0]
        (results / "its_last_record.json").write_text("written just before it was killed")
    finally:
        holder.kill()
        holder.wait()
    # Its last records may show up only after it is gone: the first check after its end keeps them.
    assert protected.restore() == []
    assert (results / "its_last_record.json").exists()
    # From then on its mark is stale: changes are undone again.
    (results / "its_record.json").write_text("changed later")
    assert protected.restore() == [str(results / "its_record.json")]
    assert (results / "its_record.json").read_text() == "written by the other command"


def test_records_of_a_bench_command_that_started_and_ended_between_two_checks_are_kept(tmp_path):
    # A sweep that finishes while a long evaluation trains: its records are not the entry's doing.
    results = tmp_path / "results"
    results.mkdir()
    protected = containment.ProtectedFiles(results, log=lambda line: None)
    subprocess.run([sys.executable, "-c", f"""
from pathlib import Path
from bench import containment
with containment.writing({str(results)!r}):
    Path({str(results / "swept.json")!r}).write_text("a sweep's record")
"""], check=True, env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
    assert protected.restore() == []
    assert (results / "swept.json").read_text() == "a sweep's record"
    (results / "swept.json").write_text("changed by an entry afterwards")
    assert protected.restore() == [str(results / "swept.json")]
