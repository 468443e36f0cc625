"""Train and score one entry with one seed. Runs in its own subprocess: `python -m bench.train JOB.json`.

The runner writes the job (submission, seed, challenge settings, output path); this module
imports the submission, builds, checks and trains the model, scores it on the test split once,
and writes a partial record (status, message, metrics, history) to the job's output path.
The runner adds the cache key and versions and stores it.
"""

from __future__ import annotations

import importlib.util
import inspect
import json
import os
import sys
import time
import traceback
from pathlib import Path

import numpy as np

from bench import config, data, macs, monitor

OK, FAILED, TIMEOUT, OVER_BUDGET, INVALID = "OK", "FAILED", "TIMEOUT", "OVER_BUDGET", "INVALID"
TRAINING_KEYS = {"optimizer": str, "learning_rate": (int, float), "batch_size": int, "epochs": int, "loss": str}
# A sample this small builds subclassed models and checks output shapes in milliseconds.
SAMPLE_BATCH = 8
CHECK_STEP_IMAGES = 64
PROGRESS_PREFIX = "[bench]"


class EntryProblem(Exception):
    """Something in the submission the person must change; carries the status to report."""

    def __init__(self, status: str, message: str):
        super().__init__(message)
        self.status = status


def main(job_path: str) -> int:
    started = time.perf_counter()
    job = json.loads(Path(job_path).read_text())
    _prepare_tensorflow(job.get("threads"), job["seed"])
    imported = time.perf_counter()
    record = run_job(job)
    # What the harness costs beyond TensorFlow's own start-up (benchmarks/harness_overhead.py reads these).
    record["worker_seconds"] = {"tensorflow_import": round(imported - started, 3), "after_import": round(time.perf_counter() - imported, 3)}
    tmp = Path(job["output"] + ".tmp")
    tmp.write_text(json.dumps(record))
    os.replace(tmp, job["output"])
    return 0


def run_job(job: dict) -> dict:
    challenge = config.from_dict(job["challenge"])
    path = Path(job["submission"])
    shown = job.get("shown_as", str(path))
    record = {"status": OK, "message": "", "notes": []}
    try:
        module = import_submission(path, shown)
        training = validated_training(module, challenge)
        dataset = data.load(challenge.dataset, challenge.data_dir, challenge.train_limit, challenge.test_limit)
        x_test, y_test = dataset.x_test, dataset.y_test
        # The test split stays out of reach of the submission until training is over.
        dataset.x_test = dataset.y_test = None
        model = build(module, dataset, job.get("build_kwargs") or {}, job.get("hyperparameters"))
        record.update(count_params(model))
        record.update(macs.record_fields(model, record["notes"]))
        if record["total_params"] > challenge.max_params:
            raise EntryProblem(
                OVER_BUDGET,
                f"{record['total_params']:,} parameters is over this challenge's budget of {challenge.max_params:,}: "
                "make the model smaller (fewer filters or units, pooling before dense layers)",
            )
        check_output_shape(model, dataset)
        label_kind = compile_if_needed(model, module, training, challenge, record["notes"])
        if job["mode"] == "check":
            one_training_step(model, dataset, label_kind)
            record["message"] = "check passed: imports, builds, output shape and one training step"
            return record
        (x_fit, y_fit), (x_val, y_val) = data.split_validation(dataset.x_train, dataset.y_train, challenge.validation_size)
        # A fixed probe batch of training images, measured every N steps (`--monitor N`).
        probe = slice(0, monitor.PROBE_IMAGES)
        monitors = [monitor.callback(job["monitor"], x_fit[probe], encode(y_fit[probe], label_kind, dataset.num_classes))] if job.get("monitor") else []
        started = time.perf_counter()
        history = fit(model, module, training, challenge, job, label_kind, x_fit, y_fit, x_val, y_val, monitors)
        record["train_seconds"] = round(time.perf_counter() - started, 3)
        record["history"] = history
        record["epochs"] = len(history.get("loss", []))
        record["val_accuracy"] = accuracy(model, x_val, y_val, training["batch_size"])
        if monitors:
            record["monitor"] = monitors[0].result()
        eval_model = model
        if job.get("eval_kwargs"):
            eval_model = rebuild_for_evaluation(module, model, dataset, job["build_kwargs"] or {}, job["eval_kwargs"])
            # `macs` is the cost of the model that was scored; deploying longer costs more than training did.
            record["train_macs"] = record["macs"]
            record.update(macs.record_fields(eval_model, record["notes"]))
        if job.get("test_images"):  # a hidden test set: the runner holds its labels and scores these predictions
            images = np.load(job["test_images"], allow_pickle=False)
            record["test_predictions"] = np.argmax(eval_model.predict(images, batch_size=max(training["batch_size"], 256), verbose=0), axis=-1).tolist()
        else:
            record["test_accuracy"] = accuracy(eval_model, x_test, y_test, training["batch_size"])
    except EntryProblem as problem:
        record.update(status=problem.status, message=str(problem))
    except Exception as error:  # anything the submission's code raised
        record.update(status=FAILED, message=explain(error, path, shown), traceback=traceback.format_exc())
    return record


