"""fgvc-kit search --precisions: (schedule, precision) pairs under latency budgets, int8 verified before it is reported."""
import json

import pytest
import torch
from conftest import exact_table, scaled_table

import tavt_kit
from tavt_kit.cli import main
from tavt_kit.search import parse_precisions
from tavt_kit.search.pairs import Pair, choose_pair

EVO = ["--population", "5", "--generations", "2", "--mutations", "4", "--crossovers", "4", "--subset", "48",
       "--batch-size", "48", "--calibration-images", "16", "--front-time-limit", "0"]
# (one point of each int8 front quantised and measured: every NNCF quantisation costs seconds; how a front is
# measured within a time limit is test_the_int8_front_is_measured_for_a_bounded_time_spread_over_its_latencies')

pytestmark = [pytest.mark.usefixtures("one_thread"), pytest.mark.nncf]


@pytest.fixture(scope="module")
def supernet_and_tables(tmp_path_factory):
    """A tiny supernet, its fp32 latency table, and tables of faster precisions made from it (bf16 2x, int8 4x
    faster): the selection, not the machine, is under test here."""
    from tavt_kit.bench import TimingPolicy, profile_latency

    torch.manual_seed(0)
    d = tmp_path_factory.mktemp("p")
    m = tavt_kit.create_model("fgvc_tiny", depth=3, img_size=32)
    ckpt = str(tavt_kit.save_checkpoint(m, d / "supernet.safetensors"))
    table = profile_latency(m, grid=3, calibrate=False,
                            policy=TimingPolicy(warmup=1, min_repeats=3, max_repeats=3, budget_s=0.05))
    table = tavt_kit.bench.LatencyTable(exact_table(table.to_dict()))  # a measured sub-ms table is noise: made exact
    table.save(d / "fp32.json")
    paths = {"fp32": str(d / "fp32.json")}
    for precision, name, factor in (("bf16", "bf16", 0.5), ("int8", "int8", 0.25)):
        data = scaled_table(table.to_dict(), factor)
        data["target"]["precision"] = name
        paths[precision] = str(d / f"{precision}.json")
        tavt_kit.bench.LatencyTable(data).save(paths[precision])
    return ckpt, paths, table.predict(m.full_schedule()), table


def test_parse_precisions():
    assert parse_precisions("bf16,int8") == ("fp32", "bf16", "int8")  # fp32: the comparison every budget reports
    assert parse_precisions("fp32, int8,int8") == ("fp32", "int8")
    for bad in ("fp64", "", "fp32,int4"):
        with pytest.raises(tavt_kit.ConfigError, match="^precisions="):  # the library names its parameter
            parse_precisions(bad)


def test_choose_pair_measures_int8_before_reporting_it():
    gene = ((4, 2), ())
    fp32 = Pair("fp32", gene, {"accuracy": 0.8}, 0.80, 0.010, True, "fp32")
    bf16 = Pair("bf16", ((4, 4), ()), {"accuracy": 0.82}, 0.82, 0.009, True, "bf16")
    int8 = Pair("int8", ((4, 4), ()), {"accuracy": 0.85}, 0.85, 0.008, False, "provisional")
    calls = []

    def verify(p, value):
        calls.append(p.gene)
        return {"accuracy": value}

    # int8 loses more than the margin once measured: the bf16 pair wins, and int8 was measured once
    best, n = choose_pair([fp32, bf16, int8], lambda p: verify(p, 0.81), "accuracy", 3)
    assert best.precision == "bf16" and n == 1 and calls == [((4, 4), ())]
    # int8 holds up: it is reported with its measured accuracy
    best, n = choose_pair([fp32, bf16, int8], lambda p: verify(p, 0.84), "accuracy", 3)
    assert best.precision == "int8" and best.measured and best.fitness == 0.84
    # no quantisation allowed: a provisional int8 pair is never reported
    best, n = choose_pair([fp32, int8], lambda p: pytest.fail("verify_top=0 allows no quantisation"), "accuracy", 0)
    assert best.precision == "fp32"


