"""Your model's weights ship unless the supernet's pick beats them beyond noise, paired per image (recommend.py)."""
import pytest
import torch

import tavt_kit
from tavt_kit.cli import main
from tavt_kit.errors import ConfigError
from tavt_kit.models.checkpoint import parent_record
from tavt_kit.search import EvolutionSettings, ShipPolicy
from tavt_kit.search.recommend import recommend, required_z

pytestmark = pytest.mark.usefixtures("one_thread")
EVO = EvolutionSettings(population=4, generations=1, mutations=3, crossovers=3, seed=0)


def _options():
    row = {"best": {"counts": [40, 20], "holdout_nll": 0.40, "fitness_measured": -0.40, "fitness_shrunk": -0.401}}
    free = {"tome_parent": {"counts": [48, 32], "reducers": ["merge"] * 2, "holdout_nll": 0.42},
            "searched_parent": {"counts": [44, 30], "reducers": ["merge"] * 2, "holdout_nll": 0.41,
                                "fitness_measured": -0.41, "fitness_shrunk": -0.412}}
    return row, free


def _evidence(asked, se, own_se=0.001):
    """Paired leads equal to the held-out point estimates; standard error ``se`` for the supernet's pick, ``own_se``
    for a schedule searched on your model."""
    def lead(fam, d, other, o):
        asked.append((fam, other))
        return o["holdout_nll"] - d["holdout_nll"], (se if fam == "searched" else own_se)
    return lead


def test_a_lead_within_noise_ships_your_models_weights():
    row, free = _options()
    asked = []
    # the pick leads the best on your model's weights (searched_parent, 0.412 corrected) by 0.011 after both
    # corrections; with a standard error of 0.01 that is z = 1.1, short of 1.645
    rec = recommend(row, free, fitness="nll", evidence=_evidence(asked, 0.01))
    # step 1: searched_parent leads ToMe by 0.008 at z = 8; step 2: the pick against searched_parent only
    assert asked == [("searched_parent", "tome_parent"), ("searched", "searched_parent")]
    assert rec["family"] == "searched_parent" and rec["weights"] == "parent"
    ev = rec["evidence"]
    assert ev["versus"] == "searched_parent" and ev["lead"] == pytest.approx(0.01 - 0.001 + 0.002)
    assert ev["z"] == pytest.approx(1.1) and ev["required_z"] == pytest.approx(required_z(0.95)) == \
        pytest.approx(1.6449, abs=1e-4)
    assert "within noise (z = 1.10, 1.64 needed at 95%): your model's weights ship" in rec["why"]
    # the same lead, resolved
    rec = recommend(row, free, fitness="nll", evidence=_evidence([], 0.005))
    assert rec["family"] == "searched" and rec["weights"] == "supernet" and "z = 2.20 > 1.64" in rec["why"]
    # at confidence 0.5 any lead ships the pick; without per-image evidence the point estimates decide
    assert recommend(row, free, fitness="nll", evidence=_evidence([], 0.01), confidence=0.5)["family"] == "searched"
    assert "evidence" not in recommend(row, free, fitness="nll")
    # the pick behind: nothing to test, your model's weights, no note of a lead
    row["best"]["holdout_nll"] = 0.5
    rec = recommend(row, free, fitness="nll", evidence=_evidence([], 0.01))
    assert rec["family"] == "searched_parent" and "pick leads" not in rec["why"] and rec["evidence"]["z"] < 0
    # by accuracy the lead is in hits; identical predictions are no lead
    row = {"best": {"counts": [40, 20], "holdout_accuracy": 0.9}}
    free = {"tome_parent": {"counts": [48, 32], "holdout_accuracy": 0.9}}
    rec = recommend(row, free, fitness="accuracy", evidence=lambda *a: (0.0, 0.0))
    assert rec["family"] == "tome_parent" and rec["evidence"]["metric"] == "accuracy"


