"""Scores nobody can forge: entries that try, as a student after a better grade would, each end with the
score their model earns (or a clear status), and nothing they can reach decides a number on the board.

The cases in tests/cases/ are the files that broke the harness before it trained in a sandbox and
scored the exported model (issue 13); each has an honest twin here that must score exactly the same.
All entries are evaluated once, on digits, with one seed and two epochs, two at a time, in bubblewrap.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import numpy as np
import pytest

import sklearn

import bench
from bench import cli, config, data, sandbox
from conftest import run_in_process

CASES = Path(__file__).parent / "cases"
BENCH_DIR = Path(bench.__file__).resolve().parent
FLAGS = ["--dataset", "digits", "--validation-size", "300", "--seeds", "1", "--epochs", "2", "--sandbox", "required"]

SOFTMAX_REGRESSION = '''
import keras

def build_model(input_shape, num_classes):
    inputs = keras.Input(input_shape)
    x = keras.layers.Flatten()(inputs)
    outputs = keras.layers.Dense(num_classes, activation="softmax")(x)
    return keras.Model(inputs, outputs)
'''

# Each looks for a way out of the sandbox and raises, naming what it found, when there is one:
# so an OK status means it found nothing. {paths} are filled in with this test's real paths.
PROBES = {
    "harness_rewriter": '''
        import os, bench
        from pathlib import Path
        def build_model(input_shape, num_classes):
            found = []
            for target in [Path(bench.__file__).parent / "train.py", Path({bench_dir!r}) / "audit.py", Path({rival!r})]:
                try:
                    with open(target, "a"):  # opening to append changes nothing, but proves the file is writable
                        found.append(f"{{target}} is writable")
                except OSError:
                    pass
            if found:
                raise RuntimeError("; ".join(found))
            return small(input_shape, num_classes)
    ''',
    "proc_hunter": '''
        import os
        from pathlib import Path
        def build_model(input_shape, num_classes):
            found = []
            for pid in [p for p in os.listdir("/proc") if p.isdigit()]:
                for part in ("cmdline", "environ"):
                    try:
                        text = Path(f"/proc/{{pid}}/{{part}}").read_bytes().decode(errors="replace")
                    except OSError:
                        continue
                    if "test-set" in text or "BENCH_TEST_SET" in text or "hidden" in text:
                        found.append(f"/proc/{{pid}}/{{part}} names the hidden test set")
            for secret in ({hidden!r}, {dataset!r}, {submissions!r}, {results!r}):
                if os.path.exists(secret):
                    found.append(f"{{secret}} is visible")
            # Labelled copies of the datasets that ship with packages (scikit-learn's digits) are hidden too.
            if os.path.isdir({sklearn_data!r}) and os.listdir({sklearn_data!r}):
                found.append("scikit-learn's dataset files are visible")
            # Training gets its arrays and the validation images, not their labels nor the images the audit will score.
            arrays = set(os.listdir("/data"))
            if arrays != {{"x_fit.npy", "y_fit.npy", "x_val.npy"}}:
                found.append(f"/data holds {{sorted(arrays)}}")
            if len([p for p in os.listdir("/proc") if p.isdigit()]) > 8:
                found.append("sees the machine's processes")
            if found:
                raise RuntimeError("; ".join(found))
            return small(input_shape, num_classes)
    ''',
    "network_caller": '''
        import socket
        def build_model(input_shape, num_classes):
            try:
                socket.create_connection(("127.0.0.1", 22), timeout=2).close()
                reachable = True
            except OSError:
                reachable = False
            interfaces = [name for _, name in socket.if_nameindex()]
            if reachable or any(name != "lo" for name in interfaces):
                raise RuntimeError(f"network reachable: {{interfaces}}")
            return small(input_shape, num_classes)
    ''',
    # A graph that reads a file when it runs: the audit refuses it before running it.
    "file_reader": '''
        import keras, tensorflow as tf
        def build_model(input_shape, num_classes):
            inputs = keras.Input(input_shape)
            peek = keras.layers.Lambda(lambda x: x + 0.0 * tf.cast(tf.strings.length(tf.io.read_file(__file__)), "float32"))
            x = keras.layers.Flatten()(peek(inputs))
            return keras.Model(inputs, keras.layers.Dense(num_classes, activation="softmax")(x))
    ''',
    # Links left in the output folder after the export: the runner must not follow them, and must fail
    # this run alone (it once aborted the whole evaluation).
    "link_leaver": '''
        import atexit, os
        atexit.register(lambda: os.symlink("/", "/out/root"))  # beside model.keras, the trained model
        def build_model(input_shape, num_classes):
            return small(input_shape, num_classes)
    ''',
    # A result file rewritten at exit with a history that is not one (data smuggled onto the board).
    "history_forger": '''
        import atexit, json, os
        def forge():
            path = os.path.join("/out", "result.json")
            record = json.load(open(path))
            record["history"] = {{"loss": list(range(100000))}}
            json.dump(record, open(path, "w"))
        atexit.register(forge)
        def build_model(input_shape, num_classes):
            return small(input_shape, num_classes)
    ''',
}
SMALL = '''
import keras
def small(input_shape, num_classes):
    return keras.Sequential([keras.Input(input_shape), keras.layers.Flatten(), keras.layers.Dense(num_classes, activation="softmax")])
'''


def sha256_tree(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*.py")) if "__pycache__" not in p.parts}


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory, mnist_dir):
    """Every case and probe evaluated once with a hidden test set; (folder, records by entry, exit code, harness hashes)."""
    tmp = tmp_path_factory.mktemp("integrity")
    folder = tmp / "submissions"
    folder.mkdir()
    for name in ("fc_07_frame_walker", "fc_10_partly_built", "fc_11_constant_templates", "fc_22_forged_record"):
        shutil.copy(CASES / f"{name}.py", folder)
    # The twin is also the other student whose file the probes must not reach (a second copy of it would only
    # train the same model again).
    (folder / "honest_twin.py").write_text('"""The softmax regression of fc_07 and fc_22, without the tricks."""\n' + SOFTMAX_REGRESSION)
    digits = data.load("digits")
    hidden = tmp / "outside_the_repo" / "hidden.npz"
    hidden.parent.mkdir()
    np.savez(hidden, x_test=(digits.x_test * 16).round().astype("uint8"), y_test=digits.y_test)
    paths = {"bench_dir": str(BENCH_DIR), "rival": str(folder / "honest_twin.py"), "hidden": str(hidden),
             "dataset": str(Path(mnist_dir) / "mnist.npz"), "submissions": str(folder), "results": str(tmp / "results"),
             "sklearn_data": str(Path(sklearn.__file__).resolve().parent / "datasets" / "data")}
    for name, source in PROBES.items():
        (folder / f"{name}.py").write_text(f'"""Probe: {name}."""\n' + SMALL + textwrap.dedent(source.format(**paths)))
    harness_before, rival_before = sha256_tree(BENCH_DIR), (folder / "honest_twin.py").read_bytes()
    os.environ[config.TEST_SET_ENV] = str(hidden)
    try:
        code = cli.main(["evaluate", str(folder), *FLAGS, "--jobs", "2", "--test-set", str(hidden), "--max-params", "5000",
                         "--results", str(tmp / "results"), "--leaderboard", str(tmp / "board.md")])
    finally:
        del os.environ[config.TEST_SET_ENV]
    records = {p.parent.name: json.loads(p.read_text()) for p in (tmp / "results" / "digits").glob("*/seed0.json")}
    assert sha256_tree(BENCH_DIR) == harness_before and (folder / "honest_twin.py").read_bytes() == rival_before
    return {"tmp": tmp, "records": records, "code": code}


def test_every_run_trained_in_bubblewrap(evaluated):
    assert evaluated["code"] == 0
    assert {r["sandbox"] for r in evaluated["records"].values()} == {"bubblewrap"}


def test_a_forged_result_file_scores_what_its_model_earns(evaluated):
    """fc_22 rewrites its result file at exit: the harness takes no number from that file."""
    forged, twin = evaluated["records"]["fc_22_forged_record"], evaluated["records"]["honest_twin"]
    assert forged["status"] == twin["status"] == "OK"
    assert forged["test_accuracy"] == twin["test_accuracy"] < 0.99


def test_the_frame_walker_finds_no_test_split_and_scores_as_its_twin(evaluated):
    """fc_07 walks the stack for x_test/y_test and patches predict(): training never holds them, and predict() is not what scores."""
    walker, twin = evaluated["records"]["fc_07_frame_walker"], evaluated["records"]["honest_twin"]
    assert walker["status"] == "OK"
    assert walker["test_accuracy"] == twin["test_accuracy"]


def test_the_harness_and_other_entries_cannot_be_rewritten(evaluated):
    record = evaluated["records"]["harness_rewriter"]
    assert record["status"] == "OK", record["message"]


def test_no_process_outside_the_sandbox_no_hidden_set_no_dataset_and_no_checkout_is_visible(evaluated):
    record = evaluated["records"]["proc_hunter"]
    assert record["status"] == "OK", record["message"]


def test_links_in_the_output_fail_that_run_only(evaluated):
    record = evaluated["records"]["link_leaver"]
    assert record["status"] == "FAILED" and "not a plain file or folder" in record["message"]
    assert evaluated["records"]["honest_twin"]["status"] == "OK"  # the run beside it


def test_a_forged_history_fails_its_run(evaluated):
    record = evaluated["records"]["history_forger"]
    assert record["status"] == "FAILED" and "malformed history" in record["message"]
    assert len(json.dumps(record)) < 20_000


def test_there_is_no_network(evaluated):
    record = evaluated["records"]["network_caller"]
    assert record["status"] == "OK", record["message"]


def test_a_graph_that_reads_files_is_invalid(evaluated):
    record = evaluated["records"]["file_reader"]
    assert record["status"] == "INVALID"
    assert "ReadFile" in record["message"] and "files" in record["message"]


def test_a_partly_built_subclassed_model_counts_every_weight(evaluated):
    """fc_10 builds its head in __init__ and its body on first call: 19,210 weights, over a 5,000 budget."""
    record = evaluated["records"]["fc_10_partly_built"]
    assert record["status"] == "OVER_BUDGET"
    assert "19,210 parameters" in record["message"] and "5,000" in record["message"]


def test_a_fitted_table_kept_as_a_constant_counts_as_parameters(tmp_path):
    """fc_11 keeps 640 class means and 10 biases as graph constants, beside one trainable weight. It fits
    them on scikit-learn's copy of digits, which the sandbox hides, so it is counted here, unsandboxed."""
    folder = tmp_path / "submissions"
    folder.mkdir()
    record = run_in_process(Path(shutil.copy(CASES / "fc_11_constant_templates.py", folder)), max_params=5000)
    assert record["status"] == "OK"
    assert record["embedded_constants"] == 650 and record["total_params"] == 651 and record["trainable_params"] == 1


