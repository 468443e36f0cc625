"""The challenge settings: `[tool.bench]` in pyproject.toml, overridden per run by CLI flags."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import sys
from pathlib import Path

from bench import data
from bench.data import AUTO_VALIDATION_RULE, DATASETS

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib


@dataclasses.dataclass(frozen=True)
class Callback:
    monitor: str
    factor: float | None
    patience: int
    min_delta: float
    min_lr: float | None = None


@dataclasses.dataclass(frozen=True)
class Smoke:
    """`evaluate --smoke`: a short run that shows an entry learns (pull-request checks, try-outs).

    Set in [tool.bench.smoke]; a limit above the dataset's size takes the whole split, and a fractional
    validation size fits any dataset, so the defaults suit digits (1,437 training images) and MNIST alike."""
    seeds: int = 1
    max_epochs: int = 2
    train_limit: int | None = 5000
    test_limit: int | None = 2000
    validation_size: int | float = 0.2
    time_limit: float = 900.0


SCORING_RULES = ("tiers", "golf", "micronet", "threshold", "points")


@dataclasses.dataclass(frozen=True)
class Scoring:
    """[tool.bench.scoring]: how the board ranks entries. Each rule's formula is in bench.scoring; rendering
    only, so changing it retrains nothing. Accuracies are fractions (0.98), sizes counts or bits."""
    rule: str = "tiers"  # one of SCORING_RULES
    target: float | None = None  # the accuracy golf, micronet, points and threshold ask for
    strict: bool = False  # golf: the lower end of the 95 % interval (mean - 1.96 SE) must reach the target
    size: str = "total_params"  # golf ranks by it: total_params, nonzero_params or storage_bits
    reference: str | None = None  # micronet: the entry whose storage and MACs count as 1 each
    max_params: int | None = None  # threshold: more parameters fail
    max_macs: int | None = None  # threshold: more MACs per image fail
    max_epochs: float | None = None  # threshold: more epochs (mean over seeds) fail
    baseline: float | None = None  # points: the accuracy worth 0 points
    full_points: float = 100.0  # points: at the target
    curve: str = "linear"  # points: "linear" or "exponential" between baseline and target
    steepness: float = 4.0  # points, exponential curve: (e^(k x) - 1) / (e^k - 1) with x the way from baseline to target
    bonus: float = 0.0  # points: extra points, linear from the target up to `ceiling`
    ceiling: float | None = None  # points: the accuracy that earns the whole bonus
    float_bits: int = 32  # storage: bits per float32 weight (16: count them as half precision, as MicroNet allowed)
    sparse_macs: bool = False  # show MACs with zero weights skipped (and micronet scores with them)
    alpha: float = 0.05  # significance level of the tests that group rows (after Holm's correction)


@dataclasses.dataclass(frozen=True)
class Challenge:
    # A built-in name (data.DATASETS) or the path of a file of one's own (bench.datafile), relative to the folder
    # bench runs in. [tool.bench.dataset] may give a file its board name, class names and a description.
    dataset: str = "mnist"
    dataset_name: str | None = None
    class_names: tuple[str, ...] | None = None
    dataset_description: str | None = None
    data_dir: str | None = None
    submissions: str = "submissions"
    results: str = "results"
    leaderboard: str = "leaderboard.md"
    seeds: int = 3
    max_epochs: int = 1000
    time_limit: float = 3600.0
    max_params: int = 1_000_000
    # Images carved out of the training split: a count, or a fraction of them (0.1 fits every dataset); None
    # (no setting): data.AUTO_VALIDATION's rule, 5,000 from a split of 50,000 or more, else 10 %, which fits any dataset.
    validation_size: int | float | None = None
    batch_size: int = 128
    optimizer: str = "adam"
    learning_rate: float = 1e-3
    tiers: tuple[int, ...] = (100, 500, 1000, 5000, 10000, 100000)
    # Smoke runs (tests, pull-request checks) train on the first N images only.
    train_limit: int | None = None
    test_limit: int | None = None
    reduce_lr: Callback = Callback("val_loss", 0.5, 5, 1e-4, 1e-5)
    early_stopping: Callback = Callback("val_loss", None, 15, 1e-5)
    # Entries with more parameters than this train seed 0 only (None: every entry trains `seeds` seeds).
    # Seeds matter most for small models, whose accuracy moves most from one seed to the next, and
    # cost least there; a board of big entries trains in a third of the time.
    one_seed_above: int | None = None
    # Memory of each run's processes together (default: half of this machine's); see bench.containment.
    memory_limit_mb: int | None = None
    # An .npz with x_test, y_test kept out of the repository (or BENCH_TEST_SET): scored instead of the
    # dataset's test split, by the runner, so the worker never holds its labels. Its content, not its
    # path, joins the cache key (bench.plan), and the board renders without it.
    test_set: str | None = None
    # Where entries' code runs: "auto" (bubblewrap when it works here, else unsandboxed with a warning),
    # "required" (refuse to run without it) or "off" (a trusted machine). See bench.sandbox.
    sandbox: str = "auto"
    # How entries train: "keras" (model.fit on TensorFlow), "jax" (bench.engine's batch-minor JAX engine for the
    # models it runs, model.fit for the rest) or "auto" (of the two, whichever took less CPU a step for this model
    # on this machine, measured before each run: bench.engine_choice). Each record's `engine` says which ran, and
    # under auto a note says why.
    engine: str = "keras"
    # Whether models with code of their own (subclassed layers or models, Lambda layers, keras.ops between
    # layers) are scored, on the audit's custom-code path (bench.graph_audit); false: only models Keras rebuilds
    # from its own layers (bench.rebuild) are, and the others are INVALID. A classroom may want false.
    allow_custom_code: bool = True
    smoke: Smoke = Smoke()
    scoring: Scoring = Scoring()

    @property
    def board_name(self) -> str:
        """The dataset's name on the board, in records and in the results folder: a built-in's own name, else
        [tool.bench.dataset] name, else the file's stem."""
        if data.is_builtin(self.dataset):
            return self.dataset
        return self.dataset_name or Path(self.dataset.rstrip("/")).stem

    def protocol(self) -> dict:
        """The settings that change what a training run produces: these make up the cache key.

        Paths, the number of seeds (seed 0 is the same run whatever the count),
        the time limit and the tiers only decide what is run or shown.
        """
        fields = dataclasses.asdict(self)
        for name in ("data_dir", "submissions", "results", "leaderboard", "seeds", "one_seed_above", "time_limit", "tiers",
                     "memory_limit_mb", "test_set", "sandbox", "smoke", "scoring", "dataset_name", "class_names",
                     "dataset_description"):
            fields.pop(name)
        # A file's content joins the key through its fingerprint; its path would tie records to one machine's folders.
        fields["dataset"] = self.board_name
        if fields["allow_custom_code"]:
            fields.pop("allow_custom_code")  # the default joins no key: records made before the setting stay cached
        if fields["engine"] == "keras":
            fields.pop("engine")  # the default joins no key, so records made before the setting existed stay cached
        else:
            from bench import ENGINE_VERSION

            fields["engine_version"] = ENGINE_VERSION
        return fields

    def protocol_hash(self) -> str:
        return sha256_of_json(self.protocol())


