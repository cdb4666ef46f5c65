"""Adaptive, round-robin latency measurement and peak-memory probes.

Repeat policy (:class:`TimingPolicy`): every callable is first run ``warmup``
times; then the callables are run *round-robin* (a chunk of calls each per
round) so that a machine whose speed drifts (other jobs, thermal limits)
affects all of them alike and their *ratios* stay right. A callable stops
being timed once it has ``min_repeats`` samples and the distribution-free 95 %
confidence interval of its median is within ``rel_ci`` of the median, or when
it reaches ``max_repeats``; the whole run stops at ``budget_s`` seconds per
callable (``min_repeats`` are always taken). Each result keeps its samples'
percentiles and spread and says when the figure is noisy.

A :class:`TimeCap` (``TimingPolicy.cap``) bounds the wall time of several timings together (a latency table's
parts and whole models): each gets a share of what is left, in proportion to its callables; once a timing's
share is spent every callable stops as soon as it has ``min_repeats`` (warm-up shrinks to one call), so a
capped run ends within its cap plus what ``min_repeats`` calls cost, under any load. What is not converged by
then is stated (the relative half-width of each median's 95 % interval), not waited for.
"""
from __future__ import annotations

import math
import statistics
import sys
import time
from dataclasses import dataclass, field, fields
from typing import Callable, Dict, Hashable, List, Mapping, Optional, Tuple

from ..errors import ConfigError

#: seconds between two progress lines of a long timing
PROGRESS_EVERY_S = 10.0


@dataclass
class TimingPolicy:
    """How long and how often to measure.

    Args:
        warmup: untimed calls before timing (JIT compilation, allocator and cache warm-up); fewer
            when they already took ``warmup_s`` seconds (one call at least).
        warmup_s: warm-up time after which no more warm-up calls are made.
        min_repeats: timed calls always taken.
        max_repeats: timed calls at most.
        budget_s: time budget per measured callable (seconds of timed calls, after warm-up).
        rel_ci: stop once the 95 % confidence interval of the median is within ± this fraction.
        chunk_s: a round runs each callable for about this long (several calls when one is fast).
        noisy_ci: flag a result as noisy when its median's 95 % CI is wider than ± this fraction.
        noisy_spread: ... or when (p90 - p10) / p50 exceeds this.
        min_rounds: rotations always run (within ``budget_s``), however soon the medians converge: the
            rounds are what pairs two callables' samples, so a ratio's interval
            (:func:`~tavt_kit.bench.ratio.paired_ratio`) needs enough of them.
        cap: a :class:`TimeCap` shared by several timings (a whole run's time limit); not part of
            :meth:`to_dict` (its limit is recorded where the run records its time).
    """

    warmup: int = 3
    warmup_s: float = 1.0
    min_repeats: int = 7
    max_repeats: int = 1000
    budget_s: float = 3.0
    rel_ci: float = 0.01
    chunk_s: float = 0.05
    noisy_ci: float = 0.03
    noisy_spread: float = 0.25
    min_rounds: int = 1
    cap: Optional["TimeCap"] = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.min_rounds < 1:
            raise ConfigError(f"timing policy needs min_rounds >= 1, got min_rounds={self.min_rounds}")
        if self.warmup < 0 or self.min_repeats < 1 or self.max_repeats < self.min_repeats:
            raise ConfigError(f"timing policy needs warmup >= 0 and 1 <= min_repeats <= max_repeats, got "
                              f"warmup={self.warmup}, min_repeats={self.min_repeats}, max_repeats={self.max_repeats}")
        if self.budget_s <= 0 or self.rel_ci <= 0:
            raise ConfigError(f"timing policy needs budget_s > 0 and rel_ci > 0, got budget_s={self.budget_s}, "
                              f"rel_ci={self.rel_ci}")

    def to_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "cap"}


