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
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import bench
from bench import config, data, results
from bench.discover import Submission
from bench.train import FAILED, INVALID, PROGRESS_PREFIX, TIMEOUT

# Lines of a worker's own output kept to explain a crash; the rest is drained and dropped,
# so a submission that prints gigabytes cannot fill memory or the terminal.
OUTPUT_TAIL_LINES = 40
MAX_LINE_CHARS = 2000
# Overrides the threads each worker may use (default: the cores shared out among --jobs).
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


def execute(challenge: config.Challenge, runs: list[Run], force: bool = False, jobs: int = 1,
            log=print, extra_job: dict | None = None) -> list[dict]:
    """Run what is not cached, `jobs` at a time; return every run's record (cached ones included)."""
    records: dict[int, dict] = {}
    todo = []
    for index, run in enumerate(runs):
        if not force and results.is_cached(run.path, run.key["hash"]):
            records[index] = results.read(run.path)
            log(f"cached  {run.label}")
        else:
            todo.append(index)
    threads = int(os.environ.get(THREADS_ENV) or 0) or max(1, (os.cpu_count() or 1) // max(1, jobs))
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        futures = {pool.submit(run_one, challenge, runs[i], threads, log, extra_job): i for i in todo}
        try:
            for future in concurrent.futures.as_completed(futures):
                records[futures[future]] = future.result()
        except KeyboardInterrupt:
            for future in futures:
                future.cancel()
            log(f"interrupted: {len(records)} record(s) finished and kept")
            raise
    return [records[i] for i in sorted(records)]


def run_one(challenge: config.Challenge, run: Run, threads: int, log=print, extra_job: dict | None = None) -> dict:
    log(f"start   {run.label}")
    started = time.perf_counter()
    partial = run_worker(challenge, run, threads, log, extra_job or {})
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
        **partial,
        "wall_seconds": round(time.perf_counter() - started, 3),
        "key": run.key,
        "protocol": challenge.protocol(),
        "versions": versions(),
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
    with tempfile.TemporaryDirectory(prefix="bench-") as workdir:
        job = {
            "mode": extra_job.get("mode", "train"),
            "submission": str(run.submission.path.resolve()),
            "entry": run.submission.name,
            "seed": run.seed,
            "challenge": config.to_dict(_absolute_paths(challenge)),
            "build_kwargs": run.build_kwargs,
            "eval_kwargs": run.eval_kwargs,
            "hyperparameters": run.hyperparameters,
            "threads": threads,
            "output": str(Path(workdir) / "record.json"),
            **{k: v for k, v in extra_job.items() if k != "mode"},
        }
        job_path = Path(workdir) / "job.json"
        job_path.write_text(json.dumps(job))
        process = subprocess.Popen(
            [sys.executable, "-m", "bench.train", str(job_path)],
            cwd=workdir,
            env=worker_environment(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        tail: collections.deque[str] = collections.deque(maxlen=OUTPUT_TAIL_LINES)
        reader = threading.Thread(target=_drain, args=(process.stdout, tail, log), daemon=True)
        reader.start()
        try:
            process.wait(timeout=challenge.time_limit)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            reader.join(timeout=5)
            last = next((line for line in reversed(tail) if line.startswith(PROGRESS_PREFIX)), "")
            return {"status": TIMEOUT, "message": f"ran longer than the time limit of {challenge.time_limit:.0f} s"
                    + (f" (last progress: {last[len(PROGRESS_PREFIX):].strip()})" if last else "")
                    + "; train fewer epochs (TRAINING['epochs']) or a smaller model"}
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
        reader.join(timeout=5)
        output = Path(job["output"])
        if output.exists():
            return json.loads(output.read_text())
        own_lines = [line for line in tail if not line.startswith(PROGRESS_PREFIX)]
        return {"status": FAILED, "message": f"the training process ended without a result (exit code {process.returncode})"
                + (f": {own_lines[-1]}" if own_lines else ""), "output_tail": own_lines}


def _drain(stream, tail, log):
    for raw in iter(stream.readline, b""):
        line = raw[:MAX_LINE_CHARS].decode("utf-8", "replace").rstrip()
        tail.append(line)
        if line.startswith(PROGRESS_PREFIX):
            log(line)
    stream.close()


def worker_environment() -> dict:
    env = dict(os.environ)
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    env["PYTHONUNBUFFERED"] = "1"
    # The worker runs in a temporary folder: make this copy of bench importable from there.
    package_root = str(Path(bench.__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
    return env


def _absolute_paths(challenge: config.Challenge) -> config.Challenge:
    data_dir = challenge.data_dir or os.environ.get(data.DATA_DIR_ENV)
    return dataclasses.replace(challenge, data_dir=str(Path(data_dir).resolve()) if data_dir else None)


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
