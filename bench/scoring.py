"""Score: what a run's record says about size and accuracy beyond its two headline numbers, and which
differences between entries are beyond noise. Pure functions on records; no TensorFlow.

Storage (the NeurIPS 2019 MicroNet Challenge's counting): a tensor stored densely costs
elements x bits of its dtype; one holding zeros may instead be stored sparsely, as its nonzero values
plus a one-bit mask per element; each tensor counts the cheaper of the two. A weight's bits come from its
dtype (float32 32, float16/bfloat16 16, int8 8; Keras 3's int8 quantization stores int8 kernels and
float32 scales, each counted as stored). `float_bits = 16` counts float32 weights as 16-bit, as MicroNet
allowed for weights that survive conversion to half precision.

Significance: per-image correctness of every run (`test_correct` in the record, packed bits) lets two
entries with the same seeds be compared image by image: McNemar's test on the images they disagree on,
seed by seed (exact binomial when the disagreements are fewer than MCNEMAR_EXACT_BELOW, else chi-square
with continuity correction), and Welch's t-test on the per-seed accuracies when both have at least two
seeds. On a hidden test set the records keep no per-image correctness, so the paired tests are off and Welch's
alone separates entries. A pair counts as separated when every one of those tests rejects (its p-value is the
largest of theirs: an intersection-union test), after Holm's correction over the neighbour pairs of its table.
The distributions are scipy's (scipy.special's bdtr, chdtrc and stdtr, which scipy.stats's binom, chi2
and t call): importing scipy.stats alone takes ~0.8 s, and a board of 1,000 records renders in under 2 s;
tests/test_scoring.py checks each p-value against scipy.stats.binomtest, chi2.sf and ttest_ind.
"""

from __future__ import annotations

import base64
import math

import numpy as np

MCNEMAR_EXACT_BELOW = 25
DTYPE_BITS = {"float64": 64, "float32": 32, "float16": 16, "bfloat16": 16, "int64": 64, "uint64": 64, "int32": 32,
              "uint32": 32, "int16": 16, "uint16": 16, "int8": 8, "uint8": 8, "int4": 4, "uint4": 4, "bool": 1}


# ---- per-image correctness -------------------------------------------------------------------------

def pack_correct(correct: np.ndarray) -> dict:
    """{"images": n, "bits": base64 of numpy.packbits(correct)}: 10,000 test images in 1,668 characters."""
    flags = np.asarray(correct, dtype=bool).reshape(-1)
    return {"images": int(flags.size), "bits": base64.b64encode(np.packbits(flags)).decode("ascii")}


def unpack_correct(packed: dict | None) -> np.ndarray | None:
    """The boolean array pack_correct stored (shape (images,)), or None for a record without one: also a record
    scored on a hidden test set, which keeps the number of images alone (bench.runner.published)."""
    if not packed or "bits" not in packed:
        return None
    bits = np.frombuffer(base64.b64decode(packed["bits"]), dtype=np.uint8)
    return np.unpackbits(bits, count=packed["images"]).astype(bool)


# ---- storage -----------------------------------------------------------------------------------------

def storage_bits(weight_tensors: list | None, float_bits: int = 32) -> int | None:
    """Bits to store the weights: per tensor [dtype, elements, nonzero, bits per element] (records from before
    the audit wrote the bits: [dtype, elements, nonzero], bits from DTYPE_BITS), the cheaper of dense
    (elements x bits) and sparse (nonzero x bits + elements mask bits). None when the record has no tensors."""
    if weight_tensors is None:
        return None
    total = 0
    for dtype, elements, nonzero, *recorded in weight_tensors:
        bits = float_bits if dtype == "float32" else recorded[0] if recorded else DTYPE_BITS.get(dtype, 64)
        total += min(elements * bits, nonzero * bits + elements)
    return total


# ---- uncertainty and tests -----------------------------------------------------------------------------

def standard_error(accuracies: list[float], test_images: int | None) -> float | None:
    """Standard error of the mean test accuracy (a fraction): sample std / sqrt(seeds) over two or more seeds;
    with one seed, the binomial sqrt(p (1 - p) / images) of the test set alone."""
    if not accuracies:
        return None
    if len(accuracies) > 1:
        return float(np.std(accuracies, ddof=1) / math.sqrt(len(accuracies)))
    if not test_images:
        return None
    p = accuracies[0]
    return math.sqrt(p * (1 - p) / test_images)


