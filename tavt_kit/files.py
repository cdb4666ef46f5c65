"""Atomic file writes: a temporary file beside the target, flushed to disk, moved into place with ``os.replace``.

A process killed while writing leaves the previous file intact (or none),
never half of a new one; every artefact of fgvc-kit is written this way. A
full disk (``ENOSPC``, ``EDQUOT``, and the same said by safetensors, ONNX or
OpenVINO in their own words) is one :class:`~tavt_kit.errors.DiskFullError`
naming the file and the space free in its folder; the temporary file is
removed and the previous file stays as it was.
"""
from __future__ import annotations

import contextlib
import errno as _errno
import json
import os
import shutil
from typing import Any, Iterator, Optional, Sequence

from .errors import DiskFullError

#: errno values of a full disk or an exhausted quota
DISK_FULL_ERRNOS = frozenset({_errno.ENOSPC, getattr(_errno, "EDQUOT", _errno.ENOSPC)})
#: how libraries that do not raise OSError say it (safetensors: "No space left on device (os error 28)")
DISK_FULL_WORDS = ("no space left on device", "disk quota exceeded", "os error 28", "os error 122")
#: a C++ stream that failed while writing (OpenVINO's ``save_model``: "basic_ios::clear: iostream error", torch.save:
#: "unexpected pos 576 vs 534") says nothing about why; it counts as a full disk when the folder has less than
#: this free (or less than needed)
STREAM_ERROR_WORDS = ("iostream error", "basic_ios", "failed to write", "write failed", "unexpected pos")
LOW_SPACE = 64 << 20


def free_bytes(path) -> Optional[int]:
    """Bytes free to this user in the folder of ``path`` (the nearest existing one); None if unknown."""
    folder = os.path.abspath(os.fspath(path))
    while folder and not os.path.isdir(folder):
        parent = os.path.dirname(folder)
        if parent == folder:
            break
        folder = parent
    try:
        return shutil.disk_usage(folder).free
    except OSError:
        return None


def human_bytes(n: Optional[int]) -> str:
    """``1.5 MB``-style size (powers of 1000, as ``df -H``)."""
    if n is None:
        return "unknown"
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} bytes"


def is_disk_full(exc: BaseException, path=None, needed: Optional[int] = None) -> bool:
    """Whether ``exc`` means the disk (or quota) is full; a bare stream error counts when ``path``'s folder is
    (nearly) out of space."""
    if isinstance(exc, DiskFullError):
        return True
    if isinstance(exc, OSError) and exc.errno in DISK_FULL_ERRNOS:
        return True
    text = str(exc).lower()
    if any(w in text for w in DISK_FULL_WORDS):
        return True
    if path is not None and any(w in text for w in STREAM_ERROR_WORDS):
        free = free_bytes(path)
        return free is not None and free < max(LOW_SPACE, needed or 0)
    return False


def disk_full_error(exc: BaseException, path, needed: Optional[int] = None, *, written: Optional[int] = None,
                    kept: Optional[bool] = None, note: Optional[str] = None,
                    folder: Optional[bool] = None) -> Optional[DiskFullError]:
    """The one-line :class:`DiskFullError` for ``exc`` raised while writing ``path``, or None when ``exc`` is
    not a full disk. ``needed``: the file's size when known; ``written``: bytes that fit before it failed (at
    least that many are needed); ``kept``: whether an earlier version of the file is still there (default:
    whether ``path`` exists); ``note``: what happened to the file instead ("" for nothing); ``folder``: ``path``
    is the folder written into, the file is not known (default: whether ``path`` is a folder)."""
    if isinstance(exc, DiskFullError):
        return exc
    if not is_disk_full(exc, path, needed):
        return None
    return _disk_full(exc, path, needed, written, kept, note, folder)


def _disk_full(exc: BaseException, path, needed: Optional[int], written: Optional[int], kept: Optional[bool],
               note: Optional[str], into: Optional[bool] = None) -> DiskFullError:
    path = os.fspath(path) if path is not None else getattr(exc, "filename", None)
    free = free_bytes(path) if path is not None else None
    if into is None:  # only the folder is known (a writer that named no file)
        into = path is not None and os.path.isdir(path)
    folder = None if path is None else os.path.abspath(path) if into else os.path.dirname(os.path.abspath(path))
    quota = isinstance(exc, OSError) and exc.errno == getattr(_errno, "EDQUOT", None)
    what = "the disk quota is used up" if quota else "no space left on the device"
    space = f"{human_bytes(free)} free in {folder}" if folder else "free space unknown"
    if needed:
        space += f", {human_bytes(needed)} needed"
    elif written:
        space += f", more than {human_bytes(written)} needed"
    if kept is None:
        kept = path is not None and os.path.isfile(path)
    tail = note if note is not None else \
        "its previous version is unchanged" if kept else "nothing was written in its place"
    errno = exc.errno if isinstance(exc, OSError) and exc.errno in DISK_FULL_ERRNOS else _errno.ENOSPC
    subject = f"{path}: cannot write into this folder" if into else f"{path or 'a file'}: cannot write it"
    return DiskFullError(f"{subject}, {what} ({space})" + (f"; {tail}" if tail else ""), errno=errno,
                         filename=path, free=free, needed=needed)


