"""Run entries: check the cache, start one worker subprocess per (entry, seed), store the records.

Each run gets a fresh TensorFlow in its own process, so a crash, a leak or a hang stays there.
Runs finish one by one and each record is written as soon as it exists: an interrupted
evaluation keeps everything that finished.
"""

from __future__ import annotations

import atexit
import collections
import concurrent.futures
import dataclasses
import datetime
import hashlib
import importlib.metadata
import json
import os
import platform
import re
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

import bench
from bench import audit, config, containment, data, discover, monitor, results, sandbox, scoring, train, untrusted, validation
from bench.discover import Submission
from bench.status import ENGINES, ENTRY_CAUSE, FAILED, INVALID, OK, OUTSIDE_CAUSE, OVER_BUDGET, STATUSES, TIMEOUT
from bench.train import PROGRESS_PREFIX

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
        # The helpers travel with the entry into the sandbox (run_worker), so an edit to one retrains it. Read without
        # following links: a link's target (a hidden file, /dev/zero, /proc/uptime) is never read, and keys it "refused".
        helpers = discover.helper_digests(submission.path.parent)
        for seed in seeds:
            key = results.cache_key(submission.file_hash, challenge.protocol_hash(), fingerprint, seed,
                                    build_kwargs, eval_kwargs, hyperparameters, helpers)
            path = results.record_path(challenge.results, challenge.dataset, name, seed)
            runs.append(Run(submission, seed, path, key, build_kwargs or {}, eval_kwargs or {}, hyperparameters))
    return runs


def limit_seeds(runs: list[Run], one_seed_above: int | None) -> tuple[dict[int, Run], dict[int, Run]]:
    """Split `runs` into (runs to train now, runs waiting for their entry's seed 0), keyed by index in `runs`.

    Under `one_seed_above`, an entry's seeds after the first train only if its seed-0 record, under
    the same key, counts at most that many parameters; an entry too big, or whose seed 0 ended without
    a count (it failed before building), keeps seed 0 alone. Until seed 0 is recorded, its size is
    unknown and the other seeds wait: `release_waiting` decides as soon as it is.
    """
    if one_seed_above is None:
        return dict(enumerate(runs)), {}
    first = {run.path.parent: run for run in runs if run.seed == 0}
    now, waiting = {}, {}
    for index, run in enumerate(runs):
        zero = first.get(run.path.parent)
        if run.seed == 0 or zero is None:
            now[index] = run
        elif not _recorded(zero):
            waiting[index] = run
        elif _small_enough(zero, one_seed_above):
            now[index] = run
    return now, waiting


def release_waiting(waiting: dict[int, Run], finished: Run, one_seed_above: int | None) -> dict[int, Run]:
    """Take the runs waiting for `finished` (an entry's seed 0, just recorded) out of `waiting`; return those to train."""
    mine = {index: run for index, run in waiting.items() if finished.seed == 0 and run.path.parent == finished.path.parent}
    for index in mine:
        del waiting[index]
    return mine if mine and _small_enough(finished, one_seed_above) else {}


def _recorded(run: Run) -> bool:
    record = results.read(run.path) if run.path.exists() else None
    return bool(record) and record.get("key", {}).get("hash") == run.key["hash"]


def _small_enough(run: Run, one_seed_above: int) -> bool:
    record = results.read(run.path) if _recorded(run) else None
    return bool(record) and record.get("total_params") is not None and record["total_params"] <= one_seed_above


_PRINTING = threading.Lock()


def say(line: str) -> None:
    """Print one whole line: runs in flight log from several threads, and print() writes the text and
    its newline separately, so two lines could run together ("start a seed 1start b seed 2")."""
    with _PRINTING:
        sys.stdout.write(f"{line}\n")
        sys.stdout.flush()


def execute(challenge: config.Challenge, runs: list[Run], force: bool = False, jobs: int = 1,
            log=say, extra_job: dict | None = None, executor=None, one_seed_above: int | None = None,
            retry_failed: bool = False) -> list[dict]:
    """Run what is not cached and return every run's record (cached ones included).

    Cached: OK, INVALID and OVER_BUDGET records, and FAILED ones whose `failure_cause` is the entry's
    (bench.results.is_cached); `retry_failed` trains those FAILED ones again, `force` everything.

    The executor trains (default: worker subprocesses here, `jobs` at a time; bench.executors has
    Ray's); whichever trained a run, its record is assembled and written here as soon as it finishes.

    With `one_seed_above` (`limit_seeds` says the rule), an entry's other seeds join the runs in
    flight as soon as its own seed 0 is recorded, not after every entry's seed 0: no core waits
    for the slowest entry.

    After each run the records and the board are compared with what the runner wrote (the second
    line of defence: a sandboxed entry cannot reach them at all). A change is blamed on a run only
    when that run was the only one in flight since the last comparison; when several were, the
    change is undone and each of them is trained again alone afterwards, so the one that made it is
    found and no neighbour pays for it.
    """
    sandboxed = sandbox.active(challenge.sandbox)  # `required` without bubblewrap stops here, before any work
    records: dict[int, dict] = {}
    now, waiting = limit_seeds(runs, one_seed_above)

    def not_cached(candidates: dict[int, Run]) -> dict[int, Run]:
        todo = {}
        for index, run in candidates.items():
            if not force and results.is_cached(run.path, run.key["hash"], retry_failed) and has_requested_monitor(run.path, extra_job):
                records[index] = results.read(run.path)
                log(f"cached  {run.label}")
            else:
                todo[index] = run
        return todo

    def then(finished: Run) -> dict[int, Run]:
        return not_cached(release_waiting(waiting, finished, one_seed_above))

    todo = not_cached(now)
    threads = worker_threads()
    protected = protected_files(challenge, log)
    suspects = _train_and_store(challenge, todo, executor or LocalExecutor(jobs), threads, log, extra_job or {},
                                protected, sandboxed, records, then)
    if suspects:
        log(f"training {len(suspects)} run(s) again one at a time to find which changed the records")
        _train_and_store(challenge, {i: todo[i] for i in sorted(suspects)}, LocalExecutor(1), threads, log, extra_job or {},
                         protected, sandboxed, records, then)
    return [records[i] for i in sorted(records)]


