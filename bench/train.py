"""Train one entry with one seed and export the trained model: the untrusted stage.

Runs as `python -m bench.train JOB.json`, inside the sandbox (bench.sandbox) when there is one. The
job names the entry's file, the seed, the challenge's settings and two folders: `input`, holding the
training arrays and the validation images (`x_fit.npy`, `y_fit.npy`, `x_val.npy`: float32 images in [0, 1]
and int64 labels), and `output`, where this process leaves:

- `model.keras`: the trained model as Keras's own file (`model.save`), which bench.audit rebuilds from
  Keras's layers, counts and runs on the test images (bench.rebuild): the only thing of this run scored;
- `model/`: for a model with code of its own (which the audit cannot rebuild), its inference function
  (`training=False`) as a TensorFlow SavedModel, which the audit counts and runs instead (bench.graph_audit);
- `result.json`: status, message, notes, history and timings. The entry runs in this process and may
  rewrite the file, so the runner reads it as a claim: it can fail its own run, never raise a score.

This process never holds the validation labels, the test split, its labels or the hidden test set. At each
epoch's end it sends its outputs on the validation images to the runner through the pipes the job names
(`validation`: bench.validation) and trains on the runner's answers (val_loss, val_accuracy).
"""

from __future__ import annotations

import difflib
import importlib.util
import inspect
import json
import math
import os
import re
import sys
import time
import traceback
import types
from pathlib import Path

import numpy as np

from bench import config, engine, engine_choice, imports, macs, monitor, validation
from bench.status import FAILED, INVALID, JAX_ENGINE, KERAS_ENGINE, OK, OVER_BUDGET, EntryProblem

TRAINING_KEYS = {"optimizer": str, "learning_rate": (int, float), "batch_size": int, "epochs": int, "loss": str}
# A sample this small builds subclassed models and checks output shapes in milliseconds.
SAMPLE_BATCH = 8
CHECK_STEP_IMAGES = 64
PROGRESS_PREFIX = "[bench]"
# How close a row of outputs must sum to 1 to be read as probabilities (float32 softmax is within 1e-6).
PROBABILITY_TOLERANCE = 1e-3
STANDARD_ARGUMENTS = ("input_shape", "num_classes")
INPUT_ARRAYS = ("x_fit", "y_fit", "x_val")  # no validation labels: the runner holds them
RESULT_FILE, MODEL_DIR, KERAS_COPY = "result.json", "model", "model.keras"


def main(job_path: str) -> int:
    started = time.perf_counter()
    job = json.loads(Path(job_path).read_text())
    _prepare_tensorflow(job.get("threads"), job["seed"])
    imported = time.perf_counter()
    record = run_job(job)
    # What the harness costs beyond TensorFlow's own start-up (benchmarks/harness_overhead.py reads these).
    record["worker_seconds"] = {"tensorflow_import": round(imported - started, 3), "after_import": round(time.perf_counter() - imported, 3)}
    output = Path(job["output"])
    tmp = output / (RESULT_FILE + ".tmp")
    tmp.write_text(json.dumps(record, allow_nan=False))
    os.replace(tmp, output / RESULT_FILE)
    return 0


def load_arrays(folder: str | Path) -> dict[str, np.ndarray]:
    return {name: np.load(Path(folder) / f"{name}.npy", allow_pickle=False) for name in INPUT_ARRAYS}


def run_job(job: dict, answers=None) -> dict:
    """Import, build, check, train (or take one step, in check mode) and export; returns the claims.

    `answers` validates each epoch (anything with bench.validation.Client's `ask`): by default, the runner
    through the pipes the job names; tests that run every stage in one process pass a bench.validation.Local."""
    challenge = config.from_dict(job["challenge"], check_data=False)
    path = Path(job["submission"])
    shown = job.get("shown_as", str(path))
    output = Path(job["output"])
    record = {"status": OK, "message": "", "notes": []}
    try:
        module = import_submission(path, shown)
        training = validated_training(module, challenge)
        arrays = load_arrays(job["input"])
        x_fit, y_fit, x_val = (arrays[name] for name in INPUT_ARRAYS)
        num_classes = int(job["num_classes"])
        model = build(module, x_fit, num_classes, job.get("build_kwargs") or {}, job.get("hyperparameters"))
        # The harness's own count stops an oversized entry before training; bench.audit counts again, from the export.
        record.update(count_params(model))
        if record["total_params"] > challenge.max_params:
            raise EntryProblem(OVER_BUDGET, over_budget_message(record["total_params"], challenge.max_params))
        check_output(model, x_fit, num_classes, module)
        label_kind = compile_if_needed(model, module, training, challenge, record["notes"], num_classes)
        if job["mode"] == "check":
            entry_callbacks(module)  # checked here too: fit, which reads them, does not run in check
            one_training_step(model, x_fit, y_fit, label_kind, num_classes)
        else:
            probe = slice(0, monitor.PROBE_IMAGES)  # a fixed batch of training images, measured every N steps
            monitors = [monitor.callback(job["monitor"], x_fit[probe], encode(y_fit[probe], label_kind, num_classes))] if job.get("monitor") else []
            started = time.perf_counter()
            history, record["engine"] = fit(model, module, training, challenge, job, label_kind, num_classes, x_fit, y_fit, x_val,
                                            answers or harness_channel(job), record["notes"], monitors)
            record["train_seconds"] = round(time.perf_counter() - started, 3)
            record["history"] = history
            record["epochs"] = len(history.get("loss", []))
            if monitors:
                record["monitor"] = monitors[0].result()
            if job.get("eval_kwargs"):
                # MACs of the model as trained; bench.audit counts those of the exported (deployed) one.
                record["train_macs"] = macs.record_fields(model, record["notes"])["macs"]
                model = rebuild_for_evaluation(module, model, x_fit, num_classes, job["build_kwargs"] or {}, job["eval_kwargs"])
        model = finalized(module, model)
        exporting = time.perf_counter()
        export(model, output, tuple(x_fit.shape[1:]))
        record["export_seconds"] = round(time.perf_counter() - exporting, 3)
    except EntryProblem as problem:
        record.update(status=problem.status, message=str(problem))
    except Exception as error:  # anything the submission's code raised
        record.update(status=FAILED, message=explain(error, path, shown), traceback=traceback.format_exc())
    return record


