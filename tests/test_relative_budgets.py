"""Latency budgets in percent of your model's latency (``--latency-budget 50%``): placed on the search's latency
objective, and judged in the final round by the ratio to your model timed in the same round, which a machine
whose speed drifts between timings does not change."""
import json
from types import SimpleNamespace

import pytest

import tavt_kit
from tavt_kit import ConfigError, DeploymentTarget, SearchResult, TokenSchedule, search_schedules
from tavt_kit.cli import main
from tavt_kit.bench import TimingStats
from tavt_kit.search.evolution import Budget
from tavt_kit.search.options import as_budget, resolve_fractions
from tavt_kit.search.recommend import recommend
from conftest import random_splits, search_model
from test_search_api import EVO, data, linear_table, model  # noqa: F401 (data, model: the same fixtures)
from tavt_kit.search import LatencyOptions

pytestmark = pytest.mark.usefixtures("one_thread")


def test_a_percentage_is_a_latency_budget_of_that_share_of_your_model():
    b = as_budget("50%")
    assert (b.objective, b.fraction, b.label) == ("latency", 0.5, "50%")
    assert as_budget(" 12.5 % ").label == "12.5%"
    for bad in ("0%", "150%"):
        with pytest.raises(ConfigError, match="percentage of your model's latency above 0 and at most 100"):
            as_budget(bad)
    # placed on the objective the search ranks on: the full schedule's latency there times the share
    objective = (lambda s: 0.002 * sum(s.counts))
    said = []
    placed = resolve_fractions([as_budget("50%"), Budget("latency", 0.003)], objective, TokenSchedule.full(2, 4),
                              said.append)
    assert placed[0].limit == pytest.approx(0.5 * 0.002 * 8) and placed[0].fraction == 0.5
    assert placed[0].label == "50%" and placed[1] == Budget("latency", 0.003)
    assert "50%: 8 ms" in said[0] and "16 ms" in said[0]
    with pytest.raises(ConfigError, match="needs a latency objective"):
        resolve_fractions([as_budget("50%")], None, TokenSchedule.full(2, 4), said.append)


def test_a_search_under_a_percentage_places_it_on_the_table_and_names_it_so(tmp_path, model, data):
    table = linear_table(model)
    full_s = table.predict(model.full_schedule()) / 1e3  # the table predicts ms
    res = search_schedules(model, data, ["60%"], evolution=EVO, latency=LatencyOptions(table=table),
                           out=str(tmp_path), log=lambda s: None)
    row = res.doc["budgets"][0]
    assert row["label"] == "60%" and row["fraction"] == 0.6 and row["limit"] == pytest.approx(0.6 * full_s)
    b = res.budgets["60%"]
    assert b.best is not None and b.best.latency_ms <= 0.6 * full_s * 1e3 * 1.0001
    # read back, and named by its label as export --budget and report --budget name it
    again = SearchResult.load(tmp_path / "search.json")
    assert again.budget("60%").best == b.best and again.budget("60 %").label == "60%"
    assert row["schedule_file"] == "schedule-60pct.json" and (tmp_path / "schedule-60pct.json").is_file()
    # a resumed search places the same limit and takes every candidate from its journal
    second = search_schedules(model, data, ["60%"], evolution=EVO, latency=LatencyOptions(table=table),
                              out=str(tmp_path), log=lambda s: None)
    assert second.doc["timing"]["evaluations"] == 0 and second.budgets["60%"].best == b.best
    # a search.json holding a share out of (0, 1] is refused, naming the field
    doc = json.loads((tmp_path / "search.json").read_text())
    doc["budgets"][0]["fraction"] = 1.5
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "search.json").write_text(json.dumps(doc))
    with pytest.raises(ConfigError, match=r"budgets\[0\]\.fraction"):
        SearchResult.load(tmp_path / "bad" / "search.json")