def test_the_dataset_files_that_ship_with_packages_are_hidden_in_the_sandbox(evaluated):
    """Sandboxed, fc_11 cannot read scikit-learn's digits (test labels included) to fit its table."""
    record = evaluated["records"]["fc_11_constant_templates"]
    assert record["status"] == "FAILED" and "digits.csv.gz" in record["message"]


def test_the_hidden_test_set_is_scored(evaluated):
    records = evaluated["records"]
    assert all("hidden.npz" in r["test_set"] for r in records.values() if r["status"] == "OK")


VANDAL = '''"""Writes into the records of the run beside it, then trains as usual."""
import time
from pathlib import Path
import keras
RESULTS = Path({results!r})

def build_model(input_shape, num_classes):
    time.sleep(2)  # the honest run beside it is in flight by now
    for record in RESULTS.rglob("*.json"):
        record.write_text("{{}}")
    (RESULTS / "planted.json").write_text("{{}}")
    return keras.Sequential([keras.Input(input_shape), keras.layers.Flatten(), keras.layers.Dense(num_classes, activation="softmax")])
'''


@pytest.mark.parametrize("mode", ["required", "off"])
def test_a_vandal_beside_an_honest_run_is_the_one_that_fails(tmp_path, mode, capsys):
    """Two runs at once: the vandal writes into results/ while the honest run trains. In the sandbox it
    cannot reach them; without one its change is undone and the two train again one at a time."""
    folder = tmp_path / "submissions"
    folder.mkdir()
    results_dir = tmp_path / "results"
    (results_dir / "digits" / "earlier" / "").mkdir(parents=True)
    earlier = results_dir / "digits" / "earlier" / "seed0.json"
    earlier.write_text(json.dumps({"entry": "earlier", "status": "OK", "test_accuracy": 0.5, "seed": 0}))
    (folder / "honest.py").write_text('"""Honest."""\n' + SOFTMAX_REGRESSION.replace("import keras", "import keras, time"))
    (folder / "vandal.py").write_text(VANDAL.format(results=str(results_dir)))
    cli.main(["evaluate", str(folder), *FLAGS[:-1], mode, "--jobs", "2",
              "--results", str(results_dir), "--leaderboard", str(tmp_path / "board.md")])
    records = {name: json.loads((results_dir / "digits" / name / "seed0.json").read_text()) for name in ("honest", "vandal")}
    assert records["honest"]["status"] == "OK"
    assert records["vandal"]["status"] == "FAILED"
    assert json.loads(earlier.read_text())["test_accuracy"] == 0.5
    assert not (results_dir / "planted.json").exists()


