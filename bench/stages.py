"""The contained stages of one run: sandboxed training, then rebuild, audit and predict, each its own process.

`run_worker` copies the entry's files (never following a link), starts bench.train in the sandbox and answers
its validations (bench.validation), reads its claims (bench.received), starts bench.audit on the trained model
alone, and hands both to bench.score. Each stage runs through `contained`: bubblewrap when the challenge's
sandbox mode has it, the limits of bench.containment, its output drained line by line with a bound. Only
the training stage's own output may be quoted in a record (it never sees a test image).
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path


import bench
from bench import audit, config, containment, discover, results, sandbox, train, untrusted, validation
from bench.received import CLAIMED_FIELDS, checked_claims, read_result, untrusted_tree_problem
from bench.discover import Submission
from bench.arrays import ARRAYS_INSIDE, inputs
from bench.plan import Run
from bench.score import score
from bench.status import ENTRY_CAUSE, FAILED, OK, OUTSIDE_CAUSE, TIMEOUT
from bench.train import PROGRESS_PREFIX

# Lines of a worker's own output kept to explain a crash; the rest is drained and dropped, and lines are cut
# at MAX_LINE_CHARS, so a submission that prints gigabytes (in one line or many) cannot fill memory. None of it
# reaches the terminal: the progress lines there are the runner's own, one per validation it answers.
OUTPUT_TAIL_LINES = 40
MAX_LINE_CHARS = 2000


# The contained processes of runs in flight, so an interrupted evaluation can end them at once.
_live: set = set()


def stop_live_processes() -> None:
    for process in list(_live):
        containment.end_session(process.pid)


# The audit loads and runs a graph it has already checked; minutes are plenty even for 10,000 images (the board's
# took at most 30 s). It gets what the run's time_limit leaves after training, at least AUDIT_MIN_SECONDS (so a
# run that trained to its limit is still scored: the run may end that much past its limit) and at most AUDIT_TIME_LIMIT.
AUDIT_TIME_LIMIT = 600.0
AUDIT_MIN_SECONDS = 120.0


def audit_time_limit(time_limit: float, elapsed: float) -> float:
    """Seconds the audit may run when the run's stages so far took `elapsed` of its `time_limit` (seconds)."""
    return min(AUDIT_TIME_LIMIT, max(AUDIT_MIN_SECONDS, time_limit - elapsed))


def run_worker(challenge: config.Challenge, run: Run, threads: int | None, log, extra_job: dict, progress=None,
               early_audit: bool = False) -> dict:
    """One run: train (untrusted, sandboxed), audit and predict (sandboxed), score here. Returns its partial record.

    Each stage is its own contained subprocess (bench.containment) inside bubblewrap when the
    challenge's sandbox mode has one (bench.sandbox); only this process holds the labels.
    `progress(text)`, when given, is told as each stage starts. `early_audit` (check mode only): start the audit's
    process beside the training step, so its TensorFlow start-up overlaps training's; thrown away if training fails.
    """
    progress = progress or (lambda text: None)
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
        auditing = AuditStage(work / "audit_job", prepared.images_folder, audit_out, sandboxed, memory_mb, at)
        if mode == "check" and early_audit:
            # The bound covers its wait for training (which stops at time_limit) and the audit's own time after it.
            auditing.start(challenge.time_limit + AUDIT_TIME_LIMIT)
        try:
            progress(("training" if mode == "train" else "importing, building and taking one training step") + (" in the sandbox" if sandboxed else ""))
            record = _train_then_audit(challenge, run, threads, log, extra_job, mode, sandboxed, prepared, memory_mb,
                                       job_dir, train_out, at, auditing, progress)
        except BaseException:  # Ctrl-C: the audit's process ends with this one, nobody waits for it
            auditing.cancel(wait=False)
            raise
        auditing.cancel()
        return record


