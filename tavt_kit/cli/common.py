"""The shared command-line vocabulary: schedules, budgets, model files, run folders, running a command."""
from __future__ import annotations

import argparse
import json
import os
import re
import sys
from typing import Any, Dict, List, Optional, Sequence

from ..errors import CheckpointError, ConfigError, ScheduleError

ERROR_PREFIX = "fgvc-kit: error:"


# ------------------------------------------------------------------ parsers
class Parser(argparse.ArgumentParser):
    """argparse with fgvc-kit's one error line: ``fgvc-kit: error: ...`` (exit 2), pointing at the help."""

    def error(self, message: str):
        cmd = self.prog[len("fgvc-kit "):] if self.prog.startswith("fgvc-kit ") else ""
        self.exit(2, f"{ERROR_PREFIX} {cmd + ': ' if cmd else ''}{message} (see {self.prog} --help)\n")


def warn(text: str) -> None:
    """A warning line on stderr, in the one format of every command."""
    print(f"fgvc-kit: warning: {text}", file=sys.stderr, flush=True)


class _Deprecated(argparse.Action):
    """An old spelling that still works: stores into the new option's destination and says so once."""

    def __init__(self, option_strings, dest, new: str = "", convert=None, **kw):
        self.new, self.convert = new, convert
        super().__init__(option_strings, dest, **kw)

    def __call__(self, parser, namespace, values, option_string=None):
        warn(f"{option_string} is deprecated; use {self.new}")
        if self.convert is not None:
            values = self.convert(values)
        setattr(namespace, self.dest, values)


def positional_deprecated(args, name: str, flag: str, default=None):
    """The value of ``flag`` (dest ``name``), or the old positional spelling of it (with a deprecation line)."""
    old = getattr(args, f"{name}_positional", None)
    if old is not None:
        if getattr(args, name, None) is not None:
            raise ConfigError(f"give {flag} once (the positional {old!r} is its old spelling)")
        warn(f"a positional {flag[2:]} is deprecated; use {flag} {old}")
        setattr(args, name, old)
    if getattr(args, name, None) is None:
        setattr(args, name, default)
    return getattr(args, name)


def add_deprecated(parser, old: str, new: str, dest: str, **kw) -> None:
    """Keep ``old`` working as ``new`` (hidden from the help; a deprecation line when used)."""
    parser.add_argument(old, dest=dest, action=_Deprecated, new=new, help=argparse.SUPPRESS, **kw)


# ---------------------------------------------------------------- schedules
def parse_drop(value: Optional[str], keep_ratio: Optional[str], model):
    """A schedule from ``--drop`` (JSON file or comma-separated counts) or ``--keep-ratio``."""
    from ..schedules import TokenSchedule

    for flag, v in (("--drop", value), ("--keep-ratio", keep_ratio)):
        if v is not None and not str(v).strip():  # an empty shell variable must not mean "the full model"
            raise ConfigError(f"{flag}: empty; expected a schedule (omit {flag} for the model's own schedule)")
    if value and keep_ratio:
        raise ConfigError("give either --drop or --keep-ratio, not both")
    if value:
        if os.path.exists(value) or value.endswith(".json"):
            from ..schedules import schedule_from_drop_file

            return schedule_from_drop_file(model, value)
        try:
            counts = [int(v) for v in value.split(",")]
        except ValueError:
            raise ScheduleError(f"--drop: expected a drop-config JSON file or comma-separated integers, "
                                f"got {value!r}") from None
        return model.make_schedule(counts)
    if keep_ratio:
        try:
            if ":" in keep_ratio:
                pairs = [(int(k), float(v)) for k, v in (item.split(":") for item in keep_ratio.split(","))]
            else:
                pairs = None
                ratios = [float(keep_ratio)] * model.depth
        except ValueError:
            raise ScheduleError(f"--keep-ratio: expected RATIO or BLOCK:RATIO,... (e.g. 3:0.7,6:0.7,9:0.7), "
                                f"got {keep_ratio!r}") from None
        if pairs is not None:
            ratios = dict(pairs)
            if len(ratios) != len(pairs):
                dup = next(k for k, _ in pairs if sum(1 for j, _ in pairs if j == k) > 1)
                raise ScheduleError(f"--keep-ratio: block {dup} is given twice in {keep_ratio!r}; expected each "
                                    "block once")
        return TokenSchedule.from_ratios(ratios, model.depth, model.num_patches)
    return None


# ------------------------------------------------------------------ budgets
_MAC_UNITS = {"": 1, "k": 1e3, "m": 1e6, "g": 1e9, "t": 1e12}
_TIME_UNITS = {"s": 1.0, "ms": 1e-3, "us": 1e-6}


