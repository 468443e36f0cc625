"""model.fit on TensorFlow against bench.engine's batch-minor JAX engine and against `engine = "auto"`, side by side.

Run from the repository root:  python benchmarks/speed.py [--entry PATH ...] [--epochs N] [--repeats N] [--seeds N] [--cpu K] [--isa native,avx2] [--images N] [--seeds-together N]

Each measurement is a fresh process pinned to one core (taskset, when there is one) with one thread, training
an entry the way bench.train does (its build, compile, the challenge's callbacks, 50,000 MNIST fit images (or
`--images`) and 5,000 validation images, `engine = "keras"`, `"jax"` or `"auto"` through `train.fit`) for 1 + `--epochs` epochs. The
clock is the process's CPU time per epoch, the first epoch (tracing and compilation) excluded, so validation and
the per-epoch shuffle are counted; auto's measuring before the first epoch (bench.engine_choice) is excluded too,
and printed on its own (`probe`: CPU seconds, once per run). Variants run interleaved (keras, jax, auto, keras,
...) over `--repeats`, and
each seed of `--seeds` is a run of its own (neither engine trains seeds together), so the figure is CPU seconds
per seed-epoch; the median over repeats and seeds is kept. Under `--isa avx2` both libraries are capped to AVX2
(pinned.ISA_CAPS: ONEDNN_MAX_CPU_ISA for TensorFlow, XLA_FLAGS=--xla_cpu_max_isa for JAX), so one AVX-512 machine
measures both kinds of CPU; by default every ISA the machine has. "native" is what a user gets: TensorFlow uses
every instruction the CPU has, and the engine caps its own XLA code to bench.engine.ENGINE_MAX_ISA (AVX2), as it
does in every run (benchmarks/isa_cap.py measures that cap alone). The last lines are
`speedup <isa> <entry> <model.fit / auto>x (engine alone <model.fit / jax>x, auto chose <path>)`: at or above 1
where auto is at least as fast as model.fit.

Then, unless `--seeds-together 0`, N (default 3) seeds of `--seeds-entry` (classroom_158) trained together on the
engine (benchmarks/seeds_together.py, one process) against one seed trained alone on the engine
(bench.engine.train), interleaved the same way, under each ISA; the last lines add `seedsN <entry> <CPU
seconds per epoch of N together / of 1 alone>x (<isa>)`: N would be no gain, 1 would be N seeds for the price of one.
Beside them, `seedsN merged <entry> <ratio>x`: one seed trained on N copies of the images with N times the batch,
so every step does N seeds' images with the per-step work and the weights shared: no seed axis can do N seeds'
arithmetic for less on this engine, so its ratio is the floor of what training seeds together could reach.
`--no-speedup` measures that alone.
"""

from __future__ import annotations

import argparse
import os
import statistics
from pathlib import Path

from pinned import REPO, cpu_has_avx512, run_pinned

ENGINES = ("keras", "jax", "auto")
FIT_IMAGES, VALIDATION_IMAGES = 50_000, 5_000

RUN = f"""
entry, engine_setting, seed, epochs, data_file, fit_images = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5], int(sys.argv[6])
train._prepare_tensorflow(1, seed)
x_fit, y_fit, x_val, y_val = mnist(data_file, fit_images, {VALIDATION_IMAGES})
module, training, challenge, model, label_kind = entry_model(entry, {{"engine": engine_setting, "max_epochs": epochs + 1}}, x_fit)
clock, ends = epoch_clock()
notes = []
history, ran = train.fit(model, type("WithClock", (), {{"callbacks": staticmethod(lambda: [clock])}}), training, challenge,
                         {{"entry": entry, "seed": seed}}, label_kind, 10, x_fit, y_fit, x_val, y_val, notes)
measured = len(ends) - 1
probe = [float(note.split("measuring took ")[1].split(" s")[0]) for note in notes if "measuring took " in note]
print(json.dumps({{"engine": ran, "cpu_per_epoch": (ends[-1] - ends[0]) / measured, "epochs": measured,
                  "val_accuracy": history["val_accuracy"][-1], "notes": notes, "probe": probe[0] if probe else None}}))
"""


