"""A run's outcome, in one place: every stage reports one of these, with a message saying what to change.

- OK: trained, exported, audited and scored.
- FAILED: the entry's code raised, training diverged, or a limit stopped it (memory, processes). The record's
  `failure_cause` says whose doing it is: ENTRY_CAUSE (the file decides it: its code raised or exited, training
  diverged, it broke the validation protocol, wrote the harness's files, or passed the process or file limits),
  kept by the cache until the file changes (`evaluate --retry-failed` trains it again); OUTSIDE_CAUSE (memory, a
  signal, a lost Ray task, a crashed audit, a late validation answer), retried by the next evaluation.
- TIMEOUT: the run passed the challenge's `time_limit`, which a loaded machine can cause: always retried.
- OVER_BUDGET: more parameters than `max_params` (counted before training, and again from the export).
- INVALID: the file breaks the contract (no factory, wrong shapes, bad TRAINING, a model that cannot be
  exported or whose graph uses file or system operations); the same file always gets the same verdict.
"""

OK, FAILED, TIMEOUT, OVER_BUDGET, INVALID = "OK", "FAILED", "TIMEOUT", "OVER_BUDGET", "INVALID"
STATUSES = (OK, FAILED, TIMEOUT, OVER_BUDGET, INVALID)
# Decided by the file alone, so the same cache key gets the same verdict: kept by the cache.
CACHED_STATUSES = (OK, INVALID, OVER_BUDGET)
# A not-OK record's `failure_cause`: the entry's file (cached with it) or anything outside it (retried).
ENTRY_CAUSE, OUTSIDE_CAUSE = "entry", "outside"
# Runs of one cache key that fail from outside this many times in a row are kept like the entry's own failures, until
# `evaluate --retry-failed`. The cause is read from what ended the run, which the entry can choose (raise MemoryError,
# kill itself, sleep past the time limit): retried without end, an entry threw away every run whose validation it
# disliked and drew again, from its own entropy, at each evaluation, and one that timed out held a core for
# `time_limit` at every push.
MAX_OUTSIDE_FAILURES = 3

# The training engine a record names in its `engine` field (bench.engine picks one per entry). Records made
# before the field existed trained with model.fit.
JAX_ENGINE, KERAS_ENGINE = "jax-batch-minor", "keras-tensorflow"
ENGINES = (JAX_ENGINE, KERAS_ENGINE)


class EntryProblem(Exception):
    """Something in the submission the person must change; carries the status to report."""

    def __init__(self, status: str, message: str):
        super().__init__(message)
        self.status = status