class TimeCap:
    """Wall seconds shared by several round-robin timings (:func:`measure_round_robin` with
    ``TimingPolicy(cap=...)``): each timing of ``n`` callables may take ``n / callables`` of what is left, so
    the run's timings together end at ``limit_s`` (plus what ``min_repeats`` calls cost past it). ``limit_s``
    None: no limit (the per-callable ``budget_s`` only).

    Args:
        limit_s: seconds for every timing of the run together (warm-up and timed calls).
        callables: how many callables the run's timings will time in all (shares follow them).
        shown_limit_s, spent_before: what progress lines call the cap and the time already spent against
            it, when this cap is one stage of a larger one.
    Records each timed callable's relative noise (:attr:`noise`, ``{key: ci95_rel}``) and whether the cap
    cut a timing short (:attr:`reached`)."""

    def __init__(self, limit_s: Optional[float], callables: int, *, shown_limit_s: Optional[float] = None,
                 spent_before: float = 0.0):
        self.limit_s = limit_s
        self.left = max(1, int(callables))
        self.spent = 0.0
        self.shown_limit_s = limit_s if shown_limit_s is None else shown_limit_s
        self.spent_before = spent_before
        self.reached = False
        self.noise: Dict[Hashable, float] = {}

    def share(self, n: int) -> float:
        """Seconds the next timing of ``n`` callables may take (inf without a limit)."""
        if self.limit_s is None:
            return math.inf
        return max(0.0, self.limit_s - self.spent) * min(1.0, n / max(self.left, n))

    def spend(self, seconds: float, stats: Mapping[Hashable, "TimingStats"], cut: bool) -> None:
        """A timing of ``stats`` took ``seconds``; ``cut``: its share ran out before it was done."""
        self.spent += seconds
        self.left = max(1, self.left - len(stats))
        self.reached = self.reached or cut
        for k, s in stats.items():  # a callable timed in several timings (a reference block): its worst
            self.noise[k] = max(s.ci95_rel, self.noise.get(k, 0.0))

    def progress(self, now_spent: float) -> str:
        """``41 s of the 60 s limit``: what the whole run has spent, ``now_spent`` into the current timing."""
        total = self.spent_before + self.spent + now_spent
        if self.shown_limit_s is None:
            return f"{total:.0f} s (no limit)"
        return f"{total:.0f} s of the {self.shown_limit_s:.0f} s limit"


def median_ci(sorted_samples: List[float], z: float = 1.96) -> tuple:
    """Distribution-free confidence interval of the median (order statistics, normal approximation)."""
    n = len(sorted_samples)
    if n < 3:
        return sorted_samples[0], sorted_samples[-1]
    half = z * math.sqrt(n) / 2
    lo = max(0, int(math.floor(n / 2 - half)))
    hi = min(n - 1, int(math.ceil(n / 2 + half)) - 1)
    return sorted_samples[lo], sorted_samples[hi]


def percentile(sorted_samples: List[float], q: float) -> float:
    """Linear-interpolated percentile (numpy's default) of already sorted samples."""
    n = len(sorted_samples)
    if n == 1:
        return sorted_samples[0]
    pos = (n - 1) * q / 100.0
    lo = int(math.floor(pos))
    hi = min(lo + 1, n - 1)
    return sorted_samples[lo] + (sorted_samples[hi] - sorted_samples[lo]) * (pos - lo)