def test_joint_search_with_a_table_per_precision(tmp_path, supernet_and_tables, capsys):
    ckpt, tables, full_ms, table = supernet_and_tables
    model = tavt_kit.load_checkpoint(ckpt)
    from tavt_kit.search import space_of

    smallest_ms = table.predict(space_of(model).smallest())
    budget = smallest_ms + 0.25 * (full_ms - smallest_ms)  # tight for fp32; the full model fits at int8
    out = tmp_path / "s"
    argv = ["search", "--checkpoint", ckpt, "--precisions", "fp32,bf16,int8", "--latency-budget",
            f"{budget:.4f}ms", "--out", str(out)] + EVO
    for p in ("fp32", "bf16", "int8"):
        argv += ["--latency-table", tables[p]]
    assert main(argv) == 0
    res = json.loads((out / "search.json").read_text())
    row = res["budgets"][0]
    best, fp32 = row["best"], row["best_fp32"]
    assert set(res["precisions"]["searched"]) == {"fp32", "bf16", "int8"}
    assert best["latency_ms"] <= budget + 1e-9 and fp32["latency_ms"] <= budget + 1e-9
    # the pool holds every fp32 candidate: the pair is at least as fit as the fp32-only pick
    key = {"nll": lambda d: -d["holdout_nll"]}[res["settings"]["fitness"]]
    assert key(best) >= key(fp32) - 1e-12
    # accuracy measured at the pair's precision, and both picks run on the deployed runtime on the test images
    assert best["holdout_source"] != "fp32 (provisional; measured on the deployed int8 model before it is reported)"
    assert "openvino" in best["deployed"]["runtime"].lower() and fp32["deployed"]["test_images"] == res["settings"]["test_images"]
    assert set(row["vs_fp32"]) >= {"difference", "interval", "resolved"}
    prec = res["precisions"]
    # int8's provisional figures are fp32's with their noise: its evolution is corrected for the winner's curse too
    recs = [json.loads(line) for line in (out / "search.journal.jsonl").read_text().splitlines()]
    int8 = [r for r in recs if r.get("kind") == "candidate" and r.get("precision") == "int8"]
    assert int8 and all(r.get("nll_se") is not None for r in int8)
    if best["precision"] == "int8":
        assert "OpenVINO int8" in best["holdout_source"]
    # every int8 point reported on the front was quantised and run on the held-out images first
    records = [json.loads(line) for line in (out / "search.journal.jsonl").read_text().splitlines()]
    deployed = [r for r in records if r.get("kind") == "deployed"]  # one journal: each record says what it is
    assert all(r["precision"] == "int8" for r in deployed)
    assert {r.get("precision") for r in records if r.get("kind") == "candidate"} >= {"int8"}
    measured = {tuple(d["counts"]): d["accuracy"] for d in deployed}
    assert prec["fronts"]["int8"] and prec["front_verifications"] >= len(prec["fronts"]["int8"])
    assert all(measured[tuple(c["counts"])] == c["accuracy"] for c in prec["fronts"]["int8"])
    assert all(0 <= c["fp32_accuracy"] <= 1 for c in prec["fronts"]["int8"])
    # an int8 candidate says "measured" exactly when it was quantised and run on the deployed model
    assert {tuple(c["counts"]) for c in prec["candidates"]["int8"] if c["measured"]} == set(measured)
    index = json.loads((out / "schedules.json").read_text())
    assert index["budgets"][0]["precision"] == best["precision"]
    assert (out / "precision_fronts.png").exists()
    printed = capsys.readouterr().out
    assert "searched pair" in printed and "measured on the deployed int8 model" in printed
    assert main(["report", str(out / "search.json"), "--out", str(tmp_path / "report")]) == 0
    report = (tmp_path / "report" / "report.md").read_text()
    assert "searched pair" in report and f"@ {best['precision']}" in report and "fp32-only pick" in report
    assert (tmp_path / "report" / "precision_fronts.png").exists() and "precision_fronts.png" in report
    # below every fp32 and bf16 schedule, only int8 fits: it is quantised and measured before it is reported
    # (the candidates and int8 runs of the search above are taken, not evaluated again: --reuse)
    tight = tmp_path / "tight"
    argv_tight = [a if a != str(out) else str(tight) for a in argv] + ["--reuse", str(out)]
    argv_tight[argv_tight.index("--latency-budget") + 1] = f"{0.45 * smallest_ms:.4f}ms"
    assert main(argv_tight) == 0
    tight_res = json.loads((tight / "search.json").read_text())
    row = tight_res["budgets"][0]
    assert row["best_fp32"] is None and row["best"]["precision"] == "int8"
    assert row["best"]["holdout_source"].startswith("OpenVINO int8")
    assert row["int8_verifications"] + tight_res["precisions"]["front_verifications"] >= 1
    assert "int8" in row["best"]["deployed"]["runtime"]
    # export takes the pair's precision from the search, unless --precision says otherwise
    exp = tmp_path / "export"
    assert main(["export", "--checkpoint", ckpt, "--search", str(tight / "search.json"), "--budget", row["label"],
                 "--format", "openvino", "--no-verify", "--no-accuracy-control", "--calibration-images", "16",
                 "--out", str(exp)]) == 0
    doc = json.loads((exp / "export.json").read_text())
    assert doc["precision"] == "int8" and doc["schedule"]["counts"] == row["best"]["counts"]
    # a resumed search evaluates nothing again and quantises only for the test check of an int8 pick
    assert main(argv) == 0
    again = json.loads((out / "search.json").read_text())
    assert again["timing"]["evaluations"] == 0 and again["budgets"][0]["best"]["counts"] == best["counts"]
    assert again["budgets"][0]["best"]["precision"] == best["precision"]
    assert again["status"] == "finished" and again["settings"]["calibration"]["images"] == 16
    # rerun with other calibration images: the schedules' evaluations are reused, the int8 models quantised again
    argv_calib = list(argv)
    argv_calib[argv_calib.index("--calibration-images") + 1] = "12"
    assert main(argv_calib) == 0
    other = json.loads((out / "search.json").read_text())
    assert other["timing"]["evaluations"] == 0
    assert other["settings"]["calibration_images"] == 12 and other["settings"]["calibration"]["images"] == 12
    assert other["precisions"]["quantized_models"] >= len(prec["fronts"]["int8"]) >= 1


