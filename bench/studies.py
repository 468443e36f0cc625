"""Studies of one entry across values of its build_model() arguments.

`python -m bench sweep ENTRY --grid NAME=V1,V2,... [--grid ...] [--eval-grid NAME=V1,...] [--monitor N]`
trains the entry once per grid point (the product of the --grid lists) and seed, passing the
point's values to build_model() as keyword arguments. Each run is an ordinary record under
results/<dataset>/<entry>@<name>=<value>,.../ and is cached like any other. `--eval-grid` also
scores the trained weights in a model built with other values (train short, deploy long).

The sweep saves what it ran in studies/<study>/study.json, then writes studies/<study>/README.md
and its plots from the records; `python -m bench study [STUDY ...]` rewrites them from the records
alone, without training. Running `sweep` again with the same --name adds a part to the study, so
one report can hold, say, an iteration sweep and a deploy-time sweep; the report names every
command that produced it at its top. Hand-written discussion goes in studies/<study>/notes.md,
which the report includes as it is.
"""

from __future__ import annotations

import argparse
import ast
import itertools
import json
import re
import shlex
import sys
from pathlib import Path

import pandas as pd
from tabulate import tabulate

from bench import config, discover, monitor, results
from bench.leaderboard import cell

DEFAULT_STUDIES = "studies"
SPEC_FILE = "study.json"
NOTES_FILE = "notes.md"
STUDY_NAME = re.compile(r"[A-Za-z0-9_-]+")
# The run flags a sweep was given, so `study` finds the same records; --leaderboard plays no part.
RUN_FLAGS = {setting: flag for setting, flag in config.RUN_FLAGS.items() if setting != "leaderboard"}
# The harness passes these itself; a grid cannot set them.
RESERVED = ("input_shape", "num_classes")
NO_DEFAULT = object()


class GridError(config.ConfigError):
    """A --grid, --eval-grid or --eval-kwargs the person must rewrite; the message says how."""


def register(subparsers) -> None:
    sweep = subparsers.add_parser("sweep", help="train an entry once per grid point of its build_model() arguments and write a study report")
    sweep.add_argument("entry", help="the entry's file, e.g. submissions/iterated_unrolled.py (any path)")
    sweep.add_argument("--grid", action="append", required=True, metavar="NAME=V1,V2,...",
                       help="values of one build_model() argument; repeat for more arguments (every combination is trained)")
    sweep.add_argument("--eval-grid", action="append", default=[], metavar="NAME=V1,V2,...",
                       help="also score each trained model rebuilt with these values, its weights reused (train short, deploy long)")
    sweep.add_argument("--monitor", type=positive_int, metavar="N",
                       help="record gradient/weight norms and activation statistics every N steps; heatmaps go in the report")
    sweep.add_argument("--name", help="the study's folder name (default: ENTRY_ARG1_ARG2...); an existing study gains a part")
    sweep.add_argument("--studies", default=DEFAULT_STUDIES, help=f"folder of study reports (default: {DEFAULT_STUDIES})")
    sweep.add_argument("--force", action="store_true", help="retrain even when an OK record with the same cache key exists")
    sweep.add_argument("--jobs", type=positive_int, help="runs trained at once, one TensorFlow thread each (default: the number of cores)")
    config.add_run_flags(sweep, with_paths=False, omit=("leaderboard",))  # a sweep writes a study report, not the board
    sweep.set_defaults(handler=cmd_sweep)

    study = subparsers.add_parser("study", help="rewrite study reports from the records (no training, no TensorFlow)")
    study.add_argument("names", nargs="*", help="study names or folders (default: every study under --studies)")
    study.add_argument("--studies", default=DEFAULT_STUDIES, help=f"folder of study reports (default: {DEFAULT_STUDIES})")
    study.set_defaults(handler=cmd_study)


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 1, got {text!r}")
    return value


# ---- grids ------------------------------------------------------------------------------------

