"""Render the leaderboard from the records under results/ alone: no TensorFlow, no training.

Same records in, byte-identical markdown out: rows are sorted on stable keys, numbers are
formatted explicitly, and nothing time-dependent is printed.
"""

from __future__ import annotations

import html
import json
import os
import re
from pathlib import Path

import pandas as pd
from tabulate import tabulate

from bench import config, plot, results, scoring
from bench.status import JAX_ENGINE, KERAS_ENGINE

# Column names of the CSV/JSON export: gradebooks and scripts read them, keep them stable.
EXPORT_COLUMNS = [
    "entry", "author", "status", "message", "total_params", "trainable_params", "test_accuracy",
    "test_accuracy_std", "seeds", "epochs", "train_seconds", "tier", "pareto", "macs", "tuned_trials", "summary",
    # bench.scoring: storage, uncertainty, and the challenge's rule ([tool.bench.scoring])
    "nonzero_params", "storage_bits", "test_accuracy_se", "group", "rank", "score", "passed", "failed_criteria",
    "macs_nonzero",
    # True for an entry whose seeds all gave the same predictions (see seeds_identical)
    "seeds_identical",
    # How the audit read the model (bench.audit): "rebuilt" from Keras's layers, or "custom code"; empty for older records
    "audit_path",
    # True when `macs` leaves out layers or operations the audit could not count (the record's notes name them)
    "macs_lower_bound",
]
# The flag on such an entry's row.
SEEDS_IDENTICAL = "seeds identical: the entry sets its own seed"
CUSTOM_CODE = "custom code"  # bench.audit.CUSTOM_CODE, without importing the audit (and TensorFlow) here
STATUS_ORDER = ["FAILED", "TIMEOUT", "OVER_BUDGET", "INVALID"]


def board_records(records: list[dict], challenge: config.Challenge) -> list[dict]:
    """The records this challenge's board shows: its dataset and protocol, plain entries, its seeds."""
    protocol_hash = challenge.protocol_hash()
    return [
        r for r in records
        if r.get("dataset") == challenge.board_name
        and not r.get("build_kwargs") and not r.get("eval_kwargs")
        and r.get("key", {}).get("config") == protocol_hash
        and r.get("seed", 0) < challenge.seeds
    ]


def board(records: list[dict], challenge: config.Challenge) -> pd.DataFrame:
    """One row per entry: mean over its seeds, its tier, and whether it is on the Pareto front."""
    rows, ok_runs = [], {}
    by_entry: dict[str, list[dict]] = {}
    for record in board_records(records, challenge):
        by_entry.setdefault(record["entry"], []).append(record)
    for entry, runs in sorted(by_entry.items()):
        runs.sort(key=lambda r: r["seed"])
        ok = [r for r in runs if r["status"] == "OK"]
        bad = [r for r in runs if r["status"] != "OK"]
        first = (bad or runs)[0]
        size = largest_sizes(runs, challenge.scoring.float_bits)
        identical = seeds_identical(ok)
        # Seeds that trained one model are one run: no spread to show, and one seed in the significance tests.
        accuracies = pd.Series([r["test_accuracy"] for r in (ok[:1] if identical else ok)], dtype="float64")
        ok_runs[entry] = {r["seed"]: r for r in (ok[:1] if identical else ok)}
        test_images = (ok[0].get("test_correct") or {}).get("images") if ok else None
        rows.append({
            "entry": entry,
            "author": first.get("author", ""),
            "status": first["status"],
            "message": (first.get("message") or "").splitlines()[0] if bad else "",
            "total_params": size["total_params"],
            "trainable_params": size["trainable_params"],
            "test_accuracy": round(float(accuracies.mean()), 6) if ok else None,
            # Sample standard deviation across seeds; 0 with a single seed; none where the seeds are identical.
            "test_accuracy_std": None if identical else round(float(accuracies.std(ddof=1)), 6) if len(ok) > 1 else 0.0 if ok else None,
            "seeds": len(ok),
            "epochs": round(float(pd.Series([r["epochs"] for r in ok]).mean()), 1) if ok else None,
            "train_seconds": round(float(pd.Series([r["train_seconds"] for r in ok]).mean()), 1) if ok else None,
            "tier": tier_of(size["total_params"], challenge.tiers),
            "pareto": False,
            "macs": size["macs"],
            "tuned_trials": int(first.get("tuned_trials") or 0),
            "summary": first.get("summary", ""),
            "nonzero_params": size["nonzero_params"],
            "macs_nonzero": size["macs_nonzero"],
            "storage_bits": size["storage_bits"],
            "test_accuracy_se": _rounded(scoring.standard_error(list(accuracies), test_images)),
            "seeds_identical": identical,
            # Custom code on any seed marks the row (a factory that knows its seed can be plain Keras on seed 0 alone).
            "audit_path": CUSTOM_CODE if any(r.get("audit_path") == CUSTOM_CODE for r in runs) else first.get("audit_path"),
            "macs_lower_bound": any(bool(r.get("macs_lower_bound")) for r in runs),
        })
    frame = pd.DataFrame(rows, columns=[c for c in EXPORT_COLUMNS if c not in RULE_COLUMNS])
    for column in ("total_params", "trainable_params", "seeds", "macs", "tuned_trials", "nonzero_params", "storage_bits", "macs_nonzero"):
        frame[column] = frame[column].astype("Int64")  # integers that may be missing, not floats
    frame["pareto"] = pareto_mask(frame)
    tier_names = [tier_of(t, challenge.tiers) for t in challenge.tiers] + [f"> {_short(challenge.tiers[-1])}"]
    ranked = scoring.rank_board(frame, ok_runs, challenge.scoring, tier_names)
    return ranked.reset_index(drop=True)[EXPORT_COLUMNS + ["section"]]


