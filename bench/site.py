"""`python -m bench site`: a static web board rendered from the records under results/ alone.

Like `leaderboard`, it imports no TensorFlow and trains nothing, and ranks with the challenge's own rule by
calling bench.leaderboard (board, export, header lines): the site and leaderboard.md cannot disagree.

The same records give byte-identical files: element ids are fixed, JSON keys are sorted, and the only dates
shown are the records' own `finished_at`. The pages work from `file://` and offline: the table library
(DataTables, from the `itables` wheel) and the plot library (`plotly.min.js`, from the `plotly` wheel) are
copied from the installed packages into `assets/`, so no page loads anything from outside the site.

A hidden test set's per-image correctness never reaches a page: nothing per image is written for any board.
"""

from __future__ import annotations

import html
import json
import math
import re
import shutil
import sys
from importlib import resources
from pathlib import Path

import pandas as pd

from bench import config, leaderboard, results

DEFAULT_OUT = "site"
OWN_ASSETS = ("site.css", "site.js")
# Entry names are Python module names; anything else (an old record) gets a name that is safe in a URL.
SAFE_NAME = re.compile(r"^[A-Za-z0-9_]+$")
NOT_OK_ORDER = {status: i for i, status in enumerate(leaderboard.STATUS_ORDER)}
# The board table's columns: (export column or derived key, header, CSS class).
TABLE_COLUMNS = [
    ("rank", "#", "num"), ("group", "grp", "num"), ("entry", "entry", ""), ("test_accuracy", "test acc. %", "num"),
    ("seeds", "seeds", "num"), ("total_params", "params", "num"), ("nonzero_params", "nonzero", "num"),
    ("storage_bits", "storage bits", "num"), ("macs", "MACs/image", "num"), ("epochs", "epochs", "num"),
    ("train_seconds", "train s", "num"), ("score", "score", "num"), ("passed", "passed", ""),
    ("tier", "tier", "nowrap"), ("pareto", "Pareto", ""), ("status", "status", ""), ("author", "author", ""),
    ("summary", "summary", "text"), ("message", "message", "text"),
]


def register(subparsers) -> None:
    """Add the `site` command to the command line (bench.cli.COMMAND_MODULES)."""
    site = subparsers.add_parser("site", help="write a static web board (sortable table, plots, curves, history) from results/")
    config.add_run_flags(site, with_paths=False, omit=("leaderboard",))
    site.add_argument("--out", default=DEFAULT_OUT, help=f"folder to write the site into (default: {DEFAULT_OUT}/)")
    site.set_defaults(handler=cmd_site, writes_results=False)  # reads the records, never writes them


def cmd_site(args) -> int:
    challenge = config.load_challenge(args)
    index = build(challenge, Path(args.out))
    print(f"wrote {index} (open it in a browser; it works offline)", file=sys.stdout)
    return 0


def build(challenge: config.Challenge, out: Path) -> Path:
    """Write the site for `challenge`'s records into `out`; returns the board page's path."""
    records = results.load_all(challenge.results, challenge.board_name)
    frame = leaderboard.board(records, challenge)
    rows = board_rows(frame)
    shown = leaderboard.board_records(records, challenge)
    out.mkdir(parents=True, exist_ok=True)
    write_assets(out / "assets")
    entries_dir = out / "entries"
    shutil.rmtree(entries_dir, ignore_errors=True)  # an entry whose records are gone must lose its page
    entries_dir.mkdir()
    runs = runs_by_entry(shown)
    for row in rows:
        write_text(entries_dir / f"{page_name(row['entry'])}.html", entry_page(row, runs.get(row["entry"], []), challenge))
    write_text(out / "history.html", history_page(rows, runs, challenge))
    write_text(out / "board.json", leaderboard.export_frame(frame, "json") + "\n")
    index = out / "index.html"
    write_text(index, board_page(frame, rows, records, challenge))
    return index


