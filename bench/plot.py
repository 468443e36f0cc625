"""The leaderboard's figure: test accuracy against parameters, sized for a slide.

Parameters on a log axis that reaches the challenge's budget (a dashed line) and shows the tier limits of the
tables on its top edge; each entry's mean test accuracy with the same ± as the table (its standard error); the
Pareto front as stars joined by a step line. Labels never overlap (bench.labels places them); the right-hand
column holds the legend, the key to the entries that got a number instead of a name, and what is not plotted.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from bench import labels
from bench.labels import LABEL_GID, MARKER_POINTS, NUMBER_GID, STAR_POINTS  # noqa: F401 (LABEL_GID, NUMBER_GID: how tests find labels)

# 16:9 at 150 dpi: 2000 x 1125 pixels, sharp on a projector, fonts readable from the back of a classroom.
FIGURE_INCHES = (13.333, 7.5)
DPI = 150
STYLE = {"font.size": 14, "axes.titlesize": 20, "axes.labelsize": 16, "xtick.labelsize": 13, "ytick.labelsize": 13,
         "legend.fontsize": 12}
KEY_POINTS = 11
# The axes' place in the figure (fractions), fixed before labels are placed: a layout pass afterwards would move
# the points away from the spots their labels were checked against. The right-hand column holds legend and key.
AXES_BOX = (0.07, 0.11, 0.66, 0.74)  # left, bottom, width, height
COLUMN_LEFT = 0.75
# Entries given a label or number at most; a bigger board labels its best ones (laying out hundreds costs seconds).
MAX_LABELS = 60
KEY_LINES = 30
BUDGET_GID, FRONT_GID, ENTRIES_GID = "budget", "front", "entries"


def plot(frame: pd.DataFrame, path: Path, title: str, budget: int | None = None, tiers: tuple = ()) -> bool:
    """Write the figure of `frame`'s OK entries to `path`; False (and no file) when there is none to show."""
    figure = draw(frame, title, budget, tiers)
    if figure is None:
        path.unlink(missing_ok=True)  # a plot of records that are gone would contradict the board
        return False
    # No software/date metadata: the same records must give the same bytes.
    figure.savefig(path, dpi=DPI, metadata={"Software": None})
    import matplotlib.pyplot as plt

    plt.close(figure)
    return True


def draw(frame: pd.DataFrame, title: str, budget: int | None = None, tiers: tuple = ()):
    """The figure of `frame` (a board from bench.leaderboard.board), or None when no entry is OK."""
    ok = frame[frame["status"] == "OK"].sort_values(["total_params", "entry"])
    if ok.empty:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with plt.rc_context(STYLE):
        figure = plt.figure(figsize=FIGURE_INCHES, dpi=DPI)
        axes = figure.add_axes(AXES_BOX)
        params = ok["total_params"].to_numpy(dtype="float64")
        accuracy = 100 * ok["test_accuracy"].to_numpy(dtype="float64")
        spread = 100 * ok["test_accuracy_se"].to_numpy(dtype="float64", na_value=np.nan) if "test_accuracy_se" in ok else np.zeros(len(ok))
        spread = np.nan_to_num(spread)
        handles = _points(axes, ok, params, accuracy, spread)
        _limits(axes, params, accuracy, spread, budget)
        handles += _budget_and_tiers(axes, budget, tiers)
        axes.set_xlabel("parameters (log scale)")
        axes.set_ylabel("test accuracy % (mean over seeds)")
        axes.grid(True, which="major", alpha=0.35)
        axes.grid(True, which="minor", alpha=0.12)
        figure.suptitle(title, x=AXES_BOX[0], ha="left", y=0.975)
        legend = figure.legend(handles=handles, loc="upper left", bbox_to_anchor=(COLUMN_LEFT, AXES_BOX[1] + AXES_BOX[3] + 0.02),
                               frameon=False, borderaxespad=0)
        renderer = figure.canvas.get_renderer()
        legend_bottom = figure.transFigure.inverted().transform(legend.get_window_extent(renderer))[0][1]
        numbered, no_room = labels.place(axes, ok, params, accuracy, spread, renderer, MAX_LABELS)
        _key(figure, numbered, max(0, len(ok) - MAX_LABELS) + no_room, frame, legend_bottom - 0.03)
    return figure