class ConfigError(ValueError):
    pass


TEST_SET_ENV = "BENCH_TEST_SET"
# Where a try-out's records and board go (git-ignored): runs whose settings differ from the challenge's.
TRYOUT_FOLDER = Path(".bench") / "try"
# Where `evaluate --smoke` writes (git-ignored), apart from the try-outs, so neither overwrites the other's records.
SMOKE_FOLDER = Path(".bench") / "smoke"
SANDBOX_MODES = ("auto", "required", "off")
ENGINES = ("keras", "auto", "jax")
MIN_MEMORY_MB = 1024


def sha256_of_json(value) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()


_CALLBACK_KEYS = {f.name for f in dataclasses.fields(Callback)}
_SMOKE_KEYS = {f.name for f in dataclasses.fields(Smoke)}
_SCORING_KEYS = {f.name for f in dataclasses.fields(Scoring)}
# Given in [tool.bench.dataset] (DATASET_KEYS), not as settings of their own.
_DATASET_FIELDS = {"name": "dataset_name", "classes": "class_names", "description": "dataset_description"}
DATASET_KEYS = ("path", *_DATASET_FIELDS)
_TOP_KEYS = {f.name for f in dataclasses.fields(Challenge)} - set(_DATASET_FIELDS.values())
BOARD_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


