"""The GitHub Actions workflows: triggers, permissions, no expression inside a shell script, and every
`python -m bench` command they run accepted by the real command line."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import yaml

from bench import cli

WORKFLOWS = Path(__file__).resolve().parent.parent / ".github" / "workflows"
# Values standing in for the variables the scripts read, to parse their commands.
SAMPLE_ENV = {"SHARD": "2", "SHARDS": "4", "RUNNER_TEMP": "/tmp/runner", "HOME": "/home/runner", "BASE_SHA": "abc123",
              "HEAD_SHA": "def456"}


def load(name: str) -> dict:
    workflow = yaml.safe_load((WORKFLOWS / name).read_text())
    # YAML 1.1 reads the key `on` as True.
    workflow["on"] = workflow.pop(True, workflow.get("on"))
    return workflow


def steps(workflow: dict):
    for job_name, job in workflow["jobs"].items():
        for step in job["steps"]:
            yield job_name, step


def scripts(workflow: dict) -> list[str]:
    return [step["run"] for _, step in steps(workflow) if "run" in step]


def bench_commands(script: str) -> list[list[str]]:
    """Arguments of each `python -m bench ...` in a script, variables replaced by SAMPLE_ENV."""
    joined = script.replace("\\\n", " ")
    commands = []
    # A command starts its line, alone or after xargs; mentions in echo'd text are not commands.
    for match in re.finditer(r"(?m)^\s*(?:xargs -0 -r\s+)?python -m bench ([^|<>;&\n]*)", joined):
        text = re.sub(r"\$\{?(\w+)\}?", lambda m: SAMPLE_ENV[m[1]], match[1])
        commands.append(shlex.split(text))
    return commands


ALL = sorted(p.name for p in WORKFLOWS.glob("*.yml"))


def test_both_workflows_exist():
    assert {"pull-request.yml", "leaderboard.yml", "pull-request-gate.yml"} <= set(ALL)


@pytest.mark.parametrize("name", ALL)
def test_no_expression_reaches_a_shell_script(name):
    # `${{ github.event.pull_request.title }}` inside run: would be pasted into the script before bash
    # parses it: anything the pull request controls must come in through env: instead.
    for script in scripts(load(name)):
        assert "${{" not in script, script


@pytest.mark.parametrize("name", ALL)
def test_every_job_runs_somewhere_and_every_step_does_something(name):
    for job in load(name)["jobs"].values():
        assert job["runs-on"] == "ubuntu-latest"
        assert all(("uses" in step) != ("run" in step) for step in job["steps"])


@pytest.mark.parametrize("name", ALL)
def test_every_bench_command_is_accepted_by_the_command_line(name):
    parser = cli.build_parser()
    commands = [c for script in scripts(load(name)) for c in bench_commands(script)]
    assert commands
    for command in commands:
        parser.parse_args(command)  # exits on an unknown flag or a bad value


def test_pull_requests_are_checked_read_only_without_secrets():
    workflow = load("pull-request.yml")
    assert list(workflow["on"]) == ["pull_request"]  # never pull_request_target, which holds secrets
    assert "submissions/**" in workflow["on"]["pull_request"]["paths"]
    assert workflow["permissions"] == {"contents": "read"}
    assert all("permissions" not in job for job in workflow["jobs"].values())
    assert "secrets." not in (WORKFLOWS / "pull-request.yml").read_text()
    checkout = next(step for _, step in steps(workflow) if step.get("uses", "").startswith("actions/checkout"))
    assert checkout["with"]["persist-credentials"] is False
    text = "\n".join(scripts(workflow))
    for command in ("python -m bench check", "python -m bench evaluate --smoke --strict", "python -m bench leaderboard --check",
                    "GITHUB_STEP_SUMMARY"):
        assert command in text
    # The changed file names travel NUL-separated through a file, never through an expression.
    assert "git diff -z --name-only" in text and "xargs -0" in text
    summary = next(step for _, step in steps(workflow) if "GITHUB_STEP_SUMMARY" in step.get("run", ""))
    assert summary["if"] == "always()"


def test_main_is_evaluated_in_shards_and_only_the_publish_job_may_write():
    workflow = load("leaderboard.yml")
    assert workflow["on"]["push"]["branches"] == ["main"]
    assert workflow["permissions"] == {"contents": "read"}
    evaluate, publish = workflow["jobs"]["evaluate"], workflow["jobs"]["publish"]
    assert "permissions" not in evaluate and publish["permissions"] == {"contents": "write"}
    assert publish["needs"] == "evaluate"
    assert evaluate["strategy"]["matrix"]["shard"] and evaluate["env"]["SHARDS"] == "${{ strategy.job-total }}"

    evaluate_scripts = "\n".join(step["run"] for step in evaluate["steps"] if "run" in step)
    assert 'python -m bench evaluate --shard "$SHARD/$SHARDS" --sandbox required' in evaluate_scripts
    checkout = next(step for step in evaluate["steps"] if step.get("uses", "").startswith("actions/checkout"))
    assert checkout["with"]["persist-credentials"] is False
    assert any(step.get("uses", "").startswith("actions/upload-artifact") for step in evaluate["steps"])

    publish_scripts = "\n".join(step["run"] for step in publish["steps"] if "run" in step)
    # The job that can push runs no entry's code.
    assert "bench evaluate" not in publish_scripts and "bench check" not in publish_scripts
    assert any(step.get("uses", "").startswith("actions/download-artifact") for step in publish["steps"])
    for command in ("python -m bench leaderboard", "git commit", "git push", "grep -v '^results/'"):
        assert command in publish_scripts


def test_shard_commands_cover_every_shard_of_the_matrix():
    workflow = load("leaderboard.yml")
    shards = workflow["jobs"]["evaluate"]["strategy"]["matrix"]["shard"]
    assert shards == list(range(1, len(shards) + 1))
    for shard in shards:
        assert cli.parse_shard(f"{shard}/{len(shards)}") == (shard, len(shards))


@pytest.mark.parametrize("name", ["pull-request.yml", "leaderboard.yml"])
def test_every_job_that_runs_entries_installs_bubblewrap_before_it_does(name):
    for job in load(name)["jobs"].values():
        scripts = [step.get("run", "") for step in job["steps"]]
        runs_entries = [i for i, script in enumerate(scripts) if "bench evaluate" in script or "bench check" in script]
        installs = [i for i, script in enumerate(scripts) if "apt-get install -y bubblewrap" in script]
        assert not runs_entries or (installs and installs[0] < runs_entries[0])


def test_the_pull_request_smoke_command_works_on_a_digits_challenge(tmp_path, monkeypatch, write_entry):
    """The workflow's own smoke command, run on a course whose [tool.bench] is digits (1,437 training images):
    its settings come from the challenge, so a student's pull request passes there as on MNIST."""
    smoke = next(step["run"] for _, step in steps(load("pull-request.yml")) if step.get("name") == "Smoke evaluation")
    (command,) = bench_commands(smoke)
    entry = write_entry("student", """
        import keras
        def build_model(input_shape, num_classes):
            return keras.Sequential([keras.Input(input_shape), keras.layers.Flatten(),
                                     keras.layers.Dense(num_classes, activation="softmax")])
    """)
    (tmp_path / "pyproject.toml").write_text('[tool.bench]\ndataset = "digits"\nvalidation_size = 300\n')
    monkeypatch.chdir(tmp_path)
    command = [part.replace(SAMPLE_ENV["RUNNER_TEMP"], str(tmp_path / "runner")) for part in command]
    assert cli.main([*command, str(entry)]) == 0  # --strict: non-zero unless the entry is OK
    board = (tmp_path / "runner" / "smoke" / "board.md").read_text()
    assert "student" in board and "digits" in board
    assert not (tmp_path / "results").exists() and not (tmp_path / "leaderboard.md").exists()


