"""``fgvc-kit demo``: the whole pipeline on a built-in dataset with the built-in tiny model, no downloads.

The dataset is ``cluttered-digits`` (one digit among clutter, disjoint source
digits per split, 3000 test images: differences of a point are resolved), or
``--dataset demo`` (the plain 8x8 digits, faster, too small to tell methods apart).

train → distill → latency table on this machine → search under a latency
budget (and a MAC budget) → export ONNX and OpenVINO with verification →
bench → report. Every stage is the same command a user runs, with the demo's
settings; each prints what it produced, and a second run reuses the stages
that finished (an interrupted training or distillation resumes).
"""
from __future__ import annotations

import argparse
import json
import os
import time
from typing import Callable, List, Optional, Sequence, Union

DEFAULT_OUT = os.path.join("runs", "demo")
DEFAULT_DATASET = "cluttered-digits"
#: the demo's own short recipe: distillation steps (the supernet stays close to the model it starts from); your
#: model is the one shipped with fgvc-kit (below), or ``--train-steps N`` of the built-in recipe on this machine
#: and, where it trains your model (the plain digits: ``--dataset demo``), a short fine-tuning
TRAIN_STEPS, DISTILL_STEPS = 300, 30
#: your model unless ``--train-steps`` is given: fgvc_tiny fine-tuned on cluttered-digits by the built-in recipe,
#: ``fgvc-kit train --dataset cluttered-digits`` (1400 steps, held-out curve flat at its end); the record beside it
#: holds the command, the curve, the test top-1 and the file's sha256
SHIPPED_MODEL = os.path.join(os.path.dirname(os.path.abspath(__file__)), "demo_model",
                             "fgvc_tiny-cluttered-digits.safetensors")
#: the latency profile of the demo: a coarse grid, short timings and the fast (TorchScript) ONNX exporter
PROFILE = ["--grid", "5", "--time-budget", "0.15", "--min-repeats", "5", "--exporter", "torchscript"]


def _command(name: str) -> Callable[[List[str]], int]:
    """A stage: the command ``fgvc-kit NAME`` itself, run on an argument list."""
    from .cli import command_module
    from .cli.common import invoke

    return lambda argv: invoke(command_module(name), name, argv)


def _preflight(stages: Sequence[tuple]) -> None:
    """Every stage's command line ``(command, argv)`` parsed and checked as its command checks it before reading
    any file (its parser, the signs of its numbers, and its ``check_args`` where it has one), so that a flag a late
    stage refuses (``--format tflite``) stops the demo before its first stage runs, not after minutes of them."""
    from .cli import build_parser, command_module
    from .cli.common import check_values

    for name, argv in stages:
        module, parser = command_module(name), build_parser(name)
        ns = parser.parse_args(module.normalize_argv(list(argv)) if hasattr(module, "normalize_argv") else argv)
        check_values(parser, ns)
        if hasattr(module, "check_args"):
            module.check_args(ns)


STAGES_FILE = "stages.json"
STAGES_FORMAT, STAGES_VERSION = "fgvc-kit/demo-stages", 1


def _done(path: str) -> bool:
    return os.path.isfile(path)


def _folder_files(folder: str) -> List[str]:
    """Every file a stage left in its own folder (not the folder lock, not hidden or temporary files)."""
    out = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        out += [os.path.join(dirpath, f) for f in sorted(filenames) if not f.startswith(".") and ".tmp-" not in f]
    return out


