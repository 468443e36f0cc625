"""The arrays an evaluation hands its runs, written once per process into folders the sandboxes see read-only.

Training gets the fit images and labels and the validation images; the audit gets the validation and test
images. The labels of both (and the hidden test set's) stay in this process: bench.score and
bench.validation read them here.
"""

from __future__ import annotations

import atexit
import dataclasses
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from bench import config, data


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
    about: dict  # what the records and the board say of the data: describe()'s fields
    test_digest: str | None = None  # the hidden test set's sha256 (its images and labels), which no student sees whole

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
    y_test = (hidden.labels if hidden else dataset.y_test) if with_test else None
    about = describe(challenge, dataset, len(y_fit), len(y_val), len(dataset.y_test) if y_test is None else len(y_test))
    _INPUTS[key] = prepared = Inputs(folder, images_folder, dataset.num_classes, y_val, y_test,
                                     hidden.description if hidden else None, about, hidden.digest if hidden else None)
    return prepared


def describe(challenge: config.Challenge, dataset: data.Dataset, fit: int, validation: int, test: int) -> dict:
    """The data a run sees, for its record and the board's header: the dataset's board name, one example's shape,
    the class count (and names, when [tool.bench.dataset] gives them), the examples in each part, and the source
    (a file as the settings name it, a built-in's local copy or download)."""
    about = {"name": challenge.board_name, "input_shape": list(dataset.input_shape), "num_classes": dataset.num_classes,
             "train": fit, "validation": validation, "test": test,
             "source": dataset.source if data.is_builtin(challenge.dataset) else challenge.dataset}
    if challenge.class_names:
        about["classes"] = list(challenge.class_names)
    if challenge.dataset_description:
        about["description"] = challenge.dataset_description
    return about


def discard_inputs() -> None:
    """Remove the folders `inputs` wrote in this process and forget them. For processes that end without
    running atexit: Ray kills its worker processes at ray.shutdown(), which would leave the dataset in the
    temporary folder of every node."""
    for prepared in _INPUTS.values():
        for folder in (prepared.folder, prepared.images_folder):
            shutil.rmtree(folder, True)
    _INPUTS.clear()


def absolute_paths(challenge: config.Challenge) -> config.Challenge:
    data_dir = challenge.data_dir or os.environ.get(data.DATA_DIR_ENV)
    return dataclasses.replace(challenge, data_dir=str(Path(data_dir).resolve()) if data_dir else None)
