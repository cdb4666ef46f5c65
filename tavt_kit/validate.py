"""Files fgvc-kit reads back, checked: their format and version, and the values in them, field by field.

Every result and input file (``search.json``, latency tables, ``bench.json``, drop configs) names its
``format`` and ``version``; a reader refuses another format, a version newer than it knows, a binary file
given where JSON is expected (never unpickled, never decoded as text) and any value out of its range, each
with one line that names the file, the field and what was expected::

    run/search.json: budgets[0].best.holdout_accuracy=1.7: expected a fraction in [0, 1]

:class:`Fields` holds the checks one file's reader makes (its errors are of the reader's type, a
:class:`~tavt_kit.errors.ConfigError` unless it says otherwise); :func:`read_json` and :func:`check_format`
read and identify the file.
"""
from __future__ import annotations

import json
import math
import numbers
import os
from typing import Any, Iterable, Mapping, NoReturn, Optional, Sequence, Type

from .errors import ConfigError, TavtKitError

#: what each fgvc-kit format is, in words (a file given in the wrong place is named by what it is)
FORMATS = {
    "fgvc-kit/search": "a search result (search.json of fgvc-kit search)",
    "fgvc-kit/search-schedules": "the index of a search's drop configs (schedules.json of fgvc-kit search)",
    "fgvc-kit/search-journal": "a search journal",
    "fgvc-kit/latency-table": "a latency table (fgvc-kit bench profile)",
    "fgvc-kit/latency-predictions": "latency predictions (fgvc-kit bench predict)",
    "fgvc-kit/bench": "a bench result (bench.json of fgvc-kit bench)",
    "fgvc-kit/export": "an export record (export.json of fgvc-kit export)",
    "fgvc-kit/token-schedule": "a drop config (a token schedule)",
    "fgvc-kit/distill-run": "the configuration of a distill run",
}

#: the per-block reducers a schedule may name (null: the model's own)
REDUCERS = ("drop", "merge")
#: bytes that start binary files fgvc-kit is given by mistake, and what they are
_MAGIC = ((b"\x80", "a Python pickle"), (b"PK\x03\x04", "a zip archive (a PyTorch .pth, a .npz)"),
          (b"\x89PNG", "a PNG image"), (b"\xff\xd8\xff", "a JPEG image"), (b"\x7fELF", "an executable"))


def describe_format(fmt: Any) -> Optional[str]:
    """What an fgvc-kit ``format`` names, in words (None: not one of fgvc-kit's)."""
    return FORMATS.get(fmt) if isinstance(fmt, str) else None


def looks_binary(head: bytes) -> bool:
    """Whether the first bytes of a file are binary data rather than (UTF-8) text."""
    if not head:
        return False
    if b"\x00" in head or any(head.startswith(m) for m, _ in _MAGIC):
        return True
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as e:
        return e.start < len(head) - 4  # a character cut at the end of the sample is still text
    return False


def read_json(path, expected: str, error: Type[TavtKitError] = ConfigError, kind: Optional[str] = None) -> Any:
    """The JSON content of ``path``, or one ``error`` line naming the file: not found (``cannot read <kind>
    (file not found)``), a folder, empty, binary (``not a JSON file (binary data; expected <expected>)``:
    never unpickled or decoded) or not valid JSON. ``expected`` says what the file should be (``"the
    search.json of fgvc-kit search"``), ``kind`` what it is in two words (``"search result"``)."""
    path = os.fspath(path)
    kind = kind or "file"
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        raise error(f"{path}: cannot read {kind} (file not found)") from None
    except IsADirectoryError:
        raise error(f"{path}: cannot read {kind} (a folder; expected {expected})") from None
    except OSError as e:
        raise error(f"{path}: cannot read {kind} ({e.strerror})") from None
    if not data.strip():
        raise error(f"{path}: empty file; expected {expected}")
    if looks_binary(data[:4096]):
        raise error(f"{path}: not a JSON file (binary data; expected {expected})")
    try:
        return json.loads(data.decode("utf-8"))
    except UnicodeDecodeError:
        raise error(f"{path}: not a JSON file (binary data; expected {expected})") from None
    except json.JSONDecodeError as e:
        raise error(f"{path}: not valid JSON ({e.msg} at line {e.lineno}); expected {expected}") from None


