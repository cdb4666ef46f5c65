"""The user's model (the supernet's parent) is the reference: measured by the search on the same images, ToMe on
it competing for each budget, the recommendation exported with the parent's own weights."""
import json
import types

import pytest
import torch

import tavt_kit
from tavt_kit.cli import main
from tavt_kit.search import EvaluationOptions, EvolutionSettings, LatencyOptions, ShipPolicy

from conftest import noisy_supernet  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")
EVO = EvolutionSettings(population=4, generations=1, mutations=3, crossovers=3, seed=0)


def test_search_measures_the_parent_and_recommends_tome_on_it_when_it_wins(tmp_path, trained_checkpoint, capsys,
                                                                         monkeypatch):
    sn = noisy_supernet(tmp_path, trained_checkpoint, noise=0.6)
    model = tavt_kit.load_checkpoint(sn)
    full = tavt_kit.count_macs(model).total()
    budget = f"{0.85 * full / 1e6:.4g}M MACs"
    res = tavt_kit.search_schedules(model, None, [budget], evolution=EVO, ship=ShipPolicy(parent_search=False),
                                    out=str(tmp_path / "search"), log=lambda s: None)
    parent = res.parent
    assert parent is not None and parent.test_accuracy > 0.6  # the trained model, measured on the test split
    assert res.doc["parent"]["weights_sha256"] == res.doc["parent"]["weights_sha256"] and res.doc["parent"]["recorded"]
    b = res.budgets[budget]
    tome = b.training_free["tome_parent"]
    assert tome.macs <= 0.85 * full and tome.reducers and set(tome.reducers) == {"merge"}
    # every accuracy is also a paired difference to the parent, on the same test images
    for pick in (res.full, b.best, tome):
        v = pick.vs_parent
        assert v["images"] == res.doc["settings"]["test_images"]
        assert v["difference"] == pytest.approx(pick.test_accuracy - parent.test_accuracy, abs=1e-9)
        assert v["interval"][0] <= v["difference"] <= v["interval"][1]
    # the noisy supernet loses to ToMe on the parent on the held-out images: the recommendation says so
    assert b.best.raw["holdout_nll"] > tome.raw["holdout_nll"]
    assert b.recommended.family == "tome_parent" and b.recommended.weights == "parent"
    # the same as values: what ships, with the weights it runs and their digest, among every option
    ship = b.shipped
    assert ship.family == "tome_parent" and ship.weights == "parent" and ship.checkpoint == str(trained_checkpoint)
    assert ship.weights_sha256 == res.doc["parent"]["weights_sha256"] and ship.pick == tome and b.why
    assert ship.pick.schedule().counts == tome.counts and ship.latency_source is None
    assert b.options["searched"].weights == "supernet" and b.options["searched"].pick == b.best
    # the plot rings what ships, not the supernet's pick
    from tavt_kit.search.plot import shipped_points

    (point,) = shipped_points(res, lambda p: p.macs)
    assert point["label"].startswith(f"ships @ {budget}: ToMe r=") and point["x"] == tome.macs and point["measured_x"] is None
    assert point["y"] == pytest.approx(100 * tome.holdout_accuracy) and (tmp_path / "search" / "pareto_macs.png").is_file()
    # ... and so does the report's plot
    import tavt_kit.report.plots as report_plots
    from tavt_kit.report import build_report

    legends, save = [], report_plots.save_accuracy_plot

    def keep_legend(fig, ax, *args):
        legends.extend(ax.get_legend_handles_labels()[1])
        return save(fig, ax, *args)

    monkeypatch.setattr(report_plots, "save_accuracy_plot", keep_legend)
    build_report(str(tmp_path / "search" / "search.json"), str(tmp_path / "report"))
    assert point["label"] in legends
    # export follows the recommendation: the parent's weights at ToMe's schedule
    out = tmp_path / "export"
    assert main(["export", "--checkpoint", sn, "--search", str(tmp_path / "search" / "search.json"), "--budget",
                 budget, "--format", "onnx", "--verify-images", "32", "--out", str(out)]) == 0
    assert "exporting the recommendation, tome_parent on your model" in capsys.readouterr().out
    doc = json.loads((out / "export.json").read_text())
    assert doc["schedule"]["counts"] == list(tome.counts) and doc["schedule"]["source"]["weights"] == "parent"
    assert doc["schedule"]["reducers"] == ["merge"] * len(tome.counts) and doc["verified"]
    assert doc["checkpoint"]["path"] == str(trained_checkpoint)  # the parent's file, not the supernet's
    # from Python, one call exports the same
    from tavt_kit.export import VerifyOptions

    py = res.export(sn, budget, tmp_path / "python", verify=VerifyOptions(enabled=False), log=lambda s: None)
    assert py.doc["schedule"]["counts"] == list(tome.counts) and py.doc["checkpoint"]["path"] == str(trained_checkpoint)
    assert py.doc["schedule"]["source"]["weights"] == "parent" and list(py.doc["files"]) == ["onnx"]
    # --pick searched: the supernet's own pick
    out2 = tmp_path / "export2"
    assert main(["export", "--checkpoint", sn, "--search", str(tmp_path / "search" / "search.json"), "--budget",
                 budget, "--pick", "searched", "--format", "onnx", "--no-verify", "--out", str(out2)]) == 0
    assert json.loads((out2 / "export.json").read_text())["schedule"]["counts"] == list(b.best.counts)
    # a budget no searched schedule met still exports what it recommends (ToMe on your model); --pick searched
    # says there is no searched schedule, in one line
    path = tmp_path / "search" / "search.json"
    doc = json.loads(path.read_text())
    doc["budgets"][0]["best"] = None
    path.write_text(json.dumps(doc))
    model, sched, source = tavt_kit.search.deployable_from_search(model, str(path), budget)
    assert tuple(sched.counts) == tuple(tome.counts) and source["weights"] == "parent"
    assert main(["export", "--checkpoint", sn, "--search", str(path), "--budget", budget, "--format", "onnx",
                 "--no-verify", "--out", str(tmp_path / "export3")]) == 0
    assert main(["export", "--checkpoint", sn, "--search", str(path), "--budget", budget, "--pick", "searched",
                 "--format", "onnx", "--no-verify", "--out", str(tmp_path / "export4")]) == 2
    assert "no schedule of the search space met this budget" in capsys.readouterr().err
    # the report ships the same: ToMe on your model, not "nothing in the search space fits"
    assert main(["report", "--search", str(path), "--out", str(tmp_path / "report")]) == 0
    ship = (tmp_path / "report" / "report.md").read_text().split("## What to ship")[1].split("\n\n")[1]
    assert "nothing in the search space fits" not in ship and "FAIL" not in ship
    assert "ToMe" in (tmp_path / "report" / "report.md").read_text().split("## What to ship")[1]


