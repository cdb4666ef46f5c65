"""Latency tables: the file format and the predictor of a schedule's latency from per-block timings.

A search on another machine predicts the latency of any schedule from the
table (:meth:`LatencyTable.predict`) instead of measuring it; the table is
made on the target by :func:`tavt_kit.bench.profile.profile_latency`.

Model of a schedule's latency (all blocks of a ViT have the same shape, so one
representative block is measured)::

    latency = scale * (embed + sum over blocks of block(L_in -> L_out) + head(L_last)) + offset

``L`` counts every token in the sequence (prefix, patches, the fused token).
A block that keeps all its tokens runs timm's block: ``plain(L)``. A block that
drops runs attention (with the scorer), top-k selection and the MLP:
``attn(L_in) + mlp(L_out)``; :func:`fit_separable` fits the two curves to the
measured pairs, :func:`isotonic` makes them non-decreasing, and they are
interpolated linearly. ``offset`` absorbs per-call costs that separate parts
count several times or not at all.

Token merging (ToMe, ``reducer="merge"``): a table profiled with
``reducers`` including ``merge`` (format version 2, ``"reducers"``) also holds
a merging block, ``merge_attn(L_in) + merge_mlp(L_out)`` (attention, keys mean,
bipartite matching, size-weighted merge, MLP), fitted the same way to the
pairs that merge (``L_out < L_in``: a block merging nothing skips the matching
and costs a plain block, so such pairs would bend the fit), plus
``merge_round_ms`` for every bipartite round after the first: a block merging
more than half of its tokens runs several rounds
(:func:`~tavt_kit.models.token_merge.merge_rounds`), each with its own matching
and scatter, so it costs *more* as its output shrinks, which no non-decreasing
``merge_mlp`` can price (a coarse grid priced a merge from 8 to 5 tokens from
the pair 99 -> 2, seven rounds); :func:`fit_separable_rounds` fits the price of a
round with the curves. And, for models with proportional attention,
``prop(L)``: a block that keeps its tokens but attends with the size bias
(every block after the first merge). Merging blocks are timed with that bias;
a merge before any other (no bias yet) is predicted as
``merge_attn + merge_mlp - (prop - plain)`` at its input length. A dropping
block after a merge adds the bias to logits it computes anyway and is predicted
by the drop curves. Each block's reducer is the schedule's own
(``schedule.reducers``), else the model's: the ``reducer`` given to
:meth:`LatencyTable.predict`, else that of the model the table was checked
against (:meth:`LatencyTable.check`), else the one it was profiled on. Tables
without merge entries load and predict drop schedules as before; a schedule
that merges is refused with a one-line :class:`LatencyTableError`.
"""
from __future__ import annotations

import os
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from ..errors import ConfigError, LatencyTableError
from ..files import write_json
from ..models.token_merge import merge_rounds
from ..schedules import TokenSchedule
from ..target import BACKENDS, DeploymentTarget, Precision
from ..validate import Fields, check_format, read_json
from .identity import STRUCTURE_KEYS, identity_mismatch, model_identity

TABLE_FORMAT = "fgvc-kit/latency-table"
TABLE_VERSION = 1
#: the version of tables that hold merge entries (``reducers`` names what was profiled)
TABLE_VERSION_MERGE = 2
#: the curves of each reducer (plain_ms and head_ms are always there)
REDUCER_CURVES = {"drop": ("attn_ms", "mlp_ms"), "merge": ("merge_attn_ms", "merge_mlp_ms")}
#: the curves of a fitted split: attn(L_in) + mlp(L_out) is a block's time, each side alone may be below 0 (the
#: fit fixes only their sum; noise puts one side of a cheap block under 0)
SPLIT_CURVES = frozenset(c for pair in REDUCER_CURVES.values() for c in pair)

#: the file name a table is saved under in an output folder
TABLE_FILE = "latency_table.json"
#: what a reader says a latency table should be
TABLE_EXPECTED = "a latency table made by fgvc-kit bench profile"
#: the precision names a table's target may record: fgvc-kit's, and OpenVINO's ``f32``/``f16`` of older tables
TABLE_PRECISIONS = tuple(dict.fromkeys(Precision.ALL + ("f32", "f16")))
#: the fields of a :class:`~tavt_kit.target.DeploymentTarget` a table is checked against
TARGET_FIELDS = ("backend", "device", "precision", "batch_size", "threads")


