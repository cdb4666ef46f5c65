"""The ratio of two latencies timed round-robin (``tavt_kit.bench.paired_ratio``): paired round by round, so a
machine that slows everything alike leaves it exact, and an interval that says how far it moved while timed."""
import pytest

from tavt_kit import ConfigError
from tavt_kit.bench import TimingPolicy, TimingStats, measure_round_robin, paired_ratio


def _stats(per_round):
    """TimingStats of ``per_round[r]`` = the samples of round r."""
    samples = [x for xs in per_round for x in xs]
    return TimingStats(samples, rounds_of=[r for r, xs in enumerate(per_round) for _ in xs])


def test_a_machine_slowing_both_alike_leaves_the_paired_ratio_exact():
    # the machine runs 1x, 2x, 1x, 3x ... slower from round to round: the medians of each alone move with it
    speed = [1, 2, 1, 3, 1, 2, 1.5, 1, 2.5, 1]
    full = _stats([[0.016 * s] * 3 for s in speed])
    option = _stats([[0.0064 * s] * 7 for s in speed])
    r = paired_ratio(option, full)
    assert r.ratio == pytest.approx(0.4) and r.interval == pytest.approx((0.4, 0.4)) and r.rounds == 10
    # the ratio of the medians is off wherever the two took their samples in different shares of the rounds
    lopsided = _stats([[0.0064 * s] * (7 if s == 1 else 1) for s in speed])
    assert lopsided.p50 / full.p50 != pytest.approx(0.4, abs=0.02)
    assert paired_ratio(lopsided, full).ratio == pytest.approx(0.4)


def test_a_ratio_that_moved_while_timed_is_not_within_a_share_its_median_is_under():
    # another process slowed the small option more than your model in some rounds (what seed 2's round showed):
    # its median ratio is 0.394, but it ran at up to 0.44 of your model
    moved = [0.37, 0.38, 0.39, 0.394, 0.394, 0.394, 0.40, 0.42, 0.43, 0.44, 0.38, 0.39, 0.41, 0.43, 0.37,
             0.394, 0.394, 0.39, 0.42, 0.38]
    full = _stats([[0.020]] * len(moved))
    option = _stats([[0.020 * m] for m in moved])
    r = paired_ratio(option, full)
    assert r.ratio == pytest.approx(0.394)
    assert r.low < 0.394 < r.high and r.high > 0.4
    assert not r.within(0.4) and r.within(0.45)
    assert r.to_dict()["interval"] == [r.low, r.high]


def test_without_rounds_the_ratio_is_the_medians_and_claims_no_width():
    r = paired_ratio(TimingStats([0.009]), TimingStats([0.016]))
    assert r.ratio == pytest.approx(9 / 16) and r.low == r.high == r.ratio and r.rounds == 0
    assert not r.within(0.5) and r.within(0.6)


def test_round_robin_records_each_samples_round_and_runs_min_rounds():
    fake = {"a": lambda: 0.002, "b": lambda: 0.004}
    pol = TimingPolicy(warmup=0, min_repeats=3, chunk_s=0.004, budget_s=5.0, min_rounds=12)
    st = measure_round_robin({k: (lambda: None) for k in fake}, pol, timer=fake)
    # constant timings converge at once; min_rounds keeps the rotation going
    assert st["a"].rounds == st["b"].rounds == 12
    assert sorted(set(st["a"].rounds_of)) == list(range(12)) and len(st["a"].rounds_of) == st["a"].n
    assert st["a"].to_dict()["rounds_of"] == st["a"].rounds_of
    r = paired_ratio(st["a"], st["b"])
    assert (r.ratio, r.rounds) == (pytest.approx(0.5), 12)
    with pytest.raises(ConfigError, match="min_rounds >= 1"):
        TimingPolicy(min_rounds=0)
    with pytest.raises(ValueError, match="round indices"):
        TimingStats([0.1, 0.2], rounds_of=[0])
