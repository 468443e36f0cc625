"""Rebuild, audit and predict: what the trained model holds and what it predicts, without the entry's code.

Runs as `python -m bench.audit JOB.json`, in its own sandboxed process. It imports TensorFlow, then reads the
job, which the runner writes once training has ended (`check` starts this process beside training). The
job names the training stage's output (`model.keras` and the `model/` SavedModel), the image files to
predict and the output folder, where it writes `audit.json` (status, message, counts, MACs, notes,
`path`) and one `<name>_predictions.npy` (int64 class indices) per image file. No labels ever reach it.

Two paths (the record's `path` says which; README "Untrusted code" says what each guarantees):

- `rebuilt`: the Keras file names only Keras's own layers (bench.rebuild). Keras rebuilds it in safe
  mode, parameters are its weights plus the numbers its config carries, MACs come from its layer graph
  (bench.macs), and the harness predicts with `model(images, training=False)`.
- `custom code`: anything else (the entry's own layers or models, a Lambda). The exported graph is
  audited against an allow-list of TensorFlow ops and every number it carries is counted
  (bench.graph_audit). A challenge may refuse this path (`allow_custom_code = false`).

On both paths each image's prediction must depend on that image alone (`batch_dependence`) and
predicting must leave the model's variables as they were: otherwise INVALID.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import numpy as np

from bench import imports, rebuild
from bench.status import FAILED, INVALID, OK

RESULT_FILE = "audit.json"
# The image set the entry saw in training (the others are the test set): bench.stages names them so.
VALIDATION = "val"
REBUILT, CUSTOM_CODE = "rebuilt", "custom code"
PREDICT_BATCH = 1000
# Images (drawn at random) predicted again one by one to check that no prediction depends on its batch neighbours.
ALONE_IMAGES = 8
# Scores of the same image in two batch compositions agree to float32 rounding (relative to the row's spread),
# never to a neighbour's influence.
SCORE_RTOL = 1e-3
# Two top scores closer than this (relative to the row's spread) are a tie float32 rounding may break either way;
# such flips are allowed on one image in TIED_FLIPS_PER (at least one).
TIE_RTOL = 1e-5
TIED_FLIPS_PER = 1000


def main(job_path: str) -> int:
    _import_tensorflow()
    job_file = Path(job_path)
    while not job_file.exists():  # a check starts this process while the entry trains (bench.stages.AuditStage)
        time.sleep(JOB_POLL_SECONDS)
    started = time.perf_counter()
    job = json.loads(job_file.read_text())
    if job.get("cancelled"):  # training failed: nothing to audit
        return 0
    output = Path(job["output"])
    images = {name: np.load(path, allow_pickle=False) for name, path in job["images"].items()}
    record = audit(job["model"], images, output, job.get("allow_custom_code", True), job.get("threads"), own_process=True)
    record["audit_seconds"] = round(time.perf_counter() - started, 3)
    tmp = output / (RESULT_FILE + ".tmp")
    tmp.write_text(json.dumps(record, allow_nan=False))
    os.replace(tmp, output / RESULT_FILE)
    return 0


def audit(trained: str | Path, images: dict[str, np.ndarray], output: str | Path, allow_custom_code: bool = True,
          threads: int | None = None, own_process: bool = False) -> dict:
    """Audit the training stage's output folder `trained` (`model.keras`, `model/`) and predict `images` into `output`.

    Returns the audit's record: status OK or INVALID, message, `path` (REBUILT or CUSTOM_CODE) and, when
    OK, total_params, trainable_params, nonzero_params, weight_tensors, embedded_constants, macs,
    macs_nonzero, notes. `own_process`: this process does nothing else (the graph path then starts TensorFlow
    without Keras)."""
    trained = Path(trained)
    keras_file = trained / rebuild.KERAS_FILE
    try:
        config = rebuild.read_config(keras_file)
        foreign = rebuild.custom_code(config)
    except rebuild.NotRebuildable as reason:
        config, foreign = None, [str(reason)]
    packed = rebuild.uncounted_quantization(config) if config is not None else []
    if packed:
        # Counted as elements on either path, its packed bytes would hide weights: refused, not counted low.
        return {**_invalid(f"the model is quantized as {', '.join(packed)}, whose packed weights the audit cannot count one "
                           "by one: quantize with model.quantize('int8') or model.quantize('int4') in finalize"),
                "path": REBUILT if not foreign else CUSTOM_CODE}
    if not foreign:
        _prepare_tensorflow(threads, blocked=imports.UNUSED_BY_KERAS_MODELS if own_process else ())
        try:
            model = rebuild.rebuild(keras_file, config)
        except rebuild.NotRebuildable as reason:
            return {**_invalid(f"the trained model could not be rebuilt from Keras's own layers: {reason}"), "path": REBUILT}
        record, scores = _audit_rebuilt(model, config)
        return {**_checked(record, scores, images, output), "path": REBUILT}
    if not allow_custom_code:
        return {**_invalid(f"this challenge scores models built from Keras's own layers only (allow_custom_code = false), "
                           f"and this one uses {', '.join(foreign[:5])}: build it from keras.layers (no subclassed layers, "
                           "Lambda layers or keras.ops calls between layers)"), "path": CUSTOM_CODE}
    _prepare_tensorflow(threads, blocked=("keras.src", *imports.UNUSED_BY_KERAS_MODELS) if own_process else ())
    from bench import graph_audit

    record, scores = graph_audit.audit(trained / "model")
    if record["status"] != OK:
        return {**record, "path": CUSTOM_CODE}
    record["notes"].insert(0, f"custom code ({', '.join(foreign[:3])}{' and more' if len(foreign) > 3 else ''}): "
                              "audited as an exported graph, not rebuilt from Keras's layers")
    return {**_checked(record, scores, images, output), "path": CUSTOM_CODE}


def _audit_rebuilt(model, config) -> tuple[dict, object]:
    """The counts of a rebuilt model, and its scoring function (a batch of images -> scores)."""
    import tensorflow as tf

    from bench import macs
    from bench.graph_audit import tensor_summary

    variables, trainable = rebuild.weights(model)
    if not variables:
        return _invalid("the scored model has no weights: a model's numbers belong in its layers' weights"), None
    # The rebuilt layers' own word on their storage, however the config spelt it (a dtype string, a policy map).
    packed_modes = sorted({mode for mode in rebuild.quantization_modes(model)
                           if mode.split("/")[0] not in rebuild.COUNTED_QUANTIZATION_MODES})
    if packed_modes:
        return _invalid(f"the model is quantized as {', '.join(packed_modes)}, whose packed weights the audit cannot count "
                        "one by one: quantize with model.quantize('int8') or model.quantize('int4') in finalize"), None
    values = [np.asarray(v.numpy()) for v in variables]
    packed = rebuild.int4_packed(model)
    in_config = rebuild.config_numbers(config)
    weight_tensors = [_int4_summary(value) if id(v) in packed else tensor_summary(value.dtype.name, value.dtype.itemsize, value)
                      for v, value in zip(variables, values)]
    if in_config:
        weight_tensors.append(["float32", in_config, in_config, 32])
    total = sum(elements for _, elements, _, _ in weight_tensors)  # the settings' numbers included
    zeros = sum(elements - nonzero for _, elements, nonzero, _ in weight_tensors)
    trainable_total = sum(elements for v, (_, elements, _, _) in zip(variables, weight_tensors) if id(v) in {id(t) for t in trainable})
    notes = []
    if in_config:
        notes.append(f"{in_config:,} numbers in the layers' settings act at inference and count as parameters")
    try:
        counted, nonzero_macs = macs.count(model), macs.count(model, skip_zero_weights=True).macs
    except ValueError as error:  # a tensor of unknown size (an Input with a None axis): no count, and no crash
        counted, nonzero_macs = macs.Count(None, []), None
        notes.append(f"MACs not counted: {error}")
    if counted.uncounted:
        notes.append(f"MACs are a lower bound: layer(s) {', '.join(counted.uncounted)} are not counted")
    record = {"status": OK, "message": "", "total_params": int(total), "trainable_params": int(trainable_total),
              "nonzero_params": int(total - zeros), "weight_tensors": weight_tensors, "embedded_constants": int(in_config),
              "macs": counted.macs, "macs_nonzero": nonzero_macs,
              "macs_lower_bound": bool(counted.uncounted), "notes": notes}
    before = [v.copy() for v in values]
    infer = tf.function(lambda batch: model(batch, training=False), reduce_retracing=True)
    dtype = np.dtype(model.inputs[0].dtype) if getattr(model, "inputs", None) else np.float32

    def scores(batch):
        return np.asarray(infer(tf.constant(batch.astype(dtype))))

    scores.unchanged = lambda: all(np.array_equal(a, np.asarray(v.numpy())) for a, v in zip(before, variables))
    return record, scores


def _int4_summary(packed: np.ndarray) -> list:
    """[dtype, weights, nonzero weights, bits] of an int4 kernel Keras stores two to an int8 element."""
    nibbles = [packed.view(np.uint8) & 0x0F, packed.view(np.uint8) >> 4]
    return ["int4", 2 * int(packed.size), sum(int(np.count_nonzero(n)) for n in nibbles), 4]


def _checked(record: dict, scores, images: dict[str, np.ndarray], output: str | Path) -> dict:
    """`record` once every image set is predicted by `scores` into `output`; INVALID when a prediction depends on
    other images or predicting changed the model."""
    if record["status"] != OK:
        return record
    first = {}
    for name in sorted(images, key=lambda name: name != VALIDATION):
        first[name] = _predicted_rows(scores, images[name], np.arange(len(images[name])), PREDICT_BATCH)
        if name == VALIDATION and hasattr(scores, "counted"):
            # The graph path counts MACs while it predicts the validation images, and stops: a graph whose work
            # depends on its input would otherwise make the MAC figure a statistic of the hidden test images.
            counted = scores.counted()
            record = {**record, "macs": counted["macs"], "macs_nonzero": counted["macs_nonzero"],
                      "macs_lower_bound": counted["lower_bound"], "notes": [*record["notes"], *counted["notes"]]}
    predictions = {name: rows.argmax(axis=1).astype("int64") if len(rows) else np.zeros(0, "int64") for name, rows in first.items()}
    broken = {name: int((~np.isfinite(rows)).any(axis=1).sum()) for name, rows in first.items() if len(rows)}
    if any(broken.values()):  # NaN differs from itself: the batch test below would blame the batch for it
        # Only the validation images are counted aloud: a model can be NaN on whichever images it likes, and a count
        # over the test images would tell its author how many of them have that property (the board shows messages).
        where = (f"{broken[VALIDATION]:,} of {len(first[VALIDATION]):,} validation images" if broken.get(VALIDATION)
                 else "images of the test set")
        return {"status": FAILED, "message": f"the trained model's outputs are NaN or infinite on {where}: its weights "
                "diverged or overflowed. Lower the learning rate, check the loss and FROM_LOGITS, or add normalisation"}
    problem = batch_dependence(scores, images, first)
    if problem is None and not getattr(scores, "unchanged", lambda: True)():
        problem = "predicting changed the model's variables: a scored model keeps no state from one call to the next"
    if problem:
        return _invalid(problem)
    for name, predicted in predictions.items():
        np.save(Path(output) / f"{name}_predictions.npy", predicted)
    return record


def _predicted_rows(scores, array: np.ndarray, order: np.ndarray, batch: int, others: np.ndarray | None = None) -> np.ndarray:
    """The score rows of `array[order]`, predicted `batch` images at a time; with `others`, each batch is half the
    set's images and half random ones of `others`, shuffled together. Rows come back in `order`'s order."""
    rng = np.random.default_rng()
    rows = []
    own = batch if others is None or not len(others) else max(1, batch // 2)
    for start in range(0, len(order), own):
        part = array[order[start:start + own]]
        if own == batch:
            rows.append(_rows(scores(part), len(part)))
            continue
        mixed = np.concatenate([part, others[rng.integers(0, len(others), batch - len(part))]])
        places = rng.permutation(len(mixed))  # where each image of `mixed` sits in the batch predicted
        predicted = _rows(scores(mixed[places]), len(mixed))
        rows.append(predicted[np.argsort(places)][:len(part)])
    return np.concatenate(rows) if rows else np.zeros((0, 0))


def batch_dependence(scores, images: dict[str, np.ndarray], first: dict[str, np.ndarray]) -> str | None:
    """Why an image's scores depend on which other images share its batch (None when they do not).

    `first`: each set's score rows as scored (batches of PREDICT_BATCH, in order). Every image of every set is
    predicted again in another composition: the set in a random order, in batches of a random size, each batch half
    of it random images of the other sets (of the set itself when there is one), shuffled together; and ALONE_IMAGES
    random images one at a time. The draws are not seeded, so an entry cannot know them. Each image's scores must give
    the same class and agree after each row is centred and scaled to its largest deviation (so neither a tiny output
    scale nor a large offset can hide a neighbour's influence)."""
    rng = np.random.default_rng()
    for name, array in images.items():
        if not len(array):
            continue
        others = [other for other_name, other in images.items() if other_name != name and len(other)]
        others = np.concatenate(others) if others else array
        order = rng.permutation(len(array))
        batch = int(rng.integers(max(2, PREDICT_BATCH // 2), PREDICT_BATCH + 1))
        again = np.empty_like(first[name])
        again[order] = _predicted_rows(scores, array, order, batch, others)
        alone = rng.choice(len(array), min(ALONE_IMAGES, len(array)), replace=False)
        compositions = {"mixed with other images in another order": (np.arange(len(array)), again),
                        "predicted one at a time": (alone, np.concatenate([_rows(scores(array[i:i + 1]), 1) for i in alone]))}
        for how, (which, rows) in compositions.items():
            if not _same_scores(first[name][which], rows):
                return (f"the model's predictions depend on the other images in the batch (they change when {how}): "
                        "a scored model predicts each image from that image alone (no statistics over the batch at inference)")
    return None


def _rows(scores: np.ndarray, images: int) -> np.ndarray:
    return np.asarray(scores, dtype=np.float64).reshape(images, -1)


def _same_scores(first: np.ndarray, again: np.ndarray) -> bool:
    """Rows that predict the same class and agree to SCORE_RTOL once centred and scaled by the first row's spread."""
    centred_first = first - first.mean(axis=1, keepdims=True)
    centred_again = again - again.mean(axis=1, keepdims=True)
    spread = np.abs(centred_first).max(axis=1, keepdims=True)
    spread[spread == 0] = 1.0
    if not np.allclose(centred_again / spread, centred_first / spread, rtol=0, atol=SCORE_RTOL):
        return False
    # A class may flip only where the first two scores are equal to float32 rounding (TIE_RTOL of the spread), and on
    # few images: a red team's exact ties, broken by the batch a little under SCORE_RTOL, passed the old rule.
    top_two = np.sort(first, axis=1)[:, -2:] if first.shape[1] > 1 else np.concatenate([first, first], axis=1)
    decided = (top_two[:, 1] - top_two[:, 0]) / spread[:, 0] > TIE_RTOL
    flipped = first.argmax(axis=1) != again.argmax(axis=1)
    return not np.any(flipped & decided) and int(flipped.sum()) <= max(1, len(first) // TIED_FLIPS_PER)


# How often a stage process started ahead of its job looks for the job file.
JOB_POLL_SECONDS = 0.02


def _import_tensorflow() -> None:
    """TensorFlow without Keras's modules, before the job is read (which path the model takes is not known yet,
    and the graph path must never load Keras); Keras is let in afterwards, for the rebuilt path to import."""
    keras_own = imports.Unimportable(("keras.src",))
    _set_tensorflow_environment()
    sys.meta_path[:0] = [keras_own, imports.Unimportable(imports.UNUSED_BY_KERAS_MODELS)]
    import tensorflow  # noqa: F401

    sys.meta_path.remove(keras_own)


def _set_tensorflow_environment() -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ["TF_ENABLE_ONEDNN_OPTS"] = "0"


def _prepare_tensorflow(threads: int | None, blocked: tuple[str, ...] = ()) -> None:
    """Before TensorFlow's first op: the graph path counts ops as written (no oneDNN fusion), the packages in
    `blocked` (the graph path adds Keras: its graph holds no Keras objects) are not imported in this process
    from here on (none of them is loaded yet when TensorFlow came in through `_import_tensorflow`); then the
    thread limits."""
    _set_tensorflow_environment()
    if blocked and not any(module == name or module.startswith(name + ".") for module in sys.modules for name in blocked):
        sys.meta_path.insert(0, imports.Unimportable(blocked))
    import tensorflow as tf

    if threads:
        try:
            tf.config.threading.set_intra_op_parallelism_threads(threads)
            tf.config.threading.set_inter_op_parallelism_threads(min(threads, 2))
        except RuntimeError:  # already running (several audits in one test process): the limits stay as they were
            pass


def _invalid(message: str) -> dict:
    return {"status": INVALID, "message": message}


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1]))
