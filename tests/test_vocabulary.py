"""One command-line vocabulary: every shared option means the same thing in every command that has it."""
from __future__ import annotations

import argparse
import re

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
    # no visible positional arguments: every input is an option (old positionals are deprecated spellings)
    positional = {name: _visible_positionals(p) for name, p in PARSERS.items() if _visible_positionals(p)}
    assert positional == {}


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
            a = opts["--precision"]  # one type; the help names the precisions the command takes
            assert a.metavar == "PRECISION" and a.type.__name__ == "precision", name
            said = set(re.findall(r"\b(?:fp32|bf16|fp16|int8|auto|f32|f16)\b", a.help))
            assert PRECISIONS <= said <= PRECISIONS | {"auto"}, (name, said)
        if "--budget" in opts:  # a budget of a finished search (its label, or any budget with a unit)
            assert name in ("export", "report", "bench measure"), name
            assert "finished search" in opts["--budget"].help, name
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
    """README names every command; every flag is explained in the written user docs (README and its user guides,
    docs/guides/), not only in the reference generated from the parsers (docs/cli.md)."""
    import glob
    import os

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    readme = open(os.path.join(root, "README.md"), encoding="utf-8").read()
    guides = sorted(glob.glob(os.path.join(root, "docs", "guides", "*.md")))
    assert guides, "docs/guides/ holds the user guides README links to"
    docs = readme + "".join(open(f, encoding="utf-8").read() for f in guides)
    missing = {name: [f for f in _options(p) if f not in docs] for name, p in PARSERS.items()}
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


# ---------------------------------------------------------------- one vocabulary, checked on every parser
#: concept -> (the one spelling, the old spellings that must be deprecated aliases of it wherever they appear)
SYNONYMS = {
    "the data (to train, evaluate, search on, or verify an export on)": ("--dataset", {"--verify-data"}),
    "a MAC budget to meet (search, prune)": ("--macs-budget", {"--macs-target"}),
    "a latency table file": ("--latency-table", {"--table"}),
    "images per evaluation batch": ("--eval-batch-size", set()),
    "images per timed call": ("--latency-batch-size", {"--latency-batch"}),
    "fraction of MLP channels (and heads) prune keeps": ("--channel-keep-ratio", {"--ratio"}),
    "fraction of attention heads prune keeps": ("--head-keep-ratio", {"--head-ratio"}),
    "the model": ("--checkpoint", {"--pretrained"}),
    "seconds of timing per measurement": ("--time-budget", set()),
    "pruning increments": ("--prune-steps", set()),
    "prune's calibration batch": ("--calibration-batch-size", {"--calibration-batch"}),
    "export formats": ("--format", {"--formats"}),
}
#: spellings whose meaning depends on the command: {command: canonical option the hidden spelling stands for}
PER_COMMAND = {
    "--batch-size": {"evaluate": "--eval-batch-size", "search": "--eval-batch-size", "export": "--eval-batch-size",
                     "bench measure": "--latency-batch-size", "bench profile": "--latency-batch-size",
                     "bench predict": "--latency-batch-size", "demo": "--latency-batch-size"},
    "--batch": {"bench measure": "--latency-batch-size", "bench profile": "--latency-batch-size",
                "bench predict": "--latency-batch-size", "demo": "--latency-batch-size"},
    "--budget": {"bench profile": "--time-budget"},
    "--steps": {"prune": "--prune-steps"},
}
#: where a spelling is visible: the training batch is train's and distill's; a budget of a finished search is
#: export's and report's (search takes --macs-budget / --latency-budget)
VISIBLE_ONLY_IN = {"--batch-size": {"train", "distill"}, "--budget": {"export", "report", "bench measure"}}
#: hidden options that are not deprecated spellings: distill refuses the model options train has (the model comes
#: from --checkpoint); search refuses export's --budget with a line naming --macs-budget / --latency-budget
REFUSED = {("distill", f) for f in ("--pretrained", "--model", "--img-size", "--num-classes", "--head",
                                     "--drop-path")} | \
    {("search", "--budget"), ("demo", "--latency-fraction")}  # the demo's budget is now a share of your model
#: a command that takes fewer values of a shared option than the others: the demo runs on built-in data only
NARROWED = {("demo", "--dataset")}
TIMING = ("--warmup", "--min-repeats", "--max-repeats", "--time-budget", "--rel-ci")


def _all_options(p):
    """Every long option string of ``p`` (hidden ones too): {"--flag": action}."""
    return {s: a for a in p._actions for s in a.option_strings if s.startswith("--") and s != "--help"}


