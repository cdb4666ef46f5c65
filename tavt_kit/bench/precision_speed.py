"""Which lower precisions run a model faster than fp32 on the target, decided by timing them there.

OpenVINO's declared capabilities say what a CPU *can* run, not what pays: on an AVX2-only EPYC it declares
INT8, yet the demo model ran 0.66x the speed of f32 at int8 (``docs/decisions/2026-11-28-precisions-auto.md``).
:func:`measure_precision_speed` therefore times the model (its full schedule) at fp32 and at every candidate
precision round-robin in one process (:func:`~tavt_kit.bench.measure_schedules`: int8 is the export quantised
with NNCF on random inputs, time only), pairs each with fp32 rotation by rotation
(:func:`~tavt_kit.bench.paired_ratio`) and keeps a precision only when it is measurably faster
(:func:`judge`, the rule):

* its median latency ratio to fp32 is at most :data:`KEEP_AT_MOST` (0.95: a gain worth a search of its own), and
* the top of that ratio's 95 % interval is under 1 (the gain did not come and go while they were timed);
* a float precision (bf16, fp16) is left out where int8 is kept and runs at most :data:`DOMINATED_AT` (0.8) of its
  latency, interval against interval: int8 is then faster at every schedule, and its export holds accuracy
  within half a point (NNCF accuracy control); a search of it would cost a latency table, an evolution and
  timings for an option that rarely ships (``docs/decisions/2026-11-29-precisions-auto-dominated.md``).
  Asked for by name (``precisions=fp32,bf16,int8``), it is searched.

A precision that cannot run here is skipped untimed, with why (no native bf16/fp16 on the device, where
OpenVINO would quietly run f32 under the lower name; NNCF missing for int8; a runtime other than OpenVINO).
The timing is bounded: :data:`QUICK_POLICY`'s ``budget_s`` per model timed, after one export and one
quantisation.
"""
from __future__ import annotations

import importlib.util
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, Mapping, Optional, Sequence, Tuple

from ..errors import TavtKitError
from ..target import DeploymentTarget, Precision
from .ratio import LatencyRatio, paired_ratio
from .timing import TimingPolicy

#: a lower precision is kept when its median latency is at most this share of fp32's ...
KEEP_AT_MOST = 0.95
#: ... and the top of the ratio's 95 % interval is under this
INTERVAL_UNDER = 1.0
#: a float precision is left out where int8's latency is at most this share of its own (int8's interval top
#: against the float precision's interval bottom)
DOMINATED_AT = 0.8
#: the lower precisions tried, in the order a result names them
LOWER = (Precision.BF16, Precision.FP16, Precision.INT8)
#: the timing: about ``budget_s`` seconds per precision timed, in short rotations so that the ratio has rounds
QUICK_POLICY = dict(warmup=3, warmup_s=0.5, min_repeats=5, max_repeats=100000, budget_s=1.0, rel_ci=0.01,
                    chunk_s=0.02, min_rounds=12)
_CAPABILITY = {Precision.BF16: "BF16", Precision.FP16: "FP16"}


