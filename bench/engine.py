"""The batch-minor engine: an entry's Keras model trained by JAX with the batch as the innermost axis.

Part of the training stage (bench.train calls it inside the sandbox). Why it exists: on CPUs without
AVX-512, TensorFlow runs the 1-16 channel convolutions of a parameter-budget board at a few hundred
MFLOP/s, because its kernels vectorize along channels. Here every activation is laid out with the batch
last (images as (channels, height, width, batch), vectors as (features, batch)), so the vector lanes run
along the batch, and a convolution is a sum over its kernel's taps of a strided slice of the input times
that tap's (in, out) weights. `benchmarks/speed.py` measures both paths side by side.

What it runs (`plan` returns the reason for anything else, and bench.train uses `model.fit` instead):
- a Sequential or functional model (a subclass may not override `call`, `train_step` or `compute_loss`)
  with one image, vector or sequence input and one (batch, classes) output, float32, every weight trainable, no
  regularizer or constraint, built only from the layers in LAYERS with their listed options;
- compiled with SGD, Adam or Nadam (a plain float learning rate, no clipping, weight decay or EMA) and a
  categorical or sparse categorical cross-entropy (from probabilities or logits), metric accuracy;
- callbacks that act at epoch ends: the challenge's ReduceLROnPlateau and EarlyStopping, and an entry's
  own `callbacks()` unless one overrides a batch-level hook.
Before training, `plan` runs the translated forward pass on a batch of training images and compares it with
Keras's (within FORWARD_TOLERANCE): any difference sends the entry to `model.fit`.

How it trains (`train`): the fit images in one order drawn from the run's seed (the comment on the data order, above, says why one), one
jitted `lax.scan` per epoch over the full batches and one step on the last partial batch, then logs loss and accuracy
(per-image means over the epoch, as Keras's fit logs them), sends its outputs on the validation images to the
harness (bench.validation) for val_loss and val_accuracy, writes the weights into the Keras model and calls
Keras's own callback objects with those logs; a callback may cut the learning
rate, stop training or restore weights exactly as under `fit`. The same seed gives the same history.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field

import numpy as np

# The layers, translated (bench.engine_layers); bench.train and the tests reach them through this module too.
from bench.engine_layers import (AUGMENTATION_LAYERS, LAYERS, TRAINING_LAYERS, Unsupported,  # noqa: F401
                                 affine_transform, augmentation_draw, from_keras_order, jax_activation,
                                 to_batch_minor, to_keras_order)

# Largest |difference| between this engine's outputs (probabilities or logits) and Keras's on the check batch.
FORWARD_TOLERANCE = 1e-4
CHECK_IMAGES = 32
# Keras's backend epsilon: cross-entropy on probabilities clips them to [EPSILON, 1 - EPSILON].
EPSILON = 1e-7
# The data order. Under the harness's seeding, model.fit's shuffle gives the same permutation every epoch
# (measured with Keras 3.15 / TensorFlow 2.21: a model that records its batches sees [6, 11, 7, 8, 2, 3, ...] in
# each of four epochs; the committed records' val_loss falls smoothly, epoch after epoch, as a fixed order does).
# Reshuffling each epoch instead changed where ReduceLROnPlateau and EarlyStopping acted: classroom_158 stopped
# after 235-282 epochs at 88.3-91.4 % (3 seeds) where model.fit ran 561-1000 epochs to 90.5-92.1 %. So this
# engine keeps fit's behaviour, one order per run, and the two engines train under one protocol.
BATCH_HOOKS = ("on_batch_begin", "on_batch_end", "on_train_batch_begin", "on_train_batch_end",
               "on_test_batch_begin", "on_test_batch_end", "on_predict_batch_begin", "on_predict_batch_end")


# ---- the model ----------------------------------------------------------------------------------------

@dataclass
class Plan:
    """What `train` needs: the model, its layers with weights (in `layer.weights` order), the forward pass
    f(weights, x) -> (classes, batch) values the loss reads, the loss, the optimizer's update, and the label form.

    Keras on TensorFlow computes a cross-entropy from the logits under a softmax or sigmoid output layer
    (keras/src/backend/tensorflow/nn.py, _get_logits: the activation leaves them on its output). Then
    `forward` stops before that activation, `from_logits` is True and `output_activation` maps its values to
    the model's outputs; otherwise `output_activation` is None and `forward` gives the outputs."""
    model: object
    layers: list
    forward: object
    from_logits: bool
    output_activation: object
    sparse_labels: bool
    optimizer: str
    hyper: dict = field(default_factory=dict)

    def outputs(self, values):
        """The model's (classes, batch) outputs from what `forward` gives."""
        return values if self.output_activation is None else self.output_activation(values)

    def read_weights(self) -> list:
        """The Keras model's weights now, per layer, as JAX arrays (a callback may edit them at any hook)."""
        import jax.numpy as jnp

        return [[jnp.asarray(w) for w in layer.get_weights()] for layer in self.layers]

    def write_weights(self, weights: list) -> None:
        """Put per-layer weights, as `read_weights` gives them, into the Keras model."""
        for layer, values in zip(self.layers, weights):
            if values:
                layer.set_weights([np.asarray(v) for v in values])


