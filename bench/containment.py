"""Keep an entry's worker subprocess in bounds: memory, processes, time, environment and the records.

An entry is someone else's Python code, run with the evaluator's user account. What bounds it here:

- Memory: RLIMIT_DATA in the worker (`memory_limit_mb`), so an allocation past it raises MemoryError.
  Not RLIMIT_AS: TensorFlow reserves far more address space than it uses and aborts under a 2 GB one.
  The parent also sums the proportional memory of all the run's processes and stops the run past
  the limit: forked children each get their own RLIMIT_DATA, and root may raise its own limits.
- Processes: the worker leads its own session; the parent counts the session's processes and stops the
  run past MAX_PROCESSES, and kills whatever is left of the session when the run ends, however it ends.
  RLIMIT_NPROC bounds a fork bomb for ordinary users; the kernel does not apply it to root.
- Memory kept in files: in the sandbox, what its /tmp and /dev/shm hold (memory-backed), and in every
  mode the memory-only files (memfd_create) its processes hold open, count against the memory limit with
  the processes' own, at every poll. SysV shared memory and message queues, which outlive their
  processes' mappings and no file shows, are refused instead: a seccomp filter (libseccomp, through
  pyseccomp) makes shmget and msgget fail with EPERM in the worker and all it starts (SYSV_IPC_REFUSED).
- Disk and files: what a run writes (its output folder, and in the sandbox /tmp and /dev/shm) is counted
  at every poll, bytes against MAX_WRITTEN_BYTES and files and folders against MAX_WRITTEN_FILES (and
  MAX_WRITTEN_DEPTH); past either the run is stopped. RLIMIT_FSIZE keeps any one file under the byte
  cap between two polls.
- Time: the wall-clock `time_limit`, enforced by the parent.
- Environment: only ALLOWED_ENV (no tokens or credentials), a temporary HOME and TMPDIR.
- Records: `ProtectedFiles` keeps a copy of results/ and the leaderboard, and after each run undoes any
  change the runner did not make itself, reporting the run as FAILED. Another bench command writing
  into the same results folder at any time since the last check (`writing`), even one that has ended
  since, turns this into a logged note: its changes and an entry's cannot be told apart.

- Sessions: setsid() is refused by the same filter (SESSION_REFUSED), so every process of a run stays in its
  session, where the watcher counts it and kills it, and the kernel's autogroups give the run one share of the CPU.

Not covered: anything the user account may read (files, other processes' environments) the entry may read too. Run untrusted
entries where that account holds nothing else, as a fresh CI virtual machine does.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import signal
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench import untrusted

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None

# An entry has no reason to start processes of its own; TensorFlow starts threads, not processes.
MAX_PROCESSES = 32
# Threads (RLIMIT_NPROC counts them) the worker may add to what the user account already runs.
EXTRA_THREADS = 1024
POLL_SECONDS = 0.25
ALLOWED_ENV = {"PATH", "LANG", "LANGUAGE", "LC_ALL", "LC_CTYPE", "TZ", "PYTHONPATH", "PYTHONHASHSEED",
               "BENCH_THREADS", "OMP_NUM_THREADS", "KERAS_BACKEND", "CUDA_VISIBLE_DEVICES", "LD_LIBRARY_PATH", "XLA_FLAGS"}
ALLOWED_PREFIXES = ("TF_",)
# Terraform's TF_TOKEN_* and TF_VAR_* share TensorFlow's prefix: names like these never pass.
SECRET_WORDS = ("TOKEN", "SECRET", "PASSWORD", "CREDENTIAL", "KEY", "AUTH", "TF_VAR_")

# What one run may write while it runs, all places together: a model within any budget needs a few MB in a few
# dozen files (bench.received.MAX_OUTPUT_BYTES caps the output again after the run). Past these the run is stopped.
MAX_WRITTEN_BYTES = 2 * 2**30
MAX_WRITTEN_FILES = 10_000
# Folders nested deeper than this count as past MAX_WRITTEN_FILES: a SavedModel is 2 deep.
MAX_WRITTEN_DEPTH = 32

TIME, MEMORY, PROCESSES, DISK, FILES = "time", "memory", "processes", "disk", "files"


def default_memory_limit_mb() -> int | None:
    """Half of this machine's memory: a runaway entry cannot take the machine down with it."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2 // 2**20
    except (AttributeError, ValueError, OSError):
        return None