def test_the_pull_requests_changed_entries_are_the_new_files_directly_in_submissions(tmp_path):
    """The "Changed entries" step, run as written on a pull request that adds an entry, a helper, a test of the
    examples and a file elsewhere: only the entry reaches `bench check`."""
    import subprocess

    step = next(step for _, step in steps(load("pull-request.yml")) if step.get("name") == "Changed entries")
    repo = tmp_path / "repo"
    (repo / "submissions" / "tests").mkdir(parents=True)
    (repo / "submissions" / "old.py").write_text("x = 1\n")

    def git(*args):
        return subprocess.run(["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@example.org", *args],
                              capture_output=True, text=True, check=True).stdout.strip()

    git("init", "-q")
    git("add", "-A")
    git("commit", "-qm", "base")
    base = git("rev-parse", "HEAD")
    for name in ("submissions/ada.py", "submissions/_ada_helpers.py", "submissions/tests/test_more.py", "notes.py"):
        (repo / name).write_text("x = 2\n")
    (repo / "submissions" / "old.py").unlink()
    git("add", "-A")
    git("commit", "-qm", "a student's pull request")
    env = {"PATH": "/usr/bin:/bin", "BASE_SHA": base, "HEAD_SHA": git("rev-parse", "HEAD"), "RUNNER_TEMP": str(tmp_path)}
    subprocess.run(["bash", "-e", "-c", step["run"]], cwd=repo, env=env, check=True, capture_output=True)
    assert (tmp_path / "changed").read_bytes() == b"submissions/ada.py\0"