def plan(model, callbacks, x_sample: np.ndarray, label_kind: str, threads: int | None = 1) -> Plan:
    """Check that this engine can train `model` as `model.fit` would, and build the plan; `threads`: XLA's
    (None: JAX's default, all cores; a record then depends on the machine's core count).

    Raises Unsupported (the message names the first thing that stops it)."""
    import keras

    configure_xla(threads)

    from keras.src.models.functional import Functional

    overridden = [name for name in ("train_step", "compute_loss", "call", "test_step")
                  if name in _own_methods(type(model), (keras.Sequential, Functional, keras.Model))]
    if overridden or not isinstance(model, (keras.Sequential, Functional)):
        raise Unsupported(f"a model class of its own ({type(model).__name__} overrides {', '.join(overridden) or 'the model'})")
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise Unsupported("more than one input or output")
    layers = list(model.layers)
    # A trainable BatchNormalization's moving statistics are the only non-trainable weights it runs (updated by
    # `forward`'s updates, not the optimizer); a frozen layer's are not.
    moving = {id(w) for layer in layers if type(layer).__name__ == "BatchNormalization" and layer.trainable
              for w in layer.non_trainable_weights}
    if any(id(w) not in moving for w in model.non_trainable_weights):
        raise Unsupported("non-trainable weights (frozen layers)")
    shared = [layer.name for layer in layers if type(layer).__name__ == "BatchNormalization" and len(layer._inbound_nodes) > 1]
    if shared:
        raise Unsupported(f"BatchNormalization {shared[0]!r} applied more than once (its statistics would move twice a step)")
    # A functional model lists every operation, layers and `keras.ops` calls alike; a Sequential has only layers.
    for operation in getattr(model, "operations", layers):
        if not isinstance(operation, keras.layers.Layer):
            raise Unsupported(f"operation {operation.name!r} ({type(operation).__name__}) between layers")
    for layer in layers:
        kind = type(layer).__name__
        if kind not in LAYERS or getattr(keras.layers, kind, None) is not type(layer):  # a subclass may change call
            raise Unsupported(f"layer {layer.name!r} ({kind})")
        if layer.dtype_policy.name != "float32":
            raise Unsupported(f"layer {layer.name!r} computes in {layer.dtype_policy.name}")
        for attribute in ("kernel_regularizer", "bias_regularizer", "activity_regularizer", "depthwise_regularizer",
                          "pointwise_regularizer", "kernel_constraint", "bias_constraint", "depthwise_constraint",
                          "pointwise_constraint"):
            if getattr(layer, attribute, None) is not None:
                raise Unsupported(f"layer {layer.name!r} has a {attribute.replace('_', ' ')}")
    optimizer, hyper = _optimizer(model.optimizer)
    from_logits, sparse = _loss(model.loss)
    if sparse != (label_kind == "sparse"):
        raise Unsupported("labels and loss disagree on one-hot or sparse")
    for callback in callbacks:
        if type(callback).__name__ == "TerminateOnNaN":
            continue  # an epoch whose loss is not finite ends training here, which is what it asks for
        hooks = [hook for hook in BATCH_HOOKS if getattr(type(callback), hook) is not getattr(keras.callbacks.Callback, hook)]
        if hooks:
            raise Unsupported(f"callback {type(callback).__name__} acts on batches ({hooks[0]})")

    output_layer = layers[-1] if isinstance(model, keras.Sequential) else model.outputs[0]._keras_history[0]
    output_activation = None
    if getattr(output_layer, "activation", None) in (keras.activations.softmax, keras.activations.sigmoid):
        if len(output_layer._inbound_nodes) != 1:
            raise Unsupported(f"a {output_layer.activation.__name__} output layer that is also used inside the model")
        output_activation, from_logits = jax_activation(output_layer.activation), True

    def translation(layer):
        translate = LAYERS[type(layer).__name__]
        if layer is output_layer and output_activation is not None:
            return lambda weights, *args, key=None, updates=None: translate(_Linear(layer), weights, *args)
        if type(layer).__name__ == "BatchNormalization":
            return lambda weights, *args, key=None, updates=None: translate(layer, weights, *args, key=key, updates=updates)
        if type(layer).__name__ in TRAINING_LAYERS:
            return lambda weights, *args, key=None, updates=None: translate(layer, weights, *args, key=key)
        return lambda weights, *args, key=None, updates=None: translate(layer, weights, *args)

    translations = {id(layer): translation(layer) for layer in layers}
    position = {id(layer): index for index, layer in enumerate(layers)}

    def forward(weights, x, key=None, updates=None):
        """The (classes, batch) values; `key`: a JAX random key while training (dropout and noise act, batch
        normalisation uses the batch's statistics and puts its moving ones in the dict `updates`), None to predict."""
        import jax

        by_layer = dict(zip((id(layer) for layer in layers), weights))

        def key_of(layer):
            return None if key is None else jax.random.fold_in(key, position[id(layer)])

        if isinstance(model, keras.Sequential):
            for layer in layers:
                x = translations[id(layer)](by_layer[id(layer)], x, key=key_of(layer), updates=updates)
            return x

        def operation(layer):
            return lambda *args, **kwargs: translations[id(layer)](by_layer[id(layer)], *args, key=key_of(layer), updates=updates)

        return model._run_through_graph(x, operation_fn=operation)

    found = Plan(model, layers, forward, from_logits, output_activation, sparse, optimizer, hyper)
    _check_forward(found, x_sample[:CHECK_IMAGES])
    if any(type(layer).__name__ in AUGMENTATION_LAYERS for layer in layers):
        _check_training_trace(found, x_sample[:CHECK_IMAGES])
    return found


