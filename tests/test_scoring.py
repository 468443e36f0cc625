"""bench.scoring and the board's rules ([tool.bench.scoring]): storage counted by hand, the tests that
group rows, and each rule's edge cases on synthetic records."""

from __future__ import annotations

import dataclasses
import io
import json
import math

import numpy as np
import pandas as pd
import pytest

from bench import config, leaderboard, scoring
from conftest import DENSE_ENTRY, run_in_process

TEST_IMAGES = 2000


# ---- storage, by hand ------------------------------------------------------------------------------------

def test_storage_bits_takes_the_cheaper_of_dense_and_masked_sparse_per_tensor():
    kernel, bias = ["float32", 12, 6], ["float32", 3, 0]
    # kernel: dense 12 x 32 = 384, sparse 6 x 32 + 12 = 204; bias: dense 96, sparse 0 + 3
    assert scoring.storage_bits([kernel, bias]) == 204 + 3
    # float32 as 16 bits: kernel min(192, 96 + 12), bias min(48, 3)
    assert scoring.storage_bits([kernel, bias], float_bits=16) == 108 + 3
    assert scoring.storage_bits([["int8", 10, 10], ["float32", 2, 2]]) == 80 + 64
    assert scoring.storage_bits(None) is None


def _audited(model, tmp_path):
    from bench import audit, train

    train.export(model, tmp_path, tuple(model.input_shape[1:]))
    images = np.random.default_rng(0).random((3, *model.input_shape[1:]), dtype=np.float32)
    record = audit.audit(tmp_path, {"test": images}, tmp_path)
    assert record["status"] == "OK", record["message"]
    return record


def test_a_pruned_model_counts_its_nonzero_weights_and_their_masks(tmp_path):
    import keras

    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3), keras.layers.Dense(2, activation="softmax")])
    first, second = model.layers
    kernel = np.arange(1, 13, dtype="float32").reshape(4, 3)
    kernel[kernel % 2 == 0] = 0  # 6 of 12 pruned
    first.set_weights([kernel, np.array([1, 0, 0], "float32")])
    second.set_weights([np.ones((3, 2), "float32"), np.zeros(2, "float32")])
    record = _audited(model, tmp_path)
    assert record["total_params"] == 12 + 3 + 6 + 2
    assert record["nonzero_params"] == 6 + 1 + 6 + 0
    # 4x3 kernel: 6 x 32 + 12; bias (1 of 3): 32 + 3; 3x2 kernel, dense: 6 x 32; zero bias: 2 mask bits
    assert scoring.storage_bits(record["weight_tensors"]) == 204 + 35 + 192 + 2
    # MACs per image: 4 x 3 + 3 x 2; with the zero weights skipped, 6 + 6
    assert (record["macs"], record["macs_nonzero"]) == (18, 12)


def test_an_int8_quantized_model_counts_8_bits_a_weight_and_its_float_scales(tmp_path):
    import keras

    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3), keras.layers.Dense(2, activation="softmax")])
    for layer in model.layers:
        layer.set_weights([np.full(w.shape, 0.5, "float32") for w in layer.get_weights()])
    model.quantize("int8")
    record = _audited(model, tmp_path)
    assert sorted(map(tuple, record["weight_tensors"])) == sorted([  # dtype, elements, nonzero, bits per element
        ("int8", 12, 12, 8), ("float32", 3, 3, 32), ("float32", 3, 3, 32),  # kernel, its per-output scale, bias
        ("int8", 6, 6, 8), ("float32", 2, 2, 32), ("float32", 2, 2, 32)])
    assert record["total_params"] == record["nonzero_params"] == 28
    assert scoring.storage_bits(record["weight_tensors"]) == 12 * 8 + 6 * 32 + 6 * 8 + 4 * 32


def test_a_run_record_holds_its_per_image_correctness_and_stored_weights(write_entry):
    record = run_in_process(write_entry("dense", DENSE_ENTRY))
    assert record["status"] == "OK", record["message"]
    correct = scoring.unpack_correct(record["test_correct"])
    assert correct.shape == (360,) and correct.mean() == pytest.approx(record["test_accuracy"])  # digits' test split
    assert sorted(tensor[1] for tensor in record["weight_tensors"]) == [10, 12, 120, 768]  # 64 -> 12 -> 10
    assert record["nonzero_params"] == sum(tensor[2] for tensor in record["weight_tensors"]) <= record["total_params"] == 910
    json.dumps(record, allow_nan=False)


