"""What the runner takes from the training stage's output folder: checked claims, never a score.

The entry runs in the training process and may write anything there, so the folder is walked without
following links and within bounds (untrusted_tree_problem), its result file is parsed strictly
(read_result), and only a few claimed fields survive, cut to what an honest worker writes; the epochs,
validation history and timings are the runner's own (checked_claims, with_measured).
"""

from __future__ import annotations

import json
import math
import stat
from pathlib import Path


from bench import config, monitor, untrusted
from bench.status import ENGINES, FAILED, OK, STATUSES


# What the runner takes from the training process's claims (bench.train's result.json): never a count
# or an accuracy, which come from the audit and from the runner's own labels, and never the epochs, the
# validation history or the timings, which come from the runner's own validation answers (bench.validation).
CLAIMED_FIELDS = ("status", "message", "notes", "history", "monitor", "train_macs", "worker_seconds", "traceback", "engine")


# The worker's result file holds a few numbers and a short history; anything far larger is not one.
MAX_RESULT_BYTES = 64 * 2**20
# The training stage's whole output folder (the SavedModel, a .keras copy, the result): a model within any
# budget is far smaller; a bigger folder is an entry filling the disk.
MAX_OUTPUT_BYTES = 2 * 2**30
MAX_NOTES, MAX_TEXT = 20, 4000
# The text fields a record holds from the entry (its file's summary and AUTHOR, the training stage's messages), as
# `published` bounds them: {field: (most characters, whether newlines stay)}. `notes` and `output_tail` are lists of lines.
PUBLISHED_TEXT = {"message": (MAX_TEXT, True), "traceback": (5 * MAX_TEXT, True), "summary": (1000, False), "author": (200, False)}


# The name of a history series (a Keras metric's: "loss", "sparse_categorical_accuracy", "learning_rate"). Names go into
# the committed record unchanged, so they are bounded: a red team's 24 names of 640,000 emoji each made a 184 MB record
# (each written as a 12-byte escape), past the 100 MB a GitHub push takes, so the publish job could commit no board.
MAX_HISTORY_NAME = 100


# An export is a few files a few folders deep (model/variables/variables.index); far more is an entry's doing.
MAX_OUTPUT_DEPTH, MAX_OUTPUT_ENTRIES = 16, 10_000


def untrusted_tree_problem(root: Path) -> str | None:
    """Why the folder an entry could write is not safe to read (None when it is): only plain files and
    folders (no links, devices or pipes, which a copy or a read would follow), within MAX_OUTPUT_DEPTH levels,
    MAX_OUTPUT_ENTRIES files and folders and MAX_OUTPUT_BYTES. Walked iteratively: no depth ends the runner."""
    size = 0
    try:
        for relative, info in untrusted.walk(root, MAX_OUTPUT_DEPTH, MAX_OUTPUT_ENTRIES):
            if not (stat.S_ISREG(info.st_mode) or stat.S_ISDIR(info.st_mode)):
                return (f"the training process left {relative}, which is {untrusted.kind(info.st_mode)}, not a plain "
                        "file or folder: an entry must not write links, devices or pipes into the output")
            size += info.st_size
            if size > MAX_OUTPUT_BYTES:
                return f"the training process left over {MAX_OUTPUT_BYTES:,} bytes of output: an entry must not fill the disk"
    except untrusted.Refused as error:
        return f"the training process left {error} in its output: an entry must only export its model there"
    return None


# The worker's own timing claim (bench.train.main): at most these keys, each at most the training stage's wall time.
WORKER_SECONDS = ("tensorflow_import", "after_import")