def test_a_schedule_searched_on_your_model_replaces_tome_only_beyond_noise():
    """Step 1: what was fitted to the budget (ToMe on your model, your model, at each precision) is the baseline; the
    schedule searched on your model, the fittest of many on these images, ships only on a paired lead beyond noise."""
    row = {"best": {"counts": [40, 20], "holdout_nll": 0.60}}  # the supernet's pick, well behind
    free = {"tome_parent": {"counts": [48, 32], "reducers": ["merge"] * 2, "holdout_nll": 0.42},
            "tome_parent@int8": {"counts": [46, 30], "reducers": ["merge"] * 2, "holdout_nll": 0.43,
                                 "precision": "int8"},
            "searched_parent": {"counts": [44, 30], "reducers": ["merge"] * 2, "holdout_nll": 0.416,
                                "fitness_measured": -0.416, "fitness_shrunk": -0.417},
            "searched_parent@int8": {"counts": [40, 28], "reducers": ["merge"] * 2, "holdout_nll": 0.418,
                                     "precision": "int8"}}
    asked = []
    # searched_parent leads ToMe by 0.004 - 0.001 (its correction) = 0.003; at a standard error of 0.004, z = 0.75
    rec = recommend(row, free, fitness="nll", evidence=_evidence(asked, 0.01, own_se=0.004))
    assert asked[0] == ("searched_parent", "tome_parent")  # the best of each kind, compared once
    assert rec["family"] == "tome_parent" and rec["weights"] == "parent"
    ev = rec["evidence_parent"]
    assert ev["versus"] == "tome_parent" and ev["lead"] == pytest.approx(0.003) and ev["z"] == pytest.approx(0.75)
    assert "searched_parent leads tome_parent by +0.0030 NLL, within noise (z = 0.75, 1.64 needed at 95%): " \
           "tome_parent ships" in rec["why"]
    # resolved: the searched schedule ships
    rec = recommend(row, free, fitness="nll", evidence=_evidence([], 0.01, own_se=0.001))
    assert rec["family"] == "searched_parent" and "z = 3.00 > 1.64" in rec["why"]
    # step 1's confidence on its own; 0.5: the point estimate decides
    assert recommend(row, free, fitness="nll", evidence=_evidence([], 0.01, own_se=0.004),
                     parent_confidence=0.5)["family"] == "searched_parent"
    with pytest.raises(ConfigError, match=r"parent_confidence=1\.5: expected a one-sided confidence"):
        recommend(row, free, fitness="nll", evidence=_evidence([], 0.01), parent_confidence=1.5)
    # on selection images (never scored by the evolution) there is no curse: the best score ships, unasked
    sel = {k: {**v, "selection_nll": v["holdout_nll"]} for k, v in free.items()}
    asked = []
    rec = recommend({"best": {**row["best"], "selection_nll": 0.6}}, sel, fitness="nll", selection_images=500,
                    evidence=_evidence(asked, 0.01, own_se=0.004))
    assert rec["family"] == "searched_parent" and "evidence_parent" not in rec
    assert all(a[0] == "searched" for a in asked)
    # a search run on your model itself: its pick is the searched schedule, gated the same way
    rec = recommend({"best": {"counts": [44, 30], "holdout_nll": 0.416}}, {"tome_parent": free["tome_parent"]},
                    fitness="nll", evidence=_evidence([], 0.01, own_se=0.004), searched_weights="parent")
    assert rec["family"] == "tome_parent" and rec["evidence_parent"]["versus"] == "tome_parent"
    # nothing fitted meets the budget: the searched schedule ships without a comparison
    rec = recommend(row, {"searched_parent": free["searched_parent"]}, fitness="nll",
                    evidence=_evidence([], 0.01, own_se=0.004))
    assert rec["family"] == "searched_parent" and "evidence_parent" not in rec


def _search(tmp_path, supernet, parent_path, **kw):
    model = supernet
    model.spec.setdefault("distillation", {})["parent"] = parent_record(parent_path,
                                                                         tavt_kit.load_checkpoint(parent_path))
    sn = str(tavt_kit.save_checkpoint(model, tmp_path / "supernet.safetensors"))
    model = tavt_kit.load_checkpoint(sn)
    budget = f"{0.85 * tavt_kit.count_macs(model).total() / 1e6:.4g}M MACs"
    res = tavt_kit.search_schedules(model, None, [budget], evolution=EVO, ship=ShipPolicy(parent_search=False, **kw),
                                    out=str(tmp_path / "search"), log=lambda s: None)
    return res.budgets[budget], res


def _noisy(path, noise, out):
    model = tavt_kit.load_checkpoint(path)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(noise * p.std().clamp_min(1e-3) * torch.randn(p.shape, generator=g))
    return model if out is None else str(tavt_kit.save_checkpoint(model, out))


def test_the_gate_pairs_the_deployables_on_the_held_out_images(tmp_path, trained_checkpoint):
    """Distilled weights barely different from your model's: the supernet's pick ships only where its paired lead
    over the best deployable on your model's weights is resolved; the per-image evidence is of the same images and
    deployables as the held-out figures of search.json."""
    b, res = _search(tmp_path, _noisy(trained_checkpoint, 0.02, None), trained_checkpoint)
    rec, ev = b.recommended, b.recommended.evidence
    assert ev["z"] is not None and ev["required_z"] == pytest.approx(1.6448536, abs=1e-6)
    assert rec.weights == ("supernet" if ev["z"] > ev["required_z"] else "parent")
    # a lead within noise is said; a supernet's pick that does not lead at all leaves nothing to say
    assert ("your model's weights ship" in rec.why) == (rec.weights == "parent" and ev["lead"] > 0)
    other = b.training_free[ev["versus"]].raw
    # the mean of the per-image differences is the difference of the two held-out NLLs (corrections aside)
    cut = lambda d: max(0.0, d.get("fitness_measured", 0) - d.get("fitness_shrunk", 0))  # noqa: E731
    assert ev["lead"] == pytest.approx(other["holdout_nll"] - b.best.raw["holdout_nll"] - cut(b.best.raw)
                                       + cut(other), abs=1e-5)
    assert ev["se"] > 0 and ev["metric"] == "NLL"
    # asked for no margin, the point estimates decide
    b2, _ = _search(tmp_path / "any", _noisy(trained_checkpoint, 0.02, None), trained_checkpoint,
                    confidence=0.5)
    assert b2.recommended.family == ("searched" if ev["lead"] > 0 else ev["versus"])


