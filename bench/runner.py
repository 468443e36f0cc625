"""Run entries: check the cache, start one worker subprocess per (entry, seed), store the records.

Each run gets a fresh TensorFlow in its own process, so a crash, a leak or a hang stays there.
Runs finish one by one and each record is written as soon as it exists: an interrupted
evaluation keeps everything that finished.
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import datetime
import importlib.metadata
import json
import os
import platform
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

import bench
from bench import config, containment, data, results
from bench.discover import Submission
from bench.train import FAILED, INVALID, OK, OVER_BUDGET, PROGRESS_PREFIX, TIMEOUT

# Lines of a worker's own output kept to explain a crash; the rest is drained and dropped, lines are
# cut at MAX_LINE_CHARS and at most MAX_LOGGED_LINES progress lines are shown per run, so a submission
# that prints gigabytes (in one line or many) cannot fill memory or the terminal.
OUTPUT_TAIL_LINES = 40
MAX_LINE_CHARS = 2000
MAX_LOGGED_LINES = 10_000
# TensorFlow threads per run (default 1). Fixed per run rather than shared out among --jobs: the
# thread count changes how TensorFlow splits its sums, and so the last bits of a record, and a
# record must not depend on how many entries ran beside it or on the machine's core count.
THREADS_ENV = "BENCH_THREADS"


@dataclasses.dataclass
class Run:
    submission: Submission
    seed: int
    path: Path
    key: dict
    build_kwargs: dict
    eval_kwargs: dict
    hyperparameters: dict | None = None

    @property
    def label(self) -> str:
        return f"{self.path.parent.name} seed {self.seed}"


def plan(challenge: config.Challenge, submissions: list[Submission], fingerprint: str, seeds: list[int],
         build_kwargs: dict | None = None, eval_kwargs: dict | None = None, hyperparameters_for=None) -> list[Run]:
    if challenge.test_set:  # the hidden test set's content (not its path) decides what a run scores
        from bench import classroom

        fingerprint = config.sha256_of_json([fingerprint, classroom.hidden_test_set(challenge).digest])
    runs = []
    for submission in submissions:
        hyperparameters = hyperparameters_for(submission) if hyperparameters_for else None
        name = results.variant_name(submission.name, build_kwargs, eval_kwargs)
        for seed in seeds:
            key = results.cache_key(submission.file_hash, challenge.protocol_hash(), fingerprint, seed,
                                    build_kwargs, eval_kwargs, hyperparameters)
            path = results.record_path(challenge.results, challenge.dataset, name, seed)
            runs.append(Run(submission, seed, path, key, build_kwargs or {}, eval_kwargs or {}, hyperparameters))
    return runs


def limit_seeds(runs: list[Run], one_seed_above: int | None) -> tuple[list[Run], list[Run]]:
    """Split `runs` into (runs to train now, runs waiting for their entry's seed 0).

    Under `one_seed_above`, an entry's seeds after the first train only if its seed-0 record, under
    the same key, counts at most that many parameters; an entry too big, or whose seed 0 ended without
    a count (it failed before building), keeps seed 0 alone. Until seed 0 is recorded, its size is
    unknown and the other seeds wait: `settle_waiting` decides once it is.
    """
    if one_seed_above is None:
        return runs, []
    first = {run.path.parent: run for run in runs if run.seed == 0}
    now, waiting = [], []
    for run in runs:
        zero = first.get(run.path.parent)
        if run.seed == 0 or zero is None:
            now.append(run)
        elif not _recorded(zero):
            waiting.append(run)
        elif _small_enough(zero, one_seed_above):
            now.append(run)
    return now, waiting


def settle_waiting(waiting: list[Run], runs: list[Run], one_seed_above: int) -> list[Run]:
    """The waiting runs whose entry's seed 0, now recorded, is small enough for more seeds."""
    first = {run.path.parent: run for run in runs if run.seed == 0}
    return [run for run in waiting if _small_enough(first[run.path.parent], one_seed_above)]


def _recorded(run: Run) -> bool:
    record = results.read(run.path) if run.path.exists() else None
    return bool(record) and record.get("key", {}).get("hash") == run.key["hash"]


def _small_enough(run: Run, one_seed_above: int) -> bool:
    record = results.read(run.path) if _recorded(run) else None
    return bool(record) and record.get("total_params") is not None and record["total_params"] <= one_seed_above


def execute(challenge: config.Challenge, runs: list[Run], force: bool = False, jobs: int = 1,
            log=print, extra_job: dict | None = None, executor=None) -> list[dict]:
    """Run what is not cached and return every run's record (cached ones included).

    The executor trains (default: worker subprocesses here, `jobs` at a time; bench.executors has
    Ray's); whichever trained a run, its record is assembled and written here as soon as it finishes.
    """
    records: dict[int, dict] = {}
    todo = {}
    for index, run in enumerate(runs):
        if not force and results.is_cached(run.path, run.key["hash"]) and has_requested_monitor(run.path, extra_job):
            records[index] = results.read(run.path)
            log(f"cached  {run.label}")
        else:
            todo[index] = run
    threads = worker_threads()
    executor = executor or LocalExecutor(jobs)
    protected = protected_files(challenge, log)
    try:
        for index, partial, seconds in executor.train(challenge, todo, threads, log, extra_job or {}):
            # With several runs at once, a change shows up on the next run to finish, which may not be
            # the one that made it: its FAILED record is not cached, so the next evaluation retrains it.
            changed = protected.restore()
            records[index] = store(challenge, todo[index], containment.tampering(changed) if changed else partial, seconds, threads, log)
            protected.accept(todo[index].path)
    except KeyboardInterrupt:
        log(f"interrupted: {len(records)} record(s) finished and kept")
        raise
    return [records[i] for i in sorted(records)]


def protected_files(challenge: config.Challenge, log=print) -> containment.ProtectedFiles:
    """The records and the leaderboard, which only the harness writes."""
    board = Path(challenge.leaderboard)
    return containment.ProtectedFiles(challenge.results, board, board.with_suffix(".png"), log=log)


def has_requested_monitor(path: Path, extra_job: dict | None) -> bool:
    """A run asked for `--monitor N` is not served by a cached record made without it (or with another N)."""
    wanted = (extra_job or {}).get("monitor")
    return not wanted or ((results.read(path) or {}).get("monitor") or {}).get("every_steps") == wanted


def worker_threads() -> int:
    return int(os.environ.get(THREADS_ENV) or 0) or 1


def default_jobs() -> int:
    """One run per core the process may use: each run has one thread."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


class LocalExecutor:
    """Worker subprocesses on this machine, `jobs` at a time."""

    def __init__(self, jobs: int | None = None):
        self.jobs = max(1, jobs or default_jobs())

    def train(self, challenge: config.Challenge, runs: dict[int, Run], threads: int, log, extra_job: dict):
        """Yield (index, partial record, seconds) for each of `runs` as it finishes."""
        with concurrent.futures.ThreadPoolExecutor(max_workers=self.jobs) as pool:
            futures = {pool.submit(timed_worker, challenge, run, threads, log, extra_job): index for index, run in runs.items()}
            try:
                for future in concurrent.futures.as_completed(futures):
                    yield (futures[future], *future.result())
            finally:  # interrupted: runs that have not started never will
                for future in futures:
                    future.cancel()


def timed_worker(challenge: config.Challenge, run: Run, threads: int, log, extra_job: dict) -> tuple[dict, float]:
    log(f"start   {run.label}")
    started = time.perf_counter()
    partial = run_worker(challenge, run, threads, log, extra_job)
    return partial, time.perf_counter() - started


def store(challenge: config.Challenge, run: Run, partial: dict, seconds: float, threads: int | None, log=print) -> dict:
    """The full record of a finished run (the worker's partial record plus what identifies it), written to disk."""
    record = {
        "entry": run.submission.name,
        "run_name": run.path.parent.name,
        "dataset": challenge.dataset,
        "seed": run.seed,
        "build_kwargs": run.build_kwargs,
        "eval_kwargs": run.eval_kwargs,
        "summary": run.submission.summary,
        "author": run.submission.author,
        "submission_path": run.submission.path.as_posix(),
        # Before the partial record: a remote executor reports the versions of the machine that trained.
        "versions": versions(),
        **partial,
        "threads": threads,
        "wall_seconds": round(seconds, 3),
        "key": run.key,
        "protocol": challenge.protocol(),
        "finished_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    if run.hyperparameters is not None:
        from bench import tune  # only `bench tune` saves hyperparameters, so the module is there

        record["hyperparameters"] = run.hyperparameters
        record["tuned_trials"] = tune.tuned_trials(challenge, run.submission)
    results.write(run.path, record)
    shown = f"test_accuracy={record['test_accuracy']:.4f}" if "test_accuracy" in record else record["message"].splitlines()[0] if record["message"] else ""
    log(f"{record['status']:<7} {run.label} {shown} ({record['wall_seconds']:.0f}s)")
    return record


def run_worker(challenge: config.Challenge, run: Run, threads: int, log, extra_job: dict) -> dict:
    """One run in a worker subprocess, contained (bench.containment); returns its partial record."""
    mode = extra_job.get("mode", "train")
    hidden = None
    if challenge.test_set and mode == "train":
        from bench import classroom

        hidden = classroom.hidden_test_set(challenge)
    memory_mb = challenge.memory_limit_mb or containment.default_memory_limit_mb()
    with tempfile.TemporaryDirectory(prefix="bench-") as workdir:
        job = {
            "mode": mode,
            "submission": str(run.submission.path.resolve()),
            # Messages name the file as the person who ran bench sees it, not by the worker's absolute path.
            "shown_as": shown_path(run.submission.path),
            "entry": run.submission.name,
            "seed": run.seed,
            # The worker is never told where the hidden test set is: it gets the images alone, below.
            "challenge": config.to_dict(dataclasses.replace(_absolute_paths(challenge), test_set=None)),
            "build_kwargs": run.build_kwargs,
            "eval_kwargs": run.eval_kwargs,
            "hyperparameters": run.hyperparameters,
            "threads": threads,
            "output": str(Path(workdir) / "record.json"),
            **{k: v for k, v in extra_job.items() if k != "mode"},
        }
        if hidden is not None:
            job["test_images"] = str(Path(workdir) / "test_images.npy")
            np.save(job["test_images"], hidden.images)
        job_path = Path(workdir) / "job.json"
        job_path.write_text(json.dumps(job))
        process = subprocess.Popen(
            containment.command([sys.executable, "-m", "bench.train", str(job_path)], memory_mb),
            cwd=workdir,
            env=worker_environment(workdir),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # every process the entry starts is found, and ended, through its session
        )
        tail: collections.deque[str] = collections.deque(maxlen=OUTPUT_TAIL_LINES)
        reader = threading.Thread(target=_drain, args=(process.stdout, tail, log), daemon=True)
        reader.start()
        try:
            broken = containment.watch(process, challenge.time_limit, memory_mb)
        finally:  # however the run ends (Ctrl-C included), nothing it started outlives it
            containment.end_session(process.pid)
            if process.poll() is None:  # no sessions to end (Windows)
                process.kill()
            process.wait()
        reader.join(timeout=5)
        if broken == containment.TIME:
            last = next((line for line in reversed(tail) if line.startswith(PROGRESS_PREFIX)), "")
            return {"status": TIMEOUT, "message": f"ran longer than the time limit of {challenge.time_limit:.0f} s"
                    + (f" (last progress: {last[len(PROGRESS_PREFIX):].strip()})" if last else "")
                    + "; train fewer epochs (TRAINING['epochs']) or a smaller model"}
        if broken:
            return {"status": FAILED, "message": containment.explain(broken, memory_mb)}
        output = Path(job["output"])
        if output.exists():
            partial = read_result(output)
            if any(word in partial.get("message", "") for word in MEMORY_ERRORS):
                partial["message"] += f"; it ran out of memory: {containment.memory_hint(memory_mb)}"
            return classroom.score(partial, hidden) if hidden is not None else partial
        own_lines = [line for line in tail if not line.startswith(PROGRESS_PREFIX)]
        said = [line for line in own_lines if line.strip() and not TENSORFLOW_LOG.match(line)]
        code = process.returncode
        ended = f"killed by signal {signal.Signals(-code).name}" if code < 0 else f"exit code {code}"
        out_of_memory = any(word in line for line in own_lines for word in MEMORY_ERRORS)
        return {"status": FAILED, "message": f"the training process ended without a result ({ended})"
                + (f": {said[-1]}" if said else "")
                + (f"; it ran out of memory: {containment.memory_hint(memory_mb)}" if out_of_memory else
                   "; something ended it before it wrote its result: an exit() or os._exit() in the entry, or a crash in native code"),
                "output_tail": own_lines}


# The worker's result file holds a few numbers and a short history; anything far larger is not one.
MAX_RESULT_BYTES = 64 * 2**20
STATUSES = {OK, FAILED, TIMEOUT, OVER_BUDGET, INVALID}
NUMBER_FIELDS = ("total_params", "trainable_params", "test_accuracy", "val_accuracy", "epochs", "train_seconds", "macs")


def read_result(path: Path) -> dict:
    """The worker's partial record, checked: the entry runs in that process and may write the file itself,
    and a malformed one must fail its own run, not the evaluation."""
    try:
        if path.stat().st_size > MAX_RESULT_BYTES:
            raise ValueError(f"{path.stat().st_size:,} bytes")
        partial = json.loads(path.read_text())
        if not isinstance(partial, dict) or partial.get("status") not in STATUSES or not isinstance(partial.get("message"), str):
            raise ValueError("no status and message")
        wrong = [k for k in NUMBER_FIELDS if partial.get(k) is not None and (isinstance(partial[k], bool) or not isinstance(partial[k], (int, float)))]
        if wrong:
            raise ValueError(f"{', '.join(wrong)} not numbers")
    except (OSError, ValueError) as error:  # json.JSONDecodeError and UnicodeDecodeError are ValueErrors
        return {"status": FAILED, "message": f"the training process left a result that is not a record ({error}): "
                "an entry must not write the harness's files"}
    return partial


# How Python, TensorFlow and C++ say that an allocation failed.
MEMORY_ERRORS = ("MemoryError", "ResourceExhaustedError", "std::bad_alloc", "OOM when allocating")
# TensorFlow's own informational lines ("I0000 00:00:... port.cc:153] oneDNN ...", absl's notice
# before its logging starts): never the explanation.
TENSORFLOW_LOG = re.compile(r"[IW]\d{4} |WARNING: All log messages before absl::InitializeLog")


def _drain(stream, tail, log):
    logged = 0
    rest_of_long_line = False
    for raw in iter(lambda: stream.readline(MAX_LINE_CHARS), b""):
        if not rest_of_long_line:
            line = raw.decode("utf-8", "replace").rstrip()
            tail.append(line)
            if line.startswith(PROGRESS_PREFIX) and logged < MAX_LOGGED_LINES:
                logged += 1
                log(line if logged < MAX_LOGGED_LINES else f"{PROGRESS_PREFIX} (further output of this run is not shown)")
        rest_of_long_line = not raw.endswith(b"\n")
    stream.close()


def worker_environment(workdir: str | Path) -> dict:
    """The allowed variables only (bench.containment.ALLOWED_ENV), HOME and TMPDIR inside `workdir`."""
    env = containment.environment(os.environ, workdir)
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    env["PYTHONUNBUFFERED"] = "1"
    # The worker runs in a temporary folder: make this copy of bench importable from there.
    package_root = str(Path(bench.__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
    return env


def _absolute_paths(challenge: config.Challenge) -> config.Challenge:
    data_dir = challenge.data_dir or os.environ.get(data.DATA_DIR_ENV)
    return dataclasses.replace(challenge, data_dir=str(Path(data_dir).resolve()) if data_dir else None)


def shown_path(path: Path) -> str:
    """`submissions/x.py` for a file under the working directory, the absolute path otherwise."""
    resolved = Path(path).resolve()
    try:
        return str(resolved.relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(resolved)


def versions() -> dict:
    found = {"python": platform.python_version(), "bench": bench.__version__, "cpu": _cpu_name()}
    for name, dists in (("tensorflow", ("tensorflow", "tensorflow-cpu")), ("keras", ("keras",))):
        for dist in dists:
            try:
                found[name] = importlib.metadata.version(dist)
                break
            except importlib.metadata.PackageNotFoundError:
                continue
    return found


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()
