"""The OS sandbox around every process that runs an entry's code or its exported model: bubblewrap.

`command(argv, ...)` wraps a worker's command line in `bwrap` so that the process sees:

- read-only: the system's programs and libraries (/usr and its merged-/usr links), the Python
  environment this harness runs in (its prefixes and the folders of `sys.path` outside the working
  directory), and this copy of the `bench` package at its own path (its source is public anyway);
- read-only, at `INPUT`: the run's job folder (the job, the arrays it is given, the entry's file and
  its `_*.py` helpers) and nothing else of the checkout, the dataset files or the hidden test set;
- writable: `OUTPUT` (what the run leaves for the harness), and a private `/tmp` (also `HOME`) and
  `/dev/shm`, memory-backed and each no larger than the run's memory limit or the cap on what a run
  writes (bench.containment.MAX_WRITTEN_BYTES), whichever is smaller; everything else, the sandbox's own
  root and `/dev` included, is read-only, so those two are all the memory a run can keep in files, and
  the watcher counts them (bench.containment.watch);
- no nested user namespaces (`--disable-userns`), so no mounts of the entry's own making;
- its own user, PID, IPC, UTS, cgroup and network namespaces: no network, no view of any process
  outside the sandbox (so no other process's command line or environment), and every process in it
  dies with the sandbox's first process (`--die-with-parent`, and the PID namespace's init);
- no capabilities (`--cap-drop ALL`, for root too) and an empty environment but for what the
  runner passes (`--clearenv`, then `--setenv`).

Modes (`sandbox` in [tool.bench], `--sandbox`): `auto` uses bubblewrap when it works here and warns
once with the install line otherwise; `required` refuses to run without it; `off` runs the worker
directly (a trusted machine). Bubblewrap needs unprivileged user namespaces when not run as root
(Debian and Ubuntu allow them by default; `sysctl kernel.unprivileged_userns_clone=1` otherwise).
"""

from __future__ import annotations

import functools
import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import bench

MODES = ("auto", "required", "off")
BUBBLEWRAP = "bwrap"
INSTALL_HINT = "sudo apt-get install bubblewrap (Debian/Ubuntu; dnf install bubblewrap on Fedora)"
# Where the sandboxed process finds its inputs and leaves its outputs.
INPUT = "/job"
OUTPUT = "/out"
HOME = "/tmp/home"
# System folders bound read-only when they are real folders, recreated as links when they are links
# (merged /usr: /lib -> usr/lib), so the dynamic loader finds the same files.
SYSTEM_PATHS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
# The few /etc files the loader and the C library read; nothing with accounts or secrets.
ETC_FILES = ("/etc/ld.so.cache", "/etc/ld.so.conf", "/etc/ld.so.conf.d", "/etc/localtime")


class SandboxUnavailable(RuntimeError):
    """`sandbox = "required"` and bubblewrap is missing or does not work on this machine."""


_warned: set = set()


def active(mode: str) -> bool:
    """`resolve(mode)`, warning on stderr once per process; what the runner asks before each run."""
    def warn_once(message):
        if message not in _warned:
            _warned.add(message)
            print(message, file=sys.stderr)

    return resolve(mode, warn_once)


def resolve(mode: str, warn=print) -> bool:
    """Whether runs go through bubblewrap under `mode`; raises SandboxUnavailable for `required`.

    `auto` without a working bubblewrap warns once (through `warn`) with the reason, and the install line where bubblewrap is missing.
    """
    if mode not in MODES:
        raise ValueError(f"sandbox = {mode!r}: choose one of {', '.join(MODES)}")
    if mode == "off":
        return False
    problem = unavailable()
    if problem is None:
        return True
    # The install line only where bubblewrap is missing: installed but refused, the reason is the advice.
    install = f"install it with `{INSTALL_HINT}`, " if shutil.which(BUBBLEWRAP) is None else ""
    if mode == "required":
        raise SandboxUnavailable(f"sandbox = \"required\" but {problem}: {install or 'fix that, '}"
                                 "or run with --sandbox off on a machine you trust")
    warn(f"warning: {problem}; entries run WITHOUT a sandbox and can read what this account can read. "
         f"{'I' + install[1:] if install else 'Fix that, '}or set sandbox = \"off\" in [tool.bench] to silence this")
    return False


@functools.lru_cache(maxsize=1)
def unavailable() -> str | None:
    """None when bubblewrap runs a process in its namespaces here; else what is wrong, in words."""
    if os.name != "posix" or not sys.platform.startswith("linux"):
        return f"bubblewrap runs on Linux only, not on {sys.platform}"
    if shutil.which(BUBBLEWRAP) is None:
        return "bubblewrap (bwrap) is not installed"
    probe = subprocess.run(command([interpreter(), "-c", "import bench"], {}, None, env={"PYTHONPATH": python_path_env()}),
                           capture_output=True, text=True, env={}, timeout=60)
    if probe.returncode != 0:
        said = (probe.stderr.strip().splitlines() or [f"exit code {probe.returncode}"])[-1]
        return (f"bubblewrap is installed but cannot start a sandbox here ({said}); unprivileged user namespaces "
                "may be disabled (sysctl kernel.unprivileged_userns_clone=1, or kernel.apparmor_restrict_unprivileged_userns=0)")
    return None