def discordant(correct_a: np.ndarray, correct_b: np.ndarray) -> tuple[int, int]:
    """(images only a gets right, images only b gets right): what McNemar's test compares."""
    return int(np.sum(correct_a & ~correct_b)), int(np.sum(~correct_a & correct_b))


def mcnemar_p_values(counts: list[tuple[int, int]]) -> np.ndarray:
    """Two-sided McNemar p-values, one per (only a, only b) pair of discordant counts; 1 where they agree on
    every image. Vectorized: a board compares hundreds of pairs."""
    from scipy import special

    only_a, only_b = (np.array([c[i] for c in counts], dtype=np.int64).reshape(-1) for i in (0, 1))
    disagreements = only_a + only_b
    with np.errstate(divide="ignore", invalid="ignore"):
        # exact: twice the binomial tail of the smaller count (Bin(n, 1/2) is symmetric), at most 1
        exact = np.minimum(1.0, 2 * special.bdtr(np.minimum(only_a, only_b), disagreements, 0.5))
        chi_square = special.chdtrc(1, (np.abs(only_a - only_b) - 1) ** 2 / disagreements)
    p = np.where(disagreements < MCNEMAR_EXACT_BELOW, exact, chi_square)
    return np.where(disagreements == 0, 1.0, p)


def mcnemar_p(correct_a: np.ndarray, correct_b: np.ndarray) -> float:
    """Two-sided McNemar p-value for two classifiers' per-image correctness on the same images."""
    return float(mcnemar_p_values([discordant(correct_a, correct_b)])[0])


def welch_p_values(samples: list[tuple[list[float], list[float]]]) -> np.ndarray:
    """Two-sided Welch's t-test p-values, one per pair of per-seed accuracy lists (two or more each): the
    statistic (mean a - mean b) / sqrt(var a / n a + var b / n b) on Welch-Satterthwaite degrees of freedom."""
    from scipy import special

    stats_of = [(np.mean(x), np.var(x, ddof=1), len(x)) for pair in samples for x in pair]
    mean, var, n = (np.array(column, dtype=float).reshape(-1, 2) for column in zip(*stats_of)) if samples else (np.zeros((0, 2)),) * 3
    share = var / n
    with np.errstate(divide="ignore", invalid="ignore"):
        t = (mean[:, 0] - mean[:, 1]) / np.sqrt(share.sum(axis=1))
        df = share.sum(axis=1) ** 2 / (share ** 2 / (n - 1)).sum(axis=1)
        p = 2 * special.stdtr(df, -np.abs(t))
    no_spread = (var[:, 0] == 0) & (var[:, 1] == 0)  # the t statistic is undefined: equal means or a sure gap
    return np.where(no_spread, np.where(mean[:, 0] == mean[:, 1], 1.0, 0.0), p)


def welch_p(accuracies_a: list[float], accuracies_b: list[float]) -> float | None:
    """Two-sided Welch's t-test p-value on per-seed accuracies; None with fewer than two seeds on a side."""
    if len(accuracies_a) < 2 or len(accuracies_b) < 2:
        return None
    return float(welch_p_values([(accuracies_a, accuracies_b)])[0])


def pair_p_values(pairs: list[tuple[dict[int, dict], dict[int, dict]]]) -> list[float | None]:
    """For each pair of entries (each a map seed -> OK record), the p-value that they differ: the largest of
    McNemar's per shared seed (records with `test_correct` on the same number of images) and Welch's across
    seeds (two or more each). None where no test applies (one seed each and no per-image correctness)."""
    counts, count_owner, samples, sample_owner = [], [], [], []
    for number, (runs_a, runs_b) in enumerate(pairs):
        for seed in sorted(set(runs_a) & set(runs_b)):
            a, b = unpack_correct(runs_a[seed].get("test_correct")), unpack_correct(runs_b[seed].get("test_correct"))
            if a is not None and b is not None and a.shape == b.shape:
                counts.append(discordant(a, b))
                count_owner.append(number)
        accuracies = [r["test_accuracy"] for r in runs_a.values()], [r["test_accuracy"] for r in runs_b.values()]
        if min(map(len, accuracies)) >= 2:
            samples.append(accuracies)
            sample_owner.append(number)
    largest: list[float | None] = [None] * len(pairs)
    tested = zip(count_owner + sample_owner, [*mcnemar_p_values(counts), *welch_p_values(samples)] if counts or samples else [])
    for number, p in tested:
        largest[number] = float(p) if largest[number] is None else max(largest[number], float(p))
    return largest