def environment(base: dict, workdir: str | Path) -> dict:
    """The allowed variables of `base`, with HOME and TMPDIR inside the run's temporary folder."""
    env = {k: v for k, v in base.items()
           if (k in ALLOWED_ENV or k.startswith(ALLOWED_PREFIXES)) and not any(w in k.upper() for w in SECRET_WORDS)}
    home = Path(workdir) / "home"
    (home / "tmp").mkdir(parents=True, exist_ok=True)
    # Keras finds its downloaded datasets where the evaluator's own Keras keeps them.
    keras_home = base.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    return {**env, "HOME": str(home), "TMPDIR": str(home / "tmp"), "KERAS_HOME": keras_home}


# In place of "--" in this module's command line: RLIMIT_NPROC is set inside the sandbox (`inside_sandbox`), not here.
THREADS_INSIDE = "--threads-inside"


def command(worker: list[str], memory_mb: int | None, threads_inside: bool = False) -> list[str]:
    """`worker` started through this module, which sets the limits and then becomes the worker. `threads_inside`:
    `worker` is a sandbox whose command went through `inside_sandbox`, which sets RLIMIT_NPROC in there."""
    if os.name != "posix":
        return worker
    return [sys.executable, "-m", "bench.containment", str(memory_mb or 0), str(MAX_WRITTEN_BYTES),
            THREADS_INSIDE if threads_inside else "--", *worker]


def inside_sandbox(worker: list[str]) -> list[str]:
    """`worker` (its first item the sandbox's Python) behind a step that sets RLIMIT_NPROC inside the sandbox.

    RLIMIT_NPROC is checked against every thread of the user account: set here, as the account's count plus
    EXTRA_THREADS, it let a run beside this one take what was left (a red team's entry started threads until it
    could start no more, held them, then trained as usual; every run started before it aborted on its next thread,
    recorded as its own doing). Inside bubblewrap's user namespace the kernel counts the namespace's own threads
    against the limit, and the account's against the limit of the process that made the namespace (bubblewrap,
    left as the account has it), so each run's allowance is its own. Where the sandbox has no user namespace of its
    own (a set-user-ID bubblewrap), the account's count taken here still applies, as before."""
    return [worker[0], "-m", "bench.containment", "threads", str(_user_threads()), "--", *worker]


def _own_user_namespace() -> bool:
    """Whether this process runs in a user namespace of its own, not the machine's (whose map is the whole range)."""
    try:
        return Path("/proc/self/uid_map").read_text().split() != ["0", "0", "4294967295"]
    except OSError:
        return False


def _limit_threads_and_exec(argv: list[str]) -> None:
    """In the sandbox: RLIMIT_NPROC, then become the worker (`inside_sandbox`)."""
    import resource

    account, worker = int(argv[0]), argv[2:]
    limit = (_user_threads() if _own_user_namespace() else account) + EXTRA_THREADS
    try:
        resource.setrlimit(resource.RLIMIT_NPROC, (limit, limit))
    except (ValueError, OSError) as error:
        print(f"bench: could not set RLIMIT_NPROC: {error}", file=sys.stderr)
    os.execv(worker[0], worker)


