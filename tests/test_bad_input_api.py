"""Issue #67: the Python API's wrong types and values, search.json / export.json that no command writes, and
flags that contradict or cannot be met end as one error naming the parameter, field or flag (or, where the
input is valid, run)."""
from __future__ import annotations

import copy
import json
import os

import pytest
import torch

import tavt_kit
from tavt_kit import ConfigError, search_schedules
from tavt_kit.cli import main
from tavt_kit.search import EvaluationOptions, EvolutionSettings, LatencyOptions, SpaceOptions, validate_search
from tavt_kit.search.evolution import Budget
from conftest import one_line, random_splits, search_model

pytestmark = pytest.mark.usefixtures("one_thread")
TINY = dict(population=2, generations=1, mutations=1, crossovers=1, seed=0)


@pytest.fixture(scope="module")
def model():
    return search_model()


@pytest.fixture(scope="module")
def data():
    return random_splits(16, 16)


@pytest.fixture(scope="module")
def ckpt(model, tmp_path_factory):
    return str(tavt_kit.save_checkpoint(model, tmp_path_factory.mktemp("ckpt") / "best.safetensors"))


def macs_label(model, share=0.9):
    return f"{share * tavt_kit.count_macs(model).total() / 1e6:.4g}M MACs"


def run(model, data, budgets, tmp_path, **kw):
    args = dict(evolution=EvolutionSettings(**TINY), out=str(tmp_path), log=lambda s: None, parent=None)
    args.update(kw)
    return search_schedules(model, data, budgets, **args)


@pytest.fixture(scope="module")
def searched(model, data, tmp_path_factory):
    """A finished search of the tiny model (merging, so its space's reach is checked): its search.json."""
    out = tmp_path_factory.mktemp("search")
    run(model, data, [macs_label(model, 0.8)], out, space=SpaceOptions(reducers=("drop", "merge")))
    return json.loads((out / "search.json").read_text())


# ------------------------------------------------------------------ value objects
def test_evolution_settings_check_themselves():
    for kw, name in ((dict(population=0), "population=0"), (dict(generations=-1), "generations=-1"),
                     (dict(mutations=1.5), "mutations=1.5"), (dict(seed=True), "seed=True"),
                     (dict(mutation_prob=1.5), "mutation_prob=1.5")):
        with pytest.raises(ConfigError, match=f"^{name}: expected"):
            EvolutionSettings(**kw)
    assert EvolutionSettings.of(dict(population=2)) == EvolutionSettings(population=2)
    assert EvolutionSettings.of(None) == EvolutionSettings()
    with pytest.raises(ConfigError, match=r"^settings\['populaton'\]: not an evolution setting; expected population"):
        EvolutionSettings.of(dict(populaton=2))
    with pytest.raises(ConfigError, match=r"^settings\.population=0: expected a positive integer"):
        EvolutionSettings.of(dict(population=0))
    with pytest.raises(ConfigError, match="^settings=5: expected an EvolutionSettings"):
        EvolutionSettings.of(5)


def test_budgets_check_themselves():
    for args, name in ((("macs", float("inf")), "limit=inf"), (("latency", -1.0), "limit=-1.0"),
                       (("time", 1.0), "objective='time'"), (("macs", 1.0, 0.5), "fraction=0.5")):
        with pytest.raises(ConfigError, match=f"^budget {name}"):
            Budget(*args)
    assert Budget("latency", 0.0, fraction=0.5).label == "50%"


def test_evaluation_sets_check_themselves():
    from tavt_kit.search.data import EvalSet, SearchData

    images = torch.zeros(4, 3, 8, 8, dtype=torch.uint8)
    with pytest.raises(ConfigError, match=r"^holdout: images of shape \(4, 3, 8, 8\) and labels of shape \(3,\)"):
        EvalSet(images, torch.zeros(3, dtype=torch.long), "holdout")
    with pytest.raises(ConfigError, match=r"^test\.labels=list: expected a tensor"):
        EvalSet(images, [0, 1, 2, 3], "test")
    with pytest.raises(ConfigError, match=r"^data\.holdout=tuple: expected an EvalSet"):
        SearchData((images, torch.zeros(4)))