def command(argv: list[str], read_only: dict[str, str | Path], output_dir: str | Path | None,
            env: dict | None = None, workdir: str = "/tmp", memory_mb: int | None = None) -> list[str]:
    """`argv` run inside bubblewrap, each of `read_only` {path inside: folder outside} bound read-only,
    `output_dir` writable at OUTPUT, and the environment `env` alone; `/tmp` and `/dev/shm` hold at most
    `tmpfs_bytes(memory_mb)` each (MB; None: the cap on what a run writes alone)."""
    size = ["--size", str(tmpfs_bytes(memory_mb))] if supports("--size") else []
    args = [shutil.which(BUBBLEWRAP) or BUBBLEWRAP, "--unshare-all", "--die-with-parent", "--cap-drop", "ALL", "--clearenv",
            *(["--unshare-user", "--disable-userns"] if supports("--disable-userns") else []),
            "--proc", "/proc", "--dev", "/dev", *size, "--tmpfs", "/dev/shm", *size, "--tmpfs", "/tmp", "--dir", HOME]
    for path in SYSTEM_PATHS:
        if os.path.islink(path):
            args += ["--symlink", os.readlink(path), path]
        elif os.path.isdir(path):
            args += ["--ro-bind", path, path]
    args += [arg for path in ETC_FILES if os.path.exists(path) for arg in ("--ro-bind", path, path)]
    for path in python_paths():
        args += ["--ro-bind", path, path]
    for path in dataset_paths():
        args += ["--tmpfs", path, "--remount-ro", path] if os.path.isdir(path) else ["--ro-bind", "/dev/null", path]
    for inside, outside in read_only.items():
        args += ["--ro-bind", str(Path(outside).resolve()), inside]
    if output_dir is not None:
        args += ["--bind", str(Path(output_dir).resolve()), OUTPUT]
    for name, value in sorted((env or {}).items()):
        args += ["--setenv", name, value]
    # Last, once every mount point exists: the root and /dev are tmpfs too, and writable ones would be memory
    # that nothing counts. /dev's devices and /dev/shm are mounts of their own, and stay as they are.
    args += ["--remount-ro", "/dev", "--remount-ro", "/", "--chdir", workdir, "--", *argv]
    return args


def tmpfs_bytes(memory_mb: int | None) -> int:
    """Bytes each of the sandbox's /tmp and /dev/shm may hold: the run's memory limit (MB) or the cap on what a run
    writes (bench.containment.MAX_WRITTEN_BYTES), whichever is smaller; what they hold counts against both."""
    from bench import containment

    cap = containment.MAX_WRITTEN_BYTES
    return min(cap, memory_mb * 2**20) if memory_mb else cap


@functools.lru_cache(maxsize=None)
def supports(option: str) -> bool:
    """Whether this bubblewrap knows `option` (`--size` and `--disable-userns` came with 0.8.0); without them the
    watcher's live count alone bounds /tmp and /dev/shm."""
    try:
        shown = subprocess.run([shutil.which(BUBBLEWRAP) or BUBBLEWRAP, "--help"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return False
    return f"{option} " in shown.stdout + shown.stderr


@functools.lru_cache(maxsize=None)
def dataset_paths() -> tuple[str, ...]:
    """Labelled data the bound folders would otherwise show an entry, hidden under empty folders: the
    copies of the datasets that ship inside Python packages (scikit-learn's digits) or the system
    (Debian's dataset packages), and the folder named by BENCH_DATA_DIR if it lies inside a bound one.
    An entry gets its training arrays from the runner and nothing else."""
    from bench import data

    found = []
    sklearn = importlib.util.find_spec("sklearn")  # found, not imported: scikit-learn is slow to import
    if sklearn and sklearn.origin:
        found.append(str(Path(sklearn.origin).resolve().parent / "datasets" / "data"))
    found += [str(folder) for folders in data.SYSTEM_DIRS.values() for folder in folders]
    if os.environ.get("BENCH_DATA_DIR"):
        found.append(str(Path(os.environ["BENCH_DATA_DIR"]).resolve()))
    bound = [Path(p) for p in (*SYSTEM_PATHS, *python_paths())]
    return tuple(path for path in dict.fromkeys(found)
                 if os.path.exists(path) and any(Path(path).is_relative_to(b) for b in bound))


def python_paths() -> list[str]:
    """The folders this interpreter and its packages live in, outermost first, none inside another.

    The working directory (often the project checkout, with its results and submissions) is left
    out, and so are the folders above the `bench` package: only the package itself is bound.
    """
    here = Path.cwd().resolve()
    package = Path(bench.__file__).resolve().parent
    candidates = {Path(p).resolve() for p in (sys.prefix, sys.base_prefix, sys.exec_prefix)}
    candidates.add(Path(sys.executable).resolve().parent.parent)
    for entry in sys.path:
        path = Path(entry or ".").resolve()
        if path.is_dir() and path != here and path not in package.parents:
            candidates.add(path)
    candidates.add(package)
    kept = []
    for path in sorted(candidates, key=lambda p: len(p.parts)):
        if path.exists() and path != Path("/") and not any(path.is_relative_to(k) for k in kept) \
                and not any(path.is_relative_to(s) for s in SYSTEM_PATHS if os.path.isdir(s) and not os.path.islink(s)):
            kept.append(path)
    return [str(p) for p in kept]


def interpreter() -> str:
    """This Python, named by a path that exists inside the sandbox: `sys.executable` with its folder resolved.

    The sandbox binds folders at their real paths, so an interpreter reached through a linked folder
    (a virtual environment that is a link to one elsewhere) would not be found there. The file itself
    stays unresolved: a virtual environment's `python` is a link to the system's, and Python finds the
    environment from the path it was started by.
    """
    executable = Path(sys.executable)
    return str(executable.parent.resolve() / executable.name)


def python_path_env() -> str:
    """PYTHONPATH inside the sandbox: the folder holding this `bench`, bound there on its own."""
    return str(Path(bench.__file__).resolve().parent.parent)