def _hidden(a):
    return a.help == argparse.SUPPRESS


def _deprecated(a):
    return type(a).__name__ == "_Deprecated"


def _metavar(a):
    """What the help shows for the option's value (argparse derives it from the dest when none is given)."""
    if a.nargs == 0:
        return None
    if a.metavar is not None:
        return a.metavar
    return "{" + ",".join(map(str, a.choices)) + "}" if a.choices else a.dest.upper()


def _type(a):
    return getattr(a.type, "__name__", a.type)


def test_each_concept_has_one_spelling_and_old_ones_are_deprecated_aliases():
    bad = []
    for name, p in PARSERS.items():
        opts = _all_options(p)
        for concept, (canonical, olds) in SYNONYMS.items():
            for old in olds & set(opts) - {f for c, f in REFUSED if c == name}:
                a = opts[old]
                if not (_hidden(a) and _deprecated(a) and a.new == canonical):
                    bad.append(f"{name} {old}: another spelling of {concept}; expected a deprecated alias of "
                               f"{canonical}")
        for old, where in PER_COMMAND.items():
            a = opts.get(old)
            if a is not None and _hidden(a) and not (name, old) in REFUSED:
                if not (_deprecated(a) and a.new == where.get(name)):
                    bad.append(f"{name} {old}: hidden, expected a deprecated alias of {where.get(name)}")
        for flag, allowed in VISIBLE_ONLY_IN.items():
            if flag in opts and not _hidden(opts[flag]) and name not in allowed:
                bad.append(f"{name} {flag}: visible outside {sorted(allowed)}")
        for flag, a in opts.items():
            if _hidden(a) and not _deprecated(a) and (name, flag) not in REFUSED:
                bad.append(f"{name} {flag}: a hidden option that is neither a deprecated alias nor refused")
            if _deprecated(a) and (a.new not in opts or _hidden(opts[a.new]) or opts[a.new].dest != a.dest):
                bad.append(f"{name} {flag}: deprecated alias of {a.new}, which is not this command's option")
    assert not bad, "\n".join(bad)


def test_a_shared_option_has_one_metavar_choices_and_type():
    seen, bad = {}, []
    for name, p in PARSERS.items():
        for flag, a in _options(p).items():
            sig = {"metavar": _metavar(a), "choices": tuple(a.choices) if a.choices else None, "type": _type(a)}
            if (name, flag) in NARROWED:
                sig = {k: v for k, v in sig.items() if k == "type"}
            if flag in seen:
                first, other = seen[flag]
                diff = {k: (other[k], v) for k, v in sig.items() if k in other and other[k] != v}
                if diff:
                    bad.append(f"{flag}: {first} and {name} differ: {diff}")
            elif (name, flag) not in NARROWED:
                seen[flag] = (name, sig)
    assert not bad, "\n".join(bad)


def test_every_value_has_a_metavar_of_its_kind():
    """No metavar derived from the dest (BATCH_SIZE, THREADS, SEED, BOUND): integers N, files FILE, folders DIR."""
    bad = []
    for name, p in PARSERS.items():
        for flag, a in _options(p).items():
            if a.nargs != 0 and a.metavar is None and not a.choices:
                bad.append(f"{name} {flag}: no metavar (help shows {a.dest.upper()})")
            if a.metavar is not None and a.metavar == a.dest.upper() and "_" in a.dest:
                bad.append(f"{name} {flag}: metavar {a.metavar} is the dest")
    assert not bad, "\n".join(bad)
    kinds = {"--out": "DIR", "--data": "DIR", "--workdir": "DIR", "--checkpoint": "FILE", "--latency-table": "FILE",
             "--search": "FILE", "--seed": "N", "--threads": "N", "--img-size": "N", "--eval-batch-size": "N",
             "--latency-batch-size": "N", "--device": "DEVICE", "--precision": "PRECISION"}
    for name, p in PARSERS.items():
        for flag, a in _options(p).items():
            if flag in kinds:
                assert _metavar(a) == kinds[flag], (name, flag, _metavar(a))


def test_device_has_one_type_and_form_and_says_its_default():
    found = []
    for name, p in PARSERS.items():
        a = _options(p).get("--device")
        if a is None:
            continue
        found.append(name)
        assert _type(a) == "device" and a.choices is None and a.metavar == "DEVICE", name
        assert "cpu, cuda or cuda:N (default: " in a.help, (name, a.help)
    assert {"train", "evaluate", "search", "bench measure", "bench profile"} <= set(found)