RULE_COLUMNS = ("group", "rank", "score", "passed", "failed_criteria")
SIZE_FIELDS = ("total_params", "trainable_params", "nonzero_params", "macs", "macs_nonzero")


def largest_sizes(runs: list[dict], float_bits: int) -> dict:
    """Each size column of an entry's row: the largest over its runs (None when no run has it). The seeds of one
    file may build different models (the factory can tell which seed it runs under), and the accuracy is their mean:
    a row that took seed 0's size counted a linear classifier for seeds that trained a network 250 times larger.
    Honest seeds differ only in their zero weights (`nonzero_params`, storage), by a few."""
    def largest(values):
        values = [v for v in values if v is not None]
        return max(values) if values else None

    sizes = {name: largest(r.get(name) for r in runs) for name in SIZE_FIELDS}
    sizes["storage_bits"] = largest(scoring.storage_bits(r.get("weight_tensors"), float_bits) for r in runs)
    return sizes


def seeds_identical(ok: list[dict]) -> bool:
    """Whether two or more OK runs of one entry all gave the same audited predictions (`predictions_sha256`, computed
    by the runner): the harness's seed changed nothing, so the entry sets its own. Records from before the runner
    stored the digest are never flagged."""
    digests = [r.get("predictions_sha256") for r in ok]
    return len(digests) >= 2 and all(digests) and len(set(digests)) == 1


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 6)


def tier_of(params: int | None, tiers) -> str:
    if params is None:
        return ""
    for limit in tiers:
        if params <= limit:
            return f"<= {_short(limit)}"
    return f"> {_short(tiers[-1])}"


def pareto_mask(frame: pd.DataFrame) -> list[bool]:
    """OK entries no other OK entry beats on both parameters (fewer or equal) and accuracy (higher or equal)."""
    ok = (frame["status"] == "OK").to_numpy()
    params = frame["total_params"].to_numpy(dtype="float64", na_value=float("nan"))
    accuracy = frame["test_accuracy"].to_numpy(dtype="float64", na_value=float("nan"))
    p, a = params[ok], accuracy[ok]
    # dominated[i]: some OK entry has params <= and accuracy >= entry i's, and is strictly better in one
    no_worse = (p[None, :] <= params[:, None]) & (a[None, :] >= accuracy[:, None])
    better = (p[None, :] < params[:, None]) | (a[None, :] > accuracy[:, None])
    dominated = (no_worse & better).any(axis=1)
    return [bool(keep) for keep in ok & ~dominated]