@dataclass(frozen=True)
class PrecisionSpeed:
    """What :func:`measure_precision_speed` found: ``kept`` (fp32 first, then the precisions measurably faster),
    ``ratios`` (each precision timed: its latency as a share of fp32's, :class:`LatencyRatio`), ``skipped``
    ({precision: why}, timed or not), the ``target`` timed on (its batch size and threads) and ``seconds``
    spent (exports and quantisation included)."""

    kept: Tuple[str, ...]
    ratios: Dict[str, LatencyRatio] = field(default_factory=dict)
    skipped: Dict[str, str] = field(default_factory=dict)
    target: Optional[DeploymentTarget] = None
    seconds: float = 0.0

    def line(self, prefix: str = "precisions auto") -> str:
        """One line: ``precisions auto: fp32, int8 (int8 0.41x of fp32 measured); skipped bf16 (1.02x of fp32:
        not faster here)``."""
        timed = [f"{p} {self.ratios[p].ratio:.2f}x of fp32" for p in self.kept if p in self.ratios]
        where = ""
        if self.target is not None:
            t = self.target
            where = f" on {t.backend} {t.device}, batch {t.batch_size}" + (
                f", {t.threads} thread{'s' if t.threads != 1 else ''}" if t.threads else "")
        text = f"{prefix}: {', '.join(self.kept)}"
        if timed:
            text += f" ({'; '.join(timed)} measured{where})"
        if self.skipped:
            text += "; skipped " + ", ".join(f"{p} ({why})" for p, why in self.skipped.items())
        return text

    def to_dict(self) -> dict:
        return {"kept": list(self.kept), "ratios": {p: r.to_dict() for p, r in self.ratios.items()},
                "skipped": dict(self.skipped), "rule": rule_text(),
                "target": self.target.to_dict() if self.target is not None else None, "seconds": self.seconds}


def rule_text() -> str:
    return (f"kept when its median latency ratio to fp32 (paired per rotation, timed round-robin) is at most "
            f"{KEEP_AT_MOST} and the top of its 95 % interval is under {INTERVAL_UNDER}; bf16 / fp16 left out where "
            f"int8 is kept at most {DOMINATED_AT} of their latency")


def judge(ratio: LatencyRatio, keep_at_most: float = KEEP_AT_MOST) -> Optional[str]:
    """None when a precision whose latency is ``ratio`` of fp32's is kept (the rule: module docstring); else why
    it is skipped."""
    r = ratio.ratio
    if r > keep_at_most:
        return f"{r:.2f}x of fp32: not faster here"
    if ratio.high >= INTERVAL_UNDER:
        return f"{r:.2f}x of fp32, but its 95 % interval reaches {ratio.high:.2f}: not measurably faster"
    return None


def dominated(ratio: LatencyRatio, int8: LatencyRatio) -> Optional[str]:
    """Why a float precision whose latency is ``ratio`` of fp32's is left out beside ``int8`` (None: kept)."""
    if int8.high <= DOMINATED_AT * ratio.low:
        return (f"{ratio.ratio:.2f}x of fp32, int8 {int8.ratio / ratio.ratio:.2f}x of it: int8 is faster at every "
                f"schedule and its export holds accuracy; name it in precisions to search it")
    return None


def decide(ratios: Mapping[str, LatencyRatio], unavailable: Optional[Mapping[str, str]] = None,
           target: Optional[DeploymentTarget] = None, seconds: float = 0.0,
           keep_at_most: float = KEEP_AT_MOST) -> PrecisionSpeed:
    """The :class:`PrecisionSpeed` of measured ``ratios`` (precision -> its latency / fp32's) and the precisions
    ``unavailable`` here ({precision: why}, not timed)."""
    kept, skipped = [Precision.FP32], dict(unavailable or {})
    for p, ratio in ratios.items():
        why = judge(ratio, keep_at_most)
        if why is None:
            kept.append(p)
        else:
            skipped[p] = why
    for p in [p for p in kept if p in (Precision.BF16, Precision.FP16) and Precision.INT8 in kept]:
        why = dominated(ratios[p], ratios[Precision.INT8])
        if why:
            kept.remove(p)
            skipped[p] = why
    order = {p: i for i, p in enumerate(Precision.ALL)}
    return PrecisionSpeed(tuple(sorted(kept, key=order.get)), dict(ratios),
                          dict(sorted(skipped.items(), key=lambda kv: order.get(kv[0], 99))), target, seconds)


