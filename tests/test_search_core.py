import json
import random

import pytest
import torch

import tavt_kit
from tavt_kit.schedules import SearchSpace
from tavt_kit.search.evaluate import CandidateEvaluator
from tavt_kit.search.evolution import (Budget, Candidate, EvolutionSearch, EvolutionSettings, Journal,
                                       front_area, pareto_front)


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    model = tavt_kit.create_model("fgvc_tiny", depth=4).eval()
    images = torch.randn(24, 3, 64, 64)
    with torch.no_grad():
        labels = model(images).argmax(-1)  # the full model is right on every image
    labels[::3] = (labels[::3] + 1) % 10
    return model, images, labels


@pytest.mark.parametrize("scorer,fuse", [("tavt", False), ("cls", True)])
def test_prefix_tree_gives_identical_accuracies(setup, scorer, fuse):
    model, images, labels = setup
    model.scorer, model.fuse = scorer, fuse
    space = SearchSpace.for_model(model, bound=0.3)
    rng = random.Random(1)
    scheds = [space.full(), space.smallest()] + [space.sample(rng) for _ in range(6)]
    scheds.append(tavt_kit.TokenSchedule((64, 64, 50, 40), 64))
    scheds.append(tavt_kit.TokenSchedule((64, 64, 50, 30), 64))  # shares three blocks with the previous one
    fast = CandidateEvaluator(model, images, labels, batch_size=16)
    got = fast.correct(scheds)
    with torch.no_grad():
        ref = [sum(int((model(images[i:i + 16], drop=s).argmax(-1) == labels[i:i + 16]).sum())
                   for i in range(0, 24, 16)) for s in scheds]
    assert got == ref
    assert fast.stats.block_runs < fast.stats.block_runs_naive
    assert fast.correct(scheds) == ref  # second call uses the cached embeddings
    model.scorer, model.fuse = "tavt", False


def test_pareto_front_and_area():
    cands = [Candidate((1,), 0.5, 10), Candidate((2,), 0.4, 20), Candidate((3,), 0.7, 30), Candidate((4,), 0.7, 40)]
    front = pareto_front(cands)
    assert [c.counts for c in front] == [(1,), (3,)]
    assert front_area(front, "macs", 10, 40) == pytest.approx((20 * 0.5 + 10 * 0.7) / 30)


def _search(model, images, labels, journal=None, budgets=(), generations=2, seed=0):
    ev = CandidateEvaluator(model, images, labels, batch_size=20)
    space = SearchSpace.for_model(model, bound=0.3)
    settings = EvolutionSettings(population=5, generations=generations, mutations=4, crossovers=4, seed=seed)
    search = EvolutionSearch(space, lambda s: [c / len(ev) for c in ev.correct(s)],
                             lambda s: tavt_kit.count_macs(model, s).total(), settings,
                             budgets=budgets, journal=journal, log=lambda line: None)
    search.run()
    return search


def test_evolution_is_deterministic_respects_the_space_and_budgets(setup):
    model, images, labels = setup
    full = tavt_kit.count_macs(model).total()
    budget = Budget("macs", 0.7 * full)
    a = _search(model, images, labels, budgets=[budget])
    b = _search(model, images, labels, budgets=[budget])
    assert list(a.evaluated) == list(b.evaluated)
    space = SearchSpace.for_model(model, bound=0.3)
    assert all(space.contains(tavt_kit.TokenSchedule(g[0], 64)) for g in a.evaluated)
    best = a.best_within(budget)
    assert best.macs <= budget.limit
    assert all(c.accuracy <= best.accuracy for c in a.feasible(budget))
    assert len(a.evaluated) > 6


def test_killed_search_resumes_without_reevaluating(setup, tmp_path):
    model, images, labels = setup
    path = str(tmp_path / "journal.jsonl")
    header = {"settings": {"seed": 0}}
    whole = _search(model, images, labels, generations=2)
    _search(model, images, labels, Journal(path, header), generations=1)  # "killed" after generation 1
    with open(path, "a") as f:
        f.write('{"kind": "candidate", "counts": [6')  # torn write
    first_run = len(Journal(path, header).entries)
    resumed = _search(model, images, labels, Journal(path, header), generations=2)
    assert list(resumed.evaluated) == list(whole.evaluated)
    assert 0 < first_run and resumed.evaluations == len(whole.evaluated) - first_run
    with pytest.raises(tavt_kit.ConfigError, match=r"other settings \(seed: 0 -> 1\)"):
        Journal(path, {"settings": {"seed": 1}})