def test_timing_options_have_one_default_the_librarys():
    from tavt_kit.bench.timing import TimingPolicy
    from tavt_kit.cli.common import TIMING_DEFAULTS

    policy = TimingPolicy()
    assert TIMING_DEFAULTS == {"warmup": policy.warmup, "min_repeats": policy.min_repeats,
                               "max_repeats": policy.max_repeats, "time_budget": policy.budget_s,
                               "rel_ci": policy.rel_ci}
    seen = {}
    for name, p in PARSERS.items():
        for flag, a in _options(p).items():
            if flag in TIMING:
                assert a.default == TIMING_DEFAULTS[a.dest], (name, flag, a.default)
                assert f"(default {TIMING_DEFAULTS[a.dest]:g})" in a.help, (name, flag, a.help)
                seen.setdefault(flag, set()).add(name)
    assert seen["--time-budget"] == {"bench measure", "bench profile", "report"}


_DEFAULT = re.compile(r"\(default:? ([^;()]+?)\)|\(default:? ([^;()]+?);")


def _said_default(text):
    m = _DEFAULT.search(" ".join((text or "").split()).replace("%%", "%"))
    return None if m is None else (m.group(1) or m.group(2)).strip()


def _same(said, default):
    if isinstance(default, bool) or isinstance(default, (list, tuple)):
        return True  # switches and repeatable options: nothing to compare
    try:
        return float(said) == float(default)
    except (TypeError, ValueError):
        return said == str(default)


def test_help_says_the_parsers_own_defaults_and_required_only_when_required():
    bad = []
    for name, p in PARSERS.items():
        for flag, a in _options(p).items():
            if "(required)" in (a.help or "") and not a.required:
                bad.append(f"{name} {flag}: help says (required), usage says optional")
            said = _said_default(a.help)
            if flag == "--out" and not a.required and a.default is None and said is not None:
                # a folder derived from the input, or none (the command only prints)
                assert "beside" in said or "checkpoint" in said or said.startswith("none"), (name, said)
            elif flag == "--out" and not a.required:
                assert said is not None and said == a.default, (name, said, a.default)
            elif said is not None and a.default is not None and said.split()[0].replace(".", "").isalnum() \
                    and said.split()[0] not in ("the", "a", "an", "not") and not _same(said.split()[0], a.default):
                bad.append(f"{name} {flag}: help says default {said!r}, the parser's is {a.default!r}")
    assert not bad, "\n".join(bad)
    assert "runs/distill" in PARSERS["distill"].format_help() and "runs/train" not in PARSERS["distill"].format_help()
    usage = " ".join(PARSERS["report"].format_usage().split())
    assert "[--search" not in usage and "--search FILE" in usage


