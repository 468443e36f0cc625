"""A dataset of one's own (an .npz, an IDX folder) and CIFAR's pickles: each file here is made by the test, nothing is
downloaded. The class count and the example shape come from the data and reach the entry, the records and the
board; every fault of a file is reported when the settings load, before any worker starts."""

from __future__ import annotations

import dataclasses
import json
import pickle
import re

import numpy as np
import pytest

from bench import cli, config, data
from test_data_config import write_idx

SHAPES = ("circle", "square", "triangle", "cross", "ring")


def shapes5(path, train=250, test=100, seed=0):
    """32x32x3 uint8 images of five coloured shapes on a noisy dark ground, labels 0..4 (SHAPES' order)."""
    rng = np.random.default_rng(seed)
    n = train + test
    labels = np.arange(n) % 5
    rng.shuffle(labels)
    yy, xx = np.mgrid[:32, :32]
    images = rng.integers(0, 40, (n, 32, 32, 3)).astype(np.uint8)
    for image, label in zip(images, labels):
        cy, cx, r = *rng.integers(10, 22, 2), rng.integers(6, 9)
        dy, dx = yy - cy, xx - cx
        mask = [dy**2 + dx**2 <= r**2, (abs(dy) <= r) & (abs(dx) <= r), (dy <= r) & (abs(dx) <= (dy + r) / 2) & (dy >= -r),
                (abs(dy) <= 1) & (abs(dx) <= r) | (abs(dx) <= 1) & (abs(dy) <= r),
                (dy**2 + dx**2 <= r**2) & (dy**2 + dx**2 >= (r - 2) ** 2)][label]
        image[mask] = rng.integers(120, 256, 3)
    np.savez(path, x_train=images[:train], y_train=labels[:train], x_test=images[train:], y_test=labels[train:])
    return path


def features160(path, train=300, test=100, seed=0):
    """Float32 vectors of 160 features from five Gaussian clusters, labels 0..4."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 1, (5, 160)).astype("float32")
    labels = np.arange(train + test) % 5
    x = (centres[labels] + rng.normal(0, 1.5, (len(labels), 160))).astype("float32")
    np.savez(path, x_train=x[:train], y_train=labels[:train], x_test=x[train:], y_test=labels[train:])
    return path


LINEAR_ENTRY = '''
    """One softmax layer on the features."""
    import keras

    TRAINING = {"learning_rate": 0.05, "batch_size": 16}

    def build_model(input_shape, num_classes):
        inputs = keras.Input(input_shape)
        return keras.Model(inputs, keras.layers.Dense(num_classes, activation="softmax")(inputs))
'''


def board_and_record(tmp_path, dataset, entry):
    record = json.loads((tmp_path / "results" / dataset / entry / "seed0.json").read_text())
    return (tmp_path / "board.md").read_text(), record


def test_colour_npz_new_check_evaluate(tmp_path, capsys):
    """A teacher's colour dataset through the config table: `new` writes a starter for 32x32x3 images and 5 classes,
    `check` passes it, and a short evaluate on the batch-minor engine records the dataset's name, shape and classes."""
    shapes5(tmp_path / "shapes.npz")
    settings = tmp_path / "pyproject.toml"
    settings.write_text(f'[tool.bench]\nseeds = 1\nmax_epochs = 2\nengine = "jax"\nsandbox = "off"\n'
                        f'results = "{tmp_path / "results"}"\nleaderboard = "{tmp_path / "board.md"}"\n'
                        f'[tool.bench.dataset]\npath = "{tmp_path / "shapes.npz"}"\nname = "shapes5"\n'
                        f'classes = {json.dumps(list(SHAPES))}\ndescription = "coloured shapes on a dark ground"\n')
    folder = tmp_path / "submissions"
    assert cli.main(["new", "ada", "--config", str(settings), "--submissions", str(folder)]) == 0
    starter = (folder / "ada.py").read_text()
    assert "(32, 32, 3) for shapes5" in starter and "Reshape" not in starter and "453 parameters in all" in starter
    assert cli.main(["check", str(folder / "ada.py"), "--config", str(settings)]) == 0
    assert "453 params" in capsys.readouterr().out  # 4*(27+1) + 8*(36+1) + 5*(8+1): a 5-class head, not 10
    assert cli.main(["evaluate", str(folder), "--config", str(settings)]) == 0
    board, record = board_and_record(tmp_path, "shapes5", "ada")
    assert record["status"] == "OK" and record["total_params"] == 453 and record["dataset"] == "shapes5"
    assert record["engine"] != "keras-tensorflow", record.get("notes")  # colour inputs and 5 classes on the engine
    assert record["data"] == {"name": "shapes5", "input_shape": [32, 32, 3], "num_classes": 5, "train": 225, "validation": 25,
                              "test": 100, "source": str(tmp_path / "shapes.npz"), "classes": list(SHAPES),
                              "description": "coloured shapes on a dark ground"}
    assert "- Dataset: **shapes5**" in board
    assert ("- Data: coloured shapes on a dark ground; 32x32x3 images, 5 classes (circle, square, triangle, cross, ring); "
            f"225 training + 25 validation examples, 100 test; from `{tmp_path / 'shapes.npz'}`") in board


