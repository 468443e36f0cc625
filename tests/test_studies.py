"""Sweeps, study reports, `--eval-kwargs` and `--monitor`, on small data."""

from __future__ import annotations

import json

import keras
import pytest

from bench import cli, config, discover, results, studies
from conftest import run_in_process

SHARED_DENSE = '''
    """A dense layer applied `repeats` times with shared weights."""
    import keras

    TRAINING = {"batch_size": 64}

    def build_model(input_shape, num_classes, width=8, repeats=1, activation="relu", scale=1.0, tag=None):
        inputs = keras.Input(input_shape)
        h = keras.layers.Dense(width, activation=activation)(keras.layers.Flatten()(inputs))
        shared = keras.layers.Dense(width, activation=activation)
        for _ in range(repeats):
            h = shared(h)
        return keras.Model(inputs, keras.layers.Dense(num_classes, activation="softmax")(h))
'''
DEEP_DENSE = '''
    """A deep, narrow ReLU net whose initialiser is a build_model() argument."""
    import keras

    TRAINING = {"batch_size": 32, "optimizer": "sgd", "learning_rate": 0.03}

    def build_model(input_shape, num_classes, init="he_normal", depth=8):
        inputs = keras.Input(input_shape)
        h = keras.layers.Flatten()(inputs)
        for _ in range(depth):
            h = keras.layers.Dense(16, activation="relu", kernel_initializer=init)(h)
        return keras.Model(inputs, keras.layers.Dense(num_classes, activation="softmax")(h))
'''
DIGITS_FLAGS = ["--dataset", "digits", "--validation-size", "300", "--seeds", "1", "--epochs", "1"]


def digits_macs(width, repeats):
    return 64 * width + repeats * width * width + width * 10


# ---- grid parsing ------------------------------------------------------------------------------

def test_grid_values_take_the_type_of_the_parameters_default(write_entry):
    signature = studies.factory_signature(write_entry("shared", SHARED_DENSE))
    grid = studies.parse_grid(
        ["repeats=0,1,20", "activation=relu,tanh", "scale=1,0.5", "tag=3,x,none,true"], signature
    )
    assert grid == {"repeats": [0, 1, 20], "activation": ["relu", "tanh"], "scale": [1.0, 0.5], "tag": [3, "x", None, True]}
    assert [type(v) for v in grid["scale"]] == [float, float]


def test_the_signature_is_read_without_running_the_entry(write_entry):
    path = write_entry("explodes", 'raise SystemExit("imported")\ndef build_model(input_shape, num_classes, *, k=2, **extra):\n    pass\n')
    parameters, takes_any = studies.factory_signature(path)
    assert parameters["k"] == 2 and parameters["input_shape"] is studies.NO_DEFAULT and takes_any
    assert studies.parse_grid(["anything=1,2"], (parameters, takes_any)) == {"anything": [1, 2]}


@pytest.mark.parametrize("spec, message", [
    ("repeats=a,b", "'a' is not a number; repeats takes whole numbers (its default is 1)"),
    ("scale=big", "'big' is not a number"),
    ("widht=1,2", "build_model() has no parameter 'widht' (it accepts: width, repeats, activation, scale, tag)"),
    ("repeats", "write NAME=V1,V2,..."),
    ("repeats=", "give one or more comma-separated values"),
    ("repeats=1,,2", "give one or more comma-separated values"),
    ("repeats=1,1", "lists a value twice"),
    ("input_shape=4", "the harness sets input_shape"),
])
def test_bad_grids_say_what_to_change(write_entry, spec, message):
    signature = studies.factory_signature(write_entry("shared", SHARED_DENSE))
    with pytest.raises(studies.GridError) as error:
        studies.parse_grid([spec], signature)
    assert message in str(error.value)


def test_a_name_given_twice_is_refused(write_entry):
    signature = studies.factory_signature(write_entry("shared", SHARED_DENSE))
    with pytest.raises(studies.GridError, match="gives 'width' twice"):
        studies.parse_grid(["width=1", "width=2"], signature)


def test_a_bad_grid_on_the_command_line_fails_before_any_training(write_entry, tmp_path, capsys):
    entry = write_entry("shared", SHARED_DENSE)
    code = cli.main(["sweep", str(entry), "--grid", "repeats=a,b", *DIGITS_FLAGS, "--results", str(tmp_path / "results"),
                     "--studies", str(tmp_path / "studies")])
    assert code == 2
    assert "--grid repeats: 'a' is not a number" in capsys.readouterr().err
    assert not (tmp_path / "results").exists() and not (tmp_path / "studies").exists()