def test_required_without_bubblewrap_stops_before_any_work(tmp_path, write_entry, monkeypatch, capsys):
    path = write_entry("honest", SOFTMAX_REGRESSION)
    monkeypatch.setenv("PATH", str(tmp_path / "no_bwrap_here"))
    sandbox.unavailable.cache_clear()
    try:
        code = cli.main(["evaluate", str(path), *FLAGS, "--results", str(tmp_path / "results"), "--leaderboard", str(tmp_path / "board.md")])
    finally:
        sandbox.unavailable.cache_clear()
    assert code == 2
    err = capsys.readouterr().err
    assert "bubblewrap (bwrap) is not installed" in err and "apt-get install bubblewrap" in err
    assert not (tmp_path / "results").exists()


def test_an_installed_bubblewrap_that_fails_is_not_told_to_be_installed(monkeypatch):
    """The install line is advice only where bwrap is missing; where it is installed and refused, the reason is."""
    monkeypatch.setattr(sandbox, "unavailable", lambda: "bubblewrap is installed but cannot start a sandbox here (x)")
    monkeypatch.setattr(sandbox.shutil, "which", lambda name: "/usr/bin/bwrap")
    said = []
    assert sandbox.resolve("auto", said.append) is False
    assert "cannot start a sandbox here" in said[0] and "apt-get" not in said[0] and 'sandbox = "off"' in said[0]
    with pytest.raises(sandbox.SandboxUnavailable) as refused:
        sandbox.resolve("required")
    assert "apt-get" not in str(refused.value) and "--sandbox off" in str(refused.value)
    monkeypatch.setattr(sandbox.shutil, "which", lambda name: None)
    sandbox.resolve("auto", said.append)
    assert "Install it with `sudo apt-get install bubblewrap" in said[1]


