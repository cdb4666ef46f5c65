"""Merge in the supernet and the search: spaces of several reducers, ToMe's baseline, distill and search --reducers."""
import json
import random

import pytest
import torch

import tavt_kit
from tavt_kit.cli import main
from tavt_kit.schedules import SearchSpace, TokenSchedule, tome_schedule
from tavt_kit.search.baselines import fit_tome
from tavt_kit.search.evaluate import CandidateEvaluator
from tavt_kit.search.evolution import EvolutionSearch, EvolutionSettings, gene_of, schedule_of

pytestmark = pytest.mark.usefixtures("one_thread")


def test_mixed_space_members_name_a_reducer_per_reducing_block():
    space = SearchSpace.tavt(4, 16, bound=0.3, reducers=("drop", "merge"))
    rng = random.Random(0)
    seen = set()
    for _ in range(30):
        s = space.sample(rng)
        assert space.contains(s) and s.reducers is not None
        prev = 16
        for c, r in zip(s.counts, s.reducers):
            assert (r is None) == (c == prev)  # a reducer exactly where tokens are removed
            seen.add(r)
            prev = c
    assert {"drop", "merge"} <= seen
    assert space.smallest("merge").reducers == ("merge",) * 4
    assert SearchSpace.from_dict(space.to_dict()) == space
    assert "reducers" not in SearchSpace.tavt(4, 16).to_dict()  # drop-only spaces keep their old format
    # past half of a block's tokens a merge runs several bipartite rounds: a wide space merges there too
    wide = SearchSpace.tavt(2, 16, bound=0.7, reducers=("drop", "merge"))
    s = wide.smallest("merge")
    assert s.counts[0] < 8 and s.reducers == ("merge", "merge") and wide.contains(s)
    with pytest.raises(tavt_kit.ConfigError, match="reducers"):
        SearchSpace.tavt(4, 16, reducers=("drop", "squash"))


def test_tome_baseline_is_constant_r_merge_everywhere_fitted_to_the_budget():
    s = tome_schedule(5, 4, 64)
    assert s.counts == (59, 54, 49, 44) and s.reducers == ("merge",) * 4
    assert tome_schedule(40, 3, 64).counts == (32, 16, 8)  # ToMe's clamp: at most half per block
    cost = lambda sch: sum(sch.counts)  # noqa: E731  (MAC-like: falls as r grows)
    fitted = fit_tome(4, 64, cost, 200)
    r = 64 - fitted.counts[0]
    assert cost(fitted) <= 200 and cost(tome_schedule(r - 1, 4, 64)) > 200


def test_gene_round_trip_and_mixed_evolution_stays_in_the_space():
    torch.manual_seed(0)
    model = tavt_kit.create_model("fgvc_tiny", depth=3, img_size=32).eval()
    images, labels = torch.randn(16, 3, 32, 32), torch.randint(0, 10, (16,))
    space = SearchSpace.for_model(model, bound=0.3, reducers=("drop", "merge"))
    s = space.smallest("merge")
    assert schedule_of(gene_of(s), 16) == s
    ev = CandidateEvaluator(model, images, labels, batch_size=8)
    search = EvolutionSearch(space, lambda ss: [ev.scores(ss).metrics(i) for i in range(len(ss))],
                             lambda ss: tavt_kit.count_macs(model, ss).total(),
                             EvolutionSettings(population=6, generations=2, mutations=5, crossovers=5),
                             log=lambda line: None)
    cands = search.run()
    assert any(c.reducers and "merge" in c.reducers for c in cands)
    assert any(c.reducers and "drop" in c.reducers for c in cands)
    for c in cands:
        sched = schedule_of(c.gene, 16)
        assert space.contains(sched)
        with torch.no_grad():  # the evaluator's accuracy is the model's own at that mixed schedule
            hits = int((model(images, drop=sched).argmax(-1) == labels).sum())
        assert c.accuracy == pytest.approx(hits / 16)


def test_prefix_tree_scores_mixed_schedules_exactly_like_the_model():
    torch.manual_seed(1)
    model = tavt_kit.create_model("fgvc_tiny", depth=4, img_size=32).eval()
    images, labels = torch.randn(20, 3, 32, 32), torch.randint(0, 10, (20,))
    space = SearchSpace.for_model(model, bound=0.4, reducers=("drop", "merge"))
    rng = random.Random(3)
    scheds = [space.full(), space.smallest("merge"), space.smallest("drop")] + [space.sample(rng) for _ in range(8)]
    scheds.append(TokenSchedule((16, 12, 9, 7), 16, reducers=("merge", "drop", "merge", "drop")))
    scheds.append(TokenSchedule((16, 12, 9, 6), 16, reducers=("merge", "drop", "merge", "merge")))  # shares 3 blocks
    tree = CandidateEvaluator(model, images, labels, batch_size=8).scores(scheds, per_image=True)
    plain = CandidateEvaluator(model, images, labels, batch_size=8, use_tree=False).scores(scheds, per_image=True)
    assert tree.correct == plain.correct and torch.equal(tree.hits, plain.hits)
    assert tree.kl == pytest.approx(plain.kl, rel=1e-4, abs=1e-5)
    with torch.no_grad():
        for i, s in enumerate(scheds):
            assert tree.hits[i].tolist() == (model(images, drop=s).argmax(-1) == labels).tolist()