def test_schedules_searched_on_your_model_compete_and_export_with_its_weights(tmp_path, trained_checkpoint, capsys):
    """With a parent, the same evolution also runs on the parent's own weights (merging only, no training): each
    budget gets a ``searched_parent`` deployable, the fittest of that evolution within the budget, journalled (a
    rerun evaluates none again) and paired with the parent on the test images; recommended, it is exported with the
    parent's weights at its schedule."""
    sn = noisy_supernet(tmp_path, trained_checkpoint, noise=0.6)
    model = tavt_kit.load_checkpoint(sn)
    limit = 0.85 * tavt_kit.count_macs(model).total()
    budget = f"{limit / 1e6:.4g}M MACs"
    out = tmp_path / "search"
    # ship_confidence 0.5: any lead ships (at 0.95 ToMe, lossless at this budget, keeps it on a lead within noise)
    res = tavt_kit.search_schedules(model, None, [budget], evolution=EVO, ship=ShipPolicy(confidence=0.5),
                                    out=str(out), log=lambda s: None)
    b = res.budgets[budget]
    sp = b.training_free["searched_parent"]
    assert sp.macs <= limit and {r for r in sp.reducers if r} == {"merge"} and sp.raw["origin"] == "searched_parent"
    recs = [json.loads(line) for line in (out / "parent.journal.jsonl").read_text().splitlines()]
    cands = [r for r in recs if r["kind"] == "candidate"]
    assert all(set(r["reducers"]) <= {"merge", None} for r in cands if r.get("reducers"))
    # the fittest on the held-out images within the budget (too few candidates here to correct for the curse)
    assert sp.raw["holdout_nll"] == pytest.approx(min(r["nll"] for r in cands if r["macs"] <= limit), abs=1e-5)
    v = sp.vs_parent
    assert v["difference"] == pytest.approx(sp.test_accuracy - res.parent.test_accuracy, abs=1e-9)
    # the noisy supernet loses to the schedule searched on your model; the fittest option is recommended (ToMe, one
    # member of the searched space, can be as fit on a model this small)
    options = {"searched": b.best.raw, **{k: p.raw for k, p in b.training_free.items()}}
    assert options["searched_parent"]["holdout_nll"] < options["searched"]["holdout_nll"]
    fittest = min(options, key=lambda k: options[k]["holdout_nll"])
    assert b.recommended.family == fittest and b.recommended.weights == "parent"
    assert b.recommended.counts == tuple(options[fittest]["counts"])
    # recommended, the searched schedule is exported with the parent's weights
    search = out / "search.json"
    if fittest != "searched_parent":
        doc = json.loads(search.read_text())
        doc["budgets"][0]["recommended"] = {"family": "searched_parent", "weights": "parent", "why": "by hand",
                                            "counts": list(sp.counts), "precision": "fp32",
                                            "reducers": list(sp.reducers)}
        search = tmp_path / "searched-parent.json"
        search.write_text(json.dumps(doc))
    exp = tmp_path / "export"
    assert main(["export", "--checkpoint", sn, "--search", str(search), "--budget", budget, "--format",
                 "onnx", "--no-verify", "--out", str(exp)]) == 0
    assert "exporting the recommendation, searched_parent on your model" in capsys.readouterr().out
    doc = json.loads((exp / "export.json").read_text())
    assert doc["schedule"]["counts"] == list(sp.counts) and doc["checkpoint"]["path"] == str(trained_checkpoint)
    # a rerun takes every candidate of the parent's evolution from its journal; parent_search=False: none
    again = tavt_kit.search_schedules(model, None, [budget], evolution=EVO, out=str(out), log=lambda s: None)
    assert again.budgets[budget].training_free["searched_parent"].counts == sp.counts
    # another search of the same supernet (in another folder) takes what the first evaluated on your model's weights
    lines = []
    other = tavt_kit.search_schedules(model, None, [budget], evolution=EVO,
                                      evaluation=EvaluationOptions(reuse=[str(out)]), out=str(tmp_path / "other"),
                                      log=lines.append)
    assert any(s.startswith("on your model's weights: reuse: ") and s.endswith(", 0 evaluated here") for s in lines)
    assert other.budgets[budget].training_free["searched_parent"].counts == sp.counts
    from tavt_kit.cli.search import summary

    assert "the merge schedule searched on your model (its own weights, no training)" in summary(again)
    assert (out / "parent.journal.jsonl").read_text().count("\n") == len(recs)
    capsys.readouterr()
    assert main(["search", "--checkpoint", sn, "--macs-budget", f"{limit / 1e6:.4g}M", "--population", "4",
                 "--generations", "1", "--mutations", "3", "--crossovers", "3", "--no-parent-search",
                 "--out", str(tmp_path / "off")]) == 0
    assert "searched on your model" not in capsys.readouterr().out
    off = json.loads((tmp_path / "off" / "search.json").read_text())
    assert "searched_parent" not in off["budgets"][0]["training_free"]
    assert not (tmp_path / "off" / "parent.journal.jsonl").exists()