def load(pyproject: str | Path = "pyproject.toml", **overrides) -> Challenge:
    """Read `[tool.bench]` (missing file or table: the defaults), then apply non-None overrides."""
    path = Path(pyproject)
    table = {}
    if path.exists():
        with path.open("rb") as f:
            try:
                table = tomllib.load(f).get("tool", {}).get("bench", {})
            except tomllib.TOMLDecodeError as error:
                raise ConfigError(f"{path} is not valid TOML ({error}){_twice_named_hint(path)}") from None
    if os.environ.get(TEST_SET_ENV):
        table["test_set"] = os.environ[TEST_SET_ENV]
    table = {**table, **{k: v for k, v in overrides.items() if v is not None}}
    return from_dict(table, source=str(path))


def _twice_named_hint(path: Path) -> str:
    """What to change when `path` names the dataset both in [tool.bench] and as a [tool.bench.dataset] table, which
    TOML refuses as one key defined twice."""
    text = path.read_text(errors="replace")
    if "[tool.bench.dataset]" in text and re.search(r"(?m)^\s*dataset\s*=", text):
        return (": `dataset = ...` in [tool.bench] and the [tool.bench.dataset] table both name the dataset; keep the "
                "table and delete the `dataset = ...` line")
    return ""


def from_dict(table: dict, source: str = "config", check_data: bool = True) -> Challenge:
    """The Challenge of a [tool.bench] table, checked whole. Raises ConfigError saying what to change. `check_data`
    False: a worker's copy of settings already checked, whose dataset file it cannot (and need not) read."""
    table = _flatten_dataset(table, source)
    unknown = set(table) - _TOP_KEYS - set(_DATASET_FIELDS.values())
    if unknown:
        raise ConfigError(
            f"{source}: unknown [tool.bench] setting(s) {sorted(unknown)}; known settings are {sorted(_TOP_KEYS)}"
        )
    defaults = Challenge()
    values = {}
    for name, value in table.items():
        default = getattr(defaults, name)
        if name in ("reduce_lr", "early_stopping"):
            extra = set(value) - _CALLBACK_KEYS
            if extra:
                raise ConfigError(f"{source}: [tool.bench.{name}] has unknown key(s) {sorted(extra)}")
            value = dataclasses.replace(default, **value)
        elif name == "smoke":
            extra = set(value) - _SMOKE_KEYS
            if extra:
                raise ConfigError(f"{source}: [tool.bench.smoke] has unknown key(s) {sorted(extra)}; known keys are {sorted(_SMOKE_KEYS)}")
            value = dataclasses.replace(default, **value)
        elif name == "scoring":
            value = scoring_from_dict(value, source)
        elif name == "tiers":
            value = tuple(sorted(int(t) for t in value))
        elif name == "class_names":
            value = None if value is None else tuple(value)
        elif isinstance(default, bool) and not isinstance(value, bool):
            raise ConfigError(f"{source}: {name} must be true or false, got {value!r}")
        elif isinstance(default, bool) or value is None:
            pass
        elif isinstance(default, (int, float)) and not isinstance(value, (int, float)):
            raise ConfigError(f"{source}: {name} must be a number, got {value!r}")
        elif isinstance(default, float):
            value = float(value)
        values[name] = value
    challenge = dataclasses.replace(defaults, **values)
    if challenge.one_seed_above is not None and (isinstance(challenge.one_seed_above, bool) or not isinstance(challenge.one_seed_above, int)
                                                 or challenge.one_seed_above < 0):
        raise ConfigError(f"{source}: one_seed_above must be a whole number of parameters, got {challenge.one_seed_above!r}")
    for name in ("seeds", "max_epochs", "max_params", "batch_size"):
        if getattr(challenge, name) < 1:
            raise ConfigError(f"{source}: {name} must be at least 1, got {getattr(challenge, name)}")
    size = challenge.validation_size
    if size is not None and (isinstance(size, bool) or not isinstance(size, (int, float))
                             or not (size >= 1 and float(size).is_integer() or 0 < size < 0.5)):
        raise ConfigError(f"{source}: validation_size must be a whole number of images (e.g. 5000) or a fraction below 0.5 "
                          f"(e.g. 0.1), or left out ({AUTO_VALIDATION_RULE}), got {size!r}")
    if isinstance(size, float) and size >= 1:
        challenge = dataclasses.replace(challenge, validation_size=int(size))
    if challenge.sandbox not in SANDBOX_MODES:
        raise ConfigError(f"{source}: sandbox = {challenge.sandbox!r}; choose one of {', '.join(repr(m) for m in SANDBOX_MODES)} "
                          "(auto: bubblewrap when installed; required: refuse to run without it; off: a trusted machine)")
    if challenge.engine not in ENGINES:
        raise ConfigError(f"{source}: engine = {challenge.engine!r}; choose 'keras' (model.fit on TensorFlow, every entry), "
                          "'jax' (the batch-minor JAX engine where it applies, model.fit elsewhere) or 'auto' (whichever "
                          "of the two is faster for each entry on this machine, measured before it trains)")
    memory = challenge.memory_limit_mb
    if memory is not None and (isinstance(memory, bool) or not isinstance(memory, int) or memory < MIN_MEMORY_MB):
        raise ConfigError(f"{source}: memory_limit_mb must be a whole number of megabytes, at least {MIN_MEMORY_MB} "
                          f"(TensorFlow alone takes about 600 MB), got {memory!r}")
    if check_data:
        _check_dataset(challenge, source)
    if challenge.smoke != defaults.smoke:  # its values must make a valid challenge too: checked here, once
        from_dict({**{k: v for k, v in table.items() if k != "smoke"}, **_smoke_values(challenge.smoke)}, f"{source} [tool.bench.smoke]", False)
    return challenge