@dataclass
class TimingStats:
    """Latency samples of one callable (seconds) and their summary."""

    samples: List[float]
    warmup: int = 0
    rounds: int = 0
    converged: bool = False
    noisy_ci: float = 0.03
    noisy_spread: float = 0.25
    #: the round-robin round each sample was taken in (0-based), parallel to ``samples``; what pairs two
    #: callables' samples taken side by side (:func:`~tavt_kit.bench.ratio.paired_ratio`). None: not recorded.
    rounds_of: Optional[List[int]] = None

    def __post_init__(self) -> None:
        if not self.samples:
            raise ValueError("TimingStats needs at least one sample")
        if self.rounds_of is not None and len(self.rounds_of) != len(self.samples):
            raise ValueError(f"TimingStats: {len(self.rounds_of)} round indices for {len(self.samples)} samples")
        self._sorted = sorted(self.samples)
        self._by_round: Optional[Dict[int, float]] = None

    def by_round(self) -> Dict[int, float]:
        """``{round: median of this callable's samples in that round}`` (empty when rounds were not recorded);
        computed once (one callable, often your model, is paired with every other)."""
        if self._by_round is None:
            per: Dict[int, List[float]] = {}
            for r, x in zip(self.rounds_of or (), self.samples):
                per.setdefault(r, []).append(x)
            self._by_round = {r: statistics.median(xs) for r, xs in per.items()}
        return self._by_round

    @property
    def n(self) -> int:
        return len(self.samples)

    def pct(self, q: float) -> float:
        return percentile(self._sorted, q)

    @property
    def p50(self) -> float:
        return self.pct(50)

    @property
    def p90(self) -> float:
        return self.pct(90)

    @property
    def p99(self) -> float:
        return self.pct(99)

    @property
    def mean(self) -> float:
        return statistics.fmean(self.samples)

    @property
    def ci95(self) -> tuple:
        return median_ci(self._sorted)

    @property
    def ci95_rel(self) -> float:
        """Half-width of the median's 95 % confidence interval, relative to the median."""
        lo, hi = self.ci95
        return (hi - lo) / 2 / self.p50 if self.p50 > 0 else float("inf")

    @property
    def spread_rel(self) -> float:
        """(p90 - p10) / p50: how much single runs vary."""
        return (self.pct(90) - self.pct(10)) / self.p50 if self.p50 > 0 else float("inf")

    def warnings(self) -> List[str]:
        out = []
        if self.ci95_rel > self.noisy_ci:
            out.append(f"noisy: the median is only known to ±{100 * self.ci95_rel:.1f}% (95% CI, {self.n} runs)")
        if self.spread_rel > self.noisy_spread:
            out.append(f"noisy: single runs vary by {100 * self.spread_rel:.0f}% of the median (p10-p90); "
                       "is the machine busy?")
        return out

    @property
    def noisy(self) -> bool:
        return bool(self.warnings())

    def to_dict(self, unit: float = 1e3, keep_samples: bool = True) -> dict:
        """Summary in milliseconds (``unit`` = 1e3)."""
        lo, hi = self.ci95
        d = {
            "p50": self.p50 * unit, "p90": self.p90 * unit, "p99": self.p99 * unit,
            "mean": self.mean * unit, "min": self._sorted[0] * unit, "max": self._sorted[-1] * unit,
            "std": (statistics.stdev(self.samples) if self.n > 1 else 0.0) * unit,
            "ci95": [lo * unit, hi * unit], "ci95_rel": self.ci95_rel, "spread_rel": self.spread_rel,
            "repeats": self.n, "warmup": self.warmup, "converged": self.converged,
        }
        if keep_samples:
            d["samples"] = [s * unit for s in self.samples]
            if self.rounds_of is not None:
                d["rounds_of"] = list(self.rounds_of)
        return d


