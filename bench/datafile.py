"""A dataset of one's own: an .npz file or a folder of four IDX files, checked whole when the settings load.

The arrays are `x_train, y_train, x_test, y_test`. Images are uint8, shaped (images, H, W) or (images, H, W, C),
and reach the model scaled to [0, 1]; float arrays are feature vectors (or any float tensors) used as they are.
Labels are integers 0..K-1, K >= 2 taken from the data, every class present in the training split.
Numpy only: the settings, the leaderboard and `doctor` read this without TensorFlow.
"""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path

import numpy as np

ARRAYS = ("x_train", "y_train", "x_test", "y_test")
# An IDX folder's files, as MNIST distributes them: training images and labels, then test images and labels.
IDX_NAMES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
FORMAT_HELP = ("an .npz holding x_train, y_train, x_test, y_test (np.savez(path, x_train=..., ...)): images as uint8 "
               "(images, H, W) or (images, H, W, C), or float32 feature vectors; labels integers 0..K-1, K >= 2")


class FileError(ValueError):
    """Everything wrong with a dataset file, one fault per line after the first."""


@dataclasses.dataclass(frozen=True)
class Summary:
    """What a valid file holds, read without keeping its arrays."""
    path: str
    kind: str  # "images" (uint8, scaled by 1/255) or "features" (float, used as they are)
    input_shape: tuple[int, ...]
    num_classes: int
    train: int  # images in the training split, before the validation split is carved out of it
    test: int


def is_path(name: str) -> bool:
    """Whether `dataset` (not a built-in name) names a file or folder rather than a misspelt built-in."""
    return "/" in name or name.endswith(".npz") or Path(name).expanduser().exists()


def summary(path: str | Path) -> Summary:
    """Check the file at `path` and describe it. Raises FileError listing every fault found, each with what to change."""
    path = Path(path).expanduser().resolve()
    if not path.exists():
        raise FileError(f"dataset {path}: no such file or folder; give {FORMAT_HELP}, or a folder of the four IDX files "
                        f"{', '.join(IDX_NAMES)} (.gz or not)")
    stat = path.stat()
    return _summary(str(path), stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=8)  # the settings load in every command: read a file once per change, not once per load
def _summary(path: str, mtime_ns: int, size: int) -> Summary:
    arrays = read(Path(path))
    faults = problems(arrays)
    if faults:
        raise FileError(f"dataset {path} cannot be used; fix these and run again:\n" + "\n".join(f"  - {f}" for f in faults))
    x_train, y_train, x_test, y_test = (arrays[name] for name in ARRAYS)
    kind = "images" if x_train.dtype == np.uint8 else "features"
    classes = int(max(y_train.max(), y_test.max() if len(y_test) else 0)) + 1
    return Summary(path, kind, tuple(int(n) for n in x_train.shape[1:]), classes, len(x_train), len(x_test))


def read(path: Path) -> dict[str, np.ndarray]:
    """The arrays of an .npz file or an IDX folder, those present (a missing one is a fault `problems` reports)."""
    if path.is_dir():
        files = [_idx_file(path, stem) for stem in IDX_NAMES]
        missing = [stem for stem, found in zip(IDX_NAMES, files) if found is None]
        if missing:
            raise FileError(f"dataset {path}: the folder lacks the IDX file(s) {', '.join(missing)} (.gz or not); "
                            f"a folder dataset holds all four: {', '.join(IDX_NAMES)}")
        return {name: read_idx(found) for name, found in zip(ARRAYS, files)}
    try:
        with np.load(path, allow_pickle=False) as f:  # no pickles: a dataset file must not run code here
            return {name: f[name] for name in ARRAYS if name in f.files}
    except (OSError, ValueError) as error:
        raise FileError(f"dataset {path} is not a readable .npz file ({error}); give {FORMAT_HELP}") from None


