import json

import pytest

from tavt_kit import ScheduleError, TokenSchedule, TavtKitError


def test_counts_and_properties():
    s = TokenSchedule((64, 48, 48, 10), 64)
    assert s.depth == 4 and list(s) == [64, 48, 48, 10] and not s.is_full
    assert TokenSchedule.full(4, 64).is_full
    assert s.keep_ratios() == (1.0, 0.75, 1.0, 10 / 48)


@pytest.mark.parametrize("counts, msg", [
    ((64, 65, 3), "above the grid"),
    ((64, 30, 31), "increases"),
    ((64, 30, 0), "below the minimum"),
    ((64, 30.5, 3), "integer"),
    ((64, "30", 3), "integer"),
    ((64, True, 1), "integer"),
    ((), "empty"),
])
def test_invalid_schedules_raise_one_line_errors(counts, msg):
    with pytest.raises(ScheduleError, match=msg) as e:
        TokenSchedule(counts, 64)
    assert "\n" not in str(e.value)
    assert isinstance(e.value, TavtKitError)


def test_min_tokens_is_enforced():
    with pytest.raises(ScheduleError, match="below the minimum of 4"):
        TokenSchedule((64, 3), 64, min_tokens=4)


def test_wrong_length_for_model():
    with pytest.raises(ScheduleError, match="3 counts, the model has 4 blocks"):
        TokenSchedule.coerce([64, 32, 16], 4, 64)


def test_from_ratios_is_relative_to_incoming_tokens_and_rounds_up():
    # EViT-style: keep 0.7 at blocks 3, 6, 9 of a 12-block ViT-B/16 at 224 (196 patches)
    s = TokenSchedule.from_ratios({3: 0.7, 6: 0.7, 9: 0.7}, 12, 196)
    assert s.counts == (196, 196, 196, 138, 138, 138, 97, 97, 97, 68, 68, 68)
    assert TokenSchedule.from_ratios([1.0, 0.5, 0.5], 3, 64).counts == (64, 32, 16)
    with pytest.raises(ScheduleError, match=r"keep ratio of block 1 must be a number in \(0, 1\]"):
        TokenSchedule.from_ratios([1.0, 1.5, 0.5], 3, 64)
    with pytest.raises(ScheduleError, match="outside blocks"):
        TokenSchedule.from_ratios({12: 0.5}, 12, 196)


def test_tavt_lengths_count_the_class_token():
    lengths = (628, 503, 403, 323, 259, 208, 167, 134, 108, 87, 70, 56)  # TAVT's smallest at 448
    s = TokenSchedule.from_tavt_lengths(lengths, 784)
    assert s.counts[0] == 627 and s.counts[-1] == 55
    assert s.to_tavt_lengths() == lengths


def test_json_round_trip(tmp_path):
    s = TokenSchedule((64, 40, 20), 64, min_tokens=2)
    path = tmp_path / "drop.json"
    s.save(path, model_info={"name": "fgvc_tiny"})
    back = TokenSchedule.load(path)
    assert back == s and back.meta == {"name": "fgvc_tiny"}
    assert TokenSchedule.from_json(s.to_json()) == s


def test_bad_json_files(tmp_path):
    p = tmp_path / "bad.json"
    p.write_text("{not json")
    with pytest.raises(ScheduleError, match="bad.json: not valid JSON"):
        TokenSchedule.load(p)
    p.write_text(json.dumps({"counts": [3, 2]}))
    with pytest.raises(ScheduleError, match="missing field 'num_patches'"):
        TokenSchedule.load(p)
    with pytest.raises(ScheduleError, match="cannot read drop config"):
        TokenSchedule.load(tmp_path / "missing.json")
