"""The winner's-curse correction of the search's pick: each candidate's paired noise is measured, a lucky cheap
candidate is pulled back toward the compute trend, and the recommendation compares the corrected figure."""
import math
import random
import pytest
import torch

import tavt_kit
from tavt_kit.data import Normalize
from tavt_kit.search import EvolutionSettings, ShipPolicy
from tavt_kit.search.data import search_data
from tavt_kit.search.evaluate import CandidateEvaluator
from tavt_kit.search.evolution import Budget, Candidate, EvolutionSearch
from tavt_kit.search.recommend import recommend
from tavt_kit.search.shrinkage import MIN_CANDIDATES, fit_shrinkage

pytestmark = pytest.mark.usefixtures("one_thread")
EVO = EvolutionSettings(population=4, generations=1, mutations=3, crossovers=3, seed=0)


def test_each_candidate_gets_its_standard_error_as_a_difference_to_the_full_model(trained_checkpoint, tmp_path):
    model = tavt_kit.load_checkpoint(trained_checkpoint).eval()
    data = search_data(model, None, cache_dir=str(tmp_path), log=lambda s: None)
    x, y = data.holdout.images[:40], data.holdout.labels[:40]
    norm = Normalize.from_model(model)
    n = model.num_patches
    scheds = [model.full_schedule(), model.make_schedule(tavt_kit.TokenSchedule((n // 2,) * model.depth, n))]
    with torch.inference_mode():
        got = CandidateEvaluator(model, x, y, batch_size=16, transform=norm).scores(scheds)
        logp = [model(norm(x), drop=s).float().log_softmax(-1) for s in scheds]
    nll = [-lp.gather(1, y.view(-1, 1)).squeeze(1).double() for lp in logp]
    hit = [(lp.argmax(-1) == y).double() for lp in logp]
    full, half = got.metrics(0), got.metrics(1)
    assert full["nll_se"] == pytest.approx(0, abs=1e-9) and full["accuracy_se"] == 0  # no difference to itself
    d = nll[1] - nll[0]
    assert half["nll_se"] == pytest.approx(float(d.std(unbiased=False)) / math.sqrt(40), rel=1e-4)
    dh = hit[1] - hit[0]
    assert half["accuracy_se"] == pytest.approx(float(dh.std(unbiased=False)) / math.sqrt(40), abs=1e-9)
    assert half["kl_se"] > 0


def _population(noise_sd, effect_sd, rng):
    """(fitness, se, macs, true fitness): the truth rises with compute, each score carries noise_sd of noise."""
    out = []
    for i in range(200):
        macs = 10 ** rng.uniform(6, 7)
        true = -0.5 + 0.1 * math.log(macs / 1e7) + rng.gauss(0, effect_sd)
        out.append((true + rng.gauss(0, noise_sd), noise_sd, macs, true))
    return out


def test_shrinkage_pulls_a_lucky_score_back_toward_the_trend_and_leaves_clear_differences():
    rng = random.Random(0)
    noisy = _population(noise_sd=0.02, effect_sd=0.002, rng=rng)
    fit = fit_shrinkage([c[:3] for c in noisy])
    assert fit.tau2 ** 0.5 < 0.01 and fit.noise2 ** 0.5 == pytest.approx(0.02)
    # a cheap candidate 3 noise sd above the trend is mostly noise: its estimate is near the trend
    cheap = 2e6
    lucky = fit.trend(cheap) + 0.06
    assert fit.estimate(lucky, 0.02, cheap) - fit.trend(cheap) < 0.02
    # a score at or below the trend keeps its measured value: only the optimism of high scores is removed
    assert fit.estimate(fit.trend(cheap) - 0.05, 0.02, cheap) == pytest.approx(fit.trend(cheap) - 0.05)
    assert fit_shrinkage([c[:3] for c in noisy], spread="mad").factor(0.02) < 0.5  # either spread sees the noise
    # a tail of far worse schedules (a block cut too hard) does not set the spread of the ones that compete
    tail = [(f - rng.uniform(0.3, 1.0), se, m, t) for f, se, m, t in noisy[:30]]
    assert fit_shrinkage([c[:3] for c in noisy + tail]).factor(0.02) < 0.5
    # the estimates track the truth better than the scores do (the point of shrinking)
    err = lambda est: sum((e - c[3]) ** 2 for e, c in zip(est, noisy))  # noqa: E731
    assert err([fit.estimate(*c[:3]) for c in noisy]) < 0.5 * err([c[0] for c in noisy])
    # where schedules differ far more than noise explains, the scores stand
    clear = _population(noise_sd=0.001, effect_sd=0.05, rng=rng)
    fit2 = fit_shrinkage([c[:3] for c in clear])
    assert fit2.factor(0.001) > 0.99
    assert fit2.estimate(0.3, None, 1e6) == 0.3  # no noise measured: kept as measured
    assert fit_shrinkage([c[:3] for c in clear[:MIN_CANDIDATES - 1]]) is None
    assert fit_shrinkage([(c[0], None, c[2]) for c in clear]) is None


def test_the_pick_within_a_budget_is_chosen_on_the_corrected_fitness():
    """A schedule far under the budget that scored a hair higher by luck loses to one that uses the budget."""
    rng = random.Random(1)
    search = object.__new__(EvolutionSearch)
    search.evaluated, search.shrinkage, search.fitness = {}, None, "nll"
    for i, (f, se, macs, _) in enumerate(_population(noise_sd=0.02, effect_sd=0.002, rng=rng)):
        search.evaluated[((i,), ())] = Candidate((i,), 0.9, int(macs), fitness=f, fitness_se=se)
    budget = Budget("macs", 9e6)
    within = [c for c in search.evaluated.values() if c.macs <= budget.limit]
    # plant a lucky cheap candidate: the fittest as measured
    top = max(c.score for c in within)
    lucky = Candidate((999,), 0.9, int(1.5e6), fitness=top + 0.01, fitness_se=0.02)
    search.evaluated[((999,), ())] = lucky
    assert search.best_within(budget) is lucky
    fit = search.shrink()
    assert fit is not None and lucky.measured_fitness == pytest.approx(top + 0.01)
    pick = search.best_within(budget)
    assert pick is not lucky and pick.macs > 4e6
    assert lucky.to_dict()["fitness_measured"] == lucky.measured_fitness and lucky.to_dict()["fitness"] == lucky.score
    again = lucky.score
    search.shrink()  # a second fit starts from the measured values, not the corrected ones
    assert lucky.score == pytest.approx(again)


def test_the_recommendation_brings_the_searched_picks_corrected_fitness():
    row = {"best": {"counts": [40, 20], "holdout_nll": 0.30}}
    free = {"tome_parent": {"counts": [48, 32], "reducers": ["merge"] * 2, "holdout_nll": 0.32}}
    assert recommend(row, free, fitness="nll")["family"] == "searched"
    row["best"].update(fitness_shrunk=-0.34, fitness_measured=-0.30)
    rec = recommend(row, free, fitness="nll")
    assert rec["family"] == "tome_parent" and "winner's curse" in rec["why"]


def test_search_records_the_correction_and_can_turn_it_off(tmp_path, trained_checkpoint):
    model = tavt_kit.load_checkpoint(trained_checkpoint)
    from tavt_kit.search.pipeline import space_of

    full = tavt_kit.count_macs(model).total()
    least = tavt_kit.count_macs(model, model.make_schedule(space_of(model).smallest())).total()
    budget = f"{(full + least) / 2e6:.4g}M MACs"  # midway: candidates of the space meet it
    evo = EvolutionSettings(population=8, generations=1, mutations=5, crossovers=5, seed=0)
    on = tavt_kit.search_schedules(model, None, [budget], evolution=evo, out=str(tmp_path / "on"), parent=None,
                                   log=lambda s: None)
    off = tavt_kit.search_schedules(model, None, [budget], evolution=EVO, ship=ShipPolicy(shrinkage=False),
                                    out=str(tmp_path / "off"), parent=None, log=lambda s: None)
    notes = []
    few = tavt_kit.search_schedules(model, None, [budget], evolution=EVO, out=str(tmp_path / "few"), parent=None,
                                    log=notes.append)
    assert few.doc["shrinkage"] is None and any("too few to correct" in n for n in notes)
    sh = on.doc["shrinkage"]
    assert sh["candidates"] >= MIN_CANDIDATES and sh["mean_noise_sd"] > 0 and 0 <= sh["kept_at_mean_noise"] <= 1
    cands = on.doc["candidates"]
    assert all("fitness_measured" in c and c["fitness_measured"] == pytest.approx(-c["nll"]) for c in cands)
    best = on.doc["budgets"][0]["best"]
    top = max(c["fitness"] for c in cands if c["macs"] <= on.doc["budgets"][0]["limit"])
    if best.get("origin", "").startswith("baseline"):  # fitted to the budget, not selected: its score as measured
        assert "fitness_shrunk" not in best and -best["holdout_nll"] >= top
    else:
        assert best["fitness_shrunk"] == top
    assert off.doc["shrinkage"] is None and "fitness_shrunk" not in off.doc["budgets"][0]["best"]
    assert all(c["fitness"] == pytest.approx(-c["nll"]) for c in off.doc["candidates"])
    # the journal keeps each candidate's noise: a later search (or a reuse) corrects it the same way
    import json
    recs = [json.loads(line) for line in open(tmp_path / "on" / "search.journal.jsonl")]
    assert all("nll_se" in r for r in recs if r.get("kind") == "candidate")


def test_cli_no_shrinkage_searches_on_the_fitness_as_measured(tmp_path, trained_checkpoint):
    import json

    from tavt_kit.cli import main

    out = tmp_path / "s"
    assert main(["search", "--checkpoint", trained_checkpoint, "--macs-budget", "1000M", "--population", "8",
                 "--generations", "1", "--mutations", "4", "--crossovers", "4", "--no-shrinkage",
                 "--out", str(out)]) == 0
    doc = json.load(open(out / "search.json"))
    assert doc["shrinkage"] is None and all("fitness_measured" not in c for c in doc["candidates"])
