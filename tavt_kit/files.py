"""Atomic file writes: a temporary file beside the target, moved into place with ``os.replace``.

A process killed while writing leaves the previous file intact (or none),
never half of a new one; every artefact of fgvc-kit is written this way.
"""
from __future__ import annotations

import contextlib
import json
import os
from typing import Any, Iterator


@contextlib.contextmanager
def atomic_path(path, suffix: str = "") -> Iterator[str]:
    """A temporary path beside ``path`` to write to: it replaces ``path`` when the block ends without error
    and is removed otherwise. ``suffix`` keeps an extension writers look at (``.png``)."""
    path = os.fspath(path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp-{os.getpid()}{suffix}"
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_text(path, text: str) -> str:
    """Write ``text`` (UTF-8) atomically; returns the path."""
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
    return os.fspath(path)


def json_default(o: Any) -> Any:
    """numpy / torch scalars and arrays as plain JSON values; anything else by its ``str``."""
    if hasattr(o, "tolist") and callable(o.tolist):  # numpy scalars and arrays, torch tensors
        return o.tolist()
    return str(o)


def write_json(obj: Any, path) -> str:
    """Write ``obj`` as indented JSON with a final newline, atomically; returns the path."""
    return write_text(path, json.dumps(obj, indent=2, default=json_default) + "\n")