def harness_channel(job: dict) -> validation.Client:
    """The pipes to the runner, which answers validations (bench.validation); named by the job."""
    fds = job.get("validation")
    if not fds:
        raise RuntimeError("the job names no validation channel: training needs the runner to answer validations")
    return validation.Client(int(fds["requests_fd"]), int(fds["answers_fd"]))


def import_submission(path: Path, shown: str | None = None):
    spec = importlib.util.spec_from_file_location(f"submission_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(path.parent.resolve()))  # so an entry may import its `_helpers.py`
    spec.loader.exec_module(module)
    near_miss = misnamed(module)
    if near_miss:
        raise EntryProblem(INVALID, near_miss)
    if not callable(getattr(module, "build_model", None)):
        raise EntryProblem(INVALID, f"{shown or path} has no build_model() function: define `def build_model(input_shape, num_classes):` returning a keras.Model")
    return module


# The names the harness reads from an entry's file, and the kind of value each holds: a near miss (Training,
# TRAINIG, FROM_LOGIT, finalise) was never read, and the entry trained with the defaults without a word.
FILE_NAMES = {"TRAINING": dict, "FROM_LOGITS": bool, "LABELS": str, "build_model": types.FunctionType,
              "build_hypermodel": types.FunctionType, "callbacks": types.FunctionType, "finalize": types.FunctionType}


def misnamed(module) -> str | None:
    """What to rename when the file defines a near miss of a name the harness reads, holding that name's kind of
    value, and not the name itself, nor read by the file's own code; else None."""
    by_upper = {name.upper(): name for name in FILE_NAMES}
    read = names_read(module)
    for defined, value in vars(module).items():
        if defined in FILE_NAMES or defined.startswith("_") or defined in read:
            continue
        close = difflib.get_close_matches(defined.upper(), by_upper, n=1, cutoff=0.8)
        expected = by_upper[close[0]] if close else None
        if expected and not hasattr(module, expected) and isinstance(value, FILE_NAMES[expected]):
            return (f"your file defines {defined}, which the harness never reads: did you mean {expected}? "
                    f"(it reads these exact names: {', '.join(FILE_NAMES)})")
    return None


def names_read(module) -> set[str]:
    """The global and attribute names the functions and classes a file defines read (nested ones included): a
    `from_logits = True` that build_model passes to its loss is the file's own variable, not a misspelt FROM_LOGITS."""
    own = [v for v in vars(module).values() if getattr(v, "__module__", None) == getattr(module, "__name__", None)]
    codes = [f.__code__ for v in own for f in (vars(v).values() if isinstance(v, type) else [v])
             if isinstance(f, types.FunctionType)]
    read = set()
    while codes:
        code = codes.pop()
        read.update(code.co_names)
        codes += [c for c in code.co_consts if isinstance(c, types.CodeType)]
    return read


def over_budget_message(total: int, budget: int) -> str:
    return (f"{total:,} parameters is over this challenge's budget of {budget:,}: "
            "make the model smaller (fewer filters or units, pooling before dense layers)")


def optimizer_names() -> list[str]:
    import keras

    return sorted(name.lower() for name in dir(keras.optimizers)
                  if isinstance(getattr(keras.optimizers, name), type) and issubclass(getattr(keras.optimizers, name), keras.optimizers.Optimizer)
                  and name not in ("Optimizer", "LossScaleOptimizer", "MultiOptimizer"))


def loss_names() -> list[str]:
    import keras

    return sorted(name for name in dir(keras.losses)
                  if name[0].islower() and callable(getattr(keras.losses, name)) and name not in ("get", "serialize", "deserialize"))


def loss_alias(name: str) -> bool:
    """Whether Keras's own short name finds a loss function ("mse", "mae", "kld", "bce": older notebooks write them)."""
    import keras

    try:
        return inspect.isfunction(keras.losses.get(name))
    except ValueError:
        return False


def validated_training(module, challenge: config.Challenge) -> dict:
    """The entry's TRAINING dict, checked, with the challenge's defaults filled in and epochs capped.

    Raises EntryProblem (INVALID) naming every key that is wrong, each with what to write instead."""
    given = getattr(module, "TRAINING", None) or {}
    if not isinstance(given, dict):
        raise EntryProblem(INVALID, f"TRAINING must be a dict such as {{'batch_size': 256}}, got {type(given).__name__}")
    problems = [_training_problem(key, value) for key, value in given.items()]  # every one at once, not the first
    problems = [problem for problem in problems if problem]
    if problems:
        raise EntryProblem(INVALID, "; ".join(problems))
    training = {
        "optimizer": challenge.optimizer,
        "learning_rate": challenge.learning_rate,
        "batch_size": challenge.batch_size,
        "epochs": challenge.max_epochs,
        "loss": None,
        **given,
    }
    training["epochs"] = min(training["epochs"], challenge.max_epochs)
    return training


def _training_problem(key, value) -> str | None:
    """What is wrong with TRAINING[key] = value, in a sentence that says what to write instead; None when it is fine."""
    import keras

    if key not in TRAINING_KEYS:
        return f"TRAINING has an unknown key {key!r}; allowed keys are {', '.join(TRAINING_KEYS)}"
    if key in ("optimizer", "loss") and not isinstance(value, str):  # an object: what compile takes, not TRAINING
        return (f"TRAINING[{key!r}] takes a name such as {'adam' if key == 'optimizer' else 'categorical_crossentropy'!r}, "
                f"not a {type(value).__name__}: to train with that object, compile the model in build_model, "
                f"model.compile(optimizer=..., loss=..., metrics=[\"accuracy\"]), and return it compiled")
    if isinstance(value, bool) or not isinstance(value, TRAINING_KEYS[key]):
        return f"TRAINING[{key!r}] = {value!r} has the wrong type; expected {_type_name(TRAINING_KEYS[key])}"
    if key in ("learning_rate", "batch_size", "epochs") and value <= 0:
        return f"TRAINING[{key!r}] = {value!r} must be positive"
    if key == "optimizer":
        try:
            keras.optimizers.get(value)
        except ValueError:
            return f"TRAINING['optimizer'] = {value!r} is not a Keras optimizer; use one of {', '.join(optimizer_names())}"
    if key == "loss" and value not in loss_names() and not loss_alias(value):
        return (f"TRAINING['loss'] = {value!r} is not a Keras loss; use one of {', '.join(loss_names())} "
                "(sparse_categorical_crossentropy for integer labels)")
    return None


def build(module, x_train: np.ndarray, num_classes: int, build_kwargs: dict, hyperparameters: dict | None):
    import keras

    input_shape = tuple(x_train.shape[1:])
    if hyperparameters is not None:
        model = _build_from_hyperparameters(module, input_shape, num_classes, hyperparameters)
    else:
        model = call_factory(module.build_model, {"input_shape": input_shape, "num_classes": num_classes}, build_kwargs)
    if not isinstance(model, keras.Model):
        raise EntryProblem(INVALID, f"build_model() returned {type(model).__name__}, not a keras.Model: return the model object itself")
    check_input_shape(model, input_shape)
    # Always one call before counting: a subclassed model may create some of its weights in __init__
    # and the rest on its first call, and every weight it will train must be counted.
    try:
        model(x_train[:SAMPLE_BATCH], training=False)
    except Exception as error:
        if "shape" not in str(error).lower():
            raise  # the entry's own error, reported as FAILED with its traceback (explain)
        # An Input that matches the images already passed check_input_shape: then the model's own layers disagree.
        hint = ("the model's layers disagree on a shape when it predicts (model(x, training=False))" if declared_input_shape(model)
                else "take input_shape as an argument of build_model and use it for keras.Input")
        raise EntryProblem(
            INVALID, f"the model does not accept this dataset's images, shape {input_shape}: {_first_line(error)} -- {hint}",
        ) from None
    if not model.weights:
        raise EntryProblem(INVALID, "the model has no weights even after running it on a sample batch: add at least one layer with weights")
    return model


def declared_input_shape(model) -> tuple | None:
    """The shape, without the batch axis, of the one keras.Input of a functional or Sequential model; None for a
    model that declares none yet (a subclassed model, a Sequential without Input: the sample call builds those)
    or several."""
    try:
        inputs = model.inputs
    except (AttributeError, ValueError):  # a Sequential without Input raises until it is built
        return None
    if not isinstance(inputs, (list, tuple)) or len(inputs) != 1:
        return None
    return tuple(inputs[0].shape[1:])


def check_input_shape(model, input_shape: tuple) -> None:
    """Refuse a model whose Input is not the images' shape (a None axis fits any size).

    Keras adds a missing last axis of size 1 when it calls the model (an Input of (28, 28, 1) accepts (28, 28)
    images), so the sample call alone lets such a model train and fail where its export is read.
    Raises EntryProblem(INVALID) saying both shapes."""
    declared = declared_input_shape(model)
    if declared is None:
        return
    fits = len(declared) == len(input_shape) and all(d is None or d == i for d, i in zip(declared, input_shape))
    if not fits:
        raise EntryProblem(INVALID, input_shape_message(declared, input_shape))


def input_shape_message(declared: tuple, input_shape: tuple) -> str:
    return (f"your Input is {declared}, the images are {tuple(input_shape)}: take `input_shape` from `build_model`'s argument, "
            "or Reshape")


# Parameter names of a keras-tuner model function (`def build_model(hp):`, as keras-tuner's guide writes it).
TUNER_ARGUMENTS = ("hp", "hps", "hyperparameters")


def call_factory(factory, standard: dict, extra: dict):
    """Pass `input_shape`/`num_classes` only to factories that accept them (seed 004 hard-codes its input)."""
    parameters = inspect.signature(factory).parameters
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())
    kwargs = {k: v for k, v in standard.items() if takes_any or k in parameters}
    unknown = [k for k in extra if not takes_any and k not in parameters]
    if unknown:
        raise EntryProblem(INVALID, f"{factory.__name__}() has no parameter(s) {', '.join(unknown)}: add them to its signature")
    required = [name for name, p in parameters.items()
                if p.default is inspect.Parameter.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
                and name not in standard and name not in extra]
    if any(name in TUNER_ARGUMENTS for name in required):  # renaming `hp` would break its hp.Int calls: say where it goes
        raise EntryProblem(INVALID, tuner_factory_message(factory.__name__, list(parameters)))
    if required:
        raise EntryProblem(INVALID, f"{factory.__name__}({', '.join(parameters)}) has parameter(s) the harness does not pass: "
                                    f"{', '.join(required)}. Name them {' and '.join(STANDARD_ARGUMENTS)} "
                                    f"(def {factory.__name__}(input_shape, num_classes):), or give them defaults")
    return factory(**kwargs, **extra)


