"""Scale: --jobs gives the records a sequential run gives, Ray trains the same records, cache hits stay light."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest

from bench import cli, results

# What says when and how fast a run went; everything else in a record must not depend on how it ran.
TIMING_FIELDS = {"wall_seconds", "train_seconds", "worker_seconds", "stage_seconds", "export_seconds", "finished_at"}
ENTRIES = {
    "_shared.py": "HIDDEN_UNITS = 12\n",
    # Imports a helper from its folder: the Ray task must bring the helper along.
    "dense_helper.py": '''
        """Dense with a helper's width."""
        import keras
        from _shared import HIDDEN_UNITS
        TRAINING = {"batch_size": 64}
        def build_model(input_shape, num_classes):
            return keras.Sequential([keras.Input(input_shape), keras.layers.Flatten(),
                                     keras.layers.Dense(HIDDEN_UNITS, activation="relu"),
                                     keras.layers.Dense(num_classes, activation="softmax")])
    ''',
    "small_conv.py": '''
        """Two small convs."""
        import keras
        TRAINING = {"batch_size": 32}
        def build_model(input_shape, num_classes):
            return keras.Sequential([keras.Input(input_shape), keras.layers.Reshape(input_shape + (1,)),
                                     keras.layers.Conv2D(8, 3, activation="relu"), keras.layers.Conv2D(16, 3, activation="relu"),
                                     keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(num_classes, activation="softmax")])
    ''',
    "own_optimizer.py": '''
        """Compiled by its factory, one-hot loss."""
        import keras
        TRAINING = {"batch_size": 128}
        def build_model(input_shape, num_classes):
            model = keras.Sequential([keras.Input(input_shape), keras.layers.Flatten(),
                                      keras.layers.Dense(num_classes, activation="softmax")])
            model.compile("nadam", "categorical_crossentropy", metrics=["accuracy"])
            return model
    ''',
}
BROKEN = '''
    import keras
    def build_model():
        raise ValueError("no model today")
