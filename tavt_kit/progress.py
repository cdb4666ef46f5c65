"""Progress of long jobs (training, search, profiling): durations and estimated time left, as text."""
from __future__ import annotations

import math


def format_duration(seconds: float) -> str:
    """``1h02m``, ``3m05s``, ``12s`` (``?`` when unknown)."""
    if seconds is None or not math.isfinite(seconds):
        return "?"
    s = int(round(max(0.0, seconds)))
    if s >= 3600:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s"


def eta(done: float, total: float, elapsed: float) -> str:
    """Time left if the rest goes as fast as what is done (``?`` before anything is done)."""
    if done <= 0 or elapsed <= 0:
        return "?"
    return format_duration((total - done) * elapsed / done)


class Heartbeat:
    """A line every ``every`` seconds while a long step runs, so a job is never silent for long::

        with Heartbeat(log, "evaluating generation 3 (60 candidates)"):
            slow()

    prints ``  ... evaluating generation 3 (60 candidates): 10s`` from a background thread until the step ends;
    ``log`` None or ``every`` <= 0: nothing. ``progress`` (optional) returns extra text, e.g. ``12/60 done``.
    """

    def __init__(self, log, what: str, every: float = 10.0, progress=None):
        self.log, self.what, self.every, self.progress = log, what, float(every), progress
        self._stop = None
        self._thread = None

    def __enter__(self) -> "Heartbeat":
        import threading
        import time

        if self.log is None or self.every <= 0:
            return self
        self._stop = threading.Event()
        start = time.perf_counter()

        def beat() -> None:
            while not self._stop.wait(self.every):
                extra = ""
                if self.progress is not None:
                    try:
                        extra = f", {self.progress()}"
                    except Exception:  # a progress text must never break the job it reports on
                        extra = ""
                self.log(f"  ... {self.what}: {format_duration(time.perf_counter() - start)}{extra}")

        self._thread = threading.Thread(target=beat, name="fgvc-kit-heartbeat", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        if self._stop is not None:
            self._stop.set()
            self._thread.join()


#: a job estimated to take longer than this is called long (its estimate says what shortens it)
LONG_JOB_S = 3600.0


class Estimate:
    """How long a job of ``units`` (steps, generations, ...) takes on this machine, from a short timed start:
    ``seconds`` for the whole job, ``rate`` images/s when known."""

    def __init__(self, seconds: float, units: int, unit: str = "steps", rate=None):
        self.seconds, self.units, self.unit, self.rate = float(seconds), int(units), unit, rate

    @property
    def long(self) -> bool:
        """Over an hour (:data:`LONG_JOB_S`)."""
        return self.seconds > LONG_JOB_S

    def units_in(self, seconds: float = LONG_JOB_S) -> int:
        """How many units fit in ``seconds`` at the rate measured (at least 1)."""
        return max(1, int(self.units * seconds / max(1e-9, self.seconds)))

    def line(self, what: str, hint=None) -> str:
        """``train: ETA ~7h16m for 10000 steps (6 images/s on this machine); over an hour: HINT`` (``hint``:
        what shortens the job, in the caller's terms, e.g. a command-line flag)."""
        text = f"{what}: ETA ~{format_duration(self.seconds)} for {self.units} {self.unit}"
        if self.rate:
            text += f" ({self.rate:.0f} images/s on this machine)"
        if self.long:
            text += "; over an hour" + (f": {hint}" if hint else f" ({self.units_in()} {self.unit} fit in one)")
        return text

    def to_dict(self) -> dict:
        return {"seconds": self.seconds, "units": self.units, "unit": self.unit, "images_per_s": self.rate}


def timed_enough(units: int, seconds: float, min_units: int = 5, min_seconds: float = 20.0) -> bool:
    """Whether a timed start (``units`` done in ``seconds``, after a first warm-up one) is enough to estimate
    the rest: ``min_units`` of them, or fewer that took ``min_seconds`` (a slow job is not kept waiting)."""
    return units >= min_units or (units >= 1 and seconds >= min_seconds)