def tuner_factory_message(name: str, parameters: list[str]) -> str:
    return (f"{name}({', '.join(parameters)}) is a keras-tuner model function, but the harness calls "
            f"{name}(input_shape, num_classes): put it in `build_hypermodel(hp, input_shape, num_classes)` beside a plain "
            f"`build_model(input_shape, num_classes)` (README \"Tune an entry\"), and search with `python -m bench tune`")


def _build_from_hyperparameters(module, input_shape, num_classes, values: dict):
    import keras_tuner

    if not callable(getattr(module, "build_hypermodel", None)):
        raise EntryProblem(INVALID, "tuned hyperparameters were found but the entry has no build_hypermodel(hp, input_shape, num_classes)")
    hp = keras_tuner.HyperParameters()
    for name, value in values.items():
        hp.Fixed(name, value)
    return module.build_hypermodel(hp, input_shape=input_shape, num_classes=num_classes)


def count_params(model) -> dict:
    # Deduplicate by identity so a layer applied several times counts its weights once.
    unique = {id(w): w for w in model.weights}
    trainable = {id(w) for w in model.trainable_weights}
    size = lambda w: int(np.prod(w.shape))
    return {
        "total_params": int(sum(size(w) for w in unique.values())),
        "trainable_params": int(sum(size(w) for i, w in unique.items() if i in trainable)),
    }


