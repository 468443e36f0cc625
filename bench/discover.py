"""Find submissions: one `submissions/<entry>.py` per entry, read without importing it.

Reading the docstring and AUTHOR from the syntax tree keeps `list`, the cache check and
the leaderboard free of TensorFlow and of the submitter's code.
"""

from __future__ import annotations

import ast
import dataclasses
import hashlib
import re
import unicodedata
from pathlib import Path

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


def read(path: Path) -> Submission:
    name = path.stem
    if not path.is_file():
        return Submission(name, path, "", "", "", False, f"{path}: no such file")
    source = path.read_bytes()
    file_hash = hashlib.sha256(source).hexdigest()
    problem = None
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
    except SyntaxError:
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
