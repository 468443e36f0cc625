"""`python -m bench tune ENTRY --max-params N`: search an entry's build_hypermodel() within the budget.

keras-tuner runs the search; this module adds the benchmark's rules to it:
- every candidate is built and counted (all weights, trainable or not) before it trains; one over
  the budget becomes a FAILED trial whose message says why, and is never trained;
- trials train like `evaluate` trains (the challenge's callbacks, then the entry's own) on the
  training images minus the validation split, and are scored on val_accuracy: the tuner never
  sees the test split;
- the search lives in tuning/<dataset>/<entry>/, so the same command continues it (`--fresh`
  starts over); the best values go to results/<dataset>/<entry>/hyperparameters.json, which
  `evaluate` trains with and which is part of the entry's cache key;
- a search under try-out settings (a dataset, validation size or training limit other than the
  challenge's: TUNE_TRYOUT_FLAGS) keeps its search and values in config.TRYOUT_FOLDER, as a try-out
  `evaluate` keeps its records there: only the challenge's own settings write the committed files;
- `--chief` and `--worker ID` use keras-tuner's own distributed mode: the chief holds the search
  and trains nothing, each worker asks it for trials.

TensorFlow and keras-tuner are imported only when a search runs: `evaluate` and `leaderboard`
import this module for best_hyperparameters() alone.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from pathlib import Path

from bench import config, data, discover, results, train
from bench.status import EntryProblem

TUNERS = ("random", "bayesian", "hyperband")
DEFAULT_TRIALS = 10
OBJECTIVE = "val_accuracy"
HYPERPARAMETERS_FILE = "hyperparameters.json"
# Written beside keras-tuner's files: what the trials were measured under, checked before continuing.
SETTINGS_FILE = "bench_search.json"
# Written into each trial's folder by the process that ran it.
TRIAL_OUTCOME_FILE = "bench_trial.json"
DEFAULT_TUNING_DIR = "tuning"
# The settings that make a search a try-out. Not the budget or the epoch cap: those are the search's own knobs
# (`--max-params 1000 --epochs 3` searches for the committed board under its 1,000,000 and 1000 epochs).
TUNE_TRYOUT_FLAGS = ("dataset", "validation_size", "train_limit")
DISTRIBUTION_ENV = ("KERASTUNER_TUNER_ID", "KERASTUNER_ORACLE_IP", "KERASTUNER_ORACLE_PORT")
# The oracle's gRPC port has no authentication: anyone who reaches it can steer the search.
LOOPBACK = "127.0.0.1"
DEFAULT_PORT = 8000
# keras-tuner stops a search after 3 FAILED trials in a row; under a tight budget many candidates
# in a row are rejected, which is the search working, not crashing.
NEVER_STOP_ON_FAILURES = sys.maxsize
OVER_BUDGET_REASON = "is over the budget"


def register(subparsers) -> None:
    parser = subparsers.add_parser("tune", help="search an entry's build_hypermodel() within the parameter budget")
    parser.add_argument("entry", help="the submission file, e.g. submissions/tunable_convnet.py")
    # A search trains on the validation split in this process: no seeds, test images, board or sandbox to set.
    config.add_run_flags(parser, with_paths=False, omit=("seeds", "time_limit", "test_limit", "test_set", "memory_limit_mb",
                                                         "sandbox", "leaderboard", "engine"))
    parser.add_argument("--tuner", choices=TUNERS, default="random", help="keras-tuner's search algorithm (default: random)")
    parser.add_argument("--trials", type=int,
                        help=f"candidates to try in all, rejected ones included (default {DEFAULT_TRIALS}); "
                             "a continued search counts the trials it already has; hyperband sets its own number from --epochs")
    parser.add_argument("--fresh", action="store_true", help="delete this entry's earlier search and start over (default: continue it)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the search and of the trials' training (default 0)")
    parser.add_argument("--tuning-dir",
                        help="folder of searches; this one lives in TUNING_DIR/<dataset>/<entry> "
                             f"(default: tuning, or {(config.TRYOUT_FOLDER / DEFAULT_TUNING_DIR).as_posix()} for a try-out)")
    role = parser.add_mutually_exclusive_group()
    role.add_argument("--chief", action="store_true", help="hold the search for workers at --oracle-ip:--oracle-port; trains nothing itself")
    role.add_argument("--worker", metavar="ID", help="run trials for the chief at --oracle-ip:--oracle-port; ID names this worker")
    parser.add_argument("--oracle-ip", default=LOOPBACK,
                        help="chief: the address to listen on; worker: the chief's address (default 127.0.0.1: "
                             "the port has no authentication, so keep it off untrusted networks)")
    parser.add_argument("--oracle-port", type=int, default=DEFAULT_PORT, help=f"the chief's port (default {DEFAULT_PORT})")
    parser.set_defaults(handler=cmd_tune)


def best_hyperparameters(challenge: config.Challenge, submission) -> dict | None:
    """The values `bench tune` saved for this entry on this dataset, or None when it was never tuned."""
    saved = _read_saved(challenge, submission.name)
    if saved is None:
        return None
    if saved.get("submission") != submission.file_hash:
        print(f"note: {saved_path(challenge, submission.name)} was tuned on an earlier version of {submission.path}; "
              "training with those values anyway (run `python -m bench tune` again to refresh them)", file=sys.stderr)
    return saved["values"]


def tuned_trials(challenge: config.Challenge, submission) -> int:
    """How many candidates were trained in the search behind the saved values (0 when untuned)."""
    saved = _read_saved(challenge, submission.name)
    return int(saved.get("trained_trials", 0)) if saved else 0


def hyperparameters_path(challenge: config.Challenge, entry: str) -> Path:
    """Where `bench tune` writes the values: beside the challenge's records (a try-out's, under a try-out)."""
    return Path(challenge.results) / challenge.board_name / entry / HYPERPARAMETERS_FILE


def saved_path(challenge: config.Challenge, entry: str) -> Path:
    """The values a run under `challenge` trains with: its own results folder's; for a try-out or smoke run whose
    folder has none, the committed ones (results/ of ./pyproject.toml), which such a run trains with and its board
    marks as tuned. The path may not exist (the entry was never tuned)."""
    own = hyperparameters_path(challenge, entry)
    scratch = {(folder / "results").as_posix() for folder in (config.TRYOUT_FOLDER, config.SMOKE_FOLDER)}
    if own.exists() or Path(challenge.results).as_posix() not in scratch:
        return own
    return Path(config.load().results) / challenge.board_name / entry / HYPERPARAMETERS_FILE


def _read_saved(challenge: config.Challenge, entry: str) -> dict | None:
    path = saved_path(challenge, entry)
    if not path.exists():
        return None
    try:
        saved = json.loads(path.read_text())
        if not isinstance(saved.get("values"), dict):
            raise ValueError("it has no 'values' object")
    except ValueError as error:
        raise config.ConfigError(f"{path} is not a hyperparameters file written by `bench tune` ({error}): "
                                 "restore it from git or delete it and tune again") from None
    return saved


def cmd_tune(args) -> int:
    challenge = config.tryout_destination(args, config.load_challenge(args), flags=TUNE_TRYOUT_FLAGS)
    tryout = Path(challenge.results).as_posix() == (config.TRYOUT_FOLDER / "results").as_posix()
    args.tuning_dir = args.tuning_dir or (config.TRYOUT_FOLDER / DEFAULT_TUNING_DIR if tryout else DEFAULT_TUNING_DIR)
    submission = discover.read(Path(args.entry))
    problem = _problem_with(args, submission)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    try:
        dataset = data.load(challenge.dataset, challenge.data_dir, challenge.train_limit)
        (x_fit, y_fit), validation = data.split_validation(dataset.x_train, dataset.y_train, challenge.validation_size)
    except data.DataError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    dataset.x_test = dataset.y_test = None  # the tuner scores on validation only

    search_dir = Path(args.tuning_dir) / challenge.board_name / submission.name
    settings = {"tuner": args.tuner, "submission": submission.file_hash, "challenge": _tuning_protocol(challenge)}
    overwrite = _start_or_continue(args, search_dir, settings)

    import keras
    import keras_tuner

    keras.utils.set_random_seed(args.seed)
    try:
        module = train.import_submission(submission.path)
        training = train.validated_training(module, challenge)
    except EntryProblem as problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    except Exception as error:  # anything the entry's module raised on import
        print(f"error: importing the entry failed: {train.explain(error, submission.path)}", file=sys.stderr)
        return 2
    with _distribution(args):
        try:
            tuner = make_tuner(args, challenge, module, training, dataset, search_dir, overwrite)
        except keras_tuner.errors.FailedTrialError as error:  # build_hypermodel() runs on its default values here
            print(f"error: build_hypermodel() failed on its default values: {error}", file=sys.stderr)
            return 1
        if not args.worker:
            search_dir.mkdir(parents=True, exist_ok=True)  # `overwrite` has just deleted it
            (search_dir / SETTINGS_FILE).write_text(json.dumps(settings, indent=1, sort_keys=True) + "\n")
        run_search(tuner, args, (x_fit, y_fit), validation)
    if args.worker:
        print(f"worker {args.worker}: the chief has no more trials to hand out")
        return 0
    return save_best(tuner, args, challenge, submission, module, dataset, search_dir)


def run_search(tuner, args, fit_data, validation) -> None:
    remaining = None if args.worker else tuner.oracle.remaining_trials()
    if remaining is not None and remaining <= 0:
        # Checked here, as a chief with nothing to hand out would wait for workers forever.
        print(f"the search already has {len(tuner.oracle.trials)} trial(s) of --trials {_trials(args)}: "
              "raise --trials to search further")
        return
    if args.chief:
        print(f"serving the search at {args.oracle_ip}:{args.oracle_port} until the workers have run every trial; "
              f"start them with --worker ID --oracle-ip {args.oracle_ip} --oracle-port {args.oracle_port}", flush=True)
    tuner.search(*fit_data, validation_data=validation)


def _problem_with(args, submission) -> str | None:
    """What the person must change before a search can start, if anything."""
    if not submission.ok:
        return submission.problem
    if not submission.has_hypermodel:
        return (f"{submission.path} has no build_hypermodel(hp, input_shape, num_classes), so there is nothing to tune: "
                "add one that picks its sizes with hp.Int / hp.Choice (see submissions/tunable_convnet.py)")
    if args.tuner == "hyperband" and args.trials is not None:
        return "--trials does not apply to --tuner hyperband: it sets the number of trials from --epochs"
    if args.trials is not None and args.trials < 1:
        return f"--trials must be at least 1, got {args.trials}"
    if args.worker and args.fresh:
        return "--fresh is for the chief, which owns the search: a worker joins whatever search the chief holds"
    if args.worker and "chief" in args.worker:
        return f"a worker ID may not contain 'chief' (keras-tuner reads that as the chief): got {args.worker!r}"
    return None


def _tuning_protocol(challenge: config.Challenge) -> dict:
    """The settings that change what a trial measures: neither the test split nor the board's training engine
    plays a part (trials always train with model.fit, in this process)."""
    return {k: v for k, v in challenge.protocol().items() if k not in ("test_limit", "engine", "engine_version")}


def _trials(args) -> int:
    return args.trials or DEFAULT_TRIALS


def _start_or_continue(args, search_dir: Path, settings: dict) -> bool:
    """Say whether the search starts, starts over or continues; refuse to continue one made under other settings.

    Returns keras-tuner's `overwrite`."""
    settings_file = search_dir / SETTINGS_FILE
    earlier = json.loads(settings_file.read_text()) if settings_file.exists() else None
    done = len(list(search_dir.glob("trial_*/trial.json")))
    if args.fresh:
        print(f"starting over: deleting the earlier search in {search_dir} ({done} trial(s))" if search_dir.exists()
              else f"starting a new search in {search_dir}")
        return True
    differences = _differences(earlier, settings) if earlier else []
    if differences:
        raise config.ConfigError(
            f"the search in {search_dir} was made under other settings: {'; '.join(differences)}. "
            "Run with the earlier settings to continue it, or pass --fresh (to the chief) to start over")
    if args.worker:
        print(f"worker {args.worker}: joining the search held by the chief at {args.oracle_ip}:{args.oracle_port}")
    elif earlier is None:
        print(f"starting a new search in {search_dir}")
    else:
        print(f"continuing the search in {search_dir}: {done} trial(s) already ran (pass --fresh to start over)")
    return False