def write_text(path: Path, text: str) -> None:
    path.write_text(text, encoding="utf-8", newline="\n")  # the same bytes on every platform


# ---- data ---------------------------------------------------------------------------------------------

def board_rows(frame: pd.DataFrame) -> list[dict]:
    """The board's rows as plain values (the JSON export, so missing numbers are None), in board order."""
    rows = json.loads(leaderboard.export_frame(frame, "json"))
    for row, section in zip(rows, frame["section"]):
        row["section"] = section
    return rows


def runs_by_entry(shown: list[dict]) -> dict[str, list[dict]]:
    """The board's records per entry, by seed."""
    runs: dict[str, list[dict]] = {}
    for record in shown:
        runs.setdefault(record["entry"], []).append(record)
    return {entry: sorted(rs, key=lambda r: r.get("seed", 0)) for entry, rs in runs.items()}


def page_name(entry: str) -> str:
    if SAFE_NAME.match(entry):
        return entry
    return "entry_" + config.sha256_of_json(entry)[:16]


def ok_rows(rows: list[dict]) -> list[dict]:
    return [r for r in rows if r["status"] == "OK" and r["total_params"] is not None and r["test_accuracy"] is not None]


# ---- assets -------------------------------------------------------------------------------------------

def write_assets(folder: Path) -> None:
    """The libraries, from their installed wheels, and this site's own CSS and JS."""
    folder.mkdir(parents=True, exist_ok=True)
    write_text(folder / "datatables.js", datatables_script())
    shutil.copyfile(library_file("itables", "html/dt_bundle.css"), folder / "datatables.css")
    shutil.copyfile(library_file("plotly", "package_data/plotly.min.js"), folder / "plotly.min.js")
    for name in OWN_ASSETS:
        write_text(folder / name, resources.files("bench").joinpath("site_assets", name).read_text(encoding="utf-8"))


def library_file(package: str, path: str) -> Path:
    """A file shipped inside an installed package; a clear error when the package is missing."""
    try:
        located = resources.files(package).joinpath(path)
    except ModuleNotFoundError as error:
        raise config.ConfigError(f"`python -m bench site` needs the {package!r} package: pip install -e . "
                                 "(it is a dependency in pyproject.toml)") from error
    if not located.is_file():
        raise config.ConfigError(f"{package} no longer ships {path}: pin the version named in pyproject.toml")
    return Path(str(located))


def datatables_script() -> str:
    """itables' DataTables bundle as a classic script. The wheel ships it as an ES module, and browsers refuse
    module scripts loaded from `file://`; its single `export{a as B,...}` becomes `window.dt_for_itables`."""
    text = library_file("itables", "html/dt_bundle.js").read_text(encoding="utf-8")
    exports = re.findall(r"export\s*\{([^}]*)\}", text)
    if len(exports) != 1:
        raise config.ConfigError("itables' dt_bundle.js no longer ends with one export list: pin the version named in pyproject.toml")
    names = [part.split(" as ") for part in exports[0].split(",")]
    table = ",".join(f"{json.dumps(alias.strip())}:{local.strip()}" for local, alias in names)
    body = re.sub(r"export\s*\{[^}]*\};?", f"window.dt_for_itables={{{table}}};", text)
    return '(function(){"use strict";\n' + body + "\n})();\n"


# ---- page frame ---------------------------------------------------------------------------------------

def esc(value) -> str:
    """Any text from a record (an entry wrote its author and summary) as HTML text."""
    return html.escape("" if value is None else str(value), quote=True)


def json_script(element_id: str, value) -> str:
    """Data for site.js, inline: `<` escaped so no text in a record can close the script element."""
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=False).replace("<", "\\u003c")
    return f'<script type="application/json" id="{element_id}">{text}</script>'