def _interp(xs: Sequence[float], ys: Sequence[float], x: float) -> float:
    """Piecewise-linear interpolation, linear extrapolation from the end segments; exact on the points."""
    n = len(xs)
    if n == 1:
        return float(ys[0])
    if x <= xs[0]:
        i = 0
    elif x >= xs[-1]:
        i = n - 2
    else:
        lo, hi = 0, n - 1
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if xs[mid] <= x:
                lo = mid
            else:
                hi = mid
        i = lo
        if xs[i] == x:
            return float(ys[i])
    x0, x1, y0, y1 = xs[i], xs[i + 1], ys[i], ys[i + 1]
    return float(y0 + (y1 - y0) * (x - x0) / (x1 - x0))


def isotonic(ys: Sequence[float], weights: Optional[Sequence[float]] = None) -> List[float]:
    """Non-decreasing least-squares fit (pool adjacent violators)."""
    w = list(weights) if weights is not None else [1.0] * len(ys)
    blocks: List[List[float]] = []  # [value, weight, count]
    for y, wt in zip(ys, w):
        blocks.append([float(y), float(wt), 1])
        while len(blocks) > 1 and blocks[-2][0] > blocks[-1][0]:
            v2, w2, c2 = blocks.pop()
            v1, w1, c1 = blocks.pop()
            blocks.append([(v1 * w1 + v2 * w2) / (w1 + w2), w1 + w2, c1 + c2])
    out: List[float] = []
    for v, _, c in blocks:
        out.extend([v] * c)
    return out


def _robust_lstsq(A, t, known=None):
    """``A @ sol + known ~ t`` in relative error, with two Huber reweighting passes (threshold 2.5 robust standard
    deviations of the relative residuals, at least 1 %): one pair hit by a burst of machine noise does not bend
    the fit."""
    import numpy as np

    known = np.zeros_like(t) if known is None else known
    w = 1.0 / t
    for _ in range(3):
        sol = np.linalg.lstsq(A * w[:, None], (t - known) * w, rcond=None)[0]
        rel = (A @ sol + known - t) / t
        scale = max(0.01, 2.5 * 1.4826 * float(np.median(np.abs(rel - np.median(rel)))))
        w = np.minimum(1.0, scale / np.maximum(np.abs(rel), 1e-12)) / t
    return sol


def _separable_lstsq(pairs: Sequence[Tuple[int, int, float]], extra: Optional[Sequence[float]] = None):
    """``attn(L_in) + mlp(L_out) [+ c * extra]`` fitted to ``pairs`` (see :func:`fit_separable`); returns
    ``(ins, attn, outs, mlp, c)`` (``c`` None without ``extra``, or where the curves alone can follow ``extra``
    on these pairs, so that the pairs do not say what it costs)."""
    import numpy as np

    ins = sorted({p[0] for p in pairs})
    outs = sorted({p[1] for p in pairs})
    ii = {v: i for i, v in enumerate(ins)}
    jj = {v: j for j, v in enumerate(outs)}
    A = np.zeros((len(pairs), len(ins) + len(outs) + (extra is not None)))
    t = np.array([max(p[2], 1e-12) for p in pairs])
    for r, (li, lo, _) in enumerate(pairs):
        A[r, ii[li]] = 1.0
        A[r, len(ins) + jj[lo]] = 1.0
        if extra is not None:
            A[r, -1] = float(extra[r])
    if extra is not None and np.linalg.matrix_rank(A) == np.linalg.matrix_rank(A[:, :-1]):
        return (*_separable_lstsq(pairs)[:4], None)
    sol = _robust_lstsq(A, t)
    attn, mlp = sol[:len(ins)], sol[len(ins):len(ins) + len(outs)]
    c = (mlp[0] - attn[0]) / 2
    attn, mlp = attn + c, mlp - c
    return (ins, [float(v) for v in attn], outs, [float(v) for v in mlp],
            float(sol[-1]) if extra is not None else None)