def render_markdown(frame: pd.DataFrame, records: list[dict], challenge: config.Challenge, plot_name: str | None) -> str:
    shown = board_records(records, challenge)
    versions = sorted({f"TensorFlow {r['versions'].get('tensorflow')}, Keras {r['versions'].get('keras')}, "
                       f"Python {r['versions'].get('python')}, {r['versions'].get('cpu')}" for r in shown if r.get("versions")})
    test_sets = sorted({r.get("test_set", "the dataset's standard test split") for r in shown})
    rl, es = challenge.reduce_lr, challenge.early_stopping
    lines = [
        "# Leaderboard",
        "",
        "Generated by `python -m bench evaluate` (re-render with `python -m bench leaderboard`) from the records in "
        f"`{challenge.results}/{challenge.board_name}/`. Do not edit by hand.",
        "",
        f"- Dataset: **{challenge.board_name}**; test set: {', '.join(test_sets) or '-'}"
        + (f"; training images limited to {challenge.train_limit}" if challenge.train_limit else "")
        + (f"; test images limited to {challenge.test_limit}" if challenge.test_limit else ""),
        *data_lines(shown),
        f"- Protocol: {_validation(challenge.validation_size)} carved (stratified) out of the training split; "
        f"model selection and early stopping on validation only; the test split is scored once, after training. "
        f"Up to {challenge.max_epochs} epochs; ReduceLROnPlateau({rl.monitor}, factor {rl.factor}, patience {rl.patience}, "
        f"min_delta {rl.min_delta}); EarlyStopping({es.monitor}, patience {es.patience}, min_delta {es.min_delta}, best weights restored). "
        f"Defaults for entries that do not compile themselves: {challenge.optimizer}, learning rate {challenge.learning_rate}, batch {challenge.batch_size}.",
        f"- Seeds per entry: {challenge.seeds}"
        + (f" (seed 0 alone is trained for entries above {challenge.one_seed_above:,} parameters)" if challenge.one_seed_above is not None and challenge.seeds > 1 else "")
        + f" (accuracy is the mean over the seeds that finished OK, ± its standard error); "
        f"parameter budget {challenge.max_params:,}; config hash `{challenge.protocol_hash()[:12]}`.",
        f"- Versions: {'; '.join(versions) or '-'}",
        sandbox_line(shown),
        engine_line(shown),
        "- ★ marks the Pareto front: no other entry has as few parameters and as high an accuracy.",
        rule_line(challenge.scoring),
        significance_line(challenge.scoring),
        site_line(),
        *([f"- ({SEEDS_IDENTICAL}): all of the entry's seeds gave the same predictions, so they are one run: its ± is that "
           "run's binomial error, as for one seed, and it counts as one seed in the tests above."] if frame["seeds_identical"].any() else []),
        "",
    ]
    ok = frame[frame["status"] == "OK"]
    for section in dict.fromkeys(ok["section"]):  # the rule's sections, in board order
        lines += [f"## {section}", "", _table(ok[ok["section"] == section], challenge.scoring), ""]
    if ok.empty:
        lines += ["No entry has finished OK yet.", ""]
    elif challenge.scoring.rule == "micronet" and ok["score"].isna().all():
        lines += [f"No scores: the reference entry {challenge.scoring.reference!r} has no OK row with storage and MACs on "
                  "this board (set `reference` in [tool.bench.scoring] to an entry that has).", ""]
    if plot_name and not ok.empty:
        lines += ["## Accuracy against parameters", "", f"![Pareto plot]({plot_name})", ""]
    bad = frame[frame["status"] != "OK"].copy()
    if not bad.empty:
        bad["order"] = bad["status"].map({s: i for i, s in enumerate(STATUS_ORDER)})
        bad = bad.sort_values(["order", "entry"])
        lines += ["## Entries that are not OK", ""]
        lines.append(tabulate(
            [[cell(r.entry), r.status, cell(r.message)] for r in bad.itertuples()],
            headers=["entry", "status", "reason"], tablefmt="github",
        ))
        lines.append("")
    return "\n".join(lines)