def test_distill_and_search_with_both_reducers(tmp_path, capsys):
    torch.manual_seed(0)
    m = tavt_kit.create_model("fgvc_tiny", depth=3, img_size=32)
    teacher = str(tavt_kit.save_checkpoint(m, tmp_path / "teacher.safetensors"))
    dist = tmp_path / "distill"
    small = ["--steps", "2", "--batch-size", "16", "--eval-every", "2", "--warmup-steps", "1", "--no-progress"]
    assert main(["distill", "--checkpoint", teacher, "--out", str(dist), "--reducers", "drop,merge"] + small) == 0
    spec = tavt_kit.models.read_spec(str(dist / "best.safetensors"))
    assert spec["search_space"]["reducers"] == ["drop", "merge"]
    supernet = tavt_kit.load_checkpoint(str(dist / "best.safetensors"))
    full = tavt_kit.count_macs(supernet).total()
    out = tmp_path / "search"
    assert main(["search", "--checkpoint", str(dist / "best.safetensors"), "--macs-budget", f"{0.85 * full:.0f}",
                 "--out", str(out), "--population", "5", "--generations", "1", "--mutations", "4",
                 "--crossovers", "4", "--subset", "32"]) == 0
    res = json.loads((out / "search.json").read_text())
    assert res["space"]["reducers"] == ["drop", "merge"]
    assert any(c.get("reducers") for c in res["candidates"])
    b = res["budgets"][0]
    assert b["baselines"]["tome"]["reducers"] == ["merge"] * 3 and b["baselines"]["tome"]["macs"] <= 0.85 * full
    best = b["best"]
    # the drop config and the search result both carry the pick's reducers, and export-side readers keep them
    saved = TokenSchedule.load(out / b["schedule_file"])
    assert list(saved.counts) == best["counts"] and (list(saved.reducers or []) or None) == best.get("reducers")
    from tavt_kit.search import SearchResult

    sched, _ = SearchResult.load(out / "search.json").schedule(supernet, b["label"])
    assert sched == saved


def test_a_space_past_tomes_halving_distills_and_searches_several_rounds(tmp_path, capsys):
    """--bound above 0.5 with merging: the supernet trains and the search picks blocks that merge more than half
    of their tokens (several bipartite rounds), under a MAC budget ToMe's one halving per block cannot meet."""
    torch.manual_seed(0)
    m = tavt_kit.create_model("fgvc_tiny", depth=3, img_size=32)
    teacher = str(tavt_kit.save_checkpoint(m, tmp_path / "teacher.safetensors"))
    dist = tmp_path / "distill"
    small = ["--steps", "2", "--batch-size", "16", "--eval-every", "2", "--warmup-steps", "1", "--no-progress"]
    assert main(["distill", "--checkpoint", teacher, "--out", str(dist), "--reducers", "merge", "--bound", "0.7"]
                + small) == 0
    supernet = tavt_kit.load_checkpoint(str(dist / "best.safetensors"))
    n = supernet.num_patches
    halving = TokenSchedule((n // 2, n // 4, n // 8), n, reducers=("merge",) * 3)
    budget = int(0.97 * tavt_kit.count_macs(supernet, halving).total())
    out = tmp_path / "search"
    assert main(["search", "--checkpoint", str(dist / "best.safetensors"), "--macs-budget", str(budget),
                 "--out", str(out), "--population", "5", "--generations", "1", "--mutations", "4",
                 "--crossovers", "4", "--subset", "32"]) == 0
    best = json.loads((out / "search.json").read_text())["budgets"][0]["best"]
    assert best["macs"] <= budget
    prev, deep = n, []
    for c, r in zip(best["counts"], best["reducers"]):
        deep.append(r == "merge" and prev - c > prev // 2)
        prev = c
    assert any(deep)
    with torch.no_grad():  # and it runs as searched
        supernet(torch.randn(2, 3, 32, 32), drop=TokenSchedule(tuple(best["counts"]), n,
                                                               reducers=tuple(best["reducers"])))


@pytest.mark.parametrize("argv,match", [
    (["--reducers", "drop,squash"], "--reducers drop,squash: expected drop, merge or drop,merge"),
    (["--reducers", ""], "--reducers '': expected drop, merge"),
])
def test_bad_reducers_are_one_line_errors(tmp_path, capsys, argv, match):
    m = tavt_kit.create_model("fgvc_tiny", depth=3, img_size=32)
    teacher = str(tavt_kit.save_checkpoint(m, tmp_path / "teacher.safetensors"))
    assert main(["distill", "--checkpoint", teacher, "--out", str(tmp_path / "d"), "--steps", "1"] + argv) == 2
    err = capsys.readouterr().err.strip()
    assert match in err and len(err.splitlines()) == 1