def test_top_level_help_says_macs(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "MAC/latency budgets" in out and "FLOP" not in out


def _warnings(capsys):
    err = capsys.readouterr().err
    return [line for line in err.splitlines() if line.strip()]


def test_deprecated_aliases_still_work_with_one_line_naming_the_new_flag(capsys):
    args = build_parser("export").parse_args(["--checkpoint", "m.safetensors", "--verify-data", "demo"])
    assert args.verify_data == "demo"
    assert _warnings(capsys) == ["fgvc-kit: warning: --verify-data is deprecated; use --dataset"]
    args = build_parser("prune").parse_args(["--checkpoint", "m", "--ratio", "0.3", "--head-ratio", "0.5",
                                              "--out", "o"])
    assert args.channel_keep_ratio == 0.7 and args.head_keep_ratio == 0.5
    assert _warnings(capsys) == ["fgvc-kit: warning: --ratio is deprecated; use --channel-keep-ratio 0.7",
                                 "fgvc-kit: warning: --head-ratio is deprecated; use --head-keep-ratio 0.5"]
    args = build_parser("prune").parse_args(["--checkpoint", "m", "--macs-target", "10G", "--out", "o"])
    assert args.macs_budget == "10G"
    assert _warnings(capsys) == ["fgvc-kit: warning: --macs-target is deprecated; use --macs-budget"]
    for command, old, new, dest, value in (("evaluate", "--batch-size", "--eval-batch-size", "eval_batch_size", 8),
                                           ("search", "--batch-size", "--eval-batch-size", "batch_size", 8),
                                           ("demo", "--batch-size", "--latency-batch-size", "latency_batch_size", 8)):
        argv = (["--checkpoint", "m"] if command != "demo" else []) + [old, str(value)]
        assert getattr(build_parser(command).parse_args(argv), dest) == value
        assert _warnings(capsys) == [f"fgvc-kit: warning: {old} is deprecated; use {new}"]
    args = build_parser("bench").parse_args(["measure", "--table", "t.json", "--batch-size", "1", "8"])
    assert args.latency_table == "t.json" and args.batch_size == [1, 8]
    assert len(_warnings(capsys)) == 2
    with pytest.raises(SystemExit) as e:  # old and new spelling with two values: refused as given twice
        build_parser("prune").parse_args(["--checkpoint", "m", "--ratio", "0.3", "--channel-keep-ratio", "0.5",
                                          "--out", "o"])
    assert e.value.code == 2


def test_search_budget_says_the_option_to_use(capsys):
    for value, use in (("15ms", "--latency-budget 15ms"), ("20G", "--macs-budget 20G"),
                       ("2.5e9", "--macs-budget (MACs, e.g. 20G) or --latency-budget (a time, e.g. 15ms)")):
        with pytest.raises(SystemExit) as e:
            main(["search", "--checkpoint", "m.safetensors", "--budget", value])
        assert e.value.code == 2
        err = _warnings(capsys)
        assert len(err) == 1 and err[0].startswith("fgvc-kit: error: search: --budget") and use in err[0], err


def _tiny_table(path):
    from tavt_kit.bench import LatencyTable

    L = [1 + g for g in (1, 16, 32, 48, 64)]
    curve = {"tokens": L, "ms": [float(v) for v in L]}
    LatencyTable({
        "format": "fgvc-kit/latency-table", "version": 1,
        "model": {"name": "t", "depth": 3, "embed_dim": 64, "num_heads": 2, "mlp_hidden": 256, "num_patches": 64,
                  "num_prefix_tokens": 1, "img_size": [64, 64], "patch_size": [8, 8], "scorer": "tavt",
                  "fuse": False, "head": "linear"},
        "target": {"backend": "torch", "device": "cpu", "batch_size": 1, "threads": 1},
        "embed_ms": 2.0, "plain_ms": curve, "attn_ms": curve, "mlp_ms": curve,
        "head_ms": {"tokens": L, "ms": [0.01 * v for v in L]}, "head_nodrop_ms": 0.65, "offset_ms": 0.5,
    }).save(path)
    return str(path)


def test_bench_predict_takes_the_latency_table_as_an_option_and_the_old_positional_with_a_line(tmp_path, capsys):
    table = _tiny_table(tmp_path / "latency_table.json")
    out = ["--keep-ratio", "0.5", "--out", str(tmp_path)]
    assert main(["bench", "predict", "--latency-table", table, "--latency-batch-size", "1"] + out) == 0
    captured = capsys.readouterr()
    assert captured.err == "" and "keep 0.5" in captured.out
    assert "1 thread," in captured.out and "1 threads" not in captured.out
    assert main(["bench", "predict", table] + out) == 0
    assert _warnings(capsys) == [f"fgvc-kit: warning: a positional latency-table is deprecated; use "
                                 f"--latency-table {table}"]
    assert main(["bench", "predict"] + out) == 2
    err = _warnings(capsys)
    assert len(err) == 1 and "--latency-table: give the latency table" in err[0]


def test_profile_judges_the_separability_it_prints():
    from tavt_kit.cli.bench import with_judgements

    lines = ["latency table  t.json", "separability   attn(L_in) + mlp(L_out) vs 10 measured pairs: rms 8.05%, "
             "max 48.51%", "offset         +0.1 ms"]
    bad = with_judgements(lines, {"separability": {"rms_rel": 0.0805, "max_abs_rel": 0.4851, "pairs": 10}})
    assert len(bad) == 4 and bad[2].strip().startswith("high: predictions for dropping blocks may be off by up to "
                                                       "49%") and "idle machine" in bad[2]
    good = with_judgements(lines, {"separability": {"rms_rel": 0.004, "max_abs_rel": 0.012, "pairs": 10}})
    assert good[2].strip() == "fine: the split predicts whole dropping blocks within 1.2% (rms 0.4%)"


def test_measure_takes_a_comma_list_of_batch_sizes():
    from tavt_kit.cli.bench import normalize_argv

    argv = normalize_argv(["--latency-batch-size", "1,8", "--drop", "1,2,3"])
    assert argv == ["measure", "--latency-batch-size", "1", "8", "--drop", "1,2,3"]
    assert build_parser("bench").parse_args(argv).batch_size == [1, 8]
