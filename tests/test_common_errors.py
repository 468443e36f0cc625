"""The README's "Common errors" quotes what `bench check` really says about the mistakes students make.

The bad submissions live in tests/bad_entries/, one mistake per file; this runs the real command on them
(digits, so it is quick) and compares every message with the README, so the section cannot drift from
the harness.
"""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
BAD_ENTRIES = "tests/bad_entries"
EXPECTED_STATUS = {
    "typo_in_model": "FAILED",
    "missing_package": "FAILED",
    "syntax_error": "FAILED",
    "no_factory": "INVALID",
    "returns_a_layer": "INVALID",
    "wrong_output": "INVALID",
    "hard_coded_shape": "INVALID",
    "misspelt_training": "INVALID",
    "too_big": "OVER_BUDGET",
    "other_argument_names": "INVALID",
    "logits_without_flag": "INVALID",
    "misspelt_optimizer": "INVALID",
    "keras2_backend": "FAILED",
    "channel_axis_input": "INVALID",
    "two_outputs": "INVALID",
    "tuner_factory": "INVALID",
    "downloads_data": "FAILED",
}
LINE = re.compile(r"^(?P<status>[A-Z_]+)\s+(?P<entry>\w+)\s+(?:[\d,]+ params)?\s+(?:[\d,]+ MACs)?\s+(?P<message>.+)$")


@pytest.fixture(scope="module")
def check_output(tmp_path_factory):
    scratch = tmp_path_factory.mktemp("common_errors")
    command = [sys.executable, "-m", "bench", "check", BAD_ENTRIES, "--dataset", "digits", "--validation-size", "0.2",
               "--results", str(scratch / "results")]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, env=os.environ, timeout=600)
    assert done.returncode == 1, done.stderr  # every entry is bad
    found = {}
    for line in done.stdout.splitlines():
        match = LINE.match(line)
        if match:
            found[match["entry"]] = (match["status"], match["message"])
    return found


def readme_section() -> str:
    text = (REPO / "README.md").read_text()
    start = text.index("## Common errors")
    end = text.find("\n## ", start + 1)
    return text[start:end if end > 0 else None]


def test_every_bad_entry_gets_its_status(check_output):
    assert {entry: status for entry, (status, _) in check_output.items()} == EXPECTED_STATUS


@pytest.mark.parametrize("entry", sorted(EXPECTED_STATUS))
def test_the_readme_quotes_the_message_word_for_word(check_output, entry):
    status, message = check_output[entry]
    assert message in readme_section(), f"README's Common errors lacks the current message for {entry}: {message}"
    # Messages name the student's file as they typed it, not by the evaluator's absolute path.
    assert str(REPO) not in message
