"""The latency objective of a search, as a value: predicted from a latency table, or measured on a target.

``LatencyObjective.from_table(table, model)`` predicts each candidate's latency from a table made by
``bench`` profiling on the target (no measurement: a workstation can search for a board it does not have);
``LatencyObjective.measured(model, target)`` times every candidate on this machine with a short policy.
With no table given, :func:`latency_objectives` takes the fast path by default: it profiles a table for the
target once (:func:`profiled_table`, cached in a folder beside the checkpoint and reused while the model, the
target and this machine are the same), predicts every candidate from it and times only the picks.
Either caches per schedule, knows its :class:`~tavt_kit.target.DeploymentTarget`, and can re-measure a
chosen schedule with the full timing policy where the target is this machine.
"""
from __future__ import annotations

import glob
import os
import tempfile
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Union

from ..errors import ConfigError, LatencyTableError
from ..schedules.schedule import TokenSchedule
from ..target import TORCH_BACKENDS, DeploymentTarget, Precision
from .evolution import gene_of

#: a candidate measured during the search: quick but steady enough to rank schedules
SEARCH_POLICY = dict(warmup=3, min_repeats=5, max_repeats=200, budget_s=0.5, rel_ci=0.02)


def _measurer(model, target: DeploymentTarget, policy: Optional[dict]) -> Callable[[TokenSchedule], float]:
    """schedule -> seconds per batch, measured on ``target`` (``policy``: None for the full timing policy)."""
    from ..bench import TimingPolicy, measure_latency

    pol = TimingPolicy(**policy) if policy else None

    def measure(s: TokenSchedule) -> float:
        rep = measure_latency(model, [s], target=target, include_full=False, labels=["candidate"], policy=pol,
                              verify_exports=False)
        return rep.result("candidate", target.batch_size).stats.p50

    return measure


def table_target(table) -> DeploymentTarget:
    """The target a latency table was profiled for."""
    t = table.target
    return t if isinstance(t, DeploymentTarget) else DeploymentTarget.from_dict(t, where=table.source)


