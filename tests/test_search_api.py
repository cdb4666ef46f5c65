"""The search through the Python API: search_schedules against a synthetic LatencyTable, read as a SearchResult."""
import json

import pytest

import tavt_kit
from tavt_kit import ConfigError, DeploymentTarget, SearchResult, search_schedules
from tavt_kit.bench import LatencyTable
from tavt_kit.bench.identity import model_identity
from tavt_kit.search import EvaluationOptions, EvolutionSettings, LatencyObjective, LatencyOptions
from conftest import random_splits, search_model

pytestmark = pytest.mark.usefixtures("one_thread")
EVO = EvolutionSettings(population=5, generations=2, mutations=4, crossovers=4, seed=0)


@pytest.fixture(scope="module")
def model():
    return search_model()


@pytest.fixture(scope="module")
def data():
    return random_splits(40, 60)


def linear_table(model, precision="fp32", per_token=0.01):
    """A table for ``model``: every block costs ``per_token`` ms per token, embedding and head 0.1 ms."""
    n, p = model.num_patches, 1
    L = sorted({p + 1, p + n // 2, p + n})
    curve = (lambda f: {"tokens": L, "ms": [f * t for t in L]})
    return LatencyTable({
        "format": "fgvc-kit/latency-table", "version": 1, "model": model_identity(model),
        "target": {"backend": "openvino", "device": "cpu", "batch_size": 1, "threads": 1,
                   "precision": {"fp32": "f32", "bf16": "bf16", "int8": "int8"}[precision]},
        "embed_ms": 0.1, "plain_ms": curve(per_token), "attn_ms": curve(per_token / 2),
        "mlp_ms": curve(per_token / 2), "head_ms": {"tokens": L, "ms": [0.1] * len(L)}, "head_nodrop_ms": 0.1,
        "offset_ms": 0.0})


def test_search_under_a_latency_budget_returns_a_search_result(tmp_path, model, data):
    table = linear_table(model)
    full_ms = table.predict(model.full_schedule())
    budget = f"{0.9 * full_ms:.4g}ms"
    res = search_schedules(model, data, [budget], evolution=EVO, latency=LatencyOptions(table=table),
                           evaluation=EvaluationOptions(fitness="kl"), out=str(tmp_path), log=lambda s: None)
    assert isinstance(res, SearchResult)
    b = res.budgets[budget]
    assert b.objective == "latency" and b.best is not None
    assert b.best.latency_ms <= 0.9 * full_ms * 1.0001  # the pick meets its budget (predicted from the table)
    assert b.best.latency_ms == pytest.approx(table.predict(b.best.schedule(model.num_patches)))
    assert 0.0 <= b.best.test_accuracy <= 1.0 and b.best.test_interval[0] <= b.best.test_accuracy
    assert {"uniform", "evit"} <= set(b.baselines)
    # the front is a front: cost and held-out accuracy both rise along it
    costs = [p.latency_ms for p in res.front]
    assert costs == sorted(costs) and len(res.front) >= 2
    assert res.full.counts == (model.num_patches,) * model.depth
    assert res.doc["latency"]["source"] == "table" and res.doc["latency"]["precision"] == "fp32"
    # what was written is what was returned, and reads back as values
    again = SearchResult.load(tmp_path / "search.json")
    assert again.budgets[budget].best == b.best and again.front == res.front
    assert json.loads((tmp_path / "schedules.json").read_text())["budgets"][0]["counts"] == list(b.best.counts)


def test_a_second_search_in_the_same_folder_resumes_from_the_journal(tmp_path, model, data):
    table = linear_table(model)
    first = search_schedules(model, data, ["100ms"], evolution=EVO, latency=LatencyOptions(table=table),
                             out=str(tmp_path), log=lambda s: None)
    lines = []
    second = search_schedules(model, data, ["100ms"], evolution=EVO, latency=LatencyOptions(table=table),
                              out=str(tmp_path), log=lines.append)
    assert first.doc["timing"]["evaluations"] > 0 and second.doc["timing"]["evaluations"] == 0
    # the resumed search says what it loaded, and counts it
    n = first.doc["timing"]["candidates"]
    assert any(f"resuming: {n} candidates already evaluated are loaded from the journal" in s for s in lines)
    assert second.doc["timing"]["candidates"] == n == second.doc["timing"]["from_journal"] == len(second.doc["candidates"])
    assert not any("nan" in s for s in lines)
    assert second.budgets["100ms"].best == first.budgets["100ms"].best


def test_a_mac_budget_needs_no_latency_objective(tmp_path, model, data):
    full = tavt_kit.count_macs(model).total()
    # verify_top=0 (no int8 pair quantised per budget: int8 is then never reported unmeasured) is in the range
    # EvaluationOptions and --verify-top accept, and the search runs with it
    res = search_schedules(model, data, [f"{0.85 * full / 1e6:.4g}M MACs"], evolution=EVO, out=str(tmp_path),
                           evaluation=EvaluationOptions(verify_top=0), log=lambda s: None)
    (label, b), = res.budgets.items()
    assert b.best.macs <= 0.85 * full and res.objective == "macs" and res.doc["latency"] is None


def test_latency_objective_is_a_value(model):
    table = linear_table(model)
    obj = LatencyObjective.from_table(table, model)
    assert obj.target == DeploymentTarget(backend="openvino", device="cpu", precision="fp32", threads=1, batch_size=1)
    s = model.full_schedule()
    assert obj(s) == pytest.approx(table.predict(s) / 1e3) and obj.source == "table" and not obj.can_remeasure


def test_errors_name_the_parameter(tmp_path, model, data):
    with pytest.raises(ConfigError, match=r"^evaluation\.fitness='bogus': expected one of"):
        search_schedules(model, data, evolution=EVO, evaluation=EvaluationOptions(fitness="bogus"), out=str(tmp_path),
                         log=lambda s: None)
    with pytest.raises(ConfigError, match=r"^latency\.precisions=fp32,int8: precisions are chosen by latency"):
        search_schedules(model, data, ["1G MACs"], evolution=EVO,
                         latency=LatencyOptions(precisions=("int8",), table=linear_table(model)), out=str(tmp_path),
                         log=lambda s: None)
    with pytest.raises(ConfigError, match=r"^budgets='fast'"):
        search_schedules(model, data, ["fast"], evolution=EVO, out=str(tmp_path), log=lambda s: None)
    with pytest.raises(ConfigError, match=r"precision"):  # an int8 table for an fp32-only search
        search_schedules(model, data, ["10ms"], evolution=EVO,
                         latency=LatencyOptions(table=linear_table(model, "int8")), out=str(tmp_path),
                         log=lambda s: None)


def test_a_baseline_that_meets_a_budget_the_space_cannot_is_the_pick(tmp_path, model, data):
    """The space (20 % drop per block at most) ends above the budget; the fitted baselines reach below it: the
    search must not say that nothing meets the budget while listing a baseline that does."""
    from tavt_kit.schedules.space import SearchSpace

    m = tavt_kit.create_model("fgvc_tiny", depth=3, img_size=32, num_classes=4).eval()
    m.load_state_dict(model.state_dict())
    m.spec["search_space"] = SearchSpace.for_model(m, bound=0.2).to_dict()
    table = linear_table(m)
    from tavt_kit.search import space_of

    smallest_ms = table.predict(space_of(m).smallest())
    budget = f"{0.8 * smallest_ms:.4g}ms"
    res = search_schedules(m, data, [budget], evolution=EVO, latency=LatencyOptions(table=table),
                           evaluation=EvaluationOptions(fitness="kl"), out=str(tmp_path), parent=None,
                           log=lambda s: None)
    row = res.doc["budgets"][0]
    met = {k: d for k, d in row["baselines"].items() if d["latency_ms"] <= 0.8 * smallest_ms * 1.0001}
    assert met, "the test needs a baseline that meets the budget"
    best = row["best"]
    assert best is not None and best["origin"].startswith("baseline ") and best["latency_ms"] <= 0.8 * smallest_ms * 1.0001
    fit = {k: -d["holdout_kl"] for k, d in met.items()}
    assert -best["holdout_kl"] >= max(fit.values()) - 1e-12