def problems(arrays: dict[str, np.ndarray]) -> list[str]:
    """Every fault of a dataset's arrays, each saying what to change; empty when the arrays make a dataset."""
    faults = [f"the array {name} is missing: save it with np.savez(path, {name}=...)" for name in ARRAYS if name not in arrays]
    if faults:
        return faults
    x_train, y_train, x_test, y_test = (arrays[name] for name in ARRAYS)
    for name, x in (("x_train", x_train), ("x_test", x_test)):
        if x.dtype != np.uint8 and not np.issubdtype(x.dtype, np.floating):
            faults.append(f"{name} is {x.dtype}: save images as uint8 pixels 0-255 (scaled to [0, 1] here) or features as float32 (used as they are)")
        elif x.ndim < 2:
            faults.append(f"{name} has shape {x.shape}: give one row per example, (examples, features) or (images, H, W[, C])")
        elif x.dtype == np.uint8 and x.ndim not in (3, 4):
            faults.append(f"{name} is uint8 of shape {x.shape}: images are (images, H, W) or (images, H, W, C); save other data as float32")
        elif np.issubdtype(x.dtype, np.floating) and not np.isfinite(x).all():
            bad = int((~np.isfinite(x)).reshape(len(x), -1).any(axis=1).sum())
            faults.append(f"{name} holds NaN or infinite values in {bad} example(s): fill or drop them before saving")
    if x_train.dtype != x_test.dtype and not faults:
        faults.append(f"x_train is {x_train.dtype} but x_test is {x_test.dtype}: save both the same way")
    if x_train.shape[1:] != x_test.shape[1:]:
        faults.append(f"x_train's examples have shape {x_train.shape[1:]} but x_test's {x_test.shape[1:]}: both splits need one shape")
    for name, labels, images, of in (("y_train", y_train, x_train, "x_train"), ("y_test", y_test, x_test, "x_test")):
        if not np.issubdtype(labels.dtype, np.integer):
            faults.append(f"{name} is {labels.dtype}: labels are integers 0..K-1 (labels.astype('int64') if they are whole numbers)")
        elif labels.ndim != 1 or len(labels) != len(images):
            faults.append(f"{name} has shape {labels.shape}, expected ({len(images)},): one integer label per example of "
                          f"{of} (flatten a (N, 1) array with .ravel())")
        elif len(labels) and labels.min() < 0:
            faults.append(f"{name} holds negative labels ({int(labels.min())}): number the classes 0..K-1")
    if faults or not len(y_train):
        return faults or ["x_train is empty: the training split needs examples of every class"]
    classes = int(max(y_train.max(), y_test.max() if len(y_test) else 0)) + 1
    absent = sorted(set(range(classes)) - set(np.unique(y_train).tolist()))
    if classes < 2:
        faults.append(f"the labels name {classes} class: a classification dataset needs at least 2 (labels 0..K-1, K >= 2)")
    elif absent:
        shown = ", ".join(map(str, absent[:10])) + (f" and {len(absent) - 10} more" if len(absent) > 10 else "")
        if absent == [0]:  # the commonest slip: classes numbered 1..K
            faults.append(f"the labels run 1..{classes - 1}, and they must start at 0: subtract 1 from y_train and y_test "
                          f"(np.savez(path, ..., y_train=y_train - 1, y_test=y_test - 1))")
        else:
            faults.append(f"classes {shown} of 0..{classes - 1} have no training example: labels must be 0..K-1 with every "
                          "class in y_train (renumber the classes, or add training examples of these)")
    return faults


def _idx_file(folder: Path, stem: str) -> Path | None:
    found = [folder / (stem + ext) for ext in ("", ".gz") if (folder / (stem + ext)).is_file()]
    return found[0] if found else None


def idx_files(folder: Path) -> list[Path] | None:
    """The four IDX files in `folder` (each plain or .gz), or None when one is missing."""
    files = [_idx_file(folder, stem) for stem in IDX_NAMES]
    return None if None in files else files


def read_idx(path: Path) -> np.ndarray:
    """IDX: a 4-byte magic (0, 0, dtype code, number of dimensions), big-endian sizes, then the data (uint8 here)."""
    import gzip

    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        raw = f.read()
    if len(raw) < 4 or raw[:2] != b"\0\0" or raw[2] != 8:
        raise FileError(f"{path} is not an IDX file of unsigned bytes (its magic number is {raw[:4].hex() or 'missing'}, expected 0000 08 NN)")
    ndim = raw[3]
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)