def _points(axes, ok, params, accuracy, spread) -> list:
    container = axes.errorbar(params, accuracy, yerr=spread, fmt="o", markersize=MARKER_POINTS, color="tab:blue",
                              ecolor="tab:blue", elinewidth=1.5, capsize=4, zorder=3, gid=ENTRIES_GID,
                              label="entry: mean ± standard error")
    front = ok["pareto"].to_numpy(dtype=bool)
    axes.step(params[front], accuracy[front], where="post", color="tab:orange", linewidth=2, zorder=2)
    stars = axes.scatter(params[front], accuracy[front], marker="*", s=STAR_POINTS ** 2, color="tab:orange",
                         edgecolor="black", linewidth=0.6, zorder=4, gid=FRONT_GID,
                         label="Pareto front")
    return [container, stars]


def _limits(axes, params, accuracy, spread, budget) -> None:
    """x from half the smallest entry to twice the budget (or the biggest entry); y around the error bars with
    room above and below for labels."""
    axes.set_xscale("log")
    right = max(params.max(), budget or 0)
    axes.set_xlim(params.min() / 2, right * 2)
    low, high = float(np.min(accuracy - spread)), float(np.max(accuracy + spread))
    margin = max(0.15 * (high - low), 0.5)
    axes.set_ylim(low - margin, high + margin)


def _budget_and_tiers(axes, budget, tiers) -> list:
    handles = []
    if budget:
        handles.append(axes.axvline(budget, color="tab:red", linestyle="--", linewidth=2, zorder=1, gid=BUDGET_GID,
                                    label=f"budget: {budget:,} parameters"))
    left, right = axes.get_xlim()
    shown = [t for t in sorted(tiers) if left < t < right and t != budget]
    for tier in shown:
        axes.axvline(tier, color="grey", linestyle=":", linewidth=1.2, zorder=1)
    marks = sorted({*shown, *([budget] if budget and left < budget < right else [])})
    if marks:
        top = axes.secondary_xaxis("top")
        top.set_xticks(marks, [("budget " if m == budget else "≤ ") + _short(m) for m in marks])
        top.tick_params(axis="x", labelsize=12, colors="dimgrey")
        top.minorticks_off()
        if shown:
            handles.append(axes.plot([], [], color="grey", linestyle=":", linewidth=1.2, label="tier limits (top axis)")[0])
    return handles


def _short(n: int) -> str:
    for size, suffix in ((1_000_000, "M"), (1000, "k")):
        if n >= size and n % size == 0:
            return f"{n // size}{suffix}"
    return f"{n:,}"


def _key(figure, numbered, unlabelled, frame, top) -> None:
    """The numbered entries spelt out, and what the figure leaves out, in the right-hand column."""
    lines = [f"{number}: {name}" for number, name in numbered[:KEY_LINES]]
    if len(numbered) > KEY_LINES:
        lines.append(f"... and {len(numbered) - KEY_LINES} more")
    notes = ["error bars: the tables' ±, the standard", "error of the mean over seeds (one seed:", "the test set's binomial error)"]
    if unlabelled:
        notes.append(f"{unlabelled} entr{'y' if unlabelled == 1 else 'ies'} without a label")
    not_ok = int((frame["status"] != "OK").sum())
    if not_ok:
        notes.append(f"{not_ok} entr{'y' if not_ok == 1 else 'ies'} not OK, not plotted")
    text = ("\n".join(["numbered entries:", *lines]) + "\n\n" if lines else "") + "\n".join(notes)
    if text:
        figure.text(COLUMN_LEFT, top, text, va="top", ha="left", fontsize=KEY_POINTS, linespacing=1.35)
