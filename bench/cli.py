"""The command line: `python -m bench evaluate | check | leaderboard | list | ...`."""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import signal
import sys
import threading
import time
from pathlib import Path

from bench import config, containment, discover, results

# Commands that live in their own module; each module has `register(subparsers)`.
COMMAND_MODULES = ("bench.tune", "bench.studies", "bench.classroom", "bench.gate", "bench.doctor", "bench.site")


class Terminated(KeyboardInterrupt):
    """SIGTERM (`kill`, `timeout`, a cancelled CI job), handled as Ctrl-C is: the runs in flight end, finished
    records stay, and the temporary copies of the dataset are removed (Python's default would leave them)."""


def _terminated(signum, frame):
    raise Terminated


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        parser.print_help()
        return 2
    in_main_thread = threading.current_thread() is threading.main_thread()  # only there can a handler be set
    previous = signal.signal(signal.SIGTERM, _terminated) if in_main_thread else None
    try:
        # Marked as writing into its results folder, so that a concurrent evaluation does not take this
        # command's records (or tuning results, or heatmaps) for an entry's tampering. `doctor` writes nothing,
        # and must report a broken config itself.
        if not getattr(args, "writes_results", True):
            return args.handler(args)
        with containment.writing(getattr(args, "results", None) or config.load(args.config).results):
            return args.handler(args)
    except config.ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as stop:
        print("interrupted: finished records are kept; run the same command again to continue", file=sys.stderr)
        return 128 + signal.SIGTERM if isinstance(stop, Terminated) else 130
    finally:
        if in_main_thread:
            signal.signal(signal.SIGTERM, previous)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench", description="Parameter-budget leaderboard for Keras models.")
    parser.add_argument("--config", default="pyproject.toml", help="file with the [tool.bench] table (default: ./pyproject.toml)")
    # Also accepted after the command name: `python -m bench evaluate --config course.toml`.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    sub = parser.add_subparsers(metavar="COMMAND")
    sub.add_parser = _with_parent(sub.add_parser, common)

    evaluate = sub.add_parser("evaluate", help="train and score entries, then regenerate the leaderboard")
    config.add_run_flags(evaluate)
    evaluate.add_argument("--force", action="store_true", help="retrain even when an OK record with the same cache key exists")
    evaluate.add_argument("--retry-failed", action="store_true",
                          help="train again the runs whose FAILED record is the entry's own doing (failure_cause: entry), "
                               "which are otherwise kept until the file changes, and those that failed from outside the "
                               "entry 3 times in a row (MAX_OUTSIDE_FAILURES)")
    evaluate.add_argument("--strict", action="store_true", help="exit non-zero when any entry is not OK")
    evaluate.add_argument("--smoke", action="store_true",
                          help="a short run that shows each entry learns, with [tool.bench.smoke]'s settings (default: 1 seed, "
                               "2 epochs, 5,000 training and 2,000 test images, a 0.2 validation split); other flags still apply")
    evaluate.add_argument("--shard", type=parse_shard, metavar="I/N",
                          help="evaluate only the I-th of N equal shares of the entries (name order), e.g. one CI job each")
    evaluate.add_argument("--jobs", type=int, help="entries trained at once, one TensorFlow thread each (default: the number of cores)")
    evaluate.add_argument("--executor", choices=["local", "ray"], default="local",
                          help="local: worker subprocesses here; ray: one Ray task per run, on the cluster at RAY_ADDRESS (pip install .[ray])")
    evaluate.add_argument("--gpus-per-run", type=float, default=0.0, help="GPUs each Ray task asks for (with --executor ray)")
    evaluate.add_argument("--eval-kwargs", metavar="NAME=VALUE,...",
                          help="score each trained model rebuilt with these build_model() arguments, its weights reused (train short, deploy long)")
    evaluate.add_argument("--monitor", type=int, metavar="N",
                          help="record per-layer gradient/weight norms and activation statistics every N steps; heatmap PNGs beside the records")
    evaluate.set_defaults(handler=cmd_evaluate)

    check = sub.add_parser("check", help="import, build, count, check the output shape and take one training step")
    # check trains one step of one seed, scores nothing and writes no board: these flags would do nothing.
    config.add_run_flags(check, omit=("seeds", "max_epochs", "test_set", "leaderboard", "engine"))
    check.set_defaults(handler=cmd_check)

    board = sub.add_parser("leaderboard", help="re-render leaderboard.md from results/ (no training, no TensorFlow)")
    config.add_run_flags(board, with_paths=False)
    board.add_argument("--format", choices=["markdown", "json", "csv"], default="markdown",
                       help="json/csv print the board to stdout instead of writing markdown")
    board.add_argument("--check", action="store_true", help="exit 1 if the committed leaderboard differs from what the records render")
    board.set_defaults(handler=cmd_leaderboard)

    listing = sub.add_parser("list", help="list the entries and their cached results")
    # The settings that decide which records count (as for the board); the others do not matter here.
    config.add_run_flags(listing, omit=("data_dir", "time_limit", "memory_limit_mb", "sandbox", "test_set", "leaderboard"))
    listing.set_defaults(handler=cmd_list)

    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as error:
            if error.name != name:
                raise
            continue
        module.register(sub)
    return parser


