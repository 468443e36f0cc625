"""For a course: `python -m bench new NAME` writes a starter entry, and a hidden test set keeps its labels
out of the repository and out of the entries' reach.

The hidden test set (`test_set` in [tool.bench], or BENCH_TEST_SET) is an .npz holding `x_test` and
`y_test` in the dataset's own format (uint8 pixels 0-255 for MNIST, Fashion-MNIST, CIFAR and a file of images,
0-16 for digits; float features as they are for a file of features).
The runner reads it; training never sees it, the audit (bench.audit) gets the images alone and returns
predictions, and the runner scores them. The board says which test set its records were scored on.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import re
import shutil
import sys
from pathlib import Path

import numpy as np

from bench import config, discover

STARTER = '''"""{name}: replace this line with a one-line summary of your model (the leaderboard shows it).

Below the first line, say where the idea comes from. Try the file in seconds with
    python -m bench check {path}
then train it for a few epochs (a try-out: its records go to .bench/try/, never onto the board) with
    python -m bench evaluate {path} --epochs 5
"""

import keras

AUTHOR = {author!r}  # your name, as the leaderboard shows it

# Optional: any of these keys, each optional. The challenge caps "epochs" and stops early when the
# validation loss stops improving, so a generous number costs nothing.
TRAINING = {{
    "optimizer": "adam",
    "learning_rate": 0.003,
    "batch_size": 128,
    "epochs": 30,
}}


def build_model(input_shape, num_classes):
    """{what} of `input_shape` in, `num_classes` probabilities out; every weight counts against you.

    Return the model uncompiled (the harness compiles it with TRAINING), or compile it yourself with
    your own optimizer and loss: model.compile(optimizer, loss, metrics=["accuracy"]).
    """
{body}    return keras.Model(inputs, outputs)  # {total} parameters in all
'''


# The starter's layers for each kind of example: grey images (H, W), colour images (H, W, C), anything else
# (feature vectors). {shape}, {dataset}, {c} (channels), {f} (features), {k} (classes) and the counts are filled in.
STARTER_BODIES = {
    "grey": (
        "    inputs = keras.Input(input_shape)  # {shape} for {dataset}: no channel axis\n"
        "    x = keras.layers.Reshape((*input_shape, 1))(inputs)  # convolutions want one\n"
        "    # Strided convolutions shrink the image and reuse 3x3 weights everywhere: few parameters.\n"
        "    x = keras.layers.Conv2D(4, 3, strides=2, padding=\"same\", activation=\"relu\")(x)  # 4 * (3*3*1 + 1) = 40\n"
        "    x = keras.layers.Conv2D(8, 3, strides=2, padding=\"same\", activation=\"relu\")(x)  # 8 * (3*3*4 + 1) = 296\n"
        "    x = keras.layers.GlobalAveragePooling2D()(x)  # one number per filter, no weights\n"
        "    outputs = keras.layers.Dense(num_classes, activation=\"softmax\")(x)  # {k} * (8 + 1) = {head} for {k} classes\n"),
    "colour": (
        "    inputs = keras.Input(input_shape)  # {shape} for {dataset}: height, width, {c} channels\n"
        "    # Strided convolutions shrink the image and reuse 3x3 weights everywhere: few parameters.\n"
        "    x = keras.layers.Conv2D(4, 3, strides=2, padding=\"same\", activation=\"relu\")(inputs)  # 4 * (3*3*{c} + 1) = {first}\n"
        "    x = keras.layers.Conv2D(8, 3, strides=2, padding=\"same\", activation=\"relu\")(x)  # 8 * (3*3*4 + 1) = 296\n"
        "    x = keras.layers.GlobalAveragePooling2D()(x)  # one number per filter, no weights\n"
        "    outputs = keras.layers.Dense(num_classes, activation=\"softmax\")(x)  # {k} * (8 + 1) = {head} for {k} classes\n"),
    "features": (
        "    inputs = keras.Input(input_shape)  # {shape} for {dataset}\n"
        "    x = keras.layers.Flatten()(inputs)  # one vector of {f} numbers per example\n"
        "    x = keras.layers.Dense(8, activation=\"relu\")(x)  # 8 * ({f} + 1) = {first}\n"
        "    outputs = keras.layers.Dense(num_classes, activation=\"softmax\")(x)  # {k} * (8 + 1) = {head} for {k} classes\n"),
}


def starter(name: str, path: str, author: str, input_shape: tuple[int, ...], num_classes: int, dataset: str) -> str:
    """The text of a starter entry that fits examples of `input_shape` and `num_classes` classes, its parameter
    counts worked out in its comments."""
    kind = "grey" if len(input_shape) == 2 else "colour" if len(input_shape) == 3 else "features"
    c, f, k = input_shape[-1], int(np.prod(input_shape)), num_classes
    first = {"grey": 40, "colour": 4 * (9 * c + 1), "features": 8 * (f + 1)}[kind]
    total = first + (296 if kind != "features" else 0) + 9 * k
    body = STARTER_BODIES[kind].format(shape=tuple(input_shape), dataset=dataset, c=c, f=f, k=k, head=9 * k, first=first)
    what = "Images" if kind != "features" else "Examples"
    return STARTER.format(name=name, path=path, author=author, what=what, body=body, total=total)


def register(subparsers) -> None:
    new = subparsers.add_parser("new", help="write a commented starter entry into the submissions folder")
    new.add_argument("name", help="the entry's name: letters, digits and '_' (it becomes submissions/NAME.py)")
    new.add_argument("--author", default="", help="your name, shown on the leaderboard")
    new.add_argument("--submissions", help="folder to write into (default: [tool.bench] submissions)")
    new.add_argument("--dataset", metavar="NAME|PATH", help="write a starter that fits this dataset (default: [tool.bench] dataset)")
    new.set_defaults(handler=cmd_new)
    clear = subparsers.add_parser(
        "clear", help="start a new challenge: remove the example entries (and their tests), studies, records and board")
    clear.add_argument("--yes", action="store_true", help="remove them (without it, only list what would go)")
    clear.set_defaults(handler=cmd_clear)


def cmd_new(args) -> int:
    challenge = config.load_challenge(args)
    name = args.name[:-3] if args.name.endswith(".py") else args.name
    problem = name_problem(name)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    from bench import data

    input_shape, num_classes = data.shape_of(challenge.dataset)  # a file's was checked when the settings loaded
    folder = Path(args.submissions or challenge.submissions)
    path = folder / f"{name}.py"
    folder.mkdir(parents=True, exist_ok=True)
    try:
        with path.open("x") as file:  # "x": never overwrite someone's work, even in a race
            file.write(starter(name, path.as_posix(), args.author, input_shape, num_classes, challenge.board_name))
    except FileExistsError:
        print(f"error: {path} already exists: choose another name, or edit that file", file=sys.stderr)
        return 2
    print(f"wrote {path}; try it with: python -m bench check {path.as_posix()}")
    return 0


# Studies are about the example entries; a course's own sweeps write them again.
STUDIES_FOLDER = Path("studies")


def cmd_clear(args) -> int:
    """Remove everything that belongs to the example challenge, so a fork starts with an empty board whose
    tests still pass: every file under the submissions folder (the entries, their helpers and their tests in
    submissions/tests/), the records, the board and its plot, studies/ and the try-outs and smoke runs in .bench/.
    Then write the empty board, a submissions/README.md (so git keeps the folder in a fresh clone), and the
    rules in pyproject.toml without the example's own comments and compromises (new_challenge_settings)."""
    from bench import leaderboard

    challenge = config.load_challenge(args)
    board = Path(challenge.leaderboard)
    doomed = [path for path in (Path(challenge.submissions), Path(challenge.results), board, board.with_suffix(".png"),
                                STUDIES_FOLDER, config.TRYOUT_FOLDER, config.SMOKE_FOLDER) if path.exists()]
    settings = Path(args.config)
    examples = [p.stem for p in Path(challenge.submissions).glob("*.py")]
    rules = settings.read_text() if settings.exists() else None
    new_rules = new_challenge_settings(rules, examples) if rules is not None else None
    if not args.yes:
        print("would remove: " + (", ".join(f"{p.as_posix()}/" if p.is_dir() else p.as_posix() for p in doomed) or "nothing"))
        if new_rules != rules:
            print(f"would rewrite {settings.as_posix()}: {CLEARED_SETTINGS_NOTE}")
        print("run `python -m bench clear --yes` to do it and write an empty board")
        return 0
    for path in doomed:
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    folder = Path(challenge.submissions)
    folder.mkdir(parents=True)
    (folder / SUBMISSIONS_README).write_text(SUBMISSIONS_NOTE.format(folder=folder.as_posix()))
    if new_rules != rules:
        settings.write_text(new_rules)
        print(f"rewrote {settings.as_posix()}: {CLEARED_SETTINGS_NOTE}")
        challenge = config.load_challenge(args)  # the empty board's header shows the new challenge's settings
    print(f"removed {len(doomed)} path(s); wrote {leaderboard.write(challenge)} (empty) and {(folder / SUBMISSIONS_README).as_posix()}; "
          f"students add entries with `python -m bench new NAME`")
    return 0


