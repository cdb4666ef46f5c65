"""What the benchmark scripts share: arguments, seeds, the round-robin timing policy, JSON files, timestamped
logging, fgvc-kit commands run in-process, test-split hits and paired-difference formatting.

The scripts are run as files (``python benchmarks/X.py``): Python puts the script's own folder first on
``sys.path``, so ``import harness`` finds this module with no path manipulation. Only this module and the public
``tavt_kit`` API are imported by a script; no script imports another.
"""
from __future__ import annotations

import json
import math
import random
import time
from typing import Callable, Iterable, List, Sequence

# -- arguments --------------------------------------------------------------------------------------------------


def int_list(text: str) -> List[int]:
    """``"0,1,2"`` -> ``[0, 1, 2]`` (``--seeds``, ``--batches``)."""
    return [int(v) for v in str(text).split(",") if v.strip()]


def float_list(text: str) -> List[float]:
    """``"0.5,0.4"`` -> ``[0.5, 0.4]`` (``--fractions``, ``--budgets``)."""
    return [float(v) for v in str(text).split(",") if v.strip()]


def str_list(text: str) -> List[str]:
    """``"fp32, int8"`` -> ``["fp32", "int8"]``."""
    return [v.strip() for v in str(text).split(",") if v.strip()]


def add_seeds(ap, default: str = "0,1,2") -> None:
    """``--seeds`` as every multi-seed benchmark takes it (comma-separated; read with :func:`int_list`)."""
    ap.add_argument("--seeds", default=default, help=f"comma-separated seeds (default {default})")


def add_out(ap, default: str) -> None:
    """``--out``: the folder a benchmark writes its stages to; a re-run skips what is there."""
    ap.add_argument("--out", default=default, help=f"where every stage writes its files (default {default}); "
                    "a re-run reuses finished stages")


def description(doc: str) -> str:
    """The first paragraph of a script's docstring, for ``argparse``."""
    return (doc or "").strip().split("\n\n")[0]


# -- seeds ------------------------------------------------------------------------------------------------------


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's generators (random weights and inputs of a timing benchmark)."""
    random.seed(seed)
    try:
        import numpy as np

        np.random.seed(seed)
    except ImportError:  # pragma: no cover
        pass
    import torch

    torch.manual_seed(seed)


# -- timing -----------------------------------------------------------------------------------------------------


def timing_policy(smoke: bool = False, budget_s: float = 2.0):
    """The round-robin policy the accuracy-and-latency benchmarks time with: every deployable of a comparison timed
    in turn in one process (:func:`tavt_kit.bench.measure.measure_schedules`), ``budget_s`` seconds each, so drift
    of the machine hits all of them alike; ``smoke``: a few repeats, to check the flow."""
    from tavt_kit.bench import TimingPolicy

    return TimingPolicy(warmup=1, min_repeats=3, budget_s=0.05) if smoke else TimingPolicy(budget_s=budget_s)


def openvino_target(batch: int, threads=None):
    """The CPU target of the latency benchmarks: OpenVINO, fp32 reference, ``batch`` images, ``threads``."""
    from tavt_kit import DeploymentTarget

    return DeploymentTarget(backend="openvino", device="cpu", precision="fp32", batch_size=batch, threads=threads)


def time_round_robin(fns: dict, repeats: int, warmup: int = 1) -> dict:
    """``{name: (median seconds, spread as a share of it)}`` of calls timed in turn within each round, so a
    machine's drift hits every one alike."""
    import statistics

    import torch

    times = {k: [] for k in fns}
    with torch.inference_mode():
        for _ in range(warmup):
            for f in fns.values():
                f()
        for _ in range(repeats):
            for k, f in fns.items():
                t = time.perf_counter()
                f()
                times[k].append(time.perf_counter() - t)
    return {k: (statistics.median(v), (max(v) - min(v)) / statistics.median(v)) for k, v in times.items()}


