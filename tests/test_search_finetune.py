"""The search fine-tunes each budget's pick toward your model and lets it compete (search_schedules(finetune=...),
``fgvc-kit search --finetune-steps``): scored paired with your model, recommended only through the same gate, and
exported from its own checkpoint where it is recommended."""
import json
import os

import pytest

import tavt_kit
from tavt_kit.cli import main
from tavt_kit.data import build_dataset
from tavt_kit.errors import CheckpointError, ConfigError
from tavt_kit.models.checkpoint import weights_digest
from tavt_kit.search import EvolutionSettings, PickFinetune, SearchResult
from tavt_kit.search import deployable_from_search

from conftest import noisy_supernet  # noqa: E402
from tavt_kit.search import EvaluationOptions, LatencyOptions, ShipPolicy

pytestmark = pytest.mark.usefixtures("one_thread")
EVO = EvolutionSettings(population=4, generations=1, mutations=3, crossovers=3, seed=0)


@pytest.fixture(scope="module")
def searched(tmp_path_factory, trained_checkpoint):
    tmp = tmp_path_factory.mktemp("ft")
    sn = noisy_supernet(tmp, trained_checkpoint, noise=0.5)
    model = tavt_kit.load_checkpoint(sn)
    # below the fewest MACs ToMe on your model reaches here: the supernet's pick and its fine-tune compete, and the
    # fine-tune wins back what the noisy weights lost
    budget = f"{0.45 * tavt_kit.count_macs(model).total() / 1e6:.4g}M MACs"
    ft = PickFinetune(build_dataset("demo", split="train", model=model), steps=40, lr=1e-3, batch_size=32)
    out = tmp / "search"
    res = tavt_kit.search_schedules(model, None, [budget], evolution=EVO,
                                    ship=ShipPolicy(parent_search=False, confidence=0.5), out=str(out), finetune=ft,
                                    log=lambda s: None)
    return sn, model, budget, ft, out, res


def test_the_pick_fine_tuned_toward_your_model_is_scored_paired_and_competes(searched):
    sn, model, budget, ft, out, res = searched
    row = next(b for b in res.doc["budgets"] if b["label"] == budget)
    best, tuned = row["best"], row["finetuned"]
    assert tuned["counts"] == best["counts"] and tuned.get("reducers") == best.get("reducers")
    assert os.path.isfile(out / tuned["checkpoint"]) and tuned["steps"] == 40
    # paired with your model on the same test images, as every other deployable
    v = tuned["vs_parent"]
    assert v["images"] == res.doc["settings"]["test_images"]
    assert v["difference"] == pytest.approx(tuned["test_accuracy"] - res.doc["parent"]["test_accuracy"], abs=1e-9)
    # the fine-tune won back what the noisy weights lost, on the held-out images the recommendation compares on
    assert tuned["holdout_nll"] < best["holdout_nll"]
    assert tuned["test_accuracy"] > best["test_accuracy"]
    # it leads the pick it was made from on those images, so it took the pick's place in the competition
    assert tuned["versus_pick"]["metric"] == "NLL" and tuned["versus_pick"]["lead"] > 0
    assert tuned["versus_pick"]["replaces_pick"] is True
    # it replaced the supernet's pick; nothing on your model's weights meets the budget: recommended
    rec = row["recommended"]
    assert not row["training_free"]
    assert rec["family"] == "finetuned" and rec["weights"] == "finetuned" and rec["checkpoint"] == tuned["checkpoint"]
    assert "the pick fine-tuned toward your model is the only option that meets this budget" in rec["why"]
    SearchResult.load(out / "search.json")  # the file checks, with its new family
    ship = res.budgets[budget].shipped  # as values: the fine-tuned weights, their digest, their checkpoint
    assert ship.family == "finetuned" and ship.weights == "finetuned" and ship.checkpoint == tuned["checkpoint"]
    assert ship.weights_sha256 == tuned["weights_sha256"] and ship.pick.counts == tuple(tuned["counts"])