def _train_and_store(challenge, todo: dict[int, Run], executor, threads, log, extra_job, protected, sandboxed, records,
                     then) -> set[int]:
    """Train `todo` with `executor`, storing each record as it finishes; the runs to train again alone.

    `then(run)`, after each stored record, names runs to add: they join `todo`, which the executor
    keeps reading while it trains."""
    in_window: set[int] = set()  # runs in flight at some time since the last comparison
    running: set[int] = set()
    suspects: set[int] = set()

    def started(index):
        running.add(index)
        in_window.add(index)

    finishing = executor.train(challenge, todo, threads, log, extra_job, on_start=started)
    try:
        for index, partial, seconds in finishing:
            running.discard(index)
            window, in_window_now = set(in_window) | {index}, set(running)
            in_window.clear()
            in_window.update(in_window_now)
            changed = protected.restore(undo=not sandboxed)
            if changed and sandboxed:
                log(f"note: {len(changed)} file(s) under the records changed while sandboxed runs could not reach them "
                    f"(another program wrote there): {', '.join(changed[:3])}")
            elif changed and window != {index}:
                log(f"{len(changed)} protected file(s) changed while runs {', '.join(todo[i].label for i in sorted(window))} "
                    "were in flight; undone")
                suspects |= window
            elif changed:
                partial = {**containment.tampering(changed), "failure_cause": ENTRY_CAUSE}
            if index in suspects:
                continue
            records[index] = store(challenge, todo[index], partial, seconds, threads, log)
            protected.accept(todo[index].path)
            todo.update(then(todo[index]))
    except KeyboardInterrupt:
        log(f"interrupted: {len(records)} record(s) finished and kept")
        raise
    finally:
        # Ctrl-C may land in this loop's body rather than while the executor waits: closing it ends the runs in
        # flight then too (otherwise their threads would keep the interpreter alive until they finished).
        finishing.close()
    return suspects


def protected_files(challenge: config.Challenge, log=say) -> containment.ProtectedFiles:
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

    def train(self, challenge: config.Challenge, runs: dict[int, Run], threads: int, log, extra_job: dict, on_start=None):
        """Yield (index, partial record, seconds) for each of `runs` as it finishes; `on_start(index)` as each starts.

        Runs added to `runs` while this generator is paused at a yield are queued behind the others."""
        with concurrent.futures.ThreadPoolExecutor(max_workers=self.jobs) as pool:
            futures: dict[concurrent.futures.Future, int] = {}  # every run submitted, finished or not
            unfinished: set[concurrent.futures.Future] = set()

            def submit_new():
                submitted = set(futures.values())
                for index, run in list(runs.items()):
                    if index not in submitted:
                        future = pool.submit(timed_worker, challenge, run, threads, log, extra_job, on_start, index)
                        futures[future] = index
                        unfinished.add(future)

            try:
                submit_new()
                while unfinished:
                    done, _ = concurrent.futures.wait(unfinished, return_when=concurrent.futures.FIRST_COMPLETED)
                    for future in done:
                        unfinished.discard(future)
                        yield (futures[future], *future.result())
                        submit_new()
            except BaseException:  # Ctrl-C: say so at once, stop what is in flight (retried next time), start nothing more
                for future in futures:
                    future.cancel()
                if any(not future.done() for future in futures):
                    log("stopping: ending the runs in flight (they are trained again next time)")
                stop_live_processes()
                raise


# The contained processes of runs in flight, so an interrupted evaluation can end them at once.
_live: set = set()


def stop_live_processes() -> None:
    for process in list(_live):
        containment.end_session(process.pid)


def timed_worker(challenge: config.Challenge, run: Run, threads: int, log, extra_job: dict, on_start=None, index=None) -> tuple[dict, float]:
    if on_start is not None:
        on_start(index)
    log(f"start   {run.label}")
    started = time.perf_counter()
    partial = run_worker(challenge, run, threads, log, extra_job)
    return partial, time.perf_counter() - started