def check_format(doc: Any, where: str, fmt: str, newest: int, what: str,
                 error: Type[TavtKitError] = ConfigError, oldest: int = 1) -> int:
    """``doc``'s version, once it is an object of format ``fmt`` of a version this reader knows
    (``oldest..newest``; a file without one is version 1); else one ``error`` line that names the file,
    the format it is (an fgvc-kit file of another kind is named by what it is) and ``what`` was expected."""
    if not isinstance(doc, Mapping):
        raise error(f"{where}: not {what} (a JSON {_json_type(doc)}, expected an object with \"format\": "
                    f"{fmt!r})")
    got = doc.get("format")
    if got != fmt:
        other = describe_format(got)
        said = f"this is {other}" if other else f"format {got!r}" if got is not None else "no \"format\" field"
        raise error(f"{where}: not {what} ({said}; expected format {fmt!r})")
    version = doc.get("version", 1)
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise error(f"{where}: version={version!r}: expected a positive integer")
    known = f"version {newest}" if oldest == newest else f"versions {oldest}..{newest}"
    if version > newest:
        raise error(f"{where}: version {version} is newer than this fgvc-kit reads ({known}); upgrade fgvc-kit")
    if version < oldest:
        raise error(f"{where}: version {version} is older than this fgvc-kit reads ({known}); make it again")
    return version


