"""`python -m bench doctor`: whether this machine is ready, line by line, with the one command that fixes each
thing that is not.

It imports no TensorFlow (versions come from the installed packages' metadata), so it answers in a second or
two; the longest check starts one sandboxed `python -c "import bench"` (bench.sandbox.unavailable).
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import os
import stat
import sys
from pathlib import Path

from bench import config, data

MIN_PYTHON = (3, 10)
PACKAGES = ("tensorflow", "keras", "jax")
# The user a root run drops to in the tests (tests/test_integrity.py) and in .ci/run's set-up.
UNPRIVILEGED_USER = "nobody"


@dataclasses.dataclass(frozen=True)
class Finding:
    ok: bool
    said: str  # what works, or what does not
    fix: str | None = None  # the one command that fixes it
    note: bool = False  # worth knowing, not a failure


def register(subparsers) -> None:
    doctor = subparsers.add_parser("doctor", help="say whether this machine is ready, and the command that fixes what is not")
    doctor.set_defaults(handler=cmd_doctor, writes_results=False)


def cmd_doctor(args) -> int:
    """Print one line per check (and its fix under it); 0 when every check passed, 1 otherwise."""
    challenge, findings = settings(args.config)
    findings = [python_version(), packages(), sandbox(), sysv_ipc_filter(), *unprivileged_user(), *findings]
    if challenge is not None:
        findings += [dataset(challenge), submissions_folder(challenge)]
    for finding in findings:
        mark = "ok  " if finding.ok else "note" if finding.note else "FIX "
        print(f"{mark} {finding.said}")
        if finding.fix:
            print(f"     run: {finding.fix}")
    failed = [f for f in findings if not f.ok and not f.note]
    print("all is well" if not failed else f"{len(failed)} thing(s) to fix, each with its command above")
    return 1 if failed else 0


def python_version() -> Finding:
    shown = f"Python {'.'.join(map(str, sys.version_info[:3]))} ({sys.executable})"
    if sys.version_info[:2] >= MIN_PYTHON:
        return Finding(True, shown)
    wanted = ".".join(map(str, MIN_PYTHON))
    return Finding(False, f"{shown}: bench needs Python {wanted} or newer",
                   f"python{wanted} -m venv .venv && .venv/bin/pip install -e '.[test]'")


def packages() -> Finding:
    found, missing = [], []
    for name in PACKAGES:
        try:
            found.append(f"{name} {importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            missing.append(name)
    if not missing:
        return Finding(True, ", ".join(found))
    return Finding(False, f"not installed in this Python: {', '.join(missing)}" + (f" (found {', '.join(found)})" if found else ""),
                   f"{sys.executable} -m pip install -e '.[test]'")


def sandbox() -> Finding:
    from bench import sandbox as bubblewrap

    problem = bubblewrap.unavailable()
    if problem is None:
        return Finding(True, "bubblewrap starts a sandbox here (entries train in it)")
    if "not installed" in problem:
        return Finding(False, problem, f"{_sudo()}apt-get install bubblewrap")
    if "Linux only" in problem:
        return Finding(False, f"{problem}: entries would train unsandboxed", 'set sandbox = "off" in [tool.bench] (a trusted machine only)')
    apparmor = Path("/proc/sys/kernel/apparmor_restrict_unprivileged_userns")
    setting = ("kernel.apparmor_restrict_unprivileged_userns=0" if apparmor.exists() and apparmor.read_text().strip() == "1"
               else "kernel.unprivileged_userns_clone=1")
    return Finding(False, problem, f"{_sudo()}sysctl -w {setting}")


def sysv_ipc_filter() -> Finding:
    """Whether bench.containment can build the seccomp filter that refuses SysV shared memory in every run."""
    from bench import containment

    if not sys.platform.startswith("linux"):
        return Finding(True, f"no seccomp filter on {sys.platform}: SysV shared memory is not refused", note=True)
    try:
        containment.seccomp_filter(load=False)
    except Exception as error:
        return Finding(False, f"the seccomp filter that refuses SysV shared memory does not load ({error})",
                       f"{_sudo()}apt-get install libseccomp2 && {sys.executable} -m pip install pyseccomp")
    return Finding(True, "seccomp refuses SysV shared memory and message queues in every run (shmget, msgget)")


def unprivileged_user() -> list[Finding]:
    """As root, the tests train one entry as `nobody`, who must be able to reach this interpreter and bench."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return []
    closed = closed_folders(reached_folders())
    if not closed:
        return [Finding(True, f"running as root: the user {UNPRIVILEGED_USER} can reach this Python and bench (the tests run one entry as it)")]
    return [Finding(False, f"running as root: the user {UNPRIVILEGED_USER} cannot reach this Python ({', '.join(closed)} "
                           "not searchable by others), so tests/test_integrity.py's unprivileged run fails",
                    "chmod o+x " + " ".join(closed))]


