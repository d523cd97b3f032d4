"""Atomic outputs: everything we write goes to a temporary name and is renamed when complete,
so an interrupted run never leaves a truncated file that a later run would trust."""
from __future__ import annotations

import contextlib
import os
import re
import shutil
from pathlib import Path
from typing import Iterable, Iterator, List

_TMP_SUFFIX = ".tmp-"


def tmp_name(path: str | os.PathLike) -> Path:
    """The temporary sibling of `path` this process writes before renaming: ``.<name>.tmp-<pid>``."""
    path = Path(path)
    return path.with_name(f".{path.name}{_TMP_SUFFIX}{os.getpid()}")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary sibling path; on success rename it onto `path`, on error remove it.

    Works for files and directories (the caller creates whichever it needs at the yielded path).
    """
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = tmp_name(final)
    remove_path(tmp)
    try:
        yield tmp
    except BaseException:
        remove_path(tmp)
        raise
    replace_path(tmp, final)


def replace_path(tmp: str | os.PathLike, final: str | os.PathLike) -> None:
    """Rename the finished `tmp` onto `final`. os.replace cannot replace a non-empty directory,
    so an existing directory is moved aside first and removed only once the new one is in place."""
    tmp, final = Path(tmp), Path(final)
    if final.is_dir() and tmp.is_dir():
        old = final.with_name(f".{final.name}.old-{os.getpid()}")
        os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, final)


def remove_path(path: str | os.PathLike) -> None:
    """Remove a file, link or directory tree; nothing if it does not exist."""
    path = Path(path)
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists() or path.is_symlink():
        path.unlink()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    return True


def stale_temporaries(path: str | os.PathLike) -> List[Path]:
    """The temporaries of `path` (``.<name>.tmp-<pid>``, see `tmp_name`) left by processes of
    this machine that no longer run, e.g. a killed run that wrote the same output.

    Only that exact pattern matches, so no other file is ever taken for one. A process that is
    still alive keeps its temporaries (it may be writing the same output right now); on a shared
    file system a writer on another machine cannot be seen, and two runs writing one output at
    once race anyway.
    """
    path = Path(path)
    pattern = re.compile(re.escape(f".{path.name}{_TMP_SUFFIX}") + r"(\d+)\Z")
    try:
        names = os.listdir(path.parent)
    except OSError:
        return []
    out = []
    for name in sorted(names):
        match = pattern.match(name)
        if match and int(match.group(1)) != os.getpid() and not _pid_alive(int(match.group(1))):
            out.append(path.parent / name)
    return out


def remove_stale_temporaries(paths: Iterable[str | os.PathLike]) -> List[Path]:
    """Remove `stale_temporaries` of each of `paths`; returns what was removed."""
    removed = []
    for path in paths:
        for stale in stale_temporaries(path):
            remove_path(stale)
            removed.append(stale)
    return removed