def fit_separable(pairs: Sequence[Tuple[int, int, float]]) -> Tuple[List[int], List[float], List[int], List[float]]:
    """Fit ``T(L_in, L_out) = attn(L_in) + mlp(L_out)`` to measured pairs (least squares on relative error).

    Robust: two reweighting passes (Huber weights, threshold 2.5 robust standard deviations of
    the relative residuals, at least 1 %) so that one pair hit by a burst of machine noise does
    not bend the curves. The split between the two curves is defined up to a constant; it is
    fixed by giving the smallest block (smallest L_in and L_out) equal shares.
    """
    return _separable_lstsq(pairs)[:4]


def extra_merge_rounds(n: int, k: int) -> int:
    """The bipartite rounds after the first of a block merging ``n`` patch tokens down to ``k`` (0 for one round
    or none)."""
    return max(0, len(merge_rounds(n, k)) - 1) if k < n else 0


def fit_separable_rounds(pairs: Sequence[Tuple[int, int, float]], extra_rounds: Sequence[int]
                         ) -> Tuple[List[int], List[float], List[int], List[float], float]:
    """Merging blocks: ``T = merge_attn(L_in) + merge_mlp(L_out) + extra_rounds * round_ms``, fitted as
    :func:`fit_separable` with one more unknown, the price of each bipartite round after the first
    (``extra_rounds`` per pair, :func:`extra_merge_rounds`). Returns the curves and ``round_ms``; where the
    pairs do not determine it (no pair with several rounds, or a grid whose rounds the curves follow exactly,
    as on token counts in powers of two) or price a round below zero (noise), the curves are fitted without it
    and ``round_ms`` is 0.

    Why a term of its own: the number of rounds grows with ``log(n_in / n_out)``, so on the grid's pairs
    ``merge_mlp`` alone can follow it only by *rising* as the output shrinks, and between the grid's points
    (a merge 40 -> 20 between pairs ending at 2 and 99) the interpolated price is far from the rounds actually
    run. Measured on a GPU table (ViT-B/16 at 448, 36 merging pairs, 9 anchors, 10 random schedules timed
    whole): median prediction error 7.6 % -> 2.4 %, the per-merging-block calibration -1.94 -> -0.66 ms."""
    if any(extra_rounds):
        ins, attn, outs, mlp, round_ms = _separable_lstsq(pairs, extra_rounds)
        if round_ms is not None and round_ms >= 0:
            return ins, attn, outs, mlp, round_ms
    return (*_separable_lstsq(pairs)[:4], 0.0)


def fit_tied_rounds(pairs: Sequence[Tuple[int, int, float]], extra_rounds: Sequence[int],
                    out_ms: Dict[int, float]) -> Optional[Tuple[List[int], List[float], List[int], List[float], float]]:
    """Merging blocks as ``merge_attn(L_in) + out_ms[L_out] + extra_rounds * round_ms``, with ``out_ms`` the
    dropping blocks' MLP curve: after its merge a block runs the same MLP on ``L_out`` tokens as a dropping
    block, so only the input side (attention, matching, the first round) and the round price are fitted.
    Returns what :func:`fit_separable_rounds` does, or None where ``out_ms`` lacks an output count.

    Why: in :func:`fit_separable_rounds` the grid's lowest output count is reached only by pairs of six to
    nine rounds, so its ``merge_mlp`` point trades off against ``round_ms``, and every merge ending below the
    next point is priced by interpolating to it. On a GPU at batch 1 (captured graphs, ViT-B/16 at 448) that
    priced a block merging 98 -> 49 tokens near zero and the deep-merging anchors at 0.03 of their time; the
    calibration then added 0.07 ms per merging block to every schedule. Refitted from the recorded timings
    (``benchmarks/merge_round_refit.py``), the median error on 10 random schedules went 17.6 % -> 4.7 %."""
    import numpy as np

    if any(p[1] not in out_ms for p in pairs):
        return None
    ins = sorted({p[0] for p in pairs})
    outs = sorted({p[1] for p in pairs})
    ii = {v: i for i, v in enumerate(ins)}
    t = np.array([max(p[2], 1e-12) for p in pairs])
    known = np.array([out_ms[p[1]] for p in pairs])
    A = np.zeros((len(pairs), len(ins) + 1))
    for r, (li, _, _) in enumerate(pairs):
        A[r, ii[li]] = 1.0
        A[r, -1] = float(extra_rounds[r])
    round_ms = 0.0
    # the round price needs pairs beyond the unknowns: fitted exactly (a grid of 3), it followed the noise of one
    # pair, and the input side went so negative that a merging schedule was predicted below zero
    if any(extra_rounds) and len(pairs) > A.shape[1] and np.linalg.matrix_rank(A) == A.shape[1]:
        sol = _robust_lstsq(A, t, known)
        round_ms = float(sol[-1])
    if round_ms <= 0:  # not determined, or noise priced a round below zero: no round price
        sol = _robust_lstsq(A[:, :-1], t, known)
        round_ms = 0.0
    attn = [float(v) for v in sol[:len(ins)]]
    # every one-round merge the grid can express (at most half merged) must cost more than nothing, or the
    # separable fit prices the table
    for li in ins:
        for lo in outs:
            if lo < li <= 2 * lo - 1 and attn[ii[li]] + out_ms[lo] <= 0:
                return None
    return ins, attn, outs, [float(out_ms[o]) for o in outs], round_ms


