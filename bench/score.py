"""Score one run: the audit's counts and predictions against the labels only the runner holds.

Also whose doing a failed run was (`failure_cause`): the entry's own failures are kept until its file changes;
those from outside it (a limit the machine caused, a lost worker) are retried.
"""

from __future__ import annotations

import hashlib
import hmac
from pathlib import Path

import numpy as np

from bench import audit, config, scoring, train
from bench.arrays import Inputs
from bench.status import ENTRY_CAUSE, FAILED, INVALID, MAX_OUTSIDE_FAILURES, OK, OUTSIDE_CAUSE, OVER_BUDGET


def failure_cause(partial: dict) -> str:
    """A not-OK run's `failure_cause`: ENTRY_CAUSE when the file alone decides it (INVALID, OVER_BUDGET, and a
    FAILED that the stage which saw it marked as the entry's), cached like INVALID until the file changes;
    else OUTSIDE_CAUSE (TIMEOUT, memory, a killed worker, a lost Ray task, an audit that crashed), retried."""
    if partial.get("status") in (INVALID, OVER_BUDGET):
        return ENTRY_CAUSE
    if partial.get("status") == FAILED and partial.get("failure_cause") == ENTRY_CAUSE:
        return ENTRY_CAUSE
    return OUTSIDE_CAUSE


def outside_failures(previous: dict | None, record: dict) -> int:
    """How many runs of `record`'s cache key in a row, `record` (a failure from outside the entry) the last, failed from
    outside: one more than `previous` (the record on disk) says when it is such a failure of the same key, else 1."""
    if (previous and previous.get("key", {}).get("hash") == record["key"]["hash"] and previous.get("status") != OK
            and previous.get("failure_cause") == OUTSIDE_CAUSE):
        return int(previous.get("outside_failures") or 1) + 1
    return 1


def gave_up_message(message: str) -> str:
    """A record's message once its key failed from outside MAX_OUTSIDE_FAILURES times in a row: first, so the board shows it."""
    return (f"kept after {MAX_OUTSIDE_FAILURES} failures in a row from outside the entry (train it again with "
            f"`evaluate --retry-failed`): {message}")


# What a record says that a re-run with the same outcome says again (its times and dates differ).
FAILURE_FIELDS = ("status", "message", "failure_cause", "outside_failures")


def same_failure(previous: dict | None, record: dict) -> dict | None:
    """`previous`, the record on disk, when `record` is the same failure under the same cache key; else None."""
    if not previous or record["status"] == OK or previous.get("key", {}).get("hash") != record["key"]["hash"]:
        return None
    return previous if all(previous.get(name) == record.get(name) for name in FAILURE_FIELDS) else None


def score(challenge: config.Challenge, claims: dict, audited: dict, prepared: "Inputs", audit_out: Path, mode: str) -> dict:
    """The run's partial record: the training claims, the audit's counts, and accuracies from the labels held here."""
    if audited.get("status") != OK:
        return {**claims, "status": audited.get("status", FAILED), "message": audited.get("message", "")}
    record = {**claims, "notes": [*claims.get("notes", []), *audited.get("notes", [])], "audit_path": audited.get("path")}
    for name in ("total_params", "trainable_params", "nonzero_params", "weight_tensors", "embedded_constants", "macs", "macs_nonzero",
                 "macs_lower_bound"):
        record[name] = audited.get(name)
    if record["total_params"] > challenge.max_params:
        return {**record, "status": OVER_BUDGET, "message": train.over_budget_message(record["total_params"], challenge.max_params)}
    labels = {"val": prepared.y_val, **({"test": prepared.y_test} if mode == "train" else {})}
    # On a hidden test set the fingerprint is keyed with that set's digest, which only the file's holder can compute: a
    # plain hash of the predictions was inverted offline (a model predicting class 1 only on images with a rare property,
    # its author hashing each guess of which hidden images those are until one matched: a red team found 2 of 360 so).
    digest = hmac.new(prepared.test_digest.encode(), digestmod="sha256") if "test" in labels and prepared.test_digest else hashlib.sha256()
    for name, truth in labels.items():
        predictions = np.load(audit_out / f"{name}_predictions.npy", allow_pickle=False)
        if predictions.shape != truth.shape:
            return {**record, "status": FAILED, "message": f"the audit returned {predictions.shape} predictions for {truth.shape} {name} images"}
        digest.update(f"{name} {predictions.size};".encode() + predictions.astype("<i8").tobytes())
        record[f"{name}_accuracy"] = float(np.mean(predictions == truth))
        if name == "test":  # which test images this run got right, for the paired tests between entries (bench.scoring)
            record["test_correct"] = scoring.pack_correct(predictions == truth)
    # The audited predictions' fingerprint, computed here and never claimed: seeds with equal ones trained the same
    # model, which the board flags (bench.leaderboard: the entry sets its own seed).
    record["predictions_sha256"] = digest.hexdigest()
    if mode == "check":
        how = "rebuilt from Keras's layers" if record["audit_path"] == audit.REBUILT else f"audited as {record['audit_path']}"
        record["message"] = f"check passed: imports, builds, output shape, one training step, saved, {how}"
    elif prepared.test_set:
        record["test_set"] = prepared.test_set
    return record