def _differences(earlier: dict, settings: dict) -> list[str]:
    found = [f"the tuner ({earlier['tuner']} -> {settings['tuner']})"] if earlier["tuner"] != settings["tuner"] else []
    if earlier["submission"] != settings["submission"]:
        found.append("the entry's file changed")
    return found + [f"{k} ({earlier['challenge'].get(k)} -> {v})" for k, v in settings["challenge"].items()
                    if earlier["challenge"].get(k) != v]


@contextlib.contextmanager
def _distribution(args):
    """keras-tuner reads its chief/worker role from the environment: set it from the flags, restore it after."""
    saved = {name: os.environ.pop(name, None) for name in DISTRIBUTION_ENV}
    if any(saved.values()) and not (args.chief or args.worker):
        print("note: ignoring KERASTUNER_* environment variables: use --chief or --worker ID to tune with several processes")
    if args.chief or args.worker:
        os.environ.update(KERASTUNER_TUNER_ID="chief" if args.chief else args.worker,
                          KERASTUNER_ORACLE_IP=args.oracle_ip, KERASTUNER_ORACLE_PORT=str(args.oracle_port))
    try:
        yield
    finally:
        for name, value in saved.items():
            os.environ.pop(name, None)
            if value is not None:
                os.environ[name] = value


def make_tuner(args, challenge, module, training, dataset, search_dir: Path, overwrite: bool):
    import keras_tuner
    from keras_tuner.src import config as keras_tuner_config

    # keras-tuner prints the traceback of every failed trial; a rejected candidate is not a crash,
    # and the one line each trial ends with (ReportingTuner) says why it failed.
    keras_tuner_config.DEBUG = False

    algorithm = {"random": keras_tuner.RandomSearch, "bayesian": keras_tuner.BayesianOptimization,
                 "hyperband": keras_tuner.Hyperband}[args.tuner]

    class ReportingTuner(algorithm):
        def on_trial_end(self, trial):
            super().on_trial_end(trial)
            # The oracle (on the chief, when distributed) holds the trial's score; the reason a trial
            # failed is only here, as keras-tuner's messages to the chief leave it out. Keep it, and
            # who ran the trial, beside the trial's own files.
            ended, reason = self.oracle.get_trial(trial.trial_id), _reason(trial.message)
            outcome = {"tuner_id": self.tuner_id, "status": ended.status, "reason": reason}
            (Path(self.get_trial_dir(trial.trial_id)) / TRIAL_OUTCOME_FILE).write_text(json.dumps(outcome) + "\n")
            print(f"[bench] {self.tuner_id} {_describe(ended, reason)}", flush=True)

    size_of_search = {"max_epochs": training["epochs"]} if args.tuner == "hyperband" else {"max_trials": _trials(args)}
    return ReportingTuner(
        hypermodel=budgeted_hypermodel(module, challenge, training, dataset),
        objective=keras_tuner.Objective(OBJECTIVE, direction="max"),
        seed=args.seed,
        max_consecutive_failed_trials=NEVER_STOP_ON_FAILURES,
        directory=str(search_dir.parent),
        project_name=search_dir.name,
        overwrite=overwrite,
        **size_of_search,
    )


