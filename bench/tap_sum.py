"""Small 2-D convolutions and non-overlapping average pooling as sums over the kernel's taps, for Keras on JAX.

XLA:CPU's convolution is made for wide channels; at 1-16 channels (the tiny entries of a parameter-budget
board) it spends its time on layout and loop overhead. The same arithmetic written as one small dot product
per kernel tap (the input, shifted by the tap's offset and strided, times that tap's (in, out) weights),
summed over the taps, runs as plain fused element-wise and dot operations. Depthwise convolutions are a
broadcast multiply per tap. Average pooling whose window equals its stride and tiles the input is a reshape
and a mean. Forward values and gradients equal XLA's within float32 rounding (tests/test_tap_sum.py).

`install()` replaces keras.src.backend.jax.nn's conv, depthwise_conv and average_pool with versions that use
these forms where they apply (channels_last, 2-D, dilation 1, at most MAX_CHANNELS input channels, 'valid' or
'same' padding) and call Keras's own otherwise. Importing this module imports JAX (the `test` extra installs it).

Status: a candidate for issue 16's fast engine. The worker does not use it; benchmarks/engine_probe.py measures
it against today's TensorFlow path, and on the 2-core AMD EPYC where it was written it did not beat that path
(see the probe's output in issue 16's notes).
"""

from __future__ import annotations

import jax.numpy as jnp

MAX_CHANNELS = 16  # above this, XLA's own convolution is the faster one


def _pair(value) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else tuple(value)


def _same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow's 'same' padding: the output has ceil(size / stride) positions, the extra pad at the end."""
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def _taps(inputs, kernel_size, strides, padding):
    """Yield ((i, j), the input slice that tap (i, j) multiplies), for NHWC `inputs`."""
    (kh, kw), (sh, sw) = kernel_size, strides
    if padding == "same":
        inputs = jnp.pad(inputs, ((0, 0), _same_padding(inputs.shape[1], kh, sh), _same_padding(inputs.shape[2], kw, sw), (0, 0)))
    oh, ow = (inputs.shape[1] - kh) // sh + 1, (inputs.shape[2] - kw) // sw + 1
    for i in range(kh):
        for j in range(kw):
            yield (i, j), inputs[:, i:i + sh * (oh - 1) + 1:sh, j:j + sw * (ow - 1) + 1:sw, :]


def conv(inputs, kernel, strides=1, padding="valid"):
    """2-D convolution (cross-correlation, as Keras): inputs (N, H, W, C), kernel (kh, kw, C, O) -> (N, H', W', O)."""
    total = None
    for (i, j), tap in _taps(inputs, kernel.shape[:2], _pair(strides), padding):
        term = jnp.dot(tap, kernel[i, j])
        total = term if total is None else total + term
    return total


def depthwise_conv(inputs, kernel, strides=1, padding="valid"):
    """Depthwise 2-D convolution: inputs (N, H, W, C), kernel (kh, kw, C, M) -> (N, H', W', C * M), channel c's
    M outputs next to each other, as Keras orders them."""
    total = None
    for (i, j), tap in _taps(inputs, kernel.shape[:2], _pair(strides), padding):
        term = tap[..., :, None] * kernel[i, j]
        total = term if total is None else total + term
    return total.reshape(*total.shape[:3], -1)


def average_pool(inputs, pool_size):
    """Average pooling with stride equal to the window over NHWC inputs whose height and width it divides."""
    (ph, pw), (n, h, w, c) = _pair(pool_size), inputs.shape
    return inputs.reshape(n, h // ph, ph, w // pw, pw, c).mean(axis=(2, 4))


def conv_applies(inputs, kernel, padding, data_format, dilation_rate) -> bool:
    return (inputs.ndim == 4 and kernel.ndim == 4 and (data_format or "channels_last") == "channels_last"
            and _pair(dilation_rate) == (1, 1) and padding in ("valid", "same") and inputs.shape[-1] <= MAX_CHANNELS)


def pool_applies(inputs, pool_size, strides, padding, data_format) -> bool:
    window = _pair(pool_size)
    return (inputs.ndim == 4 and (data_format or "channels_last") == "channels_last" and padding == "valid"
            and (strides is None or _pair(strides) == window)
            and inputs.shape[1] % window[0] == 0 and inputs.shape[2] % window[1] == 0)


def install() -> None:
    """Route Keras's JAX convolutions and average pooling through the tap-sum forms where they apply."""
    from keras.src.backend.jax import nn

    if getattr(nn.conv, "tap_sum", False):
        return
    keras_conv, keras_depthwise, keras_average_pool = nn.conv, nn.depthwise_conv, nn.average_pool

    def routed_conv(inputs, kernel, strides=1, padding="valid", data_format=None, dilation_rate=1):
        if conv_applies(inputs, kernel, padding, data_format, dilation_rate) and kernel.shape[2] == inputs.shape[-1]:
            return conv(inputs, kernel, strides, padding)
        return keras_conv(inputs, kernel, strides, padding, data_format, dilation_rate)

    def routed_depthwise(inputs, kernel, strides=1, padding="valid", data_format=None, dilation_rate=1):
        if conv_applies(inputs, kernel, padding, data_format, dilation_rate):
            return depthwise_conv(inputs, kernel, strides, padding)
        return keras_depthwise(inputs, kernel, strides, padding, data_format, dilation_rate)

    def routed_average_pool(inputs, pool_size, strides=None, padding="valid", data_format=None):
        if pool_applies(inputs, pool_size, strides, padding, data_format):
            return average_pool(inputs, pool_size)
        return keras_average_pool(inputs, pool_size, strides, padding, data_format)

    for routed in (routed_conv, routed_depthwise, routed_average_pool):
        routed.tap_sum = True
    nn.conv, nn.depthwise_conv, nn.average_pool = routed_conv, routed_depthwise, routed_average_pool