def _limit_and_exec(argv: list[str]) -> None:
    import resource

    memory_mb, file_bytes, worker = int(argv[0]), int(argv[1]), argv[3:]
    # RLIMIT_FSIZE: a write past it fails with EFBIG (Python ignores SIGXFSZ), so no single file outgrows the
    # byte cap between two of the watcher's polls.
    limits = {"RLIMIT_FSIZE": file_bytes}
    if argv[2] != THREADS_INSIDE:
        limits["RLIMIT_NPROC"] = _user_threads() + EXTRA_THREADS
    if memory_mb:
        limits["RLIMIT_DATA"] = memory_mb * 2**20
    for name, value in limits.items():
        try:
            resource.setrlimit(getattr(resource, name), (value, value))
        except (ValueError, OSError) as error:  # a system that refuses one still runs the entry, watched by the parent
            print(f"bench: could not set {name}: {error}", file=sys.stderr)
    _refuse_sysv_ipc(worker[0])
    _die_with_parent()
    os.execv(worker[0], worker)


# Kernel-held memory a process can fill, detach from and leave behind, counted by no process and no file the
# watcher reads (msgget: up to msgmni queues of msgmnb bytes each). TensorFlow, JAX and Python's own
# multiprocessing.shared_memory (POSIX shm, files in /dev/shm, which are counted) use neither.
SYSV_IPC_REFUSED = ("shmget", "msgget")
# A session of its own: the watcher finds a run's processes by their session (memory summed, processes counted, all
# killed when the run ends), so a child that called setsid() held memory past the run's limit unseen, and outside the
# sandbox outlived the run; and under the kernel's autogroups each session is a CPU share of its own: a red team's 20
# such processes of 40 hashing threads each stretched the rival run beside it from 12 s past its 60 s limit (TIMEOUT).
# Refused by the same filter: a run's processes stay in its session, one share of the CPU.
SESSION_REFUSED = ("setsid",)


def _refuse_sysv_ipc(program: str) -> None:
    """Have SYSV_IPC_REFUSED fail with EPERM in this process and everything it becomes or starts (a seccomp
    filter, kept across `exec` and `fork`).

    Loading it sets no_new_privs, under which a set-user-ID `program` (bubblewrap on a few distributions) would
    start without its privileges: then nothing is loaded and stderr says so. Linux only. Where libseccomp is
    missing, stderr says so too; either way the run goes on with SysV IPC uncounted (`bench doctor` reports it)."""
    if not sys.platform.startswith("linux"):
        return
    if os.stat(program).st_mode & stat.S_ISUID:
        print(f"bench: {program} is set-user-ID; SysV shared memory is not refused in this run", file=sys.stderr)
        return
    try:
        seccomp_filter()
    except Exception as error:  # no libseccomp.so.2, or a kernel without seccomp
        print(f"bench: could not refuse SysV shared memory ({error}); install libseccomp2", file=sys.stderr)


def seccomp_filter(load: bool = True):
    """The filter `_refuse_sysv_ipc` loads (`load=False`: built, not loaded, for bench.doctor). Raises ImportError
    or OSError where pyseccomp or libseccomp is missing."""
    import errno

    import pyseccomp

    refused = pyseccomp.SyscallFilter(pyseccomp.ALLOW)
    if pyseccomp.system_arch() == pyseccomp.Arch.X86_64:
        # x32 system calls reach an x86_64 filter with their own numbers: refuse them under those too.
        refused.add_arch(pyseccomp.Arch.X32)
    for name in (*SYSV_IPC_REFUSED, *SESSION_REFUSED):
        refused.add_rule(pyseccomp.ERRNO(errno.EPERM), name)
    if load:
        refused.load()
    return refused


PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


def _die_with_parent() -> None:
    """Have the kernel kill this process (and the worker it becomes) when the runner dies.

    The runner ends its runs itself on Ctrl-C and SIGTERM; SIGKILL gives it no chance, and a worker
    outside the sandbox (whose bubblewrap has --die-with-parent) would train on with no time limit.
    The setting survives `exec` (not of a set-user-ID program). Linux only; elsewhere nothing changes.
    """
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    parent = os.getppid()
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        print(f"bench: could not set the parent-death signal: {os.strerror(ctypes.get_errno())}", file=sys.stderr)
    elif os.getppid() != parent:  # the runner died before the setting took hold
        os._exit(1)


def _user_threads() -> int:
    uid, count = os.getuid(), 0
    for pid in _pids():
        try:
            if os.stat(f"/proc/{pid}").st_uid == uid:
                count += len(os.listdir(f"/proc/{pid}/task"))
        except OSError:
            pass
    return count