class LatencyObjective:
    """Seconds per batch of a schedule on one :class:`DeploymentTarget`, cached per schedule.

    Build with :meth:`from_table` or :meth:`measured`; call it on a schedule. ``remeasure(schedule)`` times
    a chosen schedule with the full policy on this machine (None when it cannot: a table's target elsewhere
    and ``remeasure=False``). ``info`` is what ``search.json`` records under ``latency``.
    """

    def __init__(self, fn: Callable[[TokenSchedule], float], target: DeploymentTarget, info: Dict[str, Any],
                 remeasure_fn: Optional[Callable[[TokenSchedule], float]] = None):
        self._fn, self.target, self.info, self._remeasure = fn, target, info, remeasure_fn
        self._cache: Dict[tuple, float] = {}

    @property
    def precision(self) -> str:
        return self.target.precision

    @property
    def source(self) -> str:
        """``table`` (predicted) or ``measured``."""
        return self.info["source"]

    @property
    def can_remeasure(self) -> bool:
        return self._remeasure is not None

    def __call__(self, schedule: TokenSchedule) -> float:
        g = gene_of(schedule)
        if g not in self._cache:
            self._cache[g] = float(self._fn(schedule))
        return self._cache[g]

    def remeasure(self, schedule: TokenSchedule) -> Optional[float]:
        return None if self._remeasure is None else float(self._remeasure(schedule))

    @classmethod
    def from_table(cls, table, model, *, remeasure: bool = False, path: Optional[str] = None) -> "LatencyObjective":
        """Predicted from ``table`` (a :class:`~tavt_kit.bench.LatencyTable` or its path), checked against
        ``model``; ``remeasure``: also time the chosen schedules on this machine, on the table's target."""
        from ..bench import LatencyTable

        if not hasattr(table, "predict"):
            path, table = str(table), LatencyTable.load(table)
        path = path or getattr(table, "source", None)
        table.check(model)
        target = table_target(table)
        raw = dict(table.data.get("target") or {})
        info = {"source": "table", "table": path, "target": raw, "machine": table.machine,
                "precision": target.precision,
                "identity": {"table": path, "precision": target.precision,
                             **{k: raw.get(k) for k in ("backend", "device", "batch_size", "threads")}}}
        rem = None
        if remeasure:
            rem = _measurer(model, target, None)
            info["remeasured_here"] = True
        return cls(lambda s: table.predict(s) / 1e3, target, info, rem)

    @classmethod
    def measured(cls, model, target: DeploymentTarget) -> "LatencyObjective":
        """Every candidate timed on ``target`` on this machine (quick policy); picks re-timed with the full one."""
        if target.backend in TORCH_BACKENDS and target.precision != Precision.FP32:
            from ..bench.backends import check_target

            check_target(target)  # bf16 / fp16 run on CUDA with the weights cast; refused elsewhere, in one line
        elif target.precision in (Precision.BF16, Precision.FP16):
            from ..export.openvino import check_device_precision

            check_device_precision(target.openvino_hint, target.device)
        if target.precision != Precision.FP32 and target.backend not in ("openvino",) + TORCH_BACKENDS:
            raise ConfigError(f"target={target}: latency at {target.precision} is measured with the openvino "
                              "backend (or predicted from a table profiled at that precision)")
        ident = {"backend": target.backend, "device": target.device, "batch_size": target.batch_size,
                 "threads": target.threads, **({"precision": target.precision}
                                               if target.precision != Precision.FP32 else {})}
        info = {"source": "measured", "precision": target.precision,
                "target": {"backend": target.backend, "device": target.device, "batch_size": target.batch_size,
                           "threads": target.threads, "precision": Precision.OPENVINO_NAME[target.precision]},
                "policy": SEARCH_POLICY, "identity": ident}
        measure = _measurer(model, target, SEARCH_POLICY)
        measure(TokenSchedule.full(model.depth, model.num_patches))  # first calls of a process are slow: discard
        return cls(measure, target, info, _measurer(model, target, None))


TableArg = Union[None, str, Any, Sequence[Any], Mapping[str, Any]]

#: how a latency objective without a given table is made: profile (or reuse) a table for the target and time only
#: the picks (fast), or time every candidate end to end (slow; no table to trust)
LATENCY_SOURCES = ("table", "measure")
#: the profile a search makes for itself: a coarser grid and shorter timings than ``bench profile``'s defaults, and
#: the TorchScript ONNX exporter (4x faster per part than dynamo; the picks are re-timed as export ships them, so the
#: table only has to rank candidates), in at most ``time_limit_s`` seconds of timing (exports and int8 quantisation
#: come on top: a tiny model's int8 table took about 80 s in all on a 2-core machine)
AUTO_PROFILE = dict(grid=9, warmup=2, min_repeats=5, budget_s=0.3, rel_ci=0.02, exporter="torchscript",
                    time_limit_s=30.0)


def table_file_name(target: DeploymentTarget, token_multiple: int = 1) -> str:
    """``latency-table.openvino-cpu-fp32-b1-t2.json``: the cached table of one target (``-m8`` before ``.json``:
    profiled at the sequence lengths of an aligned search)."""
    t = target
    threads = "tauto" if t.threads is None else f"t{t.threads}"
    aligned = f"-m{token_multiple}" if token_multiple > 1 else ""
    return (f"latency-table.{t.backend}-{t.device.replace(':', '')}-{t.precision}-b{t.batch_size}-{threads}"
            f"{aligned}.json")