# ---- the tests ---------------------------------------------------------------------------------------------

def test_per_image_correctness_packs_into_strict_json_and_back():
    correct = np.random.default_rng(0).random(10_000) < 0.9
    packed = scoring.pack_correct(correct)
    assert len(packed["bits"]) == 1668 and packed["images"] == 10_000
    np.testing.assert_array_equal(scoring.unpack_correct(json.loads(json.dumps(packed, allow_nan=False))), correct)
    assert scoring.unpack_correct(None) is None


def _pair(only_a: int, only_b: int, both: int = 50):
    a = np.array([True] * only_a + [False] * only_b + [True] * both)
    b = np.array([False] * only_a + [True] * only_b + [True] * both)
    return a, b


def test_mcnemar_is_exact_below_25_disagreements_and_chi_square_above():
    # 10 against 2: two-sided binomial, 2 x P(X <= 2) for X ~ Bin(12, 1/2) = 2 x (1 + 12 + 66) / 4096
    assert scoring.mcnemar_p(*_pair(10, 2)) == pytest.approx(2 * 79 / 4096)
    # 40 against 20, with continuity correction: (|40 - 20| - 1)^2 / 60, chi-square(1) tail = erfc(sqrt(x / 2))
    statistic = 19 ** 2 / 60
    assert scoring.mcnemar_p(*_pair(40, 20)) == pytest.approx(math.erfc(math.sqrt(statistic / 2)))
    assert scoring.mcnemar_p(*_pair(0, 0)) == 1.0


def test_welch_needs_two_seeds_a_side_and_separates_only_clear_gaps():
    assert scoring.welch_p([0.9], [0.8, 0.81]) is None
    assert scoring.welch_p([0.90, 0.91, 0.92], [0.80, 0.81, 0.82]) < 0.01
    assert scoring.welch_p([0.90, 0.93, 0.87], [0.89, 0.92, 0.88]) > 0.5


def test_holm_adjusts_in_order_and_skips_untested_pairs():
    # sorted 0.01, 0.03, 0.04: 3 x 0.01, 2 x 0.03, max(1 x 0.04, 0.06)
    assert scoring.holm([0.01, 0.04, 0.03, None]) == pytest.approx([0.03, 0.06, 0.06, None])


def test_groups_start_again_only_where_a_row_is_separated_from_the_one_above():
    assert scoring.significance_groups([False, True, False, True]) == [1, 1, 2, 2, 3]


def test_standard_error_over_seeds_and_binomial_for_one_seed():
    assert scoring.standard_error([0.90, 0.92, 0.94], 10_000) == pytest.approx(0.02 / math.sqrt(3))
    assert scoring.standard_error([0.9], 10_000) == pytest.approx(math.sqrt(0.9 * 0.1 / 10_000))


# ---- the rules on synthetic records ---------------------------------------------------------------------

def make_records(challenge, entries: dict, seeds=3):
    """entries: name -> (params, accuracy of seed 0, MACs[, seeds]); seed k is 0.002 k lower; the correct images
    are the first accuracy x TEST_IMAGES of a fixed shuffle, so better entries get the same images right and more."""
    order = np.random.default_rng(0).permutation(TEST_IMAGES)
    records = []
    for name, (params, accuracy, macs, *own_seeds) in entries.items():
        for seed in range(own_seeds[0] if own_seeds else seeds):
            correct = np.zeros(TEST_IMAGES, bool)
            correct[order[:round((accuracy - 0.002 * seed) * TEST_IMAGES)]] = True
            records.append({
                "entry": name, "dataset": challenge.dataset, "seed": seed, "status": "OK", "message": "",
                "key": {"config": challenge.protocol_hash()}, "author": name, "summary": "",
                "total_params": params, "trainable_params": params, "nonzero_params": params, "macs": macs, "macs_nonzero": macs // 2,
                "weight_tensors": [["float32", params, params]], "test_accuracy": float(correct.mean()),
                "test_correct": scoring.pack_correct(correct), "epochs": 10, "train_seconds": 1.0,
            })
    return records


def with_rules(**rules):
    base = config.Challenge(dataset="digits", seeds=3, tiers=(1000, 10000))
    return dataclasses.replace(base, scoring=config.scoring_from_dict(rules, "test"))


