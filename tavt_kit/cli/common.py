"""The shared command-line vocabulary: schedules, budgets, model files, run folders, running a command."""
from __future__ import annotations

import argparse
import os
import re
import sys
from typing import Any, Dict, List, Optional, Sequence

from ..errors import ConfigError, ScheduleError

ERROR_PREFIX = "fgvc-kit: error:"


# ------------------------------------------------------------------ parsers
#: where a parse keeps each single-valued option's first ``(option string, value)`` (removed after the parse)
_GIVEN = "_fgvc_kit_given"


def note_given(parser: argparse.ArgumentParser, namespace: argparse.Namespace, action: argparse.Action, value,
               option_string: Optional[str]) -> None:
    """A single-valued option (or another spelling of it: same destination) given twice with two values is an
    error (argparse would silently keep the last); the same value twice is harmless and kept."""
    seen = namespace.__dict__.setdefault(_GIVEN, {})
    prev = seen.get(action.dest)
    if prev is not None and prev[1] != value:
        if action.nargs == 0 and prev[0] != option_string:  # --progress ... --no-progress
            parser.error(f"{prev[0]} and {option_string} contradict each other; give one of them")
        parser.error(f"{option_string} given twice ({prev[0]} {prev[1]}, then {option_string} {value}); expected "
                     "it once")
    seen.setdefault(action.dest, (option_string, value))


class _StoreOnce(argparse._StoreAction):
    def __call__(self, parser, namespace, values, option_string=None):
        if option_string is not None:
            note_given(parser, namespace, self, values, option_string)
        super().__call__(parser, namespace, values, option_string)


class _ConstOnce:
    def __call__(self, parser, namespace, values, option_string=None):
        note_given(parser, namespace, self, self.const, option_string)
        super().__call__(parser, namespace, values, option_string)


class _StoreConstOnce(_ConstOnce, argparse._StoreConstAction):
    pass


class _StoreTrueOnce(_ConstOnce, argparse._StoreTrueAction):
    pass


class _StoreFalseOnce(_ConstOnce, argparse._StoreFalseAction):
    pass


