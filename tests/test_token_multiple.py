"""``token_multiple`` (``fgvc-kit search --token-multiple 8``): the search keeps only schedules whose reducing blocks
leave sequence lengths that are multiples of N, and profiles its latency table at such lengths."""
import json
import random

import pytest
import torch

import tavt_kit
from tavt_kit import DeploymentTarget, search_schedules
from tavt_kit.bench.profile import aligned_grid, default_grid
from tavt_kit.errors import ConfigError
from tavt_kit.schedules.space import SearchSpace
from tavt_kit.search import EvolutionSettings, LatencyOptions, SpaceOptions
from tavt_kit.search.evolution import EvolutionSearch
from tavt_kit.search.objective import table_file_name
from conftest import random_splits, search_model

EVO = EvolutionSettings(population=6, generations=2, mutations=4, crossovers=4, seed=0)
FAST = dict(grid=3, warmup=1, min_repeats=3, budget_s=0.02)


def aligned(schedule, num_patches, multiple=8, prefix=1) -> bool:
    """Whether every reducing block leaves a sequence length that is a multiple of ``multiple``."""
    prev = num_patches
    for c in schedule.counts if hasattr(schedule, "counts") else schedule:
        if c < prev and (c + prefix) % multiple:
            return False
        prev = c
    return True


def test_an_aligned_space_holds_only_aligned_members_and_reaches_as_far_as_alignment_allows():
    plain = SearchSpace.tavt(6, 576, 0.7)
    space = plain.aligned(8)
    rng = random.Random(0)
    for _ in range(200):
        s = space.sample(rng)
        assert space.contains(s) and plain.contains(s) and aligned(s, 576)
    smallest = space.smallest()
    assert smallest.counts == (175, 55, 23, 7, 7, 7)  # 7 + the class token = 8: no block can go lower
    assert plain.smallest().counts == (173, 52, 15, 4, 1, 1)
    assert not space.contains(plain.smallest()) and plain.contains(smallest)
    # multiple 1 is the space itself, member for member
    assert SearchSpace.tavt(6, 576, 0.7).aligned(1) == plain
    for _ in range(50):
        ratios = [rng.uniform(0, 0.7) for _ in range(6)]
        assert plain.aligned(1).from_drop_ratios(ratios) == plain.from_drop_ratios(ratios)
    assert SearchSpace.from_dict(space.to_dict()) == space and "multiple" not in plain.to_dict()


def test_snap_takes_the_nearest_allowed_count_and_keeps_every_token_where_none_is():
    space = SearchSpace.tavt(3, 64, 0.5).aligned(8)  # from 64 (+1): counts down to 32, aligned 39, 47, 55, 63
    assert space.snap(0, 64, 50) == 47 and space.snap(0, 64, 52) == 55
    assert space.snap(0, 64, 51) == 55  # a tie goes to more tokens
    assert space.snap(0, 64, 10) == 39  # below the bound: the lowest allowed
    assert space.snap(0, 64, 64) == 64 and space.snap(0, 64, 62) == 63
    assert space.snap(1, 9, 5) == 7 and space.snap(1, 6, 3) == 6  # nothing aligned under 6 tokens: keep them all
    pooled = SearchSpace(3, 64, (0.5,) * 3, num_prefix=0).aligned(8)  # no class token: the counts themselves
    assert pooled.snap(0, 64, 50) == 48 and pooled.smallest().counts == (32, 16, 8)


def test_aligned_down_moves_each_reducing_block_down_to_an_aligned_length():
    from tavt_kit import TokenSchedule

    s = TokenSchedule((463, 218, 124, 103, 37, 11), 576)
    assert s.aligned_down(8).counts == (463, 215, 119, 103, 31, 7)
    assert TokenSchedule((576, 300, 3, 1), 576).aligned_down(8).counts == (576, 295, 7, 7)  # 7: the lowest
    assert TokenSchedule((5, 3), 6).aligned_down(8).counts == (6, 6)  # nothing aligned below 6: all kept
    assert TokenSchedule((50, 48), 64).aligned_down(8).counts == (47, 47)  # never more than the block before
    merged = TokenSchedule((400, 200, 200), 576, reducers=("merge", "drop", None)).aligned_down(8)
    assert merged.counts == (399, 199, 199) and merged.reducers == ("merge", "drop", None)


@pytest.mark.parametrize("bad", [0, -8, 1.5, True, "8", 1000])
def test_a_bad_multiple_is_refused_naming_it(bad):
    with pytest.raises(ConfigError, match="token_multiple="):
        SearchSpace.tavt(3, 64, 0.5).aligned(bad)