def _same_machine(recorded: Mapping[str, Any]) -> Optional[str]:
    """Why a table's machine is not this one (None: it is): CPU model, cores, and the runtime libraries."""
    from ..machine import cpu_description, library_versions

    here_cpu, there_cpu = cpu_description(), (recorded or {}).get("cpu") or {}
    for key in ("model", "available_cores"):
        if there_cpu.get(key) != here_cpu.get(key):
            return f"made on another machine ({key} {there_cpu.get(key)} here {here_cpu.get(key)})"
    libs, there = library_versions(), (recorded or {}).get("libraries") or {}
    for lib in ("torch", "openvino", "onnxruntime"):
        if there.get(lib) != libs.get(lib):
            return f"made with {lib} {there.get(lib)}, this machine has {libs.get(lib)}"
    return None


def table_made_elsewhere(table) -> Optional[str]:
    """Why ``table`` (a :class:`~tavt_kit.bench.LatencyTable`) was not made on this machine, or None when it was:
    then a table of the same target at another precision can be profiled here."""
    recorded = getattr(table, "machine", None) or {}
    if not (recorded.get("cpu") or {}).get("model"):
        return "made on a machine it does not record"
    why = _same_machine(recorded)
    return f"the table was {why}" if why and why.startswith("made with") else why


class MissingTableError(LatencyTableError):
    """A precision searched has no latency table, and none can be profiled here (the tables given were made on
    another machine): ``precision`` and the ``target`` one must be profiled for, on that machine."""

    def __init__(self, message: str, precision: str, target: DeploymentTarget):
        super().__init__(message)
        self.precision, self.target = precision, target


def profiled_table(model, target: DeploymentTarget, cache_dir: Optional[str], reducers: Sequence[str] = ("drop",),
                   log: Callable[[str], None] = print, profile: Optional[Mapping[str, Any]] = None,
                   token_multiple: int = 1, export_dir: Optional[str] = None):
    """A latency table of ``model`` on ``target`` (this machine), reused from ``cache_dir`` while the model's
    structure, the target, the reducers it prices and this machine are the same; otherwise profiled (about a
    minute for a small model) and saved there. ``cache_dir`` None: profiled, not kept. ``profile``: overrides of
    :data:`AUTO_PROFILE` (grid points, warmup, min_repeats, budget_s, rel_ci, time_limit_s: seconds of timing in
    all). ``token_multiple`` > 1: the grid's
    counts, the calibration's and the validation's schedules are those an aligned search uses
    (``profile_latency(token_multiple=)``), kept in a file of their own. ``export_dir``: the folder the
    exported parts and models go to, shared by the tables of one search (each file exported once)."""
    from ..bench import LatencyTable, TimingPolicy, profile_latency
    from ..bench.backends import with_threads

    target = with_threads(target)
    path = os.path.join(cache_dir, table_file_name(target, token_multiple)) if cache_dir else None
    first, elsewhere = None, False  # why the current file does not fit; whether because it was made elsewhere
    for cached in _cached_tables(path) if path else ():
        t, why, other_machine = _reusable(cached, model, target, reducers, token_multiple)
        if why is None:
            kept = " (kept when a table of another machine replaced it)" if cached != path else ""
            log(f"latency: reusing the table {cached} ({target}){kept}")
            return t
        if cached == path:
            first, elsewhere = why, other_machine
    if first is not None:
        log(f"latency: the cached table {path} is not reused ({first}); profiling again")
    bad = sorted(set(profile or {}) - set(AUTO_PROFILE))
    if bad:
        raise ConfigError(f"profile={dict(profile)!r}: {bad[0]!r} is not one of {', '.join(AUTO_PROFILE)}")
    a = {**AUTO_PROFILE, **(profile or {})}
    log(f"latency: profiling a latency table for {target} (once; the search then predicts every candidate from "
        "it and times only its picks)")
    import time

    last = {"t": time.monotonic()}

    def progress(msg: str) -> None:  # a line every few seconds: never silent for long
        now = time.monotonic()
        if now - last["t"] >= 5.0:
            last["t"] = now
            log(f"latency: {msg}")

    t = profile_latency(model, target=target, grid=a["grid"], reducers=",".join(reducers), exporter=a["exporter"],
                        policy=TimingPolicy(warmup=a["warmup"], min_repeats=a["min_repeats"],
                                            budget_s=a["budget_s"], rel_ci=a["rel_ci"]),
                        progress=progress, token_multiple=token_multiple, time_limit_s=a["time_limit_s"],
                        workdir=export_dir)
    if path:
        try:
            os.makedirs(cache_dir, exist_ok=True)
            if elsewhere:  # kept, not overwritten: the machine it fits may come back (cores, libraries)
                kept = f"{path[:-len('.json')]}.replaced-{_stamp()}.json"
                os.replace(path, kept)
                log(f"latency: the table it replaces is kept as {kept}, reused where it fits again")
            t.save(path)
        except OSError as e:  # the cache is optional: a read-only folder (or a full disk) keeps nothing, said once
            log(f"warning: latency: the table could not be kept in {cache_dir} ({e.strerror or e}); the search goes "
                "on with it, and the next search profiles again")
            return t
        t = LatencyTable.load(path)
        log(f"latency: table saved to {path} (reused by the next search of this model on this target)")
    return t


