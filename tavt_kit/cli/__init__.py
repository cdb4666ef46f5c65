"""The ``fgvc-kit`` command: one module per subcommand, dispatched by name, thin over the library.

Each command module has ``add_arguments(parser)`` and ``run(args) -> int``.
Only the module of the command being run is imported, so ``fgvc-kit --help``
imports no torch. Errors of fgvc-kit's own types are printed as one line
(``fgvc-kit: error: ...``) with exit status 2; no traceback. The library names
the Python parameter it refuses (``holdout=1.5: ...``); :func:`.common.flag_message`
says it as the running command's option (``--holdout 1.5: ...``).
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys
from typing import List, Optional

from .. import __version__
from ..errors import ConfigError, TavtKitError

#: command -> (module that implements it, one-line help), in the order of the pipeline. ``demo`` runs the
#: other commands, so it lives above this package (tavt_kit.demo), which never imports it.
COMMANDS = {
    "info": ("tavt_kit.cli.info", "print a model's spec, parameters and MACs (full and at a schedule)"),
    "train": ("tavt_kit.cli.train", "fine-tune a model on a dataset"),
    "evaluate": ("tavt_kit.cli.evaluate", "accuracy at a schedule"),
    "distill": ("tavt_kit.cli.distill", "in-place distillation with patch drop"),
    "search": ("tavt_kit.cli.search", "evolutionary search of token schedules under budgets"),
    "export": ("tavt_kit.cli.export", "export to ONNX / OpenVINO with accuracy verification"),
    "prune": ("tavt_kit.cli.prune", "structural pruning of heads and MLP width"),
    "bench": ("tavt_kit.cli.bench", "latency and throughput on the target device, latency tables"),
    "report": ("tavt_kit.cli.report", "latency-budget report (Markdown + HTML)"),
    "demo": ("tavt_kit.demo", "the whole pipeline on the built-in demo"),
}


def command_module(name: str):
    """The module that implements command ``name``."""
    return importlib.import_module(COMMANDS[name][0])


def build_parser(name: Optional[str] = None) -> argparse.ArgumentParser:
    """The parser of command ``name``, or the top-level parser (which lists the commands)."""
    from .common import Parser

    if name is not None:
        text = COMMANDS[name][1]
        p = Parser(prog=f"fgvc-kit {name}", description=text)
        command_module(name).add_arguments(p)
        return p
    p = Parser(
        prog="fgvc-kit",
        description="Deployable fine-grained vision transformers: patch drop, in-place distillation, "
                    "token-schedule search under MAC/latency budgets, ONNX/OpenVINO export.")
    p.add_argument("--version", action="version", version=f"fgvc-kit {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    for cmd, (_, text) in COMMANDS.items():
        sub.add_parser(cmd, help=text, add_help=False)
    return p


def one_line(e: BaseException) -> str:
    """An error's own message, also when a DataLoader worker raised it (torch wraps it with the worker's
    traceback: ``Caught DatasetError in DataLoader worker process 0. Original Traceback ...``)."""
    text = str(e)
    if "Original Traceback" in text:
        last = [line for line in text.strip().splitlines() if line.strip()][-1]
        text = last.split(": ", 1)[1] if last.startswith("tavt_kit.errors.") and ": " in last else last
    return text


def main(argv: Optional[List[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in COMMANDS:
        parser = build_parser()
        parser.parse_args(argv)  # --help, --version and unknown commands exit here
        parser.print_help()
        return 0
    name = argv[0]
    module = command_module(name)
    rest = module.normalize_argv(argv[1:]) if hasattr(module, "normalize_argv") else argv[1:]
    parser = build_parser(name)
    args = parser.parse_args(rest)
    try:
        out = getattr(args, "out", None)
        if isinstance(out, str) and os.path.isfile(out) and name not in ("prune", "evaluate"):
            raise ConfigError(f"--out {out}: is a file; expected an output folder")
        from .common import check_values, run_command

        check_values(parser, args)
        return run_command(module, name, args, rest)
    except TavtKitError as e:  # the library names its parameters (subset=0): said here as this command's flags
        from .common import flag_message

        text = one_line(e) if getattr(e, "verbatim", False) else flag_message(one_line(e), parser, args)
        print(f"fgvc-kit: error: {text}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("fgvc-kit: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader went away (| head): no traceback, and none at exit either
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except Exception as e:  # a full disk said by a writer that has no file name to give: the output folder
        from ..files import disk_full_error

        out, named = getattr(args, "out", None), getattr(e, "filename", None)
        err = disk_full_error(e, named or (out if isinstance(out, str) else None), note="", folder=not named)
        if err is None:
            if not isinstance(e, OSError) or e.errno is None:
                raise
            where = f"{e.filename}: " if e.filename else ""  # a folder that cannot be written: one line
            print(f"fgvc-kit: error: {where}{e.strerror or e}", file=sys.stderr)
            return 2
        print(f"fgvc-kit: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