def test_the_recommendation_takes_the_winners_curse_off_in_the_compared_metric():
    """A searched pick's correction is a shift of its fitness; under the KL fitness it is applied to the NLL the
    options are compared on (KL itself is not comparable with another model's NLL)."""
    from tavt_kit.search.recommend import recommend

    row = {"best": {"counts": [40, 20], "holdout_nll": 0.40, "fitness_measured": -0.010, "fitness_shrunk": -0.050}}
    free = {"tome_parent": {"counts": [48, 32], "reducers": ["merge"] * 2, "holdout_nll": 0.42}}
    rec = recommend(row, free, fitness="kl")  # 0.40 + 0.04 corrected > 0.42
    assert rec["family"] == "tome_parent" and "searched corrected for the winner's curse" in rec["why"]
    row["best"]["fitness_shrunk"] = -0.015  # a small correction: the pick still leads
    assert recommend(row, free, fitness="kl")["family"] == "searched"


def test_a_supernet_without_a_parent_says_so(tmp_path, trained_checkpoint):
    notes = []
    model = tavt_kit.load_checkpoint(trained_checkpoint)
    full = tavt_kit.count_macs(model).total()
    res = tavt_kit.search_schedules(model, None, [f"{0.8 * full:.0f} MACs"], evolution=EVO, out=str(tmp_path),
                                    log=notes.append)
    assert res.parent is None and "parent" not in res.doc
    assert any("records no parent" in n for n in notes)