'''
# `engine = "auto"` (the repository's) would time both paths before each run: its notes' timings, and near a tie its
# choice, may differ between two runs of one seed; "jax" is the engine wherever it runs, every time.
TINY = ["--dataset", "digits", "--validation-size", "300", "--seeds", "1", "--epochs", "3", "--engine", "jax"]


def evaluate(targets, results_dir: Path, *flags) -> int:
    return cli.main(["evaluate", *map(str, targets), *TINY, "--results", str(results_dir),
                     "--leaderboard", str(results_dir / "board.md"), *map(str, flags)])


def records(results_dir: Path) -> dict[str, dict]:
    return {r["entry"]: {k: v for k, v in r.items() if k not in TIMING_FIELDS} for r in results.load_all(results_dir)}


@pytest.fixture(scope="module")
def entries(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("entries")
    for name, source in ENTRIES.items():
        (folder / name).write_text(textwrap.dedent(source))
    return folder


@pytest.fixture(scope="module")
def sequential(entries, tmp_path_factory) -> Path:
    """The three entries trained one at a time: the reference every other way of running must match."""
    out = tmp_path_factory.mktemp("sequential")
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("BENCH_THREADS", raising=False)
        assert evaluate([entries], out, "--jobs", 1) == 0
    return out


@pytest.fixture(autouse=True)
def default_threads(monkeypatch):
    monkeypatch.delenv("BENCH_THREADS", raising=False)


def test_two_jobs_run_at_once_and_give_the_sequential_records(entries, sequential, tmp_path, capsys):
    capsys.readouterr()
    assert evaluate([entries], tmp_path, "--jobs", 2) == 0
    log = capsys.readouterr().out.splitlines()
    # A worker needs seconds to import TensorFlow before its first epoch line: two starts before it mean two at once.
    first_progress = next(i for i, line in enumerate(log) if line.startswith("[bench]"))
    assert sum(line.startswith("start ") for line in log[:first_progress]) == 2, "--jobs 2 should start two workers at once"

    expected = records(sequential)
    assert sorted(expected) == ["dense_helper", "own_optimizer", "small_conv"]
    assert all(r["status"] == "OK" and r["threads"] == 1 for r in expected.values())
    # Exact equality: the same seed and thread count give the same bits, whatever ran beside them.
    assert records(tmp_path) == expected


def test_ray_executor_on_a_local_instance_stores_the_same_records(entries, sequential, tmp_path, monkeypatch):
    import ray

    broken = tmp_path / "elsewhere" / "broken.py"
    broken.parent.mkdir()
    broken.write_text(textwrap.dedent(BROKEN))
    # The processes Ray starts take their temporary folder from here (Ray's own too: a short path, as its
    # socket paths must stay under 108 bytes); this process keeps the one it already chose.
    workers_tmp = Path(tempfile.mkdtemp(prefix="bench-ray-test-"))
    monkeypatch.setenv("TMPDIR", str(workers_tmp))
    try:
        # No ray.init here: the executor starts a local instance (this machine's cores), ships bench, shuts it down.
        assert evaluate([entries / "dense_helper.py", entries / "small_conv.py", broken], tmp_path / "ray", "--executor", "ray") == 0
        assert not ray.is_initialized()
        assert (workers_tmp / "ray").is_dir(), "Ray did not use the TMPDIR given, so the check below would see nothing"
        # Ray kills its workers at shutdown, so no atexit runs there: each task must remove the arrays it wrote.
        assert not [p.name for p in workers_tmp.iterdir() if p.name.startswith(("bench-arrays-", "bench-images-"))]
    finally:
        shutil.rmtree(workers_tmp, ignore_errors=True)

    trained = records(tmp_path / "ray")
    expected = records(sequential)
    for name in ("dense_helper", "small_conv"):
        assert trained[name] == expected[name]
    failed = trained["broken"]
    assert failed["status"] == "FAILED" and "no model today" in failed["message"]
    # The message points at the entry's own file, not at the copy the Ray task trained.
    assert str(broken.resolve()) in failed["message"] and "bench-entry-" not in json.dumps(failed)
    assert failed["submission_path"] == broken.as_posix()


def test_ray_flag_without_the_extra_says_how_to_install_it(entries, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now raises ImportError
    assert evaluate([entries], tmp_path / "none", "--executor", "ray") == 2
    assert "pip install '.[ray]'" in capsys.readouterr().err
    assert not (tmp_path / "none").exists(), "nothing should run before the missing extra is reported"


def test_jobs_below_one_is_refused(entries, tmp_path, capsys):
    assert evaluate([entries], tmp_path / "none", "--jobs", 0) == 2
    assert "--jobs 0: train at least 1 entry at a time" in capsys.readouterr().err


def test_cached_rerun_starts_no_worker_and_imports_no_tensorflow(entries, sequential):
    """In a fresh interpreter, so TensorFlow imported by other tests in this process does not count."""
    script = textwrap.dedent("""
        import json, subprocess, sys
        started = []
        class CountedPopen(subprocess.Popen):
            def __init__(self, argv, *args, **kwargs):
                # The sandbox probe (bwrap running `import bench`) is not a worker; the stages are bench.train/bench.audit.
                if any(part in ("bench.train", "bench.audit") for part in argv):
                    started.append(argv)
                super().__init__(argv, *args, **kwargs)
        subprocess.Popen = CountedPopen
        from bench.cli import main
        code = main(sys.argv[1:])
        print(json.dumps({"code": code, "workers": len(started), "tensorflow": "tensorflow" in sys.modules}))
    """)
    args = ["evaluate", str(entries), *TINY, "--results", str(sequential), "--leaderboard", str(sequential / "board.md")]
    done = subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True, check=True,
                          cwd=Path(__file__).resolve().parent.parent)
    assert done.stdout.count("cached  ") == 3
    assert json.loads(done.stdout.strip().splitlines()[-1]) == {"code": 0, "workers": 0, "tensorflow": False}


def test_the_local_executor_trains_runs_added_while_it_runs(monkeypatch):
    """The runner adds an entry's other seeds after its seed 0 is stored: the executor must pick them up."""
    from bench import runner

    monkeypatch.setattr(runner, "timed_worker", lambda challenge, run, *rest: ({"status": "OK", "message": run}, 0.1))
    runs = {0: "first"}
    training = runner.LocalExecutor(2).train(None, runs, 1, print, {})
    assert next(training) == (0, {"status": "OK", "message": "first"}, 0.1)
    runs[5] = "added"
    assert list(training) == [(5, {"status": "OK", "message": "added"}, 0.1)]


def test_the_ray_executor_trains_runs_added_while_it_runs(entries, monkeypatch):
    from bench import config, discover, executors, plan

    class StandInRay:
        """What RayExecutor calls of `ray`, each task finished at once, in the order submitted."""

        class exceptions:
            RayError = RuntimeError

        def __init__(self):
            self.submitted = []

        def is_initialized(self):
            return True

        def remote(self, function):
            stand_in = self

            class Task:
                def options(self, **resources):
                    return self

                def remote(self, challenge, run, files, threads, extra_job):
                    stand_in.submitted.append(run.label)
                    return run.label

            return Task()

        def wait(self, refs, num_returns):
            return refs[:num_returns], refs[num_returns:]

        def get(self, ref):
            return {"status": "OK", "message": ref}, 0.1

        def cancel(self, ref, force):
            raise AssertionError("nothing is left to cancel")

    stand_in = StandInRay()
    monkeypatch.setitem(sys.modules, "ray", stand_in)
    challenge = config.from_dict({"dataset": "digits"})
    first, second = plan.plan(challenge, discover.find([str(entries / "dense_helper.py")], "submissions"), "fingerprint", [0, 1])
    runs = {0: first}
    training = executors.create("ray").train(challenge, runs, 1, lambda line: None, {})
    assert next(training)[:2] == (0, {"status": "OK", "message": "dense_helper seed 0"})
    runs[1] = second
    assert [index for index, _, _ in training] == [1]
    assert stand_in.submitted == ["dense_helper seed 0", "dense_helper seed 1"]