def _flatten_dataset(table: dict, source: str) -> dict:
    """[tool.bench.dataset] (a table: path, name, classes, description) as the Challenge's own fields."""
    given = table.get("dataset")
    if not isinstance(given, dict):
        if given is not None and not isinstance(given, str):
            raise ConfigError(f"{source}: dataset = {given!r}; give a name ({', '.join(DATASETS)}), a path, or a [tool.bench.dataset] table")
        return table
    extra = set(given) - set(DATASET_KEYS)
    if extra or "path" not in given:
        raise ConfigError(f"{source}: [tool.bench.dataset] " + (f"has unknown key(s) {sorted(extra)}; " if extra else "needs path; ")
                          + f"its keys are {', '.join(DATASET_KEYS)} (path: a built-in name or your file, the others optional)")
    if not isinstance(given.get("classes", []), list):
        raise ConfigError(f"{source}: [tool.bench.dataset] classes = {given['classes']!r}: give a list of names, one per label 0..K-1")
    flat = {k: v for k, v in table.items() if k != "dataset"}
    flat["dataset"] = given["path"]
    flat.update({_DATASET_FIELDS[k]: v for k, v in given.items() if k != "path"})
    return flat


def _check_dataset(challenge: Challenge, source: str) -> None:
    """A file of one's own is read and checked whole here, so that every fault is reported when the settings load,
    before any worker starts (data.describe lists them all)."""
    where = f"{source}: [tool.bench.dataset]"
    if not isinstance(challenge.dataset, str) or not challenge.dataset:
        raise ConfigError(f"{source}: dataset must be a name ({', '.join(DATASETS)}) or the path of your file, got {challenge.dataset!r}")
    if data.is_builtin(challenge.dataset):
        if challenge.dataset_name or challenge.class_names:
            raise ConfigError(f"{where}: name and classes are for a file of your own; {challenge.dataset} keeps its own")
        return
    try:
        found = data.describe(challenge.dataset)
    except data.DataError as error:
        raise ConfigError(f"{source}: {error}") from None
    if not BOARD_NAME.fullmatch(challenge.board_name):
        raise ConfigError(f"{where}: the board name {challenge.board_name!r} names the results folder: use letters, digits, "
                          "'_', '-' and '.' only (set name in [tool.bench.dataset], or rename the file)")
    if challenge.board_name in DATASETS:
        raise ConfigError(f"{where}: your file's board name {challenge.board_name!r} is a built-in dataset's: "
                          "set another name in [tool.bench.dataset], or rename the file")
    names = challenge.class_names
    if names is not None and (len(names) != found.num_classes or not all(isinstance(n, str) for n in names)):
        raise ConfigError(f"{where}: classes lists {len(names)} name(s), but {challenge.dataset}'s labels make "
                          f"{found.num_classes} classes: give one string per class, in label order 0..{found.num_classes - 1}")
    if challenge.dataset_description is not None and not isinstance(challenge.dataset_description, str):
        raise ConfigError(f"{where}: description must be a string")


