"""Audit and predict: count what an exported model holds and run it on images, without the entry's code.

Runs as `python -m bench.audit JOB.json`, in its own sandboxed process, after training has ended.
It never imports the entry's module: it reads the TensorFlow SavedModel that bench.train exported
(`model.export(..., format="tf_saved_model")`) and its `serve` signature, and writes to the job's
output folder `audit.json` (status, message, parameter counts, MACs, notes) and one
`<name>_predictions.npy` (int64 class indices, one per image) for each image file it was given.
No labels ever reach this process: the runner scores the predictions.

What it refuses (INVALID): a graph with any operation that reads or writes files, calls back into
Python, talks to other processes, prints or draws random numbers (weights generated at inference from a
fixed seed would be uncounted parameters) (the patterns in REFUSED_OPS, names as in
`tf.raw_ops`), and an export without a serving signature taking one batch of images.

What it counts, from the graph the serving function runs:
- `total_params`: every variable the function reads, each once however often it is used (shared
  weights), and `trainable_params` those of them marked trainable; an element wider than 32 bits counts as
  the 32-bit numbers it can hold (an int64 2, a complex128 4: bitcast, they carry as many float32 weights);
- `embedded_constants`: numbers baked into the graph as constants, so a table fitted on the training
  images counts as the parameters it is: every element of a non-scalar floating-point constant or of an
  integer constant of more than FREE_INTEGER_CONSTANT elements, a string constant's bytes / 4, and, of the
  small constants every Keras graph holds (scalars such as epsilons, 0.5 and 1; shapes, axes, paddings),
  every distinct element past the first FREE_SMALL_ELEMENTS (only constants of at most 32 bits are small).
  These join `total_params`. Ops that decode
  strings into numbers are refused (REFUSED_OPS).
- `nonzero_params`: `total_params` less the elements that are exactly zero (pruned weights), and
  `weight_tensors`: [dtype, elements, nonzero elements] of every variable and counted constant, from
  which bench.scoring computes the storage in bits (a quantized weight's bits come from its dtype);
- `macs`: multiply-accumulates per image, the mean over every image predicted: the frozen graph is
  traced while it predicts, so what is counted is what produced the scored predictions (a branch chosen
  by the input or the batch size, a loop's iterations, each once per run): Conv2D/Conv3D (output values x
  window x input channels), DepthwiseConv2dNative (output values x window), Conv2DBackpropInput (input
  values x window x output channels), MatMul and BatchMatMul (output values x the summed axis). Other ops
  (pooling, activations, element-wise arithmetic, normalisation) cost none, as in bench.macs. The count
  needs the graph as written: Grappler's remapper and oneDNN's fusions are off in this process (a fused
  Conv2D + BiasAdd runs under the BiasAdd's name). `macs_nonzero` scales each op's count by the fraction of
  its weight operand that is nonzero (the MACs a sparse kernel would do; a computed weight, such as an int8
  kernel times its scales, counts in full).
"""

from __future__ import annotations

import collections
import json
import math
import os
import re
import sys
import time
from pathlib import Path

import numpy as np

from bench.status import INVALID, OK

RESULT_FILE = "audit.json"
SIGNATURE = "serving_default"
# Scalars, and integer constants up to this many elements (shapes, axes, perms, paddings), are "small".
FREE_INTEGER_CONSTANT = 8
# Distinct small constants are free up to this many elements in all; each element past it counts.
# The 15 committed board entries hold 4 to 44 (separable_697); a table cut into scalars does not fit.
FREE_SMALL_ELEMENTS = 64
# Operation names (tf.raw_ops) a scored model has no use for: files, Python, processes, output, the network.
REFUSED_OPS = re.compile(
    r"File|Reader|Save|Restore|Checkpoint|PyFunc|Dataset|Iterator|Summary|Print|Debug|Remote|Rpc|Collective|"
    r"ImmutableConst|LoadAndRemap|GenerateVocab|InitializeTableFromText|Socket|Send$|Recv$|"
    # Decoders turn a string constant (counted by its bytes, but easy to miss) back into numbers.
    r"Decode|Parse|StringToNumber|Deserialize|Unbatch|Compress|"
    # Weights drawn from a fixed seed at inference would be parameters nobody counts; a scored model is deterministic.
    r"Random|Multinomial|Shuffle"
)
PREDICT_BATCH = 1000


