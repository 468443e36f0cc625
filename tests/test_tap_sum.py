"""bench.tap_sum (the candidate fast engine's operations, issue 16): each replacement equals Keras's own JAX
operation, forward and gradient, and is used only where it applies."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from keras.src.backend.jax import nn as keras_jax_nn  # Keras's own JAX operations, importable on any backend

from bench import tap_sum
SHAPES = [(2, 9, 9, 1), (3, 8, 7, 3), (2, 12, 12, 5)]


def _assert_same_values_and_gradients(ours, keras_op, *arrays):
    np.testing.assert_allclose(ours(*arrays), keras_op(*arrays), rtol=1e-5, atol=1e-5)
    for argnum in range(len(arrays)):
        grad_ours = jax.grad(lambda *a: jnp.sum(jnp.sin(ours(*a))), argnums=argnum)(*arrays)
        grad_keras = jax.grad(lambda *a: jnp.sum(jnp.sin(keras_op(*a))), argnums=argnum)(*arrays)
        # a gradient sums up to kh x kw x channels x positions terms: float32 rounding grows with them
        np.testing.assert_allclose(grad_ours, grad_keras, rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("kernel_size, strides, padding", [(3, 1, "valid"), (3, 2, "same"), ((2, 3), (2, 1), "valid"),
                                                           (5, 1, "same"), (1, 1, "valid"), (4, 3, "same")])
def test_conv_equals_keras_on_jax(shape, kernel_size, strides, padding):
    rng = np.random.default_rng(0)
    kh, kw = (kernel_size, kernel_size) if isinstance(kernel_size, int) else kernel_size
    x = jnp.asarray(rng.normal(size=shape), "float32")
    kernel = jnp.asarray(rng.normal(size=(kh, kw, shape[-1], 4)), "float32")
    _assert_same_values_and_gradients(
        lambda a, k: tap_sum.conv(a, k, strides, padding),
        lambda a, k: keras_jax_nn.conv(a, k, strides, padding, "channels_last", 1), x, kernel)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("kernel_size, strides, padding, multiplier", [(3, 1, "valid", 1), (3, 2, "same", 2), (5, 1, "same", 1)])
def test_depthwise_conv_equals_keras_on_jax(shape, kernel_size, strides, padding, multiplier):
    rng = np.random.default_rng(1)
    x = jnp.asarray(rng.normal(size=shape), "float32")
    kernel = jnp.asarray(rng.normal(size=(kernel_size, kernel_size, shape[-1], multiplier)), "float32")
    _assert_same_values_and_gradients(
        lambda a, k: tap_sum.depthwise_conv(a, k, strides, padding),
        lambda a, k: keras_jax_nn.depthwise_conv(a, k, strides, padding, "channels_last", 1), x, kernel)


@pytest.mark.parametrize("shape, pool", [((2, 8, 8, 1), 2), ((3, 9, 6, 4), (3, 2)), ((1, 12, 12, 3), 4)])
def test_average_pool_equals_keras_on_jax(shape, pool):
    x = jnp.asarray(np.random.default_rng(2).normal(size=shape), "float32")
    _assert_same_values_and_gradients(
        lambda a: tap_sum.average_pool(a, pool), lambda a: keras_jax_nn.average_pool(a, pool, pool, "valid", "channels_last"), x)


def test_the_replacements_apply_only_where_their_form_is_the_same_operation():
    x, wide = jnp.zeros((1, 8, 8, 3)), jnp.zeros((1, 8, 8, tap_sum.MAX_CHANNELS + 1))
    kernel = jnp.zeros((3, 3, 3, 2))
    assert tap_sum.conv_applies(x, kernel, "valid", "channels_last", 1)
    assert not tap_sum.conv_applies(x, kernel, "valid", "channels_first", 1)
    assert not tap_sum.conv_applies(x, kernel, "valid", None, 2)  # dilated
    assert not tap_sum.conv_applies(wide, kernel, "valid", None, 1)  # wide: XLA's own is faster
    assert not tap_sum.conv_applies(jnp.zeros((1, 8, 3)), jnp.zeros((3, 3, 2)), "valid", None, 1)  # 1-D
    assert tap_sum.pool_applies(x, 2, None, "valid", None) and tap_sum.pool_applies(x, (2, 4), (2, 4), "valid", None)
    assert not tap_sum.pool_applies(x, 3, None, "valid", None)  # 3 does not divide 8
    assert not tap_sum.pool_applies(x, 2, 1, "valid", None)  # overlapping windows
    assert not tap_sum.pool_applies(x, 2, None, "same", None)
