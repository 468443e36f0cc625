"""Datasets: a local copy first, the `keras.datasets` download second, and the validation split.

Everything here is numpy only, so the cache check and the leaderboard never import TensorFlow;
TensorFlow is imported only when no local copy exists and the data must be downloaded.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import os
from pathlib import Path

import numpy as np

DATA_DIR_ENV = "BENCH_DATA_DIR"
DATASETS = ("mnist", "fashion_mnist", "digits")
# Debian's dataset-fashion-mnist package installs the IDX files here.
SYSTEM_DIRS = {"fashion_mnist": [Path("/usr/share/datasets/fashion-mnist")], "mnist": [Path("/usr/share/datasets/mnist")]}
NPZ_NAMES = {"mnist": ["mnist.npz"], "fashion_mnist": ["fashion_mnist.npz", "fashion-mnist.npz"]}
SUBDIR_NAMES = {"mnist": ["mnist"], "fashion_mnist": ["fashion-mnist", "fashion_mnist"]}
IDX_NAMES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
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
    x_train: np.ndarray  # float32 in [0, 1]
    y_train: np.ndarray  # int labels
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


def load(name: str, data_dir: str | None = None, train_limit: int | None = None, test_limit: int | None = None) -> Dataset:
    if name not in DATASETS:
        raise DataError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
    if name == "digits":
        (x_train, y_train), (x_test, y_test), source = _load_digits()
    else:
        (x_train, y_train), (x_test, y_test), source = _load_image_set(name, data_dir)
    if train_limit:
        x_train, y_train = x_train[:train_limit], y_train[:train_limit]
    if test_limit:
        x_test, y_test = x_test[:test_limit], y_test[:test_limit]
    # Dividing straight into float32 gives the same values as float64-then-cast (checked for all 256
    # pixel values) without a float64 copy of the images: about 1 s less per worker on MNIST.
    scale = np.float32(16.0 if name == "digits" else 255.0)
    return Dataset(
        name=name,
        x_train=np.true_divide(x_train, scale, dtype="float32"),
        y_train=y_train.astype("int64"),
        x_test=np.true_divide(x_test, scale, dtype="float32"),
        y_test=y_test.astype("int64"),
        source=source,
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
    """The local copy of dataset `name` the loader reads (an .npz file, or a folder of the four IDX files), or None;
    and the places it looked, in order. Reads no images."""
    for path in [Path(d) for d in (data_dir, os.environ.get(DATA_DIR_ENV)) if d]:
        if path.is_file():
            return path, [str(path)]
    looked = []
    for folder in candidate_dirs(name, data_dir):
        for npz in NPZ_NAMES[name]:
            looked.append(str(folder / npz))
            if (folder / npz).is_file():
                return folder / npz, looked
        looked.append(str(folder) + "/{" + ",".join(IDX_NAMES) + "}[.gz]")
        if _idx_files(folder) is not None:
            return folder, looked
    return None, looked


def _load_image_set(name: str, data_dir: str | None):
    found, looked = find_local(name, data_dir)
    if found is not None:
        return (_read_npz(found) if found.is_file() else _read_idx_folder(found)) + (str(found),)
    try:
        import keras

        loaded = getattr(keras.datasets, name).load_data()
    except Exception as error:  # no network, a proxy, a corrupt cache: all end the same way for the user
        raise DataError(
            f"could not find the {name} dataset. Looked in: {'; '.join(looked) or '(no local folder given)'}; "
            f"then tried keras.datasets.{name}.load_data(), which failed: {error}. "
            f"Download it once elsewhere and pass the folder with --data-dir DIR or {DATA_DIR_ENV}=DIR "
            f"(a folder holding {NPZ_NAMES[name][0]} or the four IDX files, .gz or not)."
        ) from None
    return loaded + (f"keras.datasets.{name}",)


def _read_npz(path: Path):
    with np.load(path, allow_pickle=False) as f:
        missing = {"x_train", "y_train", "x_test", "y_test"} - set(f.files)
        if missing:
            raise DataError(f"{path} lacks the arrays {sorted(missing)}; expected x_train, y_train, x_test, y_test")
        return (f["x_train"], f["y_train"]), (f["x_test"], f["y_test"])


def _idx_files(folder: Path) -> list[Path] | None:
    """The four IDX files in `folder` (each plain or .gz), or None when one is missing."""
    files = []
    for stem in IDX_NAMES:
        found = [folder / (stem + ext) for ext in ("", ".gz") if (folder / (stem + ext)).is_file()]
        if not found:
            return None
        files.append(found[0])
    return files


def _read_idx_folder(folder: Path):
    x_train, y_train, x_test, y_test = (_read_idx(f) for f in _idx_files(folder))
    return (x_train, y_train), (x_test, y_test)


def _read_idx(path: Path) -> np.ndarray:
    """IDX: a 4-byte magic (0, 0, dtype code, number of dimensions), big-endian sizes, then the data."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        raw = f.read()
    ndim = raw[3]
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def _load_digits():
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x_train, x_test, y_train, y_test = train_test_split(
        digits.images, digits.target, test_size=DIGITS_TEST_FRACTION, stratify=digits.target, random_state=DIGITS_SPLIT_SEED
    )
    return (x_train, y_train), (x_test, y_test), "sklearn.datasets.load_digits"