class Parser(argparse.ArgumentParser):
    """argparse with fgvc-kit's one error line: ``fgvc-kit: error: ...`` (exit 2), pointing at the help.

    A single-valued option given twice with two values (``--seed 1 --seed 2``) is refused instead of the last
    one silently winning; repeatable options (``append``, ``--dataset-option``) and lists (``nargs='+'``) are
    unchanged."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        for name, cls in ((None, _StoreOnce), ("store", _StoreOnce), ("store_const", _StoreConstOnce),
                          ("store_true", _StoreTrueOnce), ("store_false", _StoreFalseOnce)):
            self.register("action", name, cls)

    def parse_known_args(self, args=None, namespace=None):
        ns, rest = super().parse_known_args(args, namespace)
        ns.__dict__.pop(_GIVEN, None)
        return ns, rest

    def error(self, message: str):
        cmd = self.prog[len("fgvc-kit "):] if self.prog.startswith("fgvc-kit ") else ""
        self.exit(2, f"{ERROR_PREFIX} {cmd + ': ' if cmd else ''}{message} (see {self.prog} --help)\n")


# ------------------------------------------------------ numeric options
#: the sign every numeric option of every command must have: long option -> (kind, what it counts). Checked
#: once for all commands (:func:`check_values`) before a command runs; ``pos``: > 0, ``nonneg``: >= 0.
#: Floats must also be finite.
NUMERIC_FLAGS: Dict[str, tuple] = {
    # sizes and counts
    "--img-size": ("pos", "image size"), "--num-classes": ("pos", "number of classes"),
    "--resize": ("pos", "size in pixels"), "--steps": ("pos", "number of steps"),
    "--train-steps": ("pos", "number of steps"), "--distill-steps": ("pos", "number of steps"),
    "--prune-steps": ("pos", "number of steps"), "--accum-steps": ("pos", "number of micro-batches per step"),
    "--log-every": ("pos", "number of steps"), "--eval-batch-size": ("pos", "batch size"),
    "--calibration-batch-size": ("pos", "batch size"), "--latency-batch-size": ("pos", "batch size"),
    "--population": ("pos", "population"), "--generations": ("pos", "number of generations"),
    "--calibration-images": ("pos", "number of images"), "--verify-images": ("pos", "number of images"),
    "--accuracy-control-images": ("pos", "number of images"), "--min-repeats": ("pos", "number of timed runs"),
    "--max-repeats": ("pos", "number of timed runs"), "--max-confusion-classes": ("pos", "number of classes"),
    "--min-tokens": ("pos", "number of tokens"),
    "--seed": ("nonneg", "seed"), "--split-seed": ("nonneg", "seed"),
    "--workers": ("nonneg", "number of processes"), "--warmup-steps": ("nonneg", "number of steps"),
    "--eval-every": ("nonneg", "number of steps (0 = at the end only)"),
    "--save-every": ("nonneg", "number of steps (0 = at the end only)"),
    "--warmup": ("nonneg", "number of untimed runs"), "--random": ("nonneg", "number of random schedules"),
    "--validate": ("nonneg", "number of random schedules"), "--threads": ("nonneg", "number of threads"),
    "--mutations": ("nonneg", "number of mutations"), "--crossovers": ("nonneg", "number of crossovers"),
    "--sandwich": ("nonneg", "number of sub-networks"), "--verify-top": ("nonneg", "number of candidates"),
    "--front-time-limit": ("nonneg", "number of seconds"),
    # times, rates, weights
    "--time-budget": ("pos", "number of seconds"), "--rel-ci": ("pos", "fraction"),
    "--lr": ("pos", "learning rate"), "--kd-temperature": ("pos", "temperature"),
    "--weight-decay": ("nonneg", "weight decay"), "--momentum": ("nonneg", "momentum"),
    "--min-lr": ("nonneg", "learning rate"), "--label-smoothing": ("nonneg", "label smoothing"),
    "--clip-grad": ("nonneg", "max gradient norm (0 = off)"), "--drop-path": ("nonneg", "drop-path rate"),
    "--max-accuracy-drop": ("nonneg", "number of points"), "--max-logit-diff": ("nonneg", "logit difference"),
    "--sub-label-weight": ("nonneg", "weight"), "--full-label-weight": ("nonneg", "weight"),
    "--full-kd-weight": ("nonneg", "weight"),
}
#: options a command checks itself, with wording its users (and tests) rely on: ``(command, option)``
_CHECKED_BY_COMMAND = {("search", "--subset")}


def _number_ok(value, kind: str) -> bool:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return True  # not a number: the option's own type said so already
    if isinstance(value, float) and value != value or value in (float("inf"), float("-inf")):
        return False
    return value > 0 if kind == "pos" else value >= 0


def check_values(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Every numeric option given to the command (``parser``, and the sub-command chosen in ``args``) has the sign
    :data:`NUMERIC_FLAGS` says: ``--random -2`` is a one-line :class:`ConfigError` naming the option, not a
    silent no-op or a traceback later."""
    cmd = parser.prog.split()[1] if len(parser.prog.split()) > 1 else ""
    for dest, acts in _dest_actions(parser, args).items():
        value = getattr(args, dest, None)
        if value is None:
            continue
        for a in acts:
            flag = _long(a)
            if a.type is device and not _DEVICE.fullmatch(str(value)):
                raise ConfigError(f"{flag} {value}: expected {DEVICE_FORM}")
            if flag not in NUMERIC_FLAGS or (cmd, flag) in _CHECKED_BY_COMMAND:
                continue
            kind, what = NUMERIC_FLAGS[flag]
            for v in (value if isinstance(value, (list, tuple)) else [value]):
                if not _number_ok(v, kind):
                    sign = "positive" if kind == "pos" else "non-negative"
                    if isinstance(v, float):
                        sign = "finite, " + sign
                    raise ConfigError(f"{flag} {v:g}: expected a {sign} {what}" if isinstance(v, float)
                                      else f"{flag} {v}: expected a {sign} {what}")
            break


