"""Run entries: check the cache, train what is not cached (bench.stages), store each record as it finishes.

Each run gets a fresh TensorFlow in its own processes, so a crash, a leak or a hang stays there.
Runs finish one by one and each record is written as soon as it exists: an interrupted
evaluation keeps everything that finished.
"""

from __future__ import annotations

import concurrent.futures
import datetime
import importlib.metadata
import os
import platform
import sys
import threading
import time
from pathlib import Path


import bench
from bench import config, containment, results, sandbox, untrusted
from bench.arrays import inputs
from bench.received import MAX_NOTES, MAX_TEXT, PUBLISHED_TEXT
from bench.plan import Run, limit_seeds, release_waiting
from bench.score import failure_cause, gave_up_message, outside_failures, same_failure
from bench.stages import MAX_LINE_CHARS, OUTPUT_TAIL_LINES, run_worker, stop_live_processes
from bench.status import ENTRY_CAUSE, MAX_OUTSIDE_FAILURES, OK, OUTSIDE_CAUSE

# TensorFlow threads per run (default 1). Fixed per run rather than shared out among --jobs: the
# thread count changes how TensorFlow splits its sums, and so the last bits of a record, and a
# record must not depend on how many entries ran beside it or on the machine's core count.
THREADS_ENV = "BENCH_THREADS"


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
        "dataset": challenge.board_name,
        "data": inputs(challenge).about,  # prepared before any run (cli.prepare), so read from this process's cache
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
        if record["failure_cause"] == OUTSIDE_CAUSE:  # retried, up to MAX_OUTSIDE_FAILURES times in a row
            record["outside_failures"] = outside_failures(results.read(run.path), record)
            if record["outside_failures"] >= MAX_OUTSIDE_FAILURES:
                record["message"] = gave_up_message(record.get("message") or "")
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


def versions() -> dict:
    """The software and CPU a record was made with. `cpu` is the CPU's marketing name, which a virtual machine may
    cut short ("AMD EPYC"); `cpu_model` ("family 25 model 17 stepping 1") and `cpu_isa` (the widest vector
    instructions: avx512, avx2 or older) tell two CPUs of one name apart, since the same seed gives the same record
    on one machine but not always on another (README, "Records")."""
    found = {"python": platform.python_version(), "bench": bench.__version__, **_cpu()}
    for name, dists in (("tensorflow", ("tensorflow", "tensorflow-cpu")), ("keras", ("keras",)), ("jax", ("jax",))):
        for dist in dists:
            try:
                found[name] = importlib.metadata.version(dist)
                break
            except importlib.metadata.PackageNotFoundError:
                continue
    return found


def _cpu() -> dict:
    fields = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if not key.strip():
                break  # the first core's block ends; the others repeat it
            fields.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    flags = set(fields.get("flags", "").split())
    found = {"cpu": fields.get("model name") or platform.processor() or platform.machine()}
    if "cpu family" in fields:
        found["cpu_model"] = f"family {fields['cpu family']} model {fields.get('model')} stepping {fields.get('stepping')}"
    if flags:
        found["cpu_isa"] = "avx512" if "avx512f" in flags else "avx2" if "avx2" in flags else "older than avx2"
    return found