@pytest.mark.nncf
def test_precision_search_puts_the_parent_at_every_precision_in_the_selection(tmp_path, trained_checkpoint):
    """With --precisions, the training-free deployables run at each precision too (int8 quantised with NNCF as the
    searched pairs are), paired with the parent on the test images; the recommendation is chosen among all of them
    and export follows it with the parent's weights at that precision."""
    from conftest import exact_table, scaled_table
    from tavt_kit.bench import LatencyTable, TimingPolicy, profile_latency

    sn = noisy_supernet(tmp_path, trained_checkpoint, noise=0.6)
    model = tavt_kit.load_checkpoint(sn)
    table = profile_latency(model, grid=3, calibrate=False, reducers="drop,merge",
                            policy=TimingPolicy(warmup=1, min_repeats=3, max_repeats=3, budget_s=0.05))
    data = exact_table(table.to_dict())
    tables = {"fp32": LatencyTable(data)}
    for p, factor in (("bf16", 0.42), ("int8", 0.25)):
        scaled = scaled_table(data, factor)
        scaled["target"]["precision"] = p
        tables[p] = LatencyTable(scaled)
    full_ms = tables["fp32"].predict(model.full_schedule())
    budget = f"{0.4 * full_ms:.4f}ms"  # below the fp32 and bf16 (0.42) full models; the parent fits at int8
    res = tavt_kit.search_schedules(model, None, [budget], evolution=EVO,
                                    latency=LatencyOptions(precisions=("fp32", "bf16", "int8"), table=tables),
                                    evaluation=EvaluationOptions(calibration_images=32, verify_top=1, subset=96,
                                                                 front_time_limit=0),
                                    out=str(tmp_path / "search"), log=lambda s: None)
    row = res.doc["budgets"][0]
    free = row["training_free"]
    assert "parent@int8" in free and "parent" not in free and "parent@bf16" not in free
    # ToMe fitted per precision: none at fp32 (it cannot reach 0.4x), some r at bf16, none at int8 (r=0 fits)
    assert "tome_parent@bf16" in free and "tome_parent" not in free and "tome_parent@int8" not in free
    # the schedule searched on your model, fitted per precision the same way (none reaches 0.4x at fp32); at int8,
    # where your model fits, it is an option only where a reduced schedule is fitter than your model
    assert "searched_parent@bf16" in free and "searched_parent" not in free
    assert free.get("searched_parent@int8", {}).get("counts") != [model.num_patches] * model.depth
    assert free["searched_parent@bf16"]["origin"] == "searched_parent"
    for name, d in free.items():
        assert d["latency_ms"] <= 0.4 * full_ms + 1e-9, name
        v = d["vs_parent"]  # paired with the parent (fp32) on the same test images
        assert v["difference"] == pytest.approx(d["test_accuracy"] - res.parent.test_accuracy, abs=1e-9)
    assert free["parent@int8"]["holdout_source"].startswith("OpenVINO int8")
    assert "int8" in free["parent@int8"]["deployed"]["runtime"]
    assert row["best"]["vs_parent"]["images"] == res.doc["settings"]["test_images"]
    # the noisy supernet loses on held-out NLL to the parent quantised: the recommendation is a training-free one
    rec = row["recommended"]
    options = {"searched": row["best"], **free}
    nll = (lambda k: options[k]["holdout_nll"])  # noqa: E731
    fitted = [k for k in options if k.startswith(("parent", "tome_parent"))]
    if rec["family"] != min(options, key=nll):  # a searched option led, within noise: the fitted best ships
        assert min(options, key=nll).startswith("searched") and "within noise" in rec["why"], rec
    assert rec["family"] == min(options, key=nll) or rec["family"] == min(fitted, key=nll)
    assert rec["weights"] == "parent" and rec["precision"] == options[rec["family"]].get("precision", "fp32")
    out = tmp_path / "export"
    assert main(["export", "--checkpoint", sn, "--search", str(tmp_path / "search" / "search.json"), "--budget",
                 budget, "--format", "openvino", "--no-verify", "--no-accuracy-control", "--calibration-images",
                 "16", "--out", str(out)]) == 0
    doc = json.loads((out / "export.json").read_text())
    assert doc["precision"] == rec["precision"] and doc["schedule"]["counts"] == rec["counts"]
    assert doc["checkpoint"]["path"] == str(trained_checkpoint)


