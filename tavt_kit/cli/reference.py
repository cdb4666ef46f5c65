"""The command-line reference (``docs/cli.md``), generated from the parsers ``fgvc-kit`` builds.

:func:`cli_reference` walks :func:`tavt_kit.cli.build_parser` for every command of
:data:`tavt_kit.cli.COMMANDS` (and every mode of a command that has modes, such as ``bench``) and writes one
Markdown section per command: its description, its usage and each visible option with its help and default.
Nothing here repeats a flag: a flag added to a command's ``add_arguments`` appears in the reference when it is
generated again::

    python -m tavt_kit.cli.reference > docs/cli.md

The text depends on the parsers only: usage lines are wrapped here at a fixed width (never the terminal's), and
hidden options (deprecated spellings, ``help=argparse.SUPPRESS``) are left out.
"""
from __future__ import annotations

import argparse
import sys
from typing import Iterator, List, Tuple

from . import COMMANDS, build_parser

#: the widest a usage line gets (the usage is wrapped here, so the terminal's width never changes the text)
WIDTH = 100
REGENERATE = "python -m tavt_kit.cli.reference > docs/cli.md"


def _parsers() -> Iterator[Tuple[str, argparse.ArgumentParser]]:
    """("info", parser), ..., ("bench", parser), ("bench measure", parser), ...: every command and mode."""
    for name in COMMANDS:
        parser = build_parser(name)
        yield name, parser
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for mode, sub in action.choices.items():
                    yield f"{name} {mode}", sub


def _visible(action: argparse.Action) -> bool:
    return action.help != argparse.SUPPRESS and not isinstance(action, argparse._HelpAction)


def _metavar(action: argparse.Action) -> str:
    if action.metavar is not None:
        return action.metavar if isinstance(action.metavar, str) else " ".join(action.metavar)
    if action.choices is not None:
        return "{" + ",".join(str(c) for c in action.choices) + "}"
    return action.dest.upper() if action.option_strings else action.dest


def _args(action: argparse.Action) -> str:
    """What follows the flag, as argparse's usage says it (``N``, ``[N]``, ``N [N ...]``)."""
    nargs, m = action.nargs, _metavar(action)
    if nargs == 0 or nargs == argparse.SUPPRESS:
        return ""
    if nargs is None:
        return m
    if nargs == argparse.OPTIONAL:
        return f"[{m}]"
    if nargs == argparse.ZERO_OR_MORE:
        return f"[{m} ...]"
    if nargs == argparse.ONE_OR_MORE:
        return f"{m} [{m} ...]"
    if nargs == argparse.PARSER:
        return f"{m} ..."
    if nargs == argparse.REMAINDER:
        return "..."
    return " ".join([m] * int(nargs))


def _spelling(action: argparse.Action) -> str:
    """``--flag ARG`` (the longest spelling, as ``--help`` lists options by it), or a positional's name."""
    if not action.option_strings:
        return _args(action)
    flag = max(action.option_strings, key=len)
    return f"{flag} {_args(action)}".rstrip()


def _usage(prog: str, parser: argparse.ArgumentParser) -> str:
    """The usage line, wrapped at :data:`WIDTH` between options, never inside one."""
    groups = {id(a): g for g in parser._mutually_exclusive_groups for a in g._group_actions}
    parts, done = [], set()
    for action in parser._actions:
        if not _visible(action) or id(action) in done:
            continue
        group = groups.get(id(action))
        members = [a for a in group._group_actions if _visible(a)] if group is not None else [action]
        done.update(id(a) for a in members)
        text = " | ".join(_spelling(a) for a in members)
        if isinstance(action, argparse._SubParsersAction):
            parts.append(f"{_metavar(action)} ...")
        elif group is not None and len(members) > 1:
            parts.append(f"({text})" if group.required else f"[{text}]")
        elif action.option_strings and not action.required:
            parts.append(f"[{text}]")
        else:
            parts.append(text)
    lines, line = [], f"usage: {prog}"
    indent = " " * len(line)
    for part in parts:
        if len(line) + 1 + len(part) > WIDTH and line.strip() != f"usage: {prog}":
            lines.append(line)
            line = indent
        line = f"{line} {part}"
    lines.append(line)
    return "\n".join(lines)


