"""reuse=: a search for another target or other budgets takes what an earlier search of the same weights evaluated."""
import json

import pytest
import torch

import tavt_kit
from tavt_kit import ConfigError, search_schedules
from tavt_kit.search import EvaluationOptions, EvolutionSettings
from tavt_kit.search.reuse import Reused
from conftest import random_splits, search_model

pytestmark = pytest.mark.usefixtures("one_thread")
EVO = EvolutionSettings(population=5, generations=2, mutations=4, crossovers=4, seed=0)
QUIET = dict(evolution=EVO, log=lambda s: None, parent=None)


@pytest.fixture(scope="module")
def model():
    return search_model()


@pytest.fixture(scope="module")
def data():
    return random_splits(40, 60)


def _budgets(model, *fractions):
    full = tavt_kit.count_macs(model, model.full_schedule()).total()
    return [f"{f * full / 1e9:.6g}G MACs" for f in fractions]


def test_a_search_under_other_budgets_takes_what_an_earlier_one_evaluated(tmp_path, model, data):
    first = search_schedules(model, data, _budgets(model, 0.8), out=str(tmp_path / "a"), **QUIET)
    fresh = search_schedules(model, data, _budgets(model, 0.6), out=str(tmp_path / "b"), **QUIET)
    lines = []
    reused = search_schedules(model, data, _budgets(model, 0.6), evolution=EVO,
                              evaluation=EvaluationOptions(reuse=[str(tmp_path / "a")]), out=str(tmp_path / "c"),
                              log=lines.append, parent=None)
    r = reused.doc["reuse"]
    assert r["sources"] == [str(tmp_path / "a" / "search.journal.jsonl")]
    assert r["taken"]["fp32"] > 0  # the full schedule and the candidates both searches made
    # nothing taken is evaluated again, and every candidate is either taken or evaluated
    assert r["taken"]["fp32"] + r["evaluated"]["fp32"] == fresh.doc["timing"]["evaluations"]
    # the rate (candidates per minute, time left) counts only what was evaluated here: taken ones cost nothing
    assert reused.doc["timing"]["evaluations"] == r["evaluated"]["fp32"]
    assert any(s.startswith(f"reuse: {r['taken']['fp32']} held-out evaluations taken from 1 earlier search") for s in lines)
    # taking them changes nothing: the same candidates, metrics and pick as the search that evaluated everything
    key = lambda d: (tuple(d["counts"]), d["accuracy"], round(d["nll"], 4))  # noqa: E731
    got, want = sorted(reused.doc["candidates"], key=key), sorted(fresh.doc["candidates"], key=key)
    assert [key(d)[:2] for d in got] == [key(d)[:2] for d in want]
    # the NLL to float rounding: on a GPU a candidate evaluated beside others in a different batch differs in the
    # last bits (seen: 1.371054459 against 1.371054363); on a CPU they are equal
    assert [d["nll"] for d in got] == pytest.approx([d["nll"] for d in want], rel=1e-6)
    label = next(iter(fresh.budgets))
    assert reused.budgets[label].best == fresh.budgets[label].best
    # what was taken is in this search's own journal: it resumes from its folder alone
    again = search_schedules(model, data, _budgets(model, 0.6), out=str(tmp_path / "c"), **QUIET)
    assert again.doc["timing"]["evaluations"] == 0 and "reuse" not in again.doc
    assert first.doc["timing"]["evaluations"] > 0