def test_the_cli_takes_a_percentage_and_refuses_one_out_of_range(tmp_path, capsys):
    import torch

    torch.manual_seed(0)
    m = tavt_kit.create_model("fgvc_tiny", depth=3, img_size=32)  # the built-in demo's classes
    ckpt = str(tavt_kit.save_checkpoint(m, tmp_path / "m.safetensors"))
    linear_table(m).save(tmp_path / "t.json")
    common = ["search", "--checkpoint", ckpt, "--latency-table", str(tmp_path / "t.json"), "--population", "4",
              "--generations", "1", "--subset", "32", "--batch-size", "32"]
    assert main(common + ["--latency-budget", "0%", "--out", str(tmp_path / "a")]) == 2
    err = capsys.readouterr().err
    assert "--latency-budget 0%" in err and "at most 100" in err and "Traceback" not in err
    assert main(common + ["--latency-budget", "90%", "--out", str(tmp_path / "b")]) == 0
    assert "90%" in capsys.readouterr().out
    doc = json.loads((tmp_path / "b" / "search.json").read_text())
    assert doc["budgets"][0]["label"] == "90%" and doc["budgets"][0]["fraction"] == 0.9


def _round(monkeypatch, ms, seen=None):
    """The final round's timings, as a machine ran them: ``ms`` by item key, a number (one sample) or the
    sample of each rotation."""
    import tavt_kit.bench.measure as measure

    def fake(model, items, target, **kw):
        if seen is not None:
            seen.update(kw)
        out = {}
        for k in items:
            xs = ms[k] if isinstance(ms[k], list) else [ms[k]]
            out[k] = (TimingStats([x / 1e3 for x in xs], rounds_of=list(range(len(xs)))),)
        return out
    monkeypatch.setattr(measure, "measure_schedules", fake)


def _share_rows(space, free_counts):
    """One 40 % budget of your model's latency: the supernet's smallest schedule and ToMe on your model."""
    small = list(space.smallest().counts)
    free = {"tome_parent": {"counts": free_counts, "precision": "int8", "holdout_nll": 0.60}}
    return [{"label": "40%", "fraction": 0.4, "objective": "latency", "limit": 0.0064,
             "best": {"counts": small, "precision": "int8", "holdout_nll": 0.70}, "training_free": free}]


