"""`python -m bench gate BASE HEAD`: whether a pull request is one student's entry and nothing else.

A pull request may add or change exactly one file, `submissions/<name>.py` (the challenge's `submissions` folder) (a name of letters, digits and `_`, not
starting with `_`), as a regular file (git mode 100644 or 100755) of at most untrusted.MAX_SOURCE_BYTES. Anything
else fails: a second file, a helper (`submissions/_*.py` travel with every entry, so they are the teacher's), a
deleted or renamed file, a symbolic link or a submodule anywhere, the harness, the workflows, the records or the board.

The gate reads git objects only (`git diff --raw`, `git cat-file -s`): it never checks out or runs what the pull
request holds, so .github/workflows/pull-request-gate.yml runs it from the base branch (on pull_request_target),
where the pull request cannot change it.
"""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

from bench import config, discover, untrusted

REGULAR_MODES = ("100644", "100755")
LINK_MODE, SUBMODULE_MODE = "120000", "160000"


@dataclasses.dataclass(frozen=True)
class Change:
    """One line of `git diff --raw`: the path, its status letter (A added, M modified, D deleted, T type changed)
    and its new mode and blob."""

    path: str
    status: str
    new_mode: str
    new_blob: str


def register(subparsers) -> None:
    gate = subparsers.add_parser("gate", help="fail unless a pull request adds or changes one entry file and nothing else")
    gate.add_argument("base", help="the base branch's commit (the pull request is compared with its merge base)")
    gate.add_argument("head", help="the pull request's last commit")
    gate.add_argument("--repo", default=".", help="the git repository holding both commits (default: here)")
    gate.set_defaults(handler=cmd_gate)


def cmd_gate(args) -> int:
    try:
        found = changes(args.repo, args.base, args.head)
    except subprocess.CalledProcessError as error:
        print(f"error: git could not compare {args.base} and {args.head}: {(error.stderr or '').strip()}", file=sys.stderr)
        return 2
    folder = Path(config.load(args.config).submissions).as_posix()  # "./submissions" is "submissions" in git
    problems = pull_request_problems(found, lambda blob: blob_size(args.repo, blob), folder)
    for problem in problems:
        print(f"::error::{problem}")
    if problems:
        print(f"A pull request may add one file, {folder}/<your_name>.py, and nothing else: "
              "split other changes into their own pull request for the teacher.")
        return 1
    (change,) = found
    print(f"ok: adds the entry {change.path}")
    return 0


def changes(repo: str, base: str, head: str) -> list[Change]:
    """What `head` changes since its merge base with `base`, one Change per path (renames as a delete and an add).

    Raises subprocess.CalledProcessError when git cannot compare the two (an unknown commit)."""
    raw = subprocess.run(["git", "-C", repo, "diff", "--raw", "-z", "--no-renames", "--no-abbrev", f"{base}...{head}"],
                         capture_output=True, check=True).stdout.decode("utf-8", "surrogateescape")
    fields = raw.split("\0")
    found = []
    for header, path in zip(fields[0::2], fields[1::2]):  # ":old_mode new_mode old_blob new_blob STATUS", then the path
        _, new_mode, _, new_blob, status = header.lstrip(":").split(" ")
        found.append(Change(path, status[:1], new_mode, new_blob))
    return found


def blob_size(repo: str, blob: str) -> int:
    return int(subprocess.run(["git", "-C", repo, "cat-file", "-s", blob], capture_output=True, check=True, text=True).stdout)


def pull_request_problems(found: list[Change], size_of, folder: str = "submissions") -> list[str]:
    """Why the pull request making the changes `found` is not one entry's in `folder` (empty when it is);
    `size_of(blob)` gives a blob's size in bytes. Each problem says what to change."""
    problems = [change_problem(change, size_of, folder) for change in found]
    problems = [problem for problem in problems if problem]
    entries = [change for change in found if is_entry_path(change.path, folder)]
    if not found:
        problems.append(f"this pull request changes no file: add your entry as {folder}/<your_name>.py")
    elif len(entries) > 1:
        problems.append(f"this pull request changes {len(entries)} entries ({', '.join(c.path for c in entries)}): "
                        "open one pull request per entry")
    return problems


def change_problem(change: Change, size_of, folder: str) -> str | None:
    shown = ascii(change.path) if not change.path.isprintable() else change.path
    if change.new_mode == LINK_MODE:
        return f"{shown} is a symbolic link: a pull request must add no links; commit the file itself"
    if change.new_mode == SUBMODULE_MODE:
        return f"{shown} is a submodule: a pull request must add no submodules"
    if not is_entry_path(change.path, folder):
        what = ("a helper, shared by every entry (only the teacher changes those): put the code in your entry's file"
                if change.path.startswith(f"{folder}/_") else f"not an entry file ({folder}/<your_name>.py)")
        return f"{shown} is {what}; undo this change"
    if change.status == "M":  # git cannot say whose entry it is: a student could rewrite a rival's file
        return (f"{shown} is an existing entry: a pull request may only add a new one. To change your own, the teacher "
                "merges it by hand after checking you are its author (or add it anew as <your_name>_v2.py)")
    if change.status != "A":
        return f"{shown} is deleted or changes type: a pull request may only add an entry"
    if change.new_mode not in REGULAR_MODES:
        return f"{shown} has git mode {change.new_mode}: commit it as a regular file"
    size = size_of(change.new_blob)
    if size > untrusted.MAX_SOURCE_BYTES:
        return f"{shown} holds {size:,} bytes, over the limit of {untrusted.MAX_SOURCE_BYTES:,} for an entry: make it smaller"
    return None


def is_entry_path(path: str, folder: str = "submissions") -> bool:
    """`<folder>/<name>.py` directly in `folder`, with an entry's name (not a helper's `_name`)."""
    parent, _, file = path.rpartition("/")
    name = file[:-3] if file.endswith(".py") else ""
    return parent == folder and "/" not in file and not name.startswith("_") and bool(discover.ENTRY_NAME.fullmatch(name))