def test_eval_kwargs_parse_and_refuse_bad_text():
    assert studies.parse_kwargs("iterations=20,mode=fast,rate=0.5") == {"iterations": 20, "mode": "fast", "rate": 0.5}
    for bad in ("iterations", "iterations=", "=3", "a=1,a=2"):
        with pytest.raises(studies.GridError):
            studies.parse_kwargs(bad)


def test_grid_points_are_the_product_and_a_deploy_value_equal_to_training_is_the_plain_run():
    points = studies.grid_points({"iterations": [2, 5], "channels": [3]}, {"iterations": [5, 10]}, {"iterations": 5})
    assert points == [
        ({"iterations": 2, "channels": 3}, {"iterations": 5}), ({"iterations": 2, "channels": 3}, {"iterations": 10}),
        ({"iterations": 5, "channels": 3}, {}), ({"iterations": 5, "channels": 3}, {"iterations": 10}),
    ]


# ---- reports from records alone ------------------------------------------------------------------

def fake_record(challenge, submission, build, accuracy, seed, status="OK", stale=False, message=""):
    name = results.variant_name(submission.name, build)
    record = {
        "entry": submission.name, "run_name": name, "dataset": challenge.dataset, "seed": seed, "status": status,
        "message": message, "build_kwargs": build, "eval_kwargs": {}, "total_params": 100 * build["width"],
        "macs": 1000 * build["width"], "epochs": 4, "train_seconds": 10.0 + seed,
        "key": {"submission": "older" if stale else submission.file_hash, "config": challenge.protocol_hash()},
    }
    if status == "OK":
        record["test_accuracy"] = accuracy
    results.write(results.record_path(challenge.results, challenge.dataset, name, seed), record)


def test_the_report_is_rendered_from_records_alone(write_entry, tmp_path):
    entry = write_entry("shared", SHARED_DENSE)
    settings = {"dataset": "digits", "seeds": 2, "results": str(tmp_path / "results")}
    challenge = config.load(tmp_path / "none.toml", **settings)
    submission = discover.read(entry)
    fake_record(challenge, submission, {"width": 2}, 0.88, 0)
    fake_record(challenge, submission, {"width": 2}, 0.92, 1)
    fake_record(challenge, submission, {"width": 4}, 0.95, 0, stale=True)
    fake_record(challenge, submission, {"width": 4}, 0.97, 1)
    fake_record(challenge, submission, {"width": 16}, None, 0, status="FAILED", message="ValueError: boom")
    folder = tmp_path / "studies" / "widths"
    studies.save_part(folder, "widths", {
        "entry": entry.as_posix(), "grid": {"width": [2, 4, 8, 16]}, "eval_grid": {}, "monitor": None,
        "config": str(tmp_path / "none.toml"), "settings": settings, "command": "python -m bench sweep ... (the command)",
    })
    (folder / "notes.md").write_text("Our numbers agree with the seed.\n")

    report = studies.write_report(folder).read_text()

    assert report.splitlines()[0] == "# Study: widths"
    assert report.index("python -m bench sweep ... (the command)") < report.index("| width")
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]] for line in report.splitlines() if line.startswith("| ") and "width" not in line}
    assert rows["2"] == ["200", "2,000", "90.00 ± 2.83", "2", "4", "10"]
    assert rows["4"][2] == "96.00 ± 1.41 †" and "† trained on another version" in report
    assert rows["8"][2] == "not run" and rows["8"][3] == "0"
    assert rows["16"][2] == "FAILED: ValueError: boom"
    assert "## Discussion\n\nOur numbers agree with the seed." in report
    assert (folder / "part1_accuracy_vs_width.png").stat().st_size > 0
    assert (folder / "part1_accuracy_vs_params.png").stat().st_size > 0

    first_plot = (folder / "part1_accuracy_vs_width.png").read_bytes()
    assert studies.write_report(folder).read_text() == report
    assert (folder / "part1_accuracy_vs_width.png").read_bytes() == first_plot


def test_a_second_sweep_under_the_same_name_adds_a_part_and_a_repeated_one_replaces_it(tmp_path):
    folder = tmp_path / "study"
    part = {"entry": "e.py", "grid": {"k": [1, 2]}, "eval_grid": {}, "command": "first"}
    studies.save_part(folder, "study", part)
    studies.save_part(folder, "study", {**part, "eval_grid": {"k": [3]}, "command": "second"})
    spec = studies.save_part(folder, "study", {**part, "command": "first again"})
    assert [p["command"] for p in spec["parts"]] == ["second", "first again"]


# ---- training: records, the monitor, deploy-time arguments ---------------------------------------------