def factory_signature(path: Path) -> tuple[dict, bool]:
    """build_model()'s parameters and their defaults, read from the file's syntax tree (nothing is imported),
    and whether it takes **kwargs."""
    try:
        tree = ast.parse(path.read_text(), filename=str(path))
    except SyntaxError as error:
        raise GridError(f"{path}, line {error.lineno}: SyntaxError: {error.msg}") from None
    function = next((n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "build_model"), None)
    if function is None:
        raise GridError(f"{path} has no build_model() function to pass grid values to")
    args = function.args
    positional = args.posonlyargs + args.args
    defaults = [NO_DEFAULT] * (len(positional) - len(args.defaults)) + list(args.defaults)
    named = list(zip(positional, defaults)) + list(zip(args.kwonlyargs, args.kw_defaults))
    parameters = {arg.arg: _literal(default) for arg, default in named}
    return parameters, args.kwarg is not None


def _literal(node):
    if node is NO_DEFAULT or node is None:
        return NO_DEFAULT
    try:
        return ast.literal_eval(node)
    except ValueError:
        return NO_DEFAULT  # a default computed by code: values are read as literals, untyped


def parse_grid(specs: list[str], signature: tuple[dict, bool] | None = None, flag: str = "--grid") -> dict[str, list]:
    """{'iterations': [0, 1, 2]} from ['iterations=0,1,2']; with a signature, names and value types are checked."""
    grid: dict[str, list] = {}
    for spec in specs:
        name, _, text = spec.partition("=")
        name = name.strip()
        if not _ or not name.isidentifier():
            raise GridError(f"{flag} {spec!r}: write NAME=V1,V2,... with NAME an argument of build_model(), e.g. {flag} iterations=0,1,2")
        if name in grid:
            raise GridError(f"{flag} gives {name!r} twice: list all its values in one {flag} {name}=V1,V2,...")
        if name in RESERVED:
            raise GridError(f"{flag} {name}: the harness sets {name} from the dataset; sweep another argument")
        default = NO_DEFAULT
        if signature is not None:
            parameters, takes_any = signature
            if name not in parameters and not takes_any:
                accepted = ", ".join(p for p in parameters if p not in RESERVED) or "none besides input_shape and num_classes"
                raise GridError(f"{flag} {name}: build_model() has no parameter {name!r} (it accepts: {accepted}); "
                                f"add `{name}=...` to its signature or sweep one of those")
            default = parameters.get(name, NO_DEFAULT)
        items = [item.strip() for item in text.split(",")]
        if not text.strip() or "" in items:
            raise GridError(f"{flag} {spec!r}: give one or more comma-separated values, e.g. {name}=1,2,5")
        values = [parse_value(name, item, default, flag) for item in items]
        if len(set(map(repr, values))) < len(values):
            raise GridError(f"{flag} {spec!r} lists a value twice")
        grid[name] = values
    return grid


def parse_value(name: str, text: str, default=NO_DEFAULT, flag: str = "--grid"):
    """`text` as the type of the parameter's default (int, float, bool, str); untyped: the literal it reads as."""
    words = {"true": True, "false": False, "none": None}
    if isinstance(default, bool):
        if text.lower() not in ("true", "false"):
            raise GridError(f"{flag} {name}: {text!r} is not true or false (the default of {name} is {default})")
        return words[text.lower()]
    if isinstance(default, (int, float)):
        kind = int if isinstance(default, int) else float
        try:
            return kind(text)
        except ValueError:
            example = "whole numbers" if kind is int else "numbers"
            raise GridError(f"{flag} {name}: {text!r} is not a number; {name} takes {example} (its default is {default!r})") from None
    if isinstance(default, str):
        return text
    if text.lower() in words:
        return words[text.lower()]
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def parse_kwargs(text: str, flag: str = "--eval-kwargs") -> dict:
    """{'iterations': 20, 'channels': 5} from 'iterations=20,channels=5' (values read as literals)."""
    kwargs = {}
    for item in text.split(","):
        name, equals, value = (part.strip() for part in item.partition("="))
        if not equals or not name.isidentifier() or not value:
            raise GridError(f"{flag} {text!r}: write NAME=VALUE[,NAME=VALUE...], e.g. {flag} iterations=20")
        if name in kwargs:
            raise GridError(f"{flag} gives {name!r} twice")
        kwargs[name] = parse_value(name, value, flag=flag)
    return kwargs