def check_output(model, x_train: np.ndarray, num_classes: int, module) -> None:
    """One output row of `num_classes` per image, and probabilities unless FROM_LOGITS says logits."""
    sample = x_train[:SAMPLE_BATCH]
    outputs = model(sample, training=False)
    if isinstance(outputs, (list, tuple, dict)) and len(outputs) > 1:  # as an array, the outputs' count reads as the batch
        raise EntryProblem(INVALID, several_outputs_message(len(outputs)))
    if isinstance(outputs, dict):  # as an array, a dict of one output reads as a shape of ()
        raise EntryProblem(INVALID, f"the model returns a dict ({', '.join(map(repr, outputs))}), the harness scores one output "
                                    "tensor: return keras.Model(inputs, output) with the tensor itself, not a dict")
    output = np.asarray(outputs)
    shape = tuple(output.shape)
    if shape != (len(sample), num_classes):
        raise EntryProblem(
            INVALID,
            f"the model's output has shape {shape[1:]} per batch, expected ({num_classes},): "
            f"end with a layer of {num_classes} units (and Flatten/Reshape away any spatial axes)",
        )
    from_logits = declared_logits(model, module)
    # A Keras loss the factory compiled decides (declared_logits), so its message names that loss, not FROM_LOGITS.
    compiled = compiled_loss_logits(model) is not None
    in_unit_range = bool(np.all((output >= -PROBABILITY_TOLERANCE) & (output <= 1 + PROBABILITY_TOLERANCE)))
    sums_to_one = bool(np.all(np.abs(output.sum(axis=-1) - 1) <= PROBABILITY_TOLERANCE))
    if not from_logits and not in_unit_range:
        fix = (f"compile with a loss that reads logits, such as keras.losses.SparseCategoricalCrossentropy(from_logits=True) "
               f"(build_model compiled {loss_name(model.loss)!r}; FROM_LOGITS does not change a compiled loss)") if compiled \
            else "set FROM_LOGITS = True in your file"
        raise EntryProblem(INVALID, f"the model outputs logits (values from {output.min():.3g} to {output.max():.3g}, not probabilities) "
                                    f"but the loss expects probabilities: {fix}, or end the model with activation=\"softmax\"")
    if from_logits and in_unit_range and sums_to_one:
        if compiled:
            raise EntryProblem(INVALID, f"the loss build_model compiled ({loss_name(model.loss)}) reads logits (from_logits=True) but the "
                                        "model outputs probabilities (each row sums to 1): compile the loss without from_logits, "
                                        "or drop the final softmax so the model outputs logits")
        raise EntryProblem(INVALID, "FROM_LOGITS = True but the model outputs probabilities (each row sums to 1): "
                                    "remove FROM_LOGITS, or drop the final softmax so the model outputs logits")


def several_outputs_message(count: int) -> str:
    return (f"the model has {count} outputs, the harness trains and scores exactly one: "
            "return keras.Model(inputs, main_output) with the one output to score")


def declared_logits(model, module) -> bool:
    """Whether the loss will read the outputs as logits: a self-compiled loss's own flag, else FROM_LOGITS."""
    own = compiled_loss_logits(model)
    return own if own is not None else bool(getattr(module, "FROM_LOGITS", False))


def compiled_loss_logits(model) -> bool | None:
    """The from_logits of the loss the factory compiled: a Keras loss object's own, False for a loss by name; None
    when the model is not compiled, or its loss is a function or class of the entry's own, which says nothing (a
    custom loss on logits: FROM_LOGITS says so)."""
    if not (getattr(model, "compiled", False) and getattr(model, "optimizer", None) is not None):
        return None
    loss = model.loss
    if isinstance(loss, str):
        return False
    if getattr(loss, "from_logits", None) is not None:
        return bool(loss.from_logits)
    if "from_logits" in (getattr(loss, "_fn_kwargs", None) or {}):
        return bool(loss._fn_kwargs["from_logits"])
    return None