def test_feature_vectors_five_classes_head_is_805(tmp_path, write_entry, capsys):
    """Float features are used as they are; a 5-class softmax on 160 features is 160*5 + 5 = 805 parameters."""
    path = features160(tmp_path / "feat160.npz")
    entry = write_entry("linear", LINEAR_ENTRY)
    common = ["--dataset", str(path), "--sandbox", "off"]
    # `new` fits its starter to the file: Dense layers on the 160 features, 8 * 161 + 5 * 9 = 1,333 parameters.
    assert cli.main(["new", "starter", "--dataset", str(path), "--submissions", str(entry.parent)]) == 0
    assert "(160,) for feat160" in (entry.parent / "starter.py").read_text()
    assert cli.main(["check", str(entry.parent), *common]) == 0
    out = capsys.readouterr().out
    assert re.search(r"OK +linear +805 params", out) and re.search(r"OK +starter +1,333 params", out), out
    assert cli.main(["evaluate", str(entry), *common, "--seeds", "1", "--epochs", "3", "--engine", "jax",
                     "--results", str(tmp_path / "results"), "--leaderboard", str(tmp_path / "board.md")]) == 0
    board, record = board_and_record(tmp_path, "feat160", "linear")  # named after the file's stem
    assert record["status"] == "OK" and record["total_params"] == 805 and record["macs"] == 800
    assert record["engine"] != "keras-tensorflow", record.get("notes")  # the batch-minor engine runs feature vectors too
    assert record["data"]["input_shape"] == [160] and record["data"]["num_classes"] == 5
    assert record["test_accuracy"] > 0.5  # well above chance (0.2): the features reached the model unscaled
    assert "- Data: vectors of 160 features, 5 classes; 270 training + 30 validation examples, 100 test" in board
    assert (tmp_path / "results" / "feat160" / "linear").is_dir() and not (tmp_path / "results" / "mnist").exists()


@pytest.mark.parametrize("stem", ["f", "digits"])  # a file named like a built-in is still a file: not scaled as digits are
def test_float_features_are_not_rescaled(tmp_path, stem):
    dataset = data.load(str(features160(tmp_path / f"{stem}.npz", train=20, test=10)))
    with np.load(tmp_path / f"{stem}.npz") as f:
        np.testing.assert_array_equal(dataset.x_train, f["x_train"])
    assert dataset.num_classes == 5 and dataset.name == stem