def test_a_share_is_judged_by_the_ratio_in_the_round_not_the_ms_it_was_placed_at(monkeypatch, model):
    """The machine ran the round faster than when the budget was placed (another process had left the other
    core): ToMe on your model met the limit in ms, but took 0.56 of your model's latency in that round, over a
    budget of half of it. Judged by the ratio, it is over, and the searched pick that is under ships instead;
    a budget given in ms keeps its ms."""
    from tavt_kit.search.evolution import schedule_of
    from tavt_kit.search.pairs import _remeasure_together
    from tavt_kit.search import space_of

    space = space_of(model)
    full, small = list(space.full().counts), list(space.smallest().counts)
    mid = [max(space.min_tokens, c // 2) for c in full]
    free = {"tome_parent": {"counts": mid, "precision": "fp32", "holdout_nll": 0.60}}
    rows = [{"label": "50%", "fraction": 0.5, "objective": "latency", "limit": 0.0095,  # 0.5 of 19 ms, as placed
             "best": {"counts": small, "precision": "int8", "holdout_nll": 0.70}, "training_free": free},
            {"label": "9.5ms", "objective": "latency", "limit": 0.0095,
             "best": {"counts": small, "precision": "int8", "holdout_nll": 0.70},
             "training_free": {"tome_parent": dict(free["tome_parent"])}}]
    result = {"full": {"counts": full}, "precisions": {}, "budgets": rows}
    target = DeploymentTarget(backend="openvino", batch_size=1, threads=1)
    objectives = {p: SimpleNamespace(target=target.with_(precision=p)) for p in ("fp32", "int8")}
    _round(monkeypatch, {"full": 16.0, (0, "best"): 6.4, (0, "tome_parent"): 9.0,
                         (1, "best"): 6.4, (1, "tome_parent"): 9.0})
    _remeasure_together(result, model, lambda g: schedule_of(g, space.num_patches, space.min_tokens), objectives,
                        lambda s: None)
    share, fixed = rows
    assert share["training_free"]["tome_parent"]["measured_fraction_of_full"] == pytest.approx(9 / 16)
    assert share["training_free"]["tome_parent"]["measured_within_budget"] is False
    assert share["best"]["measured_within_budget"] is True
    assert fixed["training_free"]["tome_parent"]["measured_within_budget"] is True  # 9.0 <= 9.5 ms
    # the recommendation passes over what the round timed over the share, though it is fitter
    assert recommend(share, share["training_free"], fitness="nll")["family"] == "searched"
    assert recommend(fixed, fixed["training_free"], fitness="nll")["family"] == "tome_parent"


def test_an_fp32_search_with_your_model_fits_tome_to_the_share_as_the_target_runs_it(tmp_path):
    """The target runs 0.8x what the table predicts (the machine is faster than when it was profiled). A share of
    half your model's latency is placed at half the table's prediction of it, and the search searches under that.
    ToMe on your model is fitted by timing to half your model *as the target ran it* (0.4x the prediction): fitted
    to the table's placement, it would take more than half your model's timed latency, and the final round, which
    times every option beside your model, would pass it over, leaving the recommendation without the
    training-free option a user would have tried."""
    from tavt_kit.search import EvolutionSettings
    from tavt_kit.search.objective import LatencyObjective

    net = search_model()
    predict = lambda s: 1e-5 * sum(s.counts)  # noqa: E731
    truth = lambda s: 0.8 * predict(s)  # noqa: E731
    target = DeploymentTarget(backend="torch", threads=1)
    info = {"source": "table", "precision": "fp32", "identity": {"table": "synthetic"}}
    obj = LatencyObjective(predict, target, info, remeasure_fn=truth)
    said = []
    res = search_schedules(net, random_splits(24, 24), ["50%"],
                           evolution=EvolutionSettings(population=4, generations=1, mutations=3, crossovers=3, seed=0),
                           latency=LatencyOptions(objectives={"fp32": obj}), out=str(tmp_path / "s"), parent=net,
                           log=said.append)
    row = res.doc["budgets"][0]
    full = predict(net.full_schedule())
    assert row["fraction"] == 0.5 and row["limit"] == pytest.approx(0.5 * full)  # searched under the placement
    tome = row["training_free"]["tome_parent"]
    timed_full = truth(net.full_schedule())
    assert tome["latency_measured_ms"] <= 0.5 * timed_full * 1e3 * (1 + 1e-9)  # fitted to the share as timed
    assert tome["latency_measured_ms"] > 0.5 * timed_full * 1e3 * 0.8  # ... the mildest r that meets it
    assert tome["measured_fraction_of_full"] <= 0.5 and tome["measured_within_budget"] is True
    assert any("ToMe on your model fitted to" in line and "50% of your model as the target ran it" in line
               for line in said)
    assert res.doc["full"]["latency_measured_ms"] == pytest.approx(timed_full * 1e3)
    # the torch target has no round-robin of deployed files: each timed on its own, and said so
    assert res.doc["timing"]["remeasured"]["method"].startswith("each pick timed on its own")


def test_an_option_whose_ratio_moved_over_the_share_while_timed_is_over_it(monkeypatch, model):
    """Seed 2 of the latency reference at 0.4: ToMe on your model in int8 timed at 0.394 of your model in the
    tool's round and at 0.437 in the next. Its ratio had moved while the tool timed it: rotation by rotation it
    ran at 0.37-0.44 of your model. Judged by the top of the ratio's 95 % interval it is over 40 %, and the
    searched pick, whose ratio stayed under, ships; the record keeps the interval and the rotations."""
    from tavt_kit.search.evolution import schedule_of
    from tavt_kit.search.pairs import JUDGING_ROUNDS, _remeasure_together
    from tavt_kit.search import space_of

    space = space_of(model)
    mid = [max(space.min_tokens, c // 2) for c in space.full().counts]
    moved = [0.37, 0.38, 0.39, 0.394, 0.394, 0.394, 0.40, 0.42, 0.43, 0.44, 0.38, 0.39, 0.41, 0.43, 0.37,
             0.394, 0.394, 0.39, 0.42, 0.38]
    full = [20.0 + (i % 3) for i in range(len(moved))]  # the machine's speed drifts too: the ratio pairs it
    rows = _share_rows(space, mid)
    result = {"full": {"counts": list(space.full().counts)}, "precisions": {}, "budgets": rows}
    target = DeploymentTarget(backend="openvino", batch_size=1, threads=1)
    objectives = {p: SimpleNamespace(target=target.with_(precision=p)) for p in ("fp32", "int8")}
    seen = {}
    _round(monkeypatch, {"full": full, (0, "best"): [0.33 * f for f in full],
                         (0, "tome_parent"): [m * f for m, f in zip(moved, full)]}, seen)
    _remeasure_together(result, model, lambda g: schedule_of(g, space.num_patches, space.min_tokens), objectives,
                        lambda s: None)
    tome = rows[0]["training_free"]["tome_parent"]
    assert tome["measured_fraction_of_full"] == pytest.approx(0.394)  # under 40 % ...
    low, high = tome["measured_fraction_interval"]
    assert low < 0.394 < 0.4 < high and tome["measured_within_budget"] is False  # ... but not all the time
    assert rows[0]["best"]["measured_fraction_interval"] == pytest.approx([0.33, 0.33])
    assert rows[0]["best"]["measured_within_budget"] is True
    assert recommend(rows[0], rows[0]["training_free"], fitness="nll")["family"] == "searched"
    assert seen["policy"].min_rounds == JUDGING_ROUNDS
    assert result["precisions"]["remeasured"]["rotations"] == len(moved)
    assert "top of the ratio's 95 % interval" in result["precisions"]["remeasured"]["method"]
    # the record reads back, and a malformed interval is named
    from tavt_kit.search.result import SEARCH_FORMAT, SEARCH_VERSION, validate_search
    doc = {"format": SEARCH_FORMAT, "version": SEARCH_VERSION, "budgets": rows, "full": result["full"]}
    validate_search(doc)
    tome["measured_fraction_interval"] = [high, low]
    with pytest.raises(ConfigError, match=r"budgets\[0\]\.training_free\.tome_parent\.measured_fraction_interval"):
        validate_search(doc)


def test_tome_is_fitted_to_a_share_by_timing_each_probe_beside_your_model(tmp_path, monkeypatch):
    """Another process on the machine slows every other timing by half. Timed one by one, each of ToMe's probes
    is compared with your model timed at another moment, and the drift decides which r meets the share. Timed
    round-robin beside your model, the ratio of each probe pairs the drift out: the fit finds the mildest r
    within half your model, as the final round judges it (the top of the ratio's interval), and records its
    probes. The search's own picks are checked beside your model the same way: nothing else is timed alone."""
    import tavt_kit.bench.measure as measure
    from tavt_kit.search import EvolutionSettings
    from tavt_kit.search.baselines import fit_tome
    from tavt_kit.search.objective import LatencyObjective
    from tavt_kit.search.shares import JUDGING_ROUNDS

    net = search_model()
    predict = lambda s: 1e-5 * sum(s.counts)  # noqa: E731
    truth = lambda s: 0.9e-5 * sum(s.counts) + 2e-5  # noqa: E731  fixed costs the table misses
    drift = iter(1.0 + 0.5 * (i % 2) for i in range(10 ** 6))  # the machine's speed from one timing to the next
    alone = []  # schedules timed on their own

    def round_robin(model, items, target, policy=None, **kw):
        speed = next(drift)
        assert policy.min_rounds == JUDGING_ROUNDS
        return {k: (TimingStats([truth(s) * speed * (1 + 0.02 * (i % 3)) for i in range(JUDGING_ROUNDS)],
                                rounds_of=list(range(JUDGING_ROUNDS))),) for k, (s, _) in items.items()}
    monkeypatch.setattr(measure, "measure_schedules", round_robin)
    target = DeploymentTarget(backend="openvino", threads=1)
    info = {"source": "table", "precision": "fp32", "identity": {"table": "synthetic"}}
    obj = LatencyObjective(predict, target, info, remeasure_fn=lambda s: alone.append(s) or truth(s) * next(drift))
    said = []
    res = search_schedules(net, random_splits(24, 24), ["50%", "80%"],
                           evolution=EvolutionSettings(population=4, generations=1, mutations=3, crossovers=3, seed=0),
                           latency=LatencyOptions(objectives={"fp32": obj}), out=str(tmp_path / "s"), parent=net,
                           log=said.append)
    full = net.full_schedule()
    tome = res.doc["budgets"][0]["training_free"]["tome_parent"]
    want = fit_tome(net.depth, net.num_patches, lambda s: truth(s) / truth(full), 0.5)
    assert tome["counts"] == list(want.counts) and tome["fitted_by"] == "measurement"
    assert tome["measured_fraction_of_full"] == pytest.approx(truth(want) / truth(full))
    assert tome["measured_within_budget"] is True
    assert all(s.counts == full.counts for s in alone)  # nothing but your model is timed on its own:
    # the search's picks were checked beside your model too, as the final round judges them: at 50 % (under the
    # space's smallest schedule) a baseline the target runs within the share's placement in ms is over the share
    at50, at80 = res.doc["budgets"]
    over = at50["timed_over_budget"][0]
    assert 0.9e-5 * sum(over["counts"]) + 2e-5 <= at50["limit"] and over["measured_fraction_interval"][1] > 0.5
    assert at80["best"]["measured_within_budget"] is True
    probes = res.doc["training_free_fit"]["shares"]["probes"]["fp32"]
    assert [list(want.counts)] == [p["counts"] for p in probes if p["counts"] == list(want.counts)]
    assert all(p["rounds"] == JUDGING_ROUNDS and p["interval"][1] <= 0.5 for p in probes
               if p["counts"] == list(want.counts))
    assert any("of your model in fp32, timed beside it" in line for line in said)
    from tavt_kit.cli.search import summary

    text = summary(res)
    assert "ToMe on your model fitted to the shares by timing each r beside your model: fp32 r = " in text
    from tavt_kit.report.budget import build_report

    paths = build_report(str(tmp_path / "s" / "search.json"), str(tmp_path / "r"))
    with open(paths["markdown"]) as f:
        assert "fitted to each latency budget by timing it on the target beside your model" in f.read()
    passed = at50["timed_over_budget"]
    worst = max(d["measured_fraction_of_full"] for d in passed)
    assert f"passed over: {len(passed)} candidate(s) predicted within but timed over it beside your model (up to " \
           f"{worst:.3f}" in text


def test_your_model_in_int8_meets_a_share_only_when_timed_within_it_beside_your_fp32_model(monkeypatch):
    """The training-free options of a share at int8 (a precision search): your model in int8 and ToMe on it in
    int8 are each timed round-robin with your model in fp32. At 0.6 of it, int8 alone meets 70 % but not 50 %,
    where ToMe in int8 takes its place, fitted to the share on the int8 timings."""
    import tavt_kit.bench.measure as measure
    from tavt_kit.search.baselines import fit_tome
    from tavt_kit.search.objective import LatencyObjective
    from tavt_kit.search.parent import ParentStage
    from tavt_kit.search.shares import JUDGING_ROUNDS

    net = search_model()
    full = net.full_schedule()
    truth = lambda s, p="fp32": (0.6 if p == "int8" else 1.0) * (1e-5 * sum(s.counts) + 2e-5)  # noqa: E731

    def round_robin(model, items, target, policy=None, **kw):
        return {k: (TimingStats([truth(s, p)] * JUDGING_ROUNDS, rounds_of=list(range(JUDGING_ROUNDS))),)
                for k, (s, p) in items.items()}
    monkeypatch.setattr(measure, "measure_schedules", round_robin)
    target = DeploymentTarget(backend="openvino", threads=1)
    objectives = {p: LatencyObjective(lambda s, p=p: truth(s, p), target.with_(precision=p),
                                      {"source": "table", "precision": p}, remeasure_fn=lambda s: 1.0)
                  for p in ("fp32", "int8")}
    from tavt_kit.search import space_of
    from tavt_kit.search.context import SearchContext

    stage = ParentStage(SearchContext(net, space_of(net), objectives=objectives, log=lambda s: None), net)
    at70 = stage._free_schedules("int8", 0.7 * truth(full), 0.7 * truth(full), fraction=0.7)
    at50 = stage._free_schedules("int8", 0.5 * truth(full), 0.5 * truth(full), fraction=0.5)
    assert at70["parent"].counts == full.counts and "parent" not in at50
    want = fit_tome(net.depth, net.num_patches, lambda s: truth(s, "int8") / truth(full), 0.5)
    assert at50["tome_parent"].counts == want.counts
    d = {}
    stage._measured_fit(d, at50["tome_parent"], "int8", 0.5 * truth(full), 0.5)
    assert d["measured_fraction_of_full"] == pytest.approx(truth(want, "int8") / truth(full))
    assert d["measured_within_budget"] is True and d["fitted_by"] == "measurement"


def test_a_share_of_100_percent_takes_your_model_itself_and_a_fit_probe_is_not_timed_twice(monkeypatch):
    """At 100 % your model meets the share (its ratio to itself is 1, no timing beside itself); a candidate a
    fit already timed beside your model is judged by that timing, not timed again, and its ms is recorded."""
    import tavt_kit.bench.measure as measure
    from tavt_kit.search.objective import LatencyObjective
    from tavt_kit.search.shares import JUDGING_ROUNDS
    from tavt_kit.search.timed import TargetCheck

    net = search_model()
    full = net.full_schedule()
    truth = lambda s: 1e-5 * sum(s.counts) + 2e-5  # noqa: E731
    calls = []

    def round_robin(model, items, target, policy=None, **kw):
        calls.append(items)
        return {k: (TimingStats([truth(s)] * JUDGING_ROUNDS, rounds_of=list(range(JUDGING_ROUNDS))),)
                for k, (s, _) in items.items()}
    monkeypatch.setattr(measure, "measure_schedules", round_robin)
    obj = LatencyObjective(truth, DeploymentTarget(backend="openvino", threads=1), {"source": "table"},
                           remeasure_fn=truth)
    check = TargetCheck({"fp32": obj}, lambda g: full if g[0] == tuple(full.counts) else half, lambda s: None,
                        model=net)
    half = type(full)(tuple(max(1, c // 2) for c in full.counts), net.num_patches)
    assert check.within(truth(full), [], 1.0)((tuple(full.counts), ()), "fp32", truth(full)) is True
    assert calls == []  # your model against itself: nothing timed beside it
    check.shares.share(half, "fp32")  # a fit's probe
    over = []
    assert check.within(0.3 * truth(full), over, 0.3)((tuple(half.counts), ()), "fp32", 0.0) is False
    assert len(calls) == 1 and over[0]["latency_measured_ms"] == pytest.approx(truth(half) * 1e3)