def _cached_tables(path: str) -> List[str]:
    """The cached tables of one target: the current file, then those it replaced (newest first)."""
    kept = sorted(glob.glob(glob.escape(path[:-len(".json")]) + ".replaced-*.json"), reverse=True)
    return ([path] if os.path.isfile(path) else []) + kept


def _stamp() -> str:
    from datetime import datetime, timezone

    return datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")


def _reusable(path: str, model, target: DeploymentTarget, reducers: Sequence[str], token_multiple: int):
    """``(table, None, False)`` where the cached table at ``path`` fits this search on this machine, else ``(None,
    why not, whether it was made on another machine)``: the model's structure, the target, the reducers it prices, the
    machine, and how it was profiled."""
    from ..bench import LatencyTable
    from ..errors import TavtKitError

    try:
        t = LatencyTable.load(path)
        t.check(model, target)
    except TavtKitError as e:
        return None, str(e), False
    missing = [r for r in reducers if r not in t.reducers]
    if missing:
        return None, f"prices no {missing[0]}", False
    other_machine = _same_machine(t.machine)
    if other_machine is not None:
        return None, other_machine, True
    merge, pairs = "merge" in reducers, t.data.get("merge_pairs") or ()
    outdated = [
        (merge and t.data.get("calibration") and "merge_block_offset_ms" not in t.data,
         "profiled before merging blocks were calibrated on whole models"),
        (merge and "merge_round_ms" not in t.data, "profiled before merges were priced per bipartite round"),
        (merge and "drop" in t.reducers and "merge_fit" not in t.data,
         "profiled before merging blocks were priced with the dropping blocks' MLP"),
        (int(t.data.get("token_multiple", 1)) != token_multiple,
         "profiled at other sequence lengths than an aligned search's (token_multiple)"),
        (t.data.get("calibration") and "calibration_fit" not in t.data,
         "calibrated near the full model only, which mispredicts deep schedules"),
        (merge and any(lo >= li for li, lo, *_ in pairs), "its merging blocks were fitted to pairs that merge nothing"),
    ]
    why = next((reason for stale, reason in outdated if stale), None)
    return (t, None, False) if why is None else (None, why, False)