class _Stages:
    """Which stages finished successfully and with which settings (``stages.json``): only those are reused, and
    only while every stage before them was reused too (a stage that runs again changes what follows)."""

    def __init__(self, out: str, log):
        self.out = out
        self.path, self.log, self.rerun = os.path.join(out, STAGES_FILE), log, False
        self.rerun_before: dict = {}
        self.times: dict = {}  # stage -> seconds it ran (None: reused)
        self.current = (None, None, False)
        self.done = self._read()

    def _read(self) -> dict:
        """The stages recorded, {} when the folder has none (or a file no demo wrote whole: every stage runs);
        a record of a newer fgvc-kit is refused rather than guessed at."""
        from .errors import ConfigError

        try:
            with open(self.path, encoding="utf-8") as f:
                doc = json.load(f)
        except (OSError, ValueError):
            return {}
        if not isinstance(doc, dict):
            return {}
        if "format" not in doc:  # written before stages.json had a format: the stages at its top level
            return doc
        if doc.get("format") != STAGES_FORMAT:
            raise ConfigError(f"{self.path}: not the stage record of fgvc-kit demo (format {doc.get('format')!r}, "
                              f"expected {STAGES_FORMAT!r}); give the demo another --out")
        version = doc.get("version", 1)
        if not isinstance(version, int) or version > STAGES_VERSION:
            raise ConfigError(f"{self.path}: stage record version {version!r} is newer than this fgvc-kit reads "
                              f"({STAGES_VERSION}); run the demo with that fgvc-kit or give it another --out")
        return dict(doc.get("stages") or {})

    def _save(self) -> None:
        from .files import write_json

        write_json({"format": STAGES_FORMAT, "version": STAGES_VERSION, "stages": self.done}, self.path)

    def continuing(self, key: str, settings: dict) -> bool:
        """Whether a run of this stage with these settings started and did not finish (a kill): resume it."""
        rec = self.done.get(key) or {}
        return rec.get("settings") == settings and not rec.get("ok") and not self.rerun_before.get(key, False)

    def _changed_file(self, rec: dict) -> Optional[str]:
        """Why the files a stage finished with are not the ones there now (missing, or another sha256), or None."""
        from .export.record import sha256

        files = rec.get("files")
        if not isinstance(files, dict) or not files:
            return "no checksums of its files were recorded"
        for rel, digest in files.items():
            path = os.path.join(self.out, rel)
            if not os.path.isfile(path):
                return f"{path} is missing"
            try:
                if sha256(path) != digest:
                    return f"{path} changed since the stage finished"
            except OSError as e:
                return f"{path} cannot be read ({e.strerror or e})"
        return None

    def run(self, title: str, key: str, artefact: str, settings: dict, fn: Callable[[], int],
            files: Union[Sequence[str], Callable[[], Sequence[str]], None] = None) -> float:
        """Run a stage, or reuse what it made: ``artefact`` (its main file) and ``files`` (every file it made;
        a callable is asked once the stage finished), whose sha256 are recorded when it finishes and compared
        before it is reused (a truncated, edited or deleted file reruns it)."""
        t0 = time.perf_counter()
        rec = self.done.get(key) or {}
        why = None
        if not _done(artefact):
            why = None if not rec else f"{artefact} is missing"
        elif not rec.get("ok"):
            why = "its last run did not finish successfully" if rec else "no record of how it was made"
        elif rec.get("settings") != settings:
            changed = sorted(k for k in set(settings) | set(rec.get("settings") or {})
                             if settings.get(k) != (rec.get("settings") or {}).get(k))
            why = "other settings (" + ", ".join(f"{k} {(rec.get('settings') or {}).get(k)} -> {settings.get(k)}"
                                                 for k in changed) + ")"
        elif self.rerun:
            why = "an earlier stage ran again"
        else:
            why = self._changed_file(rec)
        if _done(artefact) and why is None:
            self.log(f"[{title}] reusing {artefact}")
            self.times[key] = None
            return 0.0
        self.log(f"[{title}] ..." + (f" (again: {why})" if why else ""))
        self.rerun_before[key] = self.rerun  # an earlier stage ran again: this one starts afresh
        self.current = (key, settings, self.continuing(key, settings))
        self.rerun = True
        self.done[key] = {"settings": settings, "ok": False}
        self._save()
        rc = fn()
        if rc:
            raise SystemExit(rc)
        from .export.record import sha256

        made = list(files() if callable(files) else (files or ()))
        self.done[key]["files"] = {os.path.relpath(p, self.out): sha256(p)
                                   for p in dict.fromkeys([artefact] + made) if os.path.isfile(p)}
        self.done[key]["ok"] = True
        self._save()
        dt = time.perf_counter() - t0
        self.times[key] = dt
        self.log(f"[{title}] done in {dt:.0f} s -> {artefact}")
        return dt


