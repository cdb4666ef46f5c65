"""Whether an exported file or a bench.json row may stand for a report's pick, and if not, why (one phrase).

A report names a file only when the file can be trusted for that pick: it is
still there with the sha256 its ``export.json`` recorded, it was exported from
the same weights (``weights_sha256`` against ``search.json``'s
``model.weights_sha256``), at the same schedule counts, reducers and precision,
and its export passed verification. A bench.json row lends its latency only
when it measured the same weights at the same schedule, reducers and precision.
Each check returns a :class:`~tavt_kit.export.record.FileCheck` whose reason
the report prints beside what it did not ship.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

from ..errors import ConfigError
from ..export.record import PASSED, ExportRecord, FileCheck, check_files, read_export, records_of, sha256
from ..search.outcome import SearchResult, doc_num_patches
from ..search.pick import Pick
from ..target import Precision

# ------------------------------------------------------------------ what a pick needs
def effective_reducers(counts: Sequence[int], reducers: Optional[Sequence[Optional[str]]], num_patches: int,
                       default: str = "drop") -> Tuple[Optional[str], ...]:
    """Each block's reducer where it lowers the token count (None where it keeps its tokens); a block without a
    recorded reducer uses ``default`` (the model's)."""
    if reducers is not None and len(reducers) != len(counts):
        reducers = None
    out, prev = [], int(num_patches)
    for i, c in enumerate(counts):
        out.append(((reducers[i] if reducers is not None else None) or default) if c < prev else None)
        prev = min(prev, int(c))
    return tuple(out)


@dataclass(frozen=True)
class Wanted:
    """What a file must be to stand for a pick: schedule counts, reducers per block (as
    :func:`effective_reducers`), precision, and the weights (``weights_sha256``; None: the search records none,
    nothing to compare). ``checkpoint``: the checkpoint file of those weights, when on this machine (to check an
    export that records only its checkpoint's file hash)."""

    counts: Tuple[int, ...]
    reducers: Tuple[Optional[str], ...]
    precision: str
    weights_sha256: Optional[str]
    num_patches: int
    checkpoint: Optional[str] = None
    #: the runtime a latency of it must be measured on (backend, device, batch_size; None: any, no latency budget)
    runtime: Optional[Tuple[str, str, int]] = None
    #: other weights whose latency stands for these (same architecture, schedule and precision: the same
    #: operations), for bench rows only: a deployable of your model timed on the supernet's weights
    latency_weights: Tuple[str, ...] = ()

    def also_timed_as(self, digest: Optional[str]) -> "Wanted":
        """This pick, whose latency may also be read off a bench row of the weights ``digest``."""
        from dataclasses import replace

        return replace(self, latency_weights=self.latency_weights + ((digest,) if digest else ()))

    def same_schedule(self, counts: Optional[Sequence[int]], reducers: Optional[Sequence[Optional[str]]],
                      what: str) -> FileCheck:
        if counts is None or tuple(int(c) for c in counts) != self.counts:
            return FileCheck(False, f"{what} schedule {list(counts or [])} is not the pick's {list(self.counts)}")
        got = effective_reducers(self.counts, reducers, self.num_patches)
        for g, w in zip(got, self.reducers):
            if g != w:
                return FileCheck(False, f"{what} schedule {_verb(g)} where the pick {_verb(w)}")
        return PASSED

    def same_precision(self, precision: Optional[str], what: str) -> FileCheck:
        got = norm_precision(precision)
        if got != self.precision:
            return FileCheck(False, f"{got or 'unrecorded-precision'} {what} for {_a(self.precision)} "
                                    f"{self.precision} pick")
        return PASSED

    def same_weights(self, digest: Optional[str], what: str, checkpoint_sha256: Optional[str] = None) -> FileCheck:
        if self.weights_sha256 is None:  # the search records no weights: nothing to compare
            return PASSED
        if digest:
            if digest == self.weights_sha256:
                return PASSED
            return FileCheck(False, f"{what} of other weights (sha256 {digest[:12]}..., the pick's "
                                    f"{self.weights_sha256[:12]}...)")
        if checkpoint_sha256 and self.checkpoint and os.path.isfile(self.checkpoint):
            if _file_sha256(self.checkpoint) == checkpoint_sha256:
                return PASSED
            return FileCheck(False, f"{what} of another checkpoint file than the search's")
        return FileCheck(False, f"{what} records no weights hash (written by an older fgvc-kit), so it cannot be "
                                "told to be of this checkpoint")


_SHA: Dict[tuple, str] = {}


def _file_sha256(path: str) -> str:
    """A file's sha256, once per (path, size, modification time)."""
    st = os.stat(path)
    key = (os.path.abspath(path), st.st_size, st.st_mtime_ns)
    if key not in _SHA:
        _SHA[key] = sha256(path)
    return _SHA[key]


def norm_precision(p: Optional[str]) -> Optional[str]:
    """``f32`` -> ``fp32``...; None stays None, an unknown name is kept as it is."""
    if p is None:
        return None
    try:
        return Precision.parse(p)
    except ConfigError:
        return str(p)


def _verb(r: Optional[str]) -> str:
    return {"drop": "drops", "merge": "merges", None: "keeps its tokens"}.get(r, f"uses {r}")


def _a(word: str) -> str:
    """The article of a word as it is read aloud (an fp32, an int8, an export.json; a bf16, a search.json)."""
    return "an" if word[:1].lower() in "aefhilmnorx" else "a"


def wanted(p: Pick, result: SearchResult, weights: str = "supernet") -> Wanted:
    """What a file must be to stand for the pick ``p`` of ``result`` (``weights``: ``supernet`` for the searched
    schedules, ``parent`` for a training-free deployable of your model, ``finetuned`` for the pick fine-tuned
    toward your model)."""
    num_patches = int(doc_num_patches(result.doc) or max(result.full.counts))
    if weights == "parent":
        parent = result.parent
        digest, ckpt = (parent.weights_sha256, parent.path) if parent is not None else (None, None)
        default = "drop"
    elif weights == "finetuned":  # the pick fine-tuned toward your model: its own weights (search/finetune.py)
        digest, ckpt, default = p.weights_sha256, None, "drop"
    else:
        digest, ckpt = result.weights_sha256, result.checkpoint
        reducers = result.space_reducers
        default = reducers[0] if len(reducers) == 1 else "drop"
    return Wanted(counts=p.counts, reducers=effective_reducers(p.counts, p.reducers, num_patches, default),
                  precision=pick_precision(p, result), weights_sha256=digest, num_patches=num_patches,
                  checkpoint=ckpt, runtime=search_runtime(result))


def search_runtime(result: SearchResult) -> Optional[Tuple[str, str, int]]:
    """(backend, device, batch size) the search's latency budgets are for; None without a latency objective."""
    t = result.latency_target
    if not t.get("backend"):
        return None
    return str(t["backend"]), str(t.get("device") or "cpu"), int(t.get("batch_size") or t.get("batch") or 1)


def pick_precision(p: Pick, result: SearchResult) -> str:
    """The precision a pick is for: its own (a search of pairs), else the one precision searched, else that
    of the search's latency target, else fp32."""
    if p.recorded_precision:
        return norm_precision(p.recorded_precision)
    searched = (result.doc.get("precisions") or {}).get("searched") or []
    if len(searched) == 1:
        return norm_precision(searched[0])
    target = result.latency_target
    return norm_precision(target.get("precision") or target.get("precision_requested")) or Precision.FP32


# ------------------------------------------------------------------ exports
@dataclass(frozen=True)
class ExportSource:
    """An ``export.json`` given to the report: where it is and the exports it describes."""

    json_path: str
    folder: str
    records: Tuple[ExportRecord, ...]

    @classmethod
    def load(cls, path: str) -> "ExportSource":
        """Read an ``export.json`` (:func:`~tavt_kit.export.record.read_export`: another kind of file is refused,
        named for what it is)."""
        doc = read_export(path)
        return cls(os.path.abspath(path), os.path.dirname(os.path.abspath(path)),
                   tuple(ExportRecord.from_dict(r) for r in records_of(doc)))


def check_export(rec: ExportRecord, folder: str, want: Wanted) -> FileCheck:
    """Whether an exported file stands for the pick ``want``: same weights, schedule, reducers and precision, a
    verified export, and its files as exported."""
    for check in (lambda: want.same_weights(rec.model_weights_sha256, "export", rec.checkpoint_sha256),
                  lambda: want.same_schedule(rec.counts, rec.reducers, "exported"),
                  lambda: want.same_precision(rec.precision, "file")):
        c = check()
        if not c.ok:
            return c
    if not rec.verified or rec.status != "verified":
        if rec.status == "unverified":
            return FileCheck(False, "exported without verification (--no-verify)")
        why = f" ({rec.reason})" if rec.reason else ""
        return FileCheck(False, f"export status {rec.status or 'unrecorded'}, not verified{why}")
    return check_files(folder, rec)


@dataclass
class ExportEvidence:
    """The files that stand for a pick (``verified``, oldest first; ``chosen``: the newest of them, the one to
    ship; None: none can be) and, for every other file of the same schedule counts, why it is not shipped."""

    verified: List[Tuple[ExportSource, ExportRecord]] = field(default_factory=list)
    rejected: List[Tuple[ExportSource, ExportRecord, str]] = field(default_factory=list)

    @property
    def chosen(self) -> Optional[Tuple[ExportSource, ExportRecord]]:
        return self.verified[-1] if self.verified else None

    def file(self, source: ExportSource, rec: ExportRecord, out_dir: str) -> str:
        return os.path.relpath(os.path.join(source.folder, rec.path or ""), out_dir)


def export_evidence(sources: Sequence[ExportSource], want: Wanted) -> ExportEvidence:
    """Every exported file of the pick's schedule counts, checked. A file recorded twice (exported again into
    the same folder) counts once, as its newest record says; every verified file stays listed, so a failed
    re-export (its files moved to ``rejected/``) leaves the earlier verified ones shipped."""
    ev = ExportEvidence()
    newest: Dict[str, Tuple[ExportSource, ExportRecord]] = {}
    for src in sources:
        for rec in src.records:  # a file written again (by any schedule's export) is what its newest record says
            key = os.path.normpath(os.path.join(src.folder, rec.path or ""))
            newest.pop(key, None)  # re-insert: the dict keeps the order the records were made in
            newest[key] = (src, rec)
    for src, rec in newest.values():
        if rec.counts != want.counts:
            continue
        c = check_export(rec, src.folder, want)
        if c.ok:
            ev.verified.append((src, rec))
        else:
            ev.rejected.append((src, rec, c.reason or "not verified"))
    return ev


# ------------------------------------------------------------------ bench
def bench_precision(bench: Optional[Dict[str, Any]]) -> str:
    """The precision a bench.json timed at (fp32 when it does not say)."""
    t = (bench or {}).get("target") or {}
    return norm_precision(t.get("precision") or t.get("precision_requested")) or Precision.FP32


def check_bench_row(bench: Dict[str, Any], row: Dict[str, Any], want: Wanted,
                    full_counts: Sequence[int]) -> FileCheck:
    """Whether a bench.json row measured the pick ``want``: same weights, schedule, reducers and precision."""
    digest = (bench.get("model") or {}).get("weights_sha256")
    c = PASSED if digest and digest in want.latency_weights else want.same_weights(digest, "bench.json")
    if not c.ok:
        return c
    counts = row.get("schedule") or list(full_counts)
    c = want.same_schedule(counts, row.get("reducers"), "bench.json's")
    if not c.ok:
        return c
    if want.runtime is not None:  # a latency budget is for one runtime and batch: another's figure is not its verdict
        t = bench.get("target") or {}
        have = (str(t.get("backend")), str(t.get("device") or "cpu"), int(row.get("batch_size") or t.get("batch_size")
                                                                           or 1))
        if have != want.runtime:
            return FileCheck(False, "measured on {} {} at batch {}, while the search's budgets are for {} {} at batch "
                                    "{}".format(*have, *want.runtime))
    return want.same_precision(bench_precision(bench), "latency")


def bench_evidence(bench: Optional[Dict[str, Any]], want: Wanted,
                   full_counts: Sequence[int]) -> Tuple[Optional[Dict[str, Any]], List[str]]:
    """The first bench.json row (first batch size measured) that measured the pick, and why each other row of
    the same counts is not used."""
    reasons: List[str] = []
    for row in (bench or {}).get("results") or []:
        if not isinstance(row, dict):
            continue
        counts = tuple(int(c) for c in (row.get("schedule") or full_counts))
        if counts != want.counts:
            continue
        c = check_bench_row(bench, row, want, full_counts)
        if c.ok:
            return row, []
        if c.reason not in reasons:
            reasons.append(c.reason)
    return None, reasons


class PickEvidence:
    """What the report may name for a pick: the bench.json row that measured it and the exported file that stands
    for it, each checked (:mod:`tavt_kit.report.evidence`), with the reasons for what it does not name."""

    def __init__(self, result: SearchResult, bench: Optional[dict], sources: Sequence[ExportSource]) -> None:
        self.result, self.bench_doc, self.sources = result, bench, list(sources)
        self.full_counts = result.full.counts
        self._cache: Dict[tuple, Any] = {}

    def _memo(self, key: tuple, make):
        if key not in self._cache:
            self._cache[key] = make()
        return self._cache[key]

    def bench(self, p: Optional[Pick], weights: str = "supernet") -> Tuple[Optional[dict], List[str]]:
        """The bench.json row of a pick (None: none measured it) and why rows of its counts were not used.
        A deployable of your model (``weights="parent"``) may take a row timed on the supernet's weights: the
        same architecture at the same schedule and precision runs the same operations, so its latency is the
        same (``bench --search`` times it so)."""
        if p is None or not self.bench_doc:
            return None, []
        want = wanted(p, self.result, weights)
        if weights in ("parent", "finetuned"):  # a fine-tuned pick too: the pick's graph, other weights
            want = want.also_timed_as(self.result.weights_sha256)
        return self._memo(("bench", want), lambda: bench_evidence(self.bench_doc, want, self.full_counts))

    def bench_row(self, p: Optional[Pick]) -> Optional[dict]:
        return self.bench(p)[0]

    def exports(self, p: Pick, weights: str = "supernet") -> ExportEvidence:
        """The exported file to ship for a pick, and why the other files of its counts are not shipped."""
        want = wanted(p, self.result, weights)
        return self._memo(("export", want), lambda: export_evidence(self.sources, want))