def faulty(tmp_path, fault):
    """A small grey .npz with one fault; the text the message must hold."""
    rng = np.random.default_rng(0)
    arrays = {"x_train": rng.integers(0, 256, (40, 8, 8), dtype=np.uint8), "y_train": np.arange(40) % 4,
              "x_test": rng.integers(0, 256, (12, 8, 8), dtype=np.uint8), "y_test": np.arange(12) % 4}
    expected = {
        "missing": ("y_test", "the array y_test is missing: save it with np.savez(path, y_test=...)"),
        "shapes": ("x_test", "x_train's examples have shape (8, 8) but x_test's (9, 8): both splits need one shape"),
        "count": ("y_train", "y_train has shape (39,), expected (40,): one integer label per example of x_train"),
        "negative": ("y_train", "y_train holds negative labels (-1): number the classes 0..K-1"),
        "absent": ("y_train", "classes 2 of 0..3 have no training example"),
        "one_class": ("y_train", "the labels name 1 class: a classification dataset needs at least 2"),
        "float_labels": ("y_train", "y_train is float64: labels are integers 0..K-1"),
        "nan": ("x_train", "x_train holds NaN or infinite values in 1 example(s): fill or drop them before saving"),
        "dtype": ("x_train", "x_train is int32: save images as uint8 pixels 0-255"),
    }[fault]
    if fault == "missing":
        del arrays["y_test"]
    elif fault == "shapes":
        arrays["x_test"] = rng.integers(0, 256, (12, 9, 8), dtype=np.uint8)
    elif fault == "count":
        arrays["y_train"] = arrays["y_train"][:39]
    elif fault == "negative":
        arrays["y_train"] = arrays["y_train"] - 1
    elif fault == "absent":
        arrays["y_train"] = np.where(arrays["y_train"] == 2, 1, arrays["y_train"])
    elif fault == "one_class":
        arrays["y_train"], arrays["y_test"] = np.zeros(40, int), np.zeros(12, int)
    elif fault == "float_labels":
        arrays["y_train"] = arrays["y_train"].astype(float)
    elif fault == "nan":
        arrays["x_train"] = arrays["x_train"].astype("float32")
        arrays["x_test"] = arrays["x_test"].astype("float32")
        arrays["x_train"][3, 2, 2] = np.nan
    elif fault == "dtype":
        arrays["x_train"] = arrays["x_train"].astype("int32")
    np.savez(tmp_path / "bad.npz", **{k: v for k, v in arrays.items()})
    return tmp_path / "bad.npz", expected[1]


@pytest.mark.parametrize("fault", ["missing", "shapes", "count", "negative", "absent", "one_class", "float_labels", "nan", "dtype"])
def test_each_bad_file_is_reported_before_any_worker(tmp_path, write_entry, capsys, fault):
    path, message = faulty(tmp_path, fault)
    entry = write_entry("linear", LINEAR_ENTRY)
    for command in ("check", "evaluate"):
        code = cli.main([command, str(entry), "--dataset", str(path), "--sandbox", "off", "--results", str(tmp_path / "results")])
        out, err = capsys.readouterr()
        assert code == 2 and message in err and f"dataset {path.resolve()} cannot be used" in err, err
        assert "start" not in out and not (tmp_path / "results").exists()  # no run began, nothing was written


def test_every_fault_of_a_file_is_listed_at_once(tmp_path):
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "two.npz", x_train=rng.integers(0, 256, (20, 8, 8), dtype=np.uint8), y_train=np.arange(20) % 2 - 1,
             x_test=rng.integers(0, 256, (5, 7, 8), dtype=np.uint8), y_test=np.arange(5) % 2)
    with pytest.raises(config.ConfigError) as error:
        config.from_dict({"dataset": str(tmp_path / "two.npz")}, "pyproject.toml")
    assert "x_train's examples have shape (8, 8) but x_test's (7, 8)" in str(error.value)
    assert "y_train holds negative labels (-1)" in str(error.value)


def test_unknown_name_and_missing_file_say_what_to_give(tmp_path):
    with pytest.raises(config.ConfigError, match=r"unknown dataset 'shapes5': choose one of mnist, fashion_mnist, digits, cifar10"):
        config.from_dict({"dataset": "shapes5"})
    with pytest.raises(config.ConfigError, match=r"no such file or folder; give an \.npz holding x_train"):
        config.from_dict({"dataset": str(tmp_path / "nothing.npz")})


def test_config_table_names_and_classes_are_checked(tmp_path):
    path = str(shapes5(tmp_path / "s.npz", train=20, test=10))
    with pytest.raises(config.ConfigError, match="classes lists 2 name\\(s\\), but .* make 5 classes"):
        config.from_dict({"dataset": {"path": path, "classes": ["a", "b"]}})
    with pytest.raises(config.ConfigError, match="is a built-in dataset's"):
        config.from_dict({"dataset": {"path": path, "name": "mnist"}})
    with pytest.raises(config.ConfigError, match=r"\[tool.bench.dataset\] has unknown key\(s\) \['label'\]"):
        config.from_dict({"dataset": {"path": path, "label": "x"}})
    assert config.from_dict({"dataset": {"path": path, "name": "shapes"}}).board_name == "shapes"


