"""The selection split: each budget's recommendation is chosen on held-out images the evolution never scored, so the
searched pick's winner's curse (it was kept for scoring high on the evolution's images) does not decide it."""
import pytest
import torch

import tavt_kit
from tavt_kit.cli import main
from tavt_kit.errors import ConfigError
from tavt_kit.models.checkpoint import parent_record
from tavt_kit.search import EvaluationOptions, EvolutionSettings, LatencyOptions, ShipPolicy
from tavt_kit.search.data import EvalSet
from tavt_kit.search.recommend import recommend
from tavt_kit.search.selection import resolve_selection, split_selection

pytestmark = pytest.mark.usefixtures("one_thread")
EVO = EvolutionSettings(population=4, generations=1, mutations=3, crossovers=3, seed=0)


def test_split_selection_cuts_the_held_out_images_in_two_disjoint_seeded_parts():
    images = torch.arange(100, dtype=torch.uint8).view(100, 1, 1, 1).expand(100, 3, 2, 2).clone()
    held = EvalSet(images, torch.arange(100) % 7, "holdout")
    search, sel = split_selection(held, 0.3, seed=5)
    a, b = search.images[:, 0, 0, 0].tolist(), sel.images[:, 0, 0, 0].tolist()
    assert len(b) == 30 and len(a) == 70 and sorted(a + b) == list(range(100)) and not set(a) & set(b)
    assert a == sorted(a) and b == sorted(b)  # the images keep their order
    assert search.labels.tolist() == [i % 7 for i in a]  # labels follow their images
    again, sel2 = split_selection(held, 0.3, seed=5)
    assert sel2.images.equal(sel.images) and not split_selection(held, 0.3, seed=6)[1].images.equal(sel.images)
    same, none = split_selection(held, 0.0, seed=5)
    assert none is None and same is held


def test_resolve_selection():
    notes = []
    assert resolve_selection("auto", 1500, True, notes.append) == 0.5 and not notes
    assert resolve_selection("auto", 1500, False, notes.append) == 0.0 and not notes  # no recommendation to make
    assert resolve_selection("auto", 300, True, notes.append) == 0.0  # halves of 150 images cannot choose
    assert len(notes) == 1 and "too small" in notes[0] and "favours the searched pick" in notes[0]
    assert resolve_selection(0.25, 300, True, notes.append) == 0.25  # asked for explicitly: done
    assert resolve_selection(0, 300, True, notes.append) == 0.0
    for bad in (1.0, -0.1, "half", True):
        with pytest.raises(ConfigError, match="selection="):
            resolve_selection(bad, 300, True, notes.append)
    with pytest.raises(ConfigError, match="leave 0 for the selection"):
        resolve_selection(0.1, 4, True, notes.append)


def test_the_recommendation_compares_the_families_on_the_selection_images():
    """The searched pick fittest on the evolution's images but not on the selection images is not recommended."""
    row = {"best": {"counts": [40, 20], "holdout_nll": 0.30, "selection_nll": 0.45}}
    free = {"tome_parent": {"counts": [48, 32], "reducers": ["merge"] * 2, "holdout_nll": 0.40,
                            "selection_nll": 0.41},
            "parent": {"counts": [64, 64], "holdout_nll": 0.39, "selection_nll": 0.42}}
    rec = recommend(row, free, fitness="nll", selection_images=750)
    assert rec["family"] == "tome_parent" and rec["weights"] == "parent"
    assert rec["why"].startswith("best NLL on 750 selection images (never scored by the evolution)")
    # no selection split: the evolution's images decide
    assert recommend(row, free, fitness="nll")["family"] == "searched"
    # a tie goes to your model's weights
    row["best"]["selection_accuracy"] = free["tome_parent"]["selection_accuracy"] = 0.9
    free["parent"]["selection_accuracy"] = 0.8
    assert recommend(row, free, fitness="accuracy", selection_images=750)["family"] == "tome_parent"


def _supernet(tmp_path, parent_path):
    parent = tavt_kit.load_checkpoint(parent_path)
    model = tavt_kit.load_checkpoint(parent_path)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.3 * p.std().clamp_min(1e-3) * torch.randn(p.shape, generator=g))
    model.spec.setdefault("distillation", {})["parent"] = parent_record(parent_path, parent)
    return str(tavt_kit.save_checkpoint(model, tmp_path / "supernet.safetensors"))


