"""Training diagnostics (`--monitor N`): every N steps, per-layer gradient and weight norms and
activation statistics, stored in the run record and drawn as layer x step heatmaps.

Seed 003 found deep feed-forward nets that "start flat" because the gradients of their early
layers vanish; this shows the same thing for any entry. Every N training steps (and once before
the first) the callback runs one fixed probe batch of training images through the model in
inference mode (no dropout, BatchNorm statistics untouched, so the run trains exactly as it
would unmonitored) and records, for each layer with trainable weights, the L2 norm of the loss
gradient and of the weights, and for each call of such a layer in the graph, the mean and the
standard deviation of its output. The probe batch stays the same for the whole run so that the
columns of a heatmap differ only by training, not by the images.

The callback imports TensorFlow; rendering the heatmaps needs only matplotlib and the record.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

PROBE_IMAGES = 256
SIGNIFICANT_DIGITS = 6  # enough for a heatmap; keeps records small
HEATMAP_SUFFIX = ".monitor.png"


def callback(every_steps: int, x_probe: np.ndarray, y_probe: np.ndarray):
    """A fresh Keras callback; its `result()` is the record's `monitor` entry once training ends."""
    import keras

    class TrainingMonitor(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.every_steps = every_steps
            self.steps_done = 0
            self.series = {"step": [], "probe_loss": [], "gradient_norm": [], "weight_norm": [],
                           "activation_mean": [], "activation_std": []}

        def on_train_begin(self, logs=None):
            self.layers, self.activation_layers, self.probe = _probe_function(self.model)
            self._measure()

        def on_train_batch_end(self, batch, logs=None):
            self.steps_done += 1
            if self.steps_done % self.every_steps == 0:
                self._measure()

        def _measure(self):
            loss, gradient_norms, weight_norms, means, stds = self.probe(x_probe, y_probe)
            self.series["step"].append(self.steps_done)
            self.series["probe_loss"].append(_rounded(loss))
            for name, values in (("gradient_norm", gradient_norms), ("weight_norm", weight_norms),
                                 ("activation_mean", means), ("activation_std", stds)):
                self.series[name].append([_rounded(v) for v in np.asarray(values).reshape(-1)])

        def result(self) -> dict:
            return {"every_steps": self.every_steps, "probe_images": int(len(x_probe)),
                    "layers": self.layers, "activation_layers": self.activation_layers, **self.series}

    return TrainingMonitor()


# Bounds of a monitor claim the runner accepts: far above what a board entry records (measurements: one every
# N steps of at most max_epochs epochs; a few dozen layers).
MAX_MEASUREMENTS, MAX_LAYERS, MAX_LABEL = 100_000, 1_000, 200


def well_formed(claim, every_steps: int | None) -> bool:
    """Whether a record's `monitor` (written by the training process, so a claim) is what `result()` writes for a
    run asked to measure every `every_steps` steps: the keys `render` reads, labels as short strings, one number
    per measurement and one per layer in each, within the bounds above. False when no monitor was asked for."""
    number = lambda v: isinstance(v, (int, float)) and not isinstance(v, bool)
    if not (every_steps and isinstance(claim, dict) and claim.get("every_steps") == every_steps and number(claim.get("probe_images"))):
        return False
    labels = {key: claim.get(key) for key in ("layers", "activation_layers")}
    if not all(isinstance(v, list) and len(v) <= MAX_LAYERS and all(isinstance(x, str) and len(x) <= MAX_LABEL for x in v)
               for v in labels.values()):
        return False
    steps, losses = claim.get("step"), claim.get("probe_loss")
    if not (isinstance(steps, list) and isinstance(losses, list) and len(steps) == len(losses) <= MAX_MEASUREMENTS
            and all(number(v) for v in steps + losses)):
        return False
    for key, labels_key, _, _ in PANELS:
        rows = claim.get(key)
        if not (isinstance(rows, list) and len(rows) == len(steps)
                and all(isinstance(r, list) and len(r) == len(labels[labels_key]) and all(number(v) for v in r) for r in rows)):
            return False
    return True


def _probe_function(model):
    """(layer labels, activation labels, a compiled function of (x, y) giving the loss and per-layer statistics)."""
    import keras
    import tensorflow as tf

    from bench.macs import graph_nodes

    weights = model.trainable_weights
    groups: dict[str, list[int]] = {}
    for index, weight in enumerate(weights):
        groups.setdefault(_layer_label(weight.path, model.name), []).append(index)

    nodes = [n for n in graph_nodes(model) or [] if not n.is_input and n.operation.trainable_weights]
    calls: dict[str, int] = {}
    for node in nodes:
        calls[node.operation.name] = calls.get(node.operation.name, 0) + 1
    seen: dict[str, int] = {}
    activation_labels = []
    for node in nodes:
        name = node.operation.name
        seen[name] = seen.get(name, 0) + 1
        activation_labels.append(name if calls[name] == 1 else f"{name} (call {seen[name]})")
    if nodes:
        graph = getattr(model, "_functional", None) or model
        outputs = [node.outputs[0] for node in nodes] + list(graph.outputs)
        probe_model = keras.Model(graph.inputs, outputs)
    else:  # a subclassed model: no graph to read activations from
        probe_model = None
    loss_function = keras.losses.get(model.loss)

    @tf.function(reduce_retracing=True)
    def probe(x, y):
        with tf.GradientTape() as tape:
            if probe_model is None:
                activations, prediction = [], model(x, training=False)
            else:
                *activations, prediction = probe_model(x, training=False)
            loss = tf.reduce_mean(loss_function(y, prediction))
        gradients = tape.gradient(loss, weights)
        gradients = [tf.zeros_like(w) if g is None else g for g, w in zip(gradients, weights)]
        gradient_norms = tf.stack([tf.linalg.global_norm([gradients[i] for i in group]) for group in groups.values()])
        weight_norms = tf.stack([tf.linalg.global_norm([weights[i] for i in group]) for group in groups.values()])
        means = tf.stack([tf.reduce_mean(a) for a in activations]) if activations else tf.zeros([0])
        stds = tf.stack([tf.math.reduce_std(a) for a in activations]) if activations else tf.zeros([0])
        return loss, gradient_norms, weight_norms, means, stds

    return list(groups), activation_labels, lambda x, y: [t.numpy() for t in probe(tf.constant(x), tf.constant(y))]


def _layer_label(path: str, model_name: str) -> str:
    """`dense_3` from `dense_3/kernel` (or from `sequential/dense_3/kernel`)."""
    owner = path.rsplit("/", 1)[0] if "/" in path else path
    return owner.removeprefix(model_name + "/")


def _rounded(value) -> float:
    return float(f"{float(value):.{SIGNIFICANT_DIGITS}g}")


PANELS = (
    ("gradient_norm", "layers", "gradient L2 norm (log scale)", True),
    ("weight_norm", "layers", "weight L2 norm", False),
    ("activation_mean", "activation_layers", "activation mean", False),
    ("activation_std", "activation_layers", "activation std (log scale)", True),
)


def render(monitor: dict, path: Path, title: str) -> Path:
    """One PNG, four heatmaps (layer x step): gradient norm, weight norm, activation mean and std."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import LogNorm

    steps = monitor["step"]
    figure, grid = plt.subplots(2, 2, figsize=(13, 8), dpi=100)
    for axes, (key, labels_key, label, log_scale) in zip(grid.flat, PANELS):
        # A label between two "$" is mathtext to matplotlib, and bad mathtext raises as the figure is saved: the labels
        # are the training stage's claim (a red team's forged "$\\frac{$" ended `evaluate --monitor` before the board).
        labels = [label.replace("$", r"\$") for label in monitor[labels_key]]
        if not labels or not steps:
            axes.set_axis_off()
            axes.set_title(f"{label}: not recorded")
            continue
        values = np.array(monitor[key], dtype=float).T
        norm = None
        if log_scale:
            positive = values[values > 0]
            norm = LogNorm(vmin=positive.min(), vmax=positive.max()) if positive.size else None
            values = np.where(values > 0, values, np.nan)
        # Half a step either side of each measurement, so the columns sit on their steps.
        width = (steps[1] - steps[0]) if len(steps) > 1 else 1
        colormap = matplotlib.colormaps["viridis"].with_extremes(bad="lightgrey")
        image = axes.imshow(values, aspect="auto", interpolation="nearest", norm=norm, cmap=colormap,
                            extent=(steps[0] - width / 2, steps[-1] + width / 2, len(labels) - 0.5, -0.5))
        axes.set_yticks(range(len(labels)), labels, fontsize=7)
        axes.set_xlabel("training step")
        axes.set_title(label + ("; grey: exactly 0" if log_scale and np.isnan(values).any() else ""))
        figure.colorbar(image, ax=axes)
    figure.suptitle(f"{title} (probe: {monitor['probe_images']} training images, every {monitor['every_steps']} steps; input side at the top)")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    # No software/date metadata: the same record must give the same bytes.
    figure.savefig(path, metadata={"Software": None})
    plt.close(figure)
    return path


def write_heatmaps(records: list[dict], results_dir: str | Path) -> list[Path]:
    """A heatmap PNG beside each record that has monitor data: results/<dataset>/<run>/seed<k>.monitor.png."""
    from bench import results

    written = []
    for record in records:
        if record.get("monitor"):
            path = results.record_path(results_dir, record["dataset"], record["run_name"], record["seed"])
            written.append(render(record["monitor"], path.with_suffix(HEATMAP_SUFFIX), f"{record['run_name']} seed {record['seed']}"))
    return written