def main(job_path: str) -> int:
    started = time.perf_counter()
    job = json.loads(Path(job_path).read_text())
    import tensorflow as tf

    if job.get("threads"):
        tf.config.threading.set_intra_op_parallelism_threads(job["threads"])
        tf.config.threading.set_inter_op_parallelism_threads(min(job["threads"], 2))
    output = Path(job["output"])
    images = {name: np.load(path, allow_pickle=False) for name, path in job["images"].items()}
    record = audit(job["model"], images, output)
    record["audit_seconds"] = round(time.perf_counter() - started, 3)
    tmp = output / (RESULT_FILE + ".tmp")
    tmp.write_text(json.dumps(record, allow_nan=False))
    os.replace(tmp, output / RESULT_FILE)
    return 0


def audit(model_dir: str | Path, images: dict[str, np.ndarray], output: str | Path) -> dict:
    """Check, count and run the SavedModel in `model_dir`; predictions for each of `images` go to `output`.

    Returns the audit's record: status OK or INVALID, message, and (when OK) total_params,
    trainable_params, embedded_constants, macs, notes.
    """
    import tensorflow as tf

    try:
        loaded = tf.saved_model.load(str(model_dir))
    except Exception as error:
        return _invalid(f"the exported model could not be loaded: {_first_line(error)}")
    function = getattr(loaded, "signatures", {}).get(SIGNATURE)
    if function is None or len(function.structured_input_signature[1]) != 1:
        return _invalid("the export has no serving signature taking one batch of images: export with model.export(path)")
    graph_def = function.graph.as_graph_def()
    nodes = [*graph_def.node, *(node for f in graph_def.library.function for node in f.node_def)]
    refused = sorted({node.op for node in nodes if REFUSED_OPS.search(node.op)})
    if refused:
        return _invalid(f"the model's graph uses operation(s) {', '.join(refused)}, which read or write files, call Python, "
                        "reach outside the model or draw random numbers: a scored model may only compute on its input, "
                        "the same way every time (keep weights in variables, and random layers inactive at inference)")
    variables = {id(v): v for v in function.variables}
    total = sum(parameters_in(int(np.prod(v.shape)), v.dtype.size) for v in variables.values())
    trainable = sum(parameters_in(int(np.prod(v.shape)), v.dtype.size) for v in variables.values() if v.trainable)
    constants, constant_tensors = counted_constants(node for node in nodes if node.op == "Const")
    weight_tensors = [_tensor_summary(v.dtype.name, v.dtype.size, v.numpy()) for v in variables.values()] + constant_tensors
    notes = []
    if constants:
        notes.append(f"{constants:,} numbers are embedded in the graph as constants and count as parameters")
    predictions, (macs, macs_nonzero), uncounted = predict_and_count_macs(function, images)
    if uncounted:
        notes.append(f"MACs leave out operation(s) {', '.join(uncounted)} (their shapes were not known)")
    output_dir = Path(output)
    for name, predicted in predictions.items():
        np.save(output_dir / f"{name}_predictions.npy", predicted)
    zeros = sum(parameters_in(elements - nonzero, bits // 8) for _, elements, nonzero, bits in weight_tensors)
    return {"status": OK, "message": "", "total_params": int(total + constants), "trainable_params": int(trainable),
            "nonzero_params": int(total + constants - zeros), "weight_tensors": weight_tensors,
            "embedded_constants": int(constants), "macs": macs, "macs_nonzero": macs_nonzero, "notes": notes}


def parameters_in(elements: int, itemsize: int) -> int:
    """Parameters `elements` of `itemsize` bytes count as: one each up to 32 bits, and as many 32-bit numbers as
    they can hold above that (an int64 or complex128 element can carry 2 or 4 float32 weights, bitcast back)."""
    return elements * max(1, itemsize // 4)


def _tensor_summary(dtype: str, itemsize: int, value: np.ndarray) -> list:
    """[dtype name, elements, nonzero elements, bits per element] of one stored tensor."""
    bits = 4 if dtype in ("int4", "uint4") else 8 * itemsize
    return [dtype, int(value.size), int(np.count_nonzero(value)), bits]


def counted_constants(nodes) -> tuple[int, list[list]]:
    """Numbers held as graph constants that count as parameters (the rule in this module's docstring), and
    the [dtype, elements, nonzero] summary of each constant counted in full (strings as 32-bit numbers;
    the small constants past the free allowance as one float32 tensor)."""
    from tensorflow.python.framework import tensor_util

    counted, small, tensors = 0, set(), []
    for node in nodes:
        value = tensor_util.MakeNdarray(node.attr["value"].tensor)
        if value.dtype.kind in "OSU":  # strings: their bytes, as 32-bit numbers
            words = sum(-(-len(item if isinstance(item, bytes) else str(item).encode()) // 4) for item in value.reshape(-1))
            counted += words
            tensors.append(["float32", words, words, 32])
        elif value.dtype.itemsize <= 4 and (value.ndim == 0 or (np.issubdtype(value.dtype, np.integer) and value.size <= FREE_INTEGER_CONSTANT)):
            small.add((value.dtype.str, value.shape, value.tobytes()))
        else:  # wider than 32 bits, even a scalar, counts in full: it can carry several float32 weights
            counted += parameters_in(int(value.size), value.dtype.itemsize)
            tensors.append(_tensor_summary(np.dtype(value.dtype).name, value.dtype.itemsize, value))
    over = max(0, sum(int(np.prod(shape)) for _, shape, _ in small) - FREE_SMALL_ELEMENTS)
    if over:
        tensors.append(["float32", over, over, 32])
    return counted + over, tensors


def predict_and_count_macs(function, images: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], tuple, list[str]]:
    """(class predictions for each image set, (MACs per image, the same with zero weights skipped), op types
    whose cost could not be read).

    Every image is predicted by the frozen graph while it is traced, and the MACs are the mean over all
    of them: what is counted is exactly what produced the scored predictions, whatever branch or loop
    count an input (or a batch size) selects."""
    import tensorflow as tf
    from tensorflow.core.protobuf import rewriter_config_pb2
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    frozen = convert_variables_to_constants_v2(function)
    graph = tf.Graph()
    with graph.as_default():
        tf.compat.v1.import_graph_def(frozen.graph.as_graph_def(), name="")
    input_name, input_dtype = frozen.inputs[0].name, frozen.inputs[0].dtype.as_numpy_dtype
    outputs = [t.name for t in frozen.outputs][:1]
    # Grappler would fuse ops (MatMul + BiasAdd into _FusedMatMul) under other names; count the graph as written.
    session_config = tf.compat.v1.ConfigProto()
    session_config.graph_options.rewrite_options.remapping = rewriter_config_pb2.RewriterConfig.OFF
    total, total_nonzero, counted_images, uncounted, predictions = 0, 0, 0, set(), {}
    with tf.compat.v1.Session(graph=graph, config=session_config) as session:
        for name, array in images.items():
            batches = []
            for start in range(0, len(array), PREDICT_BATCH):
                batch = array[start:start + PREDICT_BATCH].astype(input_dtype)
                metadata = tf.compat.v1.RunMetadata()
                (scores,) = session.run(outputs, {input_name: batch}, run_metadata=metadata,
                                        options=tf.compat.v1.RunOptions(trace_level=tf.compat.v1.RunOptions.FULL_TRACE))
                batches.append(np.argmax(np.asarray(scores).reshape(len(batch), -1), axis=-1))
                macs, macs_nonzero, missing = _traced_macs(graph, metadata)
                total, total_nonzero, counted_images = total + macs, total_nonzero + macs_nonzero, counted_images + len(batch)
                uncounted |= missing
            predictions[name] = np.concatenate(batches).astype("int64") if batches else np.zeros(0, "int64")
    per_image = (lambda count: round(count / counted_images) if counted_images else None)
    return predictions, (per_image(total), per_image(total_nonzero)), sorted(uncounted)


def _traced_macs(graph, metadata) -> tuple[int, int, set[str]]:
    """MACs of one traced run (all its images), the same with zero weights skipped, and the op types whose
    shapes were unknown."""
    runs, shapes = collections.Counter(), {}
    for device in metadata.step_stats.dev_stats:
        for stats in device.node_stats:
            runs[stats.node_name] += 1
            if stats.output:
                shapes[stats.node_name] = [d.size for d in stats.output[0].tensor_description.shape.dim]
    total, nonzero, uncounted = 0, 0.0, set()
    for op in graph.get_operations():
        if runs[op.name] and op.type in MAC_OPS:
            macs = MAC_OPS[op.type](op, shapes.get(op.name))
            if macs is None:
                uncounted.add(op.type)
            else:
                total += macs * runs[op.name]
                nonzero += macs * runs[op.name] * _nonzero_fraction(op.inputs[1])
    return int(total), int(round(nonzero)), uncounted


def _nonzero_fraction(weights) -> float:
    """The fraction of nonzero elements of a weight operand that is a constant of the frozen graph (a
    variable's value, through Identity ops); 1 for anything computed (an int8 kernel times its scales)."""
    from tensorflow.python.framework import tensor_util

    op = weights.op
    while op.type == "Identity" and op.inputs:
        op = op.inputs[0].op
    if op.type != "Const":
        return 1.0
    value = tensor_util.MakeNdarray(op.get_attr("value"))
    return float(np.count_nonzero(value)) / value.size if value.size else 1.0


def _static(tensor) -> list[int] | None:
    shape = tensor.shape
    return None if shape.rank is None or any(d is None for d in shape.as_list()) else shape.as_list()


def _window_macs(op, out, kernel_axes_used) -> int | None:
    kernel = _static(op.inputs[1])
    if out is None or kernel is None:
        return None
    return math.prod(out) * math.prod(kernel[:kernel_axes_used])


def _conv_transpose_macs(op, out) -> int | None:
    kernel, values = _static(op.inputs[1]), _static(op.inputs[2])  # inputs: output shape, filter, the layer's input
    if kernel is None or values is None:
        return None
    return math.prod(values) * math.prod(kernel[:-1])  # each input value spreads over window x output channels


def _matmul_macs(op, out) -> int | None:
    """Output values (the whole batch's) x the summed axis."""
    a = op.inputs[0].shape
    transposed = any(op.node_def.attr[k].b for k in ("transpose_a", "adj_x") if k in op.node_def.attr)
    summed = a.as_list()[-2 if transposed else -1] if a.rank else None
    if out is None or summed is None:
        return None
    return math.prod(out) * summed


MAC_OPS = {
    "Conv2D": lambda op, out: _window_macs(op, out, 3),  # kernel (h, w, in, out): window x input channels
    "Conv3D": lambda op, out: _window_macs(op, out, 4),
    "DepthwiseConv2dNative": lambda op, out: _window_macs(op, out, 2),  # kernel (h, w, in, multiplier)
    "Conv2DBackpropInput": _conv_transpose_macs,
    "MatMul": _matmul_macs,
    "BatchMatMul": _matmul_macs,
    "BatchMatMulV2": _matmul_macs,
    "BatchMatMulV3": _matmul_macs,
}


def _invalid(message: str) -> dict:
    return {"status": INVALID, "message": message}


def _first_line(error: BaseException) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0]


class WithoutKeras:
    """An import hook that makes Keras's code unimportable. `import tensorflow` eagerly imports Keras (and,
    through it, scikit-learn) when it is installed, about 1.5 s of every audit's start-up; the audit reads a
    SavedModel with TensorFlow alone (its graph holds no Keras objects), and TensorFlow carries on without Keras."""

    def find_spec(self, name, path=None, target=None):
        if name == "keras.src" or name.startswith("keras.src."):
            raise ImportError("the audit runs without Keras")
        return None


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    # oneDNN's graph pass fuses Conv2D + BiasAdd into one node named after the BiasAdd, which hides the
    # convolution from predict_and_count_macs; it is read once, when TensorFlow loads, so it is set before the import.
    os.environ["TF_ENABLE_ONEDNN_OPTS"] = "0"
    sys.meta_path.insert(0, WithoutKeras())
    raise SystemExit(main(sys.argv[1]))