# ------------------------------------------------- library names -> flags
#: library parameter names whose option is not the dest of the same name: name -> the option. An alias is
#: used only by a command that has that option (a dest of the running command always wins).
PARAM_FLAGS = {
    "dataset_options": "--dataset-option",
    "options": "--dataset-option",  # DataSpec.options, a generated dataset's check_options(options)
    "root": "--data",  # DataSpec.root, build_dataset(root=), load_raw(root=)
    "num_workers": "--workers",  # TrainConfig.num_workers
    "latency_batch_size": "--latency-batch-size",
    "table": "--latency-table",
    "validate_range": "--random-range",
    "macs_target": "--macs-budget",  # prune_model(macs_target=)
    "budget_s": "--time-budget",  # TimingPolicy(budget_s=)  # profile_latency(validate_range=)  # search_schedules(table=), latency_objectives(table=)
    # search_schedules' option objects' fields (search.settings, search.ship)
    "evaluation.fitness": "--fitness", "evaluation.subset": "--subset", "evaluation.batch_size": "--eval-batch-size",
    "evaluation.verify_top": "--verify-top", "evaluation.calibration_images": "--calibration-images",
    "evaluation.device": "--eval-device", "evaluation.front_time_limit": "--front-time-limit",
    "front_time_limit": "--front-time-limit", "latency.source": "--latency-source", "latency.remeasure": "--remeasure",
    "ship.confidence": "--ship-confidence", "ship.selection": "--selection", "evaluation.reuse": "--reuse",
    "latency.table": "--latency-table", "latency.precisions": "--precisions",
    "space.reducers": "--reducers", "space.bound": "--bound", "space.token_multiple": "--token-multiple",
    "finetune.steps": "--finetune-steps", "finetune.lr": "--finetune-lr",
}

#: ``name=`` (``name['key']=``) in a library message, not inside a word, an attribute or a flag, and not
#: ``==``; with its value when that is ``True``/``False`` or a quoted word (``'fp16'``)
_PARAM = re.compile(r"(?<![\w.\-])(?P<name>[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)?)"
                    r"(?:\[(?:'(?P<k1>[^'\]]*)'|\"(?P<k2>[^\"\]]*)\"|(?P<k3>\w+))\])?=(?!=)"
                    r"(?:(?P<bool>(?:True|False)\b)|'(?P<word>[\w.:/,+@-]+)'(?![\w']))?")


def _dest_actions(parser: argparse.ArgumentParser, args: Optional[argparse.Namespace] = None):
    """``{dest: [options]}`` of ``parser`` and of the sub-command chosen in ``args`` (of every sub-command when
    unknown; the first that has a dest wins); a sub-command's options replace its parent's of the same dest.
    Visible options come before hidden (deprecated) ones."""
    own: Dict[str, List[argparse.Action]] = {}
    nested: Dict[str, List[argparse.Action]] = {}
    for a in parser._actions:
        if isinstance(a, argparse._SubParsersAction):
            chosen = getattr(args, a.dest, None) if args is not None else None
            subs = [a.choices[chosen]] if chosen in a.choices else list(a.choices.values())
            for sp in reversed(subs):
                nested.update(_dest_actions(sp, args))
        elif any(s.startswith("--") for s in a.option_strings) and a.dest not in ("help", "version"):
            own.setdefault(a.dest, []).append(a)
    own.update(nested)
    return {d: sorted(acts, key=lambda a: a.help == argparse.SUPPRESS) for d, acts in own.items()}


def _long(action: argparse.Action) -> str:
    return next(s for s in action.option_strings if s.startswith("--"))


