"""Run records: one JSON file per (dataset, entry, variant, seed) under results/, written atomically.

A record's cache key is the hash of everything that decides what the run produces; `evaluate`
skips a run whose key matches a record that `is_cached` keeps (OK, INVALID, OVER_BUDGET, the entry's own FAILED).
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from bench import PROTOCOL_VERSION
from bench.config import sha256_of_json
from bench.status import CACHED_STATUSES, ENTRY_CAUSE, FAILED, MAX_OUTSIDE_FAILURES, OK, OUTSIDE_CAUSE


def cache_key(submission_hash: str, protocol_hash: str, dataset_fingerprint: str, seed: int,
              build_kwargs: dict | None = None, eval_kwargs: dict | None = None,
              hyperparameters: dict | None = None, helpers: dict | None = None) -> dict:
    """What a run's record depends on; `helpers` maps each `_*.py` file copied beside the entry to its sha256."""
    parts = {
        "submission": submission_hash,
        "config": protocol_hash,
        "dataset": dataset_fingerprint,
        "seed": seed,
        "harness": PROTOCOL_VERSION,
    }
    # Optional parts join the key only when set, so adding a feature does not retrain old records.
    for name, value in (("build_kwargs", build_kwargs), ("eval_kwargs", eval_kwargs), ("hyperparameters", hyperparameters),
                        ("helpers", helpers)):
        if value:
            parts[name] = sha256_of_json(value)
    return {**parts, "hash": sha256_of_json(parts)}


def variant_name(entry: str, build_kwargs: dict | None = None, eval_kwargs: dict | None = None) -> str:
    """`entry`, or `entry@channels=5,iterations=2` for a sweep point (`eval:` marks evaluation-time arguments)."""
    parts = [f"{k}={v}" for k, v in sorted((build_kwargs or {}).items())]
    parts += [f"eval:{k}={v}" for k, v in sorted((eval_kwargs or {}).items())]
    return f"{entry}@{','.join(parts)}" if parts else entry


def record_path(results_dir: str | Path, dataset: str, run_name: str, seed: int) -> Path:
    return Path(results_dir) / dataset / run_name / f"seed{seed}.json"


def write(path: Path, record: dict) -> None:
    """Write to a temporary file in the same folder, then rename: readers never see half a record."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(record, f, indent=1, sort_keys=True, allow_nan=False)  # strict JSON: no NaN tokens
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def load_all(results_dir: str | Path, dataset: str | None = None) -> list[dict]:
    """Every readable record, in a fixed order (so renders are deterministic)."""
    root = Path(results_dir) / dataset if dataset else Path(results_dir)
    records = []
    for path in sorted(root.rglob("seed*.json")):
        record = read(path)
        if record is not None:
            records.append(record)
    return records




def is_cached(path: Path, key_hash: str, retry_failed: bool = False) -> bool:
    """Whether the record at `path` answers a run with this key: OK, INVALID or OVER_BUDGET, or FAILED by the entry's
    own doing (its `failure_cause`: the same file fails the same way again), or failed from outside it
    MAX_OUTSIDE_FAILURES times in a row, unless `retry_failed`."""
    record = read(path)
    if not record or record.get("key", {}).get("hash") != key_hash:
        return False
    entrys_failure = record.get("status") == FAILED and record.get("failure_cause") == ENTRY_CAUSE
    # An outside failure is retried, MAX_OUTSIDE_FAILURES times in a row at most (bench.score.outside_failures).
    given_up = (record.get("status") != OK and record.get("failure_cause") == OUTSIDE_CAUSE
                and (record.get("outside_failures") or 0) >= MAX_OUTSIDE_FAILURES)
    return record.get("status") in CACHED_STATUSES or ((entrys_failure or given_up) and not retry_failed)