def runnable_precisions(target: DeploymentTarget, precisions: Sequence[str] = LOWER,
                        capabilities: Optional[Callable[[str], Sequence[str]]] = None
                        ) -> Tuple[Tuple[str, ...], Dict[str, str]]:
    """Of the lower ``precisions``, those ``target`` can time here, and why each other cannot ({precision: why}):
    bf16/fp16 need the device's native support (OpenVINO would quietly run f32 under the lower name), int8 needs
    NNCF, all of them OpenVINO. ``capabilities``: the device's list (default OpenVINO's)."""
    lower = [p for p in dict.fromkeys(Precision.parse(q, "precisions") for q in precisions) if p != Precision.FP32]
    if target.backend != "openvino":
        return (), {p: f"{target.backend} deploys fp32 only" for p in lower}
    have: Optional[set] = None
    if any(p in _CAPABILITY for p in lower):
        if capabilities is None:
            from ..export.openvino import device_capabilities as capabilities
        try:
            have = {str(c).upper() for c in capabilities(target.device)}
        except TavtKitError as e:
            return (), {p: str(e) for p in lower}
    out, why = [], {}
    for p in lower:
        if p in _CAPABILITY and _CAPABILITY[p] not in have:
            why[p] = f"no native {p} on this {target.device.upper()}: OpenVINO would run f32"
        elif p == Precision.INT8 and not _have_nncf():
            why[p] = "NNCF is not installed to quantise: pip install nncf"
        else:
            out.append(p)
    return tuple(out), why


def _have_nncf() -> bool:
    return importlib.util.find_spec("nncf") is not None


Timings = Callable[..., Mapping[str, Tuple[object, dict]]]


def measure_precision_speed(model, target: DeploymentTarget, precisions: Sequence[str] = LOWER, *,
                            policy: Optional[TimingPolicy] = None, timings: Optional[Timings] = None,
                            capabilities: Optional[Callable[[str], Sequence[str]]] = None,
                            keep_at_most: float = KEEP_AT_MOST,
                            progress: Optional[Callable[[str], None]] = None) -> PrecisionSpeed:
    """Time ``model`` (its full schedule) at fp32 and at each of ``precisions`` it can run on ``target``
    (backend openvino; its device, batch size and threads; its precision is ignored) round-robin, and keep
    those measurably faster than fp32 (:func:`judge`). ``policy``: default :data:`QUICK_POLICY` (bounded: about
    ``budget_s`` seconds per precision timed). ``timings``: what times them, called as
    ``timings(model, items, target=, policy=, progress=)`` (default :func:`~tavt_kit.bench.measure_schedules`;
    tests inject timings). A timing that fails skips its precisions with the error's line, fp32 kept."""
    from ..schedules.schedule import TokenSchedule

    start = time.monotonic()
    target = target.with_(precision=Precision.FP32)
    runnable, skipped = runnable_precisions(target, precisions, capabilities)
    if not runnable:
        return decide({}, skipped, target, time.monotonic() - start, keep_at_most)
    if timings is None:
        from .backends import with_threads
        from .measure import measure_schedules as timings

        target = with_threads(target)
    full = TokenSchedule.full(model.depth, model.num_patches)

    def ratios_of(lower: Sequence[str]) -> Dict[str, LatencyRatio]:
        items = {p: (full, p) for p in (Precision.FP32,) + tuple(lower)}
        measured = timings(model, items, target=target, policy=policy or TimingPolicy(**QUICK_POLICY),
                           progress=progress)
        return {p: paired_ratio(measured[p][0], measured[Precision.FP32][0]) for p in lower}

    try:
        ratios = ratios_of(runnable)
    except TavtKitError as e:
        if len(runnable) == 1:
            return decide({}, {**skipped, runnable[0]: f"not timed: {_first_line(e)}"}, target,
                          time.monotonic() - start, keep_at_most)
        # one precision that cannot run (a bf16 the CPU declares but cannot compile) does not take the others
        # with it: each is timed beside fp32 on its own
        ratios, skipped = {}, dict(skipped)
        for p in runnable:
            try:
                ratios.update(ratios_of((p,)))
            except TavtKitError as e:
                skipped[p] = f"not timed: {_first_line(e)}"
    return decide(ratios, skipped, target, time.monotonic() - start, keep_at_most)


def _first_line(e: Exception) -> str:
    return str(e).splitlines()[0] if str(e) else type(e).__name__