# N seeds of one entry on the engine in one process: seed 0 alone through engine.train when N is 1, else all N
# through seeds_together.train_seeds; each seed's model built after seeding with that seed, as its own run would be.
# "merged": N seeds' images trained as one seed's, for the least a seed axis could cost.
RUN_TOGETHER = f"""
entry, count, epochs, data_file = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
merged = count if sys.argv[5] == "merged" else 0
count = 1 if merged else count
sys.path.insert(0, "benchmarks")
train._prepare_tensorflow(1, 0)
import keras, numpy as np
import seeds_together
x_fit, y_fit, x_val, y_val = mnist(data_file, {FIT_IMAGES}, {VALIDATION_IMAGES})
clock, ends = epoch_clock()
seeds, plans, callbacks = list(range(count)), [], []
for seed in seeds:
    keras.utils.set_random_seed(seed)
    module, training, challenge, model, label_kind = entry_model(entry, {{"engine": "auto", "max_epochs": epochs + 1}}, x_fit)
    own = train.training_callbacks(module, challenge, model, [])[0] + [clock] * (seed == 0)
    plans.append(engine.plan(model, own, x_fit, label_kind, 1))
    callbacks.append(own)
if merged:
    # N seeds' images as one seed's: N times the fit and validation images and the batch, so each step is N seeds'
    # steps with every per-step cost and the weights shared.
    x_fit, y_fit, x_val, y_val = (np.concatenate([a] * merged) for a in (x_fit, y_fit, x_val, y_val))
    histories = [engine.train(plans[0], callbacks[0], x_fit, y_fit, x_val, y_val, epochs + 1,
                              training["batch_size"] * merged, 0)]
elif count == 1:
    histories = [engine.train(plans[0], callbacks[0], x_fit, y_fit, x_val, y_val, epochs + 1, training["batch_size"], 0)]
else:
    histories = seeds_together.train_seeds(plans, callbacks, x_fit, y_fit, x_val, [y_val] * count, epochs + 1,
                                           training["batch_size"], seeds)
measured = len(ends) - 1
print(json.dumps({{"cpu_per_epoch": (ends[-1] - ends[0]) / measured, "epochs": measured,
                  "val_accuracy": [h["val_accuracy"][-1] for h in histories]}}))
"""


def measure_together(entry: str, count: int, epochs: int, data_file: str, cpu: int, isa: str = "native",
                     merged: bool = False) -> dict:
    return run_pinned(RUN_TOGETHER, [entry, str(count), str(epochs), data_file, "merged" if merged else "apart"], cpu,
                      f"{count} seed(s) together{' merged' * merged} on {entry} ({isa})", isa)


def seeds_together(args) -> list[str]:
    """Measure args.seeds_together seeds together against one alone for `--seeds-entry`; print each comparison
    and return the `seedsN <entry> <ratio>x` lines."""
    n, entry = args.seeds_together, args.seeds_entry
    print(f"CPU seconds per epoch (median), one core, one thread, {args.repeats} interleaved repeats, {args.epochs} epochs "
          f"each after the first: {n} seeds together on the engine against 1 alone; load average {os.getloadavg()[0]:.1f}")
    ratios = []
    for isa in args.isa.split(","):
        runs = {"alone": [], "together": [], "merged": []}
        for _ in range(args.repeats):
            for kind, count in (("alone", 1), ("together", n), ("merged", n)):
                runs[kind].append(measure_together(entry, count, args.epochs, args.data, args.cpu, isa, kind == "merged"))
        alone, together, merged = (statistics.median(r["cpu_per_epoch"] for r in runs[kind]) for kind in runs)
        name = Path(entry).stem
        print(f"[{isa}] {name}: 1 seed alone {alone:.3f} s, {n} together {together:.3f} s ({together / n:.3f} s a seed), "
              f"ratio {together / alone:.2f}x; last val_accuracy {runs['alone'][-1]['val_accuracy']} / "
              f"{runs['together'][-1]['val_accuracy']}; {n} seeds' images as one seed's, {n}x the batch: {merged:.3f} s, "
              f"ratio {merged / alone:.2f}x", flush=True)
        ratios.append(f"seeds{n} {name} {together / alone:.2f}x ({isa})")
        ratios.append(f"seeds{n} merged {name} {merged / alone:.2f}x ({isa}): the least seeds together could cost here")
    return ratios