def flag_message(message: str, parser: argparse.ArgumentParser,
                 args: Optional[argparse.Namespace] = None) -> str:
    """A library error message as the command line says it.

    Each ``name=`` whose ``name`` is a dest of the command being run (``parser``, and the sub-command chosen
    in ``args``), or a :data:`PARAM_FLAGS` alias of one of its options, becomes that option's first long
    string and a space (``subset=0: expected`` -> ``--subset 0: expected``); ``name['key']=`` becomes
    ``--option key=`` (``options['seed']=-1`` -> ``--dataset-option seed=-1``); ``name=True``/``False`` of an
    on/off option becomes the option that sets it (``resume=True`` -> ``--resume``), and a ``name=`` with no
    value the option alone (``give no model=, head=`` -> ``give no --model, --head``); a quoted word loses its quotes
    (``amp='fp16'`` -> ``--amp fp16``). Other text is kept.
    """
    by_dest = _dest_actions(parser, args)
    by_flag = {s: acts[0] for acts in by_dest.values() for a in acts for s in a.option_strings}

    def options_of(name: str) -> List[argparse.Action]:
        if name in by_dest:
            return by_dest[name]
        alias = PARAM_FLAGS.get(name)
        return [by_flag[alias]] if alias in by_flag else []

    def swap(m: "re.Match") -> str:
        acts = options_of(m.group("name"))
        if not acts:
            return m.group(0)
        flag, word = _long(acts[0]), m.group("word")
        key = m.group("k1") or m.group("k2") or m.group("k3")
        if key is not None:
            return f"{flag} {key}=" + (m.group("bool") or word or "")
        if m.group("bool"):
            if all(isinstance(a.const, bool) and a.nargs == 0 for a in acts):  # an on/off option
                hit = next((a for a in acts if a.const is (m.group("bool") == "True")), None)
                return _long(hit) if hit is not None else m.group(0)
            return f"{flag} {m.group('bool')}"
        if word is not None:  # a quoted word is typed without its quotes
            return f"{flag} {word}"
        if m.end() == len(message) or message[m.end()] in " ,;:)]":  # the option named without a value
            return flag
        return f"{flag} "

    return _PARAM.sub(swap, message)


def warn(text: str) -> None:
    """A warning line on stderr, in the one format of every command."""
    print(f"fgvc-kit: warning: {text}", file=sys.stderr, flush=True)


class _Deprecated(argparse.Action):
    """An old spelling that still works: stores into the new option's destination and says so once (with the
    value in the new option's terms when ``convert`` changes it: ``--ratio 0.3`` -> ``--channel-keep-ratio 0.7``)."""

    def __init__(self, option_strings, dest, new: str = "", convert=None, **kw):
        self.new, self.convert = new, convert
        super().__init__(option_strings, dest, **kw)

    def __call__(self, parser, namespace, values, option_string=None):
        if self.convert is not None:
            values = self.convert(values)
            warn(f"{option_string} is deprecated; use {self.new} {values:g}" if isinstance(values, float)
                 else f"{option_string} is deprecated; use {self.new} {values}")
        else:
            warn(f"{option_string} is deprecated; use {self.new}")
        if self.nargs not in ("+", "*"):
            note_given(parser, namespace, self, values, option_string)
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


class _Refused(argparse.Action):
    """A spelling of another command's concept: refused with one line saying this command's own option."""

    def __init__(self, option_strings, dest, suggest=None, **kw):
        self.suggest = suggest
        super().__init__(option_strings, dest, **kw)

    def __call__(self, parser, namespace, values, option_string=None):
        parser.error(self.suggest(option_string, values))


def add_refused(parser, old: str, suggest) -> None:
    """``old`` is not an option of this command but of another concept; ``suggest(option, value)`` is the error
    line naming the option to use (hidden from the help)."""
    parser.add_argument(old, dest=argparse.SUPPRESS, action=_Refused, suggest=suggest, help=argparse.SUPPRESS)


def budget_suggestion(option: str, value: str) -> str:
    """What ``search --budget VALUE`` means in search's options (search gives budgets by kind)."""
    from ..search.options import budget_of

    text = str(value).strip()
    try:
        kind = budget_of(text).objective  # the one budget reader
    except ConfigError:
        kind = None
    use = {"latency": f"--latency-budget {text}", "macs": f"--macs-budget {text}"}.get(
        kind, "--macs-budget (MACs, e.g. 20G) or --latency-budget (a time, e.g. 15ms)")
    return (f"{option} {text}: search takes budgets by kind; use {use} (export's and report's --budget picks a "
            "budget of a finished search)")