def compile_if_needed(model, module, training: dict, challenge: config.Challenge, notes: list, num_classes: int | None = None) -> str:
    """Compile uncompiled models with TRAINING; a model its factory compiled stays exactly as compiled (its metrics
    too, which its own callbacks may monitor). Returns the labels its loss takes: 'sparse' (integers) or 'one_hot'
    (`labels_for_loss`; `num_classes` defaults to the model's output width).

    Raises EntryProblem(INVALID) as labels_for_loss does."""
    import keras

    if getattr(model, "compiled", False) and getattr(model, "optimizer", None) is not None:
        loss = model.loss
        loss_weights = getattr(getattr(model, "_compile_config", None), "config", {}).get("loss_weights")
        if any(isinstance(weight, str) for weight in keras.tree.flatten(loss_weights or [])):
            # Keras 2's compile(optimizer, loss, metrics): Keras 3 fails mid-fit with "dtype='string' is not a valid dtype"
            raise EntryProblem(INVALID, f"model.compile got loss_weights={loss_weights!r}: Keras 3 reads compile's third positional "
                                        "argument as loss_weights. Pass metrics by keyword: "
                                        "model.compile(optimizer, loss, metrics=[\"accuracy\"])")
        if any(k in (getattr(module, "TRAINING", None) or {}) for k in ("optimizer", "learning_rate", "loss")):
            notes.append("the model was compiled by its factory: TRAINING's optimizer/learning_rate/loss were not used")
    else:
        from_logits = bool(getattr(module, "FROM_LOGITS", False))
        optimizer = keras.optimizers.get({"class_name": training["optimizer"], "config": {"learning_rate": training["learning_rate"]}})
        loss = named_loss(training["loss"], from_logits) if training["loss"] else keras.losses.SparseCategoricalCrossentropy(from_logits=from_logits)
        model.compile(optimizer=optimizer, loss=loss, metrics=["accuracy"])
    return labels_for_loss(loss, module, num_classes or output_width(model), notes)


def named_loss(name: str, from_logits: bool):
    """TRAINING's loss by name, reading the outputs as logits when FROM_LOGITS is set."""
    import keras

    function = keras.losses.get(name)
    if not from_logits:
        return name
    if "from_logits" not in inspect.signature(function).parameters:
        raise EntryProblem(INVALID, f"FROM_LOGITS = True but TRAINING's loss {name!r} has no logits form: "
                                    "use a crossentropy loss, or output probabilities and remove FROM_LOGITS")

    def loss(y_true, y_pred):
        return function(y_true, y_pred, from_logits=True)

    loss.__name__ = name
    loss.from_logits = True  # bench.engine reads it, as it reads a Keras loss object's config
    return loss


def loss_name(loss) -> str:
    return loss if isinstance(loss, str) else getattr(loss, "name", None) or getattr(loss, "__name__", "") or type(loss).__name__


def label_kind_for(loss) -> str:
    """The labels a loss takes by its name: integers ('sparse') for a sparse loss, one-hot for any other."""
    return "sparse" if "sparse" in loss_name(loss).lower() else "one_hot"


# The file's declaration of the labels its loss takes (`LABELS = "integer"`), for a loss that accepts both forms.
LABEL_DECLARATIONS = {"integer": "sparse", "one_hot": "one_hot"}
LABEL_WORDS = {"sparse": "integer labels", "one_hot": "one-hot labels"}
LABEL_PROBE_IMAGES = 4


def labels_for_loss(loss, module, num_classes: int | None, notes: list) -> str:
    """The labels `loss` is trained with, 'sparse' (integers) or 'one_hot', chosen by what it accepts: the loss is
    called on a few labels of each form and uniform outputs before training. The file's LABELS decides; else the one
    form the loss accepts; else, when it accepts both, its name (sparse: integers).

    Raises EntryProblem(INVALID) when LABELS is not "integer" or "one_hot", when the loss fails on the declared form,
    or when it accepts neither form, with the error it raised on each."""
    declared = getattr(module, "LABELS", None)
    if declared is not None and declared not in LABEL_DECLARATIONS:
        raise EntryProblem(INVALID, f"LABELS = {declared!r} is not a label form: set LABELS = \"integer\" or LABELS = \"one_hot\"")
    if not num_classes:  # a subclassed model in a caller that did not say: the name decides, as it always did
        return LABEL_DECLARATIONS[declared] if declared else label_kind_for(loss)
    failures = {kind: loss_failure(loss, kind, num_classes) for kind in LABEL_WORDS}
    name = loss_name(loss)
    if declared is not None:
        kind = LABEL_DECLARATIONS[declared]
        if failures[kind]:
            raise EntryProblem(INVALID, f"LABELS = {declared!r}, but the loss {name} fails on {LABEL_WORDS[kind]}: {failures[kind]}. "
                                        "Fix the loss, or declare the labels it is written for")
        return kind
    accepted = [kind for kind, failure in failures.items() if failure is None]
    if not accepted:
        raise EntryProblem(INVALID, f"the loss {name} fails on integer labels, shape ({LABEL_PROBE_IMAGES},) ({failures['sparse']}), "
                                    f"and on one-hot labels, shape ({LABEL_PROBE_IMAGES}, {num_classes}) ({failures['one_hot']}): "
                                    "the harness gives a loss the labels it accepts; fix the loss so it takes one of them")
    kind = accepted[0] if len(accepted) == 1 else label_kind_for(loss)
    if kind != label_kind_for(loss):
        notes.append(f"trained with {LABEL_WORDS[kind]}: the loss {name} accepts those and not {LABEL_WORDS[label_kind_for(loss)]}")
    return kind


def loss_failure(loss, kind: str, num_classes: int) -> str | None:
    """What `loss` raised on a few labels of `kind` and uniform outputs, as `fit` calls it; None when it worked."""
    import keras
    from keras.src.losses.losses import LossFunctionWrapper

    labels = np.arange(LABEL_PROBE_IMAGES) % num_classes
    outputs = np.full((LABEL_PROBE_IMAGES, num_classes), 1 / num_classes, dtype="float32")
    function = keras.losses.get(loss) if isinstance(loss, str) else loss
    # fit wraps a plain function as this does: labels cast to the outputs' dtype, ranks squeezed or expanded to match.
    wrapped = function if isinstance(function, keras.losses.Loss) else LossFunctionWrapper(function)
    try:
        keras.ops.convert_to_numpy(wrapped(encode(labels, kind, num_classes), outputs))
    except Exception as error:  # the loss's own error: which form it refuses, and why
        return f"{type(error).__name__}: {_first_line(error)}"
    return None