def test_a_deployable_measured_over_its_budget_is_not_recommended():
    """Where the search timed its candidates on the target, one measured over the budget is not recommended while
    another is not; when every one is over, the best is still named and the reason says so."""
    from tavt_kit.search.recommend import recommend

    row = {"best": {"counts": [40, 20], "holdout_nll": 0.5, "measured_within_budget": True}}
    free = {"tome_parent": {"counts": [48, 32], "reducers": ["merge"] * 2, "holdout_nll": 0.4,
                            "measured_within_budget": False}}
    rec = recommend(row, free, fitness="nll")
    assert rec["family"] == "searched" and rec["why"].endswith("; tome_parent measured over the budget on the target")
    free["tome_parent"]["measured_within_budget"] = True
    assert recommend(row, free, fitness="nll")["family"] == "tome_parent"
    free["tome_parent"]["measured_within_budget"] = row["best"]["measured_within_budget"] = False
    rec = recommend(row, free, fitness="nll")
    assert rec["family"] == "tome_parent" and "every option measured over the budget" in rec["why"]
    # timed again in one round after the choice: the recommendation follows the round's verdicts
    free["tome_parent"]["measured_within_budget"] = True
    rec = recommend(row, free, fitness="nll")
    assert rec["family"] == "tome_parent"
    assert rec["why"].endswith("; searched measured over the budget on the target")