def reached_folders() -> list[Path]:
    """The folders `nobody` must pass through: those of this Python (as named and resolved) and of bench."""
    return [Path(sys.executable).parent, Path(sys.executable).resolve().parent, Path(__file__).resolve().parent.parent]


def closed_folders(starts: list[Path]) -> list[str]:
    """Each folder on the way to `starts` (themselves included) that others may not search, outermost first."""
    closed = []
    for start in starts:
        for folder in [*reversed(Path(start).absolute().parents), Path(start).absolute()]:
            if folder.is_dir() and not folder.stat().st_mode & stat.S_IXOTH and str(folder) not in closed:
                closed.append(str(folder))
    return closed


def settings(path: str) -> tuple[config.Challenge | None, list[Finding]]:
    try:
        challenge = config.load(path)
    except config.ConfigError as error:
        return None, [Finding(False, f"the settings do not load: {error}", f"edit [tool.bench] in {path} as the message says")]
    where = f"[tool.bench] of {path}" if Path(path).exists() else f"the defaults ({path} not found)"
    return challenge, [Finding(True, f"settings load from {where}: dataset {challenge.board_name}, budget {challenge.max_params:,} parameters")]


def dataset(challenge: config.Challenge) -> Finding:
    if challenge.dataset == "digits":
        try:
            importlib.metadata.version("scikit-learn")
        except importlib.metadata.PackageNotFoundError:
            return Finding(False, "digits comes from scikit-learn, which is not installed", f"{sys.executable} -m pip install scikit-learn")
        return Finding(True, "dataset digits: scikit-learn's, no file needed")
    if not data.is_builtin(challenge.dataset):  # the settings loaded, so the file was read and found sound
        found = data.describe(challenge.dataset)
        size = data.validation_count(challenge.validation_size, found.train)
        if challenge.validation_size is not None and not found.num_classes <= size < found.train // 2:
            return Finding(False, f"dataset {challenge.board_name}: validation_size = {challenge.validation_size} does not fit its "
                                  f"{found.train:,} training examples (a count between {found.num_classes} and "
                                  f"{found.train // 2 - 1}, or a fraction)", "set validation_size = 0.1 in [tool.bench], "
                                  f"or delete the line for {data.AUTO_VALIDATION_RULE}")
        return Finding(True, f"dataset {challenge.board_name}: {found.path} ({found.kind}, {found.train:,} training and "
                             f"{found.test:,} test examples of shape {found.input_shape}, {found.num_classes} classes)")
    found, _ = data.find_local(challenge.dataset, challenge.data_dir)
    if found is not None:
        return Finding(True, f"dataset {challenge.dataset}: {found}")
    cached = Path.home() / ".keras" / "datasets" / data.KERAS_CACHE[challenge.dataset]
    if cached.exists():
        return Finding(True, f"dataset {challenge.dataset}: no local copy; Keras's download is cached in {cached}")
    return Finding(False, f"dataset {challenge.dataset}: no local copy ({data.DATA_DIR_ENV} unset or without it); "
                          "the first evaluate downloads it through keras.datasets (offline, point at a copy)",
                   f"export {data.DATA_DIR_ENV}=/path/to/folder-with-{data.NPZ_NAMES[challenge.dataset][0]}", note=True)


def submissions_folder(challenge: config.Challenge) -> Finding:
    folder = Path(challenge.submissions)
    if not folder.is_dir():
        return Finding(False, f"no submissions folder {folder.as_posix()}/ (a fresh clone after `bench clear` has one)",
                       f"mkdir -p {folder.as_posix()}")
    entries = [path for path in folder.glob("*.py") if not path.name.startswith("_")]  # as discover.find counts them
    return Finding(True, f"submissions folder {folder.as_posix()}/: {len(entries)} entry file(s)")


def _sudo() -> str:
    return "" if hasattr(os, "geteuid") and os.geteuid() == 0 else "sudo "