def grid_points(grid: dict, eval_grid: dict, defaults: dict) -> list[tuple[dict, dict]]:
    """(build_kwargs, eval_kwargs) for every combination; a deploy-time value equal to the trained one is the plain run."""
    points = []
    for values in itertools.product(*grid.values()):
        build = dict(zip(grid, values))
        for eval_values in itertools.product(*eval_grid.values()):
            deployed = dict(zip(eval_grid, eval_values))
            trained = {name: build.get(name, defaults.get(name, NO_DEFAULT)) for name in deployed}
            points.append((build, {} if deployed == trained else deployed))
    return points


def _format_grid(flag: str, grid: dict) -> list[str]:
    return [f"{flag} {name}={','.join(str(v) for v in values)}" for name, values in grid.items()]


# ---- sweep ------------------------------------------------------------------------------------

def cmd_sweep(args) -> int:
    from bench import data, plan, runner

    challenge = config.load_challenge(args)
    entry = Path(args.entry)
    submission = discover.read(entry)
    if not submission.ok:
        print(f"error: {submission.problem}", file=sys.stderr)
        return 2
    signature = factory_signature(entry)
    grid = parse_grid(args.grid, signature)
    eval_grid = parse_grid(args.eval_grid, signature, flag="--eval-grid")
    name = args.name or "_".join([submission.name, *grid])
    if not STUDY_NAME.fullmatch(name):
        raise GridError(f"--name {name!r}: use letters, digits, '_' and '-' only")
    try:
        fingerprint = data.load(challenge.dataset, challenge.data_dir, challenge.train_limit, challenge.test_limit).fingerprint()
    except data.DataError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2

    folder = Path(args.studies) / name
    settings = {dest: getattr(args, dest) for dest in RUN_FLAGS if getattr(args, dest, None) is not None}
    part = {"entry": entry.as_posix(), "grid": grid, "eval_grid": eval_grid, "monitor": args.monitor,
            "config": args.config, "settings": settings, "command": sweep_command(entry, grid, eval_grid, args, settings, name)}
    save_part(folder, name, part)  # before training: an interrupted sweep still has a report to regenerate

    seeds = list(range(challenge.seeds))
    runs = [run for build, deployed in grid_points(grid, eval_grid, signature[0])
            for run in plan.plan(challenge, [submission], fingerprint, seeds, build, deployed)]
    extra_job = {"monitor": args.monitor} if args.monitor else None
    records = runner.execute(challenge, runs, force=args.force, jobs=args.jobs, extra_job=extra_job)
    report = write_report(folder)
    not_ok = sum(r["status"] != "OK" for r in records)
    print(f"{len(records)} run(s), {not_ok} not OK; wrote {report}")
    return 0


def sweep_command(entry: Path, grid: dict, eval_grid: dict, args, settings: dict, name: str) -> str:
    words = ["python", "-m", "bench", "sweep", entry.as_posix()]
    words += [w for flag in _format_grid("--grid", grid) + _format_grid("--eval-grid", eval_grid) for w in flag.split(" ", 1)]
    if args.monitor:
        words += ["--monitor", str(args.monitor)]
    words += ["--name", name]
    if args.studies != DEFAULT_STUDIES:
        words += ["--studies", args.studies]
    if args.config != "pyproject.toml":
        words += ["--config", args.config]
    for dest, flag in RUN_FLAGS.items():
        if dest in settings:
            words += [flag, str(settings[dest])]
    return shlex.join(words)


