"""Datasets: the built-ins (a local copy first, the `keras.datasets` download second), a file of one's own
(bench.datafile), and the validation split.

Everything here is numpy only, so the cache check and the leaderboard never import TensorFlow;
TensorFlow is imported only when no local copy exists and the data must be downloaded.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import os
from pathlib import Path

import numpy as np

from bench import datafile

DATA_DIR_ENV = "BENCH_DATA_DIR"
# The built-in datasets; any other `dataset` is the path of a file of one's own (bench.datafile).
DATASETS = ("mnist", "fashion_mnist", "digits", "cifar10", "cifar100")
# (input shape, classes) of each built-in, known before its images are read (`bench new` writes a starter that fits).
SHAPES = {"mnist": ((28, 28), 10), "fashion_mnist": ((28, 28), 10), "digits": ((8, 8), 10),
          "cifar10": ((32, 32, 3), 10), "cifar100": ((32, 32, 3), 100)}
# Debian's dataset-fashion-mnist package installs the IDX files here.
SYSTEM_DIRS = {"fashion_mnist": [Path("/usr/share/datasets/fashion-mnist")], "mnist": [Path("/usr/share/datasets/mnist")]}
NPZ_NAMES = {"mnist": ["mnist.npz"], "fashion_mnist": ["fashion_mnist.npz", "fashion-mnist.npz"],
             "cifar10": ["cifar10.npz", "cifar-10.npz"], "cifar100": ["cifar100.npz", "cifar-100.npz"]}
SUBDIR_NAMES = {"mnist": ["mnist"], "fashion_mnist": ["fashion-mnist", "fashion_mnist"],
                "cifar10": ["cifar10", "cifar-10"], "cifar100": ["cifar100", "cifar-100"]}
IDX_NAMES = datafile.IDX_NAMES
# CIFAR as distributed (https://www.cs.toronto.edu/~kriz/cifar.html): a folder of Python pickles, each a dict with
# b"data" (images, 3072) uint8 in channel-major order and the labels. The folder's name, its files, the labels' key.
PICKLE_FOLDERS = {
    "cifar10": ("cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)], ["test_batch"], b"labels"),
    "cifar100": ("cifar-100-python", ["train"], ["test"], b"fine_labels"),
}
# Where keras.datasets.<name>.load_data() keeps its download, under ~/.keras/datasets (`bench doctor` looks).
KERAS_CACHE = {"mnist": "mnist.npz", "fashion_mnist": "fashion-mnist", "cifar10": "cifar-10-batches-py", "cifar100": "cifar-100-python"}
# The split of the 1,797 scikit-learn digits into training and test images, fixed for everyone.
DIGITS_TEST_FRACTION = 0.2
DIGITS_SPLIT_SEED = 0
# Validation images are the same for every entry and seed: a fixed split, not the run's seed.
VALIDATION_SPLIT_SEED = 0


class DataError(RuntimeError):
    pass


@dataclasses.dataclass
class Dataset:
    name: str
    x_train: np.ndarray  # float32: images in [0, 1], or a file's float features as they are
    y_train: np.ndarray  # int labels 0..num_classes-1
    x_test: np.ndarray
    y_test: np.ndarray
    source: str
    num_classes: int = 10

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])

    def fingerprint(self) -> str:
        """Content hash of the arrays: the same images give the same cache key wherever they came from."""
        digest = hashlib.sha256()
        for array in (self.x_train, self.y_train, self.x_test, self.y_test):
            digest.update(str(array.shape).encode())
            digest.update(np.ascontiguousarray(array).tobytes())
        return digest.hexdigest()


def is_builtin(name: str) -> bool:
    return name in DATASETS


def unknown_message(name: str) -> str:
    return (f"unknown dataset {name!r}: choose one of {', '.join(DATASETS)}, or give the path of a file of your own "
            f"(an .npz, or a folder of IDX files; README \"Bring your own data\")")


def describe(name: str) -> datafile.Summary:
    """A file dataset's summary, checked whole. Raises DataError with every fault of the file, or for an unknown name."""
    if not datafile.is_path(name):
        raise DataError(unknown_message(name))
    try:
        return datafile.summary(name)
    except datafile.FileError as error:
        raise DataError(str(error)) from None


def shape_of(name: str) -> tuple[tuple[int, ...], int]:
    """(input shape, number of classes) of dataset `name`, a built-in or a file, without scaling its images."""
    if is_builtin(name):
        return SHAPES[name]
    found = describe(name)
    return found.input_shape, found.num_classes