def scoring_from_dict(table: dict, source: str) -> Scoring:
    """[tool.bench.scoring] checked whole: every mistake is reported here, before any work starts."""
    where = f"{source}: [tool.bench.scoring]"
    extra = set(table) - _SCORING_KEYS
    if extra:
        raise ConfigError(f"{where} has unknown key(s) {sorted(extra)}; known keys are {sorted(_SCORING_KEYS)}")
    scoring = dataclasses.replace(Scoring(), **table)
    if scoring.rule not in SCORING_RULES:
        raise ConfigError(f"{where} rule = {scoring.rule!r}; choose one of {', '.join(repr(r) for r in SCORING_RULES)}")
    for name in ("target", "baseline", "ceiling"):
        value = getattr(scoring, name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1):
            raise ConfigError(f"{where} {name} = {value!r}: give an accuracy as a fraction between 0 and 1 (0.98, not 98)")
    if scoring.rule in ("golf", "micronet", "points") and scoring.target is None:
        raise ConfigError(f"{where} rule = {scoring.rule!r} needs target, the accuracy to reach, e.g. target = 0.98")
    if scoring.rule == "threshold" and scoring.target is None and not (scoring.max_params or scoring.max_macs or scoring.max_epochs):
        raise ConfigError(f"{where} rule = 'threshold' needs at least one criterion: target, max_params, max_macs or max_epochs")
    if scoring.rule == "micronet" and not scoring.reference:
        raise ConfigError(f"{where} rule = 'micronet' needs reference, the entry whose storage and MACs count as 1")
    if scoring.rule == "points":
        if scoring.baseline is None or scoring.baseline >= scoring.target:
            raise ConfigError(f"{where} rule = 'points' needs baseline (0 points) below target (full points), "
                              f"got baseline = {scoring.baseline!r}, target = {scoring.target!r}")
        if scoring.curve not in ("linear", "exponential"):
            raise ConfigError(f"{where} curve = {scoring.curve!r}; choose 'linear' or 'exponential'")
        if scoring.bonus and (scoring.ceiling is None or scoring.ceiling <= scoring.target):
            raise ConfigError(f"{where} bonus needs ceiling, the accuracy above target that earns all of it")
    if scoring.size not in ("total_params", "nonzero_params", "storage_bits"):
        raise ConfigError(f"{where} size = {scoring.size!r}; choose 'total_params', 'nonzero_params' or 'storage_bits'")
    if scoring.float_bits not in (32, 16):
        raise ConfigError(f"{where} float_bits = {scoring.float_bits!r}; choose 32 or 16")
    if isinstance(scoring.alpha, bool) or not isinstance(scoring.alpha, (int, float)) or not 0 < scoring.alpha < 1:
        raise ConfigError(f"{where} alpha = {scoring.alpha!r}: give a significance level between 0 and 1, e.g. 0.05")
    return scoring