# Written by `clear` into the empty submissions folder: git keeps no empty folder, and a student's fresh clone
# needs this one. Not a .py file, so never an entry.
SUBMISSIONS_README = "README.md"
SUBMISSIONS_NOTE = """# Entries

One Python file per entry: `python -m bench new your_name` writes `{folder}/your_name.py`, a commented starter.
Try it with `python -m bench check {folder}/your_name.py`, then open a pull request that adds that one file.
Files whose name starts with `_` are helpers, never entries. See "Run a classroom challenge" in the README.
"""
# The example board's own choices, dropped by `clear` while they still hold the example's values: its compromises
# for a 2-core machine and a board grown over sessions, and a validation count that fits MNIST alone. A new
# challenge starts from the defaults (every entry trains every seed; 3600 s a run; a validation size that fits
# any dataset). A teacher who set other values keeps them.
EXAMPLE_ONLY_SETTINGS = {"one_seed_above": "10000", "time_limit": "14400", "validation_size": "5000"}
# The comment each [tool.bench] line carries after `clear` (the example's comments speak of its entries).
NEW_CHALLENGE_COMMENTS = {
    "dataset": "mnist, fashion_mnist or digits",
    "seeds": "runs per entry: seeds 0..N-1",
    "max_epochs": "the epoch cap; early stopping ends most runs sooner",
    "time_limit": "seconds per entry and seed",
    "max_params": "the budget: bigger entries are OVER_BUDGET before they train",
    "validation_size": "images carved out of the training split (left out: 5,000 from 50,000 or more, else 10 %)",
    "engine": "auto: the batch-minor JAX engine or model.fit, whichever is faster for the entry here",
    "tiers": "upper bounds of the board's parameter tiers",
}
CLEARED_SETTINGS_NOTE = (f"the example's {', '.join(EXAMPLE_ONLY_SETTINGS)} go back to the defaults, and comments "
                         "that speak of the example entries go; your other settings stay")
