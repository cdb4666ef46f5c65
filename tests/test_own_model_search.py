"""Searching your own trained model, no supernet: merge schedules on its own weights (no training), with it, ToMe on
it and the search's pick in one selection, it as the reference of every figure, and the pick exported with its
weights."""
import json
import re

import pytest

import tavt_kit
from tavt_kit.cli import main
from tavt_kit.errors import ConfigError
from tavt_kit.search import EvolutionSettings, SpaceOptions

pytestmark = pytest.mark.usefixtures("one_thread")
EVO = EvolutionSettings(population=4, generations=1, mutations=4, crossovers=3, seed=0)


@pytest.fixture(scope="module")
def own_checkpoint(trained_checkpoint, tmp_path_factory):
    """The trained digits model as ``fgvc-kit train`` writes it: a checkpoint that records its training."""
    model = tavt_kit.load_checkpoint(trained_checkpoint)
    model.spec["training"] = {"recipe": "test", "step": 300, "steps": 300}
    return str(tavt_kit.save_checkpoint(model, tmp_path_factory.mktemp("own") / "model.safetensors"))


def test_search_of_your_model_merges_on_its_weights_and_exports_the_recommendation(tmp_path, own_checkpoint,
                                                                                    capsys):
    model = tavt_kit.load_checkpoint(own_checkpoint)
    full = tavt_kit.count_macs(model).total()
    budget = f"{0.6 * full / 1e6:.4g}M MACs"
    out = tmp_path / "search"
    notes = []
    res = tavt_kit.search_schedules(model, None, [budget], evolution=EVO, out=str(out), log=notes.append,
                                    source={"checkpoint": own_checkpoint})
    assert any("your trained model, not a supernet" in n for n in notes)
    space = res.doc["space"]
    assert space["reducers"] == ["merge"] and space["bounds"] == [0.5] * model.depth  # ToMe's reach, every block
    # your model is the reference, measured on the same images; no second evolution on the same weights
    parent = res.doc["parent"]
    assert parent["searched_weights"] and parent["path"] == own_checkpoint
    assert parent["weights_sha256"] == res.doc["model"]["weights_sha256"]
    assert not (out / "parent.journal.jsonl").exists()
    b = res.budgets[budget]
    assert b.best.macs <= 0.6 * full  # the evolution's pick, or a baseline where it is fitter (they compete)
    recs = [json.loads(line) for line in (out / "search.journal.jsonl").read_text().splitlines()]
    cands = [r for r in recs if r["kind"] == "candidate" and r.get("reducers")]
    assert cands and all(set(r["reducers"]) <= {"merge", None} for r in cands)  # the evolution only merges
    v = b.best.vs_parent
    assert v["difference"] == pytest.approx(b.best.test_accuracy - res.parent.test_accuracy, abs=1e-9)
    assert "tome_parent" in b.training_free and "searched_parent" not in b.training_free
    # one selection on your model's weights: the best held-out NLL of what was fitted to the budget (ToMe, your
    # model), which the searched pick replaces only on a paired lead beyond noise; no supernet to gate
    rec = b.recommended
    fitted = {k: p.raw for k, p in b.training_free.items()}
    best_fitted = min(fitted, key=lambda k: fitted[k]["holdout_nll"])
    gate = rec.evidence_parent
    if gate is not None:
        assert gate["versus"] == best_fitted and gate["metric"] == "NLL"
        assert (rec.family == "searched") == (gate["z"] is None or gate["z"] > gate["required_z"])
    else:  # nothing to compare: the pick trails on the (corrected) point estimates
        assert rec.family == best_fitted
    assert rec.family in ("searched", best_fitted) and rec.evidence is None and rec.weights == "parent"
    from tavt_kit.cli.search import summary

    text = summary(res)
    assert "recommended: " in text and "supernet" not in text
    # export follows it, with your model's file and weights
    exp = tmp_path / "export"
    assert main(["export", "--checkpoint", own_checkpoint, "--search", str(out / "search.json"), "--budget", budget,
                 "--format", "onnx", "--verify-images", "32", "--out", str(exp)]) == 0
    assert f"exporting the recommendation, {rec.family} on your model" in capsys.readouterr().out
    doc = json.loads((exp / "export.json").read_text())
    assert tuple(doc["schedule"]["counts"]) == rec.counts and doc["checkpoint"]["path"] == own_checkpoint
    assert doc["schedule"]["source"]["weights"] == "parent"
    # the report ships that file, and says whose weights every option runs on
    assert main(["report", "--search", str(out / "search.json"), "--export", str(exp / "export.json"), "--out",
                 str(tmp_path / "report")]) == 0
    md = (tmp_path / "report" / "report.md").read_text()
    assert "supernet's" not in md and "| supernet |" not in md and "vs your model" in md
    ship = next(line for line in md.splitlines() if line.startswith(f"| {b.label} |") and "model.onnx" in line)
    assert "not exported" not in ship


def test_bound_sets_the_space_of_your_model_only(tmp_path, own_checkpoint, capsys):
    model = tavt_kit.load_checkpoint(own_checkpoint)
    full = tavt_kit.count_macs(model).total()
    with pytest.raises(ConfigError, match=r"bound=1\.5: expected"):
        tavt_kit.search_schedules(model, None, [f"{0.5 * full:.0f} MACs"], space=SpaceOptions(bound=1.5),
                                  out=str(tmp_path / "x"))
    supernet = tavt_kit.load_checkpoint(own_checkpoint)
    from tavt_kit.schedules.space import SearchSpace

    supernet.spec["search_space"] = SearchSpace.for_model(supernet).to_dict()
    with pytest.raises(ConfigError, match=r"bound=0\.7: a supernet is searched in the space it was distilled for"):
        tavt_kit.search_schedules(supernet, None, [f"{0.5 * full:.0f} MACs"], space=SpaceOptions(bound=0.7),
                                  out=str(tmp_path / "y"))
    assert main(["search", "--checkpoint", own_checkpoint, "--bound", "2", "--macs-budget", "1M"]) == 2
    assert "--bound 2.0: expected" in capsys.readouterr().err
    # a budget below every schedule the search can return (its space, and the baselines fitted to a budget) is
    # refused before any work, by the library and the command alike
    none = f"{0.01 * full / 1e6:.4g}M"
    assert main(["search", "--checkpoint", own_checkpoint, "--macs-budget", none]) == 2
    assert re.search(r"--macs-budget [\d.]+K MACs: below every schedule the search can return; achievable: ",
                     capsys.readouterr().err)
    with pytest.raises(ConfigError, match=r"budgets='.* MACs': below every schedule the search can return"):
        tavt_kit.search_schedules(model, None, [f"{none} MACs"], out=str(tmp_path / "none"))
    # above one half a block merges in several bipartite rounds: the space reaches further than ToMe
    deep = f"{0.45 * full / 1e6:.4g}M"
    assert main(["search", "--checkpoint", own_checkpoint, "--bound", "0.7", "--macs-budget", deep, "--population", "2", "--generations", "1", "--mutations", "2",
                 "--crossovers", "1", "--subset", "64", "--out", str(tmp_path / "deep")]) == 0
    doc = json.loads((tmp_path / "deep" / "search.json").read_text())
    assert doc["space"]["bounds"] == [0.7] * model.depth and doc["budgets"][0]["best"]["macs"] <= 0.45 * full