def test_tiers_group_what_the_tests_cannot_separate_and_share_the_rank():
    challenge = with_rules()
    records = make_records(challenge, {"a": (500, 0.950, 10), "b": (600, 0.949, 10), "c": (700, 0.80, 10), "big": (5000, 0.99, 10)})
    frame = leaderboard.board(records, challenge).set_index("entry")
    assert list(frame.index) == ["a", "b", "c", "big"]  # tier <= 1k by accuracy, then tier <= 10k
    assert list(frame["group"]) == [1, 1, 2, 1]  # a and b differ on 2 images of 2,000; c is far below
    assert list(frame["rank"]) == [1, 1, 3, 1]
    assert frame.at["a", "test_accuracy_se"] == pytest.approx(np.std([0.95, 0.948, 0.946], ddof=1) / math.sqrt(3), abs=1e-6)
    assert frame["score"].isna().all() and frame["passed"].isna().all()


def test_golf_ranks_by_size_among_entries_reaching_the_target_ties_by_accuracy():
    challenge = with_rules(rule="golf", target=0.9)
    records = make_records(challenge, {"small": (300, 0.903, 10), "tie_better": (400, 0.96, 10), "tie_worse": (400, 0.93, 10),
                                       "tiny_but_short": (50, 0.85, 10), "one_seed": (200, 0.92, 10, 1)})
    frame = leaderboard.board(records, challenge)
    assert list(frame["entry"]) == ["one_seed", "small", "tie_better", "tie_worse", "tiny_but_short"]
    assert list(frame["rank"]) == [1, 2, 3, 4, 1]
    assert list(frame["score"][:4]) == [200, 300, 400, 400]
    assert frame["section"].iloc[-1] == "Below 90.00 %"
    # strict: small's mean 0.901 less 1.96 standard errors (0.0012 each) falls below 0.9
    strict = leaderboard.board(records, dataclasses.replace(challenge, scoring=dataclasses.replace(challenge.scoring, strict=True)))
    assert "small" in list(strict[strict["section"] == "Below 90.00 %"]["entry"])


def test_golf_where_nobody_reaches_the_target_lists_everyone_by_accuracy():
    challenge = with_rules(rule="golf", target=0.999)
    frame = leaderboard.board(make_records(challenge, {"a": (300, 0.91, 10), "b": (100, 0.95, 10)}), challenge)
    assert list(frame["entry"]) == ["b", "a"] and set(frame["section"]) == {"Below 99.90 %"}
    assert frame["score"].isna().all()
    text = leaderboard.render_markdown(frame, [], challenge, None)
    assert "## Below 99.90 %" in text and "Reached" not in text.split("## ", 1)[1]


def test_micronet_scores_against_the_reference_and_says_when_it_is_missing():
    challenge = with_rules(rule="micronet", target=0.9, reference="ref")
    records = make_records(challenge, {"ref": (1000, 0.92, 2000), "half": (500, 0.93, 1000), "low": (10, 0.5, 10)})
    frame = leaderboard.board(records, challenge).set_index("entry")
    # storage: 32 bits a dense float32 weight; half: 500 x 32 / (1000 x 32) + 1000 / 2000
    assert frame.at["half", "score"] == 1.0 and frame.at["ref", "score"] == 2.0
    sparse = dataclasses.replace(challenge, scoring=dataclasses.replace(challenge.scoring, sparse_macs=True))
    assert "MACs, zeros skipped" in leaderboard.render_markdown(leaderboard.board(records, sparse), records, sparse, None)
    assert pd.isna(frame.at["low", "score"]) and list(frame.index) == ["half", "ref", "low"]
    missing = with_rules(rule="micronet", target=0.9, reference="gone")
    frame = leaderboard.board(make_records(missing, {"half": (500, 0.93, 1000)}), missing)
    assert frame["score"].isna().all()
    assert "the reference entry 'gone' has no OK row" in leaderboard.render_markdown(frame, [], missing, None)


def test_threshold_names_each_failed_criterion():
    challenge = with_rules(rule="threshold", target=0.9, max_params=1000, max_epochs=20)
    frame = leaderboard.board(make_records(challenge, {"pass": (900, 0.95, 10), "big": (2000, 0.95, 10), "weak": (900, 0.8, 10)}), challenge)
    verdicts = dict(zip(frame["entry"], zip(frame["passed"], frame["failed_criteria"])))
    assert verdicts["pass"] == (True, "")
    assert verdicts["big"] == (False, "params 2,000 > 1,000")
    assert verdicts["weak"][0] is False and verdicts["weak"][1].startswith("accuracy 79.80 % < 90.00 %")
    csv = pd.read_csv(io.StringIO(leaderboard.export_frame(frame, "csv")))
    assert list(csv["passed"]) == [True, False, False]