# ------------------------------------------------------------------------ checks
def validate_table(data: Any, source: str = "latency table") -> Tuple[List[str], DeploymentTarget]:
    """Check a latency table's content; returns its reducers and target. One :class:`LatencyTableError` line
    naming ``source`` and the field: another format, a version newer than this fgvc-kit reads, a missing or
    non-object ``model``/``target``, a timing that is not a finite non-negative number (negative, NaN, text; one
    side of a fitted attn + mlp split may be negative: only their sum is a time),
    token counts that are not increasing integers, a batch size or thread count that is not a positive
    integer, a backend or precision fgvc-kit does not know (the known ones are named)."""
    check_format(data, source, TABLE_FORMAT, TABLE_VERSION_MERGE, "a latency table of fgvc-kit bench profile",
                 LatencyTableError)
    f = Fields(f"{source}: malformed latency table", LatencyTableError)
    reducers = data.get("reducers") or ["drop"]
    if not isinstance(reducers, list) or any(r not in REDUCER_CURVES for r in reducers):
        f.fail("reducers", reducers, f"a list of {', '.join(REDUCER_CURVES)}")
    curves = ["plain_ms", "head_ms"] + [c for r in reducers for c in REDUCER_CURVES[r]]
    if "merge" in reducers and data.get("prop_ms") is not None:
        curves.append("prop_ms")
    model = f.mapping(f.get(data, "model", "model", "the profiled model's identity (an object)", True), "model",
                      optional=False)
    f.positive(f.get(model, "depth", "model.depth", "the number of blocks", True), "model.depth",
                       optional=False, integer=True)
    n = f.positive(f.get(model, "num_patches", "model.num_patches", "the number of patch tokens", True),
                   "model.num_patches", optional=False, integer=True)
    prefix = f.non_negative(f.get(model, "num_prefix_tokens", "model.num_prefix_tokens",
                                  "the number of prefix tokens", True), "model.num_prefix_tokens", optional=False,
                            integer=True)
    f.flag(model.get("fuse"), "model.fuse")
    f.choice(model.get("reducer"), "model.reducer", tuple(REDUCER_CURVES), what="a reducer")
    target = f.mapping(f.get(data, "target", "target", "the target it was profiled on (an object)", True),
                       "target", optional=False)
    f.choice(target.get("backend"), "target.backend", BACKENDS, what="a backend")
    f.text(target.get("device"), "target.device")
    f.positive(target.get("batch_size", target.get("batch")), "target.batch_size", integer=True)
    f.positive(target.get("threads"), "target.threads", integer=True)
    for key in ("precision", "precision_requested"):
        f.choice(target.get(key), f"target.{key}", TABLE_PRECISIONS, what="a precision")
    for key in ["embed_ms"] + curves:
        f.get(data, key, key, "the part's timing", True)
    f.non_negative(data["embed_ms"], "embed_ms", optional=False)
    f.non_negative(data.get("head_nodrop_ms"), "head_nodrop_ms")
    f.number(data.get("offset_ms"), "offset_ms")
    f.number(data.get("merge_block_offset_ms"), "merge_block_offset_ms")
    f.non_negative(data.get("merge_round_ms"), "merge_round_ms")
    f.positive(data.get("parts_scale"), "parts_scale")
    most = prefix + n + 1  # every token of the sequence, the fused one too
    for key in curves:
        c = f.mapping(data[key], key, optional=False)
        tokens = f.sequence(f.get(c, "tokens", f"{key}.tokens", "token counts", True), f"{key}.tokens",
                            optional=False)
        ms = f.sequence(f.get(c, "ms", f"{key}.ms", "timings", True), f"{key}.ms", optional=False)
        if not tokens or len(tokens) != len(ms):
            f.fail(f"{key}.ms", ms, f"one timing per token count ({len(tokens)}), at least one")
        for i, t in enumerate(tokens):
            f.number(t, f"{key}.tokens[{i}]", low=1, high=most, integer=True, optional=False,
                     expected=f"a token count in [1, {most}]")
        if list(tokens) != sorted(set(tokens)):
            f.fail(f"{key}.tokens", tokens, "strictly increasing token counts")
        split = key in SPLIT_CURVES  # one side of a fitted attn + mlp split: only the pair's sum is a time
        for i, v in enumerate(ms):
            (f.number if split else f.non_negative)(v, f"{key}.ms[{i}]", optional=False)
    # a sum of the two sides below 0 is not refused here: the fit extrapolates to token pairs it never timed
    # (a profile's own table can hold one); a whole schedule predicted at or below 0 is refused by predict()
    try:
        tgt = DeploymentTarget.from_dict(target, where="target")
    except ConfigError as e:
        raise LatencyTableError(f"{source}: malformed latency table ({e})") from None
    return list(reducers), tgt