def save_part(folder: Path, name: str, part: dict) -> dict:
    """Add the part to the study's spec, replacing an earlier part with the same entry and grids."""
    spec_path = folder / SPEC_FILE
    spec = json.loads(spec_path.read_text()) if spec_path.exists() else {"name": name, "parts": []}
    same = lambda p: (p["entry"], p["grid"], p["eval_grid"]) == (part["entry"], part["grid"], part["eval_grid"])
    spec["parts"] = [p for p in spec["parts"] if not same(p)] + [part]
    folder.mkdir(parents=True, exist_ok=True)
    spec_path.write_text(json.dumps(spec, indent=1) + "\n")
    return spec


# ---- reports ----------------------------------------------------------------------------------

def cmd_study(args) -> int:
    root = Path(args.studies)
    folders = [Path(n) if Path(n, SPEC_FILE).exists() else root / n for n in args.names] or sorted(p.parent for p in root.glob(f"*/{SPEC_FILE}"))
    if not folders:
        print(f"error: no studies in {root}/: run `python -m bench sweep ENTRY --grid NAME=V1,V2` first", file=sys.stderr)
        return 2
    for folder in folders:
        if not (folder / SPEC_FILE).exists():
            print(f"error: {folder} has no {SPEC_FILE}: give a study name under {root}/ or a study folder", file=sys.stderr)
            return 2
        print(f"wrote {write_report(folder)}")
    return 0


def write_report(folder: Path) -> Path:
    """README.md and its plots from the spec and the records alone."""
    spec = json.loads((folder / SPEC_FILE).read_text())
    lines = [f"# Study: {spec['name']}", "", "Produced by these commands (each trains only what is not cached yet, then rewrites this report):", ""]
    lines += ["```bash", *(part["command"] for part in spec["parts"]), "```", ""]
    lines += [f"Rewrite it from the records, without training: `python -m bench study {spec['name']}`. "
              f"Generated: do not edit by hand; the discussion lives in `{NOTES_FILE}`.", ""]
    missing = 0
    for index, part in enumerate(spec["parts"], start=1):
        section, part_missing = _part_section(folder, index, part)
        lines += section
        missing += part_missing
    notes = folder / NOTES_FILE
    if notes.exists():
        lines += ["## Discussion", "", notes.read_text().strip(), ""]
    if missing:
        print(f"note: {missing} run(s) of {folder} have no OK record yet: run the command(s) at the top of its README", file=sys.stderr)
    report = folder / "README.md"
    report.write_text("\n".join(lines))
    return report


def _part_section(folder: Path, index: int, part: dict) -> tuple[list[str], int]:
    challenge = config.load(part["config"], **part["settings"])
    entry = Path(part["entry"])
    submission = discover.read(entry)
    grid, eval_grid = part["grid"], part["eval_grid"]
    signature = factory_signature(entry) if entry.exists() else ({}, True)
    rows, monitored, shown = [], [], []
    for build, deployed in grid_points(grid, eval_grid, signature[0]):
        run_name = results.variant_name(submission.name, build, deployed)
        found = [results.read(results.record_path(challenge.results, challenge.board_name, run_name, seed)) for seed in range(challenge.seeds)]
        found = [r for r in found if r]
        shown += found
        stale = any(r.get("key", {}).get("submission") != submission.file_hash or r.get("key", {}).get("config") != challenge.protocol_hash() for r in found)
        trained = {name: build.get(name, signature[0].get(name, NO_DEFAULT)) for name in eval_grid}
        values = {**build, **{f"{name} at test": deployed.get(name, trained[name]) for name in eval_grid}}
        rows.append({**values, **_summary(found), "stale": stale})
        monitored += [r for r in found if r.get("monitor") and r["seed"] == 0]
    frame = pd.DataFrame(rows)
    value_columns = list(grid) + [f"{name} at test" for name in eval_grid]
    swept = [f"{name} = {', '.join(map(str, values))}" for name, values in grid.items()]
    swept += [f"{name} at test = {', '.join(map(str, values))}" for name, values in eval_grid.items()]
    lines = [f"## {index}. {entry.stem}: {'; '.join(swept)}", ""]
    lines += [f"`{part['command']}`", "", _setting_line(challenge, submission, shown), ""]
    lines += [_table(frame, value_columns), ""]
    if frame["stale"].any():
        lines += ["† trained on another version of the entry or under other settings than the current ones: rerun the command to refresh.", ""]
    varied = [c for c in value_columns if frame[c].astype(str).nunique() > 1]
    for column in varied:
        plot = f"part{index}_accuracy_vs_{_slug(column)}.png"
        if _plot_against(frame, column, [c for c in varied if c != column], folder / plot):
            lines += [f"![test accuracy against {column}]({plot})", ""]
    if frame["total_params"].nunique() > 1:
        plot = f"part{index}_accuracy_vs_params.png"
        if _plot_against_params(frame, value_columns, folder / plot):
            lines += [f"![test accuracy against parameters]({plot})", ""]
    if monitored:
        lines += _monitor_section(folder, monitored)
    missing = int((frame["seeds"] < challenge.seeds).sum())
    return lines, missing


