"""Does an entry's ReLU layer die in its first epoch, seed by seed, under model.fit and under bench.engine?

Run from the repository root:
    python benchmarks/dead_units.py --entry ENTRY.py --layer LAYER [--seeds 10] [--cpu K]
    (README's example: frontier_under500 as of b654a46, whose ReLU `squeeze` died from seed 1's start)

Why: a layer whose outputs are all zero passes no gradient, and the entry never learns (10-11 % accuracy). When
one seed of an entry collapses on one training path and not in the old records of the other, this says whether
the seed's start is to blame (it dies on both paths) or the path (it dies on one).

Each (seed, engine) is a fresh process pinned to one core, built and trained the way bench.train does (the
entry's build and compile, the challenge's callbacks, `train.fit` with `engine = "keras"` or `"auto"`), for one
epoch on MNIST training images 0-9,999, validated on 10,000-11,999. Printed per seed: the fraction of the layer's
outputs above zero on the first 512 images, at the start and after the epoch, and the epoch's loss. The last
line is `dead after one epoch: keras K/N auto A/N` (a layer is dead when no output is above zero).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from pinned import REPO, run_pinned

ENGINES = ("keras", "auto")
FIT_IMAGES, VALIDATION_IMAGES, PROBE_IMAGES = 10_000, 2_000, 512

RUN = f"""
entry, layer, engine_setting, seed, data_file = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5]
train._prepare_tensorflow(1, seed)
import keras
x_fit, y_fit, x_val, y_val = mnist(data_file, {FIT_IMAGES}, {VALIDATION_IMAGES}, validation_last=False)
module, training, challenge, model, label_kind = entry_model(entry, {{"engine": engine_setting, "max_epochs": 1}}, x_fit)


def alive():
    outputs = keras.Model(model.inputs, model.get_layer(layer).output).predict(x_fit[:{PROBE_IMAGES}], verbose=0)
    return float((outputs > 0).mean())


at_start = alive()
history, ran = train.fit(model, module, training, challenge, {{"entry": entry, "seed": seed}}, label_kind, 10,
                         x_fit, y_fit, x_val, y_val, [])
print(json.dumps({{"engine": ran, "start": at_start, "after": alive(), "loss": history["loss"][-1]}}))
"""


def measure(entry: str, layer: str, engine_setting: str, seed: int, data_file: str, cpu: int) -> dict:
    return run_pinned(RUN, [entry, layer, engine_setting, str(seed), data_file], cpu,
                      f"engine={engine_setting} seed {seed} on {entry}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entry", required=True, help="entry file")
    parser.add_argument("--layer", required=True, help="name of the ReLU layer to watch")
    parser.add_argument("--seeds", type=int, default=10, help="seeds 0..N-1 (default 10)")
    parser.add_argument("--cpu", type=int, default=0, help="the core every run is pinned to (default 0)")
    parser.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "mnist.npz"), help="mnist.npz")
    args = parser.parse_args()
    print(f"{Path(args.entry).stem}, layer {args.layer!r}: fraction of outputs above zero on {PROBE_IMAGES} images, "
          f"at the start -> after one epoch ({FIT_IMAGES:,} fit, {VALIDATION_IMAGES:,} validation MNIST images)")
    dead = {setting: 0 for setting in ENGINES}
    for seed in range(args.seeds):
        cells = []
        for setting in ENGINES:
            run = measure(args.entry, args.layer, setting, seed, args.data, args.cpu)
            dead[setting] += run["after"] == 0.0
            cells.append(f"{setting} ({run['engine']}): {run['start']:.3f} -> {run['after']:.3f}, loss {run['loss']:.4f}")
        print(f"seed {seed}: " + " | ".join(cells), flush=True)
    print("dead after one epoch: " + " ".join(f"{setting} {dead[setting]}/{args.seeds}" for setting in ENGINES))


if __name__ == "__main__":
    main()