# Training images of each built-in, before the validation split.
TRAIN_COUNTS = {"mnist": 60_000, "fashion_mnist": 60_000, "digits": 1_437, "cifar10": 50_000, "cifar100": 50_000}


def train_count(name: str) -> int:
    """Training images (examples) of dataset `name` before the validation split, without loading them."""
    return TRAIN_COUNTS[name] if is_builtin(name) else describe(name).train


def pixel_scale(name: str) -> float | None:
    """What the raw values of `name`'s images are divided by (16 for digits, 255 for uint8 images), or None for a
    file of float features, used as they are."""
    if name == "digits":
        return 16.0
    return 255.0 if is_builtin(name) or describe(name).kind == "images" else None


def load(name: str, data_dir: str | None = None, train_limit: int | None = None, test_limit: int | None = None) -> Dataset:
    """Dataset `name` (a built-in, or the path of an .npz file or IDX folder), its images float32 in [0, 1].

    Raises DataError when no copy is found, the download fails, or (for a file) it has any fault, all of them listed."""
    builtin = is_builtin(name)
    if builtin:
        num_classes = SHAPES[name][1]
        loader = _load_digits if name == "digits" else functools.partial(_load_image_set, name, data_dir)
        (x_train, y_train), (x_test, y_test), source = loader()
    else:
        found = describe(name)
        arrays = datafile.read(Path(found.path))
        (x_train, y_train), (x_test, y_test) = (arrays["x_train"], arrays["y_train"]), (arrays["x_test"], arrays["y_test"])
        source, num_classes, name = found.path, found.num_classes, Path(found.path).stem
    if train_limit:
        x_train, y_train = x_train[:train_limit], y_train[:train_limit]
    if test_limit:
        x_test, y_test = x_test[:test_limit], y_test[:test_limit]
    # Dividing straight into float32 gives the same values as float64-then-cast (checked for all 256
    # pixel values) without a float64 copy of the images: about 1 s less per worker on MNIST.
    scale = np.float32(16.0 if builtin and name == "digits" else 255.0 if builtin or x_train.dtype == np.uint8 else 1.0)
    return Dataset(
        name=name,
        x_train=np.true_divide(x_train, scale, dtype="float32"),
        y_train=y_train.reshape(-1).astype("int64"),  # keras.datasets.cifar10 gives (images, 1)
        x_test=np.true_divide(x_test, scale, dtype="float32"),
        y_test=y_test.reshape(-1).astype("int64"),
        source=source,
        num_classes=num_classes,
    )


# validation_size left out: a count for the big sets (MNIST's records were made with 5,000), a fraction that fits
# any smaller one (digits, a --train-limit try-out); stratified like any other size.
AUTO_VALIDATION = {"count": 5000, "from_images": 50_000, "fraction": 0.1}
AUTO_VALIDATION_RULE = "5,000 images when the training split has at least 50,000, else 10 % of it"


def validation_count(size: int | float | None, images: int) -> int:
    """Validation images for `validation_size`: a count, a fraction (0 < f < 1) of the training images, or None
    for AUTO_VALIDATION's rule."""
    if size is None:
        big = images >= AUTO_VALIDATION["from_images"]
        return AUTO_VALIDATION["count"] if big else max(1, int(round(AUTO_VALIDATION["fraction"] * images)))
    return int(round(size * images)) if isinstance(size, float) and 0 < size < 1 else int(size)


def split_validation(x: np.ndarray, y: np.ndarray, size: int | float | None):
    """A stratified validation split carved out of the training images (`size`: a count, a fraction, or None for
    AUTO_VALIDATION's rule).

    Raises DataError when the split does not leave at least half of the images for training, or holds fewer
    images than there are classes."""
    from sklearn.model_selection import train_test_split

    given, size = size, validation_count(size, len(x))
    classes = len(np.unique(y))  # a stratified split holds at least one image of each class
    if given is None:
        size = max(size, classes)  # the default rule fits any class count: 10 % of a small split of many classes is too few
    if not classes <= size < len(x) // 2:
        raise DataError(
            f"validation_size={'(the default rule)' if given is None else given} does not fit {len(x)} training images: "
            f"choose a count between {classes} and {len(x) // 2 - 1}, or a fraction such as 0.1 "
            f"(--validation-size or [tool.bench] validation_size), or leave the setting out for {AUTO_VALIDATION_RULE}"
        )
    x_fit, x_val, y_fit, y_val = train_test_split(x, y, test_size=size, stratify=y, random_state=VALIDATION_SPLIT_SEED)
    return (x_fit, y_fit), (x_val, y_val)