def _help(action: argparse.Action, prog: str) -> str:
    """The help text with argparse's ``%(...)s`` expanded (``3 %%`` is ``3 %``), made safe for Markdown."""
    text = action.help or ""
    if "%" in text:
        params = {k: v for k, v in vars(action).items() if v is not argparse.SUPPRESS}
        params["prog"] = prog
        if params.get("choices") is not None:
            params["choices"] = ", ".join(str(c) for c in params["choices"])
        text = text % params
    return " ".join(text.split()).replace("<", "\\<")  # <name> would be read as an HTML tag


def _default(action: argparse.Action) -> str:
    """`` Default: `X`.`` where the option has a value when not given and its help does not say it already;
    nothing for on/off options and lists that start empty, nor where the default is None (the help says what
    is used then, e.g. a value read from the checkpoint or computed on the machine it runs on)."""
    if action.nargs == 0 or isinstance(action, argparse._SubParsersAction):
        return ""
    d = action.default
    if "default" in (action.help or "").lower():  # the help says it, in its own words
        return ""
    if d is None or d is argparse.SUPPRESS or d == [] or d is False:
        return ""
    if isinstance(d, (list, tuple)):
        d = " ".join(str(x) for x in d)
    return f" Default: `{d}`."


def _group_title(parser: argparse.ArgumentParser, group) -> str:
    if group is parser._optionals:
        return "options"
    if group is parser._positionals:
        return "modes" if any(isinstance(a, argparse._SubParsersAction) for a in group._group_actions) \
            else "arguments"
    return group.title or "options"


def _section(name: str, parser: argparse.ArgumentParser) -> List[str]:
    prog = f"fgvc-kit {name}"
    out = [f"## {prog}", ""]
    if parser.description:
        out += [" ".join(parser.description.split()), ""]
    out += ["```text", _usage(prog, parser), "```", ""]
    for group in parser._action_groups:
        actions = [a for a in group._group_actions if _visible(a)]
        if not actions:
            continue
        out += [f"**{_group_title(parser, group)}**", ""]
        for a in actions:
            if isinstance(a, argparse._SubParsersAction):
                for sub in a._choices_actions:
                    out.append(f"- [`{sub.dest}`](#fgvc-kit-{name.replace(' ', '-')}-{sub.dest}): "
                               f"{_help(sub, prog)}")
                continue
            spellings = sorted(a.option_strings, key=len, reverse=True)
            shown = ", ".join(f"`{' '.join(filter(None, (f, _args(a))))}`" for f in spellings) or f"`{_args(a)}`"
            out.append(f"- {shown}: {_help(a, prog)}{_default(a)}")
        out.append("")
    return out


def cli_reference() -> str:
    """The reference of every command and option of ``fgvc-kit``, as Markdown (the text of ``docs/cli.md``)."""
    out = ["# Command-line reference", "",
           f"<!-- Generated from the command's parsers by `{REGENERATE}`; do not edit by hand "
           "(tests/test_cli_reference.py fails when this file is stale). -->", "",
           "Every command also takes `--help`, which prints the same options. A shared option means the same "
           "thing in every command that has it; old spellings of options still work with one "
           "`fgvc-kit: warning: ... is deprecated; use ...` line and are not listed here.", "",
           "| command | what it does |", "|---|---|"]
    out += [f"| [`fgvc-kit {name}`](#fgvc-kit-{name}) | {text} |" for name, (_, text) in COMMANDS.items()]
    out.append("")
    for name, parser in _parsers():
        out += _section(name, parser)
    return "\n".join(out).rstrip("\n") + "\n"


def main() -> int:
    sys.stdout.write(cli_reference())
    return 0


if __name__ == "__main__":
    sys.exit(main())
