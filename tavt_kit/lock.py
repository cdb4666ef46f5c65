"""One writer per output folder: an advisory lock (``fcntl.flock``) on a file inside the folder.

Two runs writing one folder at once would mix their files (a checkpoint of
one seed beside the config of another, interleaved metrics, an export record
that lost the other's files). Every command that writes a folder holds
:func:`folder_lock` on it while it runs; a second process is refused with one
:class:`~tavt_kit.errors.FolderBusyError` naming the folder and the holder's
PID and command (written in the lock file). The kernel releases the lock when
its process ends, however it ends, so a lock left by a killed process is
simply taken over. The same process may enter a folder it holds again (the
demo's stages, a library call inside a command). The lock file is removed when
the lock is released; a folder the lock itself created is removed again when
nothing else was written into it.
"""
from __future__ import annotations

import contextlib
import errno as _errno
import json
import os
import shlex
import socket
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Dict, Iterator, List, Optional

from .errors import FolderBusyError
from .files import disk_full_error

try:
    import fcntl
except ImportError:  # not a POSIX system: folders are not locked
    fcntl = None  # type: ignore[assignment]

LOCK_FILE = ".fgvc-kit.lock"
#: errno values of a file system that has no flock (some network file systems): the folder is used unlocked
_NO_LOCKS = {_errno.ENOLCK, _errno.EOPNOTSUPP, getattr(_errno, "ENOTSUP", _errno.EOPNOTSUPP), _errno.ENOSYS,
             _errno.EINVAL}


@dataclass
class _Held:
    fd: Optional[int]
    path: str
    pid: int
    depth: int = 1
    created: List[str] = field(default_factory=list)


_HELD: Dict[str, _Held] = {}
_GUARD = threading.RLock()


def default_command() -> str:
    """This process's command line, as the lock file records it (``fgvc-kit train --out runs/a``)."""
    argv = list(sys.argv) or ["python"]
    name = os.path.basename(argv[0])
    if name in ("__main__.py", "-m", "-c") or name.endswith(".py"):
        name = "python " + name
    return " ".join([name] + [shlex.quote(a) for a in argv[1:]])[:300]


def read_holder(folder) -> Optional[Dict[str, Any]]:
    """What the lock file of ``folder`` says about its holder (pid, command, host, since), or None."""
    try:
        with open(os.path.join(os.fspath(folder), LOCK_FILE), encoding="utf-8") as f:
            doc = json.loads(f.read() or "null")
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None


def held_folders() -> List[str]:
    """The folders this process holds (real paths)."""
    with _GUARD:
        return [k for k, h in _HELD.items() if h.pid == os.getpid()]


def _make_folder(folder: str) -> List[str]:
    """``os.makedirs(folder)``; returns the folders it created, deepest first."""
    created, d = [], os.path.abspath(folder)
    while not os.path.exists(d):
        created.append(d)
        parent = os.path.dirname(d)
        if parent == d:
            break
        d = parent
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as e:
        err = disk_full_error(e, os.path.join(folder, LOCK_FILE))
        if err is None:
            raise
        raise err from e
    return created


def _busy(folder: str, holder: Optional[Dict[str, Any]]) -> FolderBusyError:
    if not holder or not holder.get("pid"):
        who = "another process"
    else:
        who = f"PID {holder['pid']}"
        if holder.get("host") and holder["host"] != socket.gethostname():
            who += f" on {holder['host']}"
        if holder.get("command"):
            who += f" ({holder['command']})"
        if holder.get("since"):
            who += f" since {holder['since']}"
    return FolderBusyError(f"{folder}: another process is writing this folder: {who}; one writer per output "
                           "folder, so wait for it to finish or write to another folder")


def _acquire(folder: str, command: str) -> Optional[int]:
    """The locked file descriptor of ``folder``'s lock file (None where the file system has no locks)."""
    path = os.path.join(folder, LOCK_FILE)
    for _ in range(20):
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o644)
        except OSError as e:
            err = disk_full_error(e, path)
            if err is None:
                raise
            raise err from e
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            os.close(fd)
            if e.errno in (_errno.EWOULDBLOCK, _errno.EAGAIN, _errno.EACCES):
                holder = None
                for _ in range(10):  # the holder writes its record just after it locks
                    holder = read_holder(folder)
                    if holder:
                        break
                    time.sleep(0.02)
                raise _busy(folder, holder) from None
            if e.errno in _NO_LOCKS:
                return None
            raise
        # the previous holder may have removed the file between our open and our lock: lock the one in place
        try:
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if not same:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)
            continue
        record = {"pid": os.getpid(), "host": socket.gethostname(), "command": command,
                  "since": time.strftime("%Y-%m-%d %H:%M:%S")}
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, (json.dumps(record) + "\n").encode("utf-8"), 0)
        except OSError:  # a full disk: the lock holds all the same, the message will lack the PID
            pass
        return fd
    raise FolderBusyError(f"{folder}: its lock file {LOCK_FILE} keeps changing; another process is using the "
                          "folder")


def _release(h: _Held) -> None:
    if h.fd is not None:
        try:
            if os.stat(h.path).st_ino == os.fstat(h.fd).st_ino:
                os.remove(h.path)  # before unlocking: a waiter that opened it sees it gone and opens the new one
        except OSError:
            pass
        try:
            fcntl.flock(h.fd, fcntl.LOCK_UN)
        finally:
            os.close(h.fd)
    for d in h.created:  # deepest first; only folders nothing was written into
        try:
            os.rmdir(d)
        except OSError:
            break


@contextlib.contextmanager
def folder_lock(folder, command: Optional[str] = None) -> Iterator[str]:
    """Hold ``folder`` (created if needed) as its one writer for the block; yields the folder.

    Raises :class:`~tavt_kit.errors.FolderBusyError` when another process holds it. The same process may
    nest it (re-entering a folder it holds is allowed). ``command`` is recorded for the message another
    process gets (default: this process's command line)."""
    folder = os.fspath(folder)
    if fcntl is None:
        yield folder
        return
    created = _make_folder(folder)
    key = os.path.realpath(folder)
    with _GUARD:
        h = _HELD.get(key)
        if h is not None and h.pid == os.getpid():
            h.depth += 1
        else:
            try:
                fd = _acquire(folder, command or default_command())
            except BaseException:
                for d in created:
                    with contextlib.suppress(OSError):
                        os.rmdir(d)
                raise
            h = _HELD[key] = _Held(fd=fd, path=os.path.join(key, LOCK_FILE), pid=os.getpid(), created=created)
    try:
        yield folder
    finally:
        with _GUARD:
            h.depth -= 1
            if h.depth == 0:
                _HELD.pop(key, None)
                _release(h)