# ------------------------------------------------------------ shared options
#: the one default of each timing option, in every command that times (bench measure, bench profile, report):
#: the library's :class:`tavt_kit.bench.TimingPolicy` defaults (kept equal by tests/test_vocabulary.py)
TIMING_DEFAULTS: Dict[str, Any] = {"warmup": 3, "min_repeats": 7, "max_repeats": 1000, "time_budget": 3.0,
                                   "rel_ci": 0.01}
_TIMING_HELP = {
    "warmup": ("N", int, "untimed runs per measurement"),
    "min_repeats": ("N", int, "timed runs at least"),
    "max_repeats": ("N", int, "timed runs at most"),
    "time_budget": ("SECONDS", float, "seconds of timing per measurement, at most"),
    "rel_ci": ("FRACTION", float, "stop once the median's 95%% confidence interval is within this fraction"),
}


def add_timing_arguments(group, names=tuple(_TIMING_HELP)) -> None:
    """The timing options ``names`` (dests of :data:`TIMING_DEFAULTS`), with the one default each."""
    for name in names:
        metavar, kind, text = _TIMING_HELP[name]
        group.add_argument("--" + name.replace("_", "-"), type=kind, metavar=metavar, default=TIMING_DEFAULTS[name],
                           help=f"{text} (default {TIMING_DEFAULTS[name]:g})")


#: ``--threads`` of every command that runs the deployment target (bench, search, export): one meaning, one default
THREADS_HELP = ("threads the deployment target runs on (default: torch's intra-op thread count, which "
                "OMP_NUM_THREADS sets; said when fewer than the cores)")


def add_threads(group, help: str = THREADS_HELP) -> None:
    """``--threads N`` with the one default of every command that times or runs the deployment target."""
    group.add_argument("--threads", type=int, metavar="N", help=help)


_SAID: set = set()  # the thread notes said in this process (each once)


def target_threads(given: Optional[int], log=print) -> int:
    """The deployment target's threads: ``given`` (``--threads``), else torch's count, said in one line when
    that is fewer than this machine's cores (``OMP_NUM_THREADS=1`` for training also makes the target 1 thread)."""
    from ..bench.backends import default_threads
    from ..machine import available_cores

    if given:
        return int(given)
    n, cores = default_threads(), available_cores()
    if n < cores and (n, cores) not in _SAID:
        _SAID.add((n, cores))
        env = os.environ.get("OMP_NUM_THREADS")
        log(f"note: the deployment target runs {n} thread{'s' if n != 1 else ''} (torch's count"
            + (f", set by OMP_NUM_THREADS={env}" if env else "") + f") of this machine's {cores} cores; "
            f"--threads {cores} times it on all of them")
    return n


#: how every ``--device`` says what it takes
DEVICE_FORM = "cpu, cuda or cuda:N"
_DEVICE = re.compile(r"cpu|cuda(?::\d+)?|auto")


def device(text: str) -> str:
    """``--device``'s value, normalised (``CUDA:0`` -> ``cuda:0``); checked by :func:`check_values`."""
    return str(text).strip().lower()


def add_device(group, default: str, what: str = "where to run") -> None:
    """``--device DEVICE`` in the one form of every command; ``default`` says what it is when not given."""
    group.add_argument("--device", type=device, metavar="DEVICE", help=f"{what}: {DEVICE_FORM} (default: {default})")


def precision(text: str) -> str:
    """``--precision``'s value under its one name; an older spelling (``f32``, ``float16``) works with a
    deprecation line. Other values pass on to the command, which says what it takes."""
    from ..target import Precision

    value = str(text).strip().lower()
    if value in Precision.ALIASES:
        warn(f"--precision {value} is deprecated; use --precision {Precision.ALIASES[value]}")
        value = Precision.ALIASES[value]
    return value


# ---------------------------------------------------------------- schedules
def use_recorded_token_drop(model, record, where: str) -> None:
    """The scorer (and fuse) a search or drop config measured its accuracies with, set on ``model`` and said in
    one line where it is not the checkpoint's (``fgvc-kit search --scorer``)."""
    from ..models import use_recorded_token_drop as use

    said = use(model, record, where)
    if said:
        print(said, flush=True)