def output_width(model) -> int | None:
    """The last axis of a functional or Sequential model's one output; None when it declares none."""
    try:
        outputs = model.outputs
    except (AttributeError, ValueError):
        return None
    return int(outputs[0].shape[-1]) if isinstance(outputs, (list, tuple)) and len(outputs) == 1 and outputs[0].shape[-1] else None


def encode(labels: np.ndarray, kind: str, num_classes: int) -> np.ndarray:
    return labels if kind == "sparse" else np.eye(num_classes, dtype="float32")[labels]


def one_training_step(model, x: np.ndarray, y: np.ndarray, label_kind: str, num_classes: int):
    # Through fit, as training will be: train_on_batch hands train_step (x, y, None), and the Keras guide's
    # overridden `x, y = data` then fails in check while it trains under evaluate.
    history = model.fit(x[:CHECK_STEP_IMAGES], encode(y[:CHECK_STEP_IMAGES], label_kind, num_classes),
                        batch_size=CHECK_STEP_IMAGES, epochs=1, shuffle=False, verbose=0).history
    loss = history.get("loss", [0.0])[-1]
    if not np.isfinite(float(loss)):
        raise EntryProblem(INVALID, f"one training step gave a non-finite loss ({loss}): check the loss, the output activation and FROM_LOGITS")


def uses_schedule(model) -> bool:
    """A learning-rate schedule owns the rate: ReduceLROnPlateau cannot set it (Keras raises mid-training)."""
    import keras

    return isinstance(getattr(model.optimizer, "_learning_rate", None), keras.optimizers.schedules.LearningRateSchedule)


def training_callbacks(module, challenge: config.Challenge, model=None, notes: list | None = None):
    """Fresh callbacks for one training run: the challenge's ReduceLROnPlateau and EarlyStopping,
    then the entry's own callbacks(). Returns (callbacks, the EarlyStopping among them).

    An optimizer driven by a learning-rate schedule keeps it: ReduceLROnPlateau is left out, and
    `notes` says so. Raises EntryProblem(INVALID) as entry_callbacks does."""
    import keras

    rl, es = challenge.reduce_lr, challenge.early_stopping
    early_stopping = keras.callbacks.EarlyStopping(
        monitor=es.monitor, patience=es.patience, min_delta=es.min_delta, restore_best_weights=True
    )
    callbacks = [early_stopping, keras.callbacks.TerminateOnNaN()]
    if model is not None and uses_schedule(model):
        if notes is not None:
            notes.append("the optimizer follows a learning-rate schedule, so ReduceLROnPlateau was left out")
    else:
        callbacks.insert(0, keras.callbacks.ReduceLROnPlateau(monitor=rl.monitor, factor=rl.factor, patience=rl.patience,
                                                              min_delta=rl.min_delta, min_lr=rl.min_lr or 0.0))
    return callbacks + entry_callbacks(module), early_stopping


# The validation values the runner answers (bench.validation): the only val_ values an epoch's logs ever hold.
ANSWERED_VALUES = ("val_loss", "val_accuracy")


def entry_callbacks(module) -> list:
    """The entry's own callbacks(), checked; [] when it has none.

    Raises EntryProblem(INVALID) when callbacks() returns anything but Keras callbacks, or when one monitors a
    validation value the runner never answers (it would never act, silently)."""
    import keras

    extra = getattr(module, "callbacks", None)
    if not callable(extra):
        return []
    own = list(extra())
    if not all(isinstance(c, keras.callbacks.Callback) for c in own):
        raise EntryProblem(INVALID, "callbacks() must return a list of keras.callbacks.Callback objects")
    for callback in own:
        monitor = getattr(callback, "monitor", None)
        if isinstance(monitor, str) and monitor.startswith("val_") and monitor not in ANSWERED_VALUES:
            raise EntryProblem(INVALID, f"callbacks(): {type(callback).__name__} monitors {monitor!r}, which never exists here: "
                                        f"the harness answers validation with {' and '.join(ANSWERED_VALUES)} only. Monitor one of "
                                        f"those, or the training value {monitor[len('val_'):]!r}")
    return own


def fit(model, module, training, challenge, job, label_kind, num_classes, x_fit, y_fit, x_val, answers, notes,
        extra_callbacks=()) -> tuple[dict, str]:
    """Train with the standard callbacks, each epoch validated by `answers`: a bench.validation channel to the
    harness, or the validation labels themselves (benchmarks; answered in this process, as the harness would).
    Returns the history, with a non-finite value written as null (strict JSON), and the engine that ran
    (bench.status.JAX_ENGINE or KERAS_ENGINE).

    Raises EntryProblem(FAILED) when the loss goes non-finite: such a model is not scored; and
    bench.validation.ProtocolError when the harness answers no more."""
    answers = validation.channel(answers, challenge.max_epochs)
    callbacks, early_stopping = training_callbacks(module, challenge, model, notes)
    callbacks.append(Progress(job["entry"], job["seed"], training["epochs"]))
    callbacks += list(extra_callbacks)
    plan = batch_minor_plan(model, callbacks, x_fit, label_kind, challenge, notes, job.get("threads"))
    if plan is not None and challenge.engine == "auto":
        choice = engine_choice.choose(plan, model, x_fit, y_fit, training["batch_size"], encode(y_fit, label_kind, num_classes))
        notes.append(choice.note())
        if choice.engine == KERAS_ENGINE:
            plan = None
    if plan is not None:
        job_engine = JAX_ENGINE
        history = engine.train(plan, callbacks, x_fit, y_fit, x_val, answers, training["epochs"], training["batch_size"], job["seed"])
    else:
        job_engine = KERAS_ENGINE
        # First, so the harness's val_loss is in the epoch's logs before ReduceLROnPlateau, EarlyStopping and the
        # entry's callbacks read them (fit hands one logs dict to each callback in turn).
        harness = HarnessValidation(answers, x_val, training["batch_size"], declared_logits(model, module))
        history = model.fit(
            x_fit,
            encode(y_fit, label_kind, num_classes),
            epochs=training["epochs"],
            batch_size=training["batch_size"],
            callbacks=[harness, *callbacks],
            verbose=0,
        ).history
    history = {k: [float(v) if math.isfinite(float(v)) else None for v in values] for k, values in history.items()}
    diverged = next((epoch for epoch, value in enumerate(history.get("loss", []), 1) if value is None), None)
    if diverged is not None:
        raise EntryProblem(FAILED, f"training diverged at epoch {diverged}: the loss became NaN or infinite. "
                                   "Lower the learning rate, check the loss and FROM_LOGITS, or add normalisation"
                                   + half_precision_hint(model))
    # EarlyStopping restores the best weights only when it stops the run; do the same at the epoch cap,
    # so the scored model is always the one validation picked.
    if early_stopping.best_weights is not None and early_stopping.stopped_epoch == 0:
        model.set_weights(early_stopping.best_weights)
    return history, job_engine