def test_a_journal_resumes_when_its_table_is_named_by_another_path(tmp_path, monkeypatch):
    """The same latency table named relatively by one run and absolutely (or ./-prefixed) by the next is the same
    search; another table is not, and the refusal names the field."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "t.json").write_text("{}")
    path = str(tmp_path / "journal.jsonl")
    Journal(path, {"settings": {"seed": 0, "latency": {"table": "t.json", "batch_size": 32}}})
    for same in (str(tmp_path / "t.json"), "./t.json"):
        Journal(path, {"settings": {"seed": 0, "latency": {"table": same, "batch_size": 32}}})
    with pytest.raises(tavt_kit.ConfigError, match=r"other settings \(latency\.table: "):
        Journal(path, {"settings": {"seed": 0, "latency": {"table": "other.json", "batch_size": 32}}})


def test_baselines_meet_their_budgets():
    from tavt_kit.schedules import evit_blocks
    from tavt_kit.search.baselines import baseline_schedules

    model = tavt_kit.create_model("vit_base_patch16_224", img_size=448, depth=12, embed_dim=64, num_heads=2)
    cost = lambda s: tavt_kit.count_macs(model, s).total()
    full = cost(model.full_schedule())
    out = baseline_schedules(12, 784, cost, {"half": 0.5 * full, "tiny": 0.001 * full})
    assert evit_blocks(12) == [3, 6, 9]
    assert out["fixed"]["evit 0.7"].counts[3] == 549
    for name in ("uniform", "evit"):
        s = out["half"][name]
        assert cost(s) <= 0.5 * full and cost(s) > 0.45 * full  # the largest ratio that fits
    assert out["tiny"] == {}  # nothing of that shape fits


def test_a_torn_journal_line_is_cut_before_appending_and_garbage_is_named(tmp_path):
    from tavt_kit.errors import ConfigError

    path = str(tmp_path / "journal.jsonl")
    j = Journal(path, {"settings": {"a": 1}})
    j.record(((4, 2), ()), accuracy=0.5)
    with open(path, "a") as f:
        f.write('{"kind": "candidate", "counts": [50,')  # killed mid-write
    j2 = Journal(path, {"settings": {"a": 1}})
    assert list(j2.entries) == [((4, 2), ())]
    j2.record(((3, 1), ()), accuracy=0.25)
    j3 = Journal(path, {"settings": {"a": 1}})  # a third run reads every line
    assert set(j3.entries) == {((4, 2), ()), ((3, 1), ())}
    lines = open(path).read().splitlines()
    assert all(json.loads(line) for line in lines)
    with open(path, "a") as f:
        f.write("garbage\n" + json.dumps({"kind": "candidate", "counts": [2, 1], "accuracy": 0.1}) + "\n")
    with pytest.raises(ConfigError, match=r"journal.jsonl: line 4 is not a journal record"):
        Journal(path, {"settings": {"a": 1}})


def test_resume_and_reuse_are_keyed_on_the_weights_not_the_path(tmp_path):
    import tavt_kit
    from tavt_kit.errors import ConfigError, ScheduleError
    from tavt_kit.models import weights_digest
    from tavt_kit.search import SearchResult

    torch.manual_seed(0)
    model = tavt_kit.create_model("fgvc_tiny", num_classes=10)
    path = str(tmp_path / "supernet.safetensors")
    tavt_kit.save_checkpoint(model, path)
    loaded = tavt_kit.load_checkpoint(path)
    assert loaded.spec["weights_sha256"] == weights_digest(loaded) == weights_digest(model)
    settings = {"settings": {"weights_sha256": weights_digest(loaded)}}
    Journal(str(tmp_path / "j.jsonl"), settings)
    with torch.no_grad():  # retrained into the same path: another search
        loaded.blocks[0].mlp.fc1.weight.add_(1.0)
    with pytest.raises(ConfigError, match="journal of a search with other settings"):
        Journal(str(tmp_path / "j.jsonl"), {"settings": {"weights_sha256": weights_digest(loaded)}})
    doc = {"format": "fgvc-kit/search", "model": {"weights_sha256": weights_digest(model)},
           "budgets": [{"label": "20M MACs", "objective": "macs", "limit": 2e7,
                        "best": {"counts": [64, 48, 32, 16, 8, 4]}}]}
    (tmp_path / "search.json").write_text(json.dumps(doc))
    assert SearchResult.load(tmp_path / "search.json").schedule(model, "20M MACs")[0].counts == (64, 48, 32, 16, 8, 4)
    with pytest.raises(ScheduleError, match="searched other weights"):
        SearchResult.load(tmp_path / "search.json").schedule(loaded, "20M MACs")