def _smoke_values(smoke: Smoke) -> dict:
    return {k: v for k, v in dataclasses.asdict(smoke).items() if v is not None}


def to_dict(challenge: Challenge) -> dict:
    return dataclasses.asdict(challenge)


# Settings a command-line flag may override for one run: [tool.bench] name -> the flag.
RUN_FLAGS = {
    "dataset": "--dataset", "data_dir": "--data-dir", "seeds": "--seeds", "max_epochs": "--epochs",
    "time_limit": "--time-limit", "max_params": "--max-params", "validation_size": "--validation-size",
    "train_limit": "--train-limit", "test_limit": "--test-limit", "results": "--results", "leaderboard": "--leaderboard",
    "test_set": "--test-set", "memory_limit_mb": "--memory-limit", "sandbox": "--sandbox", "engine": "--engine",
}


def add_run_flags(parser, with_paths: bool = True, omit: tuple[str, ...] = ()) -> None:
    """Flags that override [tool.bench] for one run (argparse), less the settings named in `omit` (those a
    command does not use). The leaderboard takes them too: it shows the records made under the settings
    it is given, so render with the flags you evaluated with."""

    def flag(setting, **kwargs):
        if setting not in omit:
            parser.add_argument(RUN_FLAGS[setting], dest=setting, **kwargs)

    if with_paths:
        parser.add_argument("paths", nargs="*", help="submission files or folders (default: the submissions folder)")
    flag("dataset", metavar="NAME|PATH",
         help=f"the dataset: {', '.join(DATASETS)}, or the path of your own .npz file or IDX folder (default: [tool.bench] dataset, mnist)")
    flag("data_dir", help="folder with a built-in dataset's local copy: mnist.npz, the four IDX files, cifar-10-batches-py (or set BENCH_DATA_DIR)")
    flag("seeds", type=int, help="seeds per entry, 0..N-1 (default: [tool.bench] seeds, 3)")
    flag("max_epochs", type=int, help="epoch cap for every entry (default: [tool.bench] max_epochs, 1000)")
    flag("time_limit", type=float, help="seconds per entry and seed (default: [tool.bench] time_limit, 3600)")
    flag("max_params", type=int, help="parameter budget; larger entries are OVER_BUDGET (default: [tool.bench] max_params)")
    flag("validation_size", type=_count_or_fraction, metavar="N|F",
         help="validation images carved out of the training split: a count (5000) or a fraction (0.1) "
         f"(default: [tool.bench] validation_size; without one, {AUTO_VALIDATION_RULE.replace('%', '%%')})")  # argparse formats %
    flag("train_limit", type=int, help="train on the first N training images only (smoke runs)")
    flag("test_limit", type=int, help="score on the first N test images only (smoke runs)")
    flag("test_set", help="hidden test set: an .npz with x_test, y_test kept out of the repository (or BENCH_TEST_SET)")
    flag("memory_limit_mb", type=int, metavar="MB", help="memory of each run's processes together (default: half of this machine's)")
    flag("sandbox", choices=SANDBOX_MODES,
         help="run entries in bubblewrap: auto (when installed), required, or off (a trusted machine)")
    flag("engine", choices=ENGINES,
         help="keras: model.fit on TensorFlow; jax: the batch-minor JAX engine for the models it runs; auto: whichever of "
              "the two is faster for the entry here, measured (default: [tool.bench] engine, keras)")
    flag("results", help="folder of run records (default: results)")
    flag("leaderboard", help="markdown file to write (default: leaderboard.md)")