def half_precision_hint(model) -> str:
    """For a diverged model that keeps weights in float16: Adam's epsilon (1e-7) and small updates vanish in float16,
    where mixed_float16 keeps float32 weights and scales the loss."""
    half = any(str(w.dtype) == "float16" for w in model.weights)
    return ("; its weights are float16, where small updates and Adam's epsilon vanish: use "
            "keras.mixed_precision.set_global_policy(\"mixed_float16\") (float32 weights) or float32") if half else ""


def batch_minor_plan(model, callbacks, x_fit, label_kind, challenge, notes, threads=None):
    """bench.engine's plan for this model when the challenge's `engine` is 'auto' or 'jax' and the engine runs it;
    else None (with a note saying why, so an entry's author sees what keeps it on model.fit)."""
    if challenge.engine == "keras":
        return None
    try:
        return engine.plan(model, callbacks, x_fit, label_kind, threads)
    except engine.Unsupported as reason:
        notes.append(f"trained with model.fit: the batch-minor engine does not run {reason}")
        return None


def finalized(module, model):
    """The entry's optional `finalize(model)` hook: called once training is over (the best weights restored, or
    after `check`'s one step), it returns the model to export and score, e.g. a pruned or quantized one
    (`model.quantize("int8")`). Its output must keep the input and output shapes (the audit checks what it runs)."""
    hook = getattr(module, "finalize", None)
    if hook is None:
        return model
    if not callable(hook):
        raise EntryProblem(INVALID, "finalize must be a function taking the trained model and returning the model to score")
    import keras

    final = hook(model)
    if not isinstance(final, keras.Model):
        raise EntryProblem(INVALID, f"finalize(model) returned {type(final).__name__}, not a keras.Model: "
                                    "return the model to score (e.g. `model.quantize(\"int8\"); return model`)")
    return final


def rebuild_for_evaluation(module, trained, x_train, num_classes, build_kwargs, eval_kwargs):
    """The same weights in a model built with other factory arguments (train short, deploy long)."""
    model = build(module, x_train, num_classes, {**build_kwargs, **eval_kwargs}, None)
    if len(model.weights) != len(trained.weights):
        raise EntryProblem(INVALID, f"building with {eval_kwargs} changes the weights, so trained weights cannot be reused")
    model.set_weights(trained.get_weights())
    return model


def export(model, output: Path, input_shape: tuple) -> None:
    """The trained model as the audit reads it: `model.keras` (Keras's own file, which the audit rebuilds when it
    holds only Keras's layers: bench.rebuild), and for any other model the inference function (the model called
    with `training=False`, so augmentation and dropout are off) as a TensorFlow SavedModel in `model/`.

    Raises EntryProblem(INVALID) when neither can be written."""
    from bench import rebuild

    try:
        model.save(output / KERAS_COPY)
        rebuildable = not rebuild.custom_code(rebuild.read_config(output / KERAS_COPY))
    except Exception:  # a custom layer without get_config: the graph is what the audit reads
        (output / KERAS_COPY).unlink(missing_ok=True)
        rebuildable = False
    if not rebuildable:
        export_graph(model, output / MODEL_DIR, input_shape)


def export_graph(model, folder: Path, input_shape: tuple) -> None:
    import keras
    import tensorflow as tf

    dtype = model.inputs[0].dtype if getattr(model, "inputs", None) else "float32"
    try:
        archive = keras.export.ExportArchive()
        archive.track(model)
        archive.add_endpoint("serve", lambda images: model(images, training=False),
                             input_signature=[tf.TensorSpec((None, *input_shape), dtype)])
        archive.write_out(str(folder), verbose=False)
    except Exception as error:
        raise EntryProblem(INVALID, "the trained model could not be exported as a TensorFlow graph, which is what the harness scores "
                                    f"for a model with its own layer code: {_first_line(error)}. Write the model's call() with "
                                    "keras.ops (no Python-only logic on tensor values, no numpy calls on tensors)") from None


# Keras wraps an error raised in a layer's call() as "Exception encountered when calling X.call()".
KERAS_WRAPPED = "Exception encountered when calling"
ANSI = re.compile(r"\x1b\[[0-9;]*m")


def explain(error: BaseException, path: Path, shown: str | None = None) -> str:
    """The submitter's own lines of the traceback first (their file named as `shown`), then the error
    and, when Keras or Python wrapped it, the error that caused it."""
    shown = shown or str(path)
    if isinstance(error, SyntaxError) and error.filename and Path(error.filename).resolve() == path.resolve():
        return f"{shown}, line {error.lineno}: SyntaxError: {error.msg}: {(error.text or '').strip()}"
    frames = traceback.extract_tb(error.__traceback__)
    own = [f for f in frames if Path(f.filename).resolve() == path.resolve()]
    where = "; ".join(f"{shown}, line {f.lineno}, in {f.name}: {f.line}" for f in own[-3:])
    if reached_for_network(error):  # the resolver's own words (errno -3, -2, ...) vary by machine: say what it means
        return f"{where} -> {NO_NETWORK}" if where else NO_NETWORK
    text = f"{type(error).__name__}: {_first_line(error)}"
    causes, cause, seen = [], error.__cause__ or error.__context__, {id(error)}
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        line = f"{type(cause).__name__}: {_first_line(cause)}"
        if line not in text and line not in causes:
            causes.append(line)
        cause = cause.__cause__ or cause.__context__
    if causes:
        text += " (caused by " + "; caused by ".join(causes) + ")"
    return f"{where} -> {text}" if where else text