class _Linear:
    """A layer seen without its activation: the output layer, when the loss reads its logits."""

    def __init__(self, layer):
        self._layer = layer

    @property
    def activation(self):
        import keras

        return keras.activations.linear

    def __getattr__(self, name):
        return getattr(self._layer, name)


# The widest vector instructions XLA:CPU may generate for the engine. On a 2-core AMD EPYC with AVX-512, the
# engine's epochs ran 1.6-2x faster capped to AVX2 than with AVX-512 (classroom_158: 0.069 against 0.114 CPU s an
# epoch of 10,000 images) and logged the same validation losses and accuracies, bit for bit, at every epoch in all 14
# board entries it runs (benchmarks/isa_cap.py measures both, per entry; both ISAs fuse multiply-adds, SSE4_2 does
# not and differs); one value moved, deep_feedforward's first-epoch training loss, by 1.7e-7 of itself. A cap the user set in
# XLA_FLAGS wins; on a CPU without AVX-512 this one changes nothing.
ENGINE_MAX_ISA = "AVX2"


def configure_xla(threads: int | None) -> None:
    """Set XLA:CPU's flags before JAX starts its CPU client (its first array): the ISA cap ENGINE_MAX_ISA, and how
    many threads XLA plans and runs with (None: JAX's default, all cores). Later calls change nothing.

    XLA:CPU splits work by the cores it may use (tsl reads NPROC, else the process's CPU affinity), and a
    different split changes the last bits of a sum: measured, one epoch of frontier_under1000 on 10,000 images
    logged loss 1.6503 pinned to one core and 1.6502 on two. So a record would depend on the machine's cores."""
    flags = os.environ.get("XLA_FLAGS", "")
    if "xla_cpu_max_isa" not in flags:
        flags = f"{flags} --xla_cpu_max_isa={ENGINE_MAX_ISA}"
    if threads:
        os.environ["NPROC"] = str(threads)
        if "xla_cpu_multi_thread_eigen" not in flags:
            flags = f"{flags} --xla_cpu_multi_thread_eigen={str(threads > 1).lower()}"
    os.environ["XLA_FLAGS"] = flags.strip()


