"""Several seeds of one entry trained together by bench.engine: one compiled program, the seeds on a leading axis.

`train_seeds` is `bench.engine.train` for a list of seeds. Each seed has its own Keras model (built after seeding
with that seed, so its initial weights are a separate run's), its own callbacks and its own validation answers;
their weights and optimizer states are stacked on a leading seed axis and one `jax.vmap` of the engine's epoch
scan trains them all.

A measurement, not a path of the harness: `benchmarks/speed.py --seeds-together 3` found three seeds together
cost 3.7x one seed alone (issue 32 asked for at most 1.5x), more than three separate runs' epochs, so the harness
keeps training each seed as a sandboxed process of its own. Kept so the figure can be measured again on another
CPU or after the engine changes.
"""

from __future__ import annotations

import math

import numpy as np

from bench import engine
from bench.engine import Unsupported


def train_seeds(plans, callbacks_per_seed, x_fit, y_fit, x_val, answers_per_seed, epochs: int, batch_size: int,
                seeds) -> list[dict]:
    """Train each `plans[i].model` in place with `callbacks_per_seed[i]`, validated by `answers_per_seed[i]` and
    seeded by `seeds[i]`, as `bench.engine.train(plans[i], ...)` would; return one history per seed.

    The same as separate runs: each seed's initial weights (its model's), its data order
    (np.random.default_rng(seed).permutation), its dropout and noise keys (from PRNGKey(seed), one per step), and
    what its callbacks decide given the same numbers: each seed's ReduceLROnPlateau sets that seed's learning rate
    (fed in as a per-seed array each epoch), each stops on its own (its model.stop_training, its last answer, a
    non-finite loss) and is then asked and trained no more, and a stop asked at an epoch's start runs one step.
    Not promised the same: the arithmetic. The vmapped program is compiled apart from a single seed's (batched
    matrix products, other fusions), so a step may differ in its last bits and a history then drifts from its
    separate run's, epoch after epoch. Measured on XLA:CPU, one thread: none so far, every value equal, over 30
    epochs of classroom_158 (3 seeds, 10,000 MNIST images, batch 1024) and of tests/test_seeds_together.py's dropout
    convnet (3 seeds, digits); tests allow 1e-4 (relative) all the same. The same seeds together give the same
    histories run after run.

    Cost: the seeds share compilation and the epoch's Python work, not arithmetic (each has its own order, so
    not even the first layer's input); measured, 3 seeds together cost 3.7x one alone (benchmarks/speed.py
    --seeds-together 3).

    Raises Unsupported when the plans are not one architecture, optimizer and loss."""
    import jax
    import jax.numpy as jnp
    import keras

    from bench import validation

    if not (len(plans) == len(callbacks_per_seed) == len(answers_per_seed) == len(seeds)) or not plans:
        raise ValueError("one plan, callback list, answers and seed per seed")
    _check_same_architecture(plans)
    found = plans[0]  # its forward pass and layers run every seed: the architecture check makes them the same
    step = engine._keyed_step(found)

    def one_epoch(key, weights, state, lr, xs, ys):
        (weights, state, _), (loss_sums, correct) = jax.lax.scan(lambda carry, batch: step(key, carry, batch),
                                                                 (weights, state, lr), (xs, ys))
        return weights, state, loss_sums.sum(), correct.sum()

    def one_step(key, weights, state, lr, x, y):
        (weights, state, _), (loss_sum, correct) = step(key, (weights, state, lr), (x, y))
        return weights, state, loss_sum, correct

    run_epoch, run_step = jax.jit(jax.vmap(one_epoch)), jax.jit(jax.vmap(one_step))
    predict = jax.jit(jax.vmap(lambda weights, xs: jax.lax.map(lambda x: found.forward(weights, x), xs), in_axes=(0, None)))

    count = len(plans)
    answers = [validation.channel(a) for a in answers_per_seed]
    keys = [jax.random.PRNGKey(seed) for seed in seeds]
    states = [engine._optimizer_state(p.optimizer, p.read_weights()) for p in plans]
    val_chunks = [jnp.asarray(xs) for xs, _ in engine._chunks(x_val, np.zeros(len(x_val), np.int32), batch_size)]
    steps = -(-len(x_fit) // batch_size)
    full = len(x_fit) // batch_size * batch_size
    # Host copies, per seed, in that seed's order; put on the device stacked, again only when the seeds still
    # training change (a stopped seed leaves the stack).
    orders = [np.random.default_rng(seed).permutation(len(x_fit)) for seed in seeds]
    batches = [engine._batched(x_fit, y_fit, order[:full], batch_size) if full else None for order in orders]
    remainders = [engine._batched(x_fit, y_fit, order[full:], len(x_fit) - full) if full < len(x_fit) else None
                  for order in orders]
    on_device = {}

    def stacked(which, seeds_now):
        if seeds_now not in on_device:
            on_device.clear()  # a set of seeds once left does not come back
            on_device[seeds_now] = {name: tuple(jnp.asarray(np.stack(a)) for a in zip(*[source[i] for i in seeds_now]))
                                    for name, source in (("batches", batches), ("remainder", remainders))
                                    if source[0] is not None}
        return on_device[seeds_now][which]

    callback_lists = []
    for p, callbacks in zip(plans, callbacks_per_seed):
        callback_lists.append(keras.callbacks.CallbackList(callbacks, model=p.model, add_history=True, verbose=0,
                                                           epochs=epochs, steps=steps))
        p.model.stop_training = False
    for callback_list in callback_lists:
        callback_list.on_train_begin()
    # A stopped seed is dropped rather than computed and discarded: seeds of one entry stop hundreds of epochs
    # apart (classroom_158 on model.fit: epoch 561 to 1000), and dropping costs one compilation per new stack size.
    training = list(range(count))
    for epoch in range(epochs):
        if not training:
            break
        for i in training:
            callback_lists[i].on_epoch_begin(epoch)
        weights = {i: plans[i].read_weights() for i in training}
        lrs = {i: float(keras.ops.convert_to_numpy(plans[i].model.optimizer.learning_rate)) for i in training}
        totals = {i: [0.0, 0, len(x_fit)] for i in training}  # loss sum, correct, images seen
        # A stop asked at the epoch's start: fit checks it after each step, so that seed runs one step and stops.
        one = tuple(i for i in training if plans[i].model.stop_training)
        rest = tuple(i for i in training if i not in one)
        for group, runs in ((one, [(run_step, "first")]),
                            (rest, [(run_epoch, "batches")] * bool(full) + [(run_step, "remainder")] * (full < len(x_fit)))):
            for run, which in runs:
                if not group:
                    continue
                if which == "first":
                    source = batches if full else remainders
                    data = tuple(jnp.asarray(np.stack([source[i][k][0] for i in group])) for k in (0, 1))
                else:
                    data = stacked(which, group)
                    if which == "remainder":
                        data = (data[0][:, 0], data[1][:, 0])
                out_weights, out_state, loss_sum, correct = run(
                    jnp.stack([keys[i] for i in group]), _stack([weights[i] for i in group]),
                    _stack([states[i] for i in group]), jnp.asarray([lrs[i] for i in group], jnp.float32), *data)
                loss_sum, correct = np.asarray(loss_sum), np.asarray(correct)
                for n, i in enumerate(group):
                    weights[i], states[i] = _unstack(out_weights, n), _unstack(out_state, n)
                    if which == "first":
                        totals[i] = [0.0, 0, len(data[1][n])]
                    totals[i][0] += float(loss_sum[n])
                    totals[i][1] += int(correct[n])
        stacked_weights = _stack([weights[i] for i in training])
        values = [np.asarray(predict(stacked_weights, xs)) for xs in val_chunks]  # each (seeds, chunks, classes, batch)
        for n, i in enumerate(list(training)):
            p, callback_list = plans[i], callback_lists[i]
            p.write_weights(weights[i])  # validation's callbacks and the epoch's end see this epoch's weights
            callback_list.on_test_begin()
            outputs = np.concatenate([engine._image_rows(chunks[n]) for chunks in values])
            answer = answers[i].ask(epoch, outputs, p.from_logits)
            callback_list.on_test_end({"loss": answer.val_loss, "accuracy": answer.val_accuracy})
            loss_sum, correct, seen = totals[i]
            logs = {"accuracy": correct / seen, "loss": loss_sum / seen,
                    "val_accuracy": answer.val_accuracy, "val_loss": answer.val_loss}
            callback_list.on_epoch_end(epoch, logs)
            if p.model.stop_training or answer.last or not math.isfinite(logs["loss"]):
                training.remove(i)
                _finish(p, callback_list, states[i])
    for i in training:
        _finish(plans[i], callback_lists[i], states[i])
    return [p.model.history.history for p in plans]


def _finish(found, callback_list, state) -> None:
    callback_list.on_train_end()
    found.model.optimizer.iterations.assign(int(state["step"]))


def _stack(trees):
    import jax
    import jax.numpy as jnp

    return jax.tree_util.tree_map(lambda *leaves: jnp.stack(leaves), *trees)


def _unstack(tree, n: int):
    import jax

    return jax.tree_util.tree_map(lambda leaf: leaf[n], tree)


def _architecture(found) -> list:
    """What one seed's plan computes, with the names Keras numbers per model (dense_3, dense_7) replaced by
    positions, and initializers and seeds (which only set the starting weights) left out."""
    position = {id(layer): index for index, layer in enumerate(found.layers)}
    described = []
    for layer in found.layers:
        config = {k: v for k, v in layer.get_config().items() if k not in ("name", "seed") and not k.endswith("_initializer")}
        inbound = [[position.get(id(parent.operation)) for parent in node.parent_nodes] for node in layer._inbound_nodes]
        described.append((type(layer).__name__, repr(config), [tuple(w.shape) for w in layer.weights], inbound))
    return [type(found.model).__name__, found.optimizer, found.hyper, found.from_logits, found.sparse_labels,
            found.output_activation is None, described]


def _check_same_architecture(plans) -> None:
    first = _architecture(plans[0])
    for n, other in enumerate(plans[1:], 1):
        if _architecture(other) != first:
            raise Unsupported(f"seed {n}'s model is not seed 0's architecture, optimizer and loss: seeds train together "
                              "only as copies of one model")