def _resumable(out_dir: str, continuing: bool) -> List[str]:
    """--resume when a killed run of the same settings left its state, else --overwrite what is there."""
    if continuing and os.path.isfile(os.path.join(out_dir, "train_state.safetensors")) and \
            os.path.isfile(os.path.join(out_dir, "config.json")):
        return ["--resume"]
    return ["--overwrite"] if os.path.isdir(out_dir) else []


def shipped_model() -> dict:
    """The record of the model the demo ships as your model (:data:`SHIPPED_MODEL`), its weights checked against
    the recorded sha256 (a damaged install is refused naming the file)."""
    from .errors import ConfigError
    from .export.record import sha256

    record_path = os.path.splitext(SHIPPED_MODEL)[0] + ".json"
    try:
        with open(record_path, encoding="utf-8") as f:
            record = json.load(f)
        digest = sha256(SHIPPED_MODEL)
    except (OSError, ValueError) as e:
        raise ConfigError(f"{record_path}: the demo's shipped model cannot be read ({e}); reinstall fgvc-kit or "
                          "give --train-steps N to train one") from None
    if not isinstance(record, dict) or record.get("sha256") != digest:
        raise ConfigError(f"{SHIPPED_MODEL}: sha256 {digest[:12]}... is not the recorded one; reinstall fgvc-kit "
                          "or give --train-steps N to train one")
    return record


def _install_shipped(d_train: str, record: dict) -> int:
    """Stage 1 without training: the shipped model and its record become ``d_train``'s ``best.safetensors`` and
    ``results.json`` (each written whole), as a training run leaves them."""
    import shutil

    from .files import atomic_path, write_json

    os.makedirs(d_train, exist_ok=True)
    with atomic_path(os.path.join(d_train, "best.safetensors")) as tmp:
        shutil.copyfile(SHIPPED_MODEL, tmp)
    write_json(dict(record, shipped=True), os.path.join(d_train, "results.json"))
    return 0


def add_arguments(p: argparse.ArgumentParser) -> None:
    from .cli.common import add_deprecated

    p.add_argument("--out", default=DEFAULT_OUT, metavar="DIR", help=f"output folder (default: {DEFAULT_OUT})")
    p.add_argument("--dataset", default=DEFAULT_DATASET, choices=("cluttered-digits", "demo"),
                   help=f"built-in dataset (default: {DEFAULT_DATASET}; demo = the plain digits)")
    p.add_argument("--train-steps", type=int, metavar="N",
                   help="train your model here for N steps of the built-in recipe (1400 is the whole recipe, about "
                        "10 minutes on one core) instead of the model shipped with fgvc-kit (default: the shipped "
                        f"model, trained by that recipe; --dataset demo: {TRAIN_STEPS})")
    p.add_argument("--distill-steps", type=int, metavar="N", help=f"distillation steps (default: {DISTILL_STEPS})")
    p.add_argument("--generations", type=int, default=2, metavar="N", help="search generations (default: 2)")
    p.add_argument("--population", type=int, default=6, metavar="N", help="search population (default: 6)")
    p.add_argument("--latency-share", type=float, metavar="SHARE",
                   help="the latency budget as a share of your model's latency on this machine, e.g. 0.8 (judged by "
                        "the ratio timed beside your model, so a busy machine does not fail it; default: midway "
                        "between the smallest schedule's predicted share and 1)")
    from .cli.common import add_refused

    add_refused(p, "--latency-fraction", lambda option, value: (
        f"{option} is gone: the demo's latency budget is --latency-share, a share of your model's latency (0.8: "
        "80 %), not a point between the smallest schedule and the full model"))
    p.add_argument("--latency-batch-size", type=int, default=8, metavar="N",
                   help="images per timed call of the latency table and bench (default: 8)")
    for old in ("--batch-size", "--batch"):
        add_deprecated(p, old, "--latency-batch-size", "latency_batch_size", type=int)
    p.add_argument("--format", default="onnx,openvino", metavar="LIST", help="export formats (default: onnx,openvino)")
    add_deprecated(p, "--formats", "--format", "format")
    p.add_argument("--quick", action="store_true", help="a few steps of everything (for tests)")