def test_points_linear_exponential_and_bonus_by_hand():
    linear = config.scoring_from_dict({"rule": "points", "target": 0.9, "baseline": 0.5}, "test")
    assert scoring.points(0.7, linear) == pytest.approx(50.0)
    assert scoring.points(0.4, linear) == 0.0 and scoring.points(0.95, linear) == 100.0
    curved = dataclasses.replace(linear, curve="exponential", steepness=2.0)
    assert scoring.points(0.7, curved) == pytest.approx(100 * (math.e - 1) / (math.e ** 2 - 1))
    bonus = dataclasses.replace(linear, bonus=10.0, ceiling=1.0)
    assert scoring.points(0.95, bonus) == pytest.approx(105.0)
    challenge = with_rules(rule="points", target=0.9, baseline=0.5)
    frame = leaderboard.board(make_records(challenge, {"a": (10, 0.702, 10, 1)}), challenge)
    assert frame["score"].iloc[0] == pytest.approx(50.5)


@pytest.mark.parametrize("rules, words", [
    ({"rule": "golf"}, "needs target"), ({"rule": "gold", "target": 0.9}, "choose one of"),
    ({"rule": "golf", "target": 98}, "fraction between 0 and 1"), ({"rule": "micronet", "target": 0.9}, "needs reference"),
    ({"rule": "points", "target": 0.9}, "needs baseline"), ({"rule": "tiers", "alpah": 0.1}, "unknown key"),
    ({"rule": "threshold"}, "at least one criterion"),
])
def test_a_scoring_mistake_is_reported_once_when_the_settings_load(tmp_path, rules, words):
    values = "\n".join(f"{k} = {json.dumps(v)}" for k, v in rules.items())
    (tmp_path / "pyproject.toml").write_text(f"[tool.bench]\ndataset = \"digits\"\n\n[tool.bench.scoring]\n{values}\n")
    with pytest.raises(config.ConfigError, match=words):
        config.load(tmp_path / "pyproject.toml")


@pytest.mark.parametrize("only_a, only_b", [(10, 2), (3, 0), (12, 12), (40, 20), (200, 170), (0, 30)])
def test_mcnemar_p_values_are_scipy_stats_own(only_a, only_b):
    from scipy import stats

    n = only_a + only_b
    expected = stats.binomtest(only_a, n, 0.5).pvalue if n < 25 else stats.chi2.sf((abs(only_a - only_b) - 1) ** 2 / n, 1)
    assert scoring.mcnemar_p(*_pair(only_a, only_b)) == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize("a, b", [([0.9, 0.91, 0.92], [0.8, 0.81, 0.83]), ([0.9, 0.95], [0.91, 0.92, 0.96, 0.9]),
                                  ([0.5, 0.6, 0.55], [0.52, 0.58, 0.7])])
def test_welch_p_values_are_scipy_stats_own(a, b):
    from scipy import stats

    assert scoring.welch_p(a, b) == pytest.approx(stats.ttest_ind(a, b, equal_var=False).pvalue, rel=1e-9)


def test_a_lower_bound_of_macs_is_not_scored_or_passed_as_a_count():
    """MACs the count cannot see into leave a lower bound (shown as ≥): a red team's layers wrapped in TimeDistributed
    counted 0 and ranked first under micronet. A lower bound gets no micronet score and fails a max_macs."""
    challenge = with_rules(rule="micronet", target=0.9, reference="ref")
    records = make_records(challenge, {"ref": (1000, 0.92, 2000), "hidden": (1000, 0.92, 0)})
    for record in records:
        record["macs_lower_bound"] = record["entry"] == "hidden"
    frame = leaderboard.board(records, challenge).set_index("entry")
    assert frame.at["ref", "score"] == 2.0 and pd.isna(frame.at["hidden", "score"])
    threshold = with_rules(rule="threshold", target=0.9, max_macs=5000)
    records = make_records(threshold, {"counted": (1000, 0.92, 2000), "hidden": (1000, 0.92, 0)})
    for record in records:
        record["macs_lower_bound"] = record["entry"] == "hidden"
    verdicts = dict(zip(*[leaderboard.board(records, threshold)[column] for column in ("entry", "failed_criteria")]))
    assert verdicts == {"counted": "", "hidden": "MACs ≥ 0, a lower bound, not a count within 5,000"}