@contextlib.contextmanager
def disk_full_as_error(path, needed: Optional[int] = None, *, partial: Sequence[str] = (),
                       note: Optional[str] = None) -> Iterator[None]:
    """Around a writer that is not atomic by itself (ONNX export, appends): a full disk while it writes ``path``
    becomes one :class:`DiskFullError` naming ``path``, and the files in ``partial`` (what the writer may have
    left half-written: ``path`` itself, ONNX's ``.data``) are removed; ``note`` says what became of the file
    instead. Other errors pass unchanged."""
    try:
        yield
    except Exception as e:
        if not is_disk_full(e, path, needed):
            raise
        gone = [p for p in partial if os.path.exists(p)]
        for p in gone:
            with contextlib.suppress(OSError):
                os.remove(p)
        if isinstance(e, DiskFullError):
            raise
        raise _disk_full(e, path, needed, None, False,
                         note if note is not None else "the partial file was removed" if gone else None) from e


def _fsync(path: str, directory: bool = False) -> None:
    """Flush a file to disk (errors raised); a folder's entry too, where the system allows (errors ignored:
    the file is already in place)."""
    flags = os.O_RDONLY | (getattr(os, "O_DIRECTORY", 0) if directory else 0)
    try:
        fd = os.open(path, flags)
    except OSError:
        if directory:
            return
        raise
    try:
        os.fsync(fd)
    except OSError:
        if not directory:
            raise
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path, suffix: str = "", needed: Optional[int] = None) -> Iterator[str]:
    """A temporary path beside ``path`` to write to: it is flushed to disk and replaces ``path`` when the block
    ends without error, and is removed otherwise. ``suffix`` keeps an extension writers look at (``.png``);
    ``needed`` (bytes) is said in the error when the disk is full."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as e:
        err = disk_full_error(e, path, needed)
        if err is None:
            raise
        raise err from e
    tmp = f"{path}.tmp-{os.getpid()}{suffix}"
    try:
        yield tmp
        _fsync(tmp)  # a full disk can show only here (delayed allocation, network file systems)
        os.replace(tmp, path)
        _fsync(folder, directory=True)
    except Exception as e:
        full = is_disk_full(e, path, needed)  # before the temporary file gives its space back
        written = os.path.getsize(tmp) if os.path.isfile(tmp) else None
        if os.path.exists(tmp):
            os.remove(tmp)
        if not full or isinstance(e, DiskFullError):
            raise
        raise _disk_full(e, path, needed, written, None, None) from e
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_text(path, text: str) -> str:
    """Write ``text`` (UTF-8) atomically; returns the path."""
    data = text.encode("utf-8")
    with atomic_path(path, needed=len(data)) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
    return os.fspath(path)


def append_text(path, text: str) -> None:
    """Append ``text`` (UTF-8) to a log file, all or nothing: a failed write (a full disk) cuts the file back to
    the lines it had, so a reader never meets half a line of it."""
    path = os.fspath(path)
    data = text.encode("utf-8")
    with disk_full_as_error(path, len(data), note="the lines before are kept"):
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            size = os.fstat(fd).st_size
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view):]
            except BaseException:
                with contextlib.suppress(OSError):
                    os.ftruncate(fd, size)
                raise
        finally:
            os.close(fd)


def save_figure(fig, path, **kwargs) -> str:
    """``fig.savefig(path, **kwargs)`` atomically (the format follows ``path``'s extension); returns the path."""
    path = os.fspath(path)
    with atomic_path(path, os.path.splitext(path)[1]) as tmp:
        fig.savefig(tmp, **kwargs)
    return path


def json_default(o: Any) -> Any:
    """numpy / torch scalars and arrays as plain JSON values; anything else by its ``str``."""
    if hasattr(o, "tolist") and callable(o.tolist):  # numpy scalars and arrays, torch tensors
        return o.tolist()
    return str(o)


def write_json(obj: Any, path) -> str:
    """Write ``obj`` as indented JSON with a final newline, atomically; returns the path."""
    return write_text(path, json.dumps(obj, indent=2, default=json_default) + "\n")