def test_a_python_reached_through_a_linked_folder_still_starts_the_sandbox(tmp_path):
    """A virtual environment behind a link (`ln -s ~/envs/bench .venv`): the sandbox binds folders at their real
    paths, so the worker must be started by a path that exists inside it, or every run goes unsandboxed."""
    linked = tmp_path / "linked-env"
    linked.symlink_to(Path(sys.prefix).resolve(), target_is_directory=True)
    python = linked / Path(sys.executable).relative_to(Path(sys.executable).parent.parent)
    assert python.exists()
    probe = "from bench import sandbox; print(sandbox.unavailable())"
    done = subprocess.run([str(python), "-c", probe], capture_output=True, text=True, timeout=120,
                          env={"PATH": os.environ["PATH"], "PYTHONPATH": str(BENCH_DIR.parent)})
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "None", done.stdout


def test_an_unprivileged_user_trains_in_the_sandbox(tmp_path):
    """Most users are not root: the sandbox must work for them too (as root, the run drops to `nobody`)."""
    from bench import doctor

    # As root with Python under a private folder (pyenv under /root, mode 700), `nobody` cannot start it: say so
    # and how to fix it (.ci/run does this chmod, so CI runs the test), never a raw PermissionError or a skip.
    closed = doctor.closed_folders(doctor.reached_folders()) if os.geteuid() == 0 else []
    if closed:
        pytest.fail(f"as root this test trains as the user nobody, who cannot reach this Python or bench: {', '.join(closed)} "
                    f"not searchable by others. Run `chmod o+x {' '.join(closed)}` (as .ci/run does; README \"Set up\"), "
                    "or run the tests as an unprivileged user; `python -m bench doctor` checks it", pytrace=False)
    work = Path(tempfile.mkdtemp(prefix="bench-unprivileged-"))
    try:
        (work / "submissions").mkdir()
        (work / "submissions" / "honest.py").write_text('"""Honest."""\n' + SOFTMAX_REGRESSION)
        for path in [work, *work.rglob("*")]:
            path.chmod(path.stat().st_mode | stat.S_IRWXO | stat.S_IRWXG | stat.S_IRWXU)
        command = [sys.executable, "-m", "bench", "evaluate", "submissions", *FLAGS, "--results", "results", "--leaderboard", "board.md"]
        if os.geteuid() == 0:
            command = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", *command]
        env = {"PATH": os.environ["PATH"], "PYTHONPATH": str(BENCH_DIR.parent), "HOME": str(work)}
        done = subprocess.run(command, cwd=work, env=env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-3000:]
        record = json.loads((work / "results" / "digits" / "honest" / "seed0.json").read_text())
        assert record["status"] == "OK" and record["sandbox"] == "bubblewrap", record["message"]
    finally:
        shutil.rmtree(work, ignore_errors=True)