def holm(p_values: list[float | None]) -> list[float | None]:
    """Holm-Bonferroni adjusted p-values (None stays None, and does not count as a comparison)."""
    tested = sorted((p, i) for i, p in enumerate(p_values) if p is not None)
    adjusted: list[float | None] = [None] * len(p_values)
    running = 0.0
    for rank, (p, i) in enumerate(tested):
        running = max(running, min(1.0, (len(tested) - rank) * p))
        adjusted[i] = running
    return adjusted


def significance_groups(separated: list[bool]) -> list[int]:
    """Group numbers for rows in board order, given for each row after the first whether it is separated
    from the row above: 1 for the top row and all rows not separated from it, and so on."""
    groups = [1]
    for apart in separated:
        groups.append(groups[-1] + 1 if apart else groups[-1])
    return groups


# ---- the rules ---------------------------------------------------------------------------------------------

Z_95 = 1.96  # golf with strict = true: the mean less this many standard errors must reach the target


def points(accuracy: float, rules) -> float:
    """The `points` rule's grade for a mean accuracy (fraction): 0 at or below `baseline`, `full_points` at
    `target`, linear or exponential ((e^(k x) - 1) / (e^k - 1), k = steepness) between them, plus `bonus`
    earned linearly from `target` to `ceiling`."""
    way = min(1.0, max(0.0, (accuracy - rules.baseline) / (rules.target - rules.baseline)))
    if rules.curve == "exponential":
        way = math.expm1(rules.steepness * way) / math.expm1(rules.steepness)
    extra = 0.0
    if rules.bonus and accuracy > rules.target:
        extra = rules.bonus * min(1.0, (accuracy - rules.target) / (rules.ceiling - rules.target))
    return rules.full_points * way + extra


def failed_criteria(row, rules) -> str:
    """The `threshold` rule's verdict on one OK row: the criteria it misses, "" when it passes."""
    missed = []
    if rules.target is not None and row["test_accuracy"] < rules.target:
        missed.append(f"accuracy {100 * row['test_accuracy']:.2f} % < {100 * rules.target:.2f} %")
    if rules.max_params is not None and row["total_params"] > rules.max_params:
        missed.append(f"params {int(row['total_params']):,} > {rules.max_params:,}")
    if rules.max_macs is not None and _unknown_macs(row):
        missed.append(f"MACs unknown > {rules.max_macs:,}" if _missing(row["macs"]) else
                      f"MACs ≥ {int(row['macs']):,}, a lower bound, not a count within {rules.max_macs:,}")
    elif rules.max_macs is not None and row["macs"] > rules.max_macs:
        missed.append(f"MACs {int(row['macs']):,} > {rules.max_macs:,}")
    if rules.max_epochs is not None and row["epochs"] > rules.max_epochs:
        missed.append(f"epochs {row['epochs']:g} > {rules.max_epochs:g}")
    return "; ".join(missed)


def _unknown_macs(row) -> bool:
    """No MAC count, or only a lower bound (layers the count cannot see into): neither is a count to rank or pass by."""
    return _missing(row["macs"]) or bool(row.get("macs_lower_bound", False))


def _missing(value) -> bool:
    import pandas as pd

    return value is None or bool(pd.isna(value))