@pytest.mark.usefixtures("one_thread")
def test_tome_on_your_model_is_timed_where_the_search_times_its_pick(tmp_path):
    """A latency search that predicts from a table and times its pick times ToMe on your model the same way."""
    from tavt_kit import DeploymentTarget, search_schedules
    from tavt_kit.search import EvolutionSettings

    torch.manual_seed(0)
    model = tavt_kit.create_model("fgvc_tiny", depth=3, img_size=32, num_classes=4).eval()
    g = torch.Generator().manual_seed(1)
    split = lambda: (torch.randint(0, 256, (24, 3, 32, 32), dtype=torch.uint8, generator=g),  # noqa: E731
                     torch.randint(0, 4, (24,), generator=g))
    res = search_schedules(model, (split(), split()), ["100ms"],
                           evolution=EvolutionSettings(population=4, generations=1, mutations=3, crossovers=3),
                           latency=LatencyOptions(target=DeploymentTarget(backend="torch", threads=1),
                                                  table_cache=str(tmp_path / "t"),
                                                  table_profile=dict(grid=3, warmup=1, min_repeats=3, budget_s=0.02)),
                           out=str(tmp_path / "s"), parent=model, log=lambda s: None)
    row = res.doc["budgets"][0]
    assert row["best"]["latency_measured_ms"] > 0 and row["best"]["measured_within_budget"] is True
    tome = row["training_free"]["tome_parent"]
    assert tome["latency_measured_ms"] > 0 and tome["measured_within_budget"] is True


@pytest.mark.parametrize("measured", [lambda c: 1.4 * c + 300, lambda c: 0.7 * c + 30, lambda c: 3 * c ** 0.8])
def test_tome_fitted_by_measurement_finds_the_r_the_target_allows(measured):
    """Where the table mispredicts the target (a constant overhead, an over-prediction, a curve), the fit by
    measurement lands on the smallest r the target allows, in a few probes, and never returns one it timed over."""
    from tavt_kit.search.baselines import fit_tome, fit_tome_measured

    predict = lambda s: float(sum(s.counts))  # noqa: E731
    truth = lambda s: measured(float(sum(s.counts)))  # noqa: E731
    for limit in (500, 800, 1200, 1500):
        calls = []
        s, probes = fit_tome_measured(6, 256, predict, lambda x: calls.append(x) or truth(x), limit)
        want = fit_tome(6, 256, truth, limit)
        assert (s is None) == (want is None)
        if s is not None:
            assert s.counts == want.counts and truth(s) <= limit
        assert len(calls) == len(probes) <= 8
    shared = {}
    fit_tome_measured(6, 256, predict, truth, 800, measured=shared)
    n = len(shared)
    fit_tome_measured(6, 256, predict, truth, 800, measured=shared)
    assert len(shared) == n  # a second budget at the same limit probes nothing new
    assert fit_tome_measured(6, 256, predict, truth, 1.0) [0] is None  # even r = 128 is over