def budgeted_hypermodel(module, challenge: config.Challenge, training: dict, dataset: data.Dataset):
    """The entry's build_hypermodel(), counted before it trains and trained the way `evaluate` trains.

    Whatever goes wrong in a candidate becomes a FailedTrialError whose message names the entry's
    own line, so the search goes on and the trial's record says why."""
    import keras_tuner

    path = Path(module.__file__)

    class BudgetedHyperModel(keras_tuner.HyperModel):
        def build(self, hp):
            try:
                return module.build_hypermodel(hp, input_shape=dataset.input_shape, num_classes=dataset.num_classes)
            except Exception as error:
                raise keras_tuner.errors.FailedTrialError(train.explain(error, path)) from error

        def fit(self, hp, model, x, y, validation_data, callbacks=(), **kwargs):
            try:
                return self._checked_fit(model, x, y, validation_data, list(callbacks), kwargs)
            except keras_tuner.errors.FailedTrialError:
                raise
            except EntryProblem as problem:
                raise keras_tuner.errors.FailedTrialError(str(problem)) from None
            except Exception as error:
                raise keras_tuner.errors.FailedTrialError(train.explain(error, path)) from error

        def _checked_fit(self, model, x, y, validation_data, tuner_callbacks, kwargs):
            model(x[: train.SAMPLE_BATCH], training=False)  # subclassed models create (some of) their weights on first call
            size = train.count_params(model)["total_params"]
            if size > challenge.max_params:
                raise keras_tuner.errors.FailedTrialError(
                    f"{size:,} parameters {OVER_BUDGET_REASON} of {challenge.max_params:,}: rejected before training")
            train.check_output(model, x, dataset.num_classes, module)
            label_kind = train.compile_if_needed(model, module, training, challenge, notes=[])
            standard, _ = train.training_callbacks(module, challenge, model)
            x_val, y_val = validation_data
            return model.fit(
                x,
                train.encode(y, label_kind, dataset.num_classes),
                validation_data=(x_val, train.encode(y_val, label_kind, dataset.num_classes)),
                # Hyperband trains a candidate in stages: it passes each stage's epochs.
                epochs=kwargs.get("epochs", training["epochs"]),
                initial_epoch=kwargs.get("initial_epoch", 0),
                batch_size=training["batch_size"],
                # The standard callbacks first, so keras-tuner's own see the logs they complete.
                callbacks=standard + tuner_callbacks,
                verbose=2,
            )

    return BudgetedHyperModel()