def test_precision_bad_input(tmp_path, supernet_and_tables, capsys):
    ckpt, tables, full_ms, _ = supernet_and_tables
    base = ["search", "--checkpoint", ckpt, "--out", str(tmp_path)] + EVO
    # a table of another precision than the one searched
    assert main(base + ["--latency-table", tables["bf16"], "--latency-budget", "5ms"]) == 2
    assert "no table profiled at fp32" in capsys.readouterr().err
    # a precision without its table
    assert main(base + ["--precisions", "fp32,int8", "--latency-table", tables["fp32"],
                        "--latency-budget", "5ms"]) == 2
    assert "no table profiled at int8" in capsys.readouterr().err
    # a table whose precision is not searched
    assert main(base + ["--precisions", "fp32,bf16", "--latency-table", tables["fp32"], "--latency-table",
                        tables["bf16"], "--latency-table", tables["int8"], "--latency-budget", "5ms"]) == 2
    assert "does not search" in capsys.readouterr().err
    # precisions need a latency budget
    assert main(base + ["--precisions", "fp32,bf16", "--macs-budget", "1G"]) == 2
    assert "--precisions fp32,bf16: precisions are chosen by latency; give a latency budget" in capsys.readouterr().err
    assert main(base + ["--precisions", "fp32,int4", "--latency-budget", "5ms"]) == 2
    assert "--precisions int4: expected one of fp32, bf16, fp16, int8" in capsys.readouterr().err