def _with_parent(add_parser, common):
    def add(name, **kwargs):
        return add_parser(name, parents=[common, *kwargs.pop("parents", [])], **kwargs)

    return add


def prepare(args, challenge: config.Challenge):
    """Submissions and the dataset's fingerprint, or a message saying what to fix.

    Everything that does not depend on an entry is checked here, once, before any worker starts:
    the sandbox mode, the dataset, the validation size, the hidden test set."""
    from bench import arrays, data, sandbox

    submissions = discover.find(args.paths, challenge.submissions)
    for bad in (s for s in submissions if not s.ok):
        print(f"skipped: {bad.problem}", file=sys.stderr)
    try:
        sandbox.active(challenge.sandbox)
        dataset = data.load(challenge.dataset, challenge.data_dir, challenge.train_limit, challenge.test_limit)
        if challenge.test_set:
            from bench import classroom

            classroom.check_test_set(challenge, dataset.input_shape, dataset.num_classes)
        arrays.inputs(challenge, with_test=bool(challenge.test_set) or args.handler is not cmd_check)
    except (data.DataError, sandbox.SandboxUnavailable) as error:
        print(f"error: {error}", file=sys.stderr)
        return None, None
    return submissions, dataset.fingerprint()


def parse_shard(text: str) -> tuple[int, int]:
    index, _, count = text.partition("/")
    if not (index.isdigit() and count.isdigit() and 1 <= int(index) <= int(count)):
        raise argparse.ArgumentTypeError(f"{text!r}: give I/N with 1 <= I <= N, e.g. --shard 2/4 for the second of four shards")
    return int(index), int(count)


def in_shard(submissions: list, index: int, count: int) -> list:
    """Every N-th entry in name order, from the I-th on: shards 1/N..N/N split the entries exactly and evenly."""
    return sorted(submissions, key=lambda s: (s.name, str(s.path)))[index - 1::count]


# Flags that make a run a try-out: its records are not the challenge's, so they stay off the committed board.
def cmd_evaluate(args) -> int:
    from bench import executors, leaderboard, monitor, plan, runner, studies

    challenge = config.tryout_destination(args, config.load_challenge(args))
    executor = executors.create(args.executor, args.jobs, args.gpus_per_run)  # a missing extra is reported before any work
    eval_kwargs = studies.parse_kwargs(args.eval_kwargs) if args.eval_kwargs else None
    if args.monitor is not None and args.monitor < 1:
        raise config.ConfigError(f"--monitor {args.monitor}: give the number of training steps between measurements, at least 1")
    submissions, fingerprint = prepare(args, challenge)
    if submissions is None:
        return 2
    if args.shard:
        submissions = in_shard(submissions, *args.shard)
    good = [s for s in submissions if s.ok]
    # A try-out's own tuned values first, else the challenge's (bench.tune.saved_path): the records say which.
    runs = plan.plan(challenge, good, fingerprint, list(range(challenge.seeds)), eval_kwargs=eval_kwargs,
                       hyperparameters_for=tuned_hyperparameters(challenge))
    extra_job = {"monitor": args.monitor} if args.monitor else None
    records = runner.execute(challenge, runs, force=args.force, retry_failed=args.retry_failed, executor=executor, extra_job=extra_job,
                             one_seed_above=challenge.one_seed_above)
    for heatmap in monitor.write_heatmaps(records, challenge.results) if args.monitor else []:
        print(f"wrote {heatmap}")
    path = leaderboard.write(challenge)
    skipped = [s for s in submissions if not s.ok]
    not_ok = [r for r in records if r["status"] != "OK"] + skipped
    print(f"{len(records)} run(s), {len(not_ok) - len(skipped)} not OK"
          + (f", {len(skipped)} file(s) skipped ({', '.join(s.path.name for s in skipped)})" if skipped else "") + f"; wrote {path}")
    return 1 if args.strict and not_ok else 0