def measure(entry: str, engine_setting: str, seed: int, epochs: int, data_file: str, cpu: int, isa: str = "native",
            fit_images: int = FIT_IMAGES) -> dict:
    return run_pinned(RUN, [entry, engine_setting, str(seed), str(epochs), data_file, str(fit_images)], cpu,
                      f"engine={engine_setting} on {entry} ({isa})", isa)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entry", action="append", help="entry file (default: classroom_158 and frontier_under1000)")
    parser.add_argument("--epochs", type=int, default=2, help="epochs measured after the first (default 2)")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--seeds", type=int, default=1, help="seeds 0..N-1, each its own run (default 1)")
    parser.add_argument("--cpu", type=int, default=0, help="the core every run is pinned to (default 0)")
    parser.add_argument("--images", type=int, default=FIT_IMAGES,
                        help=f"fit images per epoch (default {FIT_IMAGES:,}; fewer for the widest entries, whose epochs take a minute)")
    parser.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "mnist.npz"), help="mnist.npz")
    parser.add_argument("--isa", default="native,avx2" if cpu_has_avx512() else "native",
                        help="comma-separated: native, avx2 (default: both on an AVX-512 CPU, else native)")
    parser.add_argument("--seeds-together", type=int, default=3, metavar="N",
                        help="then N seeds trained together on the engine against 1 alone (default 3; 0: not measured)")
    parser.add_argument("--seeds-entry", default="submissions/classroom_158.py", help="the entry of that measurement")
    parser.add_argument("--no-speedup", action="store_true", help="measure seeds together only")
    args = parser.parse_args()
    entries = [] if args.no_speedup else args.entry or ["submissions/classroom_158.py", "submissions/frontier_under1000.py"]
    print(f"CPU seconds per seed-epoch (median), one core, one thread, {args.repeats} interleaved repeats x {args.seeds} seed(s), "
          f"{args.epochs} epochs each after the first; {args.images:,} fit and {VALIDATION_IMAGES:,} validation MNIST images; "
          f"load average at the start {os.getloadavg()[0]:.1f}")
    speedups = []
    for isa in args.isa.split(","):
        for entry in entries:
            runs = {setting: [] for setting in ENGINES}
            for _ in range(args.repeats):
                for seed in range(args.seeds):
                    for setting in ENGINES:
                        runs[setting].append(measure(entry, setting, seed, args.epochs, args.data, args.cpu, isa, args.images))
            fit, alone, auto = (statistics.median(r["cpu_per_epoch"] for r in runs[s]) for s in ENGINES)
            chosen = "/".join(sorted({r["engine"] for r in runs["auto"]}))
            probes = [r["probe"] for r in runs["auto"] if r["probe"] is not None]
            name = Path(entry).stem
            print(f"[{isa}] {name}: model.fit {fit:.3f} s, engine=jax ({'/'.join(sorted({r['engine'] for r in runs['jax']}))}) "
                  f"{alone:.3f} s, engine=auto ({chosen}) {auto:.3f} s; ratios {fit / alone:.2f}x and {fit / auto:.2f}x; "
                  f"probe {statistics.median(probes) if probes else 0:.1f} s once per run; last val_accuracy "
                  f"{' / '.join(format(runs[s][-1]['val_accuracy'], '.4f') for s in ENGINES)}", flush=True)
            for note in sorted({n for r in runs["auto"] for n in r["notes"]}):
                print(f"  note: {note}")
            speedups.append(f"speedup {isa} {name} {fit / auto:.2f}x (engine alone {fit / alone:.2f}x, auto chose {chosen})")
    together = seeds_together(args) if args.seeds_together else []
    print(f"load average at the end {os.getloadavg()[0]:.1f}")
    print("\n".join(speedups + together))


if __name__ == "__main__":
    main()