# Markdown punctuation that could turn an entry's text into a link or an image (`|` would end the cell).
MARKDOWN_PUNCTUATION = re.compile(r"([\\\[\]|])")


# What GitHub's markdown turns into a link without brackets (its autolink extension): a scheme's "://", "www."
# and an address's "@". A character reference in the middle leaves the text as it reads and no link. Every "www.":
# GitHub links one after "_" too, where a regex's \b sees no word boundary ("_www.example.org" was a link).
BARE_LINKS = re.compile(r"(?i)(://|www\.|@)")


def cell(text) -> str:
    """Free text (author, summary, message) as one markdown table cell and nothing more: lines joined, HTML
    escaped (no `<tr>` of an entry's making becomes a row, no `<img>` loads), brackets escaped (no link or
    image), bare addresses broken up (no autolink), pipes escaped."""
    if text is None or (not isinstance(text, str) and pd.isna(text)):
        return ""
    escaped = MARKDOWN_PUNCTUATION.sub(r"\\\1", html.escape(" ".join(str(text).split()), quote=False))
    return BARE_LINKS.sub(lambda found: {"://": "&#58;//", "@": "&#64;"}.get(found[0], found[0][:3] + "&#46;"), escaped)


def data_lines(shown: list[dict]) -> list[str]:
    """The data the shown records were trained and scored on (bench.arrays.describe), one line per distinct
    description; none for records made before records described their data."""
    lines = []
    for about in sorted({json.dumps(r["data"], sort_keys=True) for r in shown if r.get("data")}):
        about = json.loads(about)
        shape = about["input_shape"]
        size = "x".join(map(str, shape))
        example = (f"vectors of {shape[0]} features" if len(shape) == 1 else f"{size} images" if len(shape) in (2, 3)
                   else f"examples of shape {size}")
        classes = f"{about['num_classes']} classes" + (f" ({', '.join(about['classes'])})" if about.get("classes") else "")
        lines.append(f"- Data: {about.get('description') + '; ' if about.get('description') else ''}{example}, {classes}; "
                     f"{about['train']:,} training + {about['validation']:,} validation examples, {about['test']:,} test; "
                     f"from `{about['source']}`")
    return lines


def sandbox_line(shown: list[dict]) -> str:
    """Which sandbox the board's runs trained under (bench.sandbox); names the entries that had none."""
    unsandboxed = sorted({r["entry"] for r in shown if r.get("sandbox") != "bubblewrap"})
    if not shown:
        return "- Sandbox: no runs yet."
    if not unsandboxed:
        return "- Sandbox: every run trained in bubblewrap; its numbers come from the exported model, audited and scored by the harness."
    listed = ", ".join(unsandboxed[:8]) + (f" and {len(unsandboxed) - 8} more" if len(unsandboxed) > 8 else "")
    return (f"- Sandbox: **{len(unsandboxed)} of {len({r['entry'] for r in shown})} entries ran without a sandbox** "
            f"(or before the harness had one), so their code could reach the harness: {listed}.")


def engine_line(shown: list[dict]) -> str:
    """Which training engine (bench.engine) the board's runs used; names the entries that ran on model.fit."""
    trained = [r for r in shown if r.get("status") == "OK"]  # a run that raised records no engine
    if not trained:
        return "- Training engine: no runs have finished yet."
    entries = sorted({r["entry"] for r in trained})
    on_fit = sorted({r["entry"] for r in trained if r.get("engine", KERAS_ENGINE) != JAX_ENGINE})
    if len(on_fit) == len(entries):
        return "- Training engine: every run trained with Keras's `model.fit` (TensorFlow backend)."
    listed = ", ".join(on_fit) if on_fit else "none"
    return (f"- Training engine: {len(entries) - len(on_fit)} of {len(entries)} entries trained on the batch-minor JAX "
            f"engine (`bench.engine`: the entry's own model, compile call and callbacks); with Keras's `model.fit`: {listed}.")


