"""Find submissions: one `submissions/<entry>.py` per entry, read without importing it.

Reading the docstring and AUTHOR from the syntax tree keeps `list`, the cache check and
the leaderboard free of TensorFlow and of the submitter's code.
"""

from __future__ import annotations

import ast
import dataclasses
import hashlib
import os
import re
import unicodedata
from pathlib import Path

from bench import untrusted

ENTRY_NAME = re.compile(r"[A-Za-z0-9_]+")


def suggested_name(name: str) -> str:
    """An entry name close to `name`: accents dropped (josé -> jose), other characters as '_'."""
    plain = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    return re.sub(r"[^A-Za-z0-9_]", "_", plain).strip("_") or "my_model"


@dataclasses.dataclass(frozen=True)
class Submission:
    name: str
    path: Path
    summary: str
    author: str
    file_hash: str
    has_hypermodel: bool
    problem: str | None = None  # why this file cannot be an entry, for the person to fix

    @property
    def ok(self) -> bool:
        return self.problem is None


def find(paths: list[str] | None, submissions_dir: str) -> list[Submission]:
    """The given files or folders (default: the submissions folder), sorted by entry name.

    Files whose name starts with `_` are helpers or templates, never entries.
    """
    files: list[Path] = []
    for target in [Path(p) for p in (paths or [submissions_dir])]:
        if target.is_dir():
            files.extend(p for p in target.glob("*.py") if not p.name.startswith("_"))
        else:
            files.append(target)
    return sorted((read(f) for f in dict.fromkeys(files)), key=lambda s: s.name)


def helpers(folder: Path) -> list[Path]:
    """The `_*.py` files beside the entries of `folder`, which travel with each of them (checked by `helpers_problem`)."""
    return sorted(Path(folder).glob("_*.py"))


def helpers_problem(folder: Path) -> str | None:
    """Why the helpers of `folder` cannot travel with its entries (None when they can): each must be a regular file
    (never a link, device or pipe, which reading would follow) of at most untrusted.MAX_SOURCE_BYTES."""
    for helper in helpers(folder):
        problem = untrusted.regular_file_problem(helper)
        if problem:
            return (f"the helper {problem}, or remove it. Helpers (_*.py) travel with every entry of their folder, "
                    "so its entries are skipped until then")
    return None


def helper_digests(folder: Path) -> dict[str, str]:
    """sha256 of each helper of `folder`, read without following links; "refused" for one that is not a regular
    file (its run fails, and the key stays the same from run to run whatever the link points to)."""
    digests = {}
    for helper in helpers(folder):
        try:
            digests[helper.name] = hashlib.sha256(untrusted.read_regular(helper)).hexdigest()
        except untrusted.Refused:
            digests[helper.name] = "refused"
    return digests


def read(path: Path) -> Submission:
    """The entry at `path`, or a Submission with a `problem` when it cannot be one: no such file, not a regular
    file (a link is never followed), too large, a bad name, or a helper beside it that is not a regular file."""
    name = path.stem
    if not os.path.lexists(path):
        return Submission(name, path, "", "", "", False, f"{path}: no such file")
    try:
        source = untrusted.read_regular(path)
    except untrusted.Refused as error:
        return Submission(name, path, "", "", "", False, str(error))
    file_hash = hashlib.sha256(source).hexdigest()
    problem = helpers_problem(path.parent)
    problem = problem and f"{path}: {problem}"
    if path.suffix != ".py":
        problem = f"{path}: a submission must be a .py file"
    elif not ENTRY_NAME.fullmatch(name):
        problem = (
            f"{path}: the entry name {name!r} may use only letters, digits and '_'; "
            f"rename the file, e.g. to {suggested_name(name)}.py"
        )
    summary, author, has_hypermodel = "", "", False
    try:
        tree = ast.parse(source, filename=str(path))
    except (SyntaxError, ValueError, RecursionError, MemoryError):  # ValueError: null bytes (Python 3.11)
        pass  # still an entry: its run reports the syntax error, with the line, as FAILED
    else:
        doc = ast.get_docstring(tree) or ""
        summary = doc.strip().splitlines()[0].strip() if doc.strip() else ""
        for node in tree.body:
            if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "AUTHOR" for t in node.targets):
                if isinstance(node.value, ast.Constant):
                    author = str(node.value.value)
            if isinstance(node, ast.FunctionDef) and node.name == "build_hypermodel":
                has_hypermodel = True
    return Submission(name, path, summary, author, file_hash, has_hypermodel, problem)