def page(title: str, body: str, depth: int, libraries: tuple[str, ...]) -> str:
    """A whole HTML page; `depth` is how many folders below the site root it lives (for relative links)."""
    root = "../" * depth
    styles = "".join(f'<link rel="stylesheet" href="{root}assets/{name}">' for name in ("datatables.css", "site.css")
                     if name == "site.css" or "datatables.js" in libraries)
    scripts = "".join(f'<script src="{root}assets/{name}"></script>' for name in (*libraries, "site.js"))
    nav = (f'<nav><a href="{root}index.html">Board</a> <a href="{root}history.html">History</a> '
           f'<a href="{root}board.json">board.json</a></nav>')
    return (f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">\n<title>{esc(title)}</title>\n'
            f"{styles}\n</head>\n<body>\n{nav}\n<main>\n{body}\n</main>\n{scripts}\n</body>\n</html>\n")


def markdown_line(line: str) -> str:
    """One line of leaderboard.md's header as HTML: its **bold** and `code`, the rest escaped."""
    text = esc(line.removeprefix("- "))
    text = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", text)
    return re.sub(r"`(.+?)`", r"<code>\1</code>", text)


def protocol_header(frame: pd.DataFrame, records: list[dict], challenge: config.Challenge) -> str:
    """leaderboard.md's own header (dataset, protocol, seeds, versions, rule), so both say the same."""
    text = leaderboard.render_markdown(frame, records, challenge, plot_name=None)
    bullets, shown = [], 0
    for line in text.splitlines()[4:]:  # after the title and the "Generated by" line
        if line.startswith("## ") or line.startswith("No entry"):
            break
        if line.startswith("- ") and "Web board" not in line:
            bullets.append(f"<li>{markdown_line(line)}</li>")
            shown = len(bullets) if line.startswith("- Seeds per entry") else shown
    # The dataset (and its data line, when the records describe it), protocol and seeds first; the rest (versions,
    # sandbox, rule, statistics) one click away.
    return ('<ul class="protocol">' + "".join(bullets[:shown]) + "</ul>"
            + '<details class="protocol"><summary>Versions, sandbox, engine, ranking rule and statistics</summary>'
            + '<ul class="protocol">' + "".join(bullets[shown:]) + "</ul></details>")


# ---- the board page -----------------------------------------------------------------------------------

def board_page(frame: pd.DataFrame, rows: list[dict], records: list[dict], challenge: config.Challenge) -> str:
    body = (f"<h1>Leaderboard: {esc(challenge.board_name)}</h1>\n{protocol_header(frame, records, challenge)}\n"
            f"{filters(rows)}\n{board_table(rows, challenge)}\n"
            '<h2>Accuracy against parameters</h2>\n<div id="board-plot" class="plot"></div>\n'
            f"{json_script('board-plot-figure', board_figure(rows, challenge))}")
    return page(f"{challenge.board_name} leaderboard", body, 0, ("datatables.js", "plotly.min.js"))


def filters(rows: list[dict]) -> str:
    """Selects for tier, status and Pareto; site.js applies them and keeps them in the URL's #fragment."""
    tiers = list(dict.fromkeys(r["tier"] for r in rows if r["tier"]))
    statuses = sorted({r["status"] for r in rows}, key=lambda s: (s != "OK", NOT_OK_ORDER.get(s, 99), s))

    def select(name: str, label: str, values: list[str]) -> str:
        options = '<option value="">all</option>' + "".join(f'<option value="{esc(v)}">{esc(v)}</option>' for v in values)
        return f'<label>{label} <select id="filter-{name}" data-column="{name}">{options}</select></label>'

    return ('<div class="filters">' + select("tier", "tier", tiers) + select("status", "status", statuses)
            + select("pareto", "Pareto front", ["yes", "no"]) + "</div>")