def test_export_follows_a_fine_tuned_recommendation_and_checks_its_weights(searched, tmp_path, capsys):
    sn, model, budget, ft, out, res = searched
    tuned = next(b for b in res.doc["budgets"] if b["label"] == budget)["finetuned"]
    m, sched, source = deployable_from_search(model, str(out / "search.json"), budget)
    assert source["weights"] == "finetuned" and tuple(sched.counts) == tuple(tuned["counts"])
    assert weights_digest(m) == tuned["weights_sha256"]
    dest = tmp_path / "export"
    assert main(["export", "--checkpoint", sn, "--search", str(out / "search.json"), "--budget", budget, "--format",
                 "onnx", "--no-verify", "--out", str(dest)]) == 0
    assert "the pick fine-tuned toward your model" in capsys.readouterr().out
    exported = json.loads((dest / "export.json").read_text())
    assert exported["checkpoint"]["path"].endswith(tuned["checkpoint"])
    assert exported["schedule"]["counts"] == tuned["counts"]
    # a checkpoint that is not the one the search scored is refused, naming it
    doc = json.loads((out / "search.json").read_text())
    next(b for b in doc["budgets"] if b["label"] == budget)["finetuned"]["weights_sha256"] = "0" * 64
    search = tmp_path / "search.json"
    os.symlink(out / "finetuned", tmp_path / "finetuned")
    search.write_text(json.dumps(doc))
    with pytest.raises(CheckpointError, match="not the weights the search scored"):
        deployable_from_search(model, str(search), budget)


def test_a_fine_tune_that_harms_the_pick_does_not_take_its_place(searched, tmp_path):
    # a fine-tune at a rate that wrecks the weights: scored and kept in the row, but the budget's recommendation
    # is the one the search made without it (the supernet's pick keeps its place; it is not compared in its stead)
    sn, model, budget, ft, out, res = searched
    plain = tavt_kit.search_schedules(model, None, [budget], evolution=EVO,
                                      ship=ShipPolicy(parent_search=False, confidence=0.5),
                                      out=str(tmp_path / "plain"), log=lambda s: None)
    wreck = PickFinetune(ft.train_set, steps=6, lr=0.5, batch_size=32)
    harmed = tavt_kit.search_schedules(model, None, [budget], evolution=EVO,
                                       ship=ShipPolicy(parent_search=False, confidence=0.5),
                                       out=str(tmp_path / "harmed"), finetune=wreck, log=lambda s: None)
    row = next(b for b in harmed.doc["budgets"] if b["label"] == budget)
    before = next(b for b in plain.doc["budgets"] if b["label"] == budget)
    tuned = row["finetuned"]
    assert tuned["holdout_nll"] > row["best"]["holdout_nll"]
    assert tuned["versus_pick"]["lead"] < 0 and tuned["versus_pick"]["replaces_pick"] is False
    assert row["recommended"]["family"] == before["recommended"]["family"] == "searched"
    assert harmed.budgets[budget].shipped.weights == "supernet"


def test_a_rerun_takes_the_finished_fine_tune_and_refusals_come_first(searched, tmp_path):
    sn, model, budget, ft, out, res = searched
    metrics = next((out / "finetuned").iterdir()) / "metrics.jsonl"
    before = metrics.read_text()
    again = tavt_kit.search_schedules(model, None, [budget], evolution=EVO,
                                      ship=ShipPolicy(parent_search=False, confidence=0.5), out=str(out), finetune=ft,
                                      log=lambda s: None)
    assert metrics.read_text() == before  # not trained again
    a = next(b for b in again.doc["budgets"] if b["label"] == budget)["finetuned"]
    b = next(b for b in res.doc["budgets"] if b["label"] == budget)["finetuned"]
    assert a["weights_sha256"] == b["weights_sha256"] and a["holdout_nll"] == pytest.approx(b["holdout_nll"])
    with pytest.raises(ConfigError, match="finetune.steps"):
        PickFinetune(ft.train_set, steps=0)
    with pytest.raises(ConfigError, match="finetune="):
        tavt_kit.search_schedules(model, None, [budget], evolution=EVO, out=str(tmp_path / "x"), finetune=40)
    plain = tavt_kit.load_checkpoint(sn)
    plain.spec.get("distillation", {}).pop("parent", None)
    with pytest.raises(ConfigError, match="fine-tuned toward your model"):
        tavt_kit.search_schedules(plain, None, [budget], evolution=EVO, out=str(tmp_path / "y"), finetune=ft,
                                  log=lambda s: None)