def test_search_fits_tome_on_your_model_by_timing_it_when_the_table_mispredicts(tmp_path):
    """A table that under-predicts the target would fit ToMe too mildly; where the search can time on the
    target, ToMe's r is the one the timing allows, recorded with its probes, and your model is judged by its
    timing too."""
    from conftest import random_splits, search_model

    from tavt_kit import DeploymentTarget, search_schedules
    from tavt_kit.search.baselines import fit_tome
    from tavt_kit.search.objective import LatencyObjective

    model = search_model()
    predict = lambda s: 1e-5 * sum(s.counts)  # noqa: E731
    truth = lambda s: 1.25e-5 * sum(s.counts)  # noqa: E731  the target is slower than the table says
    timed = []
    target = DeploymentTarget(backend="torch", threads=1)
    info = {"source": "table", "precision": "fp32", "identity": {"table": "synthetic"}}
    obj = LatencyObjective(predict, target, info, remeasure_fn=lambda s: timed.append(s) or truth(s))
    limit = 0.9 * predict(model.full_schedule())
    res = search_schedules(model, random_splits(24, 24), [f"{limit * 1e3:.6g}ms"], evolution=EVO,
                           latency=LatencyOptions(objectives={"fp32": obj}), out=str(tmp_path / "s"), parent=model,
                           log=lambda s: None)
    row = res.doc["budgets"][0]
    tome = row["training_free"]["tome_parent"]
    want = fit_tome(model.depth, model.num_patches, truth, row["limit"])
    milder = fit_tome(model.depth, model.num_patches, predict, row["limit"])
    assert want.counts != milder.counts  # the table alone would have fitted a milder ToMe
    assert tome["counts"] == list(want.counts) and tome["fitted_by"] == "measurement"
    assert tome["measured_within_budget"] is True and tome["latency_measured_ms"] == pytest.approx(truth(want) * 1e3)
    probes = res.doc["training_free_fit"]["probes_ms"]["fp32"]
    assert str(tome["r"]) in probes and "0" in probes  # your model (r = 0) timed to judge whether it meets the budget
    assert "parent" not in row["training_free"]  # it does not: 1.25x the table's time is over the budget
    # the searched pick is timed too: candidates predicted within but timed over are passed over
    from tavt_kit.search.timed import TIMED_PER_BUDGET

    # (after the first timing, the baselines the timings put over the budget are passed over untimed)
    over = row.get("timed_over_budget", [])
    assert all(d["latency_measured_ms"] > row["limit"] * 1e3 >= d["latency_ms"] for d in over)
    assert row["best"]["latency_measured_ms"] <= row["limit"] * 1e3 or len(over) == TIMED_PER_BUDGET
    from tavt_kit.cli.search import summary

    text = summary(res)  # what the CLI prints says so
    assert (f"passed over: {len(over)} candidate(s) predicted within but timed over it" in text) == bool(over)
    corr = res.doc["timed_over_predicted"]["fp32"]  # the pick was timed at 1.25x its prediction: said and used
    assert corr["median"] == pytest.approx(1.25) and corr["picks"] >= 1
    assert "the target ran the picks timed at 1.25x the table's prediction in fp32" in text
    assert "fitted to the latency budgets by timing it on the target: fp32 r = 0 (" in text


def test_a_table_that_under_predicts_still_gets_each_budget_a_pick_timed_within():
    """A table 15 % under the target (a machine that drifted since it was profiled): the fittest candidates just
    under each budget are all over it when timed. The timings correct the predictions of the rest, so the next
    timing goes to a candidate the target runs within: each budget gets a pick timed within it, after one
    candidate timed over at most, instead of spending its timings on the boundary and getting nothing."""
    from tavt_kit.search.timed import TargetCheck

    predict = lambda g: 1e-5 * sum(g[0])  # noqa: E731
    truth = lambda g: 1.15e-5 * sum(g[0])  # noqa: E731
    obj = types.SimpleNamespace(source="table", can_remeasure=True, remeasure=truth)
    check = TargetCheck({"fp32": obj}, lambda g: g, log=lambda s: None)
    # the candidates of a search, fittest first: the fitter, the more tokens (as a search's are)
    genes = [((n, n // 2), ()) for n in range(400, 100, -4)]
    for limit in (4.5e-3, 3.5e-3, 2.5e-3):
        over = []
        within = check.within(limit, over)
        pick = next((g for g in genes if predict(g) <= limit and within(g, "fp32", predict(g))), None)
        assert pick is not None and truth(pick) <= limit
        assert len(over) <= 1 and all(d["latency_measured_ms"] > limit * 1e3 for d in over)
        # the fittest candidate the target runs within, or one a step below it
        best = max(sum(g[0]) for g in genes if truth(g) <= limit)
        assert sum(pick[0]) >= best - 6
    assert check.correction("fp32") == pytest.approx(1.15)
    assert check.correction("int8") == 1.0  # nothing timed at int8
    # without timings a pick stands on its prediction: nothing is passed over
    fresh = TargetCheck({"fp32": obj}, lambda g: g, log=lambda s: None)
    assert fresh.plausible(genes[0], "fp32", 4e-3, 4e-3)