def rule_line(rules: config.Scoring) -> str:
    """The board's header line naming the rule ([tool.bench.scoring]) and its constants."""
    if rules.rule == "tiers":
        return "- Ranking: by mean test accuracy within each parameter tier (`[tool.bench.scoring] rule = \"tiers\"`)."
    if rules.rule == "golf":
        return (f"- Ranking (golf): entries whose mean test accuracy{' less 1.96 standard errors' if rules.strict else ''} reaches "
                f"{100 * rules.target:.2f} % are ranked by fewest {rules.size.replace('_', ' ')}; the rest follow by accuracy.")
    if rules.rule == "micronet":
        return (f"- Ranking (MicroNet): among entries reaching {100 * rules.target:.2f} %, score = storage bits / {rules.reference}'s "
                f"+ MACs per image / {rules.reference}'s, lowest first (float32 weights counted as {rules.float_bits} bits).")
    if rules.rule == "threshold":
        criteria = [f"accuracy >= {100 * rules.target:.2f} %" if rules.target is not None else "",
                    f"params <= {rules.max_params:,}" if rules.max_params is not None else "",
                    f"MACs <= {rules.max_macs:,}" if rules.max_macs is not None else "",
                    f"epochs <= {rules.max_epochs:g}" if rules.max_epochs is not None else ""]
        return f"- Passing (threshold): {', '.join(c for c in criteria if c)}; the failed criteria are named."
    return (f"- Points: {rules.curve} from {100 * rules.baseline:.2f} % (0) to {100 * rules.target:.2f} % ({rules.full_points:g})"
            + (f", plus up to {rules.bonus:g} linearly up to {100 * rules.ceiling:.2f} %" if rules.bonus else "") + "; by mean test accuracy.")


def site_line() -> str:
    """Where the web board (bench.site) is: built from these records, published by the leaderboard workflow."""
    return ("- Web board (sortable, filterable, with each entry's training curves and the record history): "
            "`python -m bench site` writes it to [`site/index.html`](site/index.html); the leaderboard workflow publishes "
            "it on this repository's GitHub Pages, `https://OWNER.github.io/REPOSITORY/` ([README: Web board](README.md#web-board)).")


def significance_line(rules: config.Scoring) -> str:
    return (f"- ± is the standard error of the mean accuracy (seeds' std / sqrt(seeds); with one seed, the test set's binomial error). "
            f"grp: rows ranked by accuracy share a group, and a rank, with the row above unless the difference passes McNemar's test "
            f"on the test images (each shared seed) and Welch's t-test on the seeds' accuracies, every one at {rules.alpha:g} "
            f"after Holm's correction over the neighbour pairs of each table (scipy's distributions).")


def _table(rows: pd.DataFrame, rules: config.Scoring) -> str:
    body = []
    show_score = rules.rule in ("golf", "micronet", "points")
    for r in rows.itertuples():
        accuracy = f"{100 * r.test_accuracy:.2f}"
        if pd.notna(r.test_accuracy_se):
            accuracy += f" ± {100 * r.test_accuracy_se:.2f}"
        name = f"{r.entry} ★" if r.pareto else r.entry
        if r.tuned_trials:
            name += f" (tuned, {r.tuned_trials} trials)"
        if r.seeds_identical:
            name += f" ({SEEDS_IDENTICAL})"
        if r.audit_path == CUSTOM_CODE:
            name += " (custom code)"
        row = [r.rank, name, accuracy, r.group, r.seeds, f"{int(r.total_params):,}", _count(r.nonzero_params)]
        row += [f"{int(r.storage_bits):,} ({r.storage_bits / 32:,.0f})" if pd.notna(r.storage_bits) else "-"]
        row += [("≥ " if r.macs_lower_bound else "") + _count(r.macs)] + ([_count(r.macs_nonzero)] if rules.sparse_macs else []) + [f"{r.epochs:g}", f"{r.train_seconds:.0f}"]
        row += [f"{r.score:g}" if pd.notna(r.score) else "-"] if show_score else []
        row += [("yes" if r.passed else f"no: {r.failed_criteria}")] if rules.rule == "threshold" else []
        body.append(row + [cell(r.author) or "-", cell(r.summary)])
    headers = ["#", "entry", "test acc. %", "grp", "seeds", "params", "nonzero", "storage bits (/32)"]
    headers += ["MACs/image"] + (["MACs, zeros skipped"] if rules.sparse_macs else []) + ["epochs", "train s"] + (["score"] if show_score else []) + (["passed"] if rules.rule == "threshold" else [])
    return tabulate(body, headers=headers + ["author", "summary"], tablefmt="github", disable_numparse=True)


