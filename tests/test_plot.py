"""The leaderboard's figure (bench.plot): labels that never overlap, the budget on the axis, the tables' error bars."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from test_leaderboard import CHALLENGE, RECORDS, record

from bench import leaderboard, plot

BUDGET = CHALLENGE.max_params


def drawn(records, budget=BUDGET, tiers=CHALLENGE.tiers):
    frame = leaderboard.board(records, CHALLENGE)
    figure = plot.draw(frame, "test", budget, tiers)
    return frame, figure, (figure.axes[0] if figure else None)


def placed(figure, gids=(plot.LABEL_GID, plot.NUMBER_GID)):
    return [t for t in figure.axes[0].texts if t.get_gid() in gids]


@pytest.fixture
def class_of_thirty():
    """30 students' variations of one model: a few parameters and a few tenths of a percent apart, three seeds each."""
    rng = np.random.default_rng(0)
    return [record(f"student_{i:02d}_convnet", seed, 1200 + int(rng.integers(0, 40)), float(0.96 + rng.normal(0, 0.002)))
            for i in range(30) for seed in range(3)]


def test_thirty_similar_entries_get_labels_that_do_not_overlap_and_each_is_named(class_of_thirty):
    frame, figure, axes = drawn(class_of_thirty)
    renderer = figure.canvas.get_renderer()
    boxes = [(t.get_text(), t.get_window_extent(renderer)) for t in placed(figure)]
    assert len(boxes) == 30  # one label or number per entry
    for (a, box_a), (b, box_b) in itertools.combinations(boxes, 2):
        assert not box_a.overlaps(box_b), f"{a!r} overlaps {b!r}"
    area = axes.get_window_extent(renderer)
    assert all(area.x0 <= box.x0 and box.x1 <= area.x1 and area.y0 <= box.y0 and box.y1 <= area.y1 for _, box in boxes)
    named = {t.get_text() for t in placed(figure, (plot.LABEL_GID,))}
    numbers = {t.get_text() for t in placed(figure, (plot.NUMBER_GID,))}
    key = "\n".join(t.get_text() for t in figure.texts)
    in_key = {line.split(": ", 1)[1] for line in key.splitlines() if line.split(": ", 1)[0] in numbers}
    assert named.isdisjoint(in_key) and named | in_key == set(frame["entry"])
    assert named, "the front and the best entries get their names, not numbers"


def test_the_budget_is_a_line_at_its_value_and_the_axis_reaches_past_it():
    _, figure, axes = drawn(RECORDS, budget=1_000_000)
    budget = next(line for line in axes.lines if line.get_gid() == plot.BUDGET_GID)
    assert list(budget.get_xdata()) == [1_000_000, 1_000_000]
    left, right = axes.get_xlim()
    assert axes.get_xscale() == "log" and left < 90 and right > 1_000_000  # the smallest entry has 90 parameters
    assert "budget: 1,000,000 parameters" in [t.get_text() for t in figure.legends[0].get_texts()]
    _, _, small = drawn(RECORDS, budget=10_000_000)
    assert small.get_xlim()[1] > 10_000_000


def test_error_bars_are_the_tables_standard_error_and_the_front_is_starred():
    frame, figure, axes = drawn(RECORDS)
    container = next(c for c in axes.containers if c.get_label().startswith("entry"))
    ok = frame[frame["status"] == "OK"].sort_values(["total_params", "entry"])
    _, _, (bars,) = container.lines
    heights = [segment[1][1] - segment[0][1] for segment in bars.get_segments()]
    expected = 2 * 100 * ok["test_accuracy_se"].fillna(0).to_numpy()
    assert np.allclose(heights, expected) and max(heights) > 0
    table = leaderboard.render_markdown(frame, RECORDS, CHALLENGE, None)
    small_good = ok.set_index("entry").loc["small_good"]
    assert f"{100 * small_good.test_accuracy:.2f} ± {100 * small_good.test_accuracy_se:.2f}" in table
    stars = next(c for c in axes.collections if c.get_gid() == plot.FRONT_GID)
    assert sorted(map(tuple, stars.get_offsets())) == sorted(zip(ok[ok["pareto"]]["total_params"], 100 * ok[ok["pareto"]]["test_accuracy"]))


def test_one_entry_failed_entries_and_none(tmp_path):
    _, figure, axes = drawn([record("only", 0, 450, 0.95)])
    assert [t.get_text() for t in placed(figure)] == ["only"]
    low, high = axes.get_ylim()
    assert low < 95 < high
    _, figure, axes = drawn([record("only", 0, 450, 0.95)], budget=None, tiers=())
    assert [t.get_text() for t in placed(figure)] == ["only"] and not any(line.get_gid() == plot.BUDGET_GID for line in axes.lines)
    _, figure, _ = drawn([record("a", 0, 100, 0.9), record("b", 0, 900, None, status="FAILED", message="x")])
    assert [t.get_text() for t in placed(figure)] == ["a"]
    assert any("1 entry not OK, not plotted" in t.get_text() for t in figure.texts)
    path = tmp_path / "board.png"
    path.write_bytes(b"old")
    frame = leaderboard.board([record("b", 0, 900, None, status="FAILED", message="x")], CHALLENGE)
    assert plot.draw(frame, "test") is None
    assert plot.plot(frame, path, "test") is False and not path.exists()


def test_the_image_is_16_by_9_at_slide_resolution(tmp_path):
    frame = leaderboard.board(RECORDS, CHALLENGE)
    assert plot.plot(frame, tmp_path / "board.png", "test", BUDGET, CHALLENGE.tiers)
    import matplotlib.image

    height, width = matplotlib.image.imread(tmp_path / "board.png").shape[:2]
    assert width >= 1920 and abs(width / height - 16 / 9) < 0.01