def candidate_dirs(name: str, data_dir: str | None) -> list[Path]:
    roots = [Path(d) for d in (data_dir, os.environ.get(DATA_DIR_ENV)) if d]
    dirs = []
    for root in roots:
        dirs.append(root)
        dirs.extend(root / sub for sub in SUBDIR_NAMES[name])
    return dirs + SYSTEM_DIRS.get(name, [])


def find_local(name: str, data_dir: str | None) -> tuple[Path | None, list[str]]:
    """The local copy of built-in dataset `name` the loader reads (an .npz file, a folder of the four IDX files, or
    CIFAR's folder of pickles), or None; and the places it looked, in order. Reads no images."""
    for path in [Path(d) for d in (data_dir, os.environ.get(DATA_DIR_ENV)) if d]:
        if path.is_file():
            return path, [str(path)]
    looked = []
    for folder in candidate_dirs(name, data_dir):
        for npz in NPZ_NAMES[name]:
            looked.append(str(folder / npz))
            if (folder / npz).is_file():
                return folder / npz, looked
        if name in PICKLE_FOLDERS:
            pickles, train, test, _ = PICKLE_FOLDERS[name]
            for candidate in (folder / pickles, folder):  # the folder as distributed, or a --data-dir naming it
                looked.append(str(candidate) + "/{" + ",".join(train + test) + "}")
                if all((candidate / f).is_file() for f in train + test):
                    return candidate, looked
        else:
            looked.append(str(folder) + "/{" + ",".join(IDX_NAMES) + "}[.gz]")
            if datafile.idx_files(folder) is not None:
                return folder, looked
    return None, looked


def _load_image_set(name: str, data_dir: str | None):
    found, looked = find_local(name, data_dir)
    if found is not None:
        if found.is_file():
            return _read_npz(found) + (str(found),)
        return (_read_pickles(found, name) if name in PICKLE_FOLDERS else _read_idx_folder(found)) + (str(found),)
    try:
        import keras

        loaded = getattr(keras.datasets, name).load_data()
    except Exception as error:  # no network, a proxy, a corrupt cache: all end the same way for the user
        folder = f"the {PICKLE_FOLDERS[name][0]} folder" if name in PICKLE_FOLDERS else "the four IDX files, .gz or not"
        raise DataError(
            f"could not find the {name} dataset. Looked in: {'; '.join(looked) or '(no local folder given)'}; "
            f"then tried keras.datasets.{name}.load_data(), which failed: {error}. "
            f"Download it once elsewhere and pass the folder with --data-dir DIR or {DATA_DIR_ENV}=DIR "
            f"(a folder holding {NPZ_NAMES[name][0]} or {folder})."
        ) from None
    return loaded + (f"keras.datasets.{name}",)


def _read_npz(path: Path):
    with np.load(path, allow_pickle=False) as f:
        missing = {"x_train", "y_train", "x_test", "y_test"} - set(f.files)
        if missing:
            raise DataError(f"{path} lacks the arrays {sorted(missing)}; expected x_train, y_train, x_test, y_test")
        return (f["x_train"], f["y_train"]), (f["x_test"], f["y_test"])


def _read_idx_folder(folder: Path):
    x_train, y_train, x_test, y_test = (datafile.read_idx(f) for f in datafile.idx_files(folder))
    return (x_train, y_train), (x_test, y_test)


def _read_pickles(folder: Path, name: str):
    """CIFAR's own format: pickled dicts (Python 2 pickles, hence bytes keys) of flat channel-major images.
    Unpickling runs code a crafted file holds: read only a copy you trust, as you would Keras's download."""
    import pickle

    _, train, test, label_key = PICKLE_FOLDERS[name]

    def split(files):
        parts = []
        for file in files:
            with open(folder / file, "rb") as f:
                parts.append(pickle.load(f, encoding="bytes"))
        images = np.concatenate([p[b"data"] for p in parts]).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
        return np.ascontiguousarray(images, dtype=np.uint8), np.concatenate([np.asarray(p[label_key]) for p in parts])

    return split(train), split(test)


def _load_digits():
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x_train, x_test, y_train, y_test = train_test_split(
        digits.images, digits.target, test_size=DIGITS_TEST_FRACTION, stratify=digits.target, random_state=DIGITS_SPLIT_SEED
    )
    return (x_train, y_train), (x_test, y_test), "sklearn.datasets.load_digits"