def store(challenge: config.Challenge, run: Run, partial: dict, seconds: float, threads: int | None, log=say) -> dict:
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
    if record["status"] != OK:
        record["failure_cause"] = failure_cause(partial)
    record = published(record)
    kept = same_failure(results.read(run.path), record)
    if kept:
        record = kept  # the record on disk (perhaps committed) already says this: a re-run does not rewrite it
    else:
        results.write(run.path, record)
    shown = f"test_accuracy={record['test_accuracy']:.4f}" if "test_accuracy" in record else record["message"].splitlines()[0] if record["message"] else ""
    log(f"{record['status']:<7} {run.label} {shown} ({record['wall_seconds']:.0f}s)")
    return record


def published(record: dict) -> dict:
    """`record` as it may be committed and shown: every text field bounded and without control characters (a
    carriage return or an escape sequence in a message could print a fake line for another entry), and, for a
    hidden test set, no per-image correctness (which test images a run got right would tell, run after run,
    the hidden labels): its `test_correct` keeps the number of images only, so scoring runs no paired test on it."""
    record = dict(record)
    for name, (limit, lines) in PUBLISHED_TEXT.items():
        if isinstance(record.get(name), str):
            record[name] = untrusted.clean_text(record[name], limit, lines)
    for name, (most, limit) in (("notes", (2 * MAX_NOTES, MAX_TEXT)), ("output_tail", (OUTPUT_TAIL_LINES, MAX_LINE_CHARS))):
        if isinstance(record.get(name), list):
            record[name] = [untrusted.clean_text(line, limit) for line in record[name][-most:]]
    if record.get("test_set") and isinstance(record.get("test_correct"), dict):
        record["test_correct"] = {"images": record["test_correct"].get("images")}
    return record


# The audit loads and runs a graph it has already checked; minutes are plenty even for 10,000 images (the board's
# took at most 30 s). It gets what the run's time_limit leaves after training, at least AUDIT_MIN_SECONDS (so a
# run that trained to its limit is still scored: the run may end that much past its limit) and at most AUDIT_TIME_LIMIT.
AUDIT_TIME_LIMIT = 600.0
AUDIT_MIN_SECONDS = 120.0


def audit_time_limit(time_limit: float, elapsed: float) -> float:
    """Seconds the audit may run when the run's stages so far took `elapsed` of its `time_limit` (seconds)."""
    return min(AUDIT_TIME_LIMIT, max(AUDIT_MIN_SECONDS, time_limit - elapsed))


# What the runner takes from the training process's claims (bench.train's result.json): never a count
# or an accuracy, which come from the audit and from the runner's own labels, and never the epochs, the
# validation history or the timings, which come from the runner's own validation answers (bench.validation).
CLAIMED_FIELDS = ("status", "message", "notes", "history", "monitor", "train_macs", "worker_seconds", "traceback", "engine")


