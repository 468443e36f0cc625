"""How an engine epoch's CPU time splits into a cost per step and a cost per image.

Run from the repository root:  python benchmarks/step_cost.py [--entry PATH] [--batch-sizes 128,256,...] [--epochs N] [--repeats N] [--cpu K]

Training seeds together (benchmarks/seeds_together.py) can only save what one seed's epoch spends per step (the
Python loop, dispatch, each op's fixed overhead), never what it spends per image. This trains one seed of `--entry`
on the engine (`engine = "jax"`, 50,000 fit and 5,000 validation MNIST images) at each batch size in turn, each in a
fresh process pinned to one core, interleaved over `--repeats`; the clock is CPU seconds per epoch after the first
(compilation excluded), median over repeats. A least-squares line through (steps an epoch, seconds) gives the two
costs; the last line is `step_cost <entry> <seconds per step> s a step, <seconds per image> s an image, <share>
of the epoch at its own batch size`, the share being what a seed axis could hope to share.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
from pathlib import Path

import numpy as np
from pinned import REPO, run_pinned

FIT_IMAGES, VALIDATION_IMAGES = 50_000, 5_000

RUN = f"""
entry, batch_size, epochs, data_file = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
train._prepare_tensorflow(1, 0)
x_fit, y_fit, x_val, y_val = mnist(data_file, {FIT_IMAGES}, {VALIDATION_IMAGES})
module, training, challenge, model, label_kind = entry_model(entry, {{"engine": "jax", "max_epochs": epochs + 1}}, x_fit)
clock, ends = epoch_clock()
callbacks = train.training_callbacks(module, challenge, model, [])[0] + [clock]
found = engine.plan(model, callbacks, x_fit, label_kind, 1)
engine.train(found, callbacks, x_fit, y_fit, x_val, y_val, epochs + 1, batch_size, 0)
print(json.dumps({{"cpu_per_epoch": (ends[-1] - ends[0]) / (len(ends) - 1), "own_batch_size": training["batch_size"]}}))
"""


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entry", default="submissions/classroom_158.py", help="entry file (default: classroom_158)")
    parser.add_argument("--batch-sizes", default="128,256,512,1024", help="comma-separated (default 128,256,512,1024)")
    parser.add_argument("--epochs", type=int, default=2, help="epochs measured after the first (default 2)")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--cpu", type=int, default=0, help="the core every run is pinned to (default 0)")
    parser.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "mnist.npz"), help="mnist.npz")
    args = parser.parse_args()
    sizes = [int(size) for size in args.batch_sizes.split(",")]
    print(f"CPU seconds per epoch (median), one core, one thread, {args.repeats} interleaved repeats, {args.epochs} epochs "
          f"each after the first; {FIT_IMAGES:,} fit images; load average at the start {os.getloadavg()[0]:.1f}")
    runs = {size: [] for size in sizes}
    for _ in range(args.repeats):
        for size in sizes:
            runs[size].append(run_pinned(RUN, [args.entry, str(size), str(args.epochs), args.data], args.cpu,
                                         f"batch size {size} on {args.entry}"))
    seconds = {size: statistics.median(r["cpu_per_epoch"] for r in runs[size]) for size in sizes}
    steps = {size: math.ceil(FIT_IMAGES / size) for size in sizes}
    for size in sizes:
        print(f"batch {size}: {steps[size]} steps, {seconds[size]:.3f} s an epoch", flush=True)
    per_step, fixed = np.polyfit([steps[s] for s in sizes], [seconds[s] for s in sizes], 1)
    own = runs[sizes[0]][0]["own_batch_size"]
    share = per_step * math.ceil(FIT_IMAGES / own) / (per_step * math.ceil(FIT_IMAGES / own) + fixed)
    print(f"load average at the end {os.getloadavg()[0]:.1f}")
    print(f"step_cost {Path(args.entry).stem} {per_step * 1e3:.3f} ms a step, {fixed / FIT_IMAGES * 1e6:.3f} us an image, "
          f"{share:.0%} of the epoch at its own batch size ({own})")


if __name__ == "__main__":
    main()
