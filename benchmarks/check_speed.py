"""How long `python -m bench check` takes on a small entry, this checkout beside others, runs interleaved.

Run from the repository root:
    python benchmarks/check_speed.py [--entry PATH] [--repeats N] [--checkout DIR[=PYTHON] ...]

Each repeat runs `check ENTRY --dataset digits --validation-size 0.1` once per checkout, in turn, from the
checkout's own folder (so `python -m bench` imports that checkout's bench), with the interpreter given after `=`
(default: this one). A busy machine changes the numbers by seconds, so the one-minute load average is printed
beside every run, and a side is compared with the others only within one run of this script. The check's own
stage lines (stderr) are printed for this checkout's last run: where its time went.
Target (issue 29): a small entry on digits under 15 s on an idle machine.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def run_check(checkout: Path, python: str, entry: Path) -> tuple[float, float, subprocess.CompletedProcess]:
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as results:
        started = time.perf_counter()
        done = subprocess.run([python, "-m", "bench", "check", str(entry), "--dataset", "digits", "--validation-size", "0.1",
                               "--results", results], cwd=checkout, capture_output=True, text=True)
        wall = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"check failed in {checkout}:\n{done.stdout}\n{done.stderr}")
    return wall, load, done


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entry", default="submissions/cnn_baseline.py", help="a small entry that passes check on digits")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--checkout", action="append", default=[], metavar="DIR[=PYTHON]",
                        help="another checkout of bench to time beside this one (repeatable)")
    args = parser.parse_args()
    entry = (REPO / args.entry).resolve()
    sides = [(REPO, sys.executable)] + [(Path(c.split("=", 1)[0]).resolve(), c.split("=", 1)[1] if "=" in c else sys.executable)
                                       for c in args.checkout]
    walls: dict[Path, list[float]] = {checkout: [] for checkout, _ in sides}
    last = None
    print(f"check {args.entry} --dataset digits, {args.repeats} interleaved runs per checkout")
    for repeat in range(args.repeats):
        for checkout, python in sides:
            wall, load, done = run_check(checkout, python, entry)
            walls[checkout].append(wall)
            print(f"run {repeat + 1}  {str(checkout):<32} {wall:6.1f} s   load average {load:.2f}", flush=True)
            if checkout == REPO:
                last = done
    print(f"{'checkout':<40}{'median s':>10}{'min s':>8}")
    for checkout, times in walls.items():
        print(f"{str(checkout):<40}{statistics.median(times):10.1f}{min(times):8.1f}")
    print("this checkout's last run, as check reports its stages:")
    print("\n".join("  " + line for line in last.stderr.splitlines() if line.startswith("[")))


if __name__ == "__main__":
    main()