def _train_then_audit(challenge, run, threads, log, extra_job, mode, sandboxed, prepared, memory_mb, job_dir, train_out, at,
                      auditing: "AuditStage", progress) -> dict:
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
    served = None
    if mode == "train":
        served = validation.Served(validation.Harness(prepared.y_val, prepared.num_classes, challenge.max_epochs,
                                                      on_answer=progress_line(run, challenge.max_epochs, log)))
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
        "model": at(f"{sandbox.INPUT}/trained", auditing.folder / "trained"),
        "images": {name: at(f"{ARRAYS_INSIDE}/{Path(path).name}", path) for name, path in images.items()},
        "output": at(sandbox.OUTPUT, auditing.output),
        "threads": threads,
        "allow_custom_code": challenge.allow_custom_code,
    }
    try:  # the audit sees the trained model and nothing else the entry wrote
        (auditing.folder / "trained").mkdir(parents=True)
        if (train_out / train.KERAS_COPY).is_file():
            shutil.copyfile(train_out / train.KERAS_COPY, auditing.folder / "trained" / train.KERAS_COPY)
        if (train_out / train.MODEL_DIR).is_dir():
            shutil.copytree(train_out / train.MODEL_DIR, auditing.folder / "trained" / train.MODEL_DIR)
    except (OSError, shutil.Error) as error:
        return {**claims, "status": FAILED, "message": f"the trained model could not be copied for the audit: {error}"}
    progress("auditing the exported model" + (" in the sandbox" if sandboxed else ""))
    audit_limit = audit_time_limit(challenge.time_limit, time.perf_counter() - started)  # `started`: when training started
    started = time.perf_counter()
    if not auditing.started:
        auditing.start(audit_limit)
    ended = auditing.finish(audit_job, audit_limit)
    if ended is not None:
        return {**claims, **_ended_early(ended, audit_limit, memory_mb, "the audit of the exported model")}
    claims["stage_seconds"]["audit"] = round(time.perf_counter() - started, 3)
    audited = results.read(auditing.output / audit.RESULT_FILE) or {"status": FAILED, "message": "the audit ended without a result"}
    return score(challenge, claims, audited, prepared, auditing.output, mode)