def watch(process: subprocess.Popen, time_limit: float, memory_mb: int | None, written: tuple = ()) -> str | None:
    """Wait for the worker; None when it ended by itself, else the limit it broke (TIME, MEMORY, PROCESSES,
    DISK, FILES). `written`: the folders outside any sandbox the run may write (its output, its HOME), counted
    with the sandbox's memory-backed folders at every poll."""
    deadline = time.monotonic() + time_limit
    while True:
        try:
            process.wait(timeout=max(0.0, min(POLL_SECONDS, deadline - time.monotonic())))
            return None
        except subprocess.TimeoutExpired:
            pass
        if time.monotonic() >= deadline:
            return TIME
        members = session_members(process.pid)
        if len(members) > MAX_PROCESSES:
            return PROCESSES
        held_bytes, held_files = held_in_sandbox(members)
        held_bytes += held_in_memory_files(members)
        limit = memory_mb * 2**20 if memory_mb else None
        if limit and held_bytes + memory_of(members, limit - held_bytes) > limit:
            return MEMORY
        broken = written_limit(held_bytes, held_files, written)
        if broken:
            return broken


def written_limit(held_bytes: int, held_files: int, folders: tuple) -> str | None:
    """DISK or FILES when `held_bytes` and `held_files` (the sandbox's /tmp and /dev/shm) and what `folders` hold
    together pass MAX_WRITTEN_BYTES or MAX_WRITTEN_FILES; else None."""
    size, files = held_bytes, held_files
    for folder in folders:
        more_size, more_files = tree_usage(folder, MAX_WRITTEN_FILES - files)
        size, files = size + more_size, files + more_files
        if files > MAX_WRITTEN_FILES:
            return FILES
    if size > MAX_WRITTEN_BYTES:
        return DISK
    return FILES if files > MAX_WRITTEN_FILES else None


def tree_usage(root: str | Path, max_files: int) -> tuple[int, int]:
    """(bytes, files and folders) under `root`, links not followed, each file counted at the larger of its size
    and its allocated blocks (a sparse or preallocated file counts in full). Counting stops past `max_files`;
    a folder deeper than MAX_WRITTEN_DEPTH counts as `max_files` + 1. Folders are opened relative to their
    parent (no path grows with the depth), at most MAX_WRITTEN_DEPTH of them at a time; what vanishes while
    it is read (the run is still writing) is skipped."""
    size = files = 0
    try:
        top = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    except OSError:
        return 0, 0
    stack = [(top, _listing(top))]
    try:
        while stack:
            folder, listing = stack[-1]
            entry = next(listing, None)
            if entry is None:
                stack.pop()
                _close(folder, listing)
                continue
            files += 1
            if files > max_files:
                return size, files
            try:
                info = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            size += max(info.st_size, info.st_blocks * 512)
            if not stat.S_ISDIR(info.st_mode):
                continue
            if len(stack) >= MAX_WRITTEN_DEPTH:
                return size, max_files + 1
            try:
                inner = os.open(entry.name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=folder)
            except OSError:
                continue
            stack.append((inner, _listing(inner)))
    finally:
        for folder, listing in stack:
            _close(folder, listing)
    return size, files


def _listing(folder: int):
    try:
        return os.scandir(folder)
    except OSError:
        return iter(())


def _close(folder: int, listing) -> None:
    if hasattr(listing, "close"):
        listing.close()
    os.close(folder)


def held_in_sandbox(members: list[int]) -> tuple[int, int]:
    """(bytes, files and folders) held in the writable tmpfs mounts (memory-backed: /tmp and /dev/shm) of the
    sandboxes that `members` run in: each process in a mount namespace other than this one's, read through
    /proc/PID/root. (0, 0) for a run outside a sandbox: its files are on the disk, counted by `written_limit`."""
    own, seen = _mount_namespace("self"), set()
    size = files = 0
    for pid in members:
        namespace = _mount_namespace(pid)
        if namespace is None or namespace == own or namespace in seen:
            continue
        seen.add(namespace)
        for mount in writable_tmpfs(pid):
            try:
                info = os.statvfs(f"/proc/{pid}/root{mount}")
            except OSError:
                continue
            size += (info.f_blocks - info.f_bfree) * info.f_frsize
            files += info.f_files - info.f_ffree
    return size, files