def save_best(tuner, args, challenge, submission, module, dataset, search_dir: Path) -> int:
    trials = list(tuner.oracle.trials.values())
    trained = [t for t in trials if t.status == "COMPLETED"]
    untrained = [t for t in trials if t.status == "FAILED"]
    reasons = {t.trial_id: _recorded_reason(search_dir, t) for t in untrained}
    over_budget = sum(OVER_BUDGET_REASON in reason for reason in reasons.values())
    if not trained:
        advice = ("every candidate was over the budget: make the smallest choices of build_hypermodel's search space "
                  "smaller, or raise --max-params") if over_budget == len(trials) else "fix the errors above in the entry"
        listed = "; ".join(_describe(t, reasons[t.trial_id]) for t in untrained[:5]) + (" ..." if len(untrained) > 5 else "")
        print(f"error: none of the {len(trials)} candidate(s) trained ({over_budget} over the budget of {challenge.max_params:,}), "
              f"so no hyperparameters were saved: {listed}. {advice}", file=sys.stderr)
        return 1
    best = tuner.oracle.get_best_trials(1)[0]
    values = {k: v for k, v in best.hyperparameters.values.items() if not k.startswith("tuner/")}
    size = train.count_params(train.build(module, dataset.x_train, dataset.num_classes, {}, values))["total_params"]
    saved = {
        "entry": submission.name,
        "values": values,
        "objective": OBJECTIVE,
        "best_value": round(float(best.score), 6),
        "total_params": size,
        "max_params": challenge.max_params,
        "tuner": args.tuner,
        "trained_trials": len(trained),
        "over_budget_trials": over_budget,
        "failed_trials": len(untrained) - over_budget,
        "dataset": challenge.board_name,
        "submission": submission.file_hash,
        "search_dir": search_dir.as_posix(),
        "command": _command(args, challenge, submission),
    }
    path = hyperparameters_path(challenge, submission.name)
    results.write(path, saved)
    print(f"best of {len(trained)} trained trial(s) ({over_budget} over the budget, {len(untrained) - over_budget} failed): "
          f"{OBJECTIVE}={best.score:.4f}, {size:,} parameters, {values}\nwrote {path}: "
          "`python -m bench evaluate` trains the entry with these values (given the same --dataset and --results; "
          f"values in {config.TRYOUT_FOLDER.as_posix()}/ serve try-outs only)")
    return 0