TRAILING_COMMENT = re.compile(r"^(?P<setting>\s*(?P<key>[A-Za-z_][\w-]*)\s*=\s*(?P<value>.*?))\s+#.*$")


def new_challenge_settings(text: str, examples: list[str]) -> str:
    """`text` (pyproject.toml) for a new challenge: in [tool.bench], EXAMPLE_ONLY_SETTINGS still at the example's
    values are dropped and each setting's comment becomes NEW_CHALLENGE_COMMENTS's (or none); anywhere, a
    comment line that names an example entry or says "example" is dropped. Everything else stays as written."""
    lines, table = [], None
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("["):
            table = stripped
        elif stripped.startswith("#"):
            if "example" in stripped.lower() or any(re.search(rf"\b{name}\b", stripped) for name in examples):
                continue
        elif table == "[tool.bench]" and "=" in stripped:
            line = _new_challenge_line(line)
            if line is None:
                continue
        lines.append(line)
    return "\n".join(lines) + ("\n" if text.endswith("\n") else "")


def _new_challenge_line(line: str) -> str | None:
    """One `key = value  # comment` line of [tool.bench] after `clear`; None when the line goes."""
    match = TRAILING_COMMENT.match(line)
    key, _, value = line.partition("=")
    key, value = key.strip(), (match["value"] if match else value).strip()
    if EXAMPLE_ONLY_SETTINGS.get(key) == value:
        return None
    if not match:
        return line
    comment = NEW_CHALLENGE_COMMENTS.get(key)
    return f"{match['setting']:<28} # {comment}" if comment else match["setting"]