def _count(value) -> str:
    return f"{int(value):,}" if pd.notna(value) else "-"


def write(challenge: config.Challenge) -> Path:
    records = results.load_all(challenge.results, challenge.board_name)
    frame = board(records, challenge)
    target = Path(challenge.leaderboard)
    target.parent.mkdir(parents=True, exist_ok=True)
    plot_path = target.with_suffix(".png")
    has_plot = plot.plot(frame, plot_path, f"{challenge.board_name}: test accuracy against parameters", challenge.max_params, challenge.tiers)
    text = render_markdown(frame, records, challenge, plot_path.name if has_plot else None)
    # Whole or not at all: a failure while writing must not leave an empty board behind.
    partial = target.with_name(target.name + ".tmp")
    partial.write_text(text, encoding="utf-8", errors="replace")
    os.replace(partial, target)
    return target


def render_markdown_text(challenge: config.Challenge) -> str:
    records = results.load_all(challenge.results, challenge.board_name)
    frame = board(records, challenge)
    plot_path = Path(challenge.leaderboard).with_suffix(".png")
    return render_markdown(frame, records, challenge, plot_path.name if not frame[frame["status"] == "OK"].empty else None)


# A spreadsheet runs a cell that starts with one of these as a formula (=HYPERLINK(...), @SUM(...), +cmd|...); a tab or
# a carriage return starts one in some. OWASP's rule against CSV injection: put a single quote before such a cell.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
# Text that is one number is a number to the spreadsheet, never a formula: it stays as it is (-0.5).
ONE_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")


def gradebook_cell(value):
    """`value` as a gradebook export holds it: text a spreadsheet would run as a formula behind a single quote
    ("'=HYPERLINK(...)"); numbers, and text that is a single number, unchanged. Leading blanks don't hide a formula
    (" =1+1", a no-break space first): some spreadsheets trim them before they read the cell."""
    if isinstance(value, str) and value.lstrip().startswith(FORMULA_STARTS) and not ONE_NUMBER.fullmatch(value.strip()):
        return "'" + value
    return value


def gradebook_safe(frame):
    """`frame` (a pandas DataFrame) with every text cell passed through `gradebook_cell`; numeric columns untouched."""
    texts = [name for name in frame.columns if frame[name].dtype == object or pd.api.types.is_string_dtype(frame[name])]
    return frame.assign(**{name: frame[name].map(gradebook_cell) for name in texts})


def export(challenge: config.Challenge, fmt: str) -> str:
    return export_frame(board(results.load_all(challenge.results, challenge.board_name), challenge), fmt)


def export_frame(frame: pd.DataFrame, fmt: str) -> str:
    """A board (from `board`) as CSV or JSON text with the EXPORT_COLUMNS, in board order."""
    frame = frame[EXPORT_COLUMNS]
    if fmt == "csv":  # for spreadsheets: a cell an entry wrote (its AUTHOR, its summary) must not run as a formula
        return gradebook_safe(frame).to_csv(index=False)
    return json.dumps(json.loads(frame.to_json(orient="records")), indent=1)


def _validation(size) -> str:
    if size is None:  # validation_size left out: bench.data's default rule
        from bench.data import AUTO_VALIDATION_RULE

        return f"validation images ({AUTO_VALIDATION_RULE})"
    return f"{size:.0%} of the training images as validation images" if isinstance(size, float) else f"{size} validation images"


def _short(n: int) -> str:
    if n >= 1000 and n % 1000 == 0:
        return f"{n // 1000}k"
    return str(n)
