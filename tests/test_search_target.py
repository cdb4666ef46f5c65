"""A latency budget is for the runtime you ship: with no table, the search profiles one for its target once,
keeps it beside the checkpoint, reuses it, predicts every candidate from it and times only its picks."""
import json

import pytest

import tavt_kit
from tavt_kit import DeploymentTarget, search_schedules
from tavt_kit.search import EvolutionSettings, LatencyOptions
from tavt_kit.search.objective import table_file_name
from conftest import random_splits, search_model

pytestmark = pytest.mark.usefixtures("one_thread")
EVO = EvolutionSettings(population=4, generations=1, mutations=3, crossovers=3, seed=0)
FAST = dict(grid=3, warmup=1, min_repeats=3, budget_s=0.02)  # a coarse, quick profile: these tests check the flow


@pytest.fixture(scope="module")
def model():
    return search_model()


@pytest.fixture(scope="module")
def data():
    return random_splits(24, 24)


def test_a_latency_budget_without_a_table_profiles_one_once_and_reuses_it(tmp_path, model, data):
    target = DeploymentTarget(backend="torch", threads=1)
    cache = tmp_path / "tables"
    lines = []
    res = search_schedules(model, data, ["100ms"], evolution=EVO,
                           latency=LatencyOptions(target=target, table_cache=str(cache), table_profile=FAST),
                           out=str(tmp_path / "a"), parent=None, log=lines.append)
    table = cache / table_file_name(target)
    assert table.is_file() and any("profiling a latency table" in s for s in lines)
    lat = res.doc["latency"]
    assert lat["source"] == "table" and lat["profiled_for_search"] and lat["table"] == str(table)
    assert lat["target"]["backend"] == "torch" and lat["target"]["batch_size"] == 1
    best = res.doc["budgets"][0]["best"]
    assert best["latency_measured_ms"] > 0  # the pick is timed on the target, not only predicted
    assert "merge" in json.loads(table.read_text())["reducers"]  # the model merges: the table prices it
    # the next search of this model on this target reuses the table instead of profiling again
    lines.clear()
    search_schedules(model, data, ["100ms"], evolution=EVO,
                     latency=LatencyOptions(target=target, table_cache=str(cache), table_profile=FAST),
                     out=str(tmp_path / "b"), parent=None, log=lines.append)
    assert any("reusing the table" in s for s in lines) and not any("profiling" in s for s in lines)
    # another batch size is another target: its own table
    lines.clear()
    other = target.with_(batch_size=2)
    search_schedules(model, data, ["100ms"], evolution=EVO,
                     latency=LatencyOptions(target=other, table_cache=str(cache), table_profile=FAST),
                     out=str(tmp_path / "c"), parent=None, log=lines.append)
    assert (cache / table_file_name(other)).is_file() and any("profiling" in s for s in lines)


def test_a_cached_table_of_another_model_is_profiled_again(tmp_path, model, data):
    from tavt_kit.search.objective import profiled_table

    target = DeploymentTarget(backend="torch", threads=1)
    other = tavt_kit.create_model("fgvc_tiny", depth=2, img_size=32, num_classes=4).eval()
    lines = []
    profiled_table(other, target, str(tmp_path), ("drop",), lines.append, FAST)
    lines.clear()
    t = profiled_table(model, target, str(tmp_path), ("drop",), lines.append, FAST)
    assert any("not reused" in s and "another model" in s for s in lines)
    t.check(model)


def test_a_table_of_another_machine_is_kept_and_reused_when_that_machine_comes_back(tmp_path, model, monkeypatch):
    """A cached table made with other cores (a process pinned to fewer, another machine) is profiled again, and the
    one it replaces is kept, not overwritten: back on the first machine, the search reuses it."""
    import tavt_kit.machine as machine
    from tavt_kit.search.objective import profiled_table, table_file_name

    target = DeploymentTarget(backend="torch", threads=1)
    path = tmp_path / table_file_name(target)
    first = profiled_table(model, target, str(tmp_path), ("drop",), lambda s: None, FAST)
    here = machine.cpu_description()
    there = dict(here, available_cores=int(here.get("available_cores") or 1) + 7)
    monkeypatch.setattr(machine, "cpu_description", lambda: there)  # the same cache, read from another machine
    lines = []
    profiled_table(model, target, str(tmp_path), ("drop",), lines.append, FAST)
    assert any("not reused" in s and "another machine" in s for s in lines)
    kept = sorted(tmp_path.glob(path.stem + ".replaced-*.json"))
    assert len(kept) == 1 and json.loads(kept[0].read_text()) == first.to_dict()
    assert json.loads(path.read_text())["machine"]["cpu"]["available_cores"] == there["available_cores"]
    monkeypatch.setattr(machine, "cpu_description", lambda: here)  # back where the first table was made
    lines.clear()
    t = profiled_table(model, target, str(tmp_path), ("drop",), lines.append, FAST)
    assert t.to_dict() == first.to_dict() and not any("profiling" in s for s in lines)
    assert any("reusing the table" in s and "replaced-" in s for s in lines)


