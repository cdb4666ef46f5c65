"""Which precisions a search pairs with its schedules: a list the caller gives, or ``"auto"``, every precision the target runs here.

A latency budget is met by the cheapest deployable that keeps the accuracy, and on a CPU with int8 dot
products (VNNI, AMX) or native bf16 your model at a lower precision is often faster than any token schedule
at fp32 while it loses nothing. ``"auto"`` asks the target's runtime which precisions it runs natively on this
machine, so that the parent at those precisions (and ToMe on it) compete for every latency budget:

* fp32 always (the comparison every budget reports);
* on OpenVINO: bf16 and fp16 where the device reports the capability (elsewhere OpenVINO would quietly run
  f32 under the lower name), int8 where it reports INT8 and NNCF is installed to quantise;
* on other backends: fp32 only (their lower precisions are not deployed by ``export``).
"""
from __future__ import annotations

import importlib.util
from typing import Callable, Optional, Sequence, Tuple, Union

from ..errors import ConfigError, TavtKitError
from ..target import DeploymentTarget, Precision

AUTO = "auto"
#: OpenVINO's OPTIMIZATION_CAPABILITIES name of each lower precision
_CAPABILITY = {Precision.BF16: "BF16", Precision.FP16: "FP16", Precision.INT8: "INT8"}


def parse_precisions(value) -> tuple:
    """``"fp32,bf16,int8"`` (or a sequence) -> the precisions, fp32 first (the comparison every budget reports)."""
    items = value.split(",") if isinstance(value, str) else list(value)
    out = [str(v).strip() for v in items if str(v).strip()]
    if not out:
        raise ConfigError(f"precisions={value!r}: expected a list of {', '.join(Precision.ALL)} or {AUTO!r}")
    if any(v.lower() == AUTO for v in out):
        raise ConfigError(f"precisions={value!r}: {AUTO!r} stands alone (every precision the target runs here); "
                          f"or list some of {', '.join(Precision.ALL)}")
    parsed = [Precision.parse(v, "precisions") for v in out]
    return tuple(dict.fromkeys([Precision.FP32] + parsed))


def _have_nncf() -> bool:
    return importlib.util.find_spec("nncf") is not None


def is_auto(value) -> bool:
    return isinstance(value, str) and value.strip().lower() == AUTO


def target_precisions(target: Optional[DeploymentTarget] = None,
                      capabilities: Optional[Callable[[str], Sequence[str]]] = None) -> Tuple[Tuple[str, ...], str]:
    """The precisions ``target`` (default :meth:`DeploymentTarget.default`) runs natively on this machine, fp32
    first, and one line saying why (what the runtime reported, what is missing). ``capabilities``: the device's
    capability list (default: OpenVINO's ``OPTIMIZATION_CAPABILITIES``)."""
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
                       log: Callable[[str], None] = print, measured_here: bool = False) -> tuple:
    """``value`` parsed; ``"auto"``: :func:`target_precisions` under a latency budget (said in one line), fp32
    alone without one (a MAC count does not change with the precision). ``measured_here``: latency is measured
    on ``target`` on this machine (no table, no objectives given), where an fp32-only search under a latency
    budget notes the lower precisions it leaves out (:func:`note_lower_precisions`)."""
    if not is_auto(value):
        out = parse_precisions(value)
        if out == (Precision.FP32,) and has_latency_budget and measured_here:
            note_lower_precisions(target, log)
        return out
    if not has_latency_budget:
        return (Precision.FP32,)
    found, why = target_precisions(target)
    log(f"precisions auto: {', '.join(found)} ({why})")
    return found


def note_lower_precisions(target: Optional[DeploymentTarget], log: Callable[[str], None] = print) -> None:
    """For an fp32-only search under a latency budget where the target runs lower precisions natively: one note
    (your model at those precisions is often faster at no loss, and only a search of them compares it)."""
    found, _ = target_precisions(target)
    if len(found) > 1:
        log(f"note: this target also runs {', '.join(found[1:])} natively; your model at those precisions is not "
            "compared with the schedules (precisions='auto' or --precisions auto searches them too)")