def test_a_resolved_lead_ships_the_supernets_pick(tmp_path, trained_checkpoint):
    """Your model gone wrong (noisy weights) against a good supernet: the lead is resolved and the pick ships."""
    parent = _noisy(trained_checkpoint, 0.6, tmp_path / "parent.safetensors")
    b, _ = _search(tmp_path, tavt_kit.load_checkpoint(trained_checkpoint), parent)
    rec = b.recommended
    assert rec.family == "searched" and rec.weights == "supernet"
    assert rec.evidence["z"] > rec.evidence["required_z"] and "paired per image" in rec.why


def test_ship_confidence_is_checked_before_any_work(tmp_path, trained_checkpoint, capsys):
    model = tavt_kit.load_checkpoint(trained_checkpoint)
    for bad in (1.0, 0.2, "high", True):
        with pytest.raises(ConfigError, match=r"ship\.confidence=.*expected a one-sided confidence in \[0.5, 1\)"):
            tavt_kit.search_schedules(model, None, ["1M MACs"], ship=ShipPolicy(confidence=bad),
                                      out=str(tmp_path / "s"), log=lambda s: None)
    assert not (tmp_path / "s").exists()
    assert main(["search", "--checkpoint", trained_checkpoint, "--macs-budget", "1M", "--ship-confidence", "1.5",
                 "--out", str(tmp_path / "cli")]) != 0
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and "--ship-confidence 1.5" in err[0] and "[0.5, 1)" in err[0]


def test_the_ship_policy_is_one_value_checked_when_made(tmp_path, trained_checkpoint):
    """search_schedules(ship=ShipPolicy(...)): one value, every field checked when made."""
    from tavt_kit.search import ShipPolicy as Policy

    assert Policy() == Policy(confidence=0.95, selection=0.0, shrinkage=True, parent_search=True)
    for bad, match in (({"confidence": 1.0}, r"ship.confidence=1.0: expected"), ({"selection": 1.5}, "selection="),
                       ({"shrinkage": "yes"}, r"ship.shrinkage='yes': expected True or False")):
        with pytest.raises(ConfigError, match=match):
            Policy(**bad)
    model = tavt_kit.load_checkpoint(trained_checkpoint)
    with pytest.raises(ConfigError, match="ship=0.5: expected a ShipPolicy"):
        tavt_kit.search_schedules(model, None, ["1M MACs"], ship=0.5, out=str(tmp_path / "s"), log=lambda s: None)
    assert not (tmp_path / "s").exists()


def test_the_demo_summary_says_which_paired_test_decided():
    from tavt_kit.demo import _against_your_model

    gate = {"versus": "tome_parent", "metric": "NLL", "lead": 0.003, "se": 0.004, "z": 0.75, "required_z": 1.6449,
            "confidence": 0.95}
    from tavt_kit.search import SearchResult

    entry = {"counts": [16, 8], "macs": 10**7, "test_accuracy": 0.9,
             "vs_parent": {"difference": -0.002, "interval": [-0.005, 0.001]}}
    doc = {"parent": {"counts": [16, 16], "macs": 2 * 10**7, "test_accuracy": 0.902}, "full": entry,
           "smallest": entry, "space": {"num_patches": 16},
           "budgets": [{"label": "20M MACs", "objective": "macs", "limit": 2e7, "best": entry,
                        "training_free": {"tome_parent": entry},
                        "recommended": {"family": "tome_parent", "evidence_parent": gate}},
                       {"label": "10M MACs", "objective": "macs", "limit": 1e7, "best": entry, "training_free": {},
                        "recommended": {"family": "searched", "evidence": {**gate, "z": 2.5, "versus": "parent"}}}]}
    lines = _against_your_model(SearchResult(doc))
    assert lines[1].endswith("recommended: tome_parent (searched on your model led tome_parent within noise: "
                             "z = 0.75 <= 1.64)")
    assert lines[2].endswith("recommended: searched (the supernet's pick led parent beyond noise: z = 2.50 > 1.64)")
