"""Which precisions a search pairs with its schedules: a list the caller gives, or ``"auto"``, those measured faster here.

A latency budget is met by the cheapest deployable that keeps the accuracy, and on a CPU with int8 dot
products (VNNI, AMX) or native bf16 your model at a lower precision is often faster than any token schedule
at fp32 while it loses nothing -- but not everywhere: on an AVX2-only CPU OpenVINO declares INT8, yet int8 ran
0.66x the speed of f32. ``"auto"`` (the default of ``fgvc-kit search`` under a latency budget) therefore times
the model at each lower precision beside fp32 on the target
(:func:`~tavt_kit.bench.precision_speed.measure_precision_speed`) and searches fp32 and those measurably faster,
saying in one line which it kept and which it skipped and why:

* fp32 always (the comparison every budget reports);
* on OpenVINO: bf16 and fp16 where the device runs them natively, int8 where NNCF is installed, each kept only
  when the rule of :mod:`~tavt_kit.bench.precision_speed` finds it faster;
* on other backends: fp32 only (their lower precisions are not deployed by ``export``);
* with latency tables made on another machine (the target is elsewhere, nothing can be timed here): the
  precisions of the tables given.

The precisions chosen are a :class:`ChosenPrecisions` (a tuple that remembers the decision), which a second
:func:`resolve_precisions` passes through unchanged and unsaid.
"""
from __future__ import annotations

import importlib.util
from typing import Any, Callable, Mapping, Optional, Sequence, Tuple, Union

from ..errors import ConfigError, TavtKitError
from ..target import DeploymentTarget, Precision

AUTO = "auto"
#: OpenVINO's OPTIMIZATION_CAPABILITIES name of each lower precision
_CAPABILITY = {Precision.BF16: "BF16", Precision.FP16: "FP16", Precision.INT8: "INT8"}


class ChosenPrecisions(tuple):
    """The precisions a search pairs with its schedules (fp32 first), with ``decision``: the
    :class:`~tavt_kit.bench.precision_speed.PrecisionSpeed` that chose them (``"auto"``; None when given) and
    ``line``, what was said about them (None: nothing)."""

    decision: Any = None
    line: Optional[str] = None

    def __new__(cls, items, decision=None, line: Optional[str] = None):
        self = super().__new__(cls, items)
        self.decision, self.line = decision, line
        return self


def parse_precisions(value) -> tuple:
    """``"fp32,bf16,int8"`` (or a sequence) -> the precisions, fp32 first (the comparison every budget reports)."""
    items = value.split(",") if isinstance(value, str) else list(value)
    out = [str(v).strip() for v in items if str(v).strip()]
    if not out:
        raise ConfigError(f"precisions={value!r}: expected a list of {', '.join(Precision.ALL)} or {AUTO!r}")
    if any(v.lower() == AUTO for v in out):
        raise ConfigError(f"precisions={value!r}: {AUTO!r} stands alone (the precisions measured faster than fp32 "
                          f"here); or list some of {', '.join(Precision.ALL)}")
    parsed = [Precision.parse(v, "precisions") for v in out]
    return tuple(dict.fromkeys([Precision.FP32] + parsed))


def _have_nncf() -> bool:
    return importlib.util.find_spec("nncf") is not None


def is_auto(value) -> bool:
    return isinstance(value, str) and value.strip().lower() == AUTO


