"""The custom-code path of the audit: count and run an exported graph, without the entry's code.

bench.audit takes this path for a model Keras cannot rebuild from its own layers (the entry's own layer
or model classes, a Lambda, keras.ops calls between layers): it reads the TensorFlow SavedModel that
bench.train exported (the model called with `training=False`) and its `serve` signature.

What it refuses (INVALID): a graph with any operation outside ALLOWED_OPS, the operations Keras's built-in
layers and `keras.ops` emit for inference (names as in `tf.raw_ops`; control-flow bodies are audited the
same way, as every function of the graph's library is), and an export without a serving signature taking
one batch of images. Files, Python calls, processes, printing, random numbers, variable assignments,
strings and lookup tables are not in it: a scored model only computes on its input, the same way every time.

What it counts, from the graph the serving function runs:
- `total_params`: every variable the function reads, each once however often it is used (shared
  weights), and `trainable_params` those of them marked trainable; an element wider than 32 bits counts as
  the 32-bit numbers it can hold (an int64 2, a complex128 4: bitcast, they carry as many float32 weights);
  and every element of a tensor it captured by value, or one for a tensor of one value repeated;
- `embedded_constants`: every number the graph itself carries, which joins `total_params`: every
  element of a non-scalar floating-point constant or of an integer constant of more than
  FREE_INTEGER_CONSTANT elements; and, of the small numbers every Keras graph holds (scalar constants
  such as epsilons, 0.5 and 1; shapes, axes, paddings; the dimensions of every constant and variable, empty
  constants included; numeric attributes of operations such as strides or a LeakyRelu's alpha), every distinct
  value past the first FREE_SMALL_ELEMENTS elements (only numbers of at most 32 bits are small); and every tensor
  the graph's operations take past the first FREE_GRAPH_EDGES (a weight can be wiring: a pixel added |w| times);
- `nonzero_params`: `total_params` less the elements that are exactly zero (pruned weights), and
  `weight_tensors`: [dtype, elements, nonzero elements] of every variable and counted constant, from
  which bench.scoring computes the storage in bits (a quantized weight's bits come from its dtype);
- `macs`: multiply-accumulates per image, the mean over the validation images: the frozen graph is
  traced while it predicts them (bench.audit stops the count before the test images, whose statistics a
  count could otherwise spell out), so what is counted is what produced scored predictions (a branch chosen
  by the input or the batch size, a loop's iterations, each once per run): Conv2D/Conv3D (output values x
  window x input channels), DepthwiseConv2dNative (output values x window), Conv2DBackpropInput (input
  values x window x output channels), MatMul and BatchMatMul (output values x the summed axis), Einsum
  (the product of every index's size, batch included, divided over the images). Other ops
  (pooling, activations, element-wise arithmetic, normalisation) cost none, as in bench.macs. The count
  needs the graph as written: Grappler's remapper and oneDNN's fusions are off in this process (a fused
  Conv2D + BiasAdd runs under the BiasAdd's name). `macs_nonzero` scales each op's count by the fraction of
  its weight operand that is nonzero (the MACs a sparse kernel would do; a computed weight, such as an int8
  kernel times its scales, counts in full). An op whose shapes were not known at run time is named in a
  note, and the count is then a lower bound.
"""

from __future__ import annotations

import collections
import math
from pathlib import Path

import numpy as np

from bench.status import INVALID, OK

