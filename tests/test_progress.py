"""Long steps are never silent: a heartbeat line while they run, and an ETA from measured times."""
import threading
import time

from tavt_kit.progress import Heartbeat


def test_a_heartbeat_prints_while_a_step_runs_and_stops_after_it():
    lines = []
    with Heartbeat(lines.append, "scoring", every=0.05, progress=lambda: "3/9 done"):
        time.sleep(0.3)
    n = len(lines)
    assert n >= 2 and all(s.startswith("  ... scoring: ") and s.endswith("3/9 done") for s in lines)
    time.sleep(0.15)
    assert len(lines) == n  # stopped with the step
    assert not any(t.name == "fgvc-kit-heartbeat" for t in threading.enumerate())


def test_a_heartbeat_survives_a_failing_progress_text_and_can_be_off():
    lines = []
    with Heartbeat(lines.append, "x", every=0.05, progress=lambda: 1 / 0):
        time.sleep(0.12)
    assert lines and lines[0].startswith("  ... x: ")
    with Heartbeat(None, "y"):
        pass


def test_the_search_eta_counts_the_candidates_left_at_the_measured_rate():
    from tavt_kit.search.evolution import EvolutionSearch, EvolutionSettings

    s = EvolutionSearch.__new__(EvolutionSearch)
    s.settings = EvolutionSettings(population=4, generations=5, mutations=3, crossovers=2, seed=0)
    s.evaluations, s.eval_seconds = 0, 0.0
    assert s._eta(1) == "?"  # nothing evaluated here yet (a resumed search): no made-up figure
    s.evaluations, s.eval_seconds = 10, 20.0  # 2 s per candidate
    assert s._eta(3) == "≤20s"  # 2 generations left, 5 children each
    assert s._eta(5) == "0s"