def checked_claims(claims: dict, challenge: config.Challenge, extra_job: dict, measured: dict | None = None) -> dict:
    """The worker's claims cut to what an honest worker writes: the entry runs in that process and may
    forge its result file, and whatever it claims is shown on the board (never scored from).

    `measured` (bench.validation.Harness.record_fields) is what this process answered and timed: `epochs`, the
    history's val_loss and val_accuracy, `train_seconds` and `export_seconds` come from it alone (none without
    it: check mode trains no epoch), and the claimed history keeps at most one number per answered epoch."""
    epochs = challenge.max_epochs + 1
    problems = []
    history = claims.get("history", {})
    if not (isinstance(history, dict) and len(history) <= 32 and all(
            isinstance(series, str) and len(series) <= MAX_HISTORY_NAME
            and isinstance(values, list) and len(values) <= epochs and all(v is None or (isinstance(v, (int, float)) and not isinstance(v, bool)) for v in values)
            for series, values in history.items())):
        problems.append("history")
    notes = claims.get("notes", [])
    if not (isinstance(notes, list) and len(notes) <= MAX_NOTES and all(isinstance(n, str) and len(n) <= MAX_TEXT for n in notes)):
        problems.append("notes")
    for name in ("message", "traceback"):
        if name in claims and not (isinstance(claims[name], str) and len(claims[name]) <= 5 * MAX_TEXT):
            problems.append(name)
    if "monitor" in claims and not monitor.well_formed(claims["monitor"], extra_job.get("monitor")):
        problems.append("monitor")
    if "engine" in claims and claims["engine"] not in ENGINES:
        problems.append("engine")
    worker_seconds = claims.get("worker_seconds", {})
    if not (isinstance(worker_seconds, dict) and set(worker_seconds) <= set(WORKER_SECONDS) and all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and v >= 0 for v in worker_seconds.values())):
        problems.append("worker_seconds")
    if problems:
        return {"status": FAILED, "message": f"the training process's result has malformed {', '.join(problems)}: "
                "an entry must not write the harness's files"}
    return with_measured(claims, measured)


def with_measured(claims: dict, measured: dict | None) -> dict:
    """`claims` (checked) with the epochs, validation history and timings this process measured in place of any claimed."""
    claims = {k: v for k, v in claims.items() if k not in ("epochs", "train_seconds", "export_seconds")}
    history = {k: v for k, v in claims.pop("history", {}).items() if not k.startswith("val_")}
    if measured is None or not (measured["epochs"] or claims.get("status") == OK):
        return {**claims, **({"history": history} if history else {})}
    answered = measured["epochs"]
    if not answered:  # every honest run trains at least one epoch, and each epoch asks for its validation
        return {**claims, "status": FAILED, "message": "the training process reported success without asking the harness "
                "for any validation: an entry must let the harness's callbacks run (no fit call of its own)"}
    stage = measured["train_seconds"] + measured["export_seconds"]
    if "worker_seconds" in claims:  # a claim, shown as one: never more than the stage the harness timed
        claims["worker_seconds"] = {k: round(min(v, stage), 3) for k, v in claims["worker_seconds"].items()}
    return {**claims, "epochs": answered, "train_seconds": measured["train_seconds"], "export_seconds": measured["export_seconds"],
            "history": {**{k: v[:answered] for k, v in history.items()}, **measured["history"]}}
NUMBER_FIELDS = ("train_macs",)


def _not_a_number(token: str):
    raise ValueError(f"{token} is not a number strict JSON allows")


def _finite(token: str) -> float:
    """A JSON number as a float, refused when it overflows to infinity (`1e999`), which no record may hold."""
    value = float(token)
    if not math.isfinite(value):
        raise ValueError(f"{token[:20]} is not a finite number")
    return value


# Integers a record may hold: beyond 2**53 a float cannot hold them, and the board's arithmetic turns them into floats.
MAX_CLAIMED_INT = 2**53


def _bounded(token: str) -> int:
    """A JSON integer, refused when it is larger than any float holds exactly (`10**4000` crashed the web board)."""
    if len(token.lstrip("-")) > 16 or abs(int(token)) > MAX_CLAIMED_INT:
        raise ValueError(f"{token[:20]}... is larger than {MAX_CLAIMED_INT:,}")
    return int(token)


def read_result(path: Path) -> dict:
    """The worker's partial record, checked: the entry runs in that process and may write the file itself,
    and a malformed one must fail its own run, not the evaluation."""
    try:
        if path.stat().st_size > MAX_RESULT_BYTES:
            raise ValueError(f"{path.stat().st_size:,} bytes")
        partial = json.loads(path.read_text(), parse_constant=_not_a_number, parse_float=_finite, parse_int=_bounded)
        if not isinstance(partial, dict) or partial.get("status") not in STATUSES or not isinstance(partial.get("message"), str):
            raise ValueError("no status and message")
        wrong = [k for k in NUMBER_FIELDS if partial.get(k) is not None and (isinstance(partial[k], bool) or not isinstance(partial[k], (int, float)))]
        if wrong:
            raise ValueError(f"{', '.join(wrong)} not numbers")
    except (OSError, ValueError, RecursionError) as error:  # json.JSONDecodeError, UnicodeDecodeError: ValueErrors
        # RecursionError: lists nested thousands deep, which json.loads descends into with the C stack.
        return {"status": FAILED, "message": f"the training process left a result that is not a record ({error}): "
                "an entry must not write the harness's files"}
    return partial