def _summary(found: list[dict]) -> dict:
    ok = [r for r in found if r["status"] == "OK"]
    accuracy = pd.Series([r["test_accuracy"] for r in ok], dtype="float64")
    first = (ok or found or [{}])[0]
    bad = next((r for r in found if r["status"] != "OK"), None)
    return {
        "total_params": first.get("total_params"),
        "macs": first.get("macs"),
        "test_accuracy": accuracy.mean() if ok else None,
        "test_accuracy_std": accuracy.std(ddof=1) if len(ok) > 1 else 0.0,
        "seeds": len(ok),
        "epochs": pd.Series([r["epochs"] for r in ok], dtype="float64").mean() if ok else None,
        "train_seconds": pd.Series([r["train_seconds"] for r in ok], dtype="float64").mean() if ok else None,
        "problem": f"{bad['status']}: {(bad.get('message') or '').splitlines()[0] if bad.get('message') else ''}" if bad else "",
    }


def _setting_line(challenge: config.Challenge, submission, shown: list[dict]) -> str:
    versions = sorted({f"TensorFlow {r['versions'].get('tensorflow')}, Keras {r['versions'].get('keras')}, {r['versions'].get('cpu')}"
                       for r in shown if r.get("versions")})
    limits = "".join(f"; {what} limited to {n}" for what, n in (("training images", challenge.train_limit), ("test images", challenge.test_limit)) if n)
    # The summary, a failure's message and the monitor's layer names are the entry's text: each goes in as the board's
    # cells do (bench.leaderboard.cell), or a red team's layer name "[sign in](https://...)" was a link in the report.
    return (f"Entry `{submission.path.as_posix()}`: {cell((submission.summary or 'no summary').rstrip('.'))}. Dataset **{challenge.board_name}**{limits}; "
            f"the benchmark's protocol (validation split of {'the default size' if challenge.validation_size is None else challenge.validation_size}, early stopping on it, test split scored once) "
            f"with at most {challenge.max_epochs} epochs; {challenge.seeds} seed(s) per point, accuracy as mean ± sample std. "
            f"Versions: {'; '.join(versions) or '-'}.")


def _table(frame: pd.DataFrame, value_columns: list[str]) -> str:
    body = []
    for row in frame.to_dict("records"):
        if row["seeds"]:
            accuracy = f"{100 * row['test_accuracy']:.2f}" + (f" ± {100 * row['test_accuracy_std']:.2f}" if row["seeds"] > 1 else "")
        else:
            accuracy = cell(row["problem"]) or "not run"
        body.append([
            *(row[c] for c in value_columns),
            _integer(row["total_params"]), _integer(row["macs"]), accuracy + (" †" if row["stale"] else ""), row["seeds"],
            "-" if pd.isna(row["epochs"]) else f"{row['epochs']:g}", "-" if pd.isna(row["train_seconds"]) else f"{row['train_seconds']:.0f}",
        ])
    headers = [*value_columns, "params", "MACs/image", "test acc. %", "seeds", "epochs", "train s"]
    return tabulate(body, headers=headers, tablefmt="github", disable_numparse=True)