class AuditStage:
    """The contained bench.audit process of one run. It imports TensorFlow, then waits for its job file, so it may
    start before training ends: `check` starts it first, its start-up overlapping the training step's, while an
    evaluation starts it after training (an idle process beside hours of training would only hold memory)."""

    def __init__(self, folder: Path, images_folder: Path, output: Path, sandboxed: bool, memory_mb: int | None, at):
        self.folder, self.output = folder, output
        self.folder.mkdir(parents=True)
        self.argv = ["-m", "bench.audit", at(f"{sandbox.INPUT}/job.json", folder / "job.json")]
        self.mounts = {sandbox.INPUT: folder, ARRAYS_INSIDE: images_folder}
        self.sandboxed, self.memory_mb = sandboxed, memory_mb
        self.started, self.job_written = False, False
        self.ended, self.error = None, None
        self.thread, self.process = None, None

    def start(self, time_limit: float) -> None:
        self.started = True
        self.thread = threading.Thread(target=self._run, args=(time_limit,), daemon=True)
        self.thread.start()

    def _run(self, time_limit: float) -> None:
        try:
            self.ended = contained(self.argv, self.mounts, self.output, audit.RESULT_FILE, self.sandboxed, time_limit,
                                   self.memory_mb, unshown, on_start=self._started)
        except BaseException as error:  # raised again in the thread that waits for the stage
            self.error = error

    def _started(self, process) -> None:
        self.process = process

    def finish(self, job: dict, time_limit: float) -> dict | None:
        """Hand the audit its job and wait for it, `time_limit` seconds at most from now (a process started early
        has a bound that covers training too): what `contained` says of how it ended."""
        self._write_job(job)
        self.thread.join(timeout=time_limit)
        if self.thread.is_alive():
            containment.end_session(self.process.pid)
            self.thread.join()
            return {"limit": containment.TIME, "tail": [], "returncode": self.process.returncode}
        if self.error is not None:
            raise self.error
        return self.ended

    def cancel(self, wait: bool = True) -> None:
        """End a started audit that got no job (training failed, or was interrupted): it exits without a result."""
        if self.started and not self.job_written:
            self._write_job({"cancelled": True})
            if wait:
                self.thread.join()

    def _write_job(self, job: dict) -> None:
        # Whole or absent: the waiting process reads the file as soon as it exists.
        tmp = self.folder / "job.json.tmp"
        tmp.write_text(json.dumps(job))
        os.replace(tmp, self.folder / "job.json")
        self.job_written = True


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
              time_limit: float, memory_mb: int | None, log, served: "validation.Served | None" = None,
              on_start=None) -> dict | None:
    """Run `python MODULE_ARGV` contained, in the sandbox when `sandboxed`, with `read_only` {inside: outside}
    folders and `output` writable, and `served`'s pipes inherited (bubblewrap keeps them) and answered while it
    runs; `on_start(process)` once it started. None when it ended by itself and left `output/result_file`;
    else {"limit": the limit it broke or None, "tail": its last lines, "returncode"}."""
    with untrusted.temporary_folder("bench-home-") as home:  # outside the sandbox, HOME and TMPDIR: the entry fills it
        env = worker_environment(home, sandboxed)
        argv = [sandbox.interpreter() if sandboxed else sys.executable, *module_argv]
        if sandboxed:
            argv = sandbox.command(containment.inside_sandbox(argv), read_only, output, env=env, memory_mb=memory_mb)
            env = containment.environment(os.environ, home)
        process = subprocess.Popen(
            containment.command(argv, memory_mb, threads_inside=sandboxed),
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
        if on_start:
            on_start(process)
        _live.add(process)
        tail: collections.deque[str] = collections.deque(maxlen=OUTPUT_TAIL_LINES)
        reader = threading.Thread(target=_drain, args=(process.stdout, tail), daemon=True)
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
    how = f"killed by signal {signal_name(-code)}" if code < 0 else f"exit code {code}"
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


def signal_name(number: int) -> str:
    """SIGKILL for 9; the number alone for a real-time signal between SIGRTMIN and SIGRTMAX, which signal.Signals does
    not name (an entry that killed itself with signal 40 outside the sandbox crashed the whole evaluation here)."""
    try:
        return signal.Signals(number).name
    except ValueError:
        return str(number)


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


def _ended_unquoted(ended: dict, time_limit: float, memory_mb: int | None, stage: str) -> dict:
    if ended["limit"] == containment.TIME:
        return {"status": TIMEOUT, "message": f"{stage} ran longer than its time limit of {time_limit:.0f} s: "
                "make the model cheaper to run (fewer or smaller layers)"}
    if ended["limit"]:
        return {"status": FAILED, "message": containment.explain(ended["limit"], memory_mb)}
    code = ended["returncode"]
    how = f"killed by signal {signal_name(-code)}" if code < 0 else f"exit code {code}"
    return {"status": FAILED, "message": f"{stage} ended without a result ({how}): the model crashed or exhausted "
            f"memory while it predicted (its output is not shown, since it ran on the test images); try the entry "
            f"with `python -m bench check`; if it ran out of memory, stay within {containment.memory_hint(memory_mb)}"}


def _sandbox_name(sandboxed: bool) -> str:
    return "bubblewrap" if sandboxed else "none"


# How Python, TensorFlow and C++ say that an allocation failed.
MEMORY_ERRORS = ("MemoryError", "ResourceExhaustedError", "std::bad_alloc", "OOM when allocating")
# TensorFlow's own informational lines ("I0000 00:00:... port.cc:153] oneDNN ...", absl's notice
# before its logging starts): never the explanation.
TENSORFLOW_LOG = re.compile(r"[IW]\d{4} |WARNING: All log messages before absl::InitializeLog")


def unshown(line: str) -> None:
    """The log of a stage whose output nobody may see (the audit's: it ran on the test images)."""


def _drain(stream, tail):
    """Keep the last lines of `stream` in `tail`, each bounded and cleaned of control characters, and drop the rest.
    Nothing of it is printed: a line the entry prints (even one that reads like the harness's) stays its own."""
    rest_of_long_line = False
    for raw in iter(lambda: stream.readline(MAX_LINE_CHARS), b""):
        if not rest_of_long_line:
            tail.append(untrusted.clean_text(raw.decode("utf-8", "replace").rstrip(), MAX_LINE_CHARS))
        rest_of_long_line = not raw.endswith(b"\n")
    stream.close()


def progress_line(run, max_epochs: int, log):
    """What the runner prints as it answers a run's validation (bench.validation.Harness's `on_answer`): the
    epoch, and the val_loss and val_accuracy it computed itself, with the seconds since the run started."""
    started = time.perf_counter()

    def said(answer) -> None:
        log(f"{PROGRESS_PREFIX} {run.label}: epoch {answer.epoch + 1}/{max_epochs} val_loss={answer.val_loss:.4f} "
            f"val_accuracy={answer.val_accuracy:.4f} {time.perf_counter() - started:.0f}s")

    return said


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


def shown_path(path: Path) -> str:
    """`submissions/x.py` for a file under the working directory, the absolute path otherwise."""
    resolved = Path(path).resolve()
    try:
        return str(resolved.relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(resolved)