# ------------------------------------------------------------------------ table
class LatencyTable:
    """Per-part latencies of one model on one backend/device/batch/threads, and a predictor.

    ``LatencyTable.load(path).predict(schedule)`` -> milliseconds per batch. Build one with
    :func:`profile_latency`. The JSON file holds the model's identity, the target (backend,
    device, batch size, threads, precision), the machine's description, the measured parts,
    the fitted curves, the calibration and (optionally) a validation against direct measurement.
    """

    def __init__(self, data: Mapping[str, Any], source: str = "latency table"):
        self.source = source
        reducers, target = validate_table(data, source)
        self.data: Dict[str, Any] = dict(data)
        self._target = target
        #: the reducer of blocks a schedule names none for, once bound to a model by :meth:`check`
        self.model_reducer: Optional[str] = None

    # -------------------------------------------------------------- properties
    @property
    def model(self) -> Dict[str, Any]:
        return self.data["model"]

    @property
    def target(self) -> DeploymentTarget:
        """Where the latencies were measured: backend, device, precision, threads and batch size (a table's own
        ``precision`` names are read either way: ``f32`` of older tables is ``fp32``). What else the file
        records about the runtime (exporter, compile backend, int8 calibration) is in ``data["target"]``."""
        return self._target

    @property
    def machine(self) -> Dict[str, Any]:
        return self.data.get("machine") or {}

    @property
    def reducers(self) -> Tuple[str, ...]:
        """The reducers whose blocks the table holds (``("drop",)`` for tables made before merging)."""
        return tuple(self.data.get("reducers") or ("drop",))

    @property
    def precision(self) -> str:
        """The precision the table was profiled at (:class:`~tavt_kit.target.Precision`: ``fp32``, ``bf16``,
        ``fp16`` or ``int8``; tables made before precisions were recorded, or that say ``f32``: fp32)."""
        return self._target.precision

    @property
    def offset_ms(self) -> float:
        return float(self.data.get("offset_ms") or 0.0)

    @property
    def merge_block_offset_ms(self) -> float:
        """What a whole model pays per merging block beyond its parts (calibrated on the merge anchors; 0 in a
        table profiled before it was, or for drop only)."""
        return float(self.data.get("merge_block_offset_ms") or 0.0)

    @property
    def merge_round_ms(self) -> float:
        """What each bipartite round after the first costs a merging block (:func:`fit_separable_rounds`; 0 in a
        table profiled before rounds were priced, whose merge curves carry them)."""
        return float(self.data.get("merge_round_ms") or 0.0)

    @property
    def parts_scale(self) -> float:
        """What a whole model costs per millisecond of its parts timed alone (calibrated on whole models from the
        full model to the deepest schedules; 1 in a table calibrated before, which fitted an offset only)."""
        return float(self.data.get("parts_scale") or 1.0)

    # ------------------------------------------------------------------ files
    def to_dict(self) -> Dict[str, Any]:
        return dict(self.data)

    def save(self, path) -> str:
        return write_json(self.data, path)

    @classmethod
    def load(cls, path) -> "LatencyTable":
        """Read a table (:func:`validate_table`: format, version and every value checked; a binary file is
        refused unread)."""
        path = os.fspath(path)
        return cls(read_json(path, TABLE_EXPECTED, LatencyTableError, "latency table"), source=path)

    # ----------------------------------------------------------- compatibility
    def check(self, model=None, target: Optional[DeploymentTarget] = None, *,
              fields: Sequence[str] = TARGET_FIELDS) -> "LatencyTable":
        """Raise :class:`LatencyTableError` unless the table was made for this model and target.

        ``model``: a token-drop model or an identity dict (:func:`~tavt_kit.bench.identity.model_identity`).
        ``target``: the :class:`~tavt_kit.target.DeploymentTarget` the latencies are wanted for; ``fields``
        names which of its fields must match (default all; ``threads=None``, the runtime's default, matches any).
        The table is then bound to the model's reducer: schedules that name no reducer for a block
        are predicted with it; a model that merges needs a table with merge entries.
        """
        if model is not None:
            ident = model if isinstance(model, Mapping) else model_identity(model)
            keys = STRUCTURE_KEYS if "merge" in self.reducers else tuple(k for k in STRUCTURE_KEYS if k != "prop_attn")
            diff = identity_mismatch(self.model, ident, keys)
            if diff:
                raise LatencyTableError(f"{self.source} was made for another model ({self.model.get('name')}; "
                                        f"{', '.join(diff[:3])}); profile a table for this model")
            reducer = ident.get("reducer")
            if reducer is not None:
                self._require(reducer)
                self.model_reducer = reducer
        if target is not None:
            bad = [f for f in fields if f not in TARGET_FIELDS]
            if bad:
                raise ConfigError(f"fields={list(fields)!r}: {bad[0]!r} is not one of {', '.join(TARGET_FIELDS)}")
            mine = self.target
            if "precision" in fields and target.precision != mine.precision:
                raise LatencyTableError(f"{self.source} was profiled at {mine.precision}, not {target.precision}; "
                                        f"profile a table with precision={target.precision}")
            for key in (f for f in TARGET_FIELDS if f in fields and f != "precision"):
                have, asked = getattr(mine, key), getattr(target, key)
                if asked is not None and have is not None and have != asked:
                    raise LatencyTableError(f"{self.source} was made for {key} {have}, not {asked}; profile a table "
                                            f"with {key}={asked}")
        return self

    def schedule(self, schedule) -> TokenSchedule:
        """``schedule`` (counts or a :class:`TokenSchedule`) as a schedule of the table's model; a
        :class:`LatencyTableError` when it is for another one."""
        m = self.model
        depth, n = int(m["depth"]), int(m["num_patches"])
        if isinstance(schedule, TokenSchedule):
            if schedule.depth != depth or schedule.num_patches != n:
                raise LatencyTableError(f"{self.source} is for a model with {depth} blocks and {n} patch tokens; "
                                        f"the schedule is for {schedule.depth} blocks and {schedule.num_patches}")
            info = schedule.meta or {}
            if info:
                diff = identity_mismatch(m, info, STRUCTURE_KEYS)
                if diff:
                    raise LatencyTableError(f"{self.source} was made for another model ({', '.join(diff[:3])})")
            return schedule
        try:
            return TokenSchedule.coerce(schedule, depth, n)
        except Exception as e:
            raise LatencyTableError(f"{self.source}: {e}") from None

    # -------------------------------------------------------------- prediction
    def _curve(self, key: str, L: float) -> float:
        c = self.data[key]
        return _interp(c["tokens"], c["ms"], L)

    def _require(self, reducer: str) -> None:
        if reducer not in REDUCER_CURVES:
            raise LatencyTableError(f"unknown reducer {reducer!r}; expected one of {', '.join(REDUCER_CURVES)}")
        if reducer not in self.reducers:
            have = ",".join(self.reducers)
            raise LatencyTableError(f"{self.source} has no {reducer} entries (profiled for {have}); profile a "
                                    f"table with reducers={have},{reducer}")

    def block_reducers(self, schedule: TokenSchedule, reducer: Optional[str] = None) -> Tuple[str, ...]:
        """Each block's reducer: the schedule's own, else ``reducer``, the bound model's, or the profiled model's."""
        default = reducer or self.model_reducer or self.model.get("reducer") or "drop"
        own = schedule.reducers or (None,) * schedule.depth
        return tuple(r or default for r in own)

    def predict_parts(self, schedule, reducer: Optional[str] = None) -> Dict[str, Any]:
        """Predicted milliseconds per part, timed alone: ``embed``, ``blocks`` (one per block), ``head``; and the
        whole-model calibration: ``scale`` (:attr:`parts_scale`, on the sum of those parts), ``offset`` and
        ``merge_offset`` (``merging_blocks`` times :attr:`merge_block_offset_ms`).

        ``reducer``: the reducer of blocks the schedule names none for (default: see the module).
        """
        s = self.schedule(schedule)
        m = self.model
        P, N, fuse = int(m["num_prefix_tokens"]), int(m["num_patches"]), bool(m.get("fuse"))
        reducers = self.block_reducers(s, reducer)
        prev = N
        for k, red in zip(s.counts, reducers):
            if k < prev:
                self._require(red)
            prev = min(prev, k)
        prop = "prop_ms" in self.data and self.data.get("prop_ms") is not None
        blocks = []
        n, fused, merged, merging = N, 0, False, 0
        round_ms = self.merge_round_ms
        for k, red in zip(s.counts, reducers):
            L_in = P + n + fused
            if k < n and red == "merge":
                t = self._curve("merge_attn_ms", L_in) + self._curve("merge_mlp_ms", P + k)
                if round_ms:  # a table from before rounds were priced: its curves carry them
                    t += extra_merge_rounds(n, k) * round_ms
                if prop and not merged:  # timed with the size bias, which the first merge does not have yet
                    t -= self._curve("prop_ms", L_in) - self._curve("plain_ms", L_in)
                blocks.append(t)
                merged, n, merging = True, k, merging + 1
            elif k < n:
                blocks.append(self._curve("attn_ms", L_in) + self._curve("mlp_ms", P + k + int(fuse)))
                fused = int(fuse)
                n = k
            elif merged and prop:
                blocks.append(self._curve("prop_ms", L_in))
            else:
                blocks.append(self._curve("plain_ms", L_in))
        if fused or "head_nodrop_ms" not in self.data or n < N:
            head = self._curve("head_ms", P + n + fused)
        else:
            head = float(self.data["head_nodrop_ms"])
        return {"embed": float(self.data["embed_ms"]), "blocks": blocks, "head": head, "scale": self.parts_scale,
                "offset": self.offset_ms, "merging_blocks": merging,
                "merge_offset": merging * self.merge_block_offset_ms}

    def predict(self, schedule, reducer: Optional[str] = None) -> float:
        """Predicted latency (ms per batch of ``target.batch_size``) of a schedule.

        ``reducer``: the reducer of blocks the schedule names none for (default: the model's, see the module).
        """
        p = self.predict_parts(schedule, reducer)
        ms = p["scale"] * (p["embed"] + sum(p["blocks"]) + p["head"]) + p["offset"] + p["merge_offset"]
        if not ms > 0:  # a negative offset larger than the parts: the table cannot stand for this model
            raise LatencyTableError(f"{self.source}: predicts {ms:.4g} ms for {list(self.schedule(schedule).counts)} "
                                    f"(offset_ms={self.offset_ms:g}); expected a positive latency: profile the "
                                    "table again")
        return ms

    def __repr__(self) -> str:
        return f"LatencyTable({self.model.get('name')}, {self.target})"


# ---------------------------------------------------------------------- profiling