def tables_by_precision(table: TableArg) -> Dict[str, Any]:
    """``table=`` of :func:`~tavt_kit.search.search_schedules` -> {precision: LatencyTable}: one table or path,
    a list of them (one per precision), or a mapping precision -> table."""
    from ..bench import LatencyTable

    if table is None:
        return {}
    if isinstance(table, Mapping):
        items = list(table.values())
    elif isinstance(table, (list, tuple)):
        items = list(table)
    else:
        items = [table]
    out: Dict[str, Any] = {}
    for t in items:
        t = t if hasattr(t, "predict") else LatencyTable.load(t)
        p = table_target(t).precision
        if p in out:
            raise ConfigError(f"table={t.source}: {out[p].source} and {t.source} are both profiled at {p}; give "
                              "one table per precision")
        out[p] = t
    if isinstance(table, Mapping):
        for key, t in zip(table, out.values()):
            if Precision.parse(key, "table") != table_target(t).precision:
                raise LatencyTableError(f"table={t.source}: profiled at {table_target(t).precision}, "
                                        f"given for {key}")
    batches = {table_target(t).batch_size for t in out.values()}
    if len(batches) > 1:
        raise ConfigError(f"table={', '.join(t.source for t in out.values())}: the tables are for different batch sizes ({sorted(batches)}); a latency budget "
                          "is per batch, profile every precision at one batch size")
    return out


def latency_objectives(model, precisions: Sequence[str], target: Optional[DeploymentTarget] = None,
                       table: TableArg = None, remeasure: bool = False,
                       require: Optional[Mapping[str, Any]] = None, *, latency_source: str = "table",
                       table_cache: Optional[str] = None, reducers: Optional[Sequence[str]] = None,
                       log: Callable[[str], None] = print,
                       table_profile: Optional[Mapping[str, Any]] = None, token_multiple: int = 1
                       ) -> Dict[str, LatencyObjective]:
    """One :class:`LatencyObjective` per precision: from its table when given (which must be for ``target``'s
    backend, device, batch size and threads, or for the fields ``require`` names); a precision without one
    beside tables made on this machine: a table profiled here for their target at it (:func:`profiled_table`,
    cached in ``table_cache``; tables made elsewhere: :class:`MissingTableError`); with no table at all, on ``target`` (default
    :meth:`DeploymentTarget.default`, the runtime ``export`` ships) at that precision, ``latency_source``
    ``"table"`` (default) predicts from a table profiled for it (:func:`profiled_table`, cached in
    ``table_cache``; ``table_profile``: its settings; ``token_multiple``: at an aligned search's counts) and re-times
    the picks, ``"measure"`` times every candidate. ``reducers``: the reducers the table must price (default drop,
    and merge where the model can merge)."""
    if latency_source not in LATENCY_SOURCES:
        raise ConfigError(f"latency_source={latency_source!r}: expected one of {', '.join(LATENCY_SOURCES)}")
    tables = tables_by_precision(table)
    if tables and len(precisions) == 1 and precisions[0] not in tables:  # one precision searched, its table missing
        have = ", ".join(f"{t.source} ({q})" for q, t in tables.items())
        raise ConfigError(f"table={have}: no table profiled at {precisions[0]}; profile one at {precisions[0]}, or "
                          f"search precisions={','.join(dict.fromkeys([precisions[0], *tables]))}")
    extra = [p for p in tables if p not in precisions]
    if extra:
        raise ConfigError(f"table={tables[extra[0]].source}: profiled at {extra[0]}, which precisions="
                          f"{','.join(precisions)} does not search; add it to precisions or leave the table out")
    with tempfile.TemporaryDirectory(prefix="fgvc-kit-exports-") as exports:  # the tables' exports, made once
        return _objectives(model, precisions, target, tables, remeasure, require, latency_source, table_cache,
                           reducers, log, table_profile, token_multiple, exports)