# The audit alone, on exports made in this process: what a training process could hand it in place of
# the entry's model (it runs the entry's code, so it can export any graph it likes).
def audited(model, tmp_path, images=None):
    from bench import audit, train

    trained, out = tmp_path / "trained", tmp_path / "audit"
    for folder in (trained, out):
        folder.mkdir(parents=True)
    train.export(model, trained, tuple(model.input_shape[1:]))
    images = images if images is not None else {"val": np.random.default_rng(0).random((5, 8, 8), dtype=np.float32)}
    return audit.audit(trained, images, out)


def table_model(build_table):
    import keras

    inputs = keras.Input((8, 8))
    x = keras.layers.Flatten()(inputs)
    x = keras.layers.Lambda(lambda t: t + 0.0 * keras.ops.sum(build_table()))(x)
    return keras.Model(inputs, keras.layers.Dense(10, activation="softmax")(x))


def test_a_table_cut_into_scalars_counts(tmp_path):
    import tensorflow as tf

    values = np.random.default_rng(1).random(640).astype("float32")
    record = audited(table_model(lambda: tf.stack([tf.constant(float(v)) for v in values])), tmp_path)
    assert record["status"] == "OK"
    assert record["embedded_constants"] >= 640 - 64 and record["total_params"] >= 650 + 640 - 64