def test_reuse_refuses_what_is_not_the_same_weights_or_images(tmp_path, model, data):
    search_schedules(model, data, _budgets(model, 0.8), out=str(tmp_path / "a"), **QUIET)
    torch.manual_seed(5)
    other = tavt_kit.create_model("fgvc_tiny", depth=3, img_size=32, num_classes=4).eval()
    with pytest.raises(ConfigError, match=r"search\.journal\.jsonl: a search of other weights \(weights_sha256 differs\)"):
        search_schedules(other, data, _budgets(model, 0.8), evaluation=EvaluationOptions(reuse=str(tmp_path / "a")),
                         out=str(tmp_path / "b"), **QUIET)
    hold, test = data
    fewer = ((hold[0][:30], hold[1][:30]), test)
    with pytest.raises(ConfigError, match="a search of other held-out images"):
        search_schedules(model, fewer, _budgets(model, 0.8), evaluation=EvaluationOptions(reuse=str(tmp_path / "a")),
                         out=str(tmp_path / "c"), **QUIET)
    flipped = ((hold[0].flip(-1), hold[1]), test)  # as many images, other pixels: the digest tells
    with pytest.raises(ConfigError, match=r"held-out images \(holdout_sha256 differs\)"):
        search_schedules(model, flipped, _budgets(model, 0.8),
                         evaluation=EvaluationOptions(reuse=str(tmp_path / "a")), out=str(tmp_path / "d"), **QUIET)
    with pytest.raises(ConfigError, match="^reuse=.*nowhere: no search journal there"):
        search_schedules(model, data, _budgets(model, 0.8),
                         evaluation=EvaluationOptions(reuse=str(tmp_path / "nowhere")), out=str(tmp_path / "e"),
                         **QUIET)


def _journal(path, records, **settings):
    head = {"kind": "header", "format": "fgvc-kit/search-journal",
            "settings": {"weights_sha256": "w", "holdout_images": 10, "subset": None, **settings}}
    path.write_text("".join(json.dumps(r) + "\n" for r in [head] + records) + '{"kind": "cand')  # a torn last line
    return str(path)


def test_int8_runs_are_taken_only_under_the_same_calibration(tmp_path):
    calib = {"images": 300, "seed": 0, "split": "train", "data": None}
    recs = [{"kind": "candidate", "counts": [4, 2], "accuracy": 0.5, "nll": 1.0, "kl": 0.1},
            {"kind": "candidate", "precision": "int8", "counts": [3, 2], "accuracy": 0.4, "nll": 1.2},
            {"kind": "candidate", "precision": "bf16", "counts": [4, 2], "accuracy": 0.45, "nll": 1.1},
            {"kind": "deployed", "precision": "int8", "key": {"calibration": calib}, "counts": [4, 2],
             "accuracy": 0.48, "nll": 1.05, "kl": 0.2, "runtime": "openvino"},
            {"kind": "deployed", "precision": "int8", "key": {"calibration": {**calib, "images": 100}},
             "counts": [3, 2], "accuracy": 0.3, "nll": 2.0}]
    path = _journal(tmp_path / "j.jsonl", recs)
    r = Reused([path], {"weights_sha256": "w", "holdout_images": 10, "subset": None}, calib)
    g = lambda *c: (tuple(c), ())  # noqa: E731
    assert r.get("fp32", g(4, 2)) == {"accuracy": 0.5, "nll": 1.0, "kl": 0.1}
    assert r.get("fp32", g(3, 2))["accuracy"] == 0.4  # int8's provisional metrics are fp32 evaluations
    assert r.get("bf16", g(4, 2))["accuracy"] == 0.45
    assert r.get("deployed", g(4, 2))["accuracy"] == 0.48
    assert r.get("deployed", g(3, 2)) is None  # quantised with other calibration images
    assert r.summary()["taken"] == {"bf16": 1, "deployed": 1, "fp32": 2}
    # a held-out subset drawn with another seed is other images
    sub = _journal(tmp_path / "s.jsonl", [], subset=5, seed=1)
    with pytest.raises(ConfigError, match=r"s\.jsonl: a search of other held-out subset \(seed differs\)"):
        Reused([sub], {"weights_sha256": "w", "holdout_images": 10, "subset": 5, "seed": 2})


def test_cli_reuse_names_the_flag(tmp_path, model, capsys):
    from tavt_kit.cli import main

    ckpt = str(tmp_path / "m.safetensors")
    tavt_kit.save_checkpoint(model, ckpt)
    code = main(["search", "--checkpoint", ckpt, "--dataset", "cluttered-digits", "--dataset-option", "holdout=20",
                 "--dataset-option", "test=20", "--macs-budget", "1G", "--reuse", str(tmp_path / "none"),
                 "--out", str(tmp_path / "s")])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("fgvc-kit: error: --reuse ") and "no search journal there" in err[0]
