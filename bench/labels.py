"""Labels for the leaderboard's figure (bench.plot) that never overlap each other, a marker, an error bar or the
Pareto front's line.

In order of interest (the front, then the most accurate), each entry's name goes to the first free spot right
beside its point. Where points crowd, the names of the crowd (the entries left over and those near them) are
stacked in a column right of it, in the points' order from top to bottom (in smaller type when a long column needs
it), each joined to its point by a thin line that crosses no label. An entry whose name fits neither way gets a
number at a free spot nearby, spelt out in the key (`place` returns them).
"""

from __future__ import annotations

import numpy as np

LABEL_POINTS = 12
COLUMN_POINTS = (LABEL_POINTS, 10)  # a column of names too long for the axes is set smaller; 10 points still read on a slide
MARKER_POINTS = 8
STAR_POINTS = 17
# Spots right beside a point, in points from it (clear of a star): eight directions. Numbers that find none there
# look further out, ring by ring, with a line back to the point.
BESIDE = 12
RINGS = (BESIDE, 24, 38, 56, 78, 104, 134, 170, 210)
DIRECTIONS = ((1, 0, "left", "center"), (-1, 0, "right", "center"), (0, 1, "center", "bottom"), (0, -1, "center", "top"),
              (0.7, 0.7, "left", "bottom"), (-0.7, 0.7, "right", "bottom"), (0.7, -0.7, "left", "top"), (-0.7, -0.7, "right", "top"))
# Further out, a number also tries the directions between those (every 22.5 degrees), centred on its spot.
FAR_DIRECTIONS = DIRECTIONS + tuple((float(np.cos(a)), float(np.sin(a)), "center", "center") for a in np.radians(np.arange(22.5, 360, 45)))
# An entry within this many pixels of one whose name found no spot beside it joins its column of names.
CROWD = 60
COLUMN_STEP = 16  # pixels between the columns tried, going right from the group
PAD = 2  # pixels kept clear around every label
LABEL_GID, NUMBER_GID, LEADER_GID = "label", "number", "leader"


def place(axes, ok, params, accuracy, spread, renderer, most: int) -> tuple[list[tuple[str, str]], int]:
    """Label `ok`'s entries (the first `most` in order of interest): the (number, entry) pairs of those numbered,
    and how many of them found no room at all."""
    area = axes.get_window_extent(renderer)
    taken = Taken(obstacles(axes, ok, params, accuracy, spread))
    points = [(params[i], accuracy[i]) for i in range(len(ok))]
    names = list(ok["entry"])
    order = sorted(range(len(ok)), key=lambda i: (not ok["pareto"].iloc[i], -accuracy[i], params[i], names[i]))[:most]
    beside = {i: _at_a_spot(axes, names[i], points[i], renderer, taken, area, LABEL_GID, RINGS[:1]) for i in order}
    left = [i for i in order if beside[i] is None]
    pixels = axes.transData.transform(np.array(points, dtype="float64").reshape(-1, 2))
    for crowd in _crowds(left, order, pixels):
        # The crowd's names all go to the column (a name left beside a point would sit across the column's lines).
        for i in crowd:
            if beside[i] is not None:
                beside[i][0].remove()
                taken.remove(beside[i][1])
        if _in_a_column(axes, crowd, names, points, pixels, renderer, taken, area):
            left = [i for i in left if i not in crowd]
            continue
        for i in sorted(crowd, key=order.index):
            if beside[i] is not None:
                beside[i] = _at_a_spot(axes, names[i], points[i], renderer, taken, area, LABEL_GID, RINGS[:1])
                if beside[i] is None:
                    left.append(i)
    numbered = []
    for i in sorted(left, key=order.index):
        number = str(len(numbered) + 1)
        # Last, a line that crosses a label: better than a point nobody can name.
        if any(_at_a_spot(axes, number, points[i], renderer, taken, area, NUMBER_GID, RINGS, lines_cross=crossing)
               for crossing in (False, True)):
            numbered.append((number, names[i]))
    return numbered, len(left) - len(numbered)