def test_both_picks_and_the_full_model_are_timed_together(supernet_and_tables):
    """--remeasure: every budget's pair and fp32-only pick and the full model are deployed and timed round-robin
    in one process, so that their measured latencies compare (one by one, a drifting machine would decide)."""
    from tavt_kit.search.evolution import schedule_of
    from tavt_kit.search.pairs import _remeasure_together
    from tavt_kit.search import space_of

    ckpt = supernet_and_tables[0]
    model = tavt_kit.load_checkpoint(ckpt)
    space = space_of(model)
    full, small = list(space.full().counts), list(space.smallest().counts)
    result = {"full": {"counts": full}, "precisions": {}, "budgets": [
        {"objective": "latency", "limit": 1.0, "best": {"counts": small, "precision": "int8"},
         "best_fp32": {"counts": small, "precision": "fp32"}},
        {"objective": "latency", "limit": 1e-9, "best": None, "best_fp32": {"counts": full, "precision": "fp32"}}]}
    from types import SimpleNamespace

    from tavt_kit import DeploymentTarget

    target = DeploymentTarget(backend="openvino", batch_size=2, threads=1)
    objectives = {p: SimpleNamespace(target=target.with_(precision=p), remeasure=lambda s: pytest.fail("timed one by one"))
                  for p in ("fp32", "int8")}
    _remeasure_together(result, model, lambda g: schedule_of(g, space.num_patches, space.min_tokens), objectives,
                        lambda s: None)
    first, second = result["budgets"]
    for d in (result["full"], first["best"], first["best_fp32"], second["best_fp32"]):
        assert d["latency_measured_ms"] > 0
    assert first["best"]["measured_within_budget"] and not second["best_fp32"]["measured_within_budget"]
    assert result["full"]["measured_fraction_of_full"] == 1.0
    # the ratio is paired rotation by rotation (bench.paired_ratio): near the ratio of the medians, inside its
    # interval, over the rotations the round ran (at least JUDGING_ROUNDS, unless the time ran out)
    d = second["best_fp32"]
    low, high = d["measured_fraction_interval"]
    assert low <= d["measured_fraction_of_full"] <= high
    assert d["measured_fraction_of_full"] == pytest.approx(
        d["latency_measured_ms"] / result["full"]["latency_measured_ms"], rel=0.2)
    assert result["precisions"]["remeasured"]["rotations"] >= 3
    assert "round-robin" in result["precisions"]["remeasured"]["method"]
    assert result["precisions"]["remeasured"]["batch_size"] == 2


def test_a_pick_timed_over_its_budget_on_the_target_is_passed_over():
    """Tables predict; where the search can time on the target, the pick is the best pair that also meets the
    budget when timed there, and the pairs timed over are listed."""
    from types import SimpleNamespace

    from tavt_kit.search.timed import TargetCheck

    fast = Pair("int8", ((4, 2), ()), {"accuracy": 0.84}, 0.84, 0.008, True, "int8")
    slow = Pair("fp32", ((4, 4), ()), {"accuracy": 0.80}, 0.80, 0.009, True, "fp32")
    on_target = {(fast.gene, "int8"): 0.013, (slow.gene, "fp32"): 0.0095}  # int8 mispredicted: 8 ms -> 13 ms
    obj = lambda p: SimpleNamespace(source="table", can_remeasure=True,  # noqa: E731
                                    remeasure=lambda s: on_target[((tuple(s.counts), ()), p)])
    target = TargetCheck({p: obj(p) for p in ("fp32", "int8")}, lambda g: SimpleNamespace(counts=g[0]),
                         lambda s: None)

    def within(limit, over):
        check = target.within(limit, over)
        return lambda pair: check(pair.gene, pair.precision, pair.latency)

    over = []
    best, _ = choose_pair([fast, slow], pytest.fail, "accuracy", 3, within=within(0.010, over))
    assert best is slow and over == [{"counts": [4, 2], "precision": "int8", "latency_ms": 8.0,
                                      "latency_measured_ms": 13.0}]
    # a wider budget: the int8 pair meets it timed too, and is not timed again
    best, _ = choose_pair([fast, slow], pytest.fail, "accuracy", 3, within=within(0.015, []))
    assert best is fast and len(target.timed) == 2
    target.objectives["int8"].source = "measured"  # every candidate already timed: nothing to check
    assert target.within(0.010, []) is None
    # the int8 pair was timed at 13/8 of its prediction: a provisional int8 pair the correction puts over the
    # budget is passed over before its (costly) verification on the deployed int8 model, and is not timed
    target.objectives["int8"].source = "table"
    prov = Pair("int8", ((4, 3), ()), {"accuracy": 0.86}, 0.86, 0.0075, False, "provisional")
    assert target.correction("int8") == pytest.approx(13 / 8)
    assert target.correction("fp32") == pytest.approx(0.0095 / 0.009)
    best, n = choose_pair([prov, slow], pytest.fail, "accuracy", 3, within=within(0.011, []),
                          plausible=lambda pair: target.plausible(pair.gene, pair.precision, pair.latency, 0.011))
    assert best is slow and n == 0 and (prov.gene, "int8") not in target.timed