def test_file_cache_key_follows_content_not_path(tmp_path):
    """The protocol names the file by its board name, so the same file elsewhere keeps its records; the content
    joins the key through the fingerprint."""
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    one, two = shapes5(tmp_path / "a" / "s.npz", 20, 10), shapes5(tmp_path / "b" / "s.npz", 20, 10)
    first, second = (config.from_dict({"dataset": str(p)}) for p in (one, two))
    assert first.protocol_hash() == second.protocol_hash() and first.protocol()["dataset"] == "s"
    assert data.load(str(one)).fingerprint() == data.load(str(two)).fingerprint()
    assert data.load(str(shapes5(tmp_path / "c.npz", 20, 10, seed=1))).fingerprint() != data.load(str(one)).fingerprint()


def test_default_validation_is_stratified_over_the_files_classes(tmp_path):
    dataset = data.load(str(shapes5(tmp_path / "s.npz", train=250, test=10)))
    (_, y_fit), (_, y_val) = data.split_validation(dataset.x_train, dataset.y_train, None)
    assert len(y_val) == 25 and np.bincount(y_val).tolist() == [5] * 5  # 10 %, every class alike
    # Seven classes, 40 images: 10 % would be 4, fewer than the classes; the default takes one of each.
    (_, _), (_, y_val) = data.split_validation(np.zeros((42, 3)), np.arange(42) % 7, None)
    assert sorted(y_val.tolist()) == list(range(7))


def test_hidden_test_set_must_match_the_files_shape(tmp_path, write_entry, capsys):
    path = shapes5(tmp_path / "s.npz", train=50, test=10)
    np.savez(tmp_path / "hidden.npz", x_test=np.zeros((5, 28, 28), np.uint8), y_test=np.zeros(5, int))
    entry = write_entry("linear", LINEAR_ENTRY)
    assert cli.main(["evaluate", str(entry), "--dataset", str(path), "--test-set", str(tmp_path / "hidden.npz"),
                     "--sandbox", "off", "--results", str(tmp_path / "results")]) == 2
    assert "images of shape (28, 28, 3)" not in (err := capsys.readouterr().err)
    assert "hidden test set" in err and "images of shape (28, 28), but s's images have shape (32, 32, 3)" in err


def test_idx_folder_of_ones_own(tmp_path):
    folder = tmp_path / "letters3"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name, array in {"train-images-idx3-ubyte": rng.integers(0, 256, (30, 12, 12)), "train-labels-idx1-ubyte": np.arange(30) % 3,
                        "t10k-images-idx3-ubyte": rng.integers(0, 256, (9, 12, 12)), "t10k-labels-idx1-ubyte": np.arange(9) % 3}.items():
        write_idx(folder / (name + ".gz"), array, True)
    challenge = config.from_dict({"dataset": str(folder)})
    dataset = data.load(challenge.dataset)
    assert challenge.board_name == "letters3" and dataset.num_classes == 3 and dataset.input_shape == (12, 12)
    (folder / "t10k-labels-idx1-ubyte.gz").unlink()
    data.datafile._summary.cache_clear()
    with pytest.raises(config.ConfigError, match="lacks the IDX file\\(s\\) t10k-labels-idx1-ubyte"):
        config.from_dict({"dataset": str(folder)})