def measure_round_robin(
    fns: Mapping[Hashable, Callable[[], object]],
    policy: Optional[TimingPolicy] = None,
    timer: Optional[Mapping[Hashable, Callable[[], float]]] = None,
    on_warmup: Optional[Callable[[Hashable, Callable[[], None]], None]] = None,
    progress: Optional[Callable[[str], None]] = None,
) -> Dict[Hashable, TimingStats]:
    """Time several callables round-robin under ``policy``; returns their :class:`TimingStats`.

    Args:
        fns: key -> callable running one inference (already synchronised, or see ``timer``).
        timer: key -> callable that runs one inference and returns its duration in seconds
            (CUDA events); default: ``time.perf_counter`` around ``fns[key]``.
        on_warmup: called as ``on_warmup(key, run_warmup)`` so that a caller can wrap the
            warm-up calls (peak-memory probes); it must call ``run_warmup()``.
    """
    policy = policy or TimingPolicy()
    keys = list(fns)
    perf = time.perf_counter

    def timed(key) -> float:
        if timer is not None and key in timer:
            return timer[key]()
        f = fns[key]
        t = perf()
        f()
        return perf() - t

    cap = policy.cap
    t0 = perf()
    # the wall time this timing may take: the per-callable budget, and its share of a run's cap
    share = cap.share(len(keys)) if cap is not None else math.inf
    limit = min(share, policy.budget_s * len(keys))
    estimate, warmed = _warm_up(keys, timed, policy, on_warmup, t0 + share)
    samples: Dict[Hashable, List[float]] = {k: [] for k in keys}
    rounds_of: Dict[Hashable, List[int]] = {k: [] for k in keys}
    # every callable stays in the rotation until all are done (converged, or the budget is spent), so
    # that all medians come from the same stretch of time; only max_repeats retires one early
    active = list(keys)
    converged = {k: False for k in keys}
    rounds = 0
    start = perf()
    deadline, cut_at = start + policy.budget_s * len(keys), t0 + share
    last_report = start
    cut = False
    while active:
        rounds += 1
        for key in list(active):
            s = samples[key]
            # past the cap: only the calls still missing to min_repeats (the loop then ends this round)
            chunk = max(0, policy.min_repeats - len(s)) if cut else \
                max(1, min(int(policy.chunk_s / estimate[key]), policy.max_repeats - len(s)))
            for _ in range(chunk):
                s.append(timed(key))
            if chunk:
                rounds_of[key].extend([rounds - 1] * chunk)
                estimate[key] = statistics.median(s[-chunk:])
            if len(s) >= policy.max_repeats:
                active.remove(key)
            now = perf()
            cut = cut or now > cut_at
            if progress is not None and now - last_report > PROGRESS_EVERY_S:  # within a round: rounds can be long
                last_report = now
                progress("timing: " + (cap.progress(now - t0) if cap is not None else
                                       f"{now - t0:.0f} s of at most {limit:.0f} s") + f" ({len(keys)} round-robin)")
        enough = _update_converged(samples, converged, active, policy) and rounds >= policy.min_rounds
        full = all(len(samples[k]) >= policy.min_repeats for k in keys)
        if enough or (full and (perf() > deadline or cut)):
            break
    stats = {k: TimingStats(samples[k], warmup=warmed[k], rounds=rounds, converged=converged[k],
                            noisy_ci=policy.noisy_ci, noisy_spread=policy.noisy_spread, rounds_of=rounds_of[k])
             for k in keys}
    if cap is not None:
        cap.spend(perf() - t0, stats, cut and not enough)
    return stats


def _warm_up(keys: List[Hashable], timed: Callable[[Hashable], float], policy: TimingPolicy,
             on_warmup: Optional[Callable[[Hashable, Callable[[], None]], None]], until: float = math.inf
             ) -> Tuple[Dict[Hashable, float], Dict[Hashable, int]]:
    """Runs each callable's untimed warm-up calls (one only once ``time.perf_counter()`` passes ``until``, the
    end of a capped timing's share); returns (seconds of its last call, warm-up calls) by key."""
    estimate: Dict[Hashable, float] = {}
    warmed: Dict[Hashable, int] = {}
    for key in keys:
        def run_warmup(key=key):
            last, spent, n = None, 0.0, 0
            while n < max(1, policy.warmup) and (n == 0 or (spent < policy.warmup_s
                                                            and time.perf_counter() < until)):
                last = timed(key)
                spent += last
                n += 1
            warmed[key] = n
            estimate[key] = max(last, 1e-7)
        if on_warmup is not None:
            on_warmup(key, run_warmup)
        else:
            run_warmup()
    return estimate, warmed