def test_search_sets_the_selection_images_aside_and_recommends_on_them(tmp_path, trained_checkpoint):
    sn = _supernet(tmp_path, trained_checkpoint)
    model = tavt_kit.load_checkpoint(sn)
    full = tavt_kit.count_macs(model).total()
    budget = f"{0.7 * full / 1e6:.4g}M MACs"
    plain = tavt_kit.search_schedules(model, None, [budget], evolution=EVO, ship=ShipPolicy(selection=0),
                                      out=str(tmp_path / "plain"), log=lambda s: None)
    # ship_confidence 0.5: any lead on the selection images ships (the gate itself: test_ship_gate)
    res = tavt_kit.search_schedules(model, None, [budget], evolution=EVO,
                                    ship=ShipPolicy(selection=0.5, confidence=0.5), out=str(tmp_path / "split"),
                                    log=lambda s: None)
    n = plain.doc["settings"]["holdout_images"]
    st = res.doc["settings"]
    assert plain.doc["settings"]["selection_images"] == 0 and "selection_sha256" not in plain.doc["settings"]
    assert st["selection_images"] == round(n / 2) and st["holdout_images"] == n - round(n / 2)
    assert st["selection_sha256"] and st["selection_sha256"] != plain.doc["settings"].get("selection_sha256")
    row = res.doc["budgets"][0]
    options = {"searched": row["best"], **row["training_free"]}
    assert "tome_parent" in options
    for name, d in options.items():  # every option scored on the same selection images, with its interval
        lo, hi = d["selection_interval"]
        assert 0 <= lo <= d["selection_accuracy"] <= hi <= 1, name
    rec = row["recommended"]
    assert rec["family"] == min(options, key=lambda k: options[k]["selection_nll"])
    assert f"on {st['selection_images']} selection images" in rec["why"]
    # the parent's selection figures are the parent's own: the same in every budget's options and in doc["parent"]
    assert res.doc["parent"]["selection_nll"] == pytest.approx(options["parent"]["selection_nll"]) \
        if "parent" in options else res.doc["parent"]["selection_nll"] is not None
    # without a split the recommendation reads the evolution's images, and says so
    assert plain.doc["budgets"][0]["recommended"]["why"].startswith("best held-out NLL")


def test_cli_selection_flag_is_checked(tmp_path, trained_checkpoint, capsys):
    assert main(["search", "--checkpoint", trained_checkpoint, "--macs-budget", "1M", "--selection", "1.5",
                 "--out", str(tmp_path)]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--selection" in err[0] and "[0, 1)" in err[0]


@pytest.mark.nncf
def test_a_precision_search_scores_each_pair_on_the_selection_images_where_it_ships(tmp_path, trained_checkpoint):
    """int8 options (the searched pair and your model quantised) are scored on the selection images on the deployed
    int8 model, not in fp32; the recommendation is the best of them there."""
    from conftest import exact_table, scaled_table
    from tavt_kit.bench import LatencyTable, TimingPolicy, profile_latency

    sn = _supernet(tmp_path, trained_checkpoint)
    model = tavt_kit.load_checkpoint(sn)
    table = profile_latency(model, grid=3, calibrate=False, reducers="drop,merge",
                            policy=TimingPolicy(warmup=1, min_repeats=3, max_repeats=3, budget_s=0.05))
    data = exact_table(table.to_dict())
    scaled = scaled_table(data, 0.25)
    scaled["target"]["precision"] = "int8"
    tables = {"fp32": LatencyTable(data), "int8": LatencyTable(scaled)}
    budget = f"{0.4 * tables['fp32'].predict(model.full_schedule()):.4f}ms"  # the parent fits at int8 only
    res = tavt_kit.search_schedules(model, None, [budget], evolution=EVO,
                                    latency=LatencyOptions(precisions=("fp32", "int8"), table=tables),
                                    evaluation=EvaluationOptions(calibration_images=32, verify_top=1,
                                                                 front_time_limit=0),
                                    ship=ShipPolicy(selection=0.5), out=str(tmp_path / "search"), log=lambda s: None)
    row = res.doc["budgets"][0]
    options = {"searched": row["best"], **row["training_free"]}
    assert "parent@int8" in options
    n = res.doc["settings"]["selection_images"]
    assert n > 0
    for name, d in options.items():
        assert d["selection_accuracy"] is not None and d["selection_nll"] is not None, name
    # your model in int8 scored on the deployed model: its selection figures differ from your model's fp32 ones
    i8, fp = options["parent@int8"], res.doc["parent"]
    assert (i8["selection_nll"], i8["selection_accuracy"]) != (fp["selection_nll"], fp["selection_accuracy"])
    assert row["recommended"]["family"] == min(options, key=lambda k: options[k]["selection_nll"])