def _json_type(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "boolean"
    if isinstance(v, (int, float)):
        return "number"
    if isinstance(v, str):
        return "string"
    if isinstance(v, (list, tuple)):
        return "list"
    return "object" if isinstance(v, Mapping) else type(v).__name__


class Fields:
    """The checks of one file's values: each method returns the value (converted where it says so) or raises
    ``error`` with ``<where>: <field>=<value>: expected <what>``. ``field`` is the path to the value in the
    file (``budgets[0].best.counts``); a missing key is ``<field>: missing``."""

    def __init__(self, where: str, error: Type[TavtKitError] = ConfigError):
        self.where, self.error = where, error

    def fail(self, field: str, value: Any, expected: str) -> NoReturn:
        shown = repr(value)
        if len(shown) > 60:
            shown = shown[:57] + "..."
        raise self.error(f"{self.where}: {field}={shown}: expected {expected}")

    def missing(self, field: str, expected: str) -> NoReturn:
        raise self.error(f"{self.where}: {field}: missing; expected {expected}")

    # ------------------------------------------------------------- containers
    def get(self, obj: Mapping, key: str, field: str, expected: str, required: bool = False) -> Any:
        if key not in obj or (obj[key] is None and required):
            if required:
                self.missing(field, expected)
            return None
        return obj[key]

    def mapping(self, value: Any, field: str, optional: bool = True) -> Optional[Mapping]:
        if value is None and optional:
            return None
        if not isinstance(value, Mapping):
            self.fail(field, value, "an object")
        return value

    def sequence(self, value: Any, field: str, optional: bool = True, length: Optional[int] = None
                 ) -> Optional[list]:
        if value is None and optional:
            return None
        if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
            self.fail(field, value, "a list" + (f" of {length}" if length is not None else ""))
        if length is not None and len(value) != length:
            self.fail(field, value, f"a list of {length} (one per block), got {len(value)}")
        return list(value)

    # ---------------------------------------------------------------- scalars
    def number(self, value: Any, field: str, *, low: Optional[float] = None, high: Optional[float] = None,
               above: Optional[float] = None, optional: bool = True, integer: bool = False,
               expected: Optional[str] = None) -> Optional[float]:
        """A finite number (an integer where ``integer``) with ``low <= value <= high`` and ``value > above``;
        None passes where ``optional``."""
        if value is None and optional:
            return None
        what = expected or _range_words(low, high, above, integer)
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            self.fail(field, value, what)
        if integer and not (isinstance(value, numbers.Integral) or float(value).is_integer()):
            self.fail(field, value, what)
        v = float(value)
        if not math.isfinite(v) or (low is not None and v < low) or (high is not None and v > high) \
                or (above is not None and v <= above):
            self.fail(field, value, what)
        return int(value) if integer else value

    def fraction(self, value: Any, field: str, optional: bool = True) -> Optional[float]:
        """An accuracy or any share: a number in [0, 1]."""
        return self.number(value, field, low=0.0, high=1.0, optional=optional,
                           expected="a fraction in [0, 1]")

    def interval(self, value: Any, field: str, fraction: bool = True) -> None:
        """A confidence interval of a fraction: ``[low, high]`` within [0, 1], low <= high (``fraction=False``:
        of a positive quantity, a ratio)."""
        if value is None:
            return
        v = self.sequence(value, field, length=None)
        if len(v) != 2:
            self.fail(field, value, "[low, high] within [0, 1]" if fraction else "[low, high], positive")
        check = self.fraction if fraction else self.positive
        lo, hi = (check(x, f"{field}[{i}]", optional=False) for i, x in enumerate(v))
        if lo > hi:
            self.fail(field, value, "[low, high] with low <= high")

    def positive(self, value: Any, field: str, optional: bool = True, integer: bool = False) -> Optional[float]:
        return self.number(value, field, above=0.0, optional=optional, integer=integer)

    def non_negative(self, value: Any, field: str, optional: bool = True, integer: bool = False
                     ) -> Optional[float]:
        return self.number(value, field, low=0.0, optional=optional, integer=integer)

    def choice(self, value: Any, field: str, known: Sequence[Any], optional: bool = True, what: str = ""
               ) -> Any:
        if value is None and optional:
            return None
        if isinstance(value, bool) or value not in known:
            self.fail(field, value, f"{what + ', ' if what else ''}one of {', '.join(map(str, known))}")
        return value

    def text(self, value: Any, field: str, optional: bool = True) -> Optional[str]:
        if value is None and optional:
            return None
        if not isinstance(value, str) or not value.strip():
            self.fail(field, value, "a non-empty text")
        return value

    def flag(self, value: Any, field: str, optional: bool = True) -> Optional[bool]:
        if value is None and optional:
            return None
        if not isinstance(value, bool):
            self.fail(field, value, "true or false")
        return value

    def schedule(self, counts: Any, reducers: Any, field: str, depth: Optional[int] = None,
                 num_patches: Optional[int] = None, counts_key: str = "counts") -> list:
        """A token schedule as files record it (``field.counts``, ``field.reducers``): one patch-token count per
        block (``depth`` when known), each in [1, ``num_patches``], never increasing; reducers (optional) one per
        block, each drop, merge or null (a merge of more than half a block's tokens runs several bipartite
        rounds)."""
        where = f"{field}.{counts_key}" if field else counts_key
        counts = self.sequence(counts, where, optional=False, length=depth)
        if not counts:
            self.fail(where, counts, "one patch-token count per block")
        for i, c in enumerate(counts):
            self.number(c, f"{where}[{i}]", low=1, high=num_patches, integer=True, optional=False,
                        expected=f"a token count in [1, {num_patches}] (the model's patch tokens)" if num_patches
                        else "a positive token count")
        for i in range(1, len(counts)):
            if counts[i] > counts[i - 1]:
                self.fail(where, counts, f"counts that never increase (block {i} keeps {counts[i]} of the "
                                         f"{counts[i - 1]} tokens it receives)")
        rfield = f"{field}.reducers" if field else "reducers"
        for i, r in enumerate(self.sequence(reducers, rfield, length=len(counts)) or ()):
            self.choice(r, f"{rfield}[{i}]", REDUCERS, what="a reducer")
        return [int(c) for c in counts]

    def each(self, items: Optional[Iterable], field: str) -> Iterable:
        """``(field[i], item)`` for each item of an optional list."""
        for i, item in enumerate(self.sequence(items, field) or ()):
            yield f"{field}[{i}]", item


def _range_words(low, high, above, integer) -> str:
    kind = "an integer" if integer else "a number"
    if above is not None and above == 0 and high is None:
        return f"a positive {'integer' if integer else 'number'}"
    if low is not None and low == 0 and high is None and above is None:
        return f"a non-negative {'integer' if integer else 'number'}"
    parts = []
    if low is not None or high is not None:
        parts.append(f"in [{_g(low) if low is not None else '-inf'}, {_g(high) if high is not None else 'inf'}]")
    if above is not None:
        parts.append(f"above {_g(above)}")
    return f"{kind} {' and '.join(parts)}" if parts else ("an integer" if integer else "a finite number")


def _g(x: float) -> str:
    return f"{x:g}"


# ------------------------------------------------------------------ weights a file was made for
def tensors_digest(tensors: Mapping[str, Any]) -> str:
    """SHA-256 of a state dict's content (names, dtypes, shapes and bytes, in name order): the
    ``weights_sha256`` a checkpoint, a search and its drop configs record of the weights they were made for."""
    import hashlib

    import torch

    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.view(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def check_same_weights(recorded: Any, model, where: str, what: str, error: Type[TavtKitError] = ConfigError,
                       hint: str = "") -> None:
    """A file that records the weights it was made for (``weights_sha256``) must be used with those weights:
    else one ``error`` line naming both digests. ``what`` says what the file did with them (``searched``,
    ``was made for``); nothing is checked when the file records none."""
    if not recorded:
        return
    if not isinstance(recorded, str):
        raise error(f"{where}: weights_sha256={recorded!r}: expected a SHA-256 digest (hex text)")
    mine = tensors_digest(model.state_dict())
    if mine != recorded:
        raise error(f"{where}: {what} other weights (sha256 {recorded[:12]}...) than this checkpoint's "
                    f"({mine[:12]}...)" + (f"; {hint}" if hint else ""))