def parse_macs(text: str, flag: str = "--macs-budget") -> float:
    """``20G``, ``850M``, ``2.5e9`` -> MACs (errors name ``flag``)."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:e[+-]?\d+)?)\s*([kmgt]?)(?:macs?)?\s*", str(text), re.I)
    if not m:
        raise ConfigError(f"{flag}: expected a number with an optional K/M/G suffix (e.g. 20G), got {text!r}")
    value = float(m.group(1)) * _MAC_UNITS[m.group(2).lower()]
    if value <= 0:
        raise ConfigError(f"{flag}: must be positive, got {text!r}")
    return value


def parse_seconds(text: str) -> float:
    """``15ms``, ``0.2s``, ``800us`` -> seconds (a bare number is milliseconds)."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:e[+-]?\d+)?)\s*(s|ms|us)?\s*", str(text), re.I)
    if not m:
        raise ConfigError(f"--latency-budget: expected a time such as 15ms or 0.2s, got {text!r}")
    value = float(m.group(1)) * _TIME_UNITS[(m.group(2) or "ms").lower()]
    if value <= 0:
        raise ConfigError(f"--latency-budget: must be positive, got {text!r}")
    return value


# ------------------------------------------------------------- run folders
def check_run_dir(out: str, resume: bool, overwrite: bool, run_file: str, state_file: str,
                  kind: Optional[str] = None) -> Optional[Dict[str, Any]]:
    """The resume/overwrite rule of every long run (train, distill).

    ``resume``: ``out`` must hold a run (``run_file`` and ``state_file``) of
    format ``kind``; returns its stored document. Otherwise ``out`` must not
    hold a run unless ``overwrite``; returns ``None``.
    """
    run_path = os.path.join(out, run_file)
    if resume and overwrite:
        raise ConfigError("--resume and --overwrite contradict each other: --resume continues the run in --out, "
                          "--overwrite starts it again")
    if os.path.isfile(out):
        raise ConfigError(f"--out {out}: is a file; expected an output folder")
    if resume:
        if not os.path.isfile(run_path) or not os.path.isfile(os.path.join(out, state_file)):
            raise CheckpointError(f"--resume: {out} holds no run to resume (expected {run_file} and {state_file}); "
                                  "start the run without --resume")
        try:
            with open(run_path, encoding="utf-8") as f:
                stored = json.load(f)
        except (OSError, json.JSONDecodeError) as e:
            raise CheckpointError(f"--resume: {run_path} is not a readable run description ({e})") from None
        if kind is not None and stored.get("format") != kind:
            raise CheckpointError(f"--resume: {out} holds a {stored.get('format')} run, not a {kind} run")
        return stored
    # a run that stopped before its first checkpoint left no state: nothing to resume, so it starts again
    if os.path.exists(os.path.join(out, state_file)) and not overwrite:
        raise ConfigError(f"--out {out}: already holds a run; pass --resume to continue it or --overwrite "
                          "to start again")
    return None


def check_resume_args(stored: Dict[str, Any], given: Dict[str, Any], keys: Sequence[str], out: str,
                      may_change: Sequence[str] = ()) -> Dict[str, Any]:
    """A resumed run keeps its settings: an option in ``keys`` given with another value is refused;
    those in ``may_change`` (where data lives, logging) take the new value."""
    for k in keys:
        if k in given and given[k] != stored.get(k):
            flag = "--" + k.replace("_", "-")
            raise ConfigError(f"{flag} {given[k]} differs from the run in {out} ({stored.get(k)}); --resume "
                              "continues the stored run with its own settings")
    r = dict(stored)
    for k in may_change:
        if k in given:
            r[k] = given[k]
    return r


def pct(x) -> str:
    """An accuracy fraction as a percentage, ``n/a`` when missing."""
    return "n/a" if x is None or x != x else f"{100 * x:.2f} %"


# ---------------------------------------------------------------- commands
def invoke(module, name: str, argv: List[str]) -> int:
    """Run a command module (``add_arguments`` + ``run``) on ``argv``, as ``fgvc-kit NAME`` would."""
    p = Parser(prog=f"fgvc-kit {name}")
    module.add_arguments(p)
    argv = module.normalize_argv(list(argv)) if hasattr(module, "normalize_argv") else list(argv)
    return module.run(p.parse_args(argv))


REDUCERS = ("drop", "merge")


def parse_reducers(text, flag: str = "--reducers"):
    """``drop``, ``merge`` or ``drop,merge`` as a tuple; anything else is a one-line error."""
    names = tuple(dict.fromkeys(x.strip() for x in str(text).split(",") if x.strip()))
    bad = [x for x in names if x not in REDUCERS]
    if not names or bad:
        raise ConfigError(f"{flag} {text}: expected drop, merge or drop,merge"
                          + (f" ({bad[0]!r} is not a reducer)" if bad else ""))
    return names


def check_can_merge(model, flag: str) -> None:
    """A model that can merge tokens (a timm ViT without EViT's fuse), else a one-line error naming ``flag``."""
    from ..models.token_drop import TokenDropMixin

    if not isinstance(model, TokenDropMixin):
        raise ConfigError(f"{flag}: this model ({type(model).__name__}) cannot merge tokens; merge works for timm "
                          "ViTs (use --reducers drop)")
    if getattr(model, "fuse", False):
        raise ConfigError(f"{flag}: a model that fuses dropped tokens (EViT fuse) cannot merge; use --reducers drop")