def import_submission(path: Path, shown: str | None = None):
    spec = importlib.util.spec_from_file_location(f"submission_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(path.parent.resolve()))  # so an entry may import its `_helpers.py`
    spec.loader.exec_module(module)
    if not callable(getattr(module, "build_model", None)):
        raise EntryProblem(INVALID, f"{shown or path} has no build_model() function: define `def build_model(input_shape, num_classes):` returning a keras.Model")
    return module


def validated_training(module, challenge: config.Challenge) -> dict:
    """The entry's TRAINING dict, checked, with the challenge's defaults filled in and epochs capped."""
    given = getattr(module, "TRAINING", None) or {}
    if not isinstance(given, dict):
        raise EntryProblem(INVALID, f"TRAINING must be a dict such as {{'batch_size': 256}}, got {type(given).__name__}")
    for key, value in given.items():
        if key not in TRAINING_KEYS:
            raise EntryProblem(INVALID, f"TRAINING has an unknown key {key!r}; allowed keys are {', '.join(TRAINING_KEYS)}")
        if isinstance(value, bool) or not isinstance(value, TRAINING_KEYS[key]):
            raise EntryProblem(INVALID, f"TRAINING[{key!r}] = {value!r} has the wrong type; expected {_type_name(TRAINING_KEYS[key])}")
        if key in ("learning_rate", "batch_size", "epochs") and value <= 0:
            raise EntryProblem(INVALID, f"TRAINING[{key!r}] = {value!r} must be positive")
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


def build(module, dataset: data.Dataset, build_kwargs: dict, hyperparameters: dict | None):
    import keras

    if hyperparameters is not None:
        model = _build_from_hyperparameters(module, dataset, hyperparameters)
    else:
        model = call_factory(module.build_model, {"input_shape": dataset.input_shape, "num_classes": dataset.num_classes}, build_kwargs)
    if not isinstance(model, keras.Model):
        raise EntryProblem(INVALID, f"build_model() returned {type(model).__name__}, not a keras.Model: return the model object itself")
    if not model.weights:
        model(dataset.x_train[:SAMPLE_BATCH])  # subclassed models create their weights on first call
    if not model.weights:
        raise EntryProblem(INVALID, "the model has no weights even after running it on a sample batch: add at least one layer with weights")
    return model


def call_factory(factory, standard: dict, extra: dict):
    """Pass `input_shape`/`num_classes` only to factories that accept them (seed 004 hard-codes its input)."""
    parameters = inspect.signature(factory).parameters
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())
    kwargs = {k: v for k, v in standard.items() if takes_any or k in parameters}
    unknown = [k for k in extra if not takes_any and k not in parameters]
    if unknown:
        raise EntryProblem(INVALID, f"{factory.__name__}() has no parameter(s) {', '.join(unknown)}: add them to its signature")
    return factory(**kwargs, **extra)