def latency_share(given, smallest: float) -> float:
    """The demo's latency budget as a share of your model's latency: ``given``, or midway between the smallest
    schedule's predicted share (``smallest``) and 1; a share the space cannot reach is refused in one line."""
    from .errors import ConfigError

    if given is None:
        return (1 + smallest) / 2
    if given < smallest:
        raise ConfigError(f"--latency-share {given:g}: below the smallest schedule of the search space, "
                          f"{smallest:.2f} of your model's latency on this machine's table; give at least "
                          f"{smallest:.2f}")
    return given


def output_folder(args) -> str:
    """The demo's folder (held while it runs; each stage also holds its own sub-folder; see tavt_kit.lock)."""
    return args.out


def run(args) -> int:
    """The whole pipeline with the settings of ``fgvc-kit demo`` (``args`` as :func:`add_arguments` makes them)."""
    def log(msg: str) -> None:
        print(msg, flush=True)

    out = args.out
    if args.latency_share is not None and not 0 < args.latency_share <= 1:
        from .errors import ConfigError

        raise ConfigError(f"--latency-share {args.latency_share}: expected a share of your model's latency in (0, 1], "
                          "e.g. 0.8")
    for flag in ("train_steps", "distill_steps", "generations", "population", "latency_batch_size"):
        value = getattr(args, flag, None)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            from .errors import ConfigError  # said as the demo's own option, not the stage's (--steps)

            raise ConfigError(f"--{flag.replace('_', '-')} {value}: expected a positive number")

    quick = args.quick
    t_start = time.perf_counter()
    d_train, d_dist = os.path.join(out, "train"), os.path.join(out, "distill")
    d_bench, d_search = os.path.join(out, "bench"), os.path.join(out, "search")
    d_export, d_report = os.path.join(out, "export"), os.path.join(out, "report")
    common = ["--no-progress"]
    dataset = getattr(args, "dataset", DEFAULT_DATASET)
    # your model: the shipped one, where the demo runs on the data it was trained for; else trained here
    shipped = args.train_steps is None and not quick and dataset == DEFAULT_DATASET
    train_steps = args.train_steps if args.train_steps is not None else (6 if quick else TRAIN_STEPS)
    distill_steps = args.distill_steps if args.distill_steps is not None else (4 if quick else DISTILL_STEPS)
    small = ["--batch-size", "16", "--eval-every", "2", "--save-every", "2", "--warmup-steps", "1"] if quick else []
    # the runtime the demo ships (OpenVINO on this CPU where installed): its latency budget, table and bench are
    # for it (the quick run of the tests times torch: seconds, not a minute of exports)
    from .target import DeploymentTarget

    backend = "torch" if quick else DeploymentTarget.default().backend
    if shipped:
        record = shipped_model()
        mine = (f"takes your model from fgvc-kit's package (fgvc_tiny trained on {dataset} by the built-in recipe: "
                f"{100 * record['test_top1']:.2f} % test top-1; --train-steps N trains one here instead)")
    else:
        mine = f"fine-tunes fgvc_tiny on {dataset} ({train_steps} steps: your model)"
    log(f"demo: {mine}, distils a supernet from it ({distill_steps} steps), profiles {backend} latency on this CPU at "
        f"batch {args.latency_batch_size}, searches under a latency and a MAC budget, exports the pick with "
        "verification, measures it, and compares it with your model and ToMe on it (a search of schedules on your "
        "model's own weights, which `fgvc-kit search` runs beside the supernet's by default, is left out: it would "
        "double the demo's search)")

    data = ["--dataset", dataset]
    if quick and dataset == "cluttered-digits":  # a few hundred images: the tests run every stage in seconds
        data += ["--dataset-option", "train=96", "--dataset-option", "holdout=48", "--dataset-option", "test=48"]

    def once(steps: int) -> List[str]:  # held-out evaluation at the end only (checkpoints still every 100 steps)
        return [] if quick else ["--eval-every", str(steps), "--save-every", str(min(100, steps))]

    # each stage's command line (the values only a stage before it can give are placeholders until it ran): every
    # flag of every stage is checked before the first stage runs (_preflight)
    supernet = os.path.join(d_dist, "best.safetensors")
    table, search_json = os.path.join(d_bench, "latency_table.json"), os.path.join(d_search, "search.json")

    def train_argv() -> List[str]:
        return ["--out", d_train] + data + common + small + once(train_steps) + ["--steps", str(train_steps)]

    def distill_argv() -> List[str]:
        # the search scores the supernet on the test images (with your model beside it): not twice
        return ["--checkpoint", os.path.join(d_train, "best.safetensors"), "--out", d_dist, "--no-test"] + common \
            + small + once(distill_steps) + ["--steps", str(distill_steps)]

    def profile_argv() -> List[str]:
        argv = ["profile", "--checkpoint", supernet, "--out", d_bench, "--latency-batch-size",
                str(args.latency_batch_size), "--backend", backend, "--reducers", "drop,merge", "--quiet"]
        return argv + (["--grid", "5", "--time-budget", "0.05", "--min-repeats", "3"] if quick else PROFILE)

    def search_argv(latency: str, macs: str) -> List[str]:
        # the picks are measured once, by the bench stage on the same target (the report's verdict)
        argv = ["--checkpoint", supernet, "--latency-table", table, "--latency-budget", latency, "--macs-budget", macs,
                "--population", str(4 if quick else args.population),
                "--generations", str(1 if quick else args.generations),
                "--mutations", str(4 if quick else args.population),
                "--crossovers", str(4 if quick else args.population), "--out", d_search,
                "--precisions", "fp32",  # the demo's one table; a user's search measures which precisions pay
                "--no-parent-search"]  # a second evolution, on your model's weights: a user's search runs it
        return argv + (["--subset", "32"] if quick else [])

    def export_argv(label: Optional[str]) -> List[str]:
        argv = ["--checkpoint", supernet, "--format", args.format, "--out", d_export]
        argv += ["--search", search_json, "--budget", label] if label is not None else []
        return argv + (["--verify-images", "32"] if quick else [])

    def bench_argv(label: Optional[str]) -> List[str]:
        # what the demo ships, and the full model, on the search's own target (its table's: backend, batch,
        # threads, precision); the report's verdict is this measurement
        argv = ["--search", search_json, "--out", d_bench, "--quiet"] + (["--budget", label] if label else [])
        return argv + (["--time-budget", "0.05", "--min-repeats", "3"] if quick else [])

    _preflight([("train", train_argv()), ("distill", distill_argv()), ("bench", profile_argv()),
                ("search", search_argv("1ms", "1")), ("export", export_argv("1ms")), ("bench", bench_argv("1ms"))])
    os.makedirs(out, exist_ok=True)

    def train() -> int:
        if shipped:
            return _install_shipped(d_train, record)
        return _command("train")(train_argv() + _resumable(d_train, stages.current[2]))

    stages = _Stages(out, log)
    _stage = stages.run
    _stage("1/7 your model, shipped with fgvc-kit" if shipped else "1/7 train", "train",
           os.path.join(d_train, "results.json"),
           {"steps": "shipped" if shipped else train_steps, "quick": quick, "dataset": dataset}, train,
           files=[os.path.join(d_train, "best.safetensors")])

    def distill() -> int:
        return _command("distill")(distill_argv() + _resumable(d_dist, stages.current[2]))

    _stage("2/7 distill", "distill", os.path.join(d_dist, "results.json"),
           {"steps": distill_steps, "quick": quick, "test": "search"},
           distill, files=[os.path.join(d_dist, "best.safetensors")])

    def profile() -> int:
        return _command("bench")(profile_argv())

    _stage("3/7 latency table on this machine", "profile", table,
           {"batch_size": args.latency_batch_size, "quick": quick, "backend": backend}, profile)

    def search() -> int:
        journal = os.path.join(d_search, "search.journal.jsonl")
        if not stages.current[2] and os.path.isfile(journal):  # another search: its journal is not this one's
            os.remove(journal)
        from .bench import LatencyTable
        from .models import count_macs, load_checkpoint
        from .search import space_of

        model = load_checkpoint(supernet)
        lat = LatencyTable.load(table)
        full_ms, small_ms = lat.predict(model.full_schedule()), lat.predict(space_of(model).smallest())
        full_macs = count_macs(model).total()
        return _command("search")(search_argv(f"{100 * latency_share(args.latency_share, small_ms / full_ms):.3g}%",
                                              f"{0.6 * full_macs:.4g}"))

    from .search import SearchResult

    def searched() -> List[str]:  # the schedule files the later stages read
        return [os.path.join(d_search, b.schedule_file) for b in SearchResult.load(search_json).budgets.values()
                if b.schedule_file]

    _stage("4/7 search under latency and MAC budgets", "search", search_json,
           {"population": args.population, "generations": args.generations,
            "latency_share": args.latency_share, "quick": quick}, search, files=searched)
    result = SearchResult.load(search_json)
    result.check_finished(search_json)
    latency_budget = next((b for b in result.budgets.values() if b.objective == "latency"), None)
    chosen = latency_budget if latency_budget and latency_budget.best else \
        next((b for b in result.budgets.values() if b.best), None)

    def export() -> int:
        return _command("export")(export_argv(chosen.label if chosen is not None else None))

    export_json = os.path.join(d_export, "export.json")
    _stage("5/7 export with verification", "export", export_json, {"format": args.format, "quick": quick}, export,
           files=lambda: _folder_files(d_export))

    def bench() -> int:
        return _command("bench")(bench_argv(chosen.label if chosen is not None else None))

    bench_json = os.path.join(d_bench, "bench.json")
    _stage("6/7 bench on this machine", "bench", bench_json,
           {"batch_size": args.latency_batch_size, "quick": quick, "backend": backend}, bench)

    from .lock import folder_lock
    from .report.budget import build_report

    with folder_lock(d_report, command="fgvc-kit demo (report)"):
        paths = build_report(search_json, d_report, bench_json if _done(bench_json) else None,
                             [export_json] if _done(export_json) else [])
    log(f"[7/7 report] {paths['markdown']}")
    for line in _against_your_model(result):
        log(line)
    log(f"demo finished in {time.perf_counter() - t_start:.0f} s (" + ", ".join(
        f"{k} {'reused' if v is None else f'{v:.0f} s'}" for k, v in stages.times.items()) + ")")
    log(f"report: {paths['html']}")
    return 0


