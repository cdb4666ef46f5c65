"""One command-line vocabulary: every shared option means the same thing in every command that has it."""
from __future__ import annotations

import argparse

import pytest

from tavt_kit.cli import COMMANDS, build_parser, main

MODEL_COMMANDS = ("info", "train", "evaluate", "distill", "search", "export", "prune", "bench measure",
                  "bench profile", "bench predict")
PRECISIONS = {"fp32", "fp16", "bf16", "int8"}


def _parsers():
    """{"command" or "bench mode": parser} for every command and subcommand."""
    out = {}
    for name in COMMANDS:
        p = build_parser(name)
        subs = [a for a in p._actions if isinstance(a, argparse._SubParsersAction)]
        if subs:
            for mode, sp in subs[0].choices.items():
                out[f"{name} {mode}"] = sp
        else:
            out[name] = p
    return out


PARSERS = _parsers()


def _options(p):
    """Visible options: {"--flag": action} (deprecated spellings are hidden and left out)."""
    return {s: a for a in p._actions for s in a.option_strings
            if s.startswith("--") and a.help != argparse.SUPPRESS and s != "--help"}


def _visible_positionals(p):
    return [a.dest for a in p._actions if not a.option_strings and a.help != argparse.SUPPRESS
            and not isinstance(a, argparse._SubParsersAction)]


def test_every_help_parses(capsys):
    for name, p in PARSERS.items():
        with pytest.raises(SystemExit) as e:
            p.parse_args(["--help"])
        assert e.value.code == 0
        assert "usage: fgvc-kit " + name in capsys.readouterr().out


def test_the_model_is_named_by_checkpoint_everywhere():
    for name in MODEL_COMMANDS:
        opts = _options(PARSERS[name])
        assert "--checkpoint" in opts, name
        assert "--pretrained" not in opts, name
    # the only visible positional arguments are files that are not a model
    positional = {name: _visible_positionals(p) for name, p in PARSERS.items() if _visible_positionals(p)}
    assert positional == {"bench predict": ["table"]}


def test_shared_names_have_one_type_and_unit():
    seen = {}
    for name, p in PARSERS.items():
        for flag, a in _options(p).items():
            kind = (a.type.__name__ if callable(a.type) and hasattr(a.type, "__name__") else a.type,
                    type(a).__name__ in ("_StoreTrueAction", "_StoreFalseAction"))
            if flag in seen and flag not in ("--precision",):
                assert seen[flag][1] == kind, f"{flag}: {seen[flag][0]} and {name} differ ({seen[flag][1]} vs {kind})"
            seen.setdefault(flag, (name, kind))


def test_one_spelling_per_quantity():
    for name, p in PARSERS.items():
        opts = _options(p)
        batchy = [f for f in opts if "batch" in f]
        assert all(f.endswith("batch-size") for f in batchy), (name, batchy)
        assert "--batch" not in opts and "--latency-batch" not in opts and "--calibration-batch" not in opts
        if "--precision" in opts:
            a = opts["--precision"]
            choices = set(a.choices or []) or set(a.metavar.strip("{}").split(","))
            assert choices <= PRECISIONS, (name, choices)
        if "--budget" in opts:  # a budget of a search (its label, or any budget with a unit), never seconds of timing
            assert name in ("export", "report"), name
        if "--steps" in opts:  # optimiser steps
            assert name in ("train", "distill"), name
        if "--out" in opts:
            out = opts["--out"]
            assert out.metavar in ("DIR", None) and "folder" in (out.help or ""), (name, out.metavar, out.help)


def test_help_shows_the_defaults_the_command_uses():
    text = PARSERS["distill"].format_help()
    assert "demo 150" in text and "demo 0.0002" in text and "demo 15" in text and "demo 0.3" in text
    for refused in ("--model", "--pretrained", "--img-size", "--num-classes", "--head "):
        assert refused not in text, refused
    search = " ".join(PARSERS["search"].format_help().split())
    assert "bench profile" in search and "--profile" not in search and "(default 20)" in search


def test_old_spellings_still_work_with_a_line(tmp_path, capsys):
    assert main(["info", "fgvc_tiny", "--json"]) == 0
    captured = capsys.readouterr()
    assert "fgvc-kit: warning: a positional checkpoint is deprecated; use --checkpoint fgvc_tiny" in captured.err
    assert '"depth": 6' in captured.out