def held_in_memory_files(pids: list[int]) -> int:
    """Bytes in the memory-only files (memfd_create) the processes hold open, each file once: like /dev/shm they
    are memory, and pages written to one but never mapped are in no process's resident memory."""
    seen, size = set(), 0
    for pid in pids:
        try:
            descriptors = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for descriptor in descriptors:
            try:
                if not os.readlink(f"/proc/{pid}/fd/{descriptor}").startswith("/memfd:"):
                    continue
                info = os.stat(f"/proc/{pid}/fd/{descriptor}")
            except OSError:
                continue
            if (info.st_dev, info.st_ino) not in seen:
                seen.add((info.st_dev, info.st_ino))
                size += info.st_blocks * 512
    return size


def writable_tmpfs(pid: int) -> list[str]:
    """Mount points of the writable tmpfs filesystems process `pid` sees, each filesystem once (from its
    /proc/PID/mountinfo: read from the kernel, so a mount point bound over /tmp is never taken for /tmp)."""
    try:
        lines = Path(f"/proc/{pid}/mountinfo").read_text().splitlines()
    except OSError:
        return []
    found = {}
    for line in lines:
        fields, _, filesystem = line.partition(" - ")
        fields = fields.split()
        if len(fields) >= 6 and filesystem.split(" ")[0] == "tmpfs" and "rw" in fields[5].split(","):
            # mountinfo writes a space in a path as \040, and a tab, newline or backslash likewise
            found.setdefault(fields[2], re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), fields[4]))
    return list(found.values())


def _mount_namespace(pid) -> str | None:
    try:
        return os.readlink(f"/proc/{pid}/ns/mnt")
    except OSError:
        return None


def explain(limit: str, memory_mb: int | None) -> str:
    """The FAILED message of a run stopped at `limit` (MEMORY, PROCESSES, DISK or FILES): what it broke and what to change."""
    if limit == MEMORY:
        return (f"stopped: its processes, with what they kept in /tmp and /dev/shm, used more than {memory_mb:,} MB of memory, "
                f"{memory_hint(memory_mb)}")
    if limit == DISK:
        return (f"stopped: it wrote more than {MAX_WRITTEN_BYTES:,} bytes (its output folder, /tmp and /dev/shm together; "
                "MAX_WRITTEN_BYTES in bench/containment.py); an entry needs no files of its own: the harness saves the model")
    if limit == FILES:
        return (f"stopped: it made more than {MAX_WRITTEN_FILES:,} files and folders, or folders nested more than "
                f"{MAX_WRITTEN_DEPTH} deep (its output folder, /tmp and /dev/shm together; MAX_WRITTEN_FILES and "
                "MAX_WRITTEN_DEPTH in bench/containment.py); an entry needs no files of its own: the harness saves the model")
    return (f"stopped: it started more than {MAX_PROCESSES} processes; an entry must not start processes "
            "(no multiprocessing, os.fork or subprocess): build the model and let the harness train it")


def memory_hint(memory_mb: int | None) -> str:
    limit = f"{memory_mb:,} MB" if memory_mb else "this machine's memory"
    return (f"the limit of each run ({limit}: memory_limit_mb in [tool.bench], or --memory-limit): "
            "use smaller batches or a smaller model, and keep no copies of the data")


def session_members(session: int) -> list[int]:
    """Live processes of a session (zombies excluded: they hold no memory and are gone once reaped)."""
    members = []
    for pid in _pids():
        stat = _stat(pid)
        if stat and stat[3] == session and stat[0] != "Z":
            members.append(pid)
    return members