def run_worker(challenge: config.Challenge, run: Run, threads: int | None, log, extra_job: dict) -> dict:
    """One run: train (untrusted, sandboxed), audit and predict (sandboxed), score here. Returns its partial record.

    Each stage is its own contained subprocess (bench.containment) inside bubblewrap when the
    challenge's sandbox mode has one (bench.sandbox); only this process holds the labels.
    """
    mode = extra_job.get("mode", "train")
    sandboxed = sandbox.active(challenge.sandbox)
    prepared = inputs(challenge, with_test=(mode == "train"))
    memory_mb = challenge.memory_limit_mb or containment.default_memory_limit_mb()
    with untrusted.temporary_folder("bench-") as workdir:  # removed without recursion, however deep the entry's output
        work = Path(workdir)
        job_dir, train_out, audit_out = work / "job", work / "train", work / "audit"
        for folder in (job_dir / "entry", train_out, audit_out):
            folder.mkdir(parents=True)
        problem = copy_entry(run.submission, job_dir / "entry")
        if problem:
            return {"status": FAILED, "message": problem, "sandbox": _sandbox_name(sandboxed)}
        # Inside the sandbox the job folder, the arrays and the output folder sit at fixed paths.
        at = (lambda inside, outside: inside if sandboxed else str(outside))
        job = {
            "mode": mode,
            "submission": at(f"{sandbox.INPUT}/entry/{run.submission.path.name}", job_dir / "entry" / run.submission.path.name),
            # Messages name the file as the person who ran bench sees it, not by the worker's path.
            "shown_as": shown_path(run.submission.path),
            "entry": run.submission.name,
            "seed": run.seed,
            "challenge": config.to_dict(dataclasses.replace(challenge, data_dir=None, test_set=None)),
            "num_classes": prepared.num_classes,
            "input": at(ARRAYS_INSIDE, prepared.folder),
            "output": at(sandbox.OUTPUT, train_out),
            "build_kwargs": run.build_kwargs,
            "eval_kwargs": run.eval_kwargs,
            "hyperparameters": run.hyperparameters,
            "threads": threads,
            **{k: v for k, v in extra_job.items() if k != "mode"},
        }
        # The validation labels stay here: this process answers each epoch's validation (check mode trains no epoch).
        served = validation.Served(validation.Harness(prepared.y_val, prepared.num_classes, challenge.max_epochs)) if mode == "train" else None
        job["validation"] = served.job_fields() if served else None
        mounts = {sandbox.INPUT: job_dir, ARRAYS_INSIDE: prepared.folder}
        try:
            (job_dir / "job.json").write_text(json.dumps(job))
            started = time.perf_counter()
            ended = contained(["-m", "bench.train", at(f"{sandbox.INPUT}/job.json", job_dir / "job.json")], mounts, train_out,
                              train.RESULT_FILE, sandboxed, challenge.time_limit, memory_mb, log, served)
            ended_at = time.perf_counter()
        finally:
            if served:
                served.close()
        if ended is not None:
            return {**_ended_early(ended, challenge.time_limit, memory_mb, "training"), "sandbox": _sandbox_name(sandboxed)}
        problem = untrusted_tree_problem(train_out)
        claims = read_result(train_out / train.RESULT_FILE) if problem is None else {"status": FAILED, "message": problem}
        measured = served.harness.record_fields(started, ended_at) if served else None
        claims = checked_claims({k: claims[k] for k in CLAIMED_FIELDS if k in claims}, challenge, extra_job, measured)
        if served and served.harness.problem:  # a request refused (past max_epochs, malformed): this run fails
            claims = {**claims, "status": FAILED, "message": served.harness.problem}
        # Wall seconds of each contained stage, start-up included (benchmarks/harness_overhead.py reads them).
        claims["stage_seconds"] = {"train": round(ended_at - started, 3)}
        claims["sandbox"] = _sandbox_name(sandboxed)
        if claims["status"] != OK:
            return {**claims, "failure_cause": training_failure_cause(claims)}
        if not ((train_out / train.KERAS_COPY).is_file() or (train_out / train.MODEL_DIR / "saved_model.pb").is_file()):
            return {**claims, "status": FAILED, "failure_cause": ENTRY_CAUSE, "message": "the training process reported success but "
                    "left no trained model: an entry must not remove or replace the harness's files"}
        images = {"val": prepared.val_images_file, **({"test": prepared.test_images_file} if mode == "train" else {})}
        audit_job = {
            "model": at(f"{sandbox.INPUT}/trained", work / "audit_job" / "trained"),
            "images": {name: at(f"{ARRAYS_INSIDE}/{Path(path).name}", path) for name, path in images.items()},
            "output": at(sandbox.OUTPUT, audit_out),
            "threads": threads,
            "allow_custom_code": challenge.allow_custom_code,
        }
        audit_dir = work / "audit_job"
        try:  # the audit sees the trained model and nothing else the entry wrote
            (audit_dir / "trained").mkdir(parents=True)
            if (train_out / train.KERAS_COPY).is_file():
                shutil.copyfile(train_out / train.KERAS_COPY, audit_dir / "trained" / train.KERAS_COPY)
            if (train_out / train.MODEL_DIR).is_dir():
                shutil.copytree(train_out / train.MODEL_DIR, audit_dir / "trained" / train.MODEL_DIR)
        except (OSError, shutil.Error) as error:
            return {**claims, "status": FAILED, "message": f"the trained model could not be copied for the audit: {error}"}
        (audit_dir / "job.json").write_text(json.dumps(audit_job))
        audit_limit = audit_time_limit(challenge.time_limit, time.perf_counter() - started)  # `started`: when training started
        started = time.perf_counter()
        ended = contained(["-m", "bench.audit", at(f"{sandbox.INPUT}/job.json", audit_dir / "job.json")],
                          {sandbox.INPUT: audit_dir, ARRAYS_INSIDE: prepared.images_folder}, audit_out, audit.RESULT_FILE, sandboxed, audit_limit, memory_mb, unshown)
        if ended is not None:
            return {**claims, **_ended_early(ended, audit_limit, memory_mb, "the audit of the exported model")}
        claims["stage_seconds"]["audit"] = round(time.perf_counter() - started, 3)
        audited = results.read(audit_out / audit.RESULT_FILE) or {"status": FAILED, "message": "the audit ended without a result"}
        return score(challenge, claims, audited, prepared, audit_out, mode)


def copy_entry(submission: Submission, folder: Path) -> str | None:
    """Copy the entry's file and its folder's helpers into `folder`, never following a link (a file swapped for
    one since discovery is refused, not read); why they cannot be copied, or None."""
    try:
        for source in (submission.path, *discover.helpers(submission.path.parent)):
            content = untrusted.read_regular(source)
            if source == submission.path and hashlib.sha256(content).hexdigest() != submission.file_hash:
                return f"{source} changed while the evaluation ran: run it again once the file stays as it is"
            (folder / source.name).write_bytes(content)
    except untrusted.Refused as error:
        return f"{error}; an entry and its helpers (_*.py) must be regular files"
    return None