def board_table(rows: list[dict], challenge: config.Challenge) -> str:
    columns = shown_columns(challenge)
    head = "".join(f'<th class="{css}" data-key="{key}">{esc(title)}</th>' for key, title, css in columns)
    body = "".join(f'<tr id="row-{page_name(r["entry"])}">' + "".join(table_cell(key, r) for key, _, _ in columns) + "</tr>"
                   for r in rows)
    return f'<table id="board" class="display compact"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def shown_columns(challenge: config.Challenge) -> list[tuple[str, str, str]]:
    """Every column, less the rule's columns this rule leaves empty (score, passed)."""
    rule = challenge.scoring.rule
    hidden = ({"score"} if rule not in ("golf", "micronet", "points") else set()) | ({"passed"} if rule != "threshold" else set())
    return [c for c in TABLE_COLUMNS if c[0] not in hidden]


def table_cell(key: str, row: dict) -> str:
    """One cell: what it shows, `data-order` for sorting by the number, `data-search` for the exact filters."""
    value = row.get(key)
    if key == "entry":
        marks = " ★" if row["pareto"] else ""
        return f'<td class="nowrap" data-order="{esc(value)}"><a href="entries/{page_name(value)}.html">{esc(value)}</a>{marks}</td>'
    if key == "test_accuracy":
        if value is None:
            return '<td class="num" data-order="-1">-</td>'
        se = row.get("test_accuracy_se")
        shown = f"{100 * value:.2f}" + (f" ± {100 * se:.2f}" if se is not None else "")
        return f'<td class="num" data-order="{value}">{shown}</td>'
    if key in ("pareto", "passed"):
        word = "" if value is None else "yes" if value else "no"
        text = ("★" if value else "") if key == "pareto" else (word if value or value is None else f"no: {row.get('failed_criteria') or ''}")
        return f'<td data-search="{word}" data-order="{word}">{esc(text)}</td>'
    if key in ("tier", "status"):
        return f'<td class="nowrap" data-search="{esc(value)}">{esc(value)}</td>'
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        prefix = "≥ " if key == "macs" and row.get("macs_lower_bound") else ""
        return f'<td class="num" data-order="{value}">{prefix}{number(key, value)}</td>'
    if value is None and TABLE_KINDS.get(key) == "num":
        return '<td class="num" data-order="-1">-</td>'  # missing numbers sort below every real one
    css = f' class="{TABLE_KINDS[key]}"' if TABLE_KINDS.get(key) else ""
    return f"<td{css}>{esc(' '.join(str(value or '').split()))}</td>"


TABLE_KINDS = {key: css for key, _, css in TABLE_COLUMNS}


def number(key: str, value) -> str:
    if key in ("epochs",):
        return f"{value:g}"
    if key == "train_seconds":
        return f"{value:.0f}"
    if key == "score":
        return f"{value:g}"
    return f"{int(value):,}"


