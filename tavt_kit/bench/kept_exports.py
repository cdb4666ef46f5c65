"""Exported files kept in a folder for the next profile or timing of the same model there.

Profiling the latency tables of several precisions exports the same parts and the same whole models once per
table (an ONNX export, an OpenVINO conversion: seconds each for a 12-block ViT); the tables a search profiles
together share one folder, and every exported file there is written with a key beside it (``<file>.key.json``:
the model's structure, :func:`~tavt_kit.bench.identity.model_identity`, what was exported and how). A file whose
key matches is taken as it is; any other is exported again (a folder used for another model re-exports). The
files are for timing: latency depends on the structure, not on the weights.
"""
from __future__ import annotations

import json
import os
from typing import Any, Callable, Dict, Mapping, Optional


def _canonical(key: Mapping[str, Any]) -> Any:
    return json.loads(json.dumps(key, sort_keys=True, default=list))


def kept(path: str, key: Mapping[str, Any]) -> Optional[Dict[str, Any]]:
    """The record kept with ``path`` when the file is there and was written under ``key``; else None."""
    side = path + ".key.json"
    if not (os.path.isfile(path) and os.path.isfile(side)):
        return None
    try:
        with open(side) as f:
            rec = json.load(f)
    except (OSError, ValueError):
        return None
    if not isinstance(rec, dict) or rec.get("key") != _canonical(key):
        return None
    info = rec.get("info")
    return info if isinstance(info, dict) else {}


def keep(path: str, key: Mapping[str, Any], info: Optional[Mapping[str, Any]] = None) -> None:
    """Write ``path``'s key (and a record of how it was made) beside it, atomically."""
    side = path + ".key.json"
    tmp = side + ".tmp"
    with open(tmp, "w") as f:
        json.dump({"key": _canonical(key), "info": dict(info or {})}, f, default=str)
    os.replace(tmp, side)


def exported_once(path: str, key: Optional[Mapping[str, Any]], make: Callable[[], Dict[str, Any]]
                  ) -> Dict[str, Any]:
    """``make()`` (which writes ``path`` and returns its record) unless ``path`` is kept under ``key``; the
    record either way. ``key`` None: made, nothing kept (a folder of the caller's own)."""
    info = kept(path, key) if key is not None else None
    if info is not None:
        return info
    info = make()
    if key is not None:
        keep(path, key, info)
    return info
