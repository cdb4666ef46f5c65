"""A search records the scorer its accuracies were measured with: the same weights dropping by another scorer keep
other tokens, so what reads a search or its drop configs must drop the same way (export and evaluate adopt it,
the library refuses a model that drops otherwise, a journal or reuse of another scorer is refused)."""
import json

import pytest
import torch

import tavt_kit
from tavt_kit import ConfigError, ScheduleError, search_schedules
from tavt_kit.cli import main
from tavt_kit.search import EvaluationOptions, EvolutionSettings, SearchResult
from conftest import random_splits, search_model

pytestmark = pytest.mark.usefixtures("one_thread")
EVO = EvolutionSettings(population=4, generations=1, mutations=3, crossovers=3, seed=0)
CLI_EVO = ["--population", "4", "--generations", "1", "--mutations", "3", "--crossovers", "3", "--subset", "32",
           "--batch-size", "32"]


@pytest.fixture(scope="module")
def data():
    return random_splits(32, 40)


def _search(model, data, out, **kw):
    budget = f"{0.8 * tavt_kit.count_macs(model).total() / 1e6:.4g}M MACs"
    return search_schedules(model, data, [budget], evolution=EVO, out=str(out), log=lambda s: None, **kw), budget


def test_a_search_records_the_scorer_and_a_model_dropping_otherwise_is_refused(tmp_path, data):
    model = search_model()
    model.scorer = "tavt-sampled"
    res, budget = _search(model, data, tmp_path)
    assert res.doc["model"]["token_drop"] == {"scorer": "tavt-sampled", "fuse": False}
    row = res.doc["budgets"][0]
    drop_file = tmp_path / row["schedule_file"]
    assert json.loads(drop_file.read_text())["model"]["token_drop"]["scorer"] == "tavt-sampled"
    # the same weights with the scorer they were distilled with: the search's accuracies are not theirs
    plain = search_model()
    assert plain.scorer == "tavt"
    with pytest.raises(ScheduleError, match=r"search=.*search.json was measured with scorer 'tavt-sampled', the "
                                            r"model has scorer 'tavt'; its accuracies are not this model's"):
        SearchResult.load(tmp_path / "search.json").schedule(plain, budget)
    with pytest.raises(ScheduleError, match=r"measured with scorer 'tavt-sampled'"):
        tavt_kit.schedules.schedule_from_drop_file(plain, drop_file)
    plain.scorer = "tavt-sampled"
    sched, _ = SearchResult.load(tmp_path / "search.json").schedule(plain, budget)
    assert list(sched.counts) == row["best"]["counts"]


def test_a_journal_or_reuse_of_another_scorer_is_refused_and_an_older_journal_resumes(tmp_path, data):
    model = search_model()
    first, _ = _search(model, data, tmp_path / "a")
    assert first.doc["timing"]["evaluations"] > 0
    other = search_model()
    other.scorer = "tavt-sampled"
    with pytest.raises(ConfigError, match=r"journal of a search with other settings \(.*token_drop\.scorer: "
                                          r"\"tavt\" -> \"tavt-sampled\"\)"):
        _search(other, data, tmp_path / "a")
    with pytest.raises(ConfigError, match=r"a search of other scorer \(token_drop differs\)"):
        _search(other, data, tmp_path / "b", evaluation=EvaluationOptions(reuse=[str(tmp_path / "a")]))
    # a journal written before the scorer was recorded resumes (it is not compared on it)
    journal = tmp_path / "a" / "search.journal.jsonl"
    lines = journal.read_text().splitlines()
    header = json.loads(lines[0])
    del header["settings"]["token_drop"]
    journal.write_text("\n".join([json.dumps(header)] + lines[1:]) + "\n")
    again, _ = _search(model, data, tmp_path / "a")
    assert again.doc["timing"]["evaluations"] == 0


@pytest.fixture(scope="module")
def supernet(tmp_path_factory):
    torch.manual_seed(0)
    m = tavt_kit.create_model("fgvc_tiny", depth=3, img_size=32)
    return str(tavt_kit.save_checkpoint(m, tmp_path_factory.mktemp("s") / "supernet.safetensors"))


def test_cli_search_with_another_scorer_and_export_of_it_use_that_scorer(tmp_path, supernet, capsys):
    full = tavt_kit.count_macs(tavt_kit.load_checkpoint(supernet)).total()
    out = tmp_path / "search"
    assert main(["search", "--checkpoint", supernet, "--scorer", "tavt-sampled", "--macs-budget", f"{0.8 * full:.0f}",
                 "--out", str(out)] + CLI_EVO) == 0
    assert "scorer tavt-sampled: tokens are ranked by it here (the checkpoint's is tavt)" in capsys.readouterr().out
    doc = json.loads((out / "search.json").read_text())
    assert doc["model"]["token_drop"]["scorer"] == "tavt-sampled"
    label = doc["budgets"][0]["label"]
    assert main(["export", "--checkpoint", supernet, "--search", str(out / "search.json"), "--budget", label,
                 "--format", "onnx", "--no-verify", "--out", str(tmp_path / "exp")]) == 0
    said = capsys.readouterr().out
    assert f"--search {out / 'search.json'}: scorer tavt-sampled (the checkpoint's is tavt), as the accuracies " \
           "were measured" in said
    exported = json.loads((tmp_path / "exp" / "export.json").read_text())
    assert exported["schedule"]["counts"] == doc["budgets"][0]["best"]["counts"]
    import onnx

    meta = {p.key: p.value for p in onnx.load(tmp_path / "exp" / exported["files"]["onnx"]["path"]).metadata_props}
    assert json.loads(meta["fgvc_kit.spec"])["token_drop"]["scorer"] == "tavt-sampled"
    assert main(["report", str(out / "search.json"), "--out", str(tmp_path / "report")]) == 0
    assert "tokens ranked by the `tavt-sampled` scorer" in (tmp_path / "report" / "report.md").read_text()
    # evaluate with the budget's drop config drops the same way
    drop = out / doc["budgets"][0]["schedule_file"]
    assert main(["evaluate", "--checkpoint", supernet, "--drop", str(drop)]) == 0
    assert f"--drop {drop}: scorer tavt-sampled" in capsys.readouterr().out


def test_cli_search_refuses_a_scorer_the_model_cannot_use(tmp_path, capsys):
    ck = tavt_kit.save_checkpoint(tavt_kit.create_model("ViTAE_basic_Tiny", img_size=64, num_classes=4),
                                  tmp_path / "vitae.safetensors")
    assert main(["search", "--checkpoint", str(ck), "--scorer", "tavt-sampled", "--macs-budget", "1G",
                 "--out", str(tmp_path / "s")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].endswith("--scorer tavt-sampled: scorer 'tavt-sampled': ViTAE supports 'tavt'")