def contained(module_argv: list[str], read_only: dict, output: Path, result_file: str, sandboxed: bool,
              time_limit: float, memory_mb: int | None, log, served: "validation.Served | None" = None) -> dict | None:
    """Run `python MODULE_ARGV` contained, in the sandbox when `sandboxed`, with `read_only` {inside: outside}
    folders and `output` writable, and `served`'s pipes inherited (bubblewrap keeps them) and answered while it
    runs. None when it ended by itself and left `output/result_file`;
    else {"limit": the limit it broke or None, "tail": its last lines, "returncode"}."""
    with untrusted.temporary_folder("bench-home-") as home:  # outside the sandbox, HOME and TMPDIR: the entry fills it
        env = worker_environment(home, sandboxed)
        argv = [sandbox.interpreter() if sandboxed else sys.executable, *module_argv]
        if sandboxed:
            argv = sandbox.command(argv, read_only, output, env=env, memory_mb=memory_mb)
            env = containment.environment(os.environ, home)
        process = subprocess.Popen(
            containment.command(argv, memory_mb),
            cwd=home,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # every process the entry starts is found, and ended, through its session
            pass_fds=served.child_fds if served else (),
        )
        if served:
            served.start()
        _live.add(process)
        tail: collections.deque[str] = collections.deque(maxlen=OUTPUT_TAIL_LINES)
        reader = threading.Thread(target=_drain, args=(process.stdout, tail, log), daemon=True)
        reader.start()
        try:
            # What it writes is counted while it runs: its output, and its HOME (the TMPDIR of a run outside the sandbox).
            broken = containment.watch(process, time_limit, memory_mb, written=(output, Path(home)))
        finally:  # however the run ends (Ctrl-C included), nothing it started outlives it
            containment.end_session(process.pid)
            if process.poll() is None:  # no sessions to end (Windows)
                process.kill()
            process.wait()
            _live.discard(process)
        reader.join(timeout=5)
    if broken is None and (output / result_file).exists():
        return None
    return {"limit": broken, "tail": list(tail), "returncode": process.returncode}


# The one stage whose own output a record may quote: training never sees a test image. Every other stage (the
# audit runs the entry's graph on the test images, and an op's error message can spell out their pixels) gets
# harness-written messages only.
QUOTED_STAGE = "training"


def _ended_early(ended: dict, time_limit: float, memory_mb: int | None, stage: str) -> dict:
    """The partial record of a stage that a limit stopped or that died before writing its result.

    Only the QUOTED_STAGE's output is quoted (its last line, its last progress, its tail); of any other stage
    the message says what ended it (time, memory, exit code or signal) and nothing it printed."""
    if stage != QUOTED_STAGE:
        return _ended_unquoted(ended, time_limit, memory_mb, stage)
    tail = ended["tail"]
    if ended["limit"] == containment.TIME:
        last = next((line for line in reversed(tail) if line.startswith(PROGRESS_PREFIX)), "")
        return {"status": TIMEOUT, "message": f"{stage} ran longer than the time limit of {time_limit:.0f} s"
                + (f" (last progress: {last[len(PROGRESS_PREFIX):].strip()})" if last else "")
                + "; train fewer epochs (TRAINING['epochs']) or a smaller model"}
    if ended["limit"]:  # memory depends on the machine (the default limit is half of it); processes and files on the entry
        return {"status": FAILED, "message": containment.explain(ended["limit"], memory_mb),
                "failure_cause": OUTSIDE_CAUSE if ended["limit"] == containment.MEMORY else ENTRY_CAUSE}
    own_lines = [line for line in tail if not line.startswith(PROGRESS_PREFIX)]
    said = [line for line in own_lines if line.strip() and not TENSORFLOW_LOG.match(line)]
    code = ended["returncode"]
    how = f"killed by signal {signal.Signals(-code).name}" if code < 0 else f"exit code {code}"
    out_of_memory = any(word in line for line in own_lines for word in MEMORY_ERRORS)
    error = traceback_error(said)  # any other last line (a library's stray "Fontconfig error") is not the cause
    if out_of_memory:
        why = f"; it ran out of memory: {containment.memory_hint(memory_mb)}"
    elif code < 0:
        why = "; something outside it (the system, short of memory) or a crash in native code ended it"
    else:
        why = ("; the process exited before it wrote its result: an exit(), sys.exit() or os._exit() in the entry ends it "
               "there (return from your functions instead)")
    # An exit the process chose is the file's doing, and the same next time; a signal or lack of memory is the machine's.
    cause = ENTRY_CAUSE if code >= 0 and not out_of_memory else OUTSIDE_CAUSE
    return {"status": FAILED, "message": f"{stage} ended without a result ({how})" + (f": {error}" if error else "") + why,
            "output_tail": own_lines, "failure_cause": cause}


# The last line of a Python traceback: the exception's (dotted) name, then its message.
EXCEPTION_LINE = re.compile(r"^[A-Za-z_][\w.]*(: |$)")


def traceback_error(lines: list[str]) -> str | None:
    """The error line a Python traceback ends with, when that traceback is the last thing in `lines`; else None."""
    if len(lines) < 2 or not any(line.startswith("Traceback (most recent call last):") for line in lines):
        return None
    last, before = lines[-1], lines[-2]
    return last if EXCEPTION_LINE.match(last) and before[:1].isspace() else None


# A training stage's own FAILED report that the machine decides, not the file: memory ran out (MEMORY_ERRORS), or
# the runner, on a loaded machine, answered a validation too late.
LATE_ANSWER = "the harness did not answer the validation in time"


def training_failure_cause(claims: dict) -> str:
    """Whose doing the training stage's not-OK outcome is: ENTRY_CAUSE (its file's code raised, it broke the
    protocol, it wrote the harness's files: the same file fails the same way again), or OUTSIDE_CAUSE."""
    if claims["status"] != FAILED:
        return ENTRY_CAUSE
    said = f"{claims.get('message', '')}\n{claims.get('traceback', '')}"
    return OUTSIDE_CAUSE if any(words in said for words in (*MEMORY_ERRORS, LATE_ANSWER)) else ENTRY_CAUSE