def median_ms(fn: Callable[[], object], repeats: int, warmup: int = 1) -> float:
    """Median wall time of ``fn()`` in ms over ``repeats`` calls after ``warmup`` (micro-benchmarks)."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    times.sort()
    return times[len(times) // 2]


# -- files ------------------------------------------------------------------------------------------------------


def read_json(path: str):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def write_json(obj, path: str) -> None:
    """Written atomically (a killed run leaves the previous file or none, never half of one)."""
    from tavt_kit.files import write_json as _write

    _write(obj, path)


def write_text(path: str, text: str) -> None:
    from tavt_kit.files import write_text as _write

    _write(path, text)


# -- logging ----------------------------------------------------------------------------------------------------


def logger(prefix: str = "") -> Callable[[str], None]:
    """``say(line)``: prints ``[HH:MM:SS prefix] line`` and flushes (long runs are read from their logs)."""
    def say(line: str) -> None:
        stamp = time.strftime("%H:%M:%S")
        print(f"[{stamp}{' ' + prefix if prefix else ''}] {line}", flush=True)

    return say


# -- fgvc-kit commands ------------------------------------------------------------------------------------------


def command(name: str, argv: Sequence[str], echo: bool = False) -> None:
    """Run ``fgvc-kit name argv`` in this process, as a user runs it; a failure ends the benchmark."""
    from tavt_kit.cli import command_module
    from tavt_kit.cli.common import invoke

    if echo:
        print(f"$ fgvc-kit {name} {' '.join(argv)}", flush=True)
    rc = invoke(command_module(name), name, list(argv))
    if rc:
        raise SystemExit(f"fgvc-kit {name} failed ({rc})")


#: distill options shared by the accuracy benchmarks. Each is the distilled weights themselves; ``default`` is
#: distill's defaults (frozen parent as teacher, full-model KD weight 3, lr 2e-4 without weight decay, the weights
#: mixed back 0.7 / 0.3 with the parent). ``old``: the demo's recipe before ``distill_recipe.py``.
DISTILL_VARIANTS = {
    "old": ["--teacher", "full", "--full-label-weight", "1", "--full-kd-weight", "0", "--lr", "5e-4",
            "--weight-decay", "0.05"],
    "parent-ce": ["--teacher", "parent", "--full-label-weight", "1", "--full-kd-weight", "0", "--lr", "5e-4",
                  "--weight-decay", "0.05"],
    "parent-kd": ["--teacher", "parent", "--full-label-weight", "0", "--full-kd-weight", "1", "--lr", "5e-4",
                  "--weight-decay", "0.05"],
    "lr1e-4": ["--teacher", "full", "--full-label-weight", "1", "--full-kd-weight", "0", "--lr", "1e-4",
               "--weight-decay", "0"],
    "parent-kd-lr1e-4": ["--teacher", "parent", "--full-label-weight", "0", "--full-kd-weight", "1", "--lr", "1e-4",
                         "--weight-decay", "0"],
    "parent-ce+kd-lr1e-4": ["--teacher", "parent", "--full-label-weight", "1", "--full-kd-weight", "1", "--lr",
                            "1e-4", "--weight-decay", "0"],
    # the full model's pull toward the parent as strong as the sub-networks' losses together (3 = sandwich + 1)
    "parent-kd3": ["--teacher", "parent", "--full-label-weight", "0", "--full-kd-weight", "3", "--lr", "5e-4",
                   "--weight-decay", "0"],
    "parent-kd3-lr2e-4": ["--teacher", "parent", "--full-label-weight", "0", "--full-kd-weight", "3", "--lr",
                          "2e-4", "--weight-decay", "0"],
    "parent-kd10-lr2e-4": ["--teacher", "parent", "--full-label-weight", "0", "--full-kd-weight", "10", "--lr",
                           "2e-4", "--weight-decay", "0"],
}
RECIPES = {**DISTILL_VARIANTS, "default": DISTILL_VARIANTS["parent-kd3-lr2e-4"] + ["--parent-mix", "0.7"]}


# -- scoring ----------------------------------------------------------------------------------------------------


def test_scores(model, scheds, images, labels, batch: int = 256):
    """Per-image scores of ``model`` at each schedule of ``scheds`` on ``images`` (the model's normalisation)."""
    import torch

    from tavt_kit.data import Normalize
    from tavt_kit.search.evaluate import CandidateEvaluator

    ev = CandidateEvaluator(model, images, labels, batch, transform=Normalize.from_model(model))
    with torch.inference_mode():
        return ev.scores(scheds, per_image=True)


def test_hits(model, schedule, test) -> List[int]:
    """Per-image hits of ``model`` at ``schedule`` on a split (``test.images``, ``test.labels``)."""
    return test_scores(model, [schedule], test.images, test.labels, batch=100).hits[0].tolist()


def parent_at(parent, data, precision: str, seed: int) -> List[int]:
    """Per-image test hits of your model at ``precision`` on the deployed runtime (OpenVINO; int8: NNCF PTQ on 300
    training images drawn with ``seed``)."""
    from tavt_kit.data import Normalize
    from tavt_kit.search.pairs import DeployedScorer

    scorer = DeployedScorer(parent, Normalize.from_model(parent), lambda: data.calibration(300, seed), 100)
    try:
        sc, _ = scorer.scores(parent.full_schedule(), precision, data.test.images, data.test.labels)
        return sc.hits[0].tolist()
    finally:
        scorer.close()


def schedule_of(model, d: dict):
    """The model's schedule for a result entry (``counts``, ``reducers``) of ``search.json`` or a benchmark file."""
    import tavt_kit

    return model.make_schedule(tavt_kit.TokenSchedule(tuple(d["counts"]), model.num_patches,
                                                      reducers=d.get("reducers")))


def one_generation(space, n: int):
    """Up to ``n`` distinct schedules of one TAVT generation: a random population of 20, then 30 mutants and 30
    crossovers of it (seeded). What the search evaluator's speed is timed on."""
    from tavt_kit.search.evolution import EvolutionSearch, EvolutionSettings, gene_of, schedule_of as of_gene

    evo = EvolutionSearch(space, lambda s: [0.0] * len(s), lambda s: 0, EvolutionSettings(seed=0),
                          log=lambda line: None)
    rng = random.Random(0)
    pop = [gene_of(space.sample(rng)) for _ in range(20)]  # genes: (counts, reducers)
    genes = list(dict.fromkeys(pop + [evo.mutate(rng.choice(pop)) for _ in range(30)]
                               + [evo.crossover(*rng.sample(pop, 2)) for _ in range(30)]))[:n]
    return [of_gene(g, space.num_patches) for g in genes]


# -- paired differences -----------------------------------------------------------------------------------------


def combine(vs_list: Iterable[dict]) -> tuple:
    """Mean of per-seed paired differences (``{"difference", "interval"}``), with the interval of the mean
    (independent seeds): ``(mean, low, high)``."""
    vs_list = list(vs_list)
    ds = [v["difference"] for v in vs_list]
    halves = [(v["interval"][1] - v["interval"][0]) / 2 for v in vs_list]
    mean = sum(ds) / len(ds)
    half = math.sqrt(sum(h * h for h in halves)) / len(ds)
    return mean, mean - half, mean + half


def fmt_vs(v, empty: str = "–") -> str:
    """A paired difference in points: ``+0.12 [-0.30, +0.54]``; ``empty`` where there is none."""
    if not v:
        return empty
    return "{:+.2f} [{:+.2f}, {:+.2f}]".format(100 * v["difference"], *(100 * x for x in v["interval"]))


def fmt_mean(vs: Iterable[dict]) -> str:
    """The mean over seeds of paired differences, in points, with the interval of the mean."""
    return "{:+.2f} [{:+.2f}, {:+.2f}]".format(*(100 * x for x in combine(vs)))


def pct(x) -> str:
    """A share as a percentage with two decimals; ``–`` for none."""
    return "–" if x is None else f"{100 * x:.2f}"