def _against_your_model(result) -> list:
    """The demo's honest summary (``result``: the search's :class:`~tavt_kit.search.SearchResult`): per budget, the
    trained model (the parent), ToMe on it without training, the searched pick and the recommendation, each with
    its paired difference to the parent."""
    parent = result.parent
    if parent is None or parent.test_accuracy is None:
        return ["note: the supernet records no parent model; its picks are compared with its own full schedule"]

    def cell(p) -> str:
        if p is None or p.test_accuracy is None:
            return "nothing meets it"
        v = p.vs_parent
        return f"{100 * p.test_accuracy:.2f} %" + ("" if not v else " ({:+.2f} [{:+.2f}, {:+.2f}])".format(
            100 * v.difference, *(100 * x for x in v.interval)))

    lines = [f"your model (the trained parent): {100 * parent.test_accuracy:.2f} % test top-1; the supernet's "
             f"full schedule {cell(result.full)}"]
    for b in result.budgets.values():
        free, rec = b.training_free, b.recommended
        lines.append(f"  {b.label}: ToMe on your model {cell(free.get('tome_parent'))}; "
                     + (f"searched on your model {cell(free['searched_parent'])}; "
                        if "searched_parent" in free else "")
                     + f"searched (supernet) {cell(b.best)}; recommended: {(rec and rec.family) or 'nothing'}"
                     + _paired_tests(rec))
    return lines


def _paired_tests(rec) -> str:
    """The paired tests behind a recommendation, in a few words: which challenger led what, at what z against the
    z it needed (a lead within noise leaves the holder shipped)."""
    parts = []
    for key, who in (("evidence_parent", "searched on your model"), ("evidence", "the supernet's pick")):
        g = getattr(rec, key) if rec is not None else None
        if g and g.get("lead", 0) > 0:
            z = g.get("z")
            won = z is None or z > g["required_z"]
            parts.append(f"{who} led {g['versus']} {'beyond' if won else 'within'} noise: z = "
                         f"{'inf' if z is None else f'{z:.2f}'} {'>' if won else '<='} {g['required_z']:.2f}")
    return f" ({'; '.join(parts)})" if parts else ""