def board_figure(rows: list[dict], challenge: config.Challenge) -> dict:
    """Plotly's figure: every OK entry with its SE bar, the Pareto front as a step line, the budget and tiers."""
    ok = sorted(ok_rows(rows), key=lambda r: (r["total_params"], r["entry"]))
    front = [r for r in ok if r["pareto"]]
    points = {
        "type": "scatter", "mode": "markers", "name": "entries",
        "x": [r["total_params"] for r in ok], "y": [round(100 * r["test_accuracy"], 4) for r in ok],
        "error_y": {"type": "data", "array": [round(100 * (r["test_accuracy_se"] or 0), 4) for r in ok], "visible": True},
        "text": [r["entry"] for r in ok], "customdata": [f"entries/{page_name(r['entry'])}.html" for r in ok],
        "marker": {"size": 8, "color": ["#d95f02" if r["pareto"] else "#1b6ca8" for r in ok]},
        "hovertemplate": "<b>%{text}</b><br>%{x:,} parameters<br>%{y:.2f} % ± %{error_y.array:.2f}<extra></extra>",
    }
    line = {"type": "scatter", "mode": "lines", "name": "Pareto front", "hoverinfo": "skip",
            "x": [r["total_params"] for r in front], "y": [round(100 * r["test_accuracy"], 4) for r in front],
            "line": {"shape": "hv", "color": "#d95f02"}}
    limits = [(t, f"≤ {leaderboard._short(t)}", "dot", "#999") for t in challenge.tiers if t < challenge.max_params]
    limits.append((challenge.max_params, f"budget {challenge.max_params:,}", "dash", "#c00"))
    return {"data": [points, line], "layout": {
        "xaxis": {"type": "log", "title": {"text": "total parameters (log scale)"}},
        "yaxis": {"title": {"text": "test accuracy %"}},
        "shapes": [{"type": "line", "xref": "x", "yref": "paper", "x0": x, "x1": x, "y0": 0, "y1": 1,
                    "line": {"dash": dash, "color": color, "width": 1}} for x, _, dash, color in limits],
        # Plotly places annotations on a log axis by log10 of the value (shapes take the value itself).
        "annotations": [{"x": round(math.log10(x), 6), "xref": "x", "yref": "paper", "y": 1, "yanchor": "bottom", "text": text,
                         "showarrow": False, "font": {"size": 10, "color": color}} for x, text, _, color in limits],
        "hovermode": "closest", "margin": {"t": 40}, "legend": {"x": 0.99, "xanchor": "right", "y": 0.02},
    }}


# ---- an entry's page ----------------------------------------------------------------------------------

SEED_COLUMNS = ("seed", "status", "test acc. %", "val acc. %", "epochs", "train s", "finished", "engine", "sandbox", "notes")


def entry_page(row: dict, runs: list[dict], challenge: config.Challenge) -> str:
    entry = row["entry"]
    first = runs[0] if runs else {}
    body = [f"<h1>{esc(entry)}</h1>",
            f'<p class="summary">{esc(row.get("summary"))}</p>',
            f'<p>by {esc(row.get("author") or "-")}; {esc(row["status"])}'
            + (f': {esc(row["message"])}' if row.get("message") else "")
            + (f'; rank {row["rank"]} in {esc(row["section"])}' if row.get("rank") is not None else "") + "</p>",
            "<h2>Seeds</h2>", seeds_table(runs),
            "<h2>Training curves</h2>", curves(runs),
            "<h2>Size and compute</h2>", size_table(row, first),
            "<h2>Reproduce</h2>", f"<pre><code>{esc(reproduce_command(first, entry))}</code></pre>",
            f"<p>Trains seeds 0 to {challenge.seeds - 1} with the challenge's [tool.bench] settings (config hash "
            f"<code>{challenge.protocol_hash()[:12]}</code>); <code>--force</code> retrains runs that are already recorded.</p>"]
    return page(f"{entry}: {challenge.board_name} leaderboard", "\n".join(body), 1, ("plotly.min.js",))


def seeds_table(runs: list[dict]) -> str:
    head = "".join(f"<th>{esc(c)}</th>" for c in SEED_COLUMNS)
    rows = []
    for r in runs:
        cells = [r.get("seed"), r.get("status"), percent(r.get("test_accuracy")), percent(r.get("val_accuracy")),
                 r.get("epochs"), seconds(r.get("train_seconds")), r.get("finished_at"), r.get("engine"), r.get("sandbox"),
                 run_notes(r)]
        rows.append("<tr>" + "".join(f"<td>{esc('-' if c is None else c)}</td>" for c in cells) + "</tr>")
    return f'<table class="plain" id="seeds"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>'


def run_notes(run: dict) -> str:
    """A run's notes, or the first line of why it is not OK."""
    notes = "; ".join(str(n) for n in run.get("notes") or [])
    return notes or ((run.get("message") or "").splitlines() or [""])[0]


def percent(value) -> str | None:
    return None if value is None else f"{100 * value:.2f}"


def seconds(value) -> str | None:
    return None if value is None else f"{value:.0f}"