# ------------------------------------------------------------------ search_schedules' arguments
def test_search_schedules_refuses_wrong_types_naming_the_parameter(tmp_path, model, data):
    budget = [macs_label(model)]
    for call, start in ((lambda: run(model, data, None, tmp_path), r"budgets=None: expected a budget"),
                        (lambda: run(model, data, 5, tmp_path), r"budgets=5: expected a budget"),
                        (lambda: EvaluationOptions(subset="10"),
                         r"evaluation\.subset='10': expected a positive number of images"),
                        (lambda: EvaluationOptions(batch_size=0), r"evaluation\.batch_size=0: expected a positive number"),
                        (lambda: LatencyOptions(remeasure="yes"), r"latency\.remeasure='yes': expected True or False"),
                        (lambda: run(model, data, budget, tmp_path, evolution=dict(population=0)),
                         r"evolution\.population=0"),
                        (lambda: LatencyOptions(table="t.json", source="measure"),
                         r"latency\.table= and latency\.source='measure' contradict each other"),
                        (lambda: run(model, data, budget, tmp_path, latency=5), r"latency=5: expected a LatencyOptions"),
                        (lambda: run(model, data, budget, tmp_path, space={"bound": 0.5}),
                         r"space=\{'bound': 0\.5\}: expected a SpaceOptions"),
                        (lambda: SpaceOptions(reducers="fold"), r"space\.reducers='fold': expected drop, merge or both"),
                        (lambda: SpaceOptions(token_multiple=0), r"token_multiple=0: expected a whole number"),
                        (lambda: EvaluationOptions(reuse=str(tmp_path / "nowhere")), r"reuse=.*: no search journal")):
        with pytest.raises(ConfigError, match="^" + start):
            call()
    with pytest.raises(ConfigError, match="^model=int: expected a token-drop model"):
        run(42, data, budget, tmp_path)
    with pytest.raises(TypeError, match="unexpected keyword argument 'table'"):  # the option objects' fields, not keywords
        run(model, data, budget, tmp_path, table="t.json")


def test_a_path_a_dict_of_settings_and_one_budget_text_are_taken(tmp_path, model, data, ckpt):
    label = macs_label(model)
    res = run(ckpt, data, label, tmp_path, evolution=dict(TINY, population=3))  # a path, a dict, one text
    assert list(res.budgets) == [label]  # one budget, not one per letter
    assert res.doc["settings"]["population"] == 3
    assert res.doc["source"]["checkpoint"] == os.path.abspath(ckpt)


def test_an_unwritable_table_cache_is_a_warning(tmp_path, monkeypatch, model):
    """The cache of a search's own latency table is optional: a folder it cannot write keeps nothing and says so."""
    import tavt_kit.bench
    from tavt_kit.search.objective import profiled_table
    from tavt_kit.target import DeploymentTarget

    class Table:
        def save(self, path):
            raise PermissionError(13, "Permission denied", path)

    made = Table()
    monkeypatch.setattr(tavt_kit.bench, "profile_latency", lambda *a, **k: made)
    said = []
    assert profiled_table(model, DeploymentTarget(backend="torch"), str(tmp_path / "ro"), log=said.append) is made
    assert any(s.startswith("warning: latency: the table could not be kept in") and "Permission denied" in s
               for s in said), said

    def makedirs(name, *a, **k):
        raise PermissionError(13, "Permission denied", name)

    monkeypatch.setattr(os, "makedirs", makedirs)
    said.clear()
    assert profiled_table(model, DeploymentTarget(backend="torch"), str(tmp_path / "ro2"), log=said.append) is made
    assert any("could not be kept" in s for s in said), said


