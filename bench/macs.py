"""Multiply-accumulates per image: the compute one forward pass at batch size 1 costs.

Weight sharing makes parameters cheap and compute expensive, so the count follows calls, not
layers: it walks the model's graph, where a layer applied k times has k nodes, each with the
input and output shapes of that call, and nested models are walked the same way.

Counted: convolutions (plain, depthwise, separable, transposed), dense and EinsumDense layers, recurrent
layers (every step), a TimeDistributed layer's (once per step), Dot, and the element-wise products by weights
(Multiply, PReLU, a Rescaling by an array: one MAC per output value, so a matrix product written as scales and a
sum is not free). Normalisation counts
the products Keras computes at inference by an array of weights, as bench.graph_audit counts them in a graph:
BatchNormalization one per output value (times rsqrt of the moving variance, and gamma), LayerNormalization
with a scale one per output value, GroupNormalization with a scale one per channel (gamma times each group's
statistics). Pooling, activations, additions and scalar scales are not counted.

A layer the graph cannot see into (a subclassed layer that loops with keras.ops control flow, say)
reports its own cost with a `macs_per_image(self)` method giving the multiply-accumulates of one
call on one image; a subclassed model with no graph may define the same method for the whole model.
Layers that hold a kernel (a weight of rank >= 2) but are neither counted nor report their cost
are returned as `uncounted`, so a record can say its count is a lower bound.
"""

from __future__ import annotations

import dataclasses
import math
import types

import numpy as np

HOOK = "macs_per_image"


@dataclasses.dataclass
class Count:
    macs: int | None  # None: the model has no graph and no hook, so nothing could be counted
    uncounted: list[str]  # names of layers whose multiply-accumulates are missing from `macs`


def count(model, skip_zero_weights: bool = False) -> Count:
    """MACs of one image through a built model (functional, Sequential, or anything with the hook).

    With `skip_zero_weights`, each layer's count is scaled by the fraction of its kernel that is nonzero
    (the MACs a sparse kernel would do: `macs_nonzero`)."""
    uncounted: list[str] = []
    total = _layer_macs(model, None, None, uncounted, skip_zero_weights)
    if uncounted == [model.name]:
        return Count(None, uncounted)
    return Count(int(total), sorted(set(uncounted)))


def graph_nodes(model) -> list | None:
    """The model's own calls, inputs first (one node per call of a layer), or None for a model without a graph."""
    graph = getattr(model, "_functional", None) or model  # a Sequential keeps its graph in a Functional
    by_depth = getattr(graph, "_nodes_by_depth", None)
    if by_depth is None:
        return None
    return [node for depth in sorted(by_depth, reverse=True) for node in by_depth[depth]]


def _layer_macs(layer, inputs, outputs, uncounted: list[str], skip_zero_weights: bool = False) -> int:
    import keras  # here, not at the top: the runner and the leaderboard import this package without TensorFlow

    if callable(getattr(layer, HOOK, None)):
        return int(getattr(layer, HOOK)())
    nodes = graph_nodes(layer) if isinstance(layer, keras.Model) else None
    if nodes is not None:
        return sum(
            _layer_macs(node.operation, node.input_tensors, node.outputs, uncounted, skip_zero_weights)
            for node in nodes if not node.is_input
        )
    if inputs is None:  # a subclassed model, called by nothing we can see
        uncounted.append(layer.name)
        return 0
    return _call_macs(layer, inputs, outputs[0].shape, uncounted, skip_zero_weights)