def _describe(trial, reason: str) -> str:
    if trial.status == "COMPLETED":
        return f"trial {trial.trial_id}: trained, {OBJECTIVE}={trial.score:.4f}"
    return f"trial {trial.trial_id}: {trial.status}, {reason}"


def _reason(message: str | None) -> str:
    """The last line of keras-tuner's traceback of a failed trial: the error's own message."""
    lines = (message or "").strip().splitlines()
    return lines[-1].split("FailedTrialError: ", 1)[-1] if lines else ""


def _recorded_reason(search_dir: Path, trial) -> str:
    outcome = results.read(search_dir / f"trial_{trial.trial_id}" / TRIAL_OUTCOME_FILE) or {}
    return outcome.get("reason") or _reason(trial.message) or "no reason recorded"


def _command(args, challenge: config.Challenge, submission) -> str:
    """The command that repeats this search, from the settings in force (flags or pyproject.toml)."""
    parts = ["python -m bench tune", submission.path.as_posix(), f"--max-params {challenge.max_params}", f"--tuner {args.tuner}"]
    if args.tuner != "hyperband":
        parts.append(f"--trials {_trials(args)}")
    parts += [f"--epochs {challenge.max_epochs}", f"--dataset {challenge.dataset}"]
    if challenge.validation_size is not None:  # None: the default rule, which the same command applies again
        parts.append(f"--validation-size {challenge.validation_size}")
    if challenge.train_limit:
        parts.append(f"--train-limit {challenge.train_limit}")
    if args.seed:
        parts.append(f"--seed {args.seed}")
    return " ".join(parts)