def _own_methods(cls, bases) -> set:
    names = set()
    for klass in cls.__mro__:
        if klass in bases or klass.__module__.startswith("keras."):
            break
        names |= set(vars(klass))
    return names


def _optimizer(optimizer):
    """('sgd' | 'adam' | 'nadam', its hyperparameters); Unsupported for anything fit would run differently."""
    import keras

    kind = type(optimizer).__name__
    if kind not in ("SGD", "Adam", "Nadam") or getattr(keras.optimizers, kind) is not type(optimizer):
        raise Unsupported(f"optimizer {kind}")
    config = optimizer.get_config()
    for name in ("weight_decay", "clipnorm", "clipvalue", "global_clipnorm", "loss_scale_factor"):
        if config.get(name):
            raise Unsupported(f"optimizer option {name}")
    if config.get("use_ema") or (config.get("gradient_accumulation_steps") or 1) > 1 or config.get("amsgrad"):
        raise Unsupported("optimizer EMA, gradient accumulation or AMSGrad")
    if not isinstance(config.get("learning_rate"), float):
        raise Unsupported("a learning-rate schedule")
    if int(optimizer.iterations.numpy()) != 0:
        raise Unsupported("an optimizer that has already taken steps")
    if kind == "SGD":
        return "sgd", {"momentum": float(config["momentum"]), "nesterov": bool(config["nesterov"])}
    return kind.lower(), {"beta_1": float(config["beta_1"]), "beta_2": float(config["beta_2"]), "epsilon": float(config["epsilon"])}


def _loss(loss) -> tuple[bool, bool]:
    """(from_logits, sparse labels) of a cross-entropy loss; Unsupported for any other."""
    import keras

    names = {"categorical_crossentropy": False, "sparse_categorical_crossentropy": True}
    if isinstance(loss, str) and loss in names:
        return False, names[loss]
    if type(loss) in (keras.losses.CategoricalCrossentropy, keras.losses.SparseCategoricalCrossentropy):  # a subclass may change call
        config = loss.get_config()
        if config.get("label_smoothing") or config.get("axis", -1) != -1 or config.get("ignore_class") is not None \
                or config.get("reduction") != "sum_over_batch_size":
            raise Unsupported("a cross-entropy loss with label smoothing, another axis, ignore_class or reduction")
        return bool(config["from_logits"]), type(loss) is keras.losses.SparseCategoricalCrossentropy
    name = getattr(loss, "__name__", None)
    if callable(loss) and name in names and getattr(loss, "from_logits", None) is not None:
        return bool(loss.from_logits), names[name]  # bench.train.named_loss's wrapper for FROM_LOGITS
    # A loss object's class, not its repr: "<FocalLoss object at 0x7f...>" differed in every record of the same run.
    raise Unsupported(f"loss {name or (loss if isinstance(loss, str) else type(loss).__name__)!r}")


def per_image_loss(outputs, labels, from_logits: bool):
    """Cross-entropy of (classes, batch) outputs against (batch,) integer labels, per image, as Keras computes it."""
    import jax
    import jax.numpy as jnp

    if from_logits:
        log_p = jax.nn.log_softmax(outputs, axis=0)
    else:
        p = outputs / outputs.sum(0, keepdims=True)
        log_p = jnp.log(jnp.clip(p, EPSILON, 1 - EPSILON))
    return -jnp.take_along_axis(log_p, labels[None, :], axis=0)[0]


def _check_forward(found: Plan, images: np.ndarray) -> None:
    import jax.numpy as jnp

    expected = np.asarray(found.model(images, training=False))
    outputs = found.outputs(found.forward(found.read_weights(), jnp.asarray(to_batch_minor(images.astype("float32")))))
    if outputs.ndim != 2 or tuple(outputs.shape[::-1]) != expected.shape:
        raise Unsupported(f"outputs of shape {expected.shape}: this engine trains (batch, classes) outputs")
    difference = float(np.max(np.abs(np.asarray(outputs).T - expected)))
    if not difference <= FORWARD_TOLERANCE:
        raise Unsupported(f"its forward pass differs from Keras's by {difference:.2g} on {len(images)} training images")