def memory_of(pids: list[int], limit: int | None = None) -> int:
    """Bytes the processes hold. RSS counts pages a fork shares once per process, so a sum over `limit`
    (bytes; None: any sum) is measured again with PSS, which shares them out. PSS costs ~30 ms of CPU per
    TensorFlow process (measured on a training worker), which a watcher polling 4 times a second cannot
    pay on every poll."""
    page = os.sysconf("SC_PAGE_SIZE")
    resident = 0
    for pid in pids:
        try:
            resident += int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * page
        except (OSError, IndexError, ValueError):
            pass
    if len(pids) < 2 or resident == 0 or (limit is not None and resident <= limit):
        return resident
    proportional = 0
    for pid in pids:
        try:
            text = Path(f"/proc/{pid}/smaps_rollup").read_text()
        except OSError:
            continue
        proportional += next((int(line.split()[1]) * 1024 for line in text.splitlines() if line.startswith("Pss:")), 0)
    return proportional or resident


def end_session(session: int) -> None:
    """Kill every process left in the worker's session, including those that made process groups of their own."""
    if hasattr(os, "killpg"):
        try:
            os.killpg(session, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    for _ in range(100):  # a fork bomb keeps forking until each of its processes is killed
        members = session_members(session)
        if not members:
            return
        for pid in members:
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        time.sleep(0.02)


def _pids() -> list[int]:
    try:
        return [int(name) for name in os.listdir("/proc") if name.isdigit()]
    except OSError:  # no /proc (macOS): the process checks are skipped, killpg still ends the run
        return []


def _stat(pid: int) -> list | None:
    """(state, ppid, pgrp, session) of /proc/PID/stat; the command name in parentheses may hold spaces."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rfind(")") + 2:].split()
    return [fields[0], int(fields[1]), int(fields[2]), int(fields[3])]


class ProtectedFiles:
    """A copy of the records and the leaderboard; any change the runner did not make is undone.

    Runs finish one at a time here, so after each run `restore()` puts back what changed meanwhile and
    names it; `accept(path)` records a file the runner itself wrote. When another bench command wrote
    into the same results folder since the last check (see `writing`), changes may be its own: they
    are kept, and logged. That command may have ended by then, its last records written just before.
    """

    def __init__(self, results_dir: str | Path, *files: str | Path, log=print):
        self.results_dir = Path(results_dir)
        self.roots = [self.results_dir, *map(Path, files)]
        self.log = log
        self.expected = self._read()
        self.checked_at = time.time()

    def _read(self) -> dict[Path, bytes]:
        """Every file under the roots, walked iteratively and never following a link: outside the sandbox an entry
        can leave a 1,500-deep folder, a link to /dev/zero or a named pipe there, and none may end or hang the run."""
        found = {}
        for root in self.roots:
            if not root.is_symlink() and root.is_dir():
                try:
                    for relative, info in untrusted.walk(root, PROTECTED_DEPTH, PROTECTED_ENTRIES):
                        if not stat.S_ISDIR(info.st_mode):
                            found[root / relative] = _content(root / relative)
                except untrusted.Refused as error:
                    self.log(f"not checked: the rest of {root}, which holds {error}")
            elif os.path.lexists(root):
                found[root] = _content(root)
        return found

    def accept(self, path: Path) -> None:
        self.expected[Path(path)] = _content(Path(path))

    def restore(self, undo: bool = True) -> list[str]:
        """Undo every change since the last check (with `undo`; else only take it as the new state); the changed paths, sorted."""
        since, self.checked_at = self.checked_at, time.time()
        current = self._read()
        changed = sorted({p for p in current.keys() | self.expected.keys() if current.get(p) != self.expected.get(p)})
        others = other_writers(self.results_dir, since) if changed else []
        if others:
            self.log(f"not checked: {len(changed)} file(s) changed while bench process(es) {others} also wrote into {self.results_dir}")
            self.expected = current
            return []
        if not undo:
            self.expected = current
            return [str(p) for p in changed]
        for path in changed:
            path.unlink(missing_ok=True)  # a symlink is replaced, never written through
            if path in self.expected:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(self.expected[path])
        return [str(p) for p in changed]


@contextlib.contextmanager
def writing(results_dir: str | Path):
    """Mark this process as writing into `results_dir` while the block runs: a file in the temporary
    folder, locked while it runs and stamped with its end time after, so another evaluation's
    ProtectedFiles leaves its changes alone, also when they show up only after this process ended."""
    if fcntl is None:  # Windows: no marks, so every change is undone
        yield
        return
    WRITERS.mkdir(exist_ok=True)
    marker = WRITERS / f"{_folder_key(results_dir)}-{os.getpid()}"
    with marker.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)  # released when this process ends, however it ends
        try:
            yield
        finally:
            handle.write(repr(time.time()))


def other_writers(results_dir: str | Path, since: float) -> list[int]:
    """Processes other than this one marked as writing into `results_dir`: those still running, and
    those that ended at or after `since`. A mark left by a killed process, which could not stamp its
    end time, counts as ending just before the check that first finds it unlocked. Marks that ended
    more than MARK_KEPT_SECONDS ago are removed."""
    if fcntl is None or not WRITERS.is_dir():
        return []
    found = []
    for marker in WRITERS.glob(f"{_folder_key(results_dir)}-*"):
        pid = marker.name.rsplit("-", 1)[1]
        if pid == str(os.getpid()):
            continue
        try:
            with marker.open("r+") as handle:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                ended = _end_time(handle.read())
                if ended is None:  # killed at some unknown time: counted by this check, not by later ones
                    ended = since
                    handle.write(repr(ended))
        except BlockingIOError:
            found.append(pid)
            continue
        except OSError:
            continue
        if ended >= since:
            found.append(pid)
        elif ended < time.time() - MARK_KEPT_SECONDS:
            marker.unlink(missing_ok=True)
    return sorted((int(pid) if pid.isdigit() else pid for pid in found), key=str)


def _end_time(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


# Longer than any one run between two checks (the time limit is per run), so no end is missed.
MARK_KEPT_SECONDS = 7 * 24 * 3600
# One folder per user: a folder another account created is not writable here.
WRITERS = Path(tempfile.gettempdir()) / f"bench-writers-{os.getuid()}"


def _folder_key(results_dir: str | Path) -> str:
    return hashlib.sha256(str(Path(results_dir).resolve()).encode()).hexdigest()[:16]


# Bounds on what ProtectedFiles reads: records lie three folders down and hold kilobytes; the board's plot, less than
# a megabyte.
PROTECTED_DEPTH, PROTECTED_ENTRIES, PROTECTED_FILE_BYTES = 32, 1_000_000, 64 * 2**20


def _content(path: Path) -> bytes:
    """What identifies the file at `path`: its bytes, where a link points, or what else it is (never read)."""
    try:
        info = os.lstat(path)
        if stat.S_ISLNK(info.st_mode):
            return b"symlink -> " + os.readlink(path).encode()
        if not stat.S_ISREG(info.st_mode):
            return f"{untrusted.kind(info.st_mode)}, never read".encode()
        return untrusted.read_regular(path, PROTECTED_FILE_BYTES)
    except (OSError, untrusted.Refused) as error:
        return f"unreadable: {error}".encode()


def tampering(changed: list[str]) -> dict:
    shown = ", ".join(changed[:5]) + (f" and {len(changed) - 5} more" if len(changed) > 5 else "")
    return {"status": "FAILED", "message": f"changed files it must not touch while it ran: {shown}. "
            "They were restored. An entry must only build a model; results and the leaderboard are written by the harness"}


if __name__ == "__main__":
    # python -m bench.containment MEMORY_MB FILE_BYTES -- WORKER...: set the limits, then become the worker;
    # python -m bench.containment threads ACCOUNT_THREADS -- WORKER...: the same for RLIMIT_NPROC in a sandbox.
    if sys.argv[1:2] == ["threads"]:
        _limit_threads_and_exec(sys.argv[2:])
    else:
        _limit_and_exec(sys.argv[1:])