def failure_cause(partial: dict) -> str:
    """A not-OK run's `failure_cause`: ENTRY_CAUSE when the file alone decides it (INVALID, OVER_BUDGET, and a
    FAILED that the stage which saw it marked as the entry's), cached like INVALID until the file changes;
    else OUTSIDE_CAUSE (TIMEOUT, memory, a killed worker, a lost Ray task, an audit that crashed), retried."""
    if partial.get("status") in (INVALID, OVER_BUDGET):
        return ENTRY_CAUSE
    if partial.get("status") == FAILED and partial.get("failure_cause") == ENTRY_CAUSE:
        return ENTRY_CAUSE
    return OUTSIDE_CAUSE


# What a record says that a re-run with the same outcome says again (its times and dates differ).
FAILURE_FIELDS = ("status", "message", "failure_cause")


def same_failure(previous: dict | None, record: dict) -> dict | None:
    """`previous`, the record on disk, when `record` is the same failure under the same cache key; else None."""
    if not previous or record["status"] == OK or previous.get("key", {}).get("hash") != record["key"]["hash"]:
        return None
    return previous if all(previous.get(name) == record.get(name) for name in FAILURE_FIELDS) else None


def _ended_unquoted(ended: dict, time_limit: float, memory_mb: int | None, stage: str) -> dict:
    if ended["limit"] == containment.TIME:
        return {"status": TIMEOUT, "message": f"{stage} ran longer than its time limit of {time_limit:.0f} s: "
                "make the model cheaper to run (fewer or smaller layers)"}
    if ended["limit"]:
        return {"status": FAILED, "message": containment.explain(ended["limit"], memory_mb)}
    code = ended["returncode"]
    how = f"killed by signal {signal.Signals(-code).name}" if code < 0 else f"exit code {code}"
    return {"status": FAILED, "message": f"{stage} ended without a result ({how}): the model crashed or exhausted "
            f"memory while it predicted (its output is not shown, since it ran on the test images); try the entry "
            f"with `python -m bench check`; if it ran out of memory, stay within {containment.memory_hint(memory_mb)}"}


def score(challenge: config.Challenge, claims: dict, audited: dict, prepared: "Inputs", audit_out: Path, mode: str) -> dict:
    """The run's partial record: the training claims, the audit's counts, and accuracies from the labels held here."""
    if audited.get("status") != OK:
        return {**claims, "status": audited.get("status", FAILED), "message": audited.get("message", "")}
    record = {**claims, "notes": [*claims.get("notes", []), *audited.get("notes", [])], "audit_path": audited.get("path")}
    for name in ("total_params", "trainable_params", "nonzero_params", "weight_tensors", "embedded_constants", "macs", "macs_nonzero",
                 "macs_lower_bound"):
        record[name] = audited.get(name)
    if record["total_params"] > challenge.max_params:
        return {**record, "status": OVER_BUDGET, "message": train.over_budget_message(record["total_params"], challenge.max_params)}
    labels = {"val": prepared.y_val, **({"test": prepared.y_test} if mode == "train" else {})}
    digest = hashlib.sha256()
    for name, truth in labels.items():
        predictions = np.load(audit_out / f"{name}_predictions.npy", allow_pickle=False)
        if predictions.shape != truth.shape:
            return {**record, "status": FAILED, "message": f"the audit returned {predictions.shape} predictions for {truth.shape} {name} images"}
        digest.update(f"{name} {predictions.size};".encode() + predictions.astype("<i8").tobytes())
        record[f"{name}_accuracy"] = float(np.mean(predictions == truth))
        if name == "test":  # which test images this run got right, for the paired tests between entries (bench.scoring)
            record["test_correct"] = scoring.pack_correct(predictions == truth)
    # The audited predictions' fingerprint, computed here and never claimed: seeds with equal ones trained the same
    # model, which the board flags (bench.leaderboard: the entry sets its own seed).
    record["predictions_sha256"] = digest.hexdigest()
    if mode == "check":
        how = "rebuilt from Keras's layers" if record["audit_path"] == audit.REBUILT else f"audited as {record['audit_path']}"
        record["message"] = f"check passed: imports, builds, output shape, one training step, saved, {how}"
    elif prepared.test_set:
        record["test_set"] = prepared.test_set
    return record


def _sandbox_name(sandboxed: bool) -> str:
    return "bubblewrap" if sandboxed else "none"


# The shared arrays sit here inside the sandbox.
ARRAYS_INSIDE = "/data"


@dataclasses.dataclass
class Inputs:
    """What one evaluation gives its runs: arrays on disk, in a folder every sandbox sees read-only, and
    the labels, which stay in this process. `x_fit/y_fit/x_val.npy` go to training (the validation images
    without their labels: this process answers validations, bench.validation); `val_images.npy` and
    `test_images.npy` (images only) to the audit."""

    folder: Path  # training's arrays: x_fit, y_fit, x_val
    images_folder: Path  # the audit's: val_images, test_images (never mounted where training runs)
    num_classes: int
    y_val: np.ndarray
    y_test: np.ndarray | None
    test_set: str | None  # the hidden test set's description, None for the dataset's own split

    @property
    def val_images_file(self) -> Path:
        return self.images_folder / "val_images.npy"

    @property
    def test_images_file(self) -> Path:
        return self.images_folder / "test_images.npy"