def _check_training_trace(found: Plan, images: np.ndarray) -> None:
    """Trace (not run) a training forward pass: what Keras's augmentation code cannot trace under JAX is refused
    here, before training, and not in the middle of a run."""
    import jax
    import jax.numpy as jnp

    def training_forward(weights, x):
        return found.forward(weights, x, jax.random.PRNGKey(0), {})

    try:
        jax.eval_shape(training_forward, found.read_weights(), jnp.asarray(to_batch_minor(images.astype("float32"))))
    except Unsupported:
        raise
    except Exception as error:  # noqa: BLE001 - any failure: model.fit runs the model instead
        raise Unsupported(f"its training pass does not trace under JAX ({type(error).__name__}: {error})") from error


# ---- optimizers: Keras 3's update rules (keras/src/optimizers), written for pytrees ----------------------

def _optimizer_state(kind: str, weights):
    import jax
    import jax.numpy as jnp

    zeros = jax.tree_util.tree_map(jnp.zeros_like, weights)
    if kind == "sgd":
        return {"step": jnp.zeros((), jnp.float32), "m": zeros}
    return {"step": jnp.zeros((), jnp.float32), "m": zeros, "v": zeros, "u_product": jnp.ones((), jnp.float32)}


def _optimizer_update(kind: str, hyper: dict):
    import jax
    import jax.numpy as jnp

    tree = jax.tree_util.tree_map

    def sgd(weights, grads, state, lr):
        momentum = hyper["momentum"]
        if not momentum:
            return tree(lambda w, g: w - g * lr, weights, grads), {**state, "step": state["step"] + 1}
        m = tree(lambda m, g: m * momentum - g * lr, state["m"], grads)
        if hyper["nesterov"]:
            weights = tree(lambda w, m, g: w + (m * momentum - g * lr), weights, m, grads)
        else:
            weights = tree(lambda w, m: w + m, weights, m)
        return weights, {"step": state["step"] + 1, "m": m}

    def adam(weights, grads, state, lr):
        b1, b2, eps = hyper["beta_1"], hyper["beta_2"], hyper["epsilon"]
        t = state["step"] + 1
        alpha = lr * jnp.sqrt(1 - b2 ** t) / (1 - b1 ** t)
        m = tree(lambda m, g: m + (g - m) * (1 - b1), state["m"], grads)
        v = tree(lambda v, g: v + (g * g - v) * (1 - b2), state["v"], grads)
        weights = tree(lambda w, m, v: w - (m * alpha) / (jnp.sqrt(v) + eps), weights, m, v)
        return weights, {**state, "step": t, "m": m, "v": v}

    def nadam(weights, grads, state, lr):
        b1, b2, eps = hyper["beta_1"], hyper["beta_2"], hyper["epsilon"]
        t = state["step"] + 1
        u_product = state["u_product"] * b1 * (1.0 - 0.5 * 0.96 ** t)
        u_t = b1 * (1.0 - 0.5 * 0.96 ** t)
        u_t_1 = b1 * (1.0 - 0.5 * 0.96 ** (t + 1))
        u_product_t_1 = u_product * u_t_1
        m = tree(lambda m, g: m + (g - m) * (1 - b1), state["m"], grads)
        v = tree(lambda v, g: v + (g * g - v) * (1 - b2), state["v"], grads)

        def updated(w, m, v, g):
            m_hat = u_t_1 * m / (1 - u_product_t_1) + (1 - u_t) * g / (1 - u_product)
            v_hat = v / (1 - b2 ** t)
            return w - (m_hat * lr) / (jnp.sqrt(v_hat) + eps)

        return tree(updated, weights, m, v, grads), {"step": t, "m": m, "v": v, "u_product": u_product}

    return {"sgd": sgd, "adam": adam, "nadam": nadam}[kind]


# ---- training -----------------------------------------------------------------------------------------

def _step_function(found: Plan, seed: int):
    """One optimizer step for `jax.lax.scan`: ((weights, optimizer state, learning rate), (x, y)) ->
    (the same carry, updated; (the batch's loss sum, its correct count))."""
    import jax

    keyed = _keyed_step(found)
    run_key = jax.random.PRNGKey(seed)
    return lambda carry, batch: keyed(run_key, carry, batch)