def drop_file_token_drop(model, path: str) -> None:
    """:func:`use_recorded_token_drop` for a drop-config file (a file that does not read is left to the schedule
    reader, whose error names it)."""
    from ..errors import TavtKitError
    from ..schedules import TokenSchedule

    try:
        meta = TokenSchedule.load(path).meta or {}
    except (TavtKitError, OSError, ValueError):
        return
    use_recorded_token_drop(model, meta.get("token_drop"), f"--drop {path}")


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

            drop_file_token_drop(model, value)
            return schedule_from_drop_file(model, value, name="drop")
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
def parse_macs(text: str, flag: str = "--macs-budget") -> float:
    """``20G``, ``850M``, ``2.5e9`` -> MACs (the library's one budget reader; errors name ``flag``)."""
    from ..search.options import budget_of

    return budget_of(text, "macs", where=f"{flag} {text}").limit


def parse_latency_budget(text: str):
    """``--latency-budget``: a time (``15ms``; a bare number is milliseconds) or a share of your model's latency on
    the target (``50%``), as a :class:`~tavt_kit.search.evolution.Budget` (the library's one budget reader)."""
    from ..search.options import budget_of

    return budget_of(text, "latency", where=f"--latency-budget {text}")


def parse_seconds(text: str) -> float:
    """``15ms``, ``0.2s``, ``800us`` -> seconds (a bare number is milliseconds)."""
    b = parse_latency_budget(text)
    if b.fraction is not None:
        raise ConfigError(f"--latency-budget {text}: expected a time such as 15ms or 0.2s")
    return b.limit


# ------------------------------------------------------------- run folders
def check_run_dir(*args, **kw):
    """The run-folder rule of train and distill (:func:`tavt_kit.train.run_dir.check_run_dir`)."""
    from ..train.run_dir import check_run_dir as check

    return check(*args, **kw)


def check_resume_args(*args, **kw):
    """A resumed run keeps its settings (:func:`tavt_kit.train.run_dir.check_resume_args`)."""
    from ..train.run_dir import check_resume_args as check

    return check(*args, **kw)


def pct(x) -> str:
    """An accuracy fraction as a percentage, ``n/a`` when missing."""
    return "n/a" if x is None or x != x else f"{100 * x:.2f} %"


# ---------------------------------------------------------------- commands
def invoke(module, name: str, argv: List[str]) -> int:
    """Run a command module (``add_arguments`` + ``run``) on ``argv``, as ``fgvc-kit NAME`` would."""
    p = Parser(prog=f"fgvc-kit {name}")
    module.add_arguments(p)
    argv = module.normalize_argv(list(argv)) if hasattr(module, "normalize_argv") else list(argv)
    args = p.parse_args(argv)
    check_values(p, args)
    return run_command(module, name, args, argv)


def run_command(module, name: str, args: argparse.Namespace, argv: Sequence[str] = ()) -> int:
    """``module.run(args)`` as the one writer of the folder it writes (``module.output_folder(args)``, where the
    command has one): another process writing that folder is refused with its PID (tavt_kit.lock). Under
    torchrun only rank 0 holds it (the other ranks write nothing)."""
    folder = module.output_folder(args) if hasattr(module, "output_folder") else None
    try:
        rank = int(os.environ.get("RANK", "0") or 0)
    except ValueError:
        rank = 0
    if not folder or rank != 0:
        return module.run(args)
    import shlex

    from ..lock import folder_lock

    command = " ".join(["fgvc-kit", name] + [shlex.quote(a) for a in argv])[:300]
    with folder_lock(folder, command=command):
        return module.run(args)


def parse_reducers(text, flag: str = "--reducers"):
    """``drop``, ``merge`` or ``drop,merge`` as a tuple (:func:`tavt_kit.distill.settings.parse_reducers`)."""
    from ..distill.settings import parse_reducers as parse

    return parse(text, flag + " ")


def check_can_merge(model, flag: str) -> None:
    """A model that can merge tokens, else a one-line error naming ``flag``
    (:func:`tavt_kit.distill.settings.check_can_merge`)."""
    from ..distill.settings import check_can_merge as check

    check(model, flag)