SIGNATURE = "serving_default"
# Scalars, and integer constants up to this many elements (shapes, axes, perms, paddings), are "small".
FREE_INTEGER_CONSTANT = 8
# Distinct small numbers are free up to this many elements in all; each element past it counts.
# iterated_loop and gradnet, the board's custom-code entries, hold 25 and 8 (counted with this set to 0);
# a table cut into scalars or attributes does not fit. bench.rebuild gives settings' scalars the same allowance.
FREE_SMALL_ELEMENTS = 64
# What Keras's built-in layers and keras.ops emit for inference (collected by exporting a model of every
# built-in layer and the board's entries, then reviewed): arithmetic, shapes, the layers' kernels,
# function calls and loops. Nothing that reads or writes outside the graph, draws random numbers,
# assigns variables, or turns strings or attributes into numbers, and no Bitcast, bitwise operation or shift:
# they read several weights out of one element's bits.
ALLOWED_OPS = frozenset({
    "Placeholder", "Const", "Identity", "IdentityN", "NoOp", "ReadVariableOp", "StopGradient", "PreventGradient",
    "PartitionedCall", "StatefulPartitionedCall", "While", "StatelessWhile", "If", "StatelessIf",
    "TensorListFromTensor", "TensorListGetItem", "TensorListReserve", "TensorListSetItem", "TensorListStack",
    "TensorListLength", "TensorListElementShape",
    "Abs", "Neg", "Sign", "Square", "Sqrt", "Rsqrt", "Reciprocal", "Exp", "Expm1", "Log", "Log1p", "Pow",
    "Sin", "Cos", "Tan", "Tanh", "Sinh", "Cosh", "Atan", "Atan2", "Erf", "Erfc", "Floor", "Ceil", "Round", "Rint",
    "AddV2", "Add", "AddN", "Sub", "Mul", "RealDiv", "Div", "DivNoNan", "FloorDiv", "FloorMod", "Mod",
    "Maximum", "Minimum", "SquaredDifference", "ClipByValue", "Cumsum", "Cumprod",
    "Greater", "GreaterEqual", "Less", "LessEqual", "Equal", "NotEqual", "LogicalAnd", "LogicalOr", "LogicalNot",
    "Select", "SelectV2", "IsNan", "IsFinite", "ZerosLike", "OnesLike",
    "Relu", "Relu6", "Elu", "Selu", "LeakyRelu", "Sigmoid", "Softplus", "Softsign", "Softmax", "LogSoftmax",
    "Sum", "Mean", "Max", "Min", "Prod", "ArgMax", "ArgMin", "All", "Any",
    "MatMul", "BatchMatMul", "BatchMatMulV2", "BatchMatMulV3", "Einsum", "BiasAdd",
    "Conv2D", "Conv3D", "DepthwiseConv2dNative", "Conv2DBackpropInput", "Conv3DBackpropInputV2",
    "MaxPool", "MaxPoolV2", "MaxPool3D", "AvgPool", "AvgPool3D", "FusedBatchNorm", "FusedBatchNormV3",
    "ResizeBilinear", "ResizeNearestNeighbor", "ResizeBicubic",
    "Cast", "Reshape", "Squeeze", "ExpandDims", "Transpose", "ConcatV2", "Concat", "Split", "SplitV",
    "Pack", "Unpack", "Tile", "Pad", "PadV2", "MirrorPad", "ReverseV2", "StridedSlice", "Slice", "GatherV2",
    "Fill", "Range", "Shape", "ShapeN", "Size", "Rank", "BroadcastTo", "BroadcastArgs", "OneHot",
    "MatrixDiagV3", "MatrixDiagPartV3", "MatrixBandPart",
})
# Ops that take any number of inputs, and how many inputs past two each they may take in all for free: the same
# tensor wired in k times carries k (a stack or a concatenation of 15 levels is a weight in disguise).
VARIADIC_OPS = frozenset({"Pack", "ConcatV2", "Concat", "AddN"})
FREE_WIRING = 64
# Tensors the graph's operations take (data inputs, loop and branch bodies included) free in all, each one past them
# counts: a red team spelt a 10x64 linear classifier of 4-bit weights in 1,610 of them, each pixel added |w| times
# with AddV2 or Sub, no constant and no variable (embedded 0, total 110). The board's custom-code graphs take 943
# (gradnet) and 74 (iterated_loop); the rebuilt path counts layer calls past its own FREE_EDGES (256) the same way.
FREE_GRAPH_EDGES = 1024
# Small constants (scalars, short integer lists) a graph may hold in all before each one more counts; the board's
# custom-code graphs hold 17 (iterated_loop) and 52 (gradnet).
FREE_SMALL_CONSTANTS = 256
# TensorFlow's trace of one run keeps this many op executions and drops the rest without a word
# (kMaxCollectedNodes in step_stats_collector.cc): a trace this long may have missed the ops that ran last.
TRACED_NODES_CAP = 1 << 20
# A weight tensor has a few axes of at most a few million elements; beyond that a shape is a number in disguise.
MAX_VARIABLE_RANK, MAX_DIMENSION = 8, 2**24


