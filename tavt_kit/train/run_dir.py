"""The run folder of a long run (fine-tuning, distillation): the resume / overwrite rule and the stored settings.

A run folder holds ``config.json`` (the run's settings) and the training state; a run resumes only in a folder
that holds one of its own kind, keeps the settings that change its result, and starts again only when told to.
Messages name the Python parameters (``resume=True``, ``out=``); the command line says them as its options.
"""
from __future__ import annotations

import json
import os
from typing import Any, Callable, Dict, Optional, Sequence, Tuple

from ..errors import CheckpointError, ConfigError

#: the newest run description version this fgvc-kit reads
RUN_VERSION = 1
#: the run's settings inside its folder
RUN_FILE = "config.json"


def _said(value) -> str:
    """A value as a message writes it after ``name=`` (a quoted word stays readable as a Python value)."""
    return repr(value) if isinstance(value, str) else str(value)


def check_run_dir(out: str, resume: bool, overwrite: bool, run_file: str, state_file: str,
                  kind: Optional[str] = None) -> Optional[Dict[str, Any]]:
    """The resume/overwrite rule of every long run (train, distill).

    ``resume``: ``out`` must hold a run (``run_file`` and ``state_file``) of
    format ``kind``; returns its stored document. Otherwise ``out`` must not
    hold a run unless ``overwrite``; returns ``None``.
    """
    run_path = os.path.join(out, run_file)
    if resume and overwrite:
        raise ConfigError("resume=True and overwrite=True contradict each other: resume=True continues the run in "
                          "out=, overwrite=True starts it again")
    if os.path.isfile(out):
        raise ConfigError(f"out={_said(out)}: is a file; expected an output folder")
    if resume:
        return _stored_run(out, run_path, run_file, state_file, kind)
    # a run that stopped before its first checkpoint left no state: nothing to resume, so it starts again
    if os.path.exists(os.path.join(out, state_file)) and not overwrite:
        raise ConfigError(f"out={_said(out)}: already holds a run; pass resume=True to continue it or overwrite=True "
                          "to start again")
    return None


def _stored_run(out: str, run_path: str, run_file: str, state_file: str, kind: Optional[str]) -> Dict[str, Any]:
    if not os.path.isfile(run_path) or not os.path.isfile(os.path.join(out, state_file)):
        raise CheckpointError(f"resume=True: {out} holds no run to resume (expected {run_file} and {state_file}); "
                              "start the run without resume=True")
    try:
        with open(run_path, encoding="utf-8") as f:
            stored = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise CheckpointError(f"resume=True: {run_path} is not a readable run description ({e})") from None
    if not isinstance(stored, dict):
        raise CheckpointError(f"resume=True: {run_path} is not a run description of fgvc-kit (a JSON "
                              f"{type(stored).__name__}, expected an object)")
    if kind is not None and stored.get("format") != kind:
        raise CheckpointError(f"resume=True: {out} holds a {stored.get('format')} run, not a {kind} run")
    version = stored.get("version", 1)
    if not isinstance(version, int) or isinstance(version, bool) or version > RUN_VERSION:
        raise CheckpointError(f"resume=True: {run_path}: run description version {version!r} is newer than this "
                              f"fgvc-kit reads ({RUN_VERSION}); resume it with the fgvc-kit that started it")
    return stored


def check_resume_args(stored: Dict[str, Any], given: Dict[str, Any], keys: Sequence[str], out: str,
                      may_change: Sequence[str] = ()) -> Dict[str, Any]:
    """A resumed run keeps its settings: a setting in ``keys`` given with another value is refused;
    those in ``may_change`` (where data lives, logging) take the new value."""
    for k in keys:
        if k in given and given[k] != stored.get(k):
            raise ConfigError(f"{k}={_said(given[k])} differs from the run in {out} ({stored.get(k)}); resume=True "
                              "continues the stored run with its own settings")
    r = dict(stored)
    for k in may_change:
        if k in given:
            r[k] = given[k]
    return r


def open_run(out: str, resume: bool, overwrite: bool, kind: str, state_file: str, given: Dict[str, Any],
             resolve: Callable[[], Dict[str, Any]], keys: Sequence[str], may_change: Sequence[str],
             log: Callable[[str], None], command: str) -> Tuple[str, Dict[str, Any]]:
    """The run's settings: the stored ones when resuming (``given`` checked against them), else ``resolve()``'s;
    the notes of defaults that were fitted go to ``log``. Returns the path of the run file and the settings."""
    stored = check_run_dir(out, resume, overwrite, RUN_FILE, state_file, kind=kind)
    if stored is not None:
        r = check_resume_args(stored["args"], given, keys, out, may_change)
    else:
        r = resolve()
    for note in r.pop("notes", []):
        log(f"{command}: {note}")
    return os.path.join(out, RUN_FILE), r
