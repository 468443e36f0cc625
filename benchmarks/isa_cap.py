"""The engine's XLA code with and without bench.engine.ENGINE_MAX_ISA: CPU time and whether the numbers change.

Run from the repository root:  python benchmarks/isa_cap.py [--entry PATH ...] [--epochs N] [--repeats N] [--images N] [--cpu K]

bench.engine caps the vector instructions XLA:CPU generates for the engine (ENGINE_MAX_ISA, AVX2) unless
XLA_FLAGS already names a cap. This measures each cap side by side: every entry of `--entry` (default: every
submission the engine can train) trains on the engine (`engine = "jax"`) in a fresh process pinned to one core,
with XLA_FLAGS=--xla_cpu_max_isa set to each of CAPS in turn, interleaved over `--repeats`; `AMX_FP16` is the
widest ISA XLA knows, so it lifts the cap (whatever this CPU has is used). The clock is the process's CPU time per
epoch after the first (tracing and compilation excluded); the median over repeats is kept. Every run's
per-epoch losses and validation accuracies are compared with the uncapped run's, exactly.

The last lines are `isa_cap <entry> <CPU s uncapped / CPU s at ENGINE_MAX_ISA>x <identical|DIFFERENT>`: above 1
where the cap makes the engine faster; `identical` when the capped histories equal the uncapped one bit for bit.
Only an AVX-512 CPU compares two ISAs here: on one without, the AVX2 cap changes nothing (ratio ~1, identical).
(A cap below AVX2 would change the numbers: SSE4_2 and AVX have no fused multiply-add, and separable_697's losses
differed under SSE4_2.)
"""

from __future__ import annotations

import argparse
import os
import statistics
from pathlib import Path

from pinned import REPO, run_pinned

from bench.engine import ENGINE_MAX_ISA

UNCAPPED = "AMX_FP16"
CAPS = (UNCAPPED, ENGINE_MAX_ISA)
VALIDATION_IMAGES = 5_000

RUN = f"""
entry, epochs, data_file, fit_images = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
train._prepare_tensorflow(1, 0)
x_fit, y_fit, x_val, y_val = mnist(data_file, fit_images, {VALIDATION_IMAGES})
module, training, challenge, model, label_kind = entry_model(entry, {{"engine": "jax", "max_epochs": epochs + 1}}, x_fit)
clock, ends = epoch_clock()
callbacks = train.training_callbacks(module, challenge, model, [])[0] + [clock]
try:
    found = engine.plan(model, callbacks, x_fit, label_kind, 1)
except engine.Unsupported as error:
    print(json.dumps({{"unsupported": str(error)}}))
    raise SystemExit(0)
history = engine.train(found, callbacks, x_fit, y_fit, x_val, y_val, epochs + 1, training["batch_size"], 0)
print(json.dumps({{"cpu_per_epoch": (ends[-1] - ends[0]) / (len(ends) - 1),
                  "history": {{key: history[key] for key in ("loss", "val_loss", "val_accuracy")}}}}))
"""


def measure(entry: str, cap: str, args) -> dict:
    return run_pinned(RUN, [entry, str(args.epochs), args.data, str(args.images)], args.cpu,
                      f"{Path(entry).stem} capped to {cap}", env={"XLA_FLAGS": f"--xla_cpu_max_isa={cap}"})


def _differences(reference: dict, histories: list[dict]) -> str:
    """'' when every history equals `reference` exactly, else which logged values differ and by how much."""
    found = []
    for key, values in reference.items():
        gaps = [(abs(a - b) / max(abs(a), 1e-12), epoch) for h in histories
                for epoch, (a, b) in enumerate(zip(values, h[key]), 1) if a != b]
        if gaps:
            relative, epoch = max(gaps)
            found.append(f"{key} at epoch {epoch} (relative {relative:.1e})")
    return ", ".join(found)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entry", action="append", help="entry file (default: every submission the engine trains)")
    parser.add_argument("--epochs", type=int, default=2, help="epochs measured after the first (default 2)")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--images", type=int, default=10_000, help="fit images per epoch (default 10,000)")
    parser.add_argument("--cpu", type=int, default=0, help="the core every run is pinned to (default 0)")
    parser.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "mnist.npz"), help="mnist.npz")
    args = parser.parse_args()
    entries = args.entry or sorted(str(p.relative_to(REPO)) for p in (REPO / "submissions").glob("[!_]*.py"))
    print(f"CPU seconds per epoch on the engine (median), one core, one thread, {args.repeats} interleaved repeats, "
          f"{args.epochs} epochs after the first, {args.images:,} fit and {VALIDATION_IMAGES:,} validation MNIST "
          f"images, XLA_FLAGS=--xla_cpu_max_isa=<cap>; load average at the start {os.getloadavg()[0]:.1f}")
    lines = []
    for entry in entries:
        name = Path(entry).stem
        first = measure(entry, UNCAPPED, args)
        if "unsupported" in first:
            print(f"{name}: not measured, the engine does not train it ({first['unsupported']})", flush=True)
            continue
        runs = {cap: [] for cap in CAPS}
        for repeat in range(args.repeats):
            for cap in CAPS:
                runs[cap].append(first if (repeat, cap) == (0, UNCAPPED) else measure(entry, cap, args))
        seconds = {cap: statistics.median(r["cpu_per_epoch"] for r in runs[cap]) for cap in CAPS}
        reference = first["history"]
        differences = _differences(reference, [r["history"] for cap in CAPS for r in runs[cap]])
        same = not differences
        print(f"{name}: " + ", ".join(f"{cap} {seconds[cap]:.3f} s" for cap in CAPS)
              + f"; histories {'identical' if same else 'DIFFERENT: ' + differences}; last val_accuracy {reference['val_accuracy'][-1]:.4f}",
              flush=True)
        lines.append(f"isa_cap {name} {seconds[UNCAPPED] / seconds[ENGINE_MAX_ISA]:.2f}x "
                     f"{'identical' if same else 'DIFFERENT'}")
    print(f"load average at the end {os.getloadavg()[0]:.1f}")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