def _build_from_hyperparameters(module, dataset, values: dict):
    import keras_tuner

    if not callable(getattr(module, "build_hypermodel", None)):
        raise EntryProblem(INVALID, "tuned hyperparameters were found but the entry has no build_hypermodel(hp, input_shape, num_classes)")
    hp = keras_tuner.HyperParameters()
    for name, value in values.items():
        hp.Fixed(name, value)
    return module.build_hypermodel(hp, input_shape=dataset.input_shape, num_classes=dataset.num_classes)


def count_params(model) -> dict:
    # Deduplicate by identity so a layer applied several times counts its weights once.
    unique = {id(w): w for w in model.weights}
    trainable = {id(w) for w in model.trainable_weights}
    size = lambda w: int(np.prod(w.shape))
    return {
        "total_params": int(sum(size(w) for w in unique.values())),
        "trainable_params": int(sum(size(w) for i, w in unique.items() if i in trainable)),
    }


def check_output_shape(model, dataset: data.Dataset):
    sample = dataset.x_train[:SAMPLE_BATCH]
    try:
        output = model(sample, training=False)
    except Exception as error:
        raise EntryProblem(
            INVALID,
            f"the model does not accept this dataset's images, shape {dataset.input_shape}: "
            f"{str(error).strip().splitlines()[0]} -- take input_shape as an argument of build_model and use it for keras.Input",
        ) from None
    shape = tuple(getattr(output, "shape", ()))
    if shape != (len(sample), dataset.num_classes):
        raise EntryProblem(
            INVALID,
            f"the model's output has shape {shape[1:]} per batch, expected ({dataset.num_classes},): "
            f"end with a layer of {dataset.num_classes} units (and Flatten/Reshape away any spatial axes)",
        )


def compile_if_needed(model, module, training: dict, challenge: config.Challenge, notes: list) -> str:
    """Compile uncompiled models; keep a submitter's own optimizer and loss. Returns 'sparse' or 'one_hot'."""
    import keras

    from_logits = bool(getattr(module, "FROM_LOGITS", False))
    if getattr(model, "compiled", False) and getattr(model, "optimizer", None) is not None:
        optimizer, loss = model.optimizer, model.loss
        if any(k in (getattr(module, "TRAINING", None) or {}) for k in ("optimizer", "learning_rate", "loss")):
            notes.append("the model was compiled by its factory: TRAINING's optimizer/learning_rate/loss were not used")
    else:
        optimizer = keras.optimizers.get({"class_name": training["optimizer"], "config": {"learning_rate": training["learning_rate"]}})
        loss = training["loss"] or keras.losses.SparseCategoricalCrossentropy(from_logits=from_logits)
    # Recompiling with the same optimizer and loss adds the accuracy metric the callbacks and history need.
    model.compile(optimizer=optimizer, loss=loss, metrics=["accuracy"])
    return label_kind_for(loss)


def label_kind_for(loss) -> str:
    name = loss if isinstance(loss, str) else getattr(loss, "name", None) or getattr(loss, "__name__", "") or type(loss).__name__
    name = name.lower()
    return "sparse" if "sparse" in name else "one_hot"


def encode(labels: np.ndarray, kind: str, num_classes: int) -> np.ndarray:
    return labels if kind == "sparse" else np.eye(num_classes, dtype="float32")[labels]


def one_training_step(model, dataset: data.Dataset, label_kind: str):
    x = dataset.x_train[:CHECK_STEP_IMAGES]
    y = encode(dataset.y_train[:CHECK_STEP_IMAGES], label_kind, dataset.num_classes)
    loss = model.train_on_batch(x, y)
    loss = loss[0] if isinstance(loss, (list, tuple)) else loss
    if not np.isfinite(float(loss)):
        raise EntryProblem(INVALID, f"one training step gave a non-finite loss ({loss}): check the loss, the output activation and FROM_LOGITS")