def name_problem(name: str) -> str | None:
    suggestion = discover.suggested_name(name)
    if name.startswith("_"):
        return f"{name!r} starts with '_', which marks helper files, never entries: call it {suggestion!r}"
    if not name or not discover.ENTRY_NAME.fullmatch(name) or not name.isascii():
        return f"{name!r} is not an entry name: use letters, digits and '_' only, e.g. {suggestion!r}"
    return None


@dataclasses.dataclass(frozen=True)
class HiddenTestSet:
    images: np.ndarray  # float32, scaled as data.load scales the dataset's own images
    labels: np.ndarray
    digest: str
    description: str


def hidden_test_set(challenge: config.Challenge) -> HiddenTestSet:
    path = Path(challenge.test_set).expanduser()
    if not path.is_file():
        raise config.ConfigError(
            f"hidden test set {path}: no such file. Point test_set in [tool.bench] or {config.TEST_SET_ENV} at an .npz "
            "holding x_test and y_test, or unset both to score on the dataset's own test split")
    stat = path.stat()
    from bench import data

    scale = data.pixel_scale(challenge.dataset)
    return _read(str(path.resolve()), stat.st_mtime_ns, stat.st_size, challenge.board_name, scale, challenge.test_limit)


@functools.lru_cache(maxsize=4)  # read once per evaluation, not once per run; a changed file is read again
def _read(path: str, mtime_ns: int, size: int, dataset: str, scale: float | None, test_limit: int | None) -> HiddenTestSet:
    """`scale`: what the dataset's raw pixels are divided by (data.pixel_scale), None for float features used as they are."""
    try:
        with np.load(path, allow_pickle=False) as arrays:
            missing = {"x_test", "y_test"} - set(arrays.files)
            if missing:
                raise config.ConfigError(f"hidden test set {path} lacks {sorted(missing)}: save it with np.savez(path, x_test=..., y_test=...)")
            images, labels = arrays["x_test"][:test_limit], arrays["y_test"][:test_limit]
    except (OSError, ValueError) as error:
        raise config.ConfigError(f"hidden test set {path} is not a readable .npz file: {error}") from None
    if labels.ndim != 1 or len(labels) != len(images) or not np.issubdtype(labels.dtype, np.integer):
        raise config.ConfigError(f"hidden test set {path}: y_test must hold one integer label per image of x_test "
                                 f"({len(images)} images, y_test has shape {labels.shape} and type {labels.dtype})")
    if scale is None:
        if not np.issubdtype(images.dtype, np.floating) or not np.isfinite(images).all():
            raise config.ConfigError(f"hidden test set {path}: x_test must hold float features as {dataset}'s file does "
                                     f"(used as they are), all finite; got {images.dtype}")
        images, scale = images.astype("float32"), 1.0
    elif not np.issubdtype(images.dtype, np.integer) or (images.size and not 0 <= images.min() <= images.max() <= scale):
        seen = f"{images.dtype} values from {images.min()} to {images.max()}" if images.size else str(images.dtype)
        raise config.ConfigError(
            f"hidden test set {path}: x_test must hold the raw pixels as {dataset} stores them, whole numbers from 0 to {scale:.0f} "
            f"(e.g. uint8), not {seen}: save the images before any scaling (the harness scales them as it scales the dataset)")
    digest = hashlib.sha256()
    for array in (images, labels):
        digest.update(str(array.shape).encode())
        digest.update(np.ascontiguousarray(array).tobytes())
    description = f"hidden test set {Path(path).name} ({len(labels):,} images, sha256 {digest.hexdigest()[:12]})"
    return HiddenTestSet(np.true_divide(images, np.float32(scale), dtype="float32"), labels.astype("int64"), digest.hexdigest(), description)


def check_test_set(challenge: config.Challenge, input_shape: tuple, num_classes: int) -> None:
    """Refuse a hidden test set that does not fit the dataset, before any training."""
    hidden = hidden_test_set(challenge)
    if hidden.images.shape[1:] != tuple(input_shape):
        raise config.ConfigError(f"hidden test set {challenge.test_set}: images of shape {hidden.images.shape[1:]}, "
                                 f"but {challenge.board_name}'s images have shape {tuple(input_shape)}")
    if len(hidden.labels) and not 0 <= hidden.labels.min() <= hidden.labels.max() < num_classes:
        raise config.ConfigError(f"hidden test set {challenge.test_set}: labels must lie in 0..{num_classes - 1}")