def test_argument_errors_use_the_one_prefix(capsys):
    with pytest.raises(SystemExit) as e:
        main(["bench", "profile", "--no-such-flag"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "fgvc-kit: error: bench: unrecognized arguments: --no-such-flag" in err and err.count("\n") == 1


def test_short_runs_and_small_grids_run_on_defaults(tmp_path, capsys):
    """Defaults adapt to what was asked for (and say so); nothing the user did not set is refused."""
    out = tmp_path / "train"
    assert main(["train", "--steps", "10", "--out", str(out), "--no-test", "--no-progress"]) == 0
    assert "--warmup-steps not given: 1 (10% of --steps 10" in capsys.readouterr().out
    assert main(["distill", "--checkpoint", str(out / "best.safetensors"), "--steps", "5", "--no-test",
                 "--no-progress", "--out", str(tmp_path / "distill")]) == 0
    assert "--warmup-steps not given: 0" in capsys.readouterr().out
    for head in ("ffvt", "mixvit", "pim"):  # fgvc_tiny: 64 pixels, 8-pixel patches
        assert main(["train", "--head", head, "--steps", "2", "--no-test", "--no-progress",
                     "--out", str(tmp_path / head)]) == 0
    # a grid smaller than the heads' published defaults: they fit it and record what they used
    import tavt_kit

    pim = tavt_kit.create_model("fgvc_tiny", img_size=32, head="pim", num_classes=10)
    mix = tavt_kit.create_model("fgvc_tiny", img_size=32, head="mixvit", num_classes=10)
    assert pim.spec["head"]["args"]["num_selects"] == 17 and "num_selects" in pim.pim.fitted
    assert mix.spec["head"]["args"]["mask_topk"] == 1 / 16 and "mask_topk" in mix.mixvit.fitted
    with pytest.raises(tavt_kit.ConfigError):  # given explicitly and impossible: refused
        tavt_kit.create_model("fgvc_tiny", img_size=32, head="pim", num_classes=10, num_selects=32)


def test_readme_documents_every_command_and_flag():
    import os

    readme = open(os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "README.md"),
                  encoding="utf-8").read()
    missing = {name: [f for f in _options(p) if f not in readme] for name, p in PARSERS.items()}
    assert not {k: v for k, v in missing.items() if v}, missing
    for name in COMMANDS:
        assert f"fgvc-kit {name}" in readme, name


def test_library_parameter_names_are_said_as_the_commands_flags():
    """The library names parameters (``steps=0: ...``); the CLI says each as the running command's option."""
    from tavt_kit.cli.common import flag_message

    train = build_parser("train")
    args = train.parse_args([])
    assert flag_message("steps=-5: expected a positive number of steps", train, args) == \
        "--steps -5: expected a positive number of steps"
    assert flag_message("pretrained=x.pth: not found", train, args) == "--checkpoint x.pth: not found"
    # aliases: library names that are not the dest (DataSpec.root, TrainConfig.num_workers, DataSpec.options[KEY])
    assert flag_message("root=None: dataset cub needs its root folder", train, args) == \
        "--data None: dataset cub needs its root folder"
    assert flag_message("num_workers=-1: expected", train, args) == "--workers -1: expected"
    assert flag_message("options['seed']=-1: expected; holdout=0 for none", train, args) == \
        "--dataset-option seed=-1: expected; --holdout 0 for none"
    # quoted words lose their quotes; on/off options are the option alone; a name without a value is the option
    assert flag_message("amp='fp16' needs a CUDA device; use amp='bf16'", train, args) == \
        "--amp fp16 needs a CUDA device; use --amp bf16"
    assert flag_message("start without resume=True; progress=False", train, args) == \
        "start without --resume; --no-progress"
    assert flag_message("give no model=, head= or drop_path= with it", train, args) == \
        "give no --model, --head or --drop-path with it"
    # names the command does not have, attributes, flags and comparisons are left alone
    for text in ("fitness='nll': bad", "x.seed=3", "--seed=3", "seed==3", "split_seeds=2"):
        assert flag_message(text, train, args) == text
    assert flag_message("latency_batch_size=2: x", train, args) == "latency_batch_size=2: x"  # not a train option
    # a sub-command's own options: bench profile has --grid, bench predict has not
    bench = build_parser("bench")
    assert flag_message("grid=3: bad", bench, bench.parse_args(["profile"])) == "--grid 3: bad"
    assert flag_message("grid=3: bad", bench, bench.parse_args(["predict", "t.json"])) == "grid=3: bad"
    assert flag_message("precision='int4': bad", bench, bench.parse_args(["predict", "t.json"])) == \
        "--precision int4: bad"


def test_every_parameter_alias_is_an_option_of_a_command():
    from tavt_kit.cli.common import PARAM_FLAGS

    flags = {f for p in PARSERS.values() for a in p._actions for f in a.option_strings}
    assert set(PARAM_FLAGS.values()) <= flags, set(PARAM_FLAGS.values()) - flags


def test_a_library_error_reaches_the_user_as_the_flag(capsys):
    assert main(["train", "--dataset", "cluttered-digits", "--dataset-option", "test=many", "--steps", "1"]) == 2
    err = capsys.readouterr().err
    assert "fgvc-kit: error: --dataset-option test=many: expected an integer" in err and err.count("\n") == 1