def curves(runs: list[dict]) -> str:
    """One plot per seed with a recorded history: loss and val_loss, val_accuracy, the learning-rate cuts."""
    parts = []
    for r in runs:
        history = r.get("history") or {}
        if not history.get("loss"):
            continue
        element = f"curves-seed{r.get('seed', 0)}"
        parts.append(f'<h3>Seed {r.get("seed", 0)}</h3><div id="{element}" class="plot curves"></div>'
                     + json_script(f"{element}-figure", curve_figure(history)))
    return "\n".join(parts) or "<p>No run of this entry recorded a training history.</p>"


def rounded(values: list) -> list:
    """Six significant digits: the curves' JSON stays small, and the plot looks the same."""
    return [None if v is None else float(f"{v:.6g}") for v in values]


def curve_figure(history: dict) -> dict:
    """Loss and val_loss (log axis) with val_accuracy on the right; below, the learning rate as a step line,
    its cuts (ReduceLROnPlateau) marked through both panels."""
    epochs = list(range(1, len(history["loss"]) + 1))
    data = [{"type": "scatter", "mode": "lines", "name": name, "x": epochs, "y": rounded(history[name]), "yaxis": "y"}
            for name in ("loss", "val_loss") if history.get(name)]
    if history.get("val_accuracy"):
        data.append({"type": "scatter", "mode": "lines", "name": "val_accuracy", "x": epochs,
                     "y": rounded(history["val_accuracy"]), "yaxis": "y2"})
    rates = history.get("learning_rate") or []
    if rates:
        data.append({"type": "scatter", "mode": "lines", "name": "learning rate", "x": epochs, "y": rounded(rates),
                     "yaxis": "y3", "line": {"shape": "hv", "color": "#777"}})
    return {"data": data, "layout": {
        "xaxis": {"title": {"text": "epoch"}, "anchor": "y3"},
        "yaxis": {"title": {"text": "loss"}, "type": "log", "domain": [0.3, 1]},
        "yaxis2": {"title": {"text": "val_accuracy"}, "overlaying": "y", "side": "right", "type": "linear", "tickformat": ".1%", "tickmode": "auto",
                   "showgrid": False},
        "yaxis3": {"title": {"text": "lr"}, "type": "log", "domain": [0, 0.2], "dtick": 1, "exponentformat": "power"},
        "shapes": [{"type": "line", "xref": "x", "yref": "paper", "x0": e, "x1": e, "y0": 0, "y1": 1,
                    "line": {"dash": "dot", "color": "#aaa", "width": 1}} for e, _ in learning_rate_cuts(rates)],
        "margin": {"t": 20}, "legend": {"orientation": "h", "y": -0.2}, "hovermode": "x unified",
    }}


def learning_rate_cuts(rates: list) -> list[tuple[int, float]]:
    """(epoch, new rate) for each epoch whose learning rate is below the one before it (ReduceLROnPlateau)."""
    return [(i + 1, float(f"{rates[i]:.6g}")) for i in range(1, len(rates))
            if rates[i] is not None and rates[i - 1] is not None and rates[i] < rates[i - 1] * (1 - 1e-6)]


def size_table(row: dict, first: dict) -> str:
    facts = [("total parameters", row.get("total_params")), ("trainable parameters", row.get("trainable_params")),
             ("nonzero parameters", row.get("nonzero_params")), ("storage bits", row.get("storage_bits")),
             ("MACs per image" + (" (a lower bound)" if row.get("macs_lower_bound") else ""), row.get("macs")),
             ("MACs, zeros skipped", row.get("macs_nonzero")), ("audit", row.get("audit_path"))]
    cells = "".join(f"<tr><th>{esc(name)}</th><td>{esc(f'{v:,}' if isinstance(v, int) else '-' if v is None else v)}</td></tr>"
                    for name, v in facts)
    tensors = first.get("weight_tensors") or []
    tensor_rows = "".join("<tr>" + "".join(f"<td>{esc(v)}</td>" for v in (i, *t)) + "</tr>" for i, t in enumerate(tensors))
    tensor_table = ('<h3>Weight tensors</h3><table class="plain"><thead><tr><th>#</th><th>dtype</th><th>elements</th>'
                    f"<th>nonzero</th><th>bits</th></tr></thead><tbody>{tensor_rows}</tbody></table>") if tensors else ""
    return f'<table class="plain facts">{cells}</table>{tensor_table}'


