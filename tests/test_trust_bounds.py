"""Bounds that hold while a run runs, and seeds that are the harness's (issue 28, items 7 and 8).

Disk and files a run writes are counted at every poll and the run is stopped past MAX_WRITTEN_BYTES or
MAX_WRITTEN_FILES; what the sandbox keeps in its memory-backed /tmp and /dev/shm counts against the memory
limit, and each is a tmpfs no larger than that limit; the rest of the sandbox is read-only. An entry whose
seeds give identical predictions is flagged on the board, with no `± 0.00`.

The limits are checked on plain-Python children first (fast, no TensorFlow), inside bubblewrap where the
sandbox matters (also as the unprivileged user `nobody`), then through the real runner on digits.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from bench import config, containment, data, discover, leaderboard, plan, runner, sandbox, stages

SMALL_CAP = 32 * 2**20
BWRAP_MISSING = sandbox.unavailable()
needs_bwrap = pytest.mark.skipif(BWRAP_MISSING is not None, reason=f"no sandbox here: {BWRAP_MISSING}")


def child(code: str, memory_mb: int | None = None, sandboxed: bool = False) -> subprocess.Popen:
    """A plain Python child started as the runner starts a worker (through bench.containment), in bubblewrap when `sandboxed`."""
    argv = [sys.executable, "-c", textwrap.dedent(code)]
    if sandboxed:
        argv = sandbox.command([sandbox.interpreter(), "-c", textwrap.dedent(code)], {}, None,
                               env={"PATH": "/usr/bin:/bin"}, memory_mb=memory_mb)
    return subprocess.Popen(containment.command(argv, memory_mb), start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def watched(process: subprocess.Popen, memory_mb: int | None = None, written: tuple = ()) -> tuple[str | None, str]:
    """(the limit `watch` reports, the child's output), the child's session ended either way."""
    try:
        broken = containment.watch(process, time_limit=60, memory_mb=memory_mb, written=written)
    finally:
        containment.end_session(process.pid)
    return broken, process.communicate(timeout=30)[0].decode(errors="replace")


# ---- disk and files, live --------------------------------------------------------------------------

def test_a_child_writing_past_the_disk_cap_is_stopped_while_it_writes(tmp_path, monkeypatch):
    monkeypatch.setattr(containment, "MAX_WRITTEN_BYTES", SMALL_CAP)
    out = tmp_path / "out"
    out.mkdir()
    process = child(f"""
        import time
        for i in range(400):  # 400 MB in files of 1 MB, each under RLIMIT_FSIZE; then it would end by itself
            with open({str(out)!r} + f"/chunk{{i}}", "wb") as f:
                f.write(b"x" * 2**20)
            time.sleep(0.005)
    """)
    broken, output = watched(process, written=(out,))
    assert broken == containment.DISK, output
    written = sum(p.stat().st_size for p in out.iterdir())
    assert SMALL_CAP < written < 400 * 2**20  # stopped on the way, not counted after the run
    message = containment.explain(broken, None)
    assert f"wrote more than {SMALL_CAP:,} bytes" in message and "MAX_WRITTEN_BYTES" in message


def test_a_child_making_too_many_files_is_stopped(tmp_path, monkeypatch):
    monkeypatch.setattr(containment, "MAX_WRITTEN_FILES", 500)
    out = tmp_path / "out"
    out.mkdir()
    process = child(f"""
        import os, time
        for i in range(100_000):
            open(os.path.join({str(out)!r}, str(i)), "w").close()
            if i % 100 == 0:
                time.sleep(0.01)
    """)
    broken, output = watched(process, written=(out,))
    assert broken == containment.FILES, output
    assert len(os.listdir(out)) < 100_000
    assert "more than 500 files and folders" in containment.explain(broken, None)


def test_one_file_cannot_outgrow_the_cap_between_two_polls(monkeypatch, tmp_path):
    monkeypatch.setattr(containment, "MAX_WRITTEN_BYTES", SMALL_CAP)
    process = child(f"""
        with open({str(tmp_path / 'big')!r}, "wb") as f:
            f.write(b"x" * {2 * SMALL_CAP})
    """)
    output = process.communicate(timeout=60)[0].decode()
    assert process.returncode == 1 and "File too large" in output
    assert (tmp_path / "big").stat().st_size <= SMALL_CAP


def test_a_sparse_file_counts_at_its_size_and_a_deep_tree_past_the_file_cap(tmp_path):
    (tmp_path / "sparse").mkdir()
    with open(tmp_path / "sparse" / "hole", "wb") as f:
        f.truncate(100 * 2**30)  # 100 GB that take no blocks
    assert containment.tree_usage(tmp_path / "sparse", 1000)[0] >= 100 * 2**30
    deep = tmp_path / "deep"
    path = deep
    for _ in range(containment.MAX_WRITTEN_DEPTH + 5):  # a few files, nested too deep
        path = path / "d"
        path.mkdir(parents=True)
    assert containment.tree_usage(deep, 1000)[1] == 1001
    assert containment.written_limit(0, 0, (deep,)) == containment.FILES


# ---- the sandbox's memory-backed folders ------------------------------------------------------------

HOARD = """
    import time
    with open({path!r}, "wb") as f:
        for _ in range({mb}):  # in 1 MB pieces: the process itself stays small
            f.write(b"x" * 2**20)
    print("held", flush=True)
    time.sleep(60)
"""


@needs_bwrap
@pytest.mark.parametrize("folder", ["/dev/shm", "/tmp"])
def test_what_the_sandbox_holds_in_memory_backed_folders_counts_against_the_memory_limit(folder):
    broken, output = watched(child(HOARD.format(path=f"{folder}/hoard", mb=300), memory_mb=1024, sandboxed=True), memory_mb=200)
    assert broken == containment.MEMORY, output
    assert "/dev/shm" in containment.explain(broken, 200)


def test_memory_only_files_held_open_count_against_the_memory_limit():
    process = child("""
        import os, time
        held = os.memfd_create("hoard")
        for _ in range(300):  # written, never mapped: in no process's resident memory
            os.write(held, b"x" * 2**20)
        time.sleep(60)
    """, memory_mb=1024)
    broken, output = watched(process, memory_mb=200)
    assert broken == containment.MEMORY, output


@needs_bwrap
def test_the_sandbox_holds_no_more_than_its_limit_and_writes_nowhere_else():
    code = """
        import errno, os
        for folder in ("/dev/shm", "/tmp"):
            try:
                with open(folder + "/hoard", "wb") as f:
                    for _ in range(100):
                        f.write(b"x" * 2**20)
                print(folder, "held 100 MB")
            except OSError as error:
                print(folder, errno.errorcode[error.errno])
            os.unlink(folder + "/hoard")
        for folder in ("/", "/dev", "/etc", "/usr"):
            try:
                open(os.path.join(folder, "probe"), "w").close()
                print(folder, "writable")
            except OSError as error:
                print(folder, errno.errorcode[error.errno])
    """
    process = child(code, memory_mb=64, sandboxed=True)
    output = process.communicate(timeout=60)[0].decode()
    seen = dict(line.split(" ", 1) for line in output.splitlines() if line.startswith("/"))
    assert seen["/dev/shm"] == seen["/tmp"] == "ENOSPC", output  # each a tmpfs of 64 MB, the memory limit
    assert all(seen[folder] in ("EROFS", "EACCES") for folder in ("/", "/dev", "/etc", "/usr")), output


UNPRIVILEGED = """
import sys
from bench import containment, sandbox
sandbox.dataset_paths = lambda: ()  # nothing to hide: this interpreter has no numpy, and no datasets
code = "import time\\nf = open('/dev/shm/hoard', 'wb')\\nfor _ in range(300): f.write(b'x' * 2**20)\\nf.close()\\ntime.sleep(60)"
argv = sandbox.command([sandbox.interpreter(), "-c", code], {}, None, env={"PATH": "/usr/bin"}, memory_mb=1024)
import subprocess
process = subprocess.Popen(containment.command(argv, 1024), start_new_session=True)
try:
    print(containment.watch(process, 60, 200))
finally:
    containment.end_session(process.pid)
"""


BENCH_PATH = {"PYTHONPATH": str(Path(runner.__file__).resolve().parents[1])}


def unprivileged_python() -> list[str] | None:
    """A command prefix running Python as `nobody`: this interpreter if that user can reach all of its folders
    (one under /root cannot), else the system's."""
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        return None
    drop = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups"]
    for python in (sys.executable, "/usr/bin/python3"):
        probe = [*drop, python, "-c", "from bench import sandbox; sandbox.python_paths()"]
        if subprocess.run(probe, capture_output=True, env={**os.environ, **BENCH_PATH}, cwd="/").returncode == 0:
            return [*drop, python]
    return None


@needs_bwrap
def test_an_unprivileged_user_counts_dev_shm_too():
    """Most users are not root: bwrap's options and the count through /proc/PID/root must work for them."""
    prefix = unprivileged_python() or ([sys.executable] if os.geteuid() != 0 else None)
    if prefix is None:
        pytest.skip("no interpreter the user nobody may run")
    env = {"PATH": os.environ["PATH"], **BENCH_PATH}
    done = subprocess.run([*prefix, "-c", UNPRIVILEGED], capture_output=True, text=True, env=env, cwd="/", timeout=120)
    assert done.stdout.strip() == containment.MEMORY, done.stdout + done.stderr[-2000:]


# SysV shared memory and message queues outlive their mappings and show in no file: refused, not counted.
SYSV_IPC = """
import ctypes, os
libc = ctypes.CDLL(None, use_errno=True)
IPC_PRIVATE = IPC_RMID = 0
made = libc.shmget(IPC_PRIVATE, 1 << 30, 0o600)
print("shmget", os.strerror(ctypes.get_errno()) if made < 0 else "made", flush=True)
if made >= 0:
    libc.shmctl(made, IPC_RMID, None)
made = libc.msgget(IPC_PRIVATE, 0o600)
print("msgget", os.strerror(ctypes.get_errno()) if made < 0 else "made", flush=True)
if made >= 0:
    libc.msgctl(made, IPC_RMID, None)
"""
REFUSED = ["shmget Operation not permitted", "msgget Operation not permitted"]


@pytest.mark.parametrize("sandboxed", [False, pytest.param(True, marks=needs_bwrap)])
def test_sysv_shared_memory_and_message_queues_are_refused(sandboxed):
    output = child(SYSV_IPC, memory_mb=1024, sandboxed=sandboxed).communicate(timeout=60)[0].decode()
    assert output.splitlines()[-2:] == REFUSED, output


UNPRIVILEGED_SYSV_IPC = f"""
import subprocess, sys
from bench import containment, sandbox
sandbox.dataset_paths = lambda: ()
code = {SYSV_IPC!r}
for argv in ([sys.executable, "-c", code], sandbox.command([sandbox.interpreter(), "-c", code], {{}}, None, env={{"PATH": "/usr/bin"}})):
    sys.stdout.write(subprocess.run(containment.command(argv, 1024), capture_output=True, text=True).stdout)
"""


@needs_bwrap
def test_an_unprivileged_user_gets_sysv_ipc_refused_too():
    prefix = unprivileged_python() or ([sys.executable] if os.geteuid() != 0 else None)
    if prefix is None:
        pytest.skip("no interpreter the user nobody may run")
    env = {"PATH": os.environ["PATH"], **BENCH_PATH}
    done = subprocess.run([*prefix, "-c", UNPRIVILEGED_SYSV_IPC], capture_output=True, text=True, env=env, cwd="/", timeout=120)
    assert done.stdout.splitlines() == REFUSED * 2, done.stdout + done.stderr[-2000:]


def test_the_audit_gets_what_the_run_has_left_with_a_floor():
    assert stages.audit_time_limit(3600, 3590) == stages.AUDIT_MIN_SECONDS
    assert stages.audit_time_limit(1000, 700) == 300
    assert stages.audit_time_limit(14400, 100) == stages.AUDIT_TIME_LIMIT


def test_an_audit_started_before_training_still_gets_only_its_own_limit_once_it_has_its_job(tmp_path):
    """`check` starts the audit's process beside training, with a bound that covers training too: once the job
    is written, the audit's own limit counts, and a process past it is ended as a TIME limit."""
    import time

    images, output = tmp_path / "images", tmp_path / "out"
    for folder in (images, output):
        folder.mkdir()
    stage = stages.AuditStage(tmp_path / "audit_job", images, output, False, None, lambda inside, outside: str(outside))
    stage.argv = ["-c", "import time; time.sleep(600)"]  # an audit that never ends
    stage.start(3600)
    started = time.monotonic()
    ended = stage.finish({"model": "unused"}, 1.0)
    assert ended["limit"] == containment.TIME and time.monotonic() - started < 30
    assert not stages._live


def test_an_audit_whose_training_failed_is_told_so_and_exits_without_a_result(tmp_path):
    images, output = tmp_path / "images", tmp_path / "out"
    for folder in (images, output):
        folder.mkdir()
    stage = stages.AuditStage(tmp_path / "audit_job", images, output, False, None, lambda inside, outside: str(outside))
    stage.argv = ["-c", "import json, pathlib, sys, time\n"
                        f"job = pathlib.Path({str(tmp_path / 'audit_job' / 'job.json')!r})\n"
                        "while not job.exists(): time.sleep(0.02)\n"
                        "sys.exit(0 if json.loads(job.read_text()) == {'cancelled': True} else 3)"]
    stage.start(600)
    stage.cancel()
    assert stage.ended == {"limit": None, "tail": [], "returncode": 0} and not stages._live


# ---- the same bounds through the runner (TensorFlow in the sandbox) ----------------------------------

TINY = {"dataset": "digits", "validation_size": 300, "max_epochs": 2, "max_params": 50_000, "memory_limit_mb": 1024}

MODEL = """
    def small_model(input_shape, num_classes):
        import keras
        return keras.Sequential([keras.Input(input_shape), keras.layers.Flatten(),
                                 keras.layers.Dense(num_classes, activation="softmax")])
"""

FILLS_ITS_OUTPUT = """
    import json, sys
    def build_model(input_shape, num_classes):
        output = json.load(open(sys.argv[1]))["output"]  # the folder the harness reads the export from
        for i in range(200):  # 200 MB, far under received.MAX_OUTPUT_BYTES: only a live cap stops it
            with open(f"{output}/fill{i}", "wb") as f:
                f.write(b"x" * 2**20)
        return small_model(input_shape, num_classes)
""" + MODEL

HOARDS_IN_DEV_SHM = """
    def build_model(input_shape, num_classes):
        with open("/dev/shm/hoard", "wb") as f:
            for _ in range(900):  # 900 MB beside TensorFlow's own, under a 1,024 MB limit
                f.write(b"x" * 2**20)
        return small_model(input_shape, num_classes)
""" + MODEL


def evaluate(tmp: Path, sources: dict[str, str], seeds: int = 1, **settings) -> tuple[dict, config.Challenge, list]:
    """Write the entries into tmp/submissions and evaluate them; (records by (entry, seed), the challenge, all records)."""
    folder = tmp / "submissions"
    folder.mkdir(exist_ok=True)
    for name, source in sources.items():
        (folder / f"{name}.py").write_text(textwrap.dedent(source))
    challenge = config.from_dict({**TINY, "seeds": seeds, "results": str(tmp / "results"), "leaderboard": str(tmp / "board.md"), **settings})
    runs = plan.plan(challenge, discover.find([str(folder)], str(folder)), data.load("digits").fingerprint(), list(range(seeds)))
    records = runner.execute(challenge, runs, jobs=1, log=lambda line: None)
    return {(r["entry"], r["seed"]): r for r in records}, challenge, records


@needs_bwrap
def test_a_sandboxed_run_writing_past_the_cap_is_stopped_while_it_runs(tmp_path, monkeypatch):
    monkeypatch.setattr(containment, "MAX_WRITTEN_BYTES", SMALL_CAP)
    record = evaluate(tmp_path, {"filler": FILLS_ITS_OUTPUT}, sandbox="required")[0][("filler", 0)]
    assert record["status"] == "FAILED" and record["sandbox"] == "bubblewrap"
    assert record["message"].startswith(f"stopped: it wrote more than {SMALL_CAP:,} bytes"), record["message"]


@needs_bwrap
def test_a_sandboxed_run_holding_memory_in_dev_shm_is_stopped(tmp_path):
    record = evaluate(tmp_path, {"hoarder": HOARDS_IN_DEV_SHM}, sandbox="required")[0][("hoarder", 0)]
    assert record["status"] == "FAILED" and record["sandbox"] == "bubblewrap"
    assert "/dev/shm" in record["message"] and "1,024 MB" in record["message"], record["message"]


# ---- seeds --------------------------------------------------------------------------------------------

# ../shared/cases/fc2_06: a tutorial's keras.utils.set_random_seed(42) inside build_model.
SELF_SEEDING = (Path(__file__).parent / "cases" / "fc2_06_seed_in_file.py").read_text()
HONEST = """
    import keras
    def build_model(input_shape, num_classes):
        return keras.Sequential([keras.Input(input_shape), keras.layers.Flatten(),
                                 keras.layers.Dense(16, activation="relu"), keras.layers.Dense(num_classes, activation="softmax")])
"""


def board_row(text: str, entry: str) -> str:
    return next(line for line in text.splitlines() if line.startswith("| ") and f" {entry}" in line)


def test_an_entry_that_seeds_itself_is_flagged_and_shows_no_zero_spread(tmp_path):
    by_run, challenge, records = evaluate(tmp_path, {"self_seeding": SELF_SEEDING, "honest": HONEST}, seeds=2, sandbox="off")
    assert all(r["status"] == "OK" for r in records), [r["message"] for r in records]
    assert by_run[("self_seeding", 0)]["predictions_sha256"] == by_run[("self_seeding", 1)]["predictions_sha256"]
    assert by_run[("honest", 0)]["predictions_sha256"] != by_run[("honest", 1)]["predictions_sha256"]
    frame = leaderboard.board(records, challenge)
    text = leaderboard.render_markdown(frame, records, challenge, None)
    flagged = board_row(text, "self_seeding")
    assert leaderboard.SEEDS_IDENTICAL in flagged and "± 0.00" not in flagged, flagged
    assert leaderboard.SEEDS_IDENTICAL not in board_row(text, "honest")
    exported = {row["entry"]: row for row in json.loads(leaderboard.export_frame(frame, "json"))}
    assert exported["self_seeding"]["seeds_identical"] is True and exported["self_seeding"]["test_accuracy_std"] is None
    assert exported["self_seeding"]["test_accuracy_se"] > 0  # one run's binomial error, not the seeds' zero spread
    assert exported["honest"]["seeds_identical"] is False


def record(entry, seed, accuracy, digest=None):
    """A board record as the runner writes it, with `predictions_sha256` when `digest`."""
    challenge = config.from_dict({"dataset": "digits", "seeds": 3})
    return {"entry": entry, "seed": seed, "dataset": "digits", "status": "OK", "message": "", "total_params": 500,
            "trainable_params": 500, "test_accuracy": accuracy, "epochs": 10, "train_seconds": 1.0, "build_kwargs": {},
            "eval_kwargs": {}, "key": {"config": challenge.protocol_hash(), "hash": f"{entry}-{seed}"},
            **({"predictions_sha256": digest} if digest else {})}


def test_identical_seeds_count_as_one_run_in_the_significance_tests_and_old_records_are_not_flagged():
    records = [record("a", s, 0.90, "same-a") for s in range(3)] + [record("b", s, 0.91, "same-b") for s in range(3)]
    records += [record("old", s, 0.80) for s in range(3)]  # made before the runner stored digests
    frame = leaderboard.board(records, config.from_dict({"dataset": "digits", "seeds": 3})).set_index("entry")
    assert frame.loc["a", "seeds_identical"] and frame.loc["b", "seeds_identical"] and not frame.loc["old", "seeds_identical"]
    # Three copies of one run are no evidence that a and b differ: without the flag Welch's test on zero spreads called it certain.
    assert frame.loc["a", "group"] == frame.loc["b", "group"]
    assert frame.loc["old", "test_accuracy_std"] == 0.0  # an old board renders as it did


# ---- threads: one run's allowance is its own ----------------------------------------------------------

RIVAL = '''"""An honest rival, which starts a thread of its own once the vandal has taken the account's."""
import threading, time
import keras


def build_model(input_shape, num_classes):
    time.sleep(10)
    worker = threading.Thread(target=time.sleep, args=(0.1,))
    worker.start()
    worker.join()
    inputs = keras.Input(input_shape)
    x = keras.layers.Flatten()(inputs)
    return keras.Model(inputs, keras.layers.Dense(num_classes, activation="softmax")(x))
'''
# RLIMIT_NPROC counts every thread of the user account, and each run's limit was the account's count when it started
# plus EXTRA_THREADS: a run started beside it took the rest of that allowance for a while, and the run started
# before it aborted on its next thread (exit code 134), recorded as its own doing (failure_cause "entry"), kept by
# the cache until its author changed the file, while the vandal then trained as usual.
THREAD_HOG = '''"""Takes the account's threads for a while, then trains as usual."""
import threading, time
import keras


def build_model(input_shape, num_classes):
    until = time.time() + 30
    try:
        for _ in range(4000):
            threading.Thread(target=lambda: time.sleep(max(0.0, until - time.time())), daemon=True).start()
    except RuntimeError:
        pass
    time.sleep(max(0.0, until - time.time()) + 1)
    inputs = keras.Input(input_shape)
    x = keras.layers.Flatten()(inputs)
    return keras.Model(inputs, keras.layers.Dense(num_classes, activation="softmax")(x))
'''


@needs_bwrap
def test_a_run_that_takes_the_accounts_threads_does_not_fail_the_run_beside_it():
    """The limit on threads is set inside each run's sandbox, where the kernel counts that run's own (its user
    namespace), so another run's threads never use it up; as `nobody`, where RLIMIT_NPROC applies."""
    import stat
    import tempfile

    prefix = unprivileged_python() or ([sys.executable] if os.geteuid() != 0 else None)
    if prefix is None:
        pytest.skip("no interpreter the user nobody may run")
    work = Path(tempfile.mkdtemp(prefix="bench-threads-"))
    try:
        (work / "submissions").mkdir()
        (work / "submissions" / "alice.py").write_text(RIVAL)
        (work / "submissions" / "zed.py").write_text(THREAD_HOG)
        for path in [work, *work.rglob("*")]:
            path.chmod(path.stat().st_mode | stat.S_IRWXO | stat.S_IRWXG | stat.S_IRWXU)
        command = [*prefix, "-m", "bench", "evaluate", "submissions", "--dataset", "digits", "--validation-size", "300",
                   "--seeds", "1", "--epochs", "2", "--sandbox", "required", "--jobs", "2",
                   "--results", "results", "--leaderboard", "board.md"]
        env = {"PATH": os.environ["PATH"], **BENCH_PATH, "HOME": str(work)}
        done = subprocess.run(command, cwd=work, env=env, capture_output=True, text=True, timeout=600)
        records = {name: json.loads((work / "results" / "digits" / name / "seed0.json").read_text()) for name in ("alice", "zed")}
        assert records["alice"]["status"] == "OK", (records["alice"]["message"], done.stdout[-2000:])
    finally:
        shutil.rmtree(work, ignore_errors=True)


# ---- sessions: a run's processes stay in its session ------------------------------------------------------

# Each child calls setsid() and holds 120 MB, under its own RLIMIT_DATA: the watcher sums the memory (and counts the
# processes) of the run's session, so children in sessions of their own would hold 480 MB under a limit of 300 MB
# unseen (and, outside the sandbox, outlive the run); each session is also a CPU share of its own under the kernel's
# autogroups: a red team's 20 such processes of 40 hashing threads each stretched a rival's 12 s run past 60 s.
SETSID_CHILDREN = """
import os, time
for _ in range(4):
    if os.fork() == 0:
        try:
            os.setsid()
            print("setsid made a session", flush=True)
        except OSError as error:
            print("setsid", error.strerror, flush=True)
        block = bytearray(120 * 2**20)
        for i in range(0, len(block), 4096):
            block[i] = 1
        time.sleep(60)
        os._exit(0)
time.sleep(60)
"""


@pytest.mark.parametrize("sandboxed", [False, pytest.param(True, marks=needs_bwrap)])
def test_a_run_cannot_move_its_processes_out_of_its_session(sandboxed):
    broken, output = watched(child(SETSID_CHILDREN, memory_mb=300, sandboxed=sandboxed), memory_mb=300)
    assert "setsid made a session" not in output, output
    assert broken == containment.MEMORY, output