def _integer(value) -> str:
    return "-" if value is None or pd.isna(value) else f"{int(value):,}"


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_")


def _figure():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(7, 4.5), dpi=100)
    return plt, figure, axes


def _save(plt, figure, axes, path: Path):
    axes.set_ylabel("test accuracy %")
    axes.grid(True, alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, metadata={"Software": None})  # no metadata: the same records give the same bytes
    plt.close(figure)


def _plot_against(frame: pd.DataFrame, column: str, others: list[str], path: Path) -> bool:
    """Accuracy (mean, with the seeds' std as error bars) against one value, one line per combination of the others."""
    done = frame[frame["seeds"] > 0]
    if done.empty:
        return False
    plt, figure, axes = _figure()
    numeric = pd.api.types.is_numeric_dtype(frame[column])
    positions = {v: i for i, v in enumerate(dict.fromkeys(frame[column].astype(str)))}
    groups = done.groupby(others, sort=False) if others else [((), done)]
    for key, group in groups:
        x = group[column] if numeric else group[column].astype(str).map(positions)
        key = key if isinstance(key, tuple) else (key,)
        label = ", ".join(f"{name}={value}" for name, value in zip(others, key)) or None
        axes.errorbar(x, 100 * group["test_accuracy"], yerr=100 * group["test_accuracy_std"], marker="o", capsize=3, label=label)
    if not numeric:
        axes.set_xticks(list(positions.values()), list(positions))
    if others:
        axes.legend(fontsize=8)
    axes.set_xlabel(column)
    axes.set_title(f"test accuracy against {column}")
    _save(plt, figure, axes, path)
    return True


def _plot_against_params(frame: pd.DataFrame, value_columns: list[str], path: Path) -> bool:
    done = frame[frame["seeds"] > 0]
    if done.empty:
        return False
    plt, figure, axes = _figure()
    axes.errorbar(done["total_params"], 100 * done["test_accuracy"], yerr=100 * done["test_accuracy_std"], fmt="o", capsize=3)
    for row in done.to_dict("records"):
        label = ",".join(f"{c}={row[c]}" for c in value_columns if frame[c].astype(str).nunique() > 1)
        axes.annotate(label, (row["total_params"], 100 * row["test_accuracy"]), fontsize=7, xytext=(3, 3), textcoords="offset points")
    if done["total_params"].max() > 10 * done["total_params"].min():
        axes.set_xscale("log")
    axes.set_xlabel("total parameters")
    axes.set_title("test accuracy against parameters")
    _save(plt, figure, axes, path)
    return True


def _monitor_section(folder: Path, records: list[dict]) -> list[str]:
    lines = ["### Training monitors (seed 0)", "",
             "Gradient L2 norm of the first and the last layer with weights, on the fixed probe batch, "
             "before the first step and at the last measurement:", ""]
    body = []
    for record in records:
        data = record["monitor"]
        first, last = data["gradient_norm"][0], data["gradient_norm"][-1]
        body.append([record["run_name"], cell(data["layers"][0]), cell(data["layers"][-1]),
                     f"{first[0]:.3g} / {first[-1]:.3g}", f"{data['step'][-1]}", f"{last[0]:.3g} / {last[-1]:.3g}",
                     f"{data['probe_loss'][0]:.3f} → {data['probe_loss'][-1]:.3f}"])
    lines += [tabulate(body, headers=["run", "first layer", "last layer", "step 0: first / last", "last step",
                                      "last step: first / last", "probe loss"], tablefmt="github", disable_numparse=True), ""]
    for record in records:
        image = f"monitor_{_slug(record['run_name'])}.png"
        monitor.render(record["monitor"], folder / image, record["run_name"])
        lines += [f"![monitor heatmaps of {record['run_name']}]({image})", ""]
    return lines