def test_a_normalization_given_its_mean_counts_its_numbers_not_the_pixels_it_broadcasts_to(tmp_path):
    """Normalization(mean=0.3, variance=0.09) after Flatten keeps two 64-pixel constants of one value each: two
    numbers, which counted 128 (1,568 on MNIST). A mean given per pixel is 64 numbers and still counts so."""
    import keras

    def model(mean, variance):
        inputs = keras.Input((8, 8))
        x = keras.layers.Normalization(mean=mean, variance=variance)(keras.layers.Flatten()(inputs))
        return keras.Model(inputs, keras.layers.Dense(10, activation="softmax")(x))

    record = audited(model(0.3, 0.09), tmp_path / "scalar")
    assert record["status"] == "OK" and record["total_params"] == 650 + 2, record  # the mean and the variance
    per_pixel = np.random.default_rng(3).random(64).astype("float32")
    assert audited(model(per_pixel, 1 + per_pixel), tmp_path / "per_pixel")["total_params"] >= 650 + 2 * 64


def test_a_table_cut_into_small_integer_pieces_counts(tmp_path):
    import tensorflow as tf

    pieces = np.random.default_rng(2).integers(0, 2**30, size=(80, 8)).astype("int32")
    record = audited(table_model(lambda: tf.cast(tf.concat([tf.constant(p) for p in pieces], 0), "float32")), tmp_path)
    assert record["embedded_constants"] >= 640 - 64


def test_a_table_in_a_string_constant_and_its_decoder_are_refused(tmp_path):
    """Strings have no place in an image model's graph: the allow-list holds no string operation."""
    import tensorflow as tf

    blob = np.random.default_rng(3).random(640).astype("float32").tobytes()
    as_string = audited(table_model(lambda: tf.cast(tf.strings.length(tf.constant(blob)), "float32")), tmp_path / "a")
    assert as_string["status"] == "INVALID" and "StringLength" in as_string["message"]
    decoded = audited(table_model(lambda: tf.io.decode_raw(tf.constant(blob), tf.float32)), tmp_path / "b")
    assert decoded["status"] == "INVALID" and "DecodeRaw" in decoded["message"]


def test_a_branch_chosen_by_the_batch_size_is_invalid(tmp_path):
    """A model that takes a cheap branch for a batch of one and its real layers otherwise: its predictions depend
    on the batch (the audit predicts some images one at a time), so it is INVALID (MACs are counted on the
    batches that produced the scored predictions, and a batch size it never saw scored cannot lower them)."""
    import keras
    import tensorflow as tf

    inputs = keras.Input((8, 8))
    x = keras.layers.Flatten()(inputs)
    hidden, head = keras.layers.Dense(32, activation="relu"), keras.layers.Dense(10, activation="softmax")
    cheap = keras.layers.Dense(10, activation="softmax")

    def either(t):
        return tf.cond(tf.shape(t)[0] > 1, lambda: head(hidden(t)), lambda: cheap(t))

    model = keras.Model(inputs, keras.layers.Lambda(either, output_shape=(10,))(x))
    images = {"val": np.random.default_rng(0).random((7, 8, 8), dtype=np.float32)}
    record = audited(model, tmp_path, images)
    assert record["status"] == "INVALID" and "other images in the batch" in record["message"]


# A student's ways to make the board count less than the model uses (found by a red-team pass).

def packed_kernel_model(dtype, scalars=False):
    """Digits, pooled to 4x4, and a 16 x 10 float32 kernel plus bias (170 weights) kept as constants of `dtype`
    and bitcast back to float32: as one array, or cut into scalars (one per element)."""
    import keras
    import tensorflow as tf

    weights = np.random.default_rng(4).normal(size=176).astype("float32")  # 170, padded to fill complex128s
    packed = weights.view(np.dtype(dtype))

    def unpacked():
        if scalars:
            return tf.concat([tf.reshape(tf.bitcast(tf.constant(v, dtype), tf.float32), [-1]) for v in packed], 0)
        return tf.reshape(tf.bitcast(tf.constant(packed), tf.float32), [-1])

    def dense(x):
        floats = unpacked()
        return tf.nn.softmax(tf.matmul(x, tf.reshape(floats[:160], (16, 10))) + floats[160:170])

    inputs = keras.Input((8, 8))
    x = keras.layers.Flatten()(keras.layers.AveragePooling2D(2)(keras.layers.Reshape((8, 8, 1))(inputs)))
    return keras.Model(inputs, keras.layers.Lambda(dense)(x))


