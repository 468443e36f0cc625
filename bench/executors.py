"""Where runs train: worker subprocesses on this machine (runner.LocalExecutor), or tasks on a Ray cluster.

An executor's train() yields (index, partial record, seconds) as each run finishes; the runner turns
every partial record into a stored record the same way, so results/ cannot tell which one trained it.
Runs the runner adds to the `runs` dict while train() is paused at a yield (an entry's other seeds,
once its seed 0 is recorded) are trained too.
"""

from __future__ import annotations

import dataclasses
import json
import tempfile
import time
from pathlib import Path

import bench
from bench import arrays, config, discover, plan, runner, stages, untrusted
from bench.status import FAILED

EXECUTORS = ("local", "ray")


class MissingExtra(config.ConfigError):
    """An optional dependency the chosen executor needs is not installed."""


def create(name: str, jobs: int | None = None, gpus_per_run: float = 0.0):
    if jobs is not None and jobs < 1:
        raise config.ConfigError(f"--jobs {jobs}: train at least 1 entry at a time")
    if gpus_per_run < 0:
        raise config.ConfigError(f"--gpus-per-run {gpus_per_run}: ask for 0 or more GPUs per run")
    if name == "local":
        return runner.LocalExecutor(jobs)
    if name == "ray":
        return RayExecutor(gpus_per_run)
    raise config.ConfigError(f"unknown executor {name!r}; choose one of {', '.join(EXECUTORS)}")


class RayExecutor:
    """One Ray task per run, asking for the run's threads as CPUs (and `gpus_per_run` GPUs).

    The task runs the usual worker subprocess on whichever node Ray picks, so the time limit,
    crash handling and thread settings are the local ones. The entry's file (and the `_*.py`
    helpers beside it) travel with the task and this copy of `bench` with Ray's runtime
    environment; the dataset must be at the same path on every node (or need no file, as digits).
    Connects to RAY_ADDRESS, else to a cluster started here with `ray start`, else starts a local
    Ray instance for the evaluation. A session the caller already opened with ray.init() is used as
    it is: its nodes must import this `bench` (installed there, or ray.init's runtime_env py_modules).
    """

    def __init__(self, gpus_per_run: float = 0.0):
        try:
            import ray
        except ImportError:
            raise MissingExtra("--executor ray needs Ray, an optional extra: pip install '.[ray]' "
                               "(or pip install ray), or leave out --executor to train on this machine") from None
        self.ray = ray
        self.gpus_per_run = gpus_per_run

    def train(self, challenge: config.Challenge, runs: dict[int, plan.Run], threads: int, log, extra_job: dict, on_start=None):
        ray = self.ray
        if not runs:
            return
        started_here = not ray.is_initialized()
        if started_here:
            # Ray uploads this copy of `bench` to every node (only ray.init can ship a local folder).
            ray.init(runtime_env={"py_modules": [str(Path(bench.__file__).resolve().parent)]})
        try:
            task = ray.remote(train_remotely).options(num_cpus=threads, num_gpus=self.gpus_per_run)
            # Relative data paths mean nothing on another node: send the one this machine resolves.
            shipped = arrays.absolute_paths(challenge)
            pending = {}  # ref -> index of the runs in flight
            finished: set[int] = set()

            def submit_new():
                submitted = set(pending.values()) | finished
                for index, run in list(runs.items()):
                    if index in submitted:
                        continue
                    # The absolute path names the entry in messages, as in a local run's job.
                    named = dataclasses.replace(run, submission=dataclasses.replace(run.submission, path=run.submission.path.resolve()))
                    pending[task.remote(shipped, named, entry_files(run.submission.path), threads, extra_job)] = index
                    log(f"queued  {run.label}")
                    if on_start is not None:  # Ray does not say when a task starts: count it as in flight from now
                        on_start(index)

            submit_new()
            try:
                while pending:
                    (done,), _ = ray.wait(list(pending), num_returns=1)
                    index = pending.pop(done)
                    finished.add(index)
                    try:
                        partial, seconds = ray.get(done)
                    except ray.exceptions.RayError as error:  # the node or the task died, not the entry
                        first_line = (str(error).strip().splitlines() or [type(error).__name__])[0]
                        partial, seconds = {"status": FAILED, "message": f"the Ray task failed: {first_line}"}, 0.0
                    yield index, partial, seconds
                    submit_new()
            finally:  # interrupted: stop what the cluster has not finished
                for ref in pending:
                    ray.cancel(ref, force=True)
        finally:
            if started_here:
                ray.shutdown()


def entry_files(path: Path) -> dict[str, bytes]:
    """The entry's file and the `_*.py` helpers it may import from its folder, read without following links. A file
    that is not a regular one stays behind (never read): the run without it fails on its own, the evaluation goes on."""
    files = {}
    for source in (*discover.helpers(path.parent), path):
        try:
            files[source.name] = untrusted.read_regular(source)
        except untrusted.Refused:
            continue
    return files


def train_remotely(challenge: config.Challenge, run: plan.Run, files: dict[str, bytes], threads: int,
                   extra_job: dict) -> tuple[dict, float]:
    """On a Ray worker: the entry's files in a fresh folder, then the same worker subprocess as local runs."""
    with tempfile.TemporaryDirectory(prefix="bench-entry-") as folder:
        for name, content in files.items():
            (Path(folder) / name).write_bytes(content)
        here = dataclasses.replace(run.submission, path=Path(folder) / run.submission.path.name)
        started = time.perf_counter()
        try:
            partial = stages.run_worker(challenge, dataclasses.replace(run, submission=here), threads, print, extra_job)
        finally:
            # Written again by the next task on this worker: a few seconds against minutes of training.
            arrays.discard_inputs()
        seconds = time.perf_counter() - started
        copy_folder = str(Path(folder).resolve())
    # Messages and tracebacks name the entry's own path, as a local run's would.
    partial = json.loads(json.dumps(partial).replace(_json_text(copy_folder), _json_text(str(run.submission.path.parent))))
    return {**partial, "versions": runner.versions()}, seconds


def _json_text(text: str) -> str:
    return json.dumps(text)[1:-1]
