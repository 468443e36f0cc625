"""The batch-minor engine's layers: each Keras layer bench.engine runs, as a JAX function in its layout.

Every activation has the batch as its last axis (images (channels, height, width, batch), vectors (features, batch),
sequences (time, features, batch)). LAYERS maps a Keras class name to f(layer, weights, *inputs) -> output, each
written from what Keras 3 computes for that layer (its source named where it matters) and checked against Keras on
TensorFlow by tests/test_engine*.py; TRAINING_LAYERS are those that act differently while training and take the
step's random `key` (and BatchNormalization its `updates`). A setting a function does not reproduce raises
Unsupported, which sends the entry to model.fit. bench.engine builds the model's forward pass from these and trains it.
"""

from __future__ import annotations

import contextlib
import functools

import numpy as np

# From this many input channels a convolution stacks its taps' input slices (im2col) for one matrix product;
# below it, one product per tap is faster (3x3 kernels, forward and gradient: 1 -> 14 channels 5.9 ms per tap
# against 8.0 stacked; 6 -> 5 channels 53 against 44; benchmarks/speed.py measures whole epochs).
IM2COL_MIN_CHANNELS = 4

class Unsupported(Exception):
    """The model or its compile call uses something this engine does not run; the message says what."""


# ---- layout -------------------------------------------------------------------------------------------
# Keras's per-image shape (h, w, c) is held as (c, h, w); any other rank keeps Keras's order. The batch is last.

def to_keras_order(x):
    return x.transpose(1, 2, 0, 3) if x.ndim == 4 else x


def from_keras_order(x):
    return x.transpose(2, 0, 1, 3) if x.ndim == 4 else x


def _keras_last_axis(x) -> int:
    return 0 if x.ndim == 4 else x.ndim - 2


def to_batch_minor(images: np.ndarray) -> np.ndarray:
    """(batch, *keras_shape) -> this engine's layout, batch last."""
    x = np.moveaxis(images, 0, -1)
    return np.ascontiguousarray(x.transpose(2, 0, 1, 3) if x.ndim == 4 else x)


# ---- layers -------------------------------------------------------------------------------------------

def jax_activation(function):
    """The JAX form of a Keras activation function, by its name (Unsupported for any other)."""
    import jax
    import jax.numpy as jnp

    forms = {
        "linear": lambda x: x,
        "relu": jax.nn.relu,
        "sigmoid": jax.nn.sigmoid,
        "tanh": jnp.tanh,
        "softmax": lambda x: jax.nn.softmax(x, axis=_keras_last_axis(x)),
        "log_softmax": lambda x: jax.nn.log_softmax(x, axis=_keras_last_axis(x)),
        "elu": jax.nn.elu,
        "selu": jax.nn.selu,
        "silu": jax.nn.silu,
        "swish": jax.nn.silu,
        "softplus": jax.nn.softplus,
        "relu6": jax.nn.relu6,
        "gelu": lambda x: jax.nn.gelu(x, approximate=False),
        "exponential": jnp.exp,
    }
    import keras

    name = getattr(function, "__name__", None)
    # By identity: another function of the same name (tf.nn.relu, the entry's own) may differ in its gradient.
    if name not in forms or getattr(keras.activations, name, None) is not function:
        raise Unsupported(f"activation {name or function!r}")
    return forms[name]


def _pair(value) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else tuple(value)