def tuned_hyperparameters(challenge: config.Challenge):
    """Entries tuned with `bench tune` train with the best hyperparameters found (none otherwise)."""
    try:
        from bench import tune
    except ImportError:  # the tuning module is optional
        return None
    return lambda submission: tune.best_hyperparameters(challenge, submission)


def cmd_check(args) -> int:
    from bench import containment, plan, runner, sandbox, stages

    # `check` never scores, so it never needs the hidden test set (only the trusted run has it).
    challenge = dataclasses.replace(config.load_challenge(args), test_set=None)
    progress = elapsed_progress()
    progress(f"loading {challenge.dataset}")
    submissions, fingerprint = prepare(args, challenge)
    if submissions is None:
        return 2
    failures = sum(1 for s in submissions if not s.ok)
    protected = runner.protected_files(challenge)
    runs = plan.plan(challenge, [s for s in submissions if s.ok], fingerprint, [0], hyperparameters_for=tuned_hyperparameters(challenge))
    for run in runs:
        # One entry (a student's): its audit starts beside the training step, which saves the seconds of one
        # TensorFlow start-up. A folder (a class's) has failures, whose early audits would be start-ups thrown away
        # on a machine busy with the next entry, so there each audit waits for its training step.
        record = stages.run_worker(challenge, run, threads=None, log=lambda line: None, extra_job={"mode": "check"},
                                   progress=lambda text, name=run.submission.name: progress(f"{name}: {text}"),
                                   early_audit=len(runs) == 1)
        changed = protected.restore(undo=not sandbox.active(challenge.sandbox))
        record = runner.published(containment.tampering(changed) if changed else record)  # bounded, no control characters
        params = f"{record['total_params']:,} params" if record.get("total_params") is not None else ""
        macs = f"{record['macs']:,} MACs" if record.get("macs") is not None else ""
        print(f"{record['status']:<11} {run.submission.name:<28} {params:>14} {macs:>16}  {record['message']}")
        failures += record["status"] != "OK"
    progress("done")
    return 1 if failures else 0


def elapsed_progress():
    """A function that prints what a command is doing, after the seconds since this call, to stderr (stdout
    keeps one result line per entry, for scripts to read): TensorFlow's start-up alone is seconds per stage."""
    started = time.perf_counter()

    def progress(text: str) -> None:
        print(f"[{time.perf_counter() - started:5.1f} s] {text}{'' if text == 'done' else ' ...'}", file=sys.stderr, flush=True)

    return progress


def cmd_leaderboard(args) -> int:
    from bench import leaderboard

    challenge = config.load_challenge(args)
    if args.format != "markdown":
        print(leaderboard.export(challenge, args.format).rstrip("\n"))  # to_csv ends its text with a newline already
        return 0
    if args.check:
        expected = leaderboard.render_markdown_text(challenge)
        committed = Path(challenge.leaderboard).read_text() if Path(challenge.leaderboard).exists() else ""
        if committed != expected:
            print(f"{challenge.leaderboard} differs from what the records in {challenge.results}/ render: "
                  "run `python -m bench leaderboard` and commit the result (never edit it by hand)", file=sys.stderr)
            return 1
        print(f"{challenge.leaderboard} matches the records")
        return 0
    print(f"wrote {leaderboard.write(challenge)}")
    return 0


def cmd_list(args) -> int:
    """Each entry's record per seed, marked as the board would treat it: "(stale)" when made from an earlier
    version of the file, "(other settings)" when made under settings other than these (the board leaves both out)."""
    challenge = config.load_challenge(args)
    protocol = challenge.protocol_hash()
    for submission in discover.find(args.paths, challenge.submissions):
        if not submission.ok:
            print(f"{submission.name:<28} NOT AN ENTRY: {submission.problem}")
            continue
        statuses = []
        for seed in range(challenge.seeds):
            record = results.read(results.record_path(challenge.results, challenge.board_name, submission.name, seed))
            key = (record or {}).get("key", {})
            mark = "(stale)" if key.get("submission") != submission.file_hash else "(other settings)" if key.get("config") != protocol else ""
            statuses.append("-" if record is None else record["status"] + mark)
        print(f"{submission.name:<28} {'/'.join(statuses):<24} {submission.author or '-':<16} {submission.summary}")
    return 0