NO_NETWORK = ("the entry tried to download, and the sandbox it trains in has no network: the harness gives your code "
              "its data (input_shape and num_classes as build_model's arguments, the training arrays to fit): "
              "load no dataset, and no pretrained weights (weights=None)")
# Errors that mean a download found no network: what urllib, socket and requests raise, and Keras's get_file's
# own wrapper ("URL fetch failure on ..."), which chains the URLError.
NETWORK_ERROR_NAMES = ("URLError", "gaierror", "herror", "ConnectionError", "NameResolutionError", "MaxRetryError")
NETWORK_WORDS = ("URL fetch failure", "name resolution", "Name or service not known", "Network is unreachable")


def reached_for_network(error: BaseException) -> bool:
    """Whether `error`, or an error in its chain of causes, is a download that found no network."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if type(error).__name__ in NETWORK_ERROR_NAMES or any(word in str(error) for word in NETWORK_WORDS):
            return True
        # `raise ... from None` hides its context (the validation channel's BrokenPipeError, say): not a cause.
        error = error.__cause__ or (None if error.__suppress_context__ else error.__context__)
    return False


def _first_line(error: BaseException) -> str:
    """The error's message; for an error Keras wrapped, the wrapped message instead of the wrapper's."""
    lines = [ANSI.sub("", line).strip() for line in str(error).strip().splitlines()]
    lines = [line for line in lines if line]
    if lines and lines[0].startswith(KERAS_WRAPPED) and len(lines) > 1:
        return lines[1]
    return lines[0] if lines else ""


def _type_name(kind) -> str:
    return " or ".join(t.__name__ for t in kind) if isinstance(kind, tuple) else kind.__name__


def _prepare_tensorflow(threads: int | None, seed: int):
    """Thread limits must be set before TensorFlow runs its first op; then seed everything."""
    with imports.left_out():  # a second of start-up; the entry's code and bench.engine may import them later
        import keras
        import tensorflow as tf

    if threads:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(min(threads, 2))
    keras.utils.set_random_seed(seed)
    # Same seed, same record, whether entries run one at a time or several at once.
    tf.config.experimental.enable_op_determinism()


def _progress_class():
    import keras

    class Progress(keras.callbacks.Callback):
        """One line per epoch so a long run shows which entry, which epoch and how long so far."""

        def __init__(self, entry: str, seed: int, epochs: int):
            super().__init__()
            self.entry, self.seed, self.epochs = entry, seed, epochs
            self.started = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            logs = logs or {}
            shown = " ".join(f"{k}={logs[k]:.4f}" for k in ("loss", "val_loss", "val_accuracy") if k in logs)
            elapsed = time.perf_counter() - self.started
            print(f"{PROGRESS_PREFIX} {self.entry} seed {self.seed}: epoch {epoch + 1}/{self.epochs} {shown} {elapsed:.0f}s", flush=True)

    return Progress


def Progress(entry, seed, epochs):
    return _progress_class()(entry, seed, epochs)


def _logits_under_softmax(outputs):
    """The logits a softmax (or sigmoid) output layer leaves on its (graph) output, which Keras on TensorFlow reads its
    cross-entropy from (keras/src/backend/tensorflow/nn.py, _get_logits); None for any other output."""
    logits = getattr(outputs, "_keras_logits", None)
    if logits is None and getattr(getattr(outputs, "op", None), "type", None) == "Softmax":
        logits = outputs.op.inputs[0]
    return logits


def _harness_validation_class():
    import keras
    import tensorflow as tf

    class HarnessValidation(keras.callbacks.Callback):
        """At each epoch's end: the model's outputs on the validation images go to the harness, whose answer
        becomes the epoch's val_loss and val_accuracy; the answer that says it is the last stops training."""

        def __init__(self, answers, x_val: np.ndarray, batch_size: int, from_logits: bool):
            super().__init__()
            self.answers, self.x_val, self.batch_size = answers, x_val, batch_size
            self.from_logits, self.asked = from_logits, 0

        def on_train_begin(self, logs=None):
            model = self.model

            def values(x):
                outputs = model(x, training=False)
                logits = _logits_under_softmax(outputs)
                if logits is not None:
                    self.from_logits = True  # read while tracing: the loss reads these logits, as under fit
                    return logits
                return outputs

            # One trace (for any batch size), before the first epoch.
            self.values = tf.function(values, input_signature=[tf.TensorSpec((None, *self.x_val.shape[1:]), tf.float32)])
            self.values.get_concrete_function()

        def on_epoch_end(self, epoch, logs=None):
            outputs = np.concatenate([np.asarray(self.values(self.x_val[start:start + self.batch_size]), dtype=np.float32)
                                      for start in range(0, len(self.x_val), self.batch_size)])
            answer = self.answers.ask(self.asked, outputs, self.from_logits)
            self.asked += 1
            if logs is not None:
                logs.update(val_loss=answer.val_loss, val_accuracy=answer.val_accuracy)
            if answer.last:
                self.model.stop_training = True

    return HarnessValidation


def HarnessValidation(answers, x_val, batch_size, from_logits):
    return _harness_validation_class()(answers, x_val, batch_size, from_logits)


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    raise SystemExit(main(sys.argv[1]))