def run_once(path, build_kwargs, monitor=None):
    """One seed-0 epoch of the entry on digits, every stage in this process."""
    keras.utils.set_random_seed(0)
    return run_in_process(path, build_kwargs=build_kwargs, job_extra={"monitor": monitor} if monitor else None, max_epochs=1)


def test_monitor_records_layers_every_n_steps_and_shows_vanishing_gradients(write_entry, tmp_path):
    entry = write_entry("deep", DEEP_DENSE)
    small = {"init": "random_uniform"}  # keras' default range, +-0.05: far too small for 8 layers of 16 units
    plain = run_once(entry, small)
    uniform = run_once(entry, small, monitor=10)
    he = run_once(entry, {"init": "he_normal"}, monitor=10)
    assert uniform["status"] == he["status"] == "OK", (uniform["message"], he["message"])

    data = uniform["monitor"]
    steps_per_epoch = -(-(1437 - 300) // 32)
    assert data["step"] == list(range(0, steps_per_epoch + 1, 10))
    # names count up across the models this process built: check the shape, input side first
    assert data["layers"] == data["activation_layers"] and len(set(data["layers"])) == 9
    assert sorted(data["layers"], key=lambda name: int(name.rpartition("_")[2]) if "_" in name else 0) == data["layers"]
    for key in ("gradient_norm", "weight_norm", "activation_mean", "activation_std"):
        assert len(data[key]) == len(data["step"]) and all(len(row) == 9 for row in data[key])
    # Seed 003: with small uniform weights the early layers get almost no gradient; He scaling keeps it alive.
    first, last = data["gradient_norm"][0][0], data["gradient_norm"][0][-1]
    assert first < 1e-4 * last
    he_first, he_last = he["monitor"]["gradient_norm"][0][0], he["monitor"]["gradient_norm"][0][-1]
    assert he_first > 1e-2 * he_last
    # Measuring must not change the run.
    assert uniform["history"] == plain["history"] and uniform["test_accuracy"] == plain["test_accuracy"]


def test_sweep_trains_each_point_and_study_rewrites_the_report_without_training(write_entry, tmp_path, capsys):
    entry = write_entry("shared", SHARED_DENSE)
    sweep = ["sweep", str(entry), "--grid", "repeats=1,2", "--eval-grid", "repeats=2", "--monitor", "5", "--name", "shared",
             *DIGITS_FLAGS, "--results", str(tmp_path / "results"), "--studies", str(tmp_path / "studies"), "--jobs", "2"]
    assert cli.main(sweep) == 0
    runs = tmp_path / "results" / "digits"
    deployed = json.loads((runs / "shared@repeats=1,eval:repeats=2" / "seed0.json").read_text())
    trained = json.loads((runs / "shared@repeats=2" / "seed0.json").read_text())
    assert deployed["status"] == trained["status"] == "OK"
    assert deployed["eval_kwargs"] == {"repeats": 2} and deployed["build_kwargs"] == {"repeats": 1}
    assert (deployed["train_macs"], deployed["macs"]) == (digits_macs(8, 1), digits_macs(8, 2))
    assert trained["macs"] == digits_macs(8, 2) and trained["monitor"]["every_steps"] == 5

    folder = tmp_path / "studies" / "shared"
    report = (folder / "README.md").read_text()
    assert "python -m bench sweep " + entry.as_posix() + " --grid repeats=1,2 --eval-grid repeats=2 --monitor 5 --name shared" in report
    assert "| repeats   | repeats at test   |" in report
    assert f"| 1         | 2                 | 682      | {digits_macs(8, 2):,}" in report
    images = sorted(p.name for p in folder.glob("*.png"))
    assert images == ["monitor_shared_repeats_1_eval_repeats_2.png", "monitor_shared_repeats_2.png", "part1_accuracy_vs_repeats.png"]

    for image in folder.glob("*.png"):
        image.unlink()
    (folder / "README.md").unlink()
    capsys.readouterr()
    assert cli.main(["study", "shared", "--studies", str(tmp_path / "studies")]) == 0
    assert (folder / "README.md").read_text() == report
    assert sorted(p.name for p in folder.glob("*.png")) == images

    assert cli.main(sweep) == 0  # everything cached: nothing trains again
    printed = capsys.readouterr().out
    assert printed.count("cached  ") == 2 and "start " not in printed


def test_a_sweep_keeps_every_run_flag_so_the_report_finds_its_records_and_shows_the_full_command(write_entry, tmp_path):
    entry = write_entry("shared", SHARED_DENSE)
    # --engine joins the records' cache key: a study that forgot it would look for model.fit records.
    flags = [*DIGITS_FLAGS, "--engine", "auto", "--sandbox", "off", "--memory-limit", "4000", "--results", str(tmp_path / "results")]
    assert cli.main(["sweep", str(entry), "--grid", "repeats=1", "--name", "flags", "--studies", str(tmp_path / "studies"), *flags]) == 0
    folder = tmp_path / "studies" / "flags"
    (part,) = json.loads((folder / studies.SPEC_FILE).read_text())["parts"]
    assert {k: part["settings"][k] for k in ("engine", "sandbox", "memory_limit_mb")} == {"engine": "auto", "sandbox": "off", "memory_limit_mb": 4000}
    assert all(f" {flag} " in part["command"] + " " for flag in ("--engine auto", "--sandbox off", "--memory-limit 4000"))
    assert cli.main(["study", "flags", "--studies", str(tmp_path / "studies")]) == 0
    report = (folder / "README.md").read_text()
    assert "| 1 " in report and "†" not in report, report


def test_evaluate_deploys_with_other_arguments_and_writes_monitor_heatmaps(write_entry, tmp_path):
    entry = write_entry("shared", SHARED_DENSE)
    assert cli.main(["evaluate", str(entry), "--eval-kwargs", "repeats=3", "--monitor", "10", *DIGITS_FLAGS,
                     "--results", str(tmp_path / "results"), "--leaderboard", str(tmp_path / "board.md")]) == 0
    folder = tmp_path / "results" / "digits" / "shared@eval:repeats=3"
    record = json.loads((folder / "seed0.json").read_text())
    assert record["status"] == "OK" and record["eval_kwargs"] == {"repeats": 3}
    assert (record["train_macs"], record["macs"]) == (digits_macs(8, 1), digits_macs(8, 3))
    assert record["monitor"]["layers"] == ["dense", "dense_1", "dense_2"]
    assert (folder / "seed0.monitor.png").stat().st_size > 0


def test_evaluate_refuses_a_bad_monitor_interval(write_entry, tmp_path, capsys):
    entry = write_entry("shared", SHARED_DENSE)
    assert cli.main(["evaluate", str(entry), "--monitor", "0", *DIGITS_FLAGS, "--results", str(tmp_path / "r")]) == 2
    assert "--monitor 0" in capsys.readouterr().err


def test_a_monitor_label_that_reads_as_mathtext_is_drawn_as_it_is(tmp_path):
    """The labels are the training stage's claim: a red team's forged layer name "$\\frac{$" (bad mathtext to
    matplotlib) made `evaluate --monitor` raise while drawing the heatmaps, so no board was written, run after run."""
    from bench import monitor

    data = {"every_steps": 5, "probe_images": 256, "layers": ["$\\frac{$", "dense_$1$"], "activation_layers": ["$x"],
            "step": [0, 5], "probe_loss": [2.3, 2.1]}
    for key, labels_key, _, _ in monitor.PANELS:
        data[key] = [[1.0] * len(data[labels_key]) for _ in data["step"]]
    assert monitor.well_formed(data, 5)  # what the runner keeps from a result file
    assert monitor.render(data, tmp_path / "forged.png", "forged seed 0").stat().st_size > 0


def test_the_entrys_own_text_in_a_study_report_is_no_link_image_or_cell(tmp_path):
    """The monitor's layer names (claimed by the training stage), a failure's message and the summary are the entry's
    text: a red team's layer name "[sign in](https://...) | ![](https://...)" was a link, an image and a cell more in
    the report."""
    import re

    from bench import monitor

    forged = "[sign in](https://grades-login.example.com) | ![](https://example.com/t.png) www.example.com"
    data = {"every_steps": 5, "probe_images": 256, "layers": [forged, "dense_1"], "activation_layers": ["dense"],
            "step": [0, 5], "probe_loss": [2.3, 2.1]}
    for key, labels_key, _, _ in monitor.PANELS:
        data[key] = [[1.0] * len(data[labels_key]) for _ in data["step"]]
    monitors = [line for line in studies._monitor_section(tmp_path, [{"run_name": "forged@units=4", "monitor": data}])
                if line.startswith("|")]
    frame = studies.pd.DataFrame([{"units": 4, "total_params": None, "macs": None, "seeds": 0, "epochs": None,
                                   "train_seconds": None, "stale": False, "problem": f"FAILED: {forged}"}])
    points = studies._table(frame, ["units"]).splitlines()
    cells = lambda line: len(re.findall(r"(?<!\\)\|", line))
    for header, row in ((monitors[0], monitors[-1]), (points[0], points[-1])):
        assert "grades-login" in row and cells(row) == cells(header)  # shown as text, in its own cell
        assert not re.search(r"(?<!\\)[\[\]]", row) and "www." not in row  # brackets escaped: no link, no image