def test_cli_search_fine_tunes_and_the_report_shows_it(searched, tmp_path, capsys):
    sn, model, budget, ft, out, res = searched
    assert main(["search", "--checkpoint", sn, "--macs-budget", budget.split()[0], "--finetune-steps", "-1",
                 "--out", str(tmp_path / "bad")]) == 2
    assert "--finetune-steps" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()
    # the report of the search above: the fine-tuned pick among the deployables, and the budget ships it
    assert main(["report", "--search", str(out / "search.json"), "--out", str(tmp_path / "report")]) == 0
    md = (tmp_path / "report" / "report.md").read_text()
    assert "searched schedule, fine-tuned" in md
    assert "ships the searched schedule fine-tuned toward your model" in md
    # the command: the summary lists the fine-tuned pick beside the supernet's
    dest = tmp_path / "cli"
    within = f"{0.85 * tavt_kit.count_macs(model).total() / 1e6:.4g}M"  # within the space the command searches
    assert main(["search", "--checkpoint", sn, "--macs-budget", within, "--finetune-steps", "3", "--finetune-lr", "0",
                 "--out", str(tmp_path / "bad-lr")]) == 2
    assert "--finetune-lr" in capsys.readouterr().err and not (tmp_path / "bad-lr").exists()
    assert main(["search", "--checkpoint", sn, "--macs-budget", within, "--population", "4",
                 "--generations", "1", "--mutations", "3", "--crossovers", "3", "--no-parent-search",
                 "--finetune-steps", "3", "--finetune-lr", "3e-5", "--out", str(dest)]) == 0
    text = capsys.readouterr().out
    assert "fine-tuned (3 st)" in text and (dest / "finetuned").is_dir()
    # at the rate given: the fine-tune's own record of its settings
    start = json.loads(next((dest / "finetuned").iterdir()).joinpath("metrics.jsonl").read_text().splitlines()[0])
    assert start["config"]["lr"] == pytest.approx(3e-5)


@pytest.mark.nncf
def test_an_int8_pick_is_fine_tuned_and_scored_deployed_in_int8(tmp_path, trained_checkpoint):
    from conftest import exact_table, scaled_table
    from tavt_kit.bench import LatencyTable, TimingPolicy, profile_latency

    sn = noisy_supernet(tmp_path, trained_checkpoint, noise=0.5)
    model = tavt_kit.load_checkpoint(sn)
    table = profile_latency(model, grid=3, calibrate=False, reducers="drop",
                            policy=TimingPolicy(warmup=1, min_repeats=3, max_repeats=3, budget_s=0.05))
    data = exact_table(table.to_dict())
    tables = {"fp32": LatencyTable(data)}
    scaled = scaled_table(data, 0.25)
    scaled["target"]["precision"] = "int8"
    tables["int8"] = LatencyTable(scaled)
    budget = f"{0.23 * tables['fp32'].predict(model.full_schedule()):.4f}ms"  # int8 only
    ft = PickFinetune(build_dataset("demo", split="train", model=model), steps=10, lr=1e-3, batch_size=32)
    res = tavt_kit.search_schedules(model, None, [budget], evolution=EVO,
                                    latency=LatencyOptions(precisions=("fp32", "int8"), table=tables),
                                    evaluation=EvaluationOptions(calibration_images=32, verify_top=1, subset=96,
                                                                 front_time_limit=0),
                                    ship=ShipPolicy(parent_search=False), out=str(tmp_path / "search"), finetune=ft,
                                    log=lambda s: None)
    row = res.doc["budgets"][0]
    assert row["best"]["precision"] == "int8"
    tuned = row["finetuned"]
    assert tuned["precision"] == "int8" and tuned["holdout_source"].startswith("OpenVINO int8")
    assert tuned["latency_ms"] == row["best"]["latency_ms"] and tuned["timed_as"].startswith("the pick")
    assert tuned["vs_parent"]["images"] == res.doc["settings"]["test_images"]
