"""Files and text the harness did not write: read without following links, walked iteratively within bounds,
removed without recursion, and cleaned of control characters before a record, the board or a terminal shows them.

An entry controls its own file, the helpers beside it (through a pull request), everything its training stage
writes, and the text it prints. A link read as a file would hand the harness's eyes to the entry (a hidden test
set, /proc/self/environ, /dev/zero); a deep folder would end Python's recursive os.walk and shutil.rmtree (a
RecursionError at about 1,000 levels in Python 3.11); a carriage return or an ANSI escape would rewrite the
terminal line above it.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import stat
import tempfile
from pathlib import Path

# An entry, or a helper beside it, is source code: a megabyte is far more than any model needs.
MAX_SOURCE_BYTES = 1_000_000
# O_NOFOLLOW: a link swapped in after a check fails the open (ELOOP) instead of being followed. O_NONBLOCK: a
# FIFO swapped in does not hang the open (fstat then refuses it). Both are 0 where the system lacks them.
_SAFE_OPEN = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)


class Refused(Exception):
    """A file or folder the harness will not read; the message says what to change."""


def kind(mode: int) -> str:
    """What a file of `mode` (os.lstat's st_mode) is, in words."""
    for test, name in ((stat.S_ISLNK, "a symbolic link"), (stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a named pipe"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "not a regular file"


def regular_file_problem(path: str | Path, limit: int = MAX_SOURCE_BYTES) -> str | None:
    """Why `path` is not a regular file of at most `limit` bytes (None when it is), from os.lstat alone: nothing is opened."""
    try:
        info = os.lstat(path)
    except OSError as error:
        return f"{path} cannot be read ({error.strerror})"
    if not stat.S_ISREG(info.st_mode):
        return f"{path} is {kind(info.st_mode)}, not a regular file: replace it with the file itself"
    if info.st_size > limit:
        return f"{path} holds {info.st_size:,} bytes, over the limit of {limit:,} for a source file: make it smaller"
    return None


def read_regular(path: str | Path, limit: int = MAX_SOURCE_BYTES) -> bytes:
    """The bytes of the regular file `path`, never following a link, at most `limit` of them.

    Raises Refused (a link, a device, a pipe, a folder, a file over `limit`, or one that cannot be opened),
    also when the file was swapped for something else between the check and the read."""
    problem = regular_file_problem(path, limit)
    if problem:
        raise Refused(problem)
    try:
        descriptor = os.open(path, _SAFE_OPEN)
    except OSError as error:  # ELOOP: a link was swapped in after the check
        raise Refused(f"{path} cannot be opened as a regular file ({error.strerror}): replace it with the file itself") from None
    with os.fdopen(descriptor, "rb") as file:
        if not stat.S_ISREG(os.fstat(descriptor).st_mode):
            raise Refused(f"{path} changed into something other than a regular file while it was read: replace it with the file itself")
        content = file.read(limit + 1)
    if len(content) > limit:
        raise Refused(f"{path} grew over the limit of {limit:,} bytes for a source file while it was read: make it smaller")
    return content


def walk(root: str | Path, max_depth: int, max_entries: int):
    """Yield (path relative to `root`, os.lstat result) for everything under `root`, folders before their content.

    Iterative (a stack, not recursion) and never following links: a link is yielded as a link. Raises
    Refused past `max_depth` levels or `max_entries` entries, or when a folder cannot be listed."""
    seen = 0
    stack = [(Path(root), Path(), 1)]
    while stack:
        folder, relative, depth = stack.pop()
        try:
            with os.scandir(folder) as entries:
                for entry in entries:
                    seen += 1
                    if seen > max_entries:
                        raise Refused(f"more than {max_entries:,} files and folders")
                    info = entry.stat(follow_symlinks=False)
                    yield relative / entry.name, info
                    if stat.S_ISDIR(info.st_mode):
                        if depth >= max_depth:
                            raise Refused(f"folders nested more than {max_depth} deep ({relative / entry.name})")
                        stack.append((Path(entry.path), relative / entry.name, depth + 1))
        except OSError as error:  # a name too long, a folder without read permission
            raise Refused(f"{relative or '.'} cannot be listed ({error.strerror})") from None


def remove_tree(root: str | Path) -> None:
    """Remove `root` and everything under it, however deep, never following a link; errors are ignored.

    shutil.rmtree recurses once per level (RecursionError past ~1,000 levels), and a depth-first removal
    would hold one open folder per level. Here every folder found under a child of `root` is first moved up
    to `root` itself, so nothing is ever more than two levels down and at most two folders are open."""
    with contextlib.suppress(OSError):
        if stat.S_ISDIR(os.lstat(root).st_mode):
            os.chmod(root, 0o700)
    try:
        top = os.open(root, os.O_RDONLY | os.O_DIRECTORY | getattr(os, "O_NOFOLLOW", 0))
    except OSError:
        with contextlib.suppress(OSError):
            os.unlink(root)  # a link or a file: removed, not followed
        return
    moved, before = 0, None
    try:
        while True:
            names = _names(top)
            if not names or names == before:  # empty, or nothing more can be removed
                break
            for name in names:
                moved = _empty_into(top, name, moved)
            before = names
    finally:
        os.close(top)
    with contextlib.suppress(OSError):
        os.rmdir(root)


def _names(folder_fd: int) -> list[str]:
    with contextlib.suppress(OSError), os.scandir(folder_fd) as entries:
        return [entry.name for entry in entries]
    return []


def _empty_into(top: int, name: str, moved: int) -> int:
    """Remove `name` (a child of the open folder `top`): a file at once; a folder after its files are removed
    and its folders moved up into `top`. Returns the running count of moved folders (their new names)."""
    with contextlib.suppress(OSError):
        if stat.S_ISDIR(os.lstat(name, dir_fd=top).st_mode):
            os.chmod(name, 0o700, dir_fd=top)  # an entry may leave a folder it made unreadable or read-only
    try:
        child = os.open(name, os.O_RDONLY | os.O_DIRECTORY | getattr(os, "O_NOFOLLOW", 0), dir_fd=top)
    except OSError:
        with contextlib.suppress(OSError):
            os.unlink(name, dir_fd=top)
        return moved
    try:
        for entry in _entries(child):
            if entry.is_dir(follow_symlinks=False):
                moved = _move_up(child, entry.name, top, moved)
            else:
                with contextlib.suppress(OSError):
                    os.unlink(entry.name, dir_fd=child)
    finally:
        os.close(child)
    with contextlib.suppress(OSError):
        os.rmdir(name, dir_fd=top)
    return moved


def _entries(folder_fd: int) -> list:
    with contextlib.suppress(OSError), os.scandir(folder_fd) as entries:
        return list(entries)
    return []


# What os.rename says when the new name is already a folder with content, or a file.
_NAME_TAKEN = (errno.ENOTEMPTY, errno.EEXIST, errno.ENOTDIR, errno.EISDIR)


def _move_up(parent: int, name: str, top: int, moved: int) -> int:
    for _ in range(1000):  # a name already taken in `top` (by the entry, or an earlier move) is skipped
        moved += 1
        try:
            os.rename(name, f".removing-{moved}", src_dir_fd=parent, dst_dir_fd=top)
            return moved
        except FileExistsError:
            continue
        except OSError as error:
            if error.errno in _NAME_TAKEN:
                continue
            return moved
    return moved


@contextlib.contextmanager
def temporary_folder(prefix: str):
    """tempfile.TemporaryDirectory for a folder that untrusted code may fill: removed with remove_tree."""
    folder = tempfile.mkdtemp(prefix=prefix)
    try:
        yield folder
    finally:
        remove_tree(folder)


# ---- text ------------------------------------------------------------------------------------------------

# Terminal escape sequences: CSI (ESC [ ... final byte), OSC (ESC ] ... BEL or ESC \), and two-byte escapes.
_ESCAPES = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?|\x1b[@-Z\\-_]|\x9b[0-?]*[ -/]*[@-~]")
# C0 and C1 controls (carriage return, backspace, ESC, ...) and Unicode's invisible format and direction marks;
# newline is allowed where a field has lines.
# Lone surrogates (a "\ud800" in JSON or a Python string) cannot be encoded as UTF-8: printing or writing one fails.
_CONTROLS = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u200b-\u200f\u2028-\u202e\u2060-\u206f\ud800-\udfff\ufeff\ufff9-\ufffb]")
_CONTROLS_AND_NEWLINE = re.compile(_CONTROLS.pattern[:-1] + r"\n]")
CUT = " ... (cut)"


def clean_text(text: str, limit: int, lines: bool = False) -> str:
    """`text` without escape sequences and control characters (a tab becomes a space; newlines stay when `lines`,
    else become spaces), cut to at most `limit` characters."""
    text = _ESCAPES.sub("", str(text)).replace("\t", " ")
    text = _CONTROLS.sub("", text) if lines else _CONTROLS_AND_NEWLINE.sub(lambda m: " " if m[0] == "\n" else "", text)
    return text if len(text) <= limit else text[:max(0, limit - len(CUT))] + CUT
