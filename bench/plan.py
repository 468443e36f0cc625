"""Plan an evaluation: one run per (entry, seed), each with its cache key and record path, and which runs wait.

Under `one_seed_above`, an entry's other seeds wait for its seed-0 record, whose parameter count decides
whether they train (limit_seeds, release_waiting).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path


from bench import config, discover, results
from bench.discover import Submission


@dataclasses.dataclass
class Run:
    submission: Submission
    seed: int
    path: Path
    key: dict
    build_kwargs: dict
    eval_kwargs: dict
    hyperparameters: dict | None = None

    @property
    def label(self) -> str:
        return f"{self.path.parent.name} seed {self.seed}"


def plan(challenge: config.Challenge, submissions: list[Submission], fingerprint: str, seeds: list[int],
         build_kwargs: dict | None = None, eval_kwargs: dict | None = None, hyperparameters_for=None) -> list[Run]:
    if challenge.test_set:  # the hidden test set's content (not its path) decides what a run scores
        from bench import classroom

        fingerprint = config.sha256_of_json([fingerprint, classroom.hidden_test_set(challenge).digest])
    runs = []
    for submission in submissions:
        hyperparameters = hyperparameters_for(submission) if hyperparameters_for else None
        name = results.variant_name(submission.name, build_kwargs, eval_kwargs)
        # The helpers travel with the entry into the sandbox (run_worker), so an edit to one retrains it. Read without
        # following links: a link's target (a hidden file, /dev/zero, /proc/uptime) is never read, and keys it "refused".
        helpers = discover.helper_digests(submission.path.parent)
        for seed in seeds:
            key = results.cache_key(submission.file_hash, challenge.protocol_hash(), fingerprint, seed,
                                    build_kwargs, eval_kwargs, hyperparameters, helpers)
            path = results.record_path(challenge.results, challenge.board_name, name, seed)
            runs.append(Run(submission, seed, path, key, build_kwargs or {}, eval_kwargs or {}, hyperparameters))
    return runs


def limit_seeds(runs: list[Run], one_seed_above: int | None) -> tuple[dict[int, Run], dict[int, Run]]:
    """Split `runs` into (runs to train now, runs waiting for their entry's seed 0), keyed by index in `runs`.

    Under `one_seed_above`, an entry's seeds after the first train only if its seed-0 record, under
    the same key, counts at most that many parameters; an entry too big, or whose seed 0 ended without
    a count (it failed before building), keeps seed 0 alone. Until seed 0 is recorded, its size is
    unknown and the other seeds wait: `release_waiting` decides as soon as it is.
    """
    if one_seed_above is None:
        return dict(enumerate(runs)), {}
    first = {run.path.parent: run for run in runs if run.seed == 0}
    now, waiting = {}, {}
    for index, run in enumerate(runs):
        zero = first.get(run.path.parent)
        if run.seed == 0 or zero is None:
            now[index] = run
        elif not _recorded(zero):
            waiting[index] = run
        elif _small_enough(zero, one_seed_above):
            now[index] = run
    return now, waiting


def release_waiting(waiting: dict[int, Run], finished: Run, one_seed_above: int | None) -> dict[int, Run]:
    """Take the runs waiting for `finished` (an entry's seed 0, just recorded) out of `waiting`; return those to train."""
    mine = {index: run for index, run in waiting.items() if finished.seed == 0 and run.path.parent == finished.path.parent}
    for index in mine:
        del waiting[index]
    return mine if mine and _small_enough(finished, one_seed_above) else {}


def _recorded(run: Run) -> bool:
    record = results.read(run.path) if run.path.exists() else None
    return bool(record) and record.get("key", {}).get("hash") == run.key["hash"]


def _small_enough(run: Run, one_seed_above: int) -> bool:
    record = results.read(run.path) if _recorded(run) else None
    return bool(record) and record.get("total_params") is not None and record["total_params"] <= one_seed_above