def test_the_default_target_is_the_runtime_export_ships():
    pytest.importorskip("openvino")
    assert DeploymentTarget.default().backend == "openvino"


def test_bench_and_report_measure_the_picks_on_the_searchs_target(tmp_path, model, data, capsys):
    from tavt_kit.cli import main

    ckpt = str(tavt_kit.save_checkpoint(model, tmp_path / "supernet.safetensors"))
    target = DeploymentTarget(backend="torch", threads=1)
    res = search_schedules(model, data, ["100ms"], evolution=EVO,
                           latency=LatencyOptions(target=target, table_cache=str(tmp_path / "tables"), table_profile=FAST),
                           out=str(tmp_path / "s"), parent=None, source={"checkpoint": ckpt}, log=lambda s: None)
    sp = str(tmp_path / "s" / "search.json")
    timing = ["--time-budget", "0.05", "--min-repeats", "3", "--warmup", "1"]
    assert main(["bench", "--search", sp, "--out", str(tmp_path / "b"), "--quiet"] + timing) == 0
    bench = json.loads((tmp_path / "b" / "bench.json").read_text())
    assert bench["target"]["backend"] == "torch" and bench["target"]["batch_size"] == 1
    pick = res.doc["budgets"][0]["best"]["counts"]
    assert any((r.get("schedule") or None) == pick or r["label"].startswith("schedule-") for r in bench["results"])
    assert "not the target the search's latency budgets are for" not in capsys.readouterr().err
    # told otherwise, it measures there and says once that this is not the search's target
    assert main(["bench", "--search", sp, "--latency-batch-size", "2", "--out", str(tmp_path / "b2"), "--quiet"]
                + timing) == 0
    err = capsys.readouterr().err
    assert err.count("not the target the search's latency budgets are for") == 1
    assert "batch_size 2 (the search's: 1)" in err
    # the report's verdict is bench's measurement of the pick, on the search's target
    assert main(["report", "--search", sp, "--bench", str(tmp_path / "b" / "bench.json"), "--out",
                 str(tmp_path / "r")]) == 0
    md = (tmp_path / "r" / "report.md").read_text()
    assert "ms measured / 100 ms (predicted" in md
    assert main(["report", "--search", sp, "--bench", str(tmp_path / "b2" / "bench.json"), "--no-remeasure",
                 "--out", str(tmp_path / "r2")]) == 0
    assert "measured on torch cpu at batch 2, while the search's budgets are for torch cpu at batch 1" in \
        (tmp_path / "r2" / "report.md").read_text()
    # a budget whose recommendation is ToMe on your model: bench --search times that (what export ships for it),
    # on the supernet's weights (same operations); --budget times only the budgets named
    doc = json.loads(open(sp).read())
    merged = model.make_schedule(tavt_kit.TokenSchedule((12, 10, 8), model.num_patches, reducers=["merge"] * 3))
    tome = {"counts": [12, 10, 8], "reducers": ["merge"] * 3, "r": 8, "weights": "parent",
            "macs": tavt_kit.count_macs(model, merged).total(), "holdout_nll": 0.1}  # search.json MACs are checked
    doc["budgets"][0]["training_free"] = {"tome_parent": tome}
    doc["budgets"][0]["recommended"] = {"family": "tome_parent", "weights": "parent", "counts": tome["counts"],
                                        "reducers": tome["reducers"], "precision": "fp32", "why": "test"}
    json.dump(doc, open(sp, "w"))
    assert main(["bench", "--search", sp, "--budget", "100ms", "--out", str(tmp_path / "b3"), "--quiet"]
                + timing) == 0
    rows = {r["label"]: r for r in json.loads((tmp_path / "b3" / "bench.json").read_text())["results"]}
    assert set(rows) == {"full", "100ms: ToMe r=8 on your model"}
    assert rows["100ms: ToMe r=8 on your model"]["schedule"] == [12, 10, 8]
    capsys.readouterr()
    assert main(["bench", "--search", sp, "--budget", "7ms", "--out", str(tmp_path / "b4"), "--quiet"] + timing) == 2
    err = capsys.readouterr().err
    assert "7ms" in err and "100ms" in err  # the budgets the search holds are named
    assert main(["bench", "--checkpoint", ckpt, "--budget", "1", "--out", str(tmp_path / "b5")]) == 2
    assert "--budget names a budget of --search FILE" in capsys.readouterr().err