@pytest.mark.parametrize("dtype, scalars", [("int64", False), ("complex128", False), ("complex128", True), ("float64", True)])
def test_weights_packed_into_wider_constants_are_refused_and_would_count_as_the_float32_numbers_they_hold(tmp_path, dtype, scalars):
    """Unpacked with Bitcast, which the allow-list no longer holds (a later red team read 4-bit codes out of int32s
    with it); and were they read out otherwise, a wide element counts as the float32 numbers it can carry."""
    from bench import graph_audit

    record = audited(packed_kernel_model(dtype, scalars), tmp_path)
    assert record["status"] == "INVALID" and "Bitcast" in record["message"], record
    itemsize = np.dtype(dtype).itemsize
    assert graph_audit.parameters_in(85, itemsize, np.issubdtype(np.dtype(dtype), np.integer)) >= 170


def test_weights_drawn_from_a_fixed_seed_at_inference_are_refused(tmp_path):
    import keras
    import tensorflow as tf

    inputs = keras.Input((8, 8))
    x = keras.layers.Flatten()(inputs)
    x = keras.layers.Lambda(lambda t: tf.nn.relu(tf.matmul(t, tf.random.stateless_normal([64, 512], seed=[1, 2]))))(x)
    record = audited(keras.Model(inputs, keras.layers.Dense(10, activation="softmax")(x)), tmp_path)
    assert record["status"] == "INVALID" and "StatelessRandomNormal" in record["message"] and "random" in record["message"]


def test_a_result_file_with_infinity_fails_its_own_run(tmp_path):
    from bench import received

    result = tmp_path / "result.json"
    result.write_text('{"status": "OK", "message": "", "epochs": 3, "train_seconds": Infinity}')
    claims = received.read_result(result)
    assert claims["status"] == "FAILED" and "Infinity is not a number" in claims["message"]


def test_claimed_epochs_are_the_validations_the_harness_answered(tmp_path):
    from bench import received

    claims = {"status": "OK", "message": "", "epochs": 1, "history": {"loss": [1.0, 0.9, 0.8], "val_loss": [1.1, 1.0, 0.9]}}
    measured = {"epochs": 3, "history": {"val_loss": [1.2, 1.0, 0.9], "val_accuracy": [0.1, 0.2, 0.3]}, "train_seconds": 9.0, "export_seconds": 1.0}
    record = received.checked_claims(claims, config.Challenge(), {}, measured)
    assert record["epochs"] == 3 and record["history"]["val_loss"] == [1.2, 1.0, 0.9]


def test_a_history_with_names_megabytes_long_fails_its_own_run():
    """An entry rewrote its result file at exit (atexit) with 24 history series named by 640,000 emoji each: a 184 MB
    record (/tmp/fresh3/poc_bloat/bloat.py), too large for the publish job to push to GitHub."""
    from bench import received

    claims = {"status": "OK", "message": "", "history": {"loss": [1.0], "x" * (received.MAX_HISTORY_NAME + 1): [0.0]}}
    measured = {"epochs": 1, "history": {"val_loss": [1.2], "val_accuracy": [0.1]}, "train_seconds": 9.0, "export_seconds": 1.0}
    record = received.checked_claims(claims, config.Challenge(), {}, measured)
    assert record["status"] == "FAILED" and "malformed history" in record["message"]
    honest = {**claims, "history": {"loss": [1.0], "sparse_categorical_accuracy": [0.5], "learning_rate": [0.001]}}
    assert received.checked_claims(honest, config.Challenge(), {}, measured)["status"] == "OK"


def test_storage_of_a_dtype_the_table_does_not_know_is_counted_not_a_crash():
    from bench import scoring

    assert scoring.storage_bits([["complex128", 4, 4, 128], ["qint8", 2, 2]]) == 4 * 128 + 2 * 64