def _same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow's 'same': ceil(size / stride) outputs, the odd pixel of padding at the end."""
    total = max((-(-size // stride) - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def _taps(x, kernel_size, strides, padding):
    """Yield ((i, j), the (c, h_out, w_out, batch) slice of x that tap (i, j) of the kernel multiplies)."""
    import jax.numpy as jnp

    (kh, kw), (sh, sw) = kernel_size, strides
    if padding == "same":
        x = jnp.pad(x, ((0, 0), _same_padding(x.shape[1], kh, sh), _same_padding(x.shape[2], kw, sw), (0, 0)))
    h_out, w_out = (x.shape[1] - kh) // sh + 1, (x.shape[2] - kw) // sw + 1
    for i in range(kh):
        for j in range(kw):
            yield (i, j), x[:, i:i + sh * (h_out - 1) + 1:sh, j:j + sw * (w_out - 1) + 1:sw]


def _contract(kernel, x):
    """sum_c kernel[c, d] * x[c, ...] for a (c, d) kernel and an x of (c, ...): out (d, ...), as one matrix product
    over the flattened trailing axes (measured 2-20x faster than einsum or broadcast multiply-adds here)."""
    c_in, c_out = kernel.shape
    return (kernel.T @ x.reshape(c_in, -1)).reshape(c_out, *x.shape[1:])


def _conv(x, kernel, strides, padding):
    """A 2-D convolution, (c, h, w, batch) in, (d, h_out, w_out, batch) out: with few input channels, one matrix
    product per tap, summed; with IM2COL_MIN_CHANNELS or more, the taps' slices stacked and one product."""
    import jax.numpy as jnp

    kh, kw, c_in, c_out = kernel.shape
    taps = list(_taps(x, (kh, kw), strides, padding))
    if c_in >= IM2COL_MIN_CHANNELS:
        patches = jnp.stack([part for _, part in taps])  # (taps, c, h_out, w_out, batch), taps in (i, j) order
        return _contract(kernel.reshape(kh * kw * c_in, c_out), patches.reshape(kh * kw * c_in, *patches.shape[2:]))
    out = None
    for (i, j), part in taps:
        term = _contract(kernel[i, j], part)
        out = term if out is None else out + term
    return out


def _depthwise(x, kernel, strides, padding):
    """kernel (kh, kw, c, multiplier); output channel c * multiplier + m, as Keras orders them."""
    c, multiplier = kernel.shape[2:]
    out = None
    for (i, j), part in _taps(x, kernel.shape[:2], strides, padding):
        term = part[:, None] * kernel[i, j][:, :, None, None, None]
        out = term if out is None else out + term
    return out.reshape(c * multiplier, *out.shape[2:])


def _image(layer, x):
    if x.ndim != 4:
        raise Unsupported(f"{type(layer).__name__} {layer.name!r} on an input that is not (height, width, channels)")
    if getattr(layer, "data_format", "channels_last") != "channels_last":
        raise Unsupported(f"{layer.name!r}: data_format {layer.data_format!r}")
    return x


def _check_conv(layer):
    if _pair(layer.dilation_rate) != (1, 1) or getattr(layer, "groups", 1) != 1 or layer.padding not in ("valid", "same"):
        raise Unsupported(f"{type(layer).__name__} {layer.name!r} with dilation, groups or padding {layer.padding!r}")


def _conv2d(layer, weights, x):
    _image(layer, x)
    _check_conv(layer)
    out = _conv(x, weights[0], _pair(layer.strides), layer.padding)
    if layer.use_bias:
        out = out + weights[1][:, None, None, None]
    return jax_activation(layer.activation)(out)


def _depthwise_conv2d(layer, weights, x):
    _image(layer, x)
    _check_conv(layer)
    out = _depthwise(x, weights[0], _pair(layer.strides), layer.padding)
    if layer.use_bias:
        out = out + weights[1][:, None, None, None]
    return jax_activation(layer.activation)(out)


def _separable_conv2d(layer, weights, x):
    _image(layer, x)
    _check_conv(layer)
    out = _depthwise(x, weights[0], _pair(layer.strides), layer.padding)
    out = _contract(weights[1][0, 0], out)
    if layer.use_bias:
        out = out + weights[2][:, None, None, None]
    return jax_activation(layer.activation)(out)


def _dense(layer, weights, x):
    import jax.numpy as jnp

    if x.ndim != 2:
        raise Unsupported(f"Dense {layer.name!r} on an input of rank {x.ndim}: flatten first")
    out = jnp.einsum("fu,fb->ub", weights[0], x)
    if layer.use_bias:
        out = out + weights[1][:, None]
    return jax_activation(layer.activation)(out)


def _pooling(reduce):
    def pool(layer, weights, x):
        import jax.numpy as jnp

        _image(layer, x)
        (ph, pw), (sh, sw) = _pair(layer.pool_size), _pair(layer.strides)
        _, h, w, _ = x.shape
        if layer.padding == "same" and not (h % sh == 0 and w % sw == 0 and (ph, pw) == (sh, sw)):
            raise Unsupported(f"{type(layer).__name__} {layer.name!r} with 'same' padding that pads")
        if (ph, pw) == (sh, sw):  # tiles: crop, then reduce each tile
            hh, ww = h // ph, w // pw
            tiles = x[:, :hh * ph, :ww * pw].reshape(x.shape[0], hh, ph, ww, pw, x.shape[3])
            return tiles.mean((2, 4)) if reduce == "mean" else tiles.max((2, 4))
        parts = [part for _, part in _taps(x, (ph, pw), (sh, sw), "valid")]
        if reduce == "mean":
            return sum(parts) / len(parts)
        out = parts[0]
        for part in parts[1:]:
            out = jnp.maximum(out, part)
        return out
    return pool


def _global_pooling(reduce):
    def pool(layer, weights, x):
        _image(layer, x)
        if layer.keepdims:
            raise Unsupported(f"{layer.name!r} with keepdims=True")
        return x.mean((1, 2)) if reduce == "mean" else x.max((1, 2))
    return pool


def _reshape(layer, weights, x):
    target = tuple(layer.target_shape)
    return from_keras_order(to_keras_order(x).reshape(*target, x.shape[-1]))


def _flatten(layer, weights, x):
    return to_keras_order(x).reshape(-1, x.shape[-1])


def _activation_layer(layer, weights, x):
    return jax_activation(layer.activation)(x)


def _relu_layer(layer, weights, x):
    import jax.numpy as jnp

    if layer.negative_slope or layer.threshold:
        raise Unsupported(f"ReLU {layer.name!r} with negative_slope or threshold")
    import jax

    out = jax.nn.relu(x)  # gradient 0 at x == 0, as TensorFlow's (jnp.maximum would give 0.5)
    return out if layer.max_value is None else jnp.minimum(out, layer.max_value)


def _leaky_relu(layer, weights, x):
    import jax.numpy as jnp

    return jnp.where(x > 0, x, layer.negative_slope * x)  # at 0 the slope is negative_slope's, as TensorFlow's


def _rescaling(layer, weights, x):
    if not all(isinstance(v, (int, float)) for v in (layer.scale, layer.offset)):
        raise Unsupported(f"Rescaling {layer.name!r} with per-channel scale or offset")
    return x * layer.scale + layer.offset


def _identity(layer, weights, x):
    return x


def _our_axis(layer, keras_axis: int, ndim: int) -> int:
    """Keras's axis (batch first; (batch, h, w, c) for images) in this engine's layout (batch last; (c, h, w, batch))."""
    axis = keras_axis % ndim
    if axis == 0:
        raise Unsupported(f"{type(layer).__name__} {layer.name!r} along the batch axis")
    return {1: 1, 2: 2, 3: 0}[axis] if ndim == 4 else axis - 1


def _same_rank(layer, inputs):
    # Keras broadcasts inputs of different ranks from the right, which the batch-last layout does not mirror.
    if len({x.ndim for x in inputs}) != 1:
        raise Unsupported(f"{type(layer).__name__} {layer.name!r} of inputs of different ranks")
    return inputs


def _merge(combine, mean: bool = False):
    """A merge layer folding its inputs with `combine` (jax.numpy's name for it); `mean`: divided by their count."""
    def merge(layer, weights, *inputs):
        import jax.numpy as jnp

        parts = _same_rank(layer, inputs[0] if len(inputs) == 1 else inputs)
        out = parts[0]
        for part in parts[1:]:
            out = getattr(jnp, combine)(out, part)
        return out / len(parts) if mean else out
    return merge


def _concatenate(layer, weights, *inputs):
    import jax.numpy as jnp

    parts = _same_rank(layer, inputs[0] if len(inputs) == 1 else inputs)
    return jnp.concatenate(parts, axis=_our_axis(layer, layer.axis, parts[0].ndim))


def _subtract(layer, weights, *inputs):
    first, second = _same_rank(layer, inputs[0] if len(inputs) == 1 else inputs)
    return first - second


def _layer_normalization(layer, weights, x):
    """Keras's layer_normalization (keras/src/ops/nn.py) over one axis: x * inv + (beta - mean * inv), inv =
    rsqrt(variance + epsilon) * gamma, with the mean and (biased) variance of tf.nn.moments."""
    import jax
    import jax.numpy as jnp

    axes = [layer.axis] if isinstance(layer.axis, int) else list(layer.axis)
    if len(axes) != 1 or layer.rms_scaling:
        raise Unsupported(f"LayerNormalization {layer.name!r} over several axes or with rms_scaling")
    axis = _our_axis(layer, axes[0], x.ndim)
    shape = [1] * x.ndim
    shape[axis] = x.shape[axis]
    mean = x.mean(axis, keepdims=True)
    variance = jnp.square(x - jax.lax.stop_gradient(mean)).mean(axis, keepdims=True)
    inv = jax.lax.rsqrt(variance + layer.epsilon)
    parameters = iter(weights)
    if layer.scale:
        inv = inv * next(parameters).reshape(shape)
    shift = -mean * inv
    if layer.center:
        shift = shift + next(parameters).reshape(shape)
    return x * inv + shift


# ---- recurrent layers: Keras's LSTM, GRU and SimpleRNN (keras/src/layers/rnn), a `lax.scan` over time ---------
# A (batch, time, features) sequence is held as (time, features, batch); the state as (units, batch).

# Settings that change what a recurrent layer computes, each with the value under which this engine runs it.
RECURRENT_DEFAULTS = {"go_backwards": False, "stateful": False, "return_state": False, "dropout": 0.0,
                      "recurrent_dropout": 0.0, "recurrent_regularizer": None, "recurrent_constraint": None}


def _check_recurrent(layer, x) -> None:
    name = f"{type(layer).__name__} {layer.name!r}"
    if x.ndim != 3:
        raise Unsupported(f"{name} on an input that is not (time, features)")
    for setting, value in RECURRENT_DEFAULTS.items():
        got = getattr(layer, setting)
        if got != value:
            raise Unsupported(f"{name} with {setting}={got!r}" if isinstance(got, (bool, float))
                              else f"{name} with a {setting} ({type(got).__name__})")
    # What the graph passes the layer besides its input: a mask (a Masking or Embedding layer upstream, or passed
    # in) or an initial state change the computation; the engine's forward pass drops call arguments.
    for node in layer._inbound_nodes:
        extra = sorted(key for key, value in node.arguments.kwargs.items()
                       if key != "training" and not (key == "mask" and value is None))
        if len(node.arguments.args) != 1 or extra:
            raise Unsupported(f"{name} called with {', '.join(extra) or 'more than its input'} (masking or an initial state)")


def _recurrent(step_of):
    """A recurrent layer from `step_of(layer, weights, x)` -> (initial carry, step, the scanned inputs), where
    step(carry, inputs at one time) -> (carry, the (units, batch) output at that time)."""
    def recurrent(layer, weights, x):
        import jax

        _check_recurrent(layer, x)
        carry, step, xs = step_of(layer, weights, x)
        _, outputs = jax.lax.scan(step, carry, xs)
        return outputs if layer.return_sequences else outputs[-1]
    return recurrent


def _input_projection(layer, weights, x):
    """kernel^T x at every step at once, (time, gates * units, batch), and the recurrent kernel transposed."""
    import jax.numpy as jnp

    return jnp.einsum("fg,tfb->tgb", weights[0], x), weights[1].T


def _lstm_step(layer, weights, x):
    """keras LSTMCell (implementation 2): z = x kernel + h recurrent_kernel + bias, split into gates i, f, c, o;
    c = f * c + i * activation(z_c), h = o * activation(c), the gates through recurrent_activation."""
    import jax.numpy as jnp

    activation, gate = jax_activation(layer.activation), jax_activation(layer.recurrent_activation)
    xs, recurrent = _input_projection(layer, weights, x)
    bias = weights[2][:, None] if layer.use_bias else 0.0

    def step(carry, x_t):
        h, c = carry
        z = x_t + recurrent @ h + bias
        i, f, g, o = jnp.split(z, 4)
        c = gate(f) * c + gate(i) * activation(g)
        h = gate(o) * activation(c)
        return (h, c), h

    zeros = jnp.zeros((layer.units, x.shape[-1]), x.dtype)
    return (zeros, zeros), step, xs


def _gru_step(layer, weights, x):
    """keras GRUCell: gates z, r, h. reset_after (the default): bias (2, 3 units), the input's and the recurrent
    one's, and hh = activation(x_h + r * (h recurrent_kernel_h + recurrent bias_h)); otherwise bias (3 units)
    and hh = activation(x_h + (r * h) recurrent_kernel_h). Then h = z * h + (1 - z) * hh."""
    import jax.numpy as jnp

    activation, gate = jax_activation(layer.activation), jax_activation(layer.recurrent_activation)
    xs, recurrent = _input_projection(layer, weights, x)
    units = layer.units
    input_bias, recurrent_bias = 0.0, 0.0
    if layer.use_bias:
        bias = weights[2]
        if layer.reset_after:
            input_bias, recurrent_bias = bias[0][:, None], bias[1][:, None]
        else:
            input_bias = bias[:, None]

    def step(h, x_t):
        x_z, x_r, x_h = jnp.split(x_t + input_bias, 3)
        if layer.reset_after:
            inner = recurrent @ h + recurrent_bias
            z, r = gate(x_z + inner[:units]), gate(x_r + inner[units:2 * units])
            hh = activation(x_h + r * inner[2 * units:])
        else:
            inner = recurrent[:2 * units] @ h
            z, r = gate(x_z + inner[:units]), gate(x_r + inner[units:])
            hh = activation(x_h + recurrent[2 * units:] @ (r * h))
        h = z * h + (1 - z) * hh
        return h, h

    return jnp.zeros((units, x.shape[-1]), x.dtype), step, xs


def _simple_rnn_step(layer, weights, x):
    """keras SimpleRNNCell: h = activation(x kernel + bias + h recurrent_kernel)."""
    import jax.numpy as jnp

    activation = jax_activation(layer.activation)
    xs, recurrent = _input_projection(layer, weights, x)
    bias = weights[2][:, None] if layer.use_bias else 0.0

    def step(h, x_t):
        h = activation(x_t + bias + recurrent @ h)
        return h, h

    return jnp.zeros((layer.units, x.shape[-1]), x.dtype), step, xs


# Layers that act only while training, each from its own random key (`key`: None when predicting). The draws are
# JAX's, from the run's seed, not TensorFlow's: the same seed gives the same history on this engine.
def _dropout(layer, weights, x, key=None):
    import jax
    import jax.numpy as jnp

    if getattr(layer, "noise_shape", None) is not None:
        raise Unsupported(f"Dropout {layer.name!r} with a noise_shape")
    if getattr(layer, "data_format", "channels_last") != "channels_last":  # Keras's draw is then per (image, row)
        raise Unsupported(f"{type(layer).__name__} {layer.name!r}: data_format {layer.data_format!r}")
    if key is None or layer.rate == 0:
        return x
    # SpatialDropout2D drops whole channels of an image: one draw per (channel, image).
    shape = (x.shape[0], 1, 1, x.shape[3]) if type(layer).__name__ == "SpatialDropout2D" else x.shape
    kept = jax.random.bernoulli(key, 1 - layer.rate, shape)
    return jnp.where(kept, x / (1 - layer.rate), 0.0)


def _gaussian_noise(layer, weights, x, key=None):
    import jax

    if key is None or layer.stddev == 0:
        return x
    return x + layer.stddev * jax.random.normal(key, x.shape, x.dtype)


def _batch_normalization(layer, weights, x, key=None, updates=None):
    """Keras's BatchNormalization: while training (`key` given) from the batch's mean and biased variance (those
    of tf.nn.moments), which move the layer's statistics by `momentum` (put in `updates`, by layer name, as
    (moving mean, moving variance)); while predicting from the moving statistics. Then tf.nn.batch_normalization:
    x * inv + (beta - mean * inv), inv = rsqrt(variance + epsilon) * gamma."""
    import jax
    import jax.numpy as jnp

    if layer.renorm or layer.synchronized:
        raise Unsupported(f"BatchNormalization {layer.name!r} with renorm or synchronized statistics")
    axis = _our_axis(layer, layer.axis, x.ndim)
    reduced = tuple(a for a in range(x.ndim) if a != axis)
    shape = [1] * x.ndim
    shape[axis] = x.shape[axis]
    parameters = iter(weights)
    gamma = next(parameters) if layer.scale else None
    beta = next(parameters) if layer.center else None
    moving_mean, moving_variance = next(parameters), next(parameters)
    if key is not None:
        mean = x.mean(reduced)
        variance = jnp.square(x - jax.lax.stop_gradient(mean).reshape(shape)).mean(reduced)
        if updates is not None:
            momentum = layer.momentum
            updates[layer.name] = (moving_mean * momentum + jax.lax.stop_gradient(mean) * (1 - momentum),
                                   moving_variance * momentum + jax.lax.stop_gradient(variance) * (1 - momentum))
    else:
        mean, variance = moving_mean, moving_variance
    inv = jax.lax.rsqrt(variance + layer.epsilon)
    if gamma is not None:
        inv = inv * gamma
    shift = -mean * inv if beta is None else beta - mean * inv
    return x * inv.reshape(shape) + shift.reshape(shape)


# ---- image augmentation -------------------------------------------------------------------------------------
# Keras's image augmentation layers act only while training; predicting, Keras leaves float32 images as they are,
# and so does the engine. Training, the engine runs each layer's own Keras code, the two methods its `call` runs:
# `get_random_transformation` (the draw: flips, offsets, angles, zooms or factors, in the layer's ranges, here from
# the layer's JAX key) and `transform_images` (the transform of the images for that draw), with the layer's
# backend pointed at Keras's JAX backend (the switch Keras makes itself to run these layers in a tf.data pipeline:
# DataLayer, DynamicBackend in keras/src/utils/backend_utils.py), save one function. The resampling of
# RandomTranslation, RandomRotation and RandomZoom, the backend's `image.affine_transform`, is `affine_transform`
# below: TensorFlow's rule, which model.fit runs. Keras's JAX backend has its own,
# keras.src.backend.jax.image.affine_transform, pure JAX, which can be called from here under the TensorFlow
# backend, but it computes otherwise: "wrap" wraps each neighbour of a sampling point where TensorFlow wraps the
# point and clamps it into the image (differences up to 0.9 near an edge, on [0, 1) images), "nearest" rounds
# halves to even where TensorFlow rounds them away from zero, and it took 6.2 ms for 128 28x28 images where
# `affine_transform` takes 0.7 (it maps the coordinates of each image in 3-D, the channel one of them).
# tests/test_engine_augmentation.py checks the transform of a draw against Keras on TensorFlow's for that draw.
# The draws are JAX's, from the run's seed, not TensorFlow's, as Dropout's are; a layer's own `seed` is not used.
AUGMENTATION_LAYERS = ("RandomFlip", "RandomTranslation", "RandomRotation", "RandomZoom", "RandomContrast",
                       "RandomBrightness")
AUGMENTATION_FILL_MODES = ("reflect", "wrap", "constant", "nearest")
AUGMENTATION_INTERPOLATIONS = ("nearest", "bilinear")


def _map_coordinate(coord, size: int, fill_mode: str):
    """TensorFlow's MapCoordinate<fill_mode> (tensorflow/core/kernels/image/image_ops.h): a sampling coordinate
    outside [0, size - 1] brought inside by the fill mode ("constant" leaves it; reading outside gives the fill)."""
    import jax.numpy as jnp

    if fill_mode == "constant":
        return coord
    if size <= 1:
        return jnp.zeros_like(coord)
    last = size - 1.0
    if fill_mode == "reflect":  # [abcd] -> [dcba|abcd|dcba]
        span = 2.0 * size
        below = span * jnp.floor(-coord / span) + coord
        below = jnp.where(below < -size, below + span, -below - 1)
        above = coord - span * jnp.floor(coord / span)
        above = jnp.where(above >= size, span - above - 1, above)
        coord = jnp.where(coord < 0, below, jnp.where(coord > last, above, coord))
    elif fill_mode == "wrap":  # [abcd] -> [abcd|abcd|abcd], as TensorFlow computes it (a period of size - 1 steps)
        below = coord + size * (jnp.floor(-coord / last) + 1)
        above = coord - size * jnp.floor(coord / last)
        coord = jnp.where(coord < 0, below, jnp.where(coord > last, above, coord))
    return jnp.clip(coord, 0.0, last)  # "nearest" only this


def affine_transform(images, transform, interpolation="bilinear", fill_mode="constant", fill_value=0, data_format=None):
    """keras.ops.image.affine_transform as Keras on TensorFlow computes it, tf.raw_ops.ImageProjectiveTransformV3
    (tensorflow/core/kernels/image/image_ops.h, ProjectiveGenerator), in JAX: output pixel (y, x) of image b reads
    the input at ((a0 x + a1 y + a2) / k, (b0 x + b1 y + b2) / k), k = c0 x + c1 y + 1, from the image's
    transform [a0, a1, a2, b0, b1, b2, c0, c1], that point brought inside by `fill_mode` (_map_coordinate), then
    bilinear (from its four neighbours, a neighbour outside the image reading `fill_value`) or nearest (std::round,
    halves away from zero; outside the image, `fill_value`). `images` (batch, height, width, channels), or (batch, channels, height, width) with
    data_format "channels_first"; the gathers run batch-minor, as the engine's layout is."""
    import jax.numpy as jnp

    if interpolation not in AUGMENTATION_INTERPOLATIONS or fill_mode not in AUGMENTATION_FILL_MODES:
        raise Unsupported(f"affine_transform with interpolation {interpolation!r} and fill_mode {fill_mode!r}")
    if images.ndim != 4:
        raise Unsupported("affine_transform of one image (not a batch)")
    channels_first = data_format == "channels_first"
    x = images.transpose(2, 3, 1, 0) if channels_first else images.transpose(1, 2, 3, 0)  # (h, w, c, batch)
    height, width, channels, batch = x.shape
    transform = jnp.asarray(transform, jnp.float32).reshape(-1, 8)
    a0, a1, a2, b0, b1, b2, c0, c1 = (transform[:, k] for k in range(8))  # each (batch,)
    out_y = jnp.arange(height, dtype=jnp.float32)[:, None, None]
    out_x = jnp.arange(width, dtype=jnp.float32)[None, :, None]
    projection = jnp.broadcast_to(c0 * out_x + c1 * out_y + 1.0, (height, width, batch))
    x_in = _map_coordinate((a0 * out_x + a1 * out_y + a2) / projection, width, fill_mode)
    y_in = _map_coordinate((b0 * out_x + b1 * out_y + b2) / projection, height, fill_mode)
    pixels = x.reshape(height * width, channels, batch)
    fill = jnp.asarray(fill_value, x.dtype)

    def per_pixel(value):  # (h, w, batch) -> (h * w, 1, batch), to scale the channels
        return value.reshape(height * width, 1, batch)

    def read(row, column):
        """The (h * w, channels, batch) values at whole-number float coordinates; outside the image, the fill."""
        inside = (row >= 0) & (row < height) & (column >= 0) & (column < width)
        index = jnp.clip(row, 0, height - 1) * width + jnp.clip(column, 0, width - 1)
        values = jnp.take_along_axis(pixels, per_pixel(index.astype(jnp.int32)), axis=0)
        return jnp.where(per_pixel(inside), values, fill)

    if interpolation == "nearest":
        def rounded(v):  # std::round: halves away from zero (jnp.round takes them to the even neighbour)
            whole = jnp.trunc(v)
            return jnp.where(jnp.abs(v - whole) == 0.5, whole + jnp.sign(v), jnp.round(v))

        out = read(rounded(y_in), rounded(x_in))
    else:
        y_floor, x_floor = jnp.floor(y_in), jnp.floor(x_in)
        y_ceil, x_ceil = y_floor + 1, x_floor + 1
        left, right = per_pixel(x_ceil - x_in), per_pixel(x_in - x_floor)
        value_y_floor = left * read(y_floor, x_floor) + right * read(y_floor, x_ceil)
        value_y_ceil = left * read(y_ceil, x_floor) + right * read(y_ceil, x_ceil)
        out = per_pixel(y_ceil - y_in) * value_y_floor + per_pixel(y_in - y_floor) * value_y_ceil
    out = jnp.where(per_pixel(projection) == 0, fill, out).reshape(height, width, channels, batch)
    return out.transpose(3, 2, 0, 1) if channels_first else out.transpose(3, 0, 1, 2)


class _EngineBackend:
    """What an augmentation layer's `self.backend` is while the engine runs it: Keras's JAX backend (as
    DynamicBackend("jax") gives it), with `image.affine_transform` the engine's."""

    name = _backend = "jax"

    def __init__(self):
        import types

        from keras.src.utils.backend_utils import DynamicBackend

        self._jax = DynamicBackend("jax")
        self.image = types.SimpleNamespace(affine_transform=affine_transform)

    def __getattr__(self, name):
        return getattr(self._jax, name)


@contextlib.contextmanager
def _engine_backend(layer):
    """`layer`'s own methods compute with _EngineBackend, then with its backend as it was."""
    before = layer.backend
    object.__setattr__(layer, "backend", _EngineBackend())  # not Layer.__setattr__: nothing for Keras to track
    try:
        yield
    finally:
        object.__setattr__(layer, "backend", before)


@functools.cache
def _key_draws_class():
    from keras.src.random.seed_generator import SeedGenerator

    class KeyDraws(SeedGenerator):
        """A keras.random.SeedGenerator for Keras's JAX backend that gives a JAX key folded from `key` at each
        draw, so a layer's draws (RandomTranslation draws twice) are independent of each other and repeat for the
        key. Keras's JAX random functions take a SeedGenerator's `next()` (keras/src/random/seed_generator.py,
        draw_seed); this one holds no variable, so it can draw while JAX traces a step."""

        def __init__(self, key):  # not SeedGenerator's: no state variable
            self._key, self._draws = key, 0

        def next(self, ordered=True):
            import jax

            self._draws += 1
            return jax.random.fold_in(self._key, self._draws)

    return KeyDraws


def augmentation_draw(layer, images, key):
    """Keras's transformation for (batch, *keras_shape) `images`, drawn from the JAX key `key`: the dict the
    layer's `get_random_transformation` returns, its arrays JAX's."""
    with _engine_backend(layer):
        return layer.get_random_transformation(images, training=True, seed=_key_draws_class()(key))


def _materialized(x):
    """x, written out through a scatter that puts each pixel where it was. XLA:CPU fuses elementwise work, and
    gathers, into the operations that read their result, once per read: a convolution on few channels reads each
    pixel once per tap and output channel, an affine augmentation four neighbours per pixel. Measured training
    steps (Adam, 128 28x28 images, one core) of a model with a 3x3 convolution of 8 filters: 5.1 ms without
    augmentation; RandomTranslation before it 31 ms fused, 3.0 ms with this copy; RandomRotation then
    RandomTranslation 36 ms fused, 10.4 ms with an identity gather in place of this scatter (XLA fused it into the
    next layer's gathers), 4.4 ms with it. jax.lax.optimization_barrier is removed before fusion on CPU."""
    import jax.numpy as jnp

    pixels = x.reshape(x.shape[0], -1, x.shape[-1])
    return jnp.zeros_like(pixels).at[:, jnp.arange(pixels.shape[1]), :].set(pixels).reshape(x.shape)


def _augmentation(layer, weights, x, key=None):
    """An image augmentation layer (AUGMENTATION_LAYERS; the comment above them says how): while training, the
    layer's own draw and transform; while predicting (`key` None) the images as they are."""
    import jax.numpy as jnp

    kind = type(layer).__name__
    if x.ndim != 4:  # a (batch, a, b) tensor would be one image to Keras, the batch its height
        raise Unsupported(f"{kind} {layer.name!r} on an input that is not a batch of images")
    for setting, allowed in (("fill_mode", AUGMENTATION_FILL_MODES), ("interpolation", AUGMENTATION_INTERPOLATIONS)):
        if getattr(layer, setting, allowed[0]) not in allowed:
            raise Unsupported(f"{kind} {layer.name!r} with {setting} {getattr(layer, setting)!r}")
    if key is None:
        return x
    images = jnp.moveaxis(to_keras_order(x), -1, 0)  # Keras's (batch, *keras_shape)
    transformation = augmentation_draw(layer, images, key)
    with _engine_backend(layer):
        images = layer.transform_images(images, transformation, training=True)
    return _materialized(from_keras_order(jnp.moveaxis(images, 0, -1)))


# Layers that act differently while training, given `key` then (a JAX random key; None when predicting).
TRAINING_LAYERS = ("Dropout", "SpatialDropout2D", "GaussianNoise", "BatchNormalization", *AUGMENTATION_LAYERS)


LAYERS = {
    "InputLayer": _identity,
    "Conv2D": _conv2d,
    "DepthwiseConv2D": _depthwise_conv2d,
    "SeparableConv2D": _separable_conv2d,
    "Dense": _dense,
    "AveragePooling2D": _pooling("mean"),
    "MaxPooling2D": _pooling("max"),
    "GlobalAveragePooling2D": _global_pooling("mean"),
    "GlobalMaxPooling2D": _global_pooling("max"),
    "Reshape": _reshape,
    "Flatten": _flatten,
    "Activation": _activation_layer,
    "ReLU": _relu_layer,
    "LeakyReLU": _leaky_relu,
    "Rescaling": _rescaling,
    "Add": _merge("add"),
    "Subtract": _subtract,
    "Multiply": _merge("multiply"),
    "Average": _merge("add", mean=True),
    "Maximum": _merge("maximum"),
    "Minimum": _merge("minimum"),
    "Concatenate": _concatenate,
    "LayerNormalization": _layer_normalization,
    "Dropout": _dropout,
    "SpatialDropout2D": _dropout,
    "GaussianNoise": _gaussian_noise,
    "BatchNormalization": _batch_normalization,
    **{kind: _augmentation for kind in AUGMENTATION_LAYERS},
    "LSTM": _recurrent(_lstm_step),
    "GRU": _recurrent(_gru_step),
    "SimpleRNN": _recurrent(_simple_rnn_step),
}