def _update_converged(samples: Mapping[Hashable, List[float]], converged: Dict[Hashable, bool],
                      active: List[Hashable], policy: TimingPolicy) -> bool:
    """Marks each callable's median as known to ``rel_ci`` or not; returns whether all are converged or retired."""
    enough = True
    for key in samples:
        s = samples[key]
        if len(s) < policy.min_repeats:
            enough = converged[key] = False
            continue
        srt = sorted(s)
        med = srt[len(srt) // 2]
        lo, hi = median_ci(srt)
        converged[key] = med > 0 and (hi - lo) / 2 / med <= policy.rel_ci
        if not converged[key] and key in active:
            enough = False
    return enough


# --------------------------------------------------------------------------- memory
def _proc_status() -> Dict[str, int]:
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(("VmRSS:", "VmHWM:")):
                k, v = line.split(":", 1)
                out[k] = int(v.split()[0]) * 1024
    return out


def _can_reset_hwm() -> bool:
    if not sys.platform.startswith("linux"):
        return False
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return "VmHWM" in _proc_status()
    except OSError:
        return False


def current_rss() -> Optional[int]:
    """Resident set size of this process in bytes (None when it cannot be read)."""
    try:
        return _proc_status()["VmRSS"]
    except (OSError, KeyError):
        pass
    try:
        import psutil

        return int(psutil.Process().memory_info().rss)
    except Exception:
        return None


class MemoryProbe:
    """Peak memory while a block of code runs.

    CPU: process RSS. On Linux the kernel's high-water mark (VmHWM) is reset
    through ``/proc/self/clear_refs`` before the block and read after it (exact
    peak, no sampling); elsewhere a thread samples RSS with psutil every
    millisecond. ``delta`` is the peak minus the RSS before the block: what the
    inference allocated beyond what the process already held (memory that an
    earlier measurement in the same process left cached is not counted again).
    CUDA: ``torch.cuda.max_memory_allocated`` minus the memory allocated before.
    """

    def __init__(self, device: str = "cpu"):
        self.device = device
        self.method: Optional[str] = None
        self.peak: Optional[int] = None
        self.before: Optional[int] = None
        self._thread = None

    def __enter__(self) -> "MemoryProbe":
        if self.device.startswith("cuda"):
            import torch

            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.before = int(torch.cuda.memory_allocated())
            self.method = "torch.cuda.max_memory_allocated"
            return self
        self.before = current_rss()
        if _can_reset_hwm():
            self.method = "rss-hwm"  # /proc/self/status VmHWM after clear_refs
            return self
        try:
            import threading

            import psutil
        except ImportError:
            self.method = None
            return self
        proc = psutil.Process()
        self.method = "rss-sampled"
        self._stop = False
        self.peak = self.before

        def sample():
            while not self._stop:
                try:
                    self.peak = max(self.peak or 0, proc.memory_info().rss)
                except Exception:
                    return
                time.sleep(0.001)

        self._thread = threading.Thread(target=sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        if self.method == "torch.cuda.max_memory_allocated":
            import torch

            torch.cuda.synchronize()
            self.peak = int(torch.cuda.max_memory_allocated())
        elif self.method == "rss-hwm":
            self.peak = _proc_status().get("VmHWM")
        elif self._thread is not None:
            self._stop = True
            self._thread.join()
            rss = current_rss()
            if rss is not None:
                self.peak = max(self.peak or 0, rss)

    def to_dict(self) -> dict:
        mb = 1024.0 * 1024.0
        if self.method is None or self.peak is None:
            return {"method": None, "peak_mb": None, "delta_mb": None}
        return {"method": self.method, "peak_mb": self.peak / mb,
                "delta_mb": max(0, self.peak - (self.before or 0)) / mb}