def audit(model_dir: str | Path) -> tuple[dict, "FrozenGraph | None"]:
    """Check and count the SavedModel in `model_dir`; (the audit's record, the graph to predict with or None).

    The record: status OK or INVALID, message, and (when OK) total_params, trainable_params, nonzero_params,
    weight_tensors, embedded_constants, notes; `macs` and `macs_nonzero` join it from the FrozenGraph once
    it has predicted (FrozenGraph.counted)."""
    import tensorflow as tf

    try:
        loaded = tf.saved_model.load(str(model_dir))
    except Exception as error:
        return _invalid(f"the exported model could not be loaded: {_first_line(error)}"), None
    function = getattr(loaded, "signatures", {}).get(SIGNATURE)
    if function is None or len(function.structured_input_signature[1]) != 1:
        return _invalid("the export has no serving signature taking one batch of images: export with model.export(path)"), None
    graph_def = function.graph.as_graph_def()
    nodes = [*graph_def.node, *(node for f in graph_def.library.function for node in f.node_def)]
    refused = sorted({node.op for node in nodes if node.op not in ALLOWED_OPS})
    if refused:
        return _invalid(f"the model's graph uses operation(s) {', '.join(refused[:10])}, which Keras's layers and keras.ops do "
                        "not use for inference: the audit allows only the operations they emit, since it must count what each "
                        "one computes (refused too: files, Python calls, printing, random numbers, variable updates, strings, "
                        "lookups). A scored model may only compute on its input, the same way every time: write the step "
                        "with keras.layers and keras.ops (not tf.nn or tf.raw_ops), and keep weights in variables"), None
    variables = {id(v): v for v in function.variables}
    odd = next((v for v in variables.values() if _odd_shape(v.shape)), None)
    if odd is not None:
        return _invalid(f"the model has a variable of shape {odd.shape}: a scored model's weights have a known shape with "
                        f"at least one element and at most {MAX_VARIABLE_RANK} axes"), None
    # Tensors the function captured by value (an eager constant kept on a layer, not a variable): numbers too,
    # each element counted as a variable's is.
    captured = [t for t in function.captured_inputs if t.dtype != tf.resource]
    odd = next((t for t in captured if _odd_shape(t.shape)), None)
    if odd is not None:
        return _invalid(f"the model captures a constant of shape {odd.shape}: a scored model's numbers have a known shape "
                        f"with at least one element and at most {MAX_VARIABLE_RANK} axes"), None
    # One value repeated holds that number and its shape: Normalization(mean=0.13) broadcasts its scalar to the input's.
    held = [(t.dtype, value.reshape(-1)[:1] if t.dtype.size <= 4 and _one_value(value) else value)
            for t, value in ((t, t.numpy()) for t in captured)]
    total = (sum(parameters_in(v.shape.num_elements(), v.dtype.size, v.dtype.is_integer) for v in variables.values())
             + sum(parameters_in(value.size, dtype.size, dtype.is_integer) for dtype, value in held))
    trainable = sum(parameters_in(v.shape.num_elements(), v.dtype.size, v.dtype.is_integer) for v in variables.values() if v.trainable)
    try:
        # A variable's dimensions are numbers too (read back with Shape), as a constant's are.
        constants, constant_tensors = counted_numbers(nodes, [tuple(v.shape.as_list()) for v in [*variables.values(), *captured]])
        weight_tensors = ([tensor_summary(v.dtype.name, v.dtype.size, v.numpy()) for v in variables.values()]
                          + [tensor_summary(dtype.name, dtype.size, value) for dtype, value in held] + constant_tensors)
    except (ValueError, TypeError, tf.errors.OpError) as error:
        return _invalid(f"the exported graph's numbers could not be read: {_first_line(error)}"), None
    notes = []
    if constants:
        notes.append(f"{constants:,} numbers are embedded in the graph as constants or attributes and count as parameters")
    zeros = sum(parameters_in(elements - nonzero, bits // 8, _integer(dtype)) for dtype, elements, nonzero, bits in weight_tensors)
    record = {"status": OK, "message": "", "total_params": int(total + constants), "trainable_params": int(trainable),
              "nonzero_params": int(total + constants - zeros), "weight_tensors": weight_tensors,
              "embedded_constants": int(constants), "notes": notes}
    return record, FrozenGraph(function)


def _odd_shape(shape) -> bool:
    return shape.rank is None or shape.rank > MAX_VARIABLE_RANK or not shape.is_fully_defined() or shape.num_elements() == 0 \
        or any(d > MAX_DIMENSION for d in shape.as_list())


def parameters_in(elements: int, itemsize: int, integer: bool = False) -> int:
    """Parameters `elements` of `itemsize` bytes count as: one each up to 32 bits, and as many 32-bit numbers as
    they can hold above that (an int64 or complex128 element can carry 2 or 4 float32 weights, bitcast back). An
    integer element counts as the 4-bit codes it can hold, the smallest Keras quantizes to (a red team kept eight in
    each int32 and took them apart with FloorDiv and FloorMod): 2 for an int8, 8 for an int32."""
    return elements * itemsize * 2 if integer else elements * max(1, itemsize // 4)


def tensor_summary(dtype: str, itemsize: int, value: np.ndarray) -> list:
    """[dtype name, elements, nonzero elements, bits per element] of one stored tensor."""
    bits = 4 if dtype in ("int4", "uint4") else 8 * itemsize
    return [dtype, int(value.size), int(np.count_nonzero(value)), bits]


def counted_numbers(nodes, variable_shapes=()) -> tuple[int, list[list]]:
    """Numbers the graph carries that count as parameters (the rule in this module's docstring), and the
    [dtype, elements, nonzero, bits] summary of each constant counted in full (the small numbers past the free
    allowance as one float32 tensor)."""
    from tensorflow.python.framework import tensor_util

    counted, small, tensors, wiring, small_nodes, edges = 0, {("dims", shape) for shape in variable_shapes}, [], 0, 0, 0
    for node in nodes:
        edges += sum(not name.startswith("^") for name in node.input)
        for name, attr in node.attr.items():
            if name.startswith("_"):  # TensorFlow's own annotations (which inputs are read-only, ...): no op reads them
                continue
            kind = attr.WhichOneof("value")
            if kind in ("i", "f"):
                small.add(("attr", (getattr(attr, kind),)))
            elif kind == "list" and (attr.list.i or attr.list.f):
                small.add(("attr", tuple(attr.list.i) + tuple(attr.list.f)))
        if node.op in VARIADIC_OPS:  # how often a tensor is wired in is a number too (a weight as a repeat count)
            wiring += max(0, sum(not name.startswith("^") for name in node.input) - 2)
        if node.op != "Const":
            continue
        value = tensor_util.MakeNdarray(node.attr["value"].tensor)
        small.add(("dims", value.shape))  # an empty constant's dimensions are numbers Shape reads back
        if value.dtype.itemsize <= 4 and (value.ndim == 0 or (np.issubdtype(value.dtype, np.integer) and value.size <= FREE_INTEGER_CONSTANT)):
            small.add((value.dtype.str, value.tobytes()))
            small_nodes += 1
        else:  # wider than 32 bits, even a scalar, counts in full: it can carry several float32 weights
            counted += parameters_in(int(value.size), value.dtype.itemsize, np.issubdtype(value.dtype, np.integer))
            tensors.append(tensor_summary(np.dtype(value.dtype).name, value.dtype.itemsize, value))
    # Small constants count by distinct value, and by how many there are: 2,400 scalar constants of 31 values, stacked
    # two by two into kernels, were a red team's weights.
    over = (max(0, sum(_elements(entry) for entry in small) - FREE_SMALL_ELEMENTS) + max(0, wiring - FREE_WIRING)
            + max(0, small_nodes - FREE_SMALL_CONSTANTS) + max(0, edges - FREE_GRAPH_EDGES))
    if over:
        tensors.append(["float32", over, over, 32])
    return counted + over, tensors


def _one_value(value: np.ndarray) -> bool:
    """Whether every element of a constant has the same bits (one number repeated: it holds that number and its shape)."""
    if value.size == 0 or value.dtype.kind not in "biuf":
        return False
    bits = np.ascontiguousarray(value).reshape(-1).view(f"u{value.dtype.itemsize}")
    return bool((bits == bits[0]).all())


def _integer(dtype: str) -> bool:
    try:
        return np.issubdtype(np.dtype(dtype), np.integer)
    except TypeError:  # "int4" and other names numpy does not know: counted by their own rule
        return False


def _elements(entry: tuple) -> int:
    kind, content = entry
    if kind in ("attr", "dims"):
        return len(content)
    return max(1, len(content) // np.dtype(kind).itemsize)


class FrozenGraph:
    """The serving function with its variables frozen into constants, run in a session that traces every
    call: `graph(images)` returns the scores; while `counting`, each call's MACs are added up (counted())."""

    def __init__(self, function):
        import tensorflow as tf
        from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

        frozen = convert_variables_to_constants_v2(function)
        self.graph = tf.Graph()
        with self.graph.as_default():
            tf.compat.v1.import_graph_def(frozen.graph.as_graph_def(), name="")
        self.input_name, self.input_dtype = frozen.inputs[0].name, frozen.inputs[0].dtype.as_numpy_dtype
        self.outputs = [t.name for t in frozen.outputs][:1]
        # Grappler would fuse ops (MatMul + BiasAdd into _FusedMatMul) and fold others into the weights (a batch
        # normalisation's scale into the convolution before it) under other names: count the graph as written.
        config = tf.compat.v1.ConfigProto()
        config.graph_options.rewrite_options.disable_meta_optimizer = True
        self.session = tf.compat.v1.Session(graph=self.graph, config=config)
        self.from_input = input_dependent(self.graph)
        self.counting = True
        self.macs, self.macs_nonzero, self.images, self.uncounted = 0, 0, 0, set()
        self.truncated = False  # a traced run reached TRACED_NODES_CAP: its MACs are not all known

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        import tensorflow as tf

        metadata = tf.compat.v1.RunMetadata()
        options = tf.compat.v1.RunOptions(trace_level=tf.compat.v1.RunOptions.FULL_TRACE) if self.counting else None
        (scores,) = self.session.run(self.outputs, {self.input_name: batch.astype(self.input_dtype)},
                                     run_metadata=metadata, options=options)
        if self.counting:
            macs, macs_nonzero, missing = _traced_macs(self.graph, metadata, self.from_input)
            self.macs, self.macs_nonzero, self.images = self.macs + macs, self.macs_nonzero + macs_nonzero, self.images + len(batch)
            self.uncounted |= missing
            self.truncated |= sum(len(device.node_stats) for device in metadata.step_stats.dev_stats) >= TRACED_NODES_CAP
        return np.asarray(scores)

    def counted(self) -> dict:
        """MACs per image over the images predicted so far (and a note on any op left out), `lower_bound` when ops
        were left out; none when a trace was cut short; stops counting."""
        self.counting = False
        if self.truncated:  # a red team's throwaway loop of a million ops hid every MatMul after it: 0 MACs
            return {"macs": None, "macs_nonzero": None, "lower_bound": False,
                    "notes": [f"MACs not counted: one prediction ran over {TRACED_NODES_CAP:,} operations, more than "
                              "TensorFlow's trace keeps, so the operations after them were never seen"]}
        per_image = (lambda count: round(count / self.images) if self.images else None)
        notes = [f"MACs are a lower bound: operation(s) {', '.join(sorted(self.uncounted))} are left out (their shapes "
                 "were not known)"] if self.uncounted else []
        return {"macs": per_image(self.macs), "macs_nonzero": per_image(self.macs_nonzero), "lower_bound": bool(notes),
                "notes": notes}


def input_dependent(graph) -> set[str]:
    """Names of the ops whose value depends on the images (a Placeholder); every other op computes from weights.

    Ops come in import order, which is topological; the pass repeats until nothing changes, in case it is not."""
    found: set[str] = set()
    operations = graph.get_operations()
    while True:
        before = len(found)
        for op in operations:
            if op.name not in found and (op.type == "Placeholder" or any(t.op.name in found for t in op.inputs)):
                found.add(op.name)
        if len(found) == before:
            return found


def _traced_macs(graph, metadata, from_input: set[str] = frozenset()) -> tuple[int, int, set[str]]:
    """MACs of one traced run (all its images), the same with zero weights skipped, and the op types whose
    shapes were unknown. `from_input`: the ops that depend on the images (input_dependent)."""
    runs, shapes = collections.Counter(), {}
    for device in metadata.step_stats.dev_stats:
        for stats in device.node_stats:
            runs[stats.node_name] += 1
            if stats.output:
                shapes[stats.node_name] = [d.size for d in stats.output[0].tensor_description.shape.dim]
    total, nonzero, uncounted = 0, 0.0, set()
    for op in graph.get_operations():
        if runs[op.name] and op.type in MAC_OPS:
            macs = MAC_OPS[op.type](op, shapes, from_input)
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
    """Output values (the whole batch's) x the summed axis, read from either operand: a Dense layer after a reshape
    whose shape is computed (Keras's MultiHeadAttention) has an input of unknown shape but a kernel of known one."""
    def flag(*names):
        return any(op.node_def.attr[k].b for k in names if k in op.node_def.attr)

    a, b = op.inputs[0].shape, op.inputs[1].shape
    from_a = a.as_list()[-2 if flag("transpose_a", "adj_x") else -1] if a.rank else None
    from_b = b.as_list()[-1 if flag("transpose_b", "adj_y") else -2] if b.rank and b.rank >= 2 else None
    summed = from_a if from_a is not None else from_b
    if out is None or summed is None:
        return None
    return math.prod(out) * summed


def _traced_out(rule):
    """A rule reading only its op's own traced output shape, as a MAC_OPS rule."""
    return lambda op, shapes, from_input: rule(op, shapes.get(op.name))


# Each rule: (op, the traced output shape of every node, the image-dependent ops) -> MACs of the whole batch, or
# None when a shape is unknown.
MAC_OPS = {
    "Conv2D": _traced_out(lambda op, out: _window_macs(op, out, 3)),  # kernel (h, w, in, out): window x input channels
    "Conv3D": _traced_out(lambda op, out: _window_macs(op, out, 4)),
    "DepthwiseConv2dNative": _traced_out(lambda op, out: _window_macs(op, out, 2)),  # kernel (h, w, in, multiplier)
    "Conv2DBackpropInput": _traced_out(_conv_transpose_macs),
    "Conv3DBackpropInputV2": _traced_out(_conv_transpose_macs),
    "MatMul": _traced_out(_matmul_macs),
    "BatchMatMul": _traced_out(_matmul_macs),
    "BatchMatMulV2": _traced_out(_matmul_macs),
    "BatchMatMulV3": _traced_out(_matmul_macs),
    "Einsum": lambda op, shapes, from_input: _einsum_macs(op, shapes),
    # A division by an array of weights is a multiplication by their reciprocals (keras.layers.Normalization's).
    **{name: lambda op, shapes, from_input: _weight_multiply_macs(op, shapes, from_input)
       for name in ("Mul", "MulNoNan", "RealDiv", "Div", "DivNoNan")},
}


def _weight_multiply_macs(op, shapes: dict, from_input: set[str]) -> int:
    """An image-dependent value times (or divided by, or dividing) an array computed from weights alone (a frozen
    weight, or one passed through any ops): one MAC per output value. A scalar (a scale, an epsilon) or two image-dependent operands (an
    activation, a gate) cost none, as in bench.macs."""
    out = shapes.get(op.name)
    operands = [t for t in op.inputs]
    if out is None or len(operands) != 2 or sum(t.op.name in from_input for t in operands) != 1:
        return 0
    weight = next(t for t in operands if t.op.name not in from_input)
    size = weight.shape.num_elements() if weight.shape.is_fully_defined() else None
    if size is None and weight.value_index == 0 and shapes.get(weight.op.name) is not None:
        size = math.prod(shapes[weight.op.name])
    return math.prod(out) if (size or 0) > 1 else 0


def _einsum_macs(op, shapes: dict) -> int | None:
    """The product of every index's size over the whole batch: each combination of indices is one multiply-add.
    `shapes`: the traced output shape of each node, for operands whose shape the graph leaves open (the batch)."""
    equation = op.get_attr("equation")
    equation = equation.decode() if isinstance(equation, bytes) else equation
    operands = equation.split("->")[0].split(",")
    sizes = {}
    for letters, tensor in zip(operands, op.inputs):
        shape = _static(tensor) or (shapes.get(tensor.op.name) if tensor.value_index == 0 else None)
        if shape is None or "." in letters or len(letters) != len(shape):
            return None
        sizes.update(zip(letters, shape))
    return math.prod(sizes.values())


def _invalid(message: str) -> dict:
    return {"status": INVALID, "message": message}


def _first_line(error: BaseException) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0]