class Taken:
    """The pixel boxes labels must keep clear of (what is drawn, the labels placed) and the lines from labels to
    their points, which must cross no label."""

    def __init__(self, drawn: list):
        self.drawn, self.labels, self.leaders = drawn, [], []

    def free(self, box, area) -> bool:
        inside = area.x0 <= box.x0 and box.x1 <= area.x1 and area.y0 <= box.y0 and box.y1 <= area.y1
        return (inside and not any(box.overlaps(other) for other in (*self.drawn, *self.labels))
                and not any(_through(box, start, end) for start, end in self.leaders))

    def crossed(self, start, end) -> bool:
        """Whether the line from `start` to `end` (pixels) runs through a label."""
        return any(_through(box, start, end) for box in self.labels)

    def add(self, box, leader=None) -> None:
        self.labels.append(box)
        if leader:
            self.leaders.append(leader)

    def remove(self, box, leader=None) -> None:
        self.labels.remove(box)
        if leader:
            self.leaders.remove(leader)


def _through(box, start, end) -> bool:
    # Points every 2 pixels along the line: no box (a label is at least 20 pixels each way) slips between two.
    along = np.linspace(0, 1, max(2, int(np.hypot(*(np.asarray(end) - np.asarray(start))) / 2)))[:, None]
    samples = np.asarray(start) + along * (np.asarray(end) - np.asarray(start))
    return bool(np.any((samples[:, 0] >= box.x0) & (samples[:, 0] <= box.x1) & (samples[:, 1] >= box.y0) & (samples[:, 1] <= box.y1)))


def _crowds(left: list[int], order: list[int], pixels) -> list[list[int]]:
    """The entries left without a spot, each with the labelled entries within CROWD pixels of it, chained: the crowds."""
    crowds: list[list[int]] = []
    for i in left:
        if any(i in crowd for crowd in crowds):
            continue
        crowd, edge = [i], [i]
        while edge:
            near = [j for j in order if j not in crowd and any(np.hypot(*(pixels[j] - pixels[k])) < CROWD for k in edge)]
            crowd += near
            edge = near
        crowds.append(sorted(crowd))
    return crowds


def obstacles(axes, ok, params, accuracy, spread) -> list:
    """Pixel boxes a label must keep clear of: every marker (a star is bigger), error bar and step of the front."""
    from matplotlib.transforms import Bbox

    pixels = axes.figure.dpi / 72
    to_pixels = axes.transData.transform
    front = ok["pareto"].to_numpy(dtype=bool)
    boxes = []
    for (x, y), low, high, star in zip(to_pixels(np.column_stack([params, accuracy])), to_pixels(np.column_stack([params, accuracy - spread])),
                                       to_pixels(np.column_stack([params, accuracy + spread])), front):
        radius = (STAR_POINTS if star else MARKER_POINTS) * pixels / 2 + PAD
        boxes.append(Bbox.from_extents(x - radius, y - radius, x + radius, y + radius))
        boxes.append(Bbox.from_extents(x - 5 * pixels, low[1], x + 5 * pixels, high[1]))  # the bar and its caps
    corners = to_pixels(np.column_stack([params[front], accuracy[front]]))
    for (x0, y0), (x1, y1) in zip(corners, corners[1:]):  # where="post": along, then up
        boxes.append(Bbox.from_extents(x0, y0 - PAD, x1, y0 + PAD))
        boxes.append(Bbox.from_extents(x1 - PAD, min(y0, y1), x1 + PAD, max(y0, y1)))
    return boxes


def _label(axes, text, point, offset, ha, va, gid, size=LABEL_POINTS):
    return axes.annotate(text, point, xytext=offset, textcoords="offset points", ha=ha, va=va, fontsize=size, zorder=5,
                         gid=gid, fontweight="bold" if gid == NUMBER_GID else "normal",
                         bbox={"boxstyle": "square,pad=0.05", "facecolor": "white", "edgecolor": "none", "alpha": 0.8})  # over grid lines


def _leader(axes, point, offset) -> None:
    axes.annotate("", point, xytext=offset, textcoords="offset points", zorder=2, gid=LEADER_GID,
                  arrowprops={"arrowstyle": "-", "color": "grey", "linewidth": 0.8, "shrinkA": 0, "shrinkB": 4})