def _count_or_fraction(text: str) -> int | float:
    try:
        return int(text)
    except ValueError:
        return float(text)  # argparse turns a ValueError into "invalid _count_or_fraction value"


def load_challenge(args) -> Challenge:
    """The challenge of `args.config`'s [tool.bench], with the run flags given in `args` applied
    (after [tool.bench.smoke]'s values when `args.smoke` is set)."""
    flags = {name: getattr(args, name, None) for name in RUN_FLAGS}
    if getattr(args, "smoke", False):
        flags = {**_smoke_values(load(args.config).smoke), **{k: v for k, v in flags.items() if v is not None}}
    challenge = load(args.config, **flags)
    if flags.get("validation_size") is not None:
        return challenge
    return _validation_for_limit(challenge, other_data=flags.get("dataset") is not None)


def _validation_for_limit(challenge: Challenge, other_data: bool = False) -> Challenge:
    """A run on fewer training images than [tool.bench]'s validation count was set for (a --train-limit, or another
    dataset: --dataset digits or a small file of one's own) keeps that count when it fits; when it cannot (a count of
    at least half the images), the run takes the default rule instead and says so: the person asked for other data,
    not for a refusal. A --validation-size given beside them is always taken as it is, and a count that does not fit
    [tool.bench]'s own dataset is refused (data.split_validation): the settings need changing."""
    size = challenge.validation_size
    if not isinstance(size, int) or not (other_data or challenge.train_limit):
        return challenge
    images = data.train_count(challenge.dataset)
    limit = min(challenge.train_limit or images, images)
    if size < limit // 2:
        return challenge
    why = f"--train-limit {challenge.train_limit}" if limit == challenge.train_limit else f"{challenge.board_name}'s {images:,} training images"
    print(f"note: validation_size = {size} does not fit {why}; this run takes {AUTO_VALIDATION_RULE} "
          "(pass --validation-size to choose)", file=sys.stderr)
    return dataclasses.replace(challenge, validation_size=None)


# The settings whose change makes `evaluate` a try-out (bench.tune has its own, fewer).
TRYOUT_FLAGS = ("dataset", "seeds", "max_epochs", "max_params", "validation_size", "train_limit", "test_limit", "test_set")


def tryout_destination(args, challenge: Challenge, flags: tuple[str, ...] = TRYOUT_FLAGS) -> Challenge:
    """`challenge`, with its records and board moved to a git-ignored folder when its settings are not the
    challenge's own and no --results/--leaderboard says where they go: `evaluate --smoke` to SMOKE_FOLDER,
    any other run whose `flags` differ from [tool.bench] (a try-out) to TRYOUT_FOLDER. So a student's
    `evaluate FILE --epochs 5` leaves results/ and leaderboard.md as committed, and a smoke run leaves the try-out."""
    own = load(args.config)
    changed = [name for name in flags if getattr(challenge, name) != getattr(own, name)]
    smoke = getattr(args, "smoke", False)
    if not (changed or smoke) or args.results or getattr(args, "leaderboard", None):
        return challenge
    folder = SMOKE_FOLDER if smoke else TRYOUT_FOLDER
    shown = ", ".join(f"{name}={getattr(challenge, name)}" for name in changed)
    what = "smoke run ([tool.bench.smoke]'s settings)" if smoke else f"try-out ({shown} differ from [tool.bench])"
    print(f"{what}: its records, tuned values and board go to {folder.as_posix()}/, the committed ones are not touched; "
          "run without these flags to work on the leaderboard's own", file=sys.stderr)
    return dataclasses.replace(challenge, results=(folder / "results").as_posix(), leaderboard=(folder / "leaderboard.md").as_posix())