def _objectives(model, precisions, target, tables, remeasure, require, latency_source, table_cache, reducers, log,
                table_profile, token_multiple, exports: str) -> Dict[str, LatencyObjective]:
    """The loop of :func:`latency_objectives` over the precisions, the tables it profiles exporting to
    ``exports``."""
    out = {}
    for p in precisions:
        if p in tables:
            t = tables[p]
            if require is not None or target is not None:
                _check_table_target(t, require if require is not None else
                                    {k: getattr(target, k) for k in ("backend", "device", "batch_size", "threads")})
            out[p] = LatencyObjective.from_table(t, model, remeasure=remeasure)
            if not remeasure:
                log(f"note: {p} latencies are {t.source}'s predictions; nothing is timed on the target, so every "
                    "latency verdict of this search is predicted (remeasure=True times each budget's picks there)")
            if int(t.data.get("token_multiple", 1)) != token_multiple:
                log(f"warning: {t.source} was profiled for sequence lengths that are multiples of "
                    f"{t.data.get('token_multiple', 1)}, this search uses multiples of {token_multiple}: its "
                    f"predictions are of their neighbours (profile with --token-multiple {token_multiple})")
        elif tables:
            out[p] = _missing_table(model, p, tables, remeasure, table_cache, _table_reducers(model, reducers), log,
                                    table_profile, token_multiple, exports)
        else:
            base = target or DeploymentTarget.default()
            if len(precisions) > 1 and target is None:
                base = base.with_(backend="openvino")  # every precision on one runtime, or budgets would mix
            if latency_source == "measure":
                out[p] = LatencyObjective.measured(model, base.with_(precision=p))
            else:
                t = profiled_table(model, base.with_(precision=p), table_cache,
                                   _table_reducers(model, reducers), log, table_profile, token_multiple,
                                   export_dir=exports)
                out[p] = LatencyObjective.from_table(t, model, remeasure=True)
                out[p].info["profiled_for_search"] = True
    return out


def _missing_table(model, p: str, tables: Mapping[str, Any], remeasure: bool, table_cache: Optional[str],
                   reducers: Sequence[str], log: Callable[[str], None], table_profile, token_multiple: int,
                   exports: Optional[str] = None) -> LatencyObjective:
    """The objective of precision ``p`` that no given table is for: where the tables given were made on this
    machine, a table profiled here for their target at ``p`` (:func:`profiled_table`, cached in ``table_cache``);
    else a :class:`MissingTableError` (it must be profiled on the target)."""
    first = next(iter(tables.values()))
    target = table_target(first).with_(precision=p)
    have = ", ".join(f"{t.source} ({q})" for q, t in tables.items())
    if target.backend != "openvino" and p != Precision.FP32:
        raise ConfigError(f"table={have}: no table profiled at {p}, and {target.backend} deploys fp32 only; profile "
                          f"every precision with backend openvino and give one table per precision")
    elsewhere = table_made_elsewhere(first)
    if elsewhere:
        why = (" (fp32 is searched beside every lower precision: each budget compares with it)"
               if p == Precision.FP32 else "")
        raise MissingTableError(f"table={have}: no table profiled at {p}{why}, and none can be profiled here ("
                                f"{elsewhere}); profile one at {p} on the target and give both",
                                p, target)
    log(f"latency: no table given at {p}; profiling one on this machine, where {first.source} was made")
    t = profiled_table(model, target, table_cache, reducers, log, table_profile, token_multiple, export_dir=exports)
    obj = LatencyObjective.from_table(t, model, remeasure=remeasure)
    obj.info["profiled_for_search"] = True
    return obj


def _table_reducers(model, reducers: Optional[Sequence[str]]) -> tuple:
    """The reducers a search's own table prices: those asked for, else drop and merge where the model merges."""
    if reducers:
        return tuple(reducers)
    own = getattr(model, "reducer", "drop")
    can = getattr(model, "supported_reducers", ("drop",))
    if "merge" in can and not getattr(model, "fuse", False):
        return tuple(dict.fromkeys([own, "drop", "merge"]))
    return (own,)


def _check_table_target(table, fields: Mapping[str, Any]) -> None:
    """A table made for another backend, device, batch size or thread count than ``fields`` is refused."""
    t = table_target(table)
    for key, asked in fields.items():
        mine = getattr(t, key)
        if asked is not None and mine is not None and mine != asked:
            raise LatencyTableError(f"{table.source} was made for {key}={mine}, not {key}={asked}; profile a table "
                                    f"for this target")