_INPUTS: dict = {}


def inputs(challenge: config.Challenge, with_test: bool = True) -> Inputs:
    """The arrays of `challenge`'s dataset and validation split, written once per process and reused by every run.

    Raises data.DataError (no dataset, a validation size that does not fit) and config.ConfigError (a bad hidden test set).
    """
    key = (challenge.dataset, absolute_paths(challenge).data_dir, challenge.train_limit, challenge.test_limit,
           challenge.validation_size, challenge.test_set if with_test else None, with_test)
    if key in _INPUTS:
        return _INPUTS[key]
    dataset = data.load(challenge.dataset, challenge.data_dir, challenge.train_limit, challenge.test_limit)
    (x_fit, y_fit), (x_val, y_val) = data.split_validation(dataset.x_train, dataset.y_train, challenge.validation_size)
    hidden = None
    if with_test and challenge.test_set:
        from bench import classroom

        hidden = classroom.hidden_test_set(challenge)
    folder, images_folder = (Path(tempfile.mkdtemp(prefix=prefix)) for prefix in ("bench-arrays-", "bench-images-"))
    for made in (folder, images_folder):
        atexit.register(shutil.rmtree, made, True)
        made.chmod(0o700)  # readable by the account a sandbox runs as (the same one), and by nobody else
    for name, array in (("x_fit", x_fit), ("y_fit", y_fit), ("x_val", x_val)):
        np.save(folder / f"{name}.npy", array)
    np.save(images_folder / "val_images.npy", x_val)
    if with_test:
        np.save(images_folder / "test_images.npy", hidden.images if hidden else dataset.x_test)
    _INPUTS[key] = prepared = Inputs(folder, images_folder, dataset.num_classes, y_val,
                                     (hidden.labels if hidden else dataset.y_test) if with_test else None,
                                     hidden.description if hidden else None)
    return prepared


def discard_inputs() -> None:
    """Remove the folders `inputs` wrote in this process and forget them. For processes that end without
    running atexit: Ray kills its worker processes at ray.shutdown(), which would leave the dataset in the
    temporary folder of every node."""
    for prepared in _INPUTS.values():
        for folder in (prepared.folder, prepared.images_folder):
            shutil.rmtree(folder, True)
    _INPUTS.clear()


# The worker's result file holds a few numbers and a short history; anything far larger is not one.
MAX_RESULT_BYTES = 64 * 2**20
# The training stage's whole output folder (the SavedModel, a .keras copy, the result): a model within any
# budget is far smaller; a bigger folder is an entry filling the disk.
MAX_OUTPUT_BYTES = 2 * 2**30
MAX_NOTES, MAX_TEXT = 20, 4000
# The text fields a record holds from the entry (its file's summary and AUTHOR, the training stage's messages), as
# `published` bounds them: {field: (most characters, whether newlines stay)}. `notes` and `output_tail` are lists of lines.
PUBLISHED_TEXT = {"message": (MAX_TEXT, True), "traceback": (5 * MAX_TEXT, True), "summary": (1000, False), "author": (200, False)}


# An export is a few files a few folders deep (model/variables/variables.index); far more is an entry's doing.
MAX_OUTPUT_DEPTH, MAX_OUTPUT_ENTRIES = 16, 10_000


def untrusted_tree_problem(root: Path) -> str | None:
    """Why the folder an entry could write is not safe to read (None when it is): only plain files and
    folders (no links, devices or pipes, which a copy or a read would follow), within MAX_OUTPUT_DEPTH levels,
    MAX_OUTPUT_ENTRIES files and folders and MAX_OUTPUT_BYTES. Walked iteratively: no depth ends the runner."""
    size = 0
    try:
        for relative, info in untrusted.walk(root, MAX_OUTPUT_DEPTH, MAX_OUTPUT_ENTRIES):
            if not (stat.S_ISREG(info.st_mode) or stat.S_ISDIR(info.st_mode)):
                return (f"the training process left {relative}, which is {untrusted.kind(info.st_mode)}, not a plain "
                        "file or folder: an entry must not write links, devices or pipes into the output")
            size += info.st_size
            if size > MAX_OUTPUT_BYTES:
                return f"the training process left over {MAX_OUTPUT_BYTES:,} bytes of output: an entry must not fill the disk"
    except untrusted.Refused as error:
        return f"the training process left {error} in its output: an entry must only export its model there"
    return None


# The worker's own timing claim (bench.train.main): at most these keys, each at most the training stage's wall time.
WORKER_SECONDS = ("tensorflow_import", "after_import")