def _keyed_step(found: Plan):
    """`_step_function`'s step with the run's key as its first argument, so `jax.vmap` can give each seed its own
    (benchmarks/seeds_together.py)."""
    import jax
    import jax.numpy as jnp

    update = _optimizer_update(found.optimizer, found.hyper)

    def step(run_key, carry, batch):
        weights, state, lr = carry
        x, y = batch
        # Dropout and noise: one key per optimizer step, from the run's seed.
        key = jax.random.fold_in(run_key, state["step"].astype(jnp.int32))

        def loss_and_outputs(weights):
            moved = {}
            outputs = found.forward(weights, x, key, moved)
            losses = per_image_loss(outputs, y, found.from_logits)
            return losses.mean(), (losses, outputs, moved)

        (_, (losses, outputs, moved)), grads = jax.value_and_grad(loss_and_outputs, has_aux=True)(weights)
        weights, state = update(weights, grads, state, lr)  # moving statistics get no gradient: the update keeps them
        weights = [layer_weights[:-2] + list(moved[layer.name]) if layer.name in moved else layer_weights
                   for layer, layer_weights in zip(found.layers, weights)]
        return (weights, state, lr), (losses.sum(), _correct(found.outputs(outputs), y).sum())

    return step


def train(found: Plan, callbacks, x_fit, y_fit, x_val, answers, epochs: int, batch_size: int, seed: int) -> dict:
    """Train `found.model` in place (its weights end as the callbacks leave them) and return the history,
    {name: [one float per epoch]} with loss, accuracy, val_loss, val_accuracy and learning_rate.

    x_* are (images, *input_shape) float32, y_fit (images,) integer class labels. `answers` validates each epoch's
    (images, classes) outputs on x_val: a bench.validation channel to the harness, or the (images,) validation
    labels (answered in this process, as the harness would). Training stops at the answer that says it is the
    last; bench.validation.ProtocolError when the harness answers no more."""
    import jax
    import jax.numpy as jnp
    import keras

    from bench import validation

    answers = validation.channel(answers)

    model = found.model
    step = _step_function(found, seed)

    @jax.jit
    def run_epoch(weights, state, lr, xs, ys):
        (weights, state, _), (loss_sums, correct) = jax.lax.scan(step, (weights, state, lr), (xs, ys))
        return weights, state, loss_sums.sum(), correct.sum()

    @jax.jit
    def run_step(weights, state, lr, x, y):
        (weights, state, _), (loss_sum, correct) = step((weights, state, lr), (x, y))
        return weights, state, loss_sum, correct

    @jax.jit
    def predict(weights, xs):
        """(chunks, classes, batch) values the loss reads (the logits under a softmax output layer)."""
        return jax.lax.map(lambda x: found.forward(weights, x), xs)

    state = _optimizer_state(found.optimizer, found.read_weights())
    # Validation in equal chunks (a scan) plus the remainder: the arrays are laid out once.
    val_chunks = [jnp.asarray(xs) for xs, _ in _chunks(x_val, np.zeros(len(x_val), np.int32), batch_size)]
    steps = -(-len(x_fit) // batch_size)
    # The params model.fit gives its callbacks (keras/src/backend/tensorflow/trainer.py).
    callback_list = keras.callbacks.CallbackList(callbacks, model=model, add_history=True, verbose=0, epochs=epochs, steps=steps)
    # One order for the whole run, as model.fit has under the harness's seeding (keras.utils.set_random_seed and
    # op determinism): its shuffle then draws the same permutation every epoch.
    order = np.random.default_rng(seed).permutation(len(x_fit))
    full = len(x_fit) // batch_size * batch_size
    # On the device once, not copied in again every epoch.
    batches = tuple(map(jnp.asarray, _batched(x_fit, y_fit, order[:full], batch_size))) if full else None
    remainder = tuple(map(jnp.asarray, _batched(x_fit, y_fit, order[full:], len(x_fit) - full))) if full < len(x_fit) else None
    model.stop_training = False
    callback_list.on_train_begin()
    for epoch in range(epochs):
        callback_list.on_epoch_begin(epoch)
        weights = found.read_weights()
        lr = jnp.float32(float(keras.ops.convert_to_numpy(model.optimizer.learning_rate)))
        loss_sum, correct, seen = 0.0, 0, len(x_fit)
        if model.stop_training:
            # Set at the epoch's start (or the run's): fit checks it after each step, so it runs one step and stops.
            first = (batches[0][0], batches[1][0]) if batches is not None else (remainder[0][0], remainder[1][0])
            weights, state, loss_part, correct_part = run_step(weights, state, lr, *first)
            loss_sum, correct, seen = float(loss_part), int(correct_part), len(first[1])
        else:
            if batches is not None:
                weights, state, loss_part, correct_part = run_epoch(weights, state, lr, *batches)
                loss_sum, correct = loss_sum + float(loss_part), correct + int(correct_part)
            if remainder is not None:
                weights, state, loss_part, correct_part = run_step(weights, state, lr, remainder[0][0], remainder[1][0])
                loss_sum, correct = loss_sum + float(loss_part), correct + int(correct_part)
        found.write_weights(weights)  # validation's callbacks and the epoch's end see this epoch's weights, as under fit
        callback_list.on_test_begin()
        outputs = np.concatenate([_image_rows(predict(weights, xs)) for xs in val_chunks])
        answer = answers.ask(epoch, outputs, found.from_logits)
        callback_list.on_test_end({"loss": answer.val_loss, "accuracy": answer.val_accuracy})
        logs = {"accuracy": correct / seen, "loss": loss_sum / seen,
                "val_accuracy": answer.val_accuracy, "val_loss": answer.val_loss}
        callback_list.on_epoch_end(epoch, logs)
        if model.stop_training or answer.last or not math.isfinite(logs["loss"]):
            break
    callback_list.on_train_end()
    model.optimizer.iterations.assign(int(state["step"]))
    return model.history.history


def step_timer(found: Plan, x: np.ndarray, y: np.ndarray, batch_size: int):
    """A function that trains a copy of `found`'s weights for len(x) // batch_size steps on (x, y), in order, and
    returns the CPU seconds a step took (process time: every thread's). The model is left as it is. Compiling
    happens here, so the first call is timed like the epochs `train` runs (one compiled scan per call)."""
    import jax
    import jax.numpy as jnp

    scan = jax.jit(lambda carry, xs, ys: jax.lax.scan(_step_function(found, 0), carry, (xs, ys)))
    weights = found.read_weights()
    carry = (weights, _optimizer_state(found.optimizer, weights), jnp.float32(1e-3))
    xs, ys = map(jnp.asarray, _batched(x, y, np.arange(len(x) // batch_size * batch_size), batch_size))
    jax.block_until_ready(scan(carry, xs, ys))

    def seconds_a_step() -> float:
        start = time.process_time()
        jax.block_until_ready(scan(carry, xs, ys))
        return (time.process_time() - start) / len(ys)

    return seconds_a_step


def _image_rows(values) -> np.ndarray:
    """(chunks, classes, batch) values as (images, classes) float32 rows, images in their chunks' order."""
    values = np.asarray(values, dtype=np.float32)
    return values.transpose(0, 2, 1).reshape(-1, values.shape[1])


def _correct(outputs, labels):
    import jax.numpy as jnp

    return (jnp.argmax(outputs, axis=0) == labels).astype(jnp.int32)


def _batched(x: np.ndarray, y: np.ndarray, order: np.ndarray, batch_size: int):
    """The images `order` picks, as (batches, *layout, batch_size) arrays, and their labels (batches, batch_size)."""
    batches = len(order) // batch_size
    xs = x[order].reshape(batches, batch_size, *x.shape[1:])
    xs = np.moveaxis(xs, 1, -1)
    if xs.ndim == 5:  # (batches, h, w, c, batch) -> (batches, c, h, w, batch)
        xs = xs.transpose(0, 3, 1, 2, 4)
    return np.ascontiguousarray(xs), y[order].reshape(batches, batch_size).astype(np.int32)


def _chunks(x: np.ndarray, y: np.ndarray, batch_size: int) -> list:
    order = np.arange(len(x))
    full = len(x) // batch_size * batch_size
    chunks = [_batched(x, y, order[:full], batch_size)] if full else []
    if full < len(x):
        chunks.append(_batched(x, y, order[full:], len(x) - full))
    return chunks