# ------------------------------------------------------------------ result files
def test_search_json_picks_are_checked_against_the_rules(searched):
    validate_search(copy.deepcopy(searched))  # as the search wrote it
    best = searched["budgets"][0]["best"]
    n = searched["model"]["num_patches"]

    doc = copy.deepcopy(searched)  # block 0 merges 11 of 16 tokens, beyond one bipartite round and the space
    doc["budgets"][0]["best"].update(counts=[5] * len(best["counts"]), reducers=["merge"] * len(best["counts"]))
    with pytest.raises(ConfigError, match=rf"budgets\[0\]\.best\.counts=.*merge of at most half .* merges 11 of "
                                          rf"the {n} patch tokens"):
        validate_search(doc, "s.json")

    doc = copy.deepcopy(searched)  # a space whose bound passes 0.5 merges in several rounds: the MACs say the rest
    doc["space"]["bounds"] = [0.75] * len(doc["space"]["bounds"])
    doc["budgets"][0]["best"].update(counts=[5] * len(best["counts"]), reducers=["merge"] * len(best["counts"]))
    with pytest.raises(ConfigError, match=r"budgets\[0\]\.best\.macs=\d+: expected \d+, the MACs of its schedule"):
        validate_search(doc, "s.json")

    doc = copy.deepcopy(searched)  # counts changed, MACs kept
    counts = list(best["counts"])
    counts[-1] -= 1
    doc["budgets"][0]["best"]["counts"] = counts
    with pytest.raises(ConfigError, match=r"^s\.json: budgets\[0\]\.best\.macs="):
        validate_search(doc, "s.json")

    doc = copy.deepcopy(searched)
    doc["candidates"] = None
    with pytest.raises(ConfigError, match=r"^s\.json: candidates=None: expected a list"):
        validate_search(doc, "s.json")


def test_export_json_without_files_is_refused(tmp_path):
    from tavt_kit.export.record import read_export

    doc = {"format": "fgvc-kit/export", "version": 2, "status": "verified", "verified": True, "files": None,
           "artefacts": [{"path": "model.xml", "sha256": "0" * 64, "status": "verified", "verified": True}]}
    path = tmp_path / "export.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(ConfigError, match=r"export\.json: files=None: expected an object: each exported format's file"):
        read_export(path)
    doc["files"] = {"openvino": {"path": "model.xml"}}
    path.write_text(json.dumps(doc))
    with pytest.raises(ConfigError, match=r"files\.openvino\.sha256: missing"):
        read_export(path)


# ------------------------------------------------------------------ flags
@pytest.mark.parametrize("argv, expected", [
    (["search", "--latency-budget", "1e400ms"], "--latency-budget 1e400ms: expected a finite time"),
    (["search", "--macs-budget", "1e400"], "--macs-budget 1e400: expected a finite number of MACs"),
    (["search", "--latency-table", "t.json", "--latency-source", "measure"],
     "--latency-table and --latency-source measure contradict each other"),
    (["search", "--mutation-prob", "1.5"], "--mutation-prob 1.5: expected a probability in [0, 1]"),
    (["export", "--pick", "searched"], "--pick searched: chooses between a search's recommendation"),
    (["bench", "profile", "--grid", "1"], "--grid 1: expected at least 2 points"),
    (["bench", "profile", "--validate", "2", "--random-range", "0.9,0.5"],
     "--random-range 0.9,0.5: expected keep ratios LO,HI with 0 < LO <= HI <= 1"),
    (["bench", "profile", "--random-range", "0.5,0.9"], "give --validate N with it"),
    (["bench", "--random", "2", "--random-range", "1.5,2"], "--random-range 1.5,2: expected keep ratios"),
    (["distill", "--drop-blocks", ""], "--drop-blocks: empty; expected comma-separated block indices"),
    (["demo", "--quick", "--format", "tflite"], "--format tflite: unknown format"),
])
def test_flags_that_cannot_be_met_are_one_line(capsys, tmp_path, ckpt, argv, expected):
    """Each refused before any stage or model work (the demo: before its first stage)."""
    cmd = argv[:2] if argv[:2] == ["bench", "profile"] else argv[:1]
    needs_ckpt = cmd[0] in ("search", "export", "distill", "bench")
    argv = cmd + (["--checkpoint", ckpt] if needs_ckpt else []) + argv[len(cmd):] + ["--out", str(tmp_path / "o")]
    assert main(argv) == 2
    assert expected in one_line(capsys)
    assert not os.path.exists(tmp_path / "o" / "train")  # the demo ran no stage