def cifar_folder(root, per_batch=20):
    """A CIFAR-10 folder as distributed, in miniature: five training pickles and a test pickle of flat
    channel-major rows (red plane, green plane, blue plane), Python 2 style bytes keys."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        images = rng.integers(0, 256, (per_batch, 3, 32, 32), dtype=np.uint8)
        with open(folder / name, "wb") as f:
            pickle.dump({b"data": images.reshape(per_batch, 3072), b"labels": list(np.arange(per_batch) % 10)}, f)
    return folder


def test_cifar10_pickle_folder_is_found_and_read(tmp_path, monkeypatch):
    monkeypatch.delenv(data.DATA_DIR_ENV, raising=False)
    folder = cifar_folder(tmp_path / "cifar10")  # in the cifar10/ subfolder of --data-dir, as the search order says
    dataset = data.load("cifar10", str(tmp_path))
    assert dataset.source == str(folder) and dataset.x_train.shape == (100, 32, 32, 3) and dataset.x_test.shape == (20, 32, 32, 3)
    with open(folder / "data_batch_2", "rb") as f:
        raw = pickle.load(f, encoding="bytes")[b"data"]
    # Pixel (row 4, column 7) of the second batch's first image: red, green and blue from their planes.
    np.testing.assert_array_equal(dataset.x_train[20, 4, 7] * 255, [raw[0, 4 * 32 + 7], raw[0, 1024 + 4 * 32 + 7], raw[0, 2048 + 4 * 32 + 7]])
    assert dataset.y_train[:12].tolist() == [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1] and dataset.num_classes == 10


def test_cifar10_npz_labels_of_shape_n_by_1(tmp_path, monkeypatch):
    monkeypatch.delenv(data.DATA_DIR_ENV, raising=False)
    np.savez(tmp_path / "cifar10.npz", x_train=np.zeros((20, 32, 32, 3), np.uint8), y_train=(np.arange(20) % 10)[:, None],
             x_test=np.zeros((10, 32, 32, 3), np.uint8), y_test=(np.arange(10) % 10)[:, None])
    dataset = data.load("cifar10", str(tmp_path))
    assert dataset.y_train.shape == (20,) and dataset.input_shape == (32, 32, 3)


def test_cifar10_missing_lists_the_places_it_looked(tmp_path, monkeypatch):
    """Offline and without a copy: the message names the places searched and the folder to provide. keras.datasets
    is made to fail as it does without network."""
    import keras

    monkeypatch.delenv(data.DATA_DIR_ENV, raising=False)
    monkeypatch.setattr(keras.datasets.cifar10, "load_data", lambda: (_ for _ in ()).throw(OSError("no network")))
    with pytest.raises(data.DataError) as error:
        data.load("cifar10", str(tmp_path))
    message = str(error.value)
    assert f"{tmp_path}/cifar10.npz" in message and f"{tmp_path}/cifar-10-batches-py/" in message
    assert "keras.datasets.cifar10.load_data(), which failed: no network" in message and "cifar-10-batches-py folder" in message


def test_cifar_format_folder_check_and_evaluate(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv(data.DATA_DIR_ENV, raising=False)
    cifar_folder(tmp_path / "data")
    settings = tmp_path / "pyproject.toml"
    settings.write_text(f'[tool.bench]\ndataset = "cifar10"\nseeds = 1\nmax_epochs = 1\nsandbox = "off"\n'
                        f'results = "{tmp_path / "results"}"\nleaderboard = "{tmp_path / "board.md"}"\n')
    folder = tmp_path / "submissions"
    assert cli.main(["new", "bob", "--config", str(settings), "--submissions", str(folder)]) == 0
    flags = ["--config", str(settings), "--data-dir", str(tmp_path / "data")]
    assert cli.main(["check", str(folder), *flags]) == 0
    assert "498 params" in capsys.readouterr().out  # 4*(27+1) + 296 + 10*(8+1)
    assert cli.main(["evaluate", str(folder), *flags]) == 0
    board, record = board_and_record(tmp_path, "cifar10", "bob")
    assert record["status"] == "OK" and record["total_params"] == 498 and record["data"]["input_shape"] == [32, 32, 3]
    assert "32x32x3 images, 10 classes; 90 training + 10 validation examples, 20 test" in board


def test_another_dataset_takes_the_default_validation_rule_when_the_count_does_not_fit(tmp_path, capsys):
    """[tool.bench]'s 5,000 validation images were set for MNIST; a try-out on a file of 300 examples takes the default
    rule (10 %) and says so, while the same count set beside that file in [tool.bench] is refused as before."""
    path = features160(tmp_path / "feat160.npz")
    settings = tmp_path / "pyproject.toml"
    settings.write_text("[tool.bench]\nvalidation_size = 5000\n")
    args = cli.build_parser().parse_args(["evaluate", "--config", str(settings), "--dataset", str(path)])
    assert config.load_challenge(args).validation_size is None
    assert "validation_size = 5000 does not fit feat160's 300 training images; this run takes 5,000" in capsys.readouterr().err
    settings.write_text(f'[tool.bench]\nvalidation_size = 5000\ndataset = "{path}"\n')
    args = cli.build_parser().parse_args(["evaluate", "--config", str(settings)])
    assert config.load_challenge(args).validation_size == 5000  # refused by the split, before any worker (test_classroom)


def test_hidden_test_set_of_features_is_float_and_of_images_is_raw_pixels(tmp_path):
    from bench import classroom

    path = features160(tmp_path / "f.npz", train=50, test=10)
    np.savez(tmp_path / "hidden.npz", x_test=np.full((4, 160), 2.5, np.float32), y_test=np.arange(4))
    challenge = config.from_dict({"dataset": str(path), "test_set": str(tmp_path / "hidden.npz")})
    hidden = classroom.hidden_test_set(challenge)
    assert hidden.images.dtype == np.float32 and hidden.images.max() == 2.5  # used as they are, like the file's own
    classroom.check_test_set(challenge, (160,), 5)
    np.savez(tmp_path / "pixels.npz", x_test=np.zeros((4, 160), np.uint8), y_test=np.arange(4))
    with pytest.raises(config.ConfigError, match="x_test must hold float features as f's file does"):
        classroom.hidden_test_set(dataclasses.replace(challenge, test_set=str(tmp_path / "pixels.npz")))


def test_cifar100_pickle_folder_reads_the_fine_labels(tmp_path, monkeypatch):
    monkeypatch.delenv(data.DATA_DIR_ENV, raising=False)
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name, count in (("train", 200), ("test", 100)):
        with open(folder / name, "wb") as f:
            pickle.dump({b"data": rng.integers(0, 256, (count, 3072), dtype=np.uint8), b"fine_labels": list(np.arange(count) % 100),
                         b"coarse_labels": list(np.arange(count) % 20)}, f)
    dataset = data.load("cifar100", str(folder))  # --data-dir may name the folder itself
    assert dataset.num_classes == 100 and dataset.y_train.max() == 99 and dataset.x_test.shape == (100, 32, 32, 3)


def test_smoke_settings_fit_a_small_file(tmp_path):
    """[tool.bench.smoke]'s defaults (a 0.2 validation split, limits above the file's size) fit a file of 300 examples."""
    path = features160(tmp_path / "feat160.npz")
    args = cli.build_parser().parse_args(["evaluate", "--smoke", "--dataset", str(path), "--config", str(tmp_path / "none.toml")])
    challenge = config.load_challenge(args)
    dataset = data.load(challenge.dataset, train_limit=challenge.train_limit, test_limit=challenge.test_limit)
    (_, y_fit), (_, y_val) = data.split_validation(dataset.x_train, dataset.y_train, challenge.validation_size)
    assert len(y_fit) == 240 and np.bincount(y_val).tolist() == [12] * 5


# ---- a newcomer's walk-through (issue 30) ----------------------------------------------------------------------

def test_a_dataset_named_twice_in_pyproject_is_a_message_not_a_traceback(tmp_path, monkeypatch, capsys):
    """The committed pyproject.toml has `dataset = "mnist"`; a teacher who adds a [tool.bench.dataset] table below it
    (as the classroom guide says) defined one key twice, which TOML refuses: every command said so with a traceback."""
    path = str(shapes5(tmp_path / "shapes5.npz", train=40, test=10))
    (tmp_path / "pyproject.toml").write_text(f'[tool.bench]\ndataset = "mnist"\n\n[tool.bench.dataset]\npath = "{path}"\n')
    monkeypatch.chdir(tmp_path)
    with pytest.raises(config.ConfigError, match=r"both name the dataset; keep the table and delete the `dataset = \.\.\.` line"):
        config.load(tmp_path / "pyproject.toml")
    assert cli.main(["doctor"]) == 1
    assert "FIX  the settings do not load: " in capsys.readouterr().out


def test_labels_numbered_from_one_are_named_as_such(tmp_path):
    rng = np.random.default_rng(1)
    np.savez(tmp_path / "from1.npz", x_train=rng.integers(0, 256, (40, 8, 8), dtype=np.uint8), y_train=np.arange(40) % 4 + 1,
             x_test=rng.integers(0, 256, (8, 8, 8), dtype=np.uint8), y_test=np.arange(8) % 4 + 1)
    with pytest.raises(config.ConfigError, match=r"the labels run 1\.\.4, and they must start at 0: subtract 1"):
        config.from_dict({"dataset": str(tmp_path / "from1.npz")})


def test_doctor_says_when_the_validation_size_does_not_fit_the_file(tmp_path, monkeypatch, capsys):
    path = str(shapes5(tmp_path / "shapes5.npz", train=400, test=50))
    (tmp_path / "pyproject.toml").write_text(f'[tool.bench]\nvalidation_size = 5000\n\n[tool.bench.dataset]\npath = "{path}"\n')
    (tmp_path / "submissions").mkdir()
    monkeypatch.chdir(tmp_path)
    assert cli.main(["doctor"]) == 1
    out = capsys.readouterr().out
    assert "FIX  dataset shapes5: validation_size = 5000 does not fit its 400 training examples" in out
    assert "run: set validation_size = 0.1 in [tool.bench]" in out
