import random

import pytest

from tavt_kit import ConfigError, TokenSchedule
from tavt_kit.schedules import SearchSpace

TAVT_448 = (628, 503, 403, 323, 259, 208, 167, 134, 108, 87, 70, 56)


def test_smallest_member_is_tavts_at_448():
    space = SearchSpace.tavt(12, 784)
    assert space.smallest().to_tavt_lengths() == TAVT_448
    assert space.full().is_full and space.contains(space.full()) and space.contains(space.smallest())


def test_sampling_is_seeded_and_stays_in_the_space():
    space = SearchSpace.tavt(12, 784)
    a = [space.sample(random.Random(3)) for _ in range(2)]
    assert a[0] == a[1]
    rng = random.Random(0)
    samples = [space.sample(rng) for _ in range(200)]
    assert all(space.contains(s) for s in samples)
    assert len({s.counts for s in samples}) > 150
    smallest = space.smallest().counts
    assert all(all(c >= m for c, m in zip(s.counts, smallest)) for s in samples)


def test_blocks_that_may_not_drop():
    space = SearchSpace.tavt(6, 64, bound=0.5, drop_blocks=[2, 4], num_prefix=0)
    assert space.smallest().counts == (64, 64, 32, 32, 16, 16)
    assert not space.contains(TokenSchedule((60, 60, 60, 60, 60, 60), 64))
    with pytest.raises(ConfigError, match="drop block 6 is outside"):
        SearchSpace.tavt(6, 64, drop_blocks=[6])
    with pytest.raises(ConfigError, match=r"drop bound of block 0 must be in \[0, 1\)"):
        SearchSpace(2, 64, (1.0, 0.0))


def test_json_round_trip():
    space = SearchSpace.tavt(6, 64, bound=0.3, min_tokens=4)
    assert SearchSpace.from_dict(space.to_dict()) == space