def rank_board(frame, runs: dict[str, dict[int, dict]], rules, tier_names: list[str]):
    """`frame` (one row per entry, bench.leaderboard.board) with the rule applied: rows in board order, and
    the columns `section` (the table a row is shown under), `score`, `passed`, `failed_criteria`, `group`
    and `rank`. Not-OK rows keep null values and come last. `runs` maps entry -> seed -> OK record.

    Groups and shared ranks apply where a section is ordered by accuracy (tiers, points, threshold, and the
    entries below a golf or micronet target); where it is ordered by size or score, rank is the position."""
    import pandas as pd

    frame = frame.copy()
    frame["score"], frame["passed"], frame["failed_criteria"] = None, None, ""
    ok = frame["status"] == "OK"
    by_accuracy = {"by": ["test_accuracy", "total_params", "entry"], "ascending": [False, True, True]}
    sections = []  # (name, rows, ordered by accuracy)
    rows = frame[ok]
    if rules.rule == "tiers":
        for tier in tier_names:
            sections.append((f"Parameters {tier}", rows[rows["tier"] == tier].sort_values(**by_accuracy), True))
    elif rules.rule in ("golf", "micronet"):
        reached = rows["test_accuracy"] >= rules.target
        if rules.rule == "golf" and rules.strict:
            reached = rows["test_accuracy"] - Z_95 * rows["test_accuracy_se"].fillna(0.0) >= rules.target
        if rules.rule == "golf":
            top = rows[reached].sort_values([rules.size, "test_accuracy", "entry"], ascending=[True, False, True]).copy()
            top["score"] = top[rules.size]  # golf's number: the size it ranks by
            heading = f"Reached {100 * rules.target:.2f} %{' (lower end of the 95 % interval)' if rules.strict else ''}: fewest {rules.size.replace('_', ' ')} first"
        else:
            reference = rows[rows["entry"] == rules.reference]
            macs_column = "macs_nonzero" if rules.sparse_macs else "macs"
            heading = f"Reached {100 * rules.target:.2f} %: MicroNet score (storage / {rules.reference}'s + MACs / {rules.reference}'s), lowest first"
            if reference.empty or pd.isna(reference["storage_bits"].iloc[0]) or pd.isna(reference[macs_column].iloc[0]):
                top = rows.iloc[0:0]  # nobody scored: bench.leaderboard says why under the tables
            else:
                storage, macs = float(reference["storage_bits"].iloc[0]), float(reference[macs_column].iloc[0])
                top = rows[reached].copy()
                top["score"] = (top["storage_bits"].astype("float64") / storage + top[macs_column].astype("float64") / macs).round(4)
                # A lower bound is no count: a red team's layers wrapped in TimeDistributed counted 0 MACs and ranked first.
                top.loc[top["macs_lower_bound"].fillna(False).astype(bool), "score"] = np.nan
                top = top[top["score"].notna()].sort_values(["score", "entry"])
        frame.loc[top.index, "score"] = top["score"]
        sections.append((heading, top, False))
        below = f"Below {100 * rules.target:.2f} %" if rules.rule == "golf" else f"Not scored: below {100 * rules.target:.2f} %, or no storage or MAC count"
        sections.append((below, rows.drop(top.index).sort_values(**by_accuracy), True))
    elif rules.rule == "threshold":
        verdicts = rows.apply(lambda row: failed_criteria(row, rules), axis=1) if len(rows) else pd.Series(dtype=str)
        frame.loc[rows.index, "failed_criteria"] = verdicts
        frame.loc[rows.index, "passed"] = verdicts == ""
        passed = rows[verdicts == ""] if len(rows) else rows
        sections.append(("Passed", passed.sort_values(**by_accuracy), True))
        sections.append(("Not passed", rows.drop(passed.index).sort_values(**by_accuracy), True))
    elif rules.rule == "points":
        frame.loc[rows.index, "score"] = [round(points(a, rules), 2) for a in rows["test_accuracy"]]
        sections.append((f"Points: {rules.curve}, 0 at {100 * rules.baseline:.2f} %, {rules.full_points:g} at "
                         f"{100 * rules.target:.2f} %" + (f", bonus up to {rules.bonus:g} at {100 * rules.ceiling:.2f} %" if rules.bonus else ""),
                         rows.sort_values(**by_accuracy), True))

    # Each table is one ranking: Holm's correction runs over its neighbour pairs (the p-values of all pairs on
    # the board are computed in one vectorized call).
    pairs = [list(section.index) for _, section, grouped in sections if grouped]
    neighbours = [(runs.get(frame.at[above, "entry"], {}), runs.get(frame.at[below, "entry"], {}))
                  for index in pairs for above, below in zip(index, index[1:])]
    raw = iter(pair_p_values(neighbours))
    adjusted = iter([p for index in pairs for p in holm([next(raw) for _ in index[1:]])])
    order, section_of, groups, ranks = [], {}, {}, {}
    for name, section, grouped in sections:
        index = list(section.index)
        if grouped:
            separated = [(p is not None and p < rules.alpha) for p in (next(adjusted) for _ in index[1:])]
            section_groups = significance_groups(separated) if index else []
        else:
            section_groups = list(range(1, len(index) + 1))
        first_position = {}
        for position, (i, group) in enumerate(zip(index, section_groups), start=1):
            first_position.setdefault(group, position)
            groups[i], ranks[i], section_of[i] = group, first_position[group], name
            order.append(i)
    frame["section"] = pd.Series(section_of, dtype="object")
    frame["group"] = pd.Series(groups, dtype="Int64")
    frame["rank"] = pd.Series(ranks, dtype="Int64")
    rest = [i for i in frame.index if i not in section_of]
    return frame.loc[order + rest]