def training_callbacks(module, challenge: config.Challenge):
    """Fresh callbacks for one training run: the challenge's ReduceLROnPlateau and EarlyStopping,
    then the entry's own callbacks(). Returns (callbacks, the EarlyStopping among them)."""
    import keras

    rl, es = challenge.reduce_lr, challenge.early_stopping
    early_stopping = keras.callbacks.EarlyStopping(
        monitor=es.monitor, patience=es.patience, min_delta=es.min_delta, restore_best_weights=True
    )
    callbacks = [
        keras.callbacks.ReduceLROnPlateau(monitor=rl.monitor, factor=rl.factor, patience=rl.patience, min_delta=rl.min_delta, min_lr=rl.min_lr or 0.0),
        early_stopping,
    ]
    extra = getattr(module, "callbacks", None)
    if callable(extra):
        own = list(extra())
        if not all(isinstance(c, keras.callbacks.Callback) for c in own):
            raise EntryProblem(INVALID, "callbacks() must return a list of keras.callbacks.Callback objects")
        callbacks += own
    return callbacks, early_stopping


def fit(model, module, training, challenge, job, label_kind, x_fit, y_fit, x_val, y_val, extra_callbacks=()) -> dict:
    callbacks, early_stopping = training_callbacks(module, challenge)
    callbacks.append(Progress(job["entry"], job["seed"], training["epochs"]))
    callbacks += list(extra_callbacks)
    num_classes = 10
    fitted = model.fit(
        x_fit,
        encode(y_fit, label_kind, num_classes),
        validation_data=(x_val, encode(y_val, label_kind, num_classes)),
        epochs=training["epochs"],
        batch_size=training["batch_size"],
        callbacks=callbacks,
        verbose=0,
    )
    # EarlyStopping restores the best weights only when it stops the run; do the same at the epoch cap,
    # so the scored model is always the one validation picked.
    if early_stopping.best_weights is not None and early_stopping.stopped_epoch == 0:
        model.set_weights(early_stopping.best_weights)
    return {k: [float(v) for v in values] for k, values in fitted.history.items()}


def rebuild_for_evaluation(module, trained, dataset, build_kwargs, eval_kwargs):
    """The same weights in a model built with other factory arguments (train short, deploy long)."""
    model = build(module, dataset, {**build_kwargs, **eval_kwargs}, None)
    if len(model.weights) != len(trained.weights):
        raise EntryProblem(INVALID, f"building with {eval_kwargs} changes the weights, so trained weights cannot be reused")
    model.set_weights(trained.get_weights())
    return model


def accuracy(model, x, y, batch_size: int) -> float:
    predictions = model.predict(x, batch_size=max(batch_size, 256), verbose=0)
    return float(np.mean(np.argmax(predictions, axis=-1) == y))


def explain(error: BaseException, path: Path, shown: str | None = None) -> str:
    """The submitter's own lines of the traceback first (their file named as `shown`), then the error."""
    shown = shown or str(path)
    if isinstance(error, SyntaxError) and error.filename and Path(error.filename).resolve() == path.resolve():
        return f"{shown}, line {error.lineno}: SyntaxError: {error.msg}: {(error.text or '').strip()}"
    frames = traceback.extract_tb(error.__traceback__)
    own = [f for f in frames if Path(f.filename).resolve() == path.resolve()]
    where = "; ".join(f"{shown}, line {f.lineno}, in {f.name}: {f.line}" for f in own[-3:])
    text = f"{type(error).__name__}: {str(error).strip().splitlines()[0] if str(error).strip() else ''}"
    return f"{where} -> {text}" if where else text


def _type_name(kind) -> str:
    return " or ".join(t.__name__ for t in kind) if isinstance(kind, tuple) else kind.__name__


def _prepare_tensorflow(threads: int | None, seed: int):
    """Thread limits must be set before TensorFlow runs its first op; then seed everything."""
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


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    raise SystemExit(main(sys.argv[1]))