def test_the_evolution_breeds_only_aligned_schedules():
    space = SearchSpace.tavt(4, 196, 0.5).aligned(8)
    seen = []

    def accuracy(schedules):
        seen.extend(schedules)
        return [sum(s.counts) / 1000 for s in schedules]

    search = EvolutionSearch(space, accuracy, lambda s: sum(s.counts), EVO, log=lambda s: None)
    search.run()
    assert len(seen) > 10 and all(aligned(s, 196) for s in seen)
    # the operators on their own: any counts repaired into the space are aligned
    for counts in ([150, 120, 90, 60], [190.4, 100.2, 51, 30], [196, 196, 20, 3]):
        assert aligned(search.repair(counts)[0], 196)
    a, b = (150, 103, 71, 39), (191, 119, 95, 63)
    assert aligned(search.crossover((a, ()), (b, ()))[0], 196)
    assert all(aligned(search.mutate((a, ()))[0], 196) for _ in range(20))


def test_an_aligned_grid_measures_the_counts_an_aligned_search_uses():
    assert default_grid(576, 9) == [1, 72, 144, 216, 288, 360, 432, 504, 576]
    assert aligned_grid(576, 9, 8) == [7, 71, 143, 215, 287, 359, 431, 503, 576]
    assert aligned_grid(576, 9, 1) == default_grid(576, 9)
    assert aligned_grid(64, 3, 8) == [7, 31, 64]  # the full count stays: your model's blocks are on the grid


def test_the_search_with_a_multiple_picks_aligned_schedules_on_an_aligned_table(tmp_path):
    torch.manual_seed(0)
    model = tavt_kit.create_model("fgvc_tiny", depth=3, img_size=32, patch_size=4, num_classes=4).eval()
    data = random_splits(24, 24)
    target = DeploymentTarget(backend="torch", threads=1)
    cache = tmp_path / "tables"
    lines = []
    res = search_schedules(model, data, ["100ms", "60%"], evolution=EVO,
                           latency=LatencyOptions(target=target, table_cache=str(cache), table_profile=FAST),
                           space=SpaceOptions(token_multiple=8, bound=0.5), out=str(tmp_path / "s"), parent=None,
                           log=lines.append)
    n = model.num_patches
    table = cache / table_file_name(target, 8)
    assert table.is_file() and not (cache / table_file_name(target)).exists()
    tdata = json.loads(table.read_text())
    grid = tdata["grid"]
    assert grid[-1] == n and all((g + 1) % 8 == 0 for g in grid[:-1]) and tdata["token_multiple"] == 8
    anchors = [a["schedule"] for a in tdata["calibration"]]  # fitted on whole models the search would pick
    assert len(anchors) > 2 and all(aligned(a, n) for a in anchors)
    assert res.doc["space"]["multiple"] == 8
    assert any("multiples of 8" in line for line in lines)  # the log says the space is restricted
    counts = [c["counts"] for c in res.doc["candidates"]]
    assert len(counts) > 5 and all(aligned(c, n) for c in counts)
    assert any(c[-1] < n for c in counts)  # it did reduce
    for b in res.doc["budgets"]:
        assert b.get("best") is None or aligned(b["best"]["counts"], n)


def test_the_cli_refuses_a_bad_multiple_naming_the_flag(tmp_path, capsys):
    from tavt_kit.cli import main

    ckpt = tavt_kit.save_checkpoint(search_model(), tmp_path / "m.safetensors")
    rc = main(["search", "--checkpoint", str(ckpt), "--dataset", "cluttered-digits", "--macs-budget", "5M", "--token-multiple",
               "0", "--out", str(tmp_path / "s")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc != 0 and len(err) == 1 and "--token-multiple" in err[0] and "[1, 256]" in err[0]


def test_bench_profile_makes_an_aligned_table_and_a_search_says_when_its_table_is_not(tmp_path, capsys):
    from tavt_kit.bench import LatencyTable
    from tavt_kit.cli import main
    from tavt_kit.search.objective import latency_objectives

    out = tmp_path / "t"
    fast = ["--warmup", "1", "--min-repeats", "3", "--time-budget", "0.02", "--threads", "1", "--quiet"]
    assert main(["bench", "profile", "--grid", "3", "--token-multiple", "8", "--no-plot", "--out", str(out)]
                + fast) == 0
    table = LatencyTable.load(str(out / "latency_table.json"))
    assert table.data["token_multiple"] == 8 and table.data["grid"] == [7, 31, 64]
    model = tavt_kit.create_model("fgvc_tiny", num_classes=10).eval()
    lines = []
    latency_objectives(model, ["fp32"], table=table, token_multiple=8, log=lines.append)
    warned = [line for line in lines if line.startswith("warning")]
    assert not warned  # the table is for this search
    assert any("latency verdict of this search is predicted" in line for line in lines)  # a table alone predicts
    lines = []
    latency_objectives(model, ["fp32"], table=table, log=lines.append)
    warned = [line for line in lines if line.startswith("warning")]
    assert len(warned) == 1 and "multiples of 8" in warned[0] and "--token-multiple 1" in warned[0]
