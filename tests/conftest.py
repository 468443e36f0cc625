"""Shared fixtures: tiny entries written into tmp folders, and the local MNIST file."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def mnist_dir(tmp_path_factory) -> str:
    """Folder holding mnist.npz: $BENCH_DATA_DIR, else ../shared/data beside the repo, else a Keras download."""
    for folder in (os.environ.get("BENCH_DATA_DIR"), REPO.parent / "shared" / "data"):
        if folder and (Path(folder) / "mnist.npz").is_file():
            return str(Path(folder).resolve())
    import keras
    import numpy as np

    (x_train, y_train), (x_test, y_test) = keras.datasets.mnist.load_data()
    folder = tmp_path_factory.mktemp("mnist")
    np.savez(folder / "mnist.npz", x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    return str(folder)


@pytest.fixture
def write_entry(tmp_path):
    """write_entry(name, source) -> Path of submissions/<name>.py inside tmp_path."""
    folder = tmp_path / "submissions"
    folder.mkdir(exist_ok=True)

    def write(name: str, source: str) -> Path:
        path = folder / f"{name}.py"
        path.write_text(textwrap.dedent(source))
        return path

    return write


DENSE_ENTRY = '''
    """A small dense net."""
    import keras

    AUTHOR = "tests"
    TRAINING = {"batch_size": 64}

    def build_model(input_shape, num_classes):
        return keras.Sequential([
            keras.Input(input_shape),
            keras.layers.Flatten(),
            keras.layers.Dense(12, activation="relu"),
            keras.layers.Dense(num_classes, activation="softmax"),
        ])
'''


# digits: 1,437 training images of 8x8; 300 of them validate.
TINY = {"dataset": "digits", "validation_size": 300, "max_epochs": 2, "max_params": 50_000}


def run_in_process(path, mode="train", build_kwargs=None, job_extra=None, **settings):
    """The partial record of one run of the entry at `path`, every stage in this process.

    `settings` override TINY's challenge settings; `job_extra` adds keys to the training job (e.g. monitor).
    Validations are answered in this process (bench.validation.Local) and recorded as the runner records them."""
    import tempfile
    import time

    import numpy as np

    from bench import arrays, audit, config, received, score, train, validation

    challenge = config.from_dict({**TINY, **settings})
    prepared = arrays.inputs(challenge, with_test=(mode == "train"))
    work = Path(tempfile.mkdtemp(prefix=f"run_{path.stem}_", dir=path.parent.parent))
    (work / "train").mkdir()
    (work / "audit").mkdir()
    job = {"mode": mode, "submission": str(path), "entry": path.stem, "seed": 0, "num_classes": prepared.num_classes,
           "challenge": config.to_dict(challenge), "build_kwargs": build_kwargs or {}, "eval_kwargs": {},
           "input": str(prepared.folder), "output": str(work / "train"), **(job_extra or {})}
    harness = validation.Harness(prepared.y_val, prepared.num_classes, challenge.max_epochs)
    started = time.perf_counter()
    claims = train.run_job(job, answers=validation.Local(harness) if mode == "train" else None)
    measured = harness.record_fields(started, time.perf_counter()) if mode == "train" else None
    claims = {**received.checked_claims(claims, challenge, job_extra or {}, measured),
              **{k: claims[k] for k in ("total_params", "trainable_params") if k in claims}}  # the train stage's own count
    if harness.problem:
        claims = {**claims, "status": "FAILED", "message": harness.problem}
    if claims["status"] != "OK":
        return claims
    images = {"val": np.load(prepared.val_images_file)}
    if mode == "train":
        images["test"] = np.load(prepared.test_images_file)
    audited = audit.audit(work / "train", images, work / "audit", challenge.allow_custom_code)
    return score.score(challenge, claims, audited, prepared, work / "audit", mode)
