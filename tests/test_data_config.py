"""Local dataset files (npz and IDX), the validation split, and [tool.bench] settings."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pytest

from bench import cli, config, data

REPO = Path(__file__).resolve().parent.parent


def write_idx(path, array, gz):
    header = bytes([0, 0, 8, array.ndim]) + b"".join(int(n).to_bytes(4, "big") for n in array.shape)
    (gzip.open if gz else open)(path, "wb").write(header + array.astype(np.uint8).tobytes())


@pytest.mark.parametrize("gz", [True, False])
def test_idx_folder_is_read(tmp_path, gz):
    rng = np.random.default_rng(0)
    arrays = {"train-images-idx3-ubyte": rng.integers(0, 256, (20, 28, 28)), "train-labels-idx1-ubyte": np.arange(20) % 10,
              "t10k-images-idx3-ubyte": rng.integers(0, 256, (6, 28, 28)), "t10k-labels-idx1-ubyte": np.arange(6) % 10}
    for name, array in arrays.items():
        write_idx(tmp_path / (name + (".gz" if gz else "")), array, gz)
    dataset = data.load("fashion_mnist", str(tmp_path))
    assert dataset.x_train.shape == (20, 28, 28) and dataset.x_test.shape == (6, 28, 28)
    assert dataset.x_train.dtype == np.float32 and dataset.x_train.max() <= 1.0
    np.testing.assert_array_equal(dataset.x_train, (arrays["train-images-idx3-ubyte"] / 255).astype("float32"))
    np.testing.assert_array_equal(dataset.y_test, arrays["t10k-labels-idx1-ubyte"])


def test_local_mnist_npz_and_limits(mnist_dir):
    dataset = data.load("mnist", mnist_dir, train_limit=1000, test_limit=200)
    assert dataset.x_train.shape == (1000, 28, 28) and dataset.x_test.shape == (200, 28, 28)
    assert list(dataset.y_train[:5]) == [5, 0, 4, 1, 9]  # the file's documented first labels
    assert dataset.input_shape == (28, 28) and dataset.source.endswith("mnist.npz")


def test_npz_missing_arrays_says_which(tmp_path):
    np.savez(tmp_path / "mnist.npz", x_train=np.zeros((2, 28, 28)))
    with pytest.raises(data.DataError, match=r"lacks the arrays \['x_test', 'y_test', 'y_train'\]"):
        data.load("mnist", str(tmp_path))


def test_fingerprint_follows_content_not_source(tmp_path, mnist_dir):
    full = data.load("mnist", mnist_dir, train_limit=100, test_limit=10)
    with np.load(f"{mnist_dir}/mnist.npz") as f:
        np.savez(tmp_path / "mnist.npz", **{k: f[k] for k in f.files})
    copy = data.load("mnist", str(tmp_path), train_limit=100, test_limit=10)
    assert copy.fingerprint() == full.fingerprint()
    assert data.load("mnist", mnist_dir, train_limit=101, test_limit=10).fingerprint() != full.fingerprint()


def test_validation_split_is_stratified_fixed_and_disjoint():
    digits = data.load("digits")
    (x_fit, y_fit), (x_val, y_val) = data.split_validation(digits.x_train, digits.y_train, 300)
    assert len(x_val) == 300 and len(x_fit) == len(digits.x_train) - 300
    counts = np.bincount(y_val, minlength=10)
    assert counts.min() >= 28 and counts.max() <= 32  # ~30 per class
    (_, _), (x_val_again, _) = data.split_validation(digits.x_train, digits.y_train, 300)
    np.testing.assert_array_equal(x_val, x_val_again)
    # Every training image lands in exactly one of the two parts.
    together = np.concatenate([x_fit, x_val]).reshape(len(digits.x_train), -1)
    original = digits.x_train.reshape(len(digits.x_train), -1)
    assert sorted(map(bytes, together)) == sorted(map(bytes, original))


def test_validation_too_large_is_a_clear_error():
    digits = data.load("digits")
    with pytest.raises(data.DataError, match="validation_size=5000 does not fit 1437 training images"):
        data.split_validation(digits.x_train, digits.y_train, 5000)


def test_unknown_dataset_lists_the_choices():
    with pytest.raises(data.DataError, match="choose one of mnist, fashion_mnist, digits"):
        data.load("cifar")


def test_config_reads_tool_bench_and_overrides(tmp_path):
    path = tmp_path / "pyproject.toml"
    path.write_text('[tool.bench]\nseeds = 2\nmax_epochs = 7\ntiers = [1000, 10]\n[tool.bench.early_stopping]\npatience = 3\n')
    challenge = config.load(path, max_epochs=4, dataset=None)
    assert challenge.seeds == 2 and challenge.max_epochs == 4 and challenge.tiers == (10, 1000)
    assert challenge.early_stopping.patience == 3 and challenge.early_stopping.monitor == "val_loss"


def test_config_unknown_key_names_the_known_ones(tmp_path):
    path = tmp_path / "pyproject.toml"
    path.write_text("[tool.bench]\nepochs = 5\n")
    with pytest.raises(config.ConfigError, match=r"unknown \[tool.bench\] setting\(s\) \['epochs'\].*max_epochs"):
        config.load(path)


def test_protocol_hash_ignores_what_does_not_change_a_run():
    base = config.Challenge()
    same = config.from_dict({"seeds": 9, "time_limit": 5, "tiers": [1], "results": "elsewhere"})
    assert same.protocol_hash() == base.protocol_hash()
    assert config.from_dict({"max_epochs": 3}).protocol_hash() != base.protocol_hash()


@pytest.mark.parametrize("value", ["ten", -1, True, 2.5])
def test_one_seed_above_must_be_a_parameter_count(value):
    with pytest.raises(config.ConfigError, match="one_seed_above must be a whole number of parameters"):
        config.from_dict({"one_seed_above": value})


def test_one_seed_above_does_not_change_the_cache_key():
    assert config.from_dict({"one_seed_above": 10_000}).protocol_hash() == config.from_dict({}).protocol_hash()


def test_help_says_defaults_and_check_lists_only_the_flags_it_uses(capsys):
    from bench import cli

    with pytest.raises(SystemExit):
        cli.main(["evaluate", "--help"])
    evaluate_help = " ".join(capsys.readouterr().out.split())
    assert "seeds per entry" in evaluate_help and "mnist, fashion_mnist, digits, cifar10, cifar100, or the path of your own .npz file or IDX folder" in evaluate_help
    with pytest.raises(SystemExit):
        cli.main(["check", "--help"])
    check_help = capsys.readouterr().out
    for flag in ("--seeds", "--epochs", "--test-set", "--leaderboard"):
        assert flag not in check_help
    assert "--dataset" in check_help and "--validation-size" in check_help


@pytest.mark.parametrize("command, absent, present", [
    ("tune", ("--seeds", "--test-set", "--test-limit", "--leaderboard", "--sandbox", "--time-limit"), ("--epochs", "--max-params")),
    ("sweep", ("--leaderboard",), ("--seeds", "--sandbox", "--grid")),
])
def test_tune_and_sweep_help_list_only_the_flags_they_use(capsys, command, absent, present):
    from bench import cli

    with pytest.raises(SystemExit):
        cli.main([command, "--help"])
    shown = capsys.readouterr().out
    assert not [flag for flag in absent if flag in shown] and all(flag in shown for flag in present)


def test_the_default_validation_size_fits_any_dataset_and_keeps_mnist_at_5000():
    """Left out, validation_size is 5,000 images from a split of 50,000 or more, else 10 % of it (stratified)."""
    assert config.Challenge().validation_size is None and config.from_dict({}).validation_size is None
    assert data.validation_count(None, 60_000) == 5000 and data.validation_count(None, 50_000) == 5000
    assert data.validation_count(None, 1437) == 144 and data.validation_count(None, 2000) == 200
    digits = data.load("digits")
    (x_fit, y_fit), (x_val, y_val) = data.split_validation(digits.x_train, digits.y_train, None)
    assert len(x_val) == 144 and len(x_fit) == 1437 - 144 and set(y_val) == set(range(10))


def test_a_validation_count_that_does_not_fit_says_the_default_rule():
    digits = data.load("digits")
    with pytest.raises(data.DataError, match="leave the setting out for 5,000 images when the training split has at least "
                                             "50,000, else 10 % of it"):
        data.split_validation(digits.x_train, digits.y_train, 1000)


def test_a_train_limit_try_out_under_the_committed_count_takes_the_default_rule(tmp_path, capsys):
    """`--train-limit 2000` on a challenge of 5,000 validation images: the run takes the rule and says so; a
    --validation-size given beside it is taken as it is."""
    (tmp_path / "pyproject.toml").write_text("[tool.bench]\nvalidation_size = 5000\n")
    parser = cli.build_parser()
    limited = config.load_challenge(parser.parse_args(["evaluate", "--config", str(tmp_path / "pyproject.toml"), "--train-limit", "2000"]))
    assert limited.validation_size is None and "does not fit --train-limit 2000" in capsys.readouterr().err
    given = config.load_challenge(parser.parse_args(["evaluate", "--config", str(tmp_path / "pyproject.toml"),
                                                     "--train-limit", "2000", "--validation-size", "300"]))
    assert given.validation_size == 300
    fits = config.load_challenge(parser.parse_args(["evaluate", "--config", str(tmp_path / "pyproject.toml"), "--train-limit", "20000"]))
    assert fits.validation_size == 5000


def test_the_committed_validation_count_keeps_the_committed_records_cache_keys():
    """The committed pyproject's `validation_size = 5000` hashes as before the default changed: its records stay cached."""
    challenge = config.load(REPO / "pyproject.toml")
    keys = [json.loads(path.read_text()).get("key", {}).get("config") for path in (REPO / challenge.results).glob("*/*/seed0.json")]
    if not keys:
        pytest.skip("this fork has no committed records")
    assert challenge.protocol_hash() in keys