def _at_a_spot(axes, text, point, renderer, taken, area, gid, rings, lines_cross=False):
    """Put `text` at the first spot around `point` whose box is free (then taken): (its label, its box), or None."""
    for distance in rings:
        for dx, dy, ha, va in DIRECTIONS if distance == BESIDE else FAR_DIRECTIONS:
            offset = (dx * distance, dy * distance)
            label = _label(axes, text, point, offset, ha, va, gid)
            box = label.get_window_extent(renderer).padded(PAD)
            start = axes.transData.transform(point)
            leader = None if distance == BESIDE else (start, start + np.array(offset) * axes.figure.dpi / 72)
            if taken.free(box, area) and not (leader and not lines_cross and taken.crossed(*leader)):
                taken.add(box, leader)
                if leader:
                    _leader(axes, point, offset)
                return label, box
            label.remove()
    return None


def _in_a_column(axes, crowd, names, points, pixels, renderer, taken, area) -> bool:
    """Stack `crowd`'s names in a column right of its points, in smaller type when a long one needs it; whether
    they found room (all are placed, or none)."""
    top_down = sorted(crowd, key=lambda i: -pixels[i][1])
    for size in COLUMN_POINTS:
        sizes = {}
        for i in crowd:  # measured once: a name's box is the same wherever it goes
            probe = _label(axes, names[i], points[i], (0, 0), "left", "center", LABEL_GID, size)
            extent = probe.get_window_extent(renderer)
            sizes[i] = (extent.width, extent.height)
            probe.remove()
        plan = _column(top_down, sizes, pixels, taken, area, axes.figure.dpi / 72)
        if plan is not None:
            to_points = 72 / axes.figure.dpi
            for i, (x, y), box, leader in plan:
                offset = ((x - pixels[i][0]) * to_points, (y - pixels[i][1]) * to_points)
                _label(axes, names[i], points[i], offset, "left", "center", LABEL_GID, size)
                _leader(axes, points[i], offset)
                taken.add(box, leader)
            return True
    return False


def _column(top_down: list[int], sizes, pixels, taken, area, pixels_per_point: float):
    """The nearest free column for these names, right of their points: [(entry, (x, y) of the name's left middle,
    its box, its line)] in pixels, or None."""
    from matplotlib.transforms import Bbox

    heights = [sizes[i][1] + 2 * PAD for i in top_down]
    starts = [tuple(pixels[i]) for i in top_down]
    first = max(pixels[i][0] for i in top_down) + 2 * BESIDE * pixels_per_point
    widest = max(sizes[i][0] for i in top_down) + PAD
    # Nearest the points first: a step right or a name's height up or down costs alike.
    step = heights[0]
    spots = sorted(((x, shift * step) for x in np.arange(first, area.x1 - widest, COLUMN_STEP) for shift in range(-len(top_down), len(top_down) + 1)),
                   key=lambda spot: (spot[0] - first) / COLUMN_STEP + abs(spot[1]) / step)
    for x, shift in spots:
        centres = _spread([pixels[i][1] + shift for i in top_down], heights, area.y0, area.y1)
        if centres is None:
            return None
        boxes = [Bbox.from_extents(x - PAD, y - sizes[i][1] / 2 - PAD, x + sizes[i][0] + PAD, y + sizes[i][1] / 2 + PAD)
                 for i, y in zip(top_down, centres)]
        if all(taken.free(box, area) and not taken.crossed(start, (x, y)) for box, start, y in zip(boxes, starts, centres)):
            return [(i, (x, y), box, (start, (x, y))) for i, y, box, start in zip(top_down, centres, boxes, starts)]
    return None


def _spread(wanted: list[float], heights: list[float], bottom: float, top: float) -> list[float] | None:
    """Centres as close to `wanted` (top to bottom) as boxes of `heights` allow without overlapping, within
    [bottom, top]; None when they do not fit."""
    if sum(heights) > top - bottom:
        return None
    centres = []
    for want, height in zip(wanted, heights):  # down from the top, each below the one above
        limit = top - height / 2 if not centres else centres[-1] - (heights[len(centres) - 1] + height) / 2
        centres.append(min(want, limit))
    overshoot = bottom - (centres[-1] - heights[-1] / 2)
    if overshoot > 0:  # pushed below the axes: move the stack up, never above its top
        for k in range(len(centres) - 1, -1, -1):
            floor = bottom + heights[-1] / 2 if k == len(centres) - 1 else centres[k + 1] + (heights[k + 1] + heights[k]) / 2
            centres[k] = max(centres[k], floor)
    return centres