def _call_macs(layer, inputs, output_shape, uncounted: list[str], skip_zero_weights: bool = False) -> int:
    """One call of a built layer, from its kernel's shape and the call's input/output shapes."""
    import keras

    input_shape = inputs[0].shape
    per_image_out = _size(output_shape)
    share = (lambda weight: _nonzero_share(weight)) if skip_zero_weights else (lambda weight: 1.0)
    if isinstance(layer, (keras.layers.SeparableConv1D, keras.layers.SeparableConv2D)):
        # depthwise: every (position, channel x multiplier) pair reads one kernel window;
        # pointwise: every output value sums over all channels x multiplier
        depthwise = tuple(layer.depthwise_kernel.shape)
        expanded = depthwise[-2] * depthwise[-1]
        positions = per_image_out // layer.filters
        return round(positions * math.prod(depthwise) * share(layer.depthwise_kernel)
                     + per_image_out * expanded * share(layer.pointwise_kernel))
    if isinstance(layer, keras.layers.EinsumDense):
        return round(_einsum_dense_macs(layer, input_shape) * share(layer.kernel))
    if isinstance(layer, (keras.layers.DepthwiseConv1D, keras.layers.DepthwiseConv2D)):
        return round(per_image_out * math.prod(layer.kernel_size) * share(layer.kernel))
    if isinstance(layer, (keras.layers.Conv1DTranspose, keras.layers.Conv2DTranspose, keras.layers.Conv3DTranspose)):
        # each input value is spread over a kernel window of every output channel: kernel is (*window, out, in)
        return round(_size(input_shape) * math.prod(tuple(layer.kernel.shape)[:-1]) * share(layer.kernel))
    if isinstance(layer, (keras.layers.Conv1D, keras.layers.Conv2D, keras.layers.Conv3D)):
        # each output value is a dot product over the window and the group's input channels: kernel[:-1]
        return round(per_image_out * math.prod(tuple(layer.kernel.shape)[:-1]) * share(layer.kernel))
    if isinstance(layer, keras.layers.Dense):
        return round(per_image_out * int(layer.kernel.shape[0]) * share(layer.kernel))
    if isinstance(layer, keras.layers.Rescaling) and np.size(layer.scale) > 1:
        return per_image_out  # a weight per value (a matrix product written as scales and a sum): one MAC each
    if isinstance(layer, keras.layers.PReLU):
        return per_image_out
    if isinstance(layer, keras.layers.BatchNormalization):
        return per_image_out
    if isinstance(layer, keras.layers.LayerNormalization):
        return per_image_out if layer.scale else 0
    if isinstance(layer, keras.layers.GroupNormalization):
        return int(layer.gamma.shape[0]) if layer.scale else 0
    if isinstance(layer, keras.layers.Multiply):
        return per_image_out * (len(inputs) - 1)
    if isinstance(layer, keras.layers.Dot):
        return per_image_out * _dot_summed(layer, inputs)
    if isinstance(layer, keras.layers.Bidirectional):
        return sum(_recurrent_macs(part, input_shape, share) for part in (layer.forward_layer, layer.backward_layer))
    if isinstance(layer, (keras.layers.SimpleRNN, keras.layers.LSTM, keras.layers.GRU)):
        return _recurrent_macs(layer, input_shape, share)
    if isinstance(layer, keras.layers.TimeDistributed):
        # The wrapped layer once per step, on the step's slice: a red team's Dense layers wrapped in it counted 0 MACs
        # (a lower bound, which the micronet rule and max_macs read as the count), 4,736 unwrapped.
        steps = tuple(input_shape)[1]
        if steps is None:
            raise ValueError(f"cannot count MACs of {layer.name} over sequences of unknown length: give keras.Input a fixed shape")
        step_inputs = [types.SimpleNamespace(shape=(t.shape[0], *tuple(t.shape)[2:])) for t in inputs]
        step_output = (output_shape[0], *tuple(output_shape)[2:])
        return steps * _call_macs(layer.layer, step_inputs, step_output, uncounted, skip_zero_weights)
    if isinstance(layer, keras.Model):
        return _layer_macs(layer, None, None, uncounted, skip_zero_weights)
    if any(len(w.shape) >= 2 for w in layer.weights):
        uncounted.append(layer.name)
    return 0


def _dot_summed(layer, inputs) -> int:
    """The length of the axis a Dot layer sums over (its first input's)."""
    axes = layer.axes if isinstance(layer.axes, int) else layer.axes[0]
    shape = tuple(inputs[0].shape)
    size = shape[axes]
    if size is None:
        raise ValueError(f"cannot count MACs of {layer.name} over an axis of unknown length")
    return int(size)


def _recurrent_macs(layer, input_shape, share) -> int:
    """Every time step multiplies the step's input by the input kernel and the state by the recurrent kernel (an
    LSTM's four gates and a GRU's three are the kernels' columns): steps x (input kernel + recurrent kernel)."""
    cell = layer.cell
    steps = tuple(input_shape)[1]
    if steps is None:
        raise ValueError(f"cannot count MACs of {layer.name} over sequences of unknown length: give keras.Input a fixed shape")
    return round(steps * (math.prod(tuple(cell.kernel.shape)) * share(cell.kernel)
                          + math.prod(tuple(cell.recurrent_kernel.shape)) * share(cell.recurrent_kernel)))


def _einsum_dense_macs(layer, input_shape) -> int:
    """One image through an EinsumDense: the product of the sizes of every index of its equation but the batch's."""
    operands = layer.equation.split("->")[0].split(",")
    sizes = dict(zip(operands[1], tuple(layer.kernel.shape)))
    sizes.update((letter, size) for letter, size in zip(operands[0][1:], tuple(input_shape)[1:]))
    if any(size is None for size in sizes.values()) or "." in layer.equation:
        raise ValueError(f"cannot count MACs of {layer.name} ({layer.equation}) through a tensor of shape {tuple(input_shape)}")
    return math.prod(sizes.values())


def _nonzero_share(weight) -> float:
    import numpy as np

    value = np.asarray(weight)
    return float(np.count_nonzero(value)) / value.size if value.size else 1.0


def _size(shape) -> int:
    """Values per image in a tensor of this shape (batch axis dropped)."""
    dims = tuple(shape)[1:]
    if any(d is None for d in dims):
        raise ValueError(f"cannot count MACs through a tensor of shape {tuple(shape)}: give keras.Input a fixed image size")
    return math.prod(dims)


def record_fields(model, notes: list[str]) -> dict:
    """`macs` for a run record; a lower-bound count adds a note naming the layers left out."""
    try:
        counted = count(model)
    except ValueError as error:
        notes.append(f"MACs not counted: {error}")
        return {"macs": None}
    if counted.macs is None:
        notes.append(f"MACs not counted: a subclassed model has no graph to walk; give it a `{HOOK}(self)` method")
    elif counted.uncounted:
        notes.append(
            f"MACs leave out layer(s) {', '.join(counted.uncounted)}: give them a "
            f"`{HOOK}(self)` method returning the multiply-accumulates of one call on one image"
        )
    return {"macs": counted.macs}
