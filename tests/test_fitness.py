"""Selection that holds: fitnesses (accuracy, NLL, KL to the full model), ties toward using the budget, intervals."""
import json
import math

import pytest
import torch

import tavt_kit
from tavt_kit.cli import main
from tavt_kit.schedules import SearchSpace
from tavt_kit.search.evaluate import CandidateEvaluator
from tavt_kit.search.evolution import Budget, Candidate, EvolutionSearch, EvolutionSettings
from tavt_kit.stats import paired_difference, wilson_interval

pytestmark = pytest.mark.usefixtures("one_thread")


def test_wilson_interval_matches_known_values():
    lo, hi = wilson_interval(90, 100)
    assert lo == pytest.approx(0.8256, abs=1e-4) and hi == pytest.approx(0.9448, abs=1e-4)
    assert wilson_interval(0, 10)[0] == 0.0 and wilson_interval(10, 10)[1] == pytest.approx(1.0)
    # 3000 images at ~93 %: the interval is about +-0.9 points
    lo, hi = wilson_interval(2790, 3000)
    assert 0.008 < (hi - lo) / 2 < 0.0095


def test_paired_difference_resolves_only_what_the_data_can():
    a = [True] * 950 + [False] * 50
    b = [True] * 900 + [False] * 100  # b misses 50 more images than a, never the other way round
    d = paired_difference(a, b)
    assert d["difference"] == pytest.approx(0.05) and d["resolved"] and d["interval"][0] > 0
    c = [True] * 899 + [False, True] + [False] * 99  # one image each way: no difference
    d = paired_difference(b, c)
    assert d["difference"] == 0 and not d["resolved"] and d["disagree"] == 2
    with pytest.raises(ValueError, match="same images"):
        paired_difference(a, b[:10])


@pytest.fixture(scope="module")
def model_and_data():
    torch.manual_seed(0)
    model = tavt_kit.create_model("fgvc_tiny", depth=4, img_size=32).eval()
    images = torch.randn(40, 3, 32, 32)
    with torch.no_grad():
        labels = model(images).argmax(-1)
    labels[::4] = (labels[::4] + 1) % 10
    return model, images, labels


def test_scores_match_the_model_and_kl_of_the_full_model_is_zero(model_and_data):
    model, images, labels = model_and_data
    space = SearchSpace.for_model(model, bound=0.3)
    scheds = [space.full(), space.smallest()]
    sc = CandidateEvaluator(model, images, labels, batch_size=16).scores(scheds, per_image=True)
    with torch.no_grad():
        ref_full = model(images).log_softmax(-1)
        small = model(images, drop=space.smallest()).log_softmax(-1)
    assert sc.kl[0] == pytest.approx(0.0, abs=1e-4)
    kl = float((ref_full.exp() * (ref_full - small)).sum())
    assert sc.kl[1] == pytest.approx(kl, rel=1e-4)
    assert sc.nll[1] == pytest.approx(float(-small.gather(1, labels[:, None]).sum()), rel=1e-4)
    assert sc.hits[1].tolist() == (small.argmax(-1) == labels).tolist()
    m = sc.metrics(1)
    assert m["accuracy"] == sc.correct[1] / 40 and m["kl"] == pytest.approx(kl / 40, rel=1e-4)


def test_ties_are_broken_toward_using_the_budget():
    space = SearchSpace(depth=2, num_patches=8, bounds=(0.5, 0.5))
    search = EvolutionSearch(space, lambda s: [], lambda s: 0, EvolutionSettings(), log=lambda line: None)
    for counts, acc, macs in (((8, 4), 0.9, 10), ((8, 6), 0.9, 30), ((8, 8), 0.9, 60), ((6, 6), 0.8, 5)):
        search.evaluated[counts] = Candidate(counts, acc, macs)
    assert search.best_within(Budget("macs", 40)).counts == (8, 6)  # not the cheaper tie (8, 4)
    assert search.best_within(Budget("macs", 100)).counts == (8, 8)


@pytest.mark.parametrize("fitness", ["accuracy", "nll", "kl"])
def test_search_maximises_the_chosen_fitness(model_and_data, fitness):
    model, images, labels = model_and_data
    ev = CandidateEvaluator(model, images, labels, batch_size=20)
    space = SearchSpace.for_model(model, bound=0.3)
    search = EvolutionSearch(space, lambda s: [ev.scores(s).metrics(i) for i in range(len(s))],
                             lambda s: tavt_kit.count_macs(model, s).total(),
                             EvolutionSettings(population=5, generations=1, mutations=4, crossovers=4),
                             log=lambda line: None, fitness=fitness)
    cands = search.run()
    budget = Budget("macs", 0.8 * tavt_kit.count_macs(model).total())
    best = search.best_within(budget)
    key = {"accuracy": lambda c: c.accuracy, "nll": lambda c: -c.nll, "kl": lambda c: -c.kl}[fitness]
    feasible = [c for c in cands if c.macs <= budget.limit]
    assert key(best) == max(key(c) for c in feasible)
    assert all(c.nll is not None and c.kl is not None for c in cands)


def test_search_json_and_report_carry_intervals_and_paired_differences(tmp_path, capsys):
    torch.manual_seed(0)
    m = tavt_kit.create_model("fgvc_tiny", depth=3, img_size=32)
    ckpt = str(tavt_kit.save_checkpoint(m, tmp_path / "supernet.safetensors"))
    full = tavt_kit.count_macs(m).total()
    out = tmp_path / "search"
    argv = ["search", "--checkpoint", ckpt, "--macs-budget", f"{0.85 * full:.0f}", "--out", str(out), "--population",
            "4", "--generations", "1", "--mutations", "3", "--crossovers", "3", "--subset", "48", "--fitness", "nll"]
    assert main(argv) == 0
    res = json.loads((out / "search.json").read_text())
    assert res["settings"]["fitness"] == "nll"
    b = res["budgets"][0]
    best = b["best"]
    lo, hi = best["test_interval"]
    assert lo <= best["test_accuracy"] <= hi and best["holdout_interval"][0] <= best["holdout_accuracy"]
    assert best["holdout_nll"] is not None and best["holdout_kl"] is not None
    for d in b["baselines"].values():
        vs = d["vs_searched"]
        assert vs["difference"] == pytest.approx(best["test_accuracy"] - d["test_accuracy"], abs=1e-9)
        assert vs["interval"][0] <= vs["difference"] <= vs["interval"][1] and isinstance(vs["resolved"], bool)
    assert all(math.isfinite(c["kl"]) for c in res["candidates"])
    text = capsys.readouterr().out
    assert "searched" in text and "[" in text
    assert main(["report", "--search", str(out / "search.json"), "--out", str(tmp_path / "report")]) == 0
    md = (tmp_path / "report" / "report.md").read_text()
    assert "fitness **nll**" in md and "95 %" in md
    if any(not d["vs_searched"]["resolved"] for d in b["baselines"].values()):
        assert "cannot tell them apart" in md
    # another fitness is another search: the journal of this one is not reused for it
    argv[argv.index("nll")] = "kl"
    assert main(argv) == 2
    assert "journal of a search with other settings" in capsys.readouterr().err