def test_a_budget_only_a_lower_precision_meets_is_searched_not_called_unreachable(tmp_path, supernet_and_tables,
                                                                                  capsys):
    """A GPU's fp16 search: the budget is below every fp32 schedule but not below bf16's smallest (the bf16 table
    is twice as fast), so the search warns of nothing and finds a bf16 pair within it."""
    ckpt, tables, full_ms, table = supernet_and_tables
    from tavt_kit.search import space_of

    budget = 0.9 * table.predict(space_of(tavt_kit.load_checkpoint(ckpt)).smallest())
    out = tmp_path / "s"
    argv = ["search", "--checkpoint", ckpt, "--precisions", "bf16", "--latency-table", tables["fp32"],
            "--latency-table", tables["bf16"], "--latency-budget", f"{budget:.4f}ms", "--out", str(out)] + EVO
    assert main(argv) == 0
    said = capsys.readouterr()
    assert "below the smallest schedule" not in said.out + said.err
    best = json.loads((out / "search.json").read_text())["budgets"][0]["best"]
    assert best["precision"] == "bf16" and best["latency_ms"] <= budget + 1e-9


def test_the_int8_front_is_measured_for_a_bounded_time_spread_over_its_latencies():
    """Measuring the int8 front costs an NNCF quantisation and a run per point (minutes for a 12-block ViT on a
    CPU): within ``front_time_limit`` seconds the points measured are spread over the front's latencies (both ends
    first), the front holds only measured points, and how many were left out is said; no limit measures all."""
    from types import SimpleNamespace

    from tavt_kit.search.evolution import Candidate
    from tavt_kit.search.pairs import _measured_int8_front, spread_order

    assert spread_order(5) == [0, 4, 2, 1, 3] and sorted(spread_order(9)) == list(range(9)) and spread_order(0) == []
    cands = [Candidate(counts=(8 - i, 8 - i), accuracy=0.9 - 0.05 * i, macs=100 - i, latency=0.01 * (8 - i))
             for i in range(6)]  # every one on the front: faster, less accurate
    search = SimpleNamespace(evaluated={c.gene: c for c in cands})
    budgets = [{"objective": "latency", "limit": 1.0}]
    now, asked = [0.0], []

    def verify(gene, why):  # each measurement takes 10 s of the clock
        asked.append(gene)
        now[0] += 10.0
        return {"accuracy": 0.5, "nll": 1.0 + 0.01 * len(asked), "kl": 0.1}

    front, measured, left = _measured_int8_front(search, budgets, verify, "nll", time_limit=25.0,
                                                 clock=lambda: now[0])
    assert (measured, left) == (3, 3) and len(asked) == 3  # 0 s, 10 s, 20 s started; at 30 s the limit is past
    by_latency = sorted(cands, key=lambda c: c.latency)
    assert asked[:2] == [by_latency[0].gene, by_latency[-1].gene]  # both ends of the front first
    assert {c.gene for c in front} <= set(asked)
    now[0], asked[:] = 0.0, []
    front, measured, left = _measured_int8_front(search, budgets, verify, "nll", time_limit=None, clock=lambda: now[0])
    assert (measured, left) == (6, 0)
    now[0], asked[:] = 0.0, []
    assert _measured_int8_front(search, budgets, verify, "nll", time_limit=0, clock=lambda: now[0])[1:] == (1, 5)
    # on a target of 2 threads two points are quantised together first (prepare), then each measured
    now[0], asked[:], prepared = 0.0, [], []
    front, measured, left = _measured_int8_front(search, budgets, verify, "nll", time_limit=25.0,
                                                 clock=lambda: now[0], prepare=prepared.append, at_once=2)
    assert (measured, left) == (4, 2)  # started at 0 s and 20 s; at 40 s the limit is past
    assert prepared == [asked[:2], asked[2:]] and asked[:2] == [by_latency[0].gene, by_latency[-1].gene]