def reproduce_command(first: dict, entry: str) -> str:
    path = first.get("submission_path") or f"submissions/{entry}.py"
    return f"python -m bench evaluate {path} --force"


# ---- history ------------------------------------------------------------------------------------------

def history_page(rows: list[dict], runs: dict[str, list[dict]], challenge: config.Challenge) -> str:
    progressions = record_progressions(rows, runs, challenge.tiers)
    table_rows = "".join(
        f'<tr><td>{esc(tier)}</td><td>{esc(when)}</td><td><a href="entries/{page_name(entry)}.html">{esc(entry)}</a></td>'
        f'<td class="num">{100 * acc:.2f}</td><td class="num">{params:,}</td><td>{esc(author)}</td></tr>'
        for tier, steps in progressions.items() for when, entry, acc, params, author in steps)
    body = ("<h1>Record history</h1>\n<p>The best mean test accuracy under each parameter tier over time; an entry "
            "counts from when the last of its seeds on the board finished (its records' <code>finished_at</code>).</p>\n"
            '<div id="history-plot" class="plot"></div>\n'
            f"{json_script('history-plot-figure', history_figure(progressions))}\n<h2>Record holders</h2>\n"
            '<table class="plain" id="holders"><thead><tr><th>tier</th><th>from</th><th>entry</th><th>test acc. %</th>'
            f"<th>params</th><th>author</th></tr></thead><tbody>{table_rows}</tbody></table>")
    return page(f"{challenge.board_name} record history", body, 0, ("plotly.min.js",))


def record_progressions(rows: list[dict], runs: dict[str, list[dict]], tiers) -> dict[str, list[tuple]]:
    """Per tier ("<= 1k": every entry of at most 1,000 parameters), each entry that beat the best before it:
    (finished_at, entry, accuracy, params, author), oldest first."""
    timed = []
    for row in ok_rows(rows):
        finished = [r.get("finished_at") for r in runs.get(row["entry"], []) if r.get("status") == "OK" and r.get("finished_at")]
        if finished:
            timed.append((max(finished), row["entry"], row["test_accuracy"], row["total_params"], row.get("author") or ""))
    timed.sort()
    progressions = {}
    for limit in tiers:
        best, steps = None, []
        for item in timed:
            if item[3] <= limit and (best is None or item[2] > best):
                best = item[2]
                steps.append(item)
        if steps:
            progressions[f"<= {leaderboard._short(limit)}"] = steps
    return progressions


def history_figure(progressions: dict[str, list[tuple]]) -> dict:
    last = max((s[0] for steps in progressions.values() for s in steps), default=None)
    data = []
    for tier, steps in progressions.items():
        x = [s[0] for s in steps] + [last]  # the line runs on to the newest record: the record still stands
        y = [round(100 * s[2], 4) for s in steps] + [round(100 * steps[-1][2], 4)]
        data.append({"type": "scatter", "mode": "lines+markers", "name": tier, "x": x, "y": y, "line": {"shape": "hv"},
                     "text": [s[1] for s in steps] + [steps[-1][1]],
                     "hovertemplate": "<b>%{text}</b><br>%{y:.2f} %<br>%{x}<extra>" + html.escape(tier) + "</extra>"})
    return {"data": data, "layout": {"xaxis": {"title": {"text": "finished at"}, "type": "date"},
                                     "yaxis": {"title": {"text": "best test accuracy %"}},
                                     "margin": {"t": 30}, "hovermode": "closest"}}