def target_precisions(target: Optional[DeploymentTarget] = None,
                      capabilities: Optional[Callable[[str], Sequence[str]]] = None) -> Tuple[Tuple[str, ...], str]:
    """The precisions ``target`` (default :meth:`DeploymentTarget.default`) *can* run on this machine, as its
    runtime declares them (not whether they are faster: :func:`resolve_precisions` ``"auto"`` measures that),
    fp32 first, and one line saying why. ``capabilities``: the device's capability list (default: OpenVINO's
    ``OPTIMIZATION_CAPABILITIES``)."""
    target = target or DeploymentTarget.default()
    if target.backend != "openvino":
        return (Precision.FP32,), f"{target.backend} deploys fp32 only here"
    if capabilities is None:
        from ..export.openvino import device_capabilities as capabilities
    try:
        have = {str(c).upper() for c in capabilities(target.device)}
    except TavtKitError as e:
        return (Precision.FP32,), f"fp32 only: {e}"
    out, missing = [Precision.FP32], []
    for p in (Precision.BF16, Precision.FP16, Precision.INT8):
        if _CAPABILITY[p] not in have:
            missing.append(f"{p} (no native {_CAPABILITY[p]} on this {target.device.upper()})")
        elif p == Precision.INT8 and not _have_nncf():
            missing.append("int8 (NNCF is not installed: pip install nncf)")
        else:
            out.append(p)
    why = f"OpenVINO on this {target.device.upper()} runs {', '.join(out)}"
    return tuple(out), why + (f"; not {'; '.join(missing)}" if missing else "")


def resolve_precisions(value: Union[str, Sequence[str]], target: Optional[DeploymentTarget], has_latency_budget: bool,
                       log: Callable[[str], None] = print, measured_here: bool = False, *, model=None,
                       tables: Optional[Mapping[str, Any]] = None, measure: Optional[Callable[..., Any]] = None
                       ) -> ChosenPrecisions:
    """``value`` parsed (a :class:`ChosenPrecisions` passes through as it is). ``"auto"``: fp32 alone without a
    latency budget (a MAC count does not change with the precision), silently; under one, fp32 and the lower
    precisions measured faster than fp32 on ``target`` (``model`` timed at each:
    :func:`~tavt_kit.bench.precision_speed.measure_precision_speed`, or ``measure(model, target)``), said in one
    line. ``tables`` ({precision: LatencyTable} given to the search): when made on another machine, ``"auto"`` is
    their precisions (the target is elsewhere); otherwise the timing is at their batch size and threads.
    ``measured_here``: latency is measured on ``target`` on this machine, where an fp32-only search under a
    latency budget notes the lower precisions it leaves untimed (:func:`note_lower_precisions`)."""
    if isinstance(value, ChosenPrecisions):
        return value
    if not is_auto(value):
        out = parse_precisions(value)
        if out == (Precision.FP32,) and has_latency_budget and measured_here:
            note_lower_precisions(target, log)
        return ChosenPrecisions(out)
    if not has_latency_budget:
        return ChosenPrecisions((Precision.FP32,))
    chosen = _auto(model, target or DeploymentTarget.default(), dict(tables or {}), measure)
    log(chosen.line)
    return chosen


def _auto(model, target: DeploymentTarget, tables: Mapping[str, Any], measure) -> ChosenPrecisions:
    """``"auto"`` under a latency budget (see :func:`resolve_precisions`)."""
    if tables:
        from .objective import table_made_elsewhere, table_target

        first = next(iter(tables.values()))
        elsewhere = table_made_elsewhere(first)
        if elsewhere:
            found = tuple(p for p in Precision.ALL if p in tables or p == Precision.FP32)
            return ChosenPrecisions(found, None, f"precisions auto: {', '.join(found)} (the latency tables given: "
                                                 f"{elsewhere}, so nothing is timed here)")
        target = table_target(first)
    if target.backend != "openvino":
        return ChosenPrecisions((Precision.FP32,), None,
                                f"precisions auto: fp32 ({target.backend} deploys fp32 only here)")
    if model is None:
        return ChosenPrecisions((Precision.FP32,), None, "precisions auto: fp32 (no model given to time the lower "
                                                         "precisions on)")
    if measure is None:
        from ..bench.precision_speed import measure_precision_speed as measure
    speed = measure(model, target)
    return ChosenPrecisions(speed.kept, speed, speed.line())


def note_lower_precisions(target: Optional[DeploymentTarget], log: Callable[[str], None] = print) -> None:
    """For an fp32-only search under a latency budget where the target can run lower precisions: one note
    that they were left out untimed (``"auto"`` times them and searches those faster than fp32 here)."""
    found, _ = target_precisions(target)
    if len(found) > 1:
        log(f"note: precisions fp32 only: {', '.join(found[1:])} also run on this target but were left out untimed "
            "(precisions='auto' times them beside fp32 and searches those faster here)")