def checked_claims(claims: dict, challenge: config.Challenge, extra_job: dict, measured: dict | None = None) -> dict:
    """The worker's claims cut to what an honest worker writes: the entry runs in that process and may
    forge its result file, and whatever it claims is shown on the board (never scored from).

    `measured` (bench.validation.Harness.record_fields) is what this process answered and timed: `epochs`, the
    history's val_loss and val_accuracy, `train_seconds` and `export_seconds` come from it alone (none without
    it: check mode trains no epoch), and the claimed history keeps at most one number per answered epoch."""
    epochs = challenge.max_epochs + 1
    problems = []
    history = claims.get("history", {})
    if not (isinstance(history, dict) and len(history) <= 32 and all(
            isinstance(values, list) and len(values) <= epochs and all(v is None or (isinstance(v, (int, float)) and not isinstance(v, bool)) for v in values)
            for values in history.values())):
        problems.append("history")
    notes = claims.get("notes", [])
    if not (isinstance(notes, list) and len(notes) <= MAX_NOTES and all(isinstance(n, str) and len(n) <= MAX_TEXT for n in notes)):
        problems.append("notes")
    for name in ("message", "traceback"):
        if name in claims and not (isinstance(claims[name], str) and len(claims[name]) <= 5 * MAX_TEXT):
            problems.append(name)
    if "monitor" in claims and not monitor.well_formed(claims["monitor"], extra_job.get("monitor")):
        problems.append("monitor")
    if "engine" in claims and claims["engine"] not in ENGINES:
        problems.append("engine")
    worker_seconds = claims.get("worker_seconds", {})
    if not (isinstance(worker_seconds, dict) and set(worker_seconds) <= set(WORKER_SECONDS) and all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and v >= 0 for v in worker_seconds.values())):
        problems.append("worker_seconds")
    if problems:
        return {"status": FAILED, "message": f"the training process's result has malformed {', '.join(problems)}: "
                "an entry must not write the harness's files"}
    return with_measured(claims, measured)


def with_measured(claims: dict, measured: dict | None) -> dict:
    """`claims` (checked) with the epochs, validation history and timings this process measured in place of any claimed."""
    claims = {k: v for k, v in claims.items() if k not in ("epochs", "train_seconds", "export_seconds")}
    history = {k: v for k, v in claims.pop("history", {}).items() if not k.startswith("val_")}
    if measured is None or not (measured["epochs"] or claims.get("status") == OK):
        return {**claims, **({"history": history} if history else {})}
    answered = measured["epochs"]
    if not answered:  # every honest run trains at least one epoch, and each epoch asks for its validation
        return {**claims, "status": FAILED, "message": "the training process reported success without asking the harness "
                "for any validation: an entry must let the harness's callbacks run (no fit call of its own)"}
    stage = measured["train_seconds"] + measured["export_seconds"]
    if "worker_seconds" in claims:  # a claim, shown as one: never more than the stage the harness timed
        claims["worker_seconds"] = {k: round(min(v, stage), 3) for k, v in claims["worker_seconds"].items()}
    return {**claims, "epochs": answered, "train_seconds": measured["train_seconds"], "export_seconds": measured["export_seconds"],
            "history": {**{k: v[:answered] for k, v in history.items()}, **measured["history"]}}
NUMBER_FIELDS = ("train_macs",)


def _not_a_number(token: str):
    raise ValueError(f"{token} is not a number strict JSON allows")


def read_result(path: Path) -> dict:
    """The worker's partial record, checked: the entry runs in that process and may write the file itself,
    and a malformed one must fail its own run, not the evaluation."""
    try:
        if path.stat().st_size > MAX_RESULT_BYTES:
            raise ValueError(f"{path.stat().st_size:,} bytes")
        partial = json.loads(path.read_text(), parse_constant=_not_a_number)
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


def unshown(line: str) -> None:
    """The log of a stage whose output nobody may see (the audit's: it ran on the test images)."""


def _drain(stream, tail, log):
    """Keep the last lines of `stream` in `tail` and `log` its progress lines, each bounded and cleaned of control
    characters: a carriage return or an escape sequence cannot rewrite the terminal line above it."""
    logged = 0
    rest_of_long_line = False
    for raw in iter(lambda: stream.readline(MAX_LINE_CHARS), b""):
        if not rest_of_long_line:
            line = untrusted.clean_text(raw.decode("utf-8", "replace").rstrip(), MAX_LINE_CHARS)
            tail.append(line)
            if line.startswith(PROGRESS_PREFIX) and logged < MAX_LOGGED_LINES:
                logged += 1
                log(line if logged < MAX_LOGGED_LINES else f"{PROGRESS_PREFIX} (further output of this run is not shown)")
        rest_of_long_line = not raw.endswith(b"\n")
    stream.close()


def worker_environment(workdir: str | Path, sandboxed: bool = False) -> dict:
    """The allowed variables only (bench.containment.ALLOWED_ENV), HOME and TMPDIR inside `workdir`
    (inside the sandbox's private /tmp when `sandboxed`)."""
    env = containment.environment(os.environ, workdir)
    if sandboxed:
        env.update(HOME=sandbox.HOME, TMPDIR="/tmp", KERAS_HOME=f"{sandbox.HOME}/.keras")
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    env["PYTHONUNBUFFERED"] = "1"
    # The worker runs in a temporary folder: make this copy of bench importable from there.
    package_root = str(Path(bench.__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
    return env


def absolute_paths(challenge: config.Challenge) -> config.Challenge:
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
    for name, dists in (("tensorflow", ("tensorflow", "tensorflow-cpu")), ("keras", ("keras",)), ("jax", ("jax",))):
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
