"""Files fgvc-kit reads back are checked: format, version, every value; binary files refused unread; a search
stopped on the way says so; checkpoints that are not checkpoints are named for what they are; drop configs of
other weights are refused."""
import copy
import json
import pickle

import pytest
import torch

import tavt_kit
from tavt_kit.bench import LatencyTable
from tavt_kit.bench.identity import model_identity
from tavt_kit.bench.record import read_bench
from tavt_kit.cli import main
from tavt_kit.errors import CheckpointError, ConfigError, LatencyTableError, ScheduleError
from tavt_kit.models.checkpoint import weights_digest
from tavt_kit.schedules import schedule_from_drop_file
from tavt_kit.search import SearchResult
from tavt_kit.search.evolution import Journal, JournalSection

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return tavt_kit.create_model("fgvc_tiny", depth=3, img_size=32, num_classes=4).eval()  # 16 patch tokens


def pick(counts, **kw):
    return {"counts": counts, "macs": 1e6, "holdout_accuracy": 0.5, "test_accuracy": 0.5, "latency_ms": 2.0, **kw}


def search_doc(model):
    full, small = pick([16, 16, 16]), pick([16, 8, 4])
    return {"format": "fgvc-kit/search", "version": 2, "status": "finished", "objective": "latency",
            "model": {"backbone": model.spec["backbone"], "depth": 3, "num_patches": 16,
                      "weights_sha256": weights_digest(model)},
            "full": full, "smallest": small, "pareto_front": [small, full], "candidates": [],
            "budgets": [{"label": "3ms", "objective": "latency", "limit": 0.003, "best": pick([16, 12, 8]),
                         "baselines": {"tome": pick([12, 8, 4], reducers=["merge", "merge", "merge"])}}]}


def write(path, doc):
    path.write_text(json.dumps(doc))
    return str(path)


def one_line(capsys):
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    return err


def evil_pickle(path, marker):
    """A pickle that would create ``marker`` if anything unpickled it."""
    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    path.write_bytes(pickle.dumps(Payload()))
    return str(path)


# ------------------------------------------------------------------ search.json
TAMPERED = [
    (lambda d: d["budgets"][0]["best"].update(counts=[8, 12, 16]), r"budgets\[0\]\.best\.counts=\[8, 12, 16\]: "
     r"expected counts that never increase"),
    (lambda d: d["budgets"][0]["best"].update(precision="int4"), r"budgets\[0\]\.best\.precision='int4': expected a "
     r"precision, one of fp32, bf16, fp16, int8$"),
    (lambda d: d["budgets"][0]["best"].update(holdout_accuracy=1.7), r"budgets\[0\]\.best\.holdout_accuracy=1\.7: "
     r"expected a fraction in \[0, 1\]"),
    (lambda d: d["budgets"][0].update(limit=-0.005), r"budgets\[0\]\.limit=-0\.005: expected a positive number"),
    (lambda d: d["budgets"][0]["baselines"]["tome"].update(counts=[6, 8, 2]),
     r"budgets\[0\]\.baselines\.tome\.counts=\[6, 8, 2\]: expected counts that never increase"),
    (lambda d: d["full"].update(counts=[17, 16, 16]), r"full\.counts\[0\]=17: expected a token count in \[1, 16\]"),
    (lambda d: d["smallest"].update(counts=[16, 8]), r"smallest\.counts=\[16, 8\]: expected a list of 3"),
    (lambda d: d["full"].update(reducers=["fold", None, None]), r"full\.reducers\[0\]='fold': expected a reducer"),
    (lambda d: d.update(status="paused"), r"status='paused': expected one of running, finished"),
    (lambda d: d.update(version=99), r"version 99 is newer than this fgvc-kit reads \(versions 1\.\.3\); upgrade"),
    (lambda d: d.update(format="fgvc-kit/latency-table"), r"not a search result of fgvc-kit search \(this is a "
     r"latency table"),
]


@pytest.mark.parametrize("tamper, message", TAMPERED)
def test_a_tampered_search_json_is_refused_by_every_reader(tmp_path, model, tamper, message):
    doc = search_doc(model)
    tamper(doc)
    path = write(tmp_path / "search.json", doc)
    for read in (SearchResult.load, lambda p: SearchResult.load(p).schedule(model, "3ms")):
        with pytest.raises(ConfigError, match=message) as e:
            read(path)
        assert str(path) in str(e.value) and "\n" not in str(e.value)


def test_a_result_is_written_through_the_readers_checks(tmp_path, model):
    """One schema for writing and reading: what SearchResult.load would refuse is never written."""
    res = SearchResult.load(write(tmp_path / "search.json", search_doc(model)))
    assert SearchResult.load(res.save(tmp_path / "again")).budgets["3ms"].best.counts == (16, 12, 8)
    # the file is written from the values: a value changed to one the reader refuses is not written
    import dataclasses

    b = res.budgets["3ms"]
    res.budgets["3ms"] = dataclasses.replace(b, best=dataclasses.replace(b.best, counts=(8, 12, 16)))
    with pytest.raises(ConfigError, match=r"budgets\[0\]\.best\.counts=\[8, 12, 16\]: expected counts that never"):
        res.save(tmp_path / "bad")
    assert not (tmp_path / "bad" / "search.json").exists()


def test_a_valid_search_json_reads_and_its_schedule_is_used(tmp_path, model):
    path = write(tmp_path / "search.json", search_doc(model))
    res = SearchResult.load(path)
    assert res.finished and res.status == "finished" and res.budgets["3ms"].best.counts == (16, 12, 8)
    assert SearchResult.load(path).schedule(model, "3ms")[0].counts == (16, 12, 8)
    old = search_doc(model)  # version 1 (no status): written once at the end, finished
    del old["status"], old["version"]
    assert SearchResult.load(write(tmp_path / "v1.json", old)).finished


def test_export_search_of_a_tampered_file_is_one_line(tmp_path, model, capsys):
    ckpt = str(tavt_kit.save_checkpoint(model, tmp_path / "m.safetensors"))
    doc = search_doc(model)
    doc["budgets"][0]["best"]["holdout_accuracy"] = 1.7
    path = write(tmp_path / "search.json", doc)
    assert main(["export", "--checkpoint", ckpt, "--search", path, "--budget", "3ms",
                 "--out", str(tmp_path / "e")]) == 2
    assert "budgets[0].best.holdout_accuracy=1.7: expected a fraction in [0, 1]" in one_line(capsys)


def test_binary_files_are_refused_unread(tmp_path, model, capsys):
    marker = tmp_path / "payload-ran"
    evil = evil_pickle(tmp_path / "search.json", marker)
    with pytest.raises(ConfigError) as e:
        SearchResult.load(evil)
    assert str(e.value) == f"{evil}: not a JSON file (binary data; expected the search.json of fgvc-kit search)"
    with pytest.raises(LatencyTableError, match=r"not a JSON file \(binary data; expected a latency table"):
        LatencyTable.load(evil)
    with pytest.raises(ConfigError, match=r"not a JSON file \(binary data; expected the bench\.json"):
        read_bench(evil)
    ckpt = str(tavt_kit.save_checkpoint(model, tmp_path / "m.safetensors"))
    assert main(["export", "--checkpoint", ckpt, "--search", evil, "--budget", "3ms",
                 "--out", str(tmp_path / "e")]) == 2
    assert "not a JSON file (binary data; expected the search.json of fgvc-kit search)" in one_line(capsys)
    assert main(["bench", "predict", "--latency-table", evil, "--quiet"]) == 2
    assert "not a JSON file (binary data" in one_line(capsys)
    assert not marker.exists()


# ------------------------------------------------------------------ a search stopped on the way
def test_a_search_stopped_on_the_way_leaves_search_json_marked_unfinished(tmp_path, model, monkeypatch):
    from tavt_kit.search import EvolutionSettings, search_schedules
    from tavt_kit.search import pipeline

    g = torch.Generator().manual_seed(1)
    data = ((torch.randint(0, 256, (16, 3, 32, 32), dtype=torch.uint8, generator=g), torch.randint(0, 4, (16,))),
            None)
    evo = EvolutionSettings(population=3, generations=1, mutations=2, crossovers=2, seed=0)
    budget = f"{0.9 * tavt_kit.count_macs(model).total() / 1e6:.4g}M MACs"  # within the space
    out = tmp_path / "s"
    out.mkdir()
    (out / "search.json").write_text(json.dumps(search_doc(model)))  # an earlier search's result in the folder

    def killed(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(pipeline, "document", killed)
    with pytest.raises(KeyboardInterrupt):
        search_schedules(model, data, [budget], evolution=evo, out=str(out), parent=None, log=lambda s: None)
    res = SearchResult.load(out / "search.json")
    assert not res.finished and res.status == "running" and res.full is None and not res.budgets
    with pytest.raises(ConfigError, match=r"an unfinished search \(status 'running'"):
        SearchResult.load(out / "search.json").schedule(model, budget)
    monkeypatch.undo()
    res = search_schedules(model, data, [budget], evolution=evo, out=str(out), parent=None, log=lambda s: None)
    again = SearchResult.load(out / "search.json")
    assert res.finished and again.finished and again.doc["version"] == 3 and again.full is not None
    # written from the values: what is read back writes the same content
    assert again.to_dict() == json.loads((out / "search.json").read_text())


def test_search_json_is_written_from_typed_picks_and_a_version_2_file_is_still_read(model, tmp_path):
    from tavt_kit.search.pick import PICK_FIELDS, PairedDifference

    doc = search_doc(model)  # version 2
    diff = {"difference": -0.01, "interval": [-0.03, 0.01], "resolved": False, "images": 200, "disagree": 9}
    doc["budgets"][0]["best"].update(vs_parent=diff, generation=2, origin="mutation", from_a_newer_release=[1, 2])
    res = SearchResult.load(write(tmp_path / "search.json", doc))
    best = res.budgets["3ms"].best
    assert isinstance(best.vs_parent, PairedDifference) and best.vs_parent.interval == (-0.03, 0.01)
    assert best.generation == 2 and best.counts == (16, 12, 8)
    # saved again: version 3, the same content, a field this release does not know kept as it was
    again = json.loads(open(res.save(tmp_path / "v3")).read())
    assert again.pop("version") == 3 and again == {k: v for k, v in doc.items() if k != "version"}
    assert again["budgets"][0]["best"]["from_a_newer_release"] == [1, 2]
    # every field of a pick is checked by its kind in the one schema, the field named
    for key, bad in (("generation", -1), ("weights", 5), ("measured", "yes"), ("selection_accuracy", 1.5)):
        assert key in PICK_FIELDS
        wrong = copy.deepcopy(doc)
        wrong["budgets"][0]["best"][key] = bad
        with pytest.raises(ConfigError, match=rf"budgets\[0\]\.best\.{key}="):
            SearchResult.load(write(tmp_path / f"bad-{key}.json", wrong))


# ------------------------------------------------------------------ int8 calibration keys the deployed runs
def test_deployed_int8_records_are_keyed_on_the_calibration(tmp_path):
    path = str(tmp_path / "j.jsonl")
    header = {"format": "fgvc-kit/search-journal", "settings": {"seed": 0}}
    gene = ((4, 2), ())
    a = {"calibration": {"images": 300, "seed": 0}}
    JournalSection(Journal(path, header), "int8", kind="deployed", key=a).record(gene, accuracy=0.5)
    reopened = Journal(path, header)  # the search's settings are the same: resumed
    assert JournalSection(reopened, "int8", kind="deployed", key=a).entries[gene]["accuracy"] == 0.5
    other = JournalSection(reopened, "int8", kind="deployed", key={"calibration": {"images": 50, "seed": 0}})
    assert other.entries == {}  # other calibration images: quantised again
    # a journal written before the calibration keyed only the int8 records still resumes
    old = str(tmp_path / "old.jsonl")
    Journal(old, {"settings": {"seed": 0, "calibration_images": 300}})
    Journal(old, header)


# ------------------------------------------------------------------ latency tables
def table_doc(model):
    n, p = model.num_patches, 1
    L = [p + 1, p + n // 2, p + n]
    curve = (lambda: {"tokens": list(L), "ms": [0.01 * t for t in L]})
    return {"format": "fgvc-kit/latency-table", "version": 1, "model": model_identity(model),
            "target": {"backend": "openvino", "device": "cpu", "batch_size": 1, "threads": 1, "precision": "fp32"},
            "embed_ms": 0.1, "plain_ms": curve(), "attn_ms": curve(), "mlp_ms": curve(),
            "head_ms": {"tokens": L, "ms": [0.1] * 3}, "offset_ms": 0.0}


BAD_TABLES = [
    (lambda d: d.update(version=99), r"version 99 is newer than this fgvc-kit reads \(versions 1\.\.2\)"),
    (lambda d: d["plain_ms"].update(ms=[-1.0, 0.1, 0.2]), r"plain_ms\.ms\[0\]=-1\.0: expected a non-negative number"),
    (lambda d: d.update(embed_ms=float("nan")), r"embed_ms=nan: expected a non-negative number"),
    (lambda d: d["target"].update(batch_size="eight"), r"target\.batch_size='eight': expected a positive integer"),
    (lambda d: d["head_ms"].update(ms=["1", "2", "3"]), r"head_ms\.ms\[0\]='1': expected a non-negative number"),
    (lambda d: d.update(model=None), r"model: missing; expected the profiled model's identity"),
    (lambda d: d["target"].update(precision="int4"), r"target\.precision='int4': expected a precision, one of fp32, "
     r"bf16, fp16, int8"),
    (lambda d: d["target"].update(precision="i8"), r"target\.precision='i8': expected a precision, one of fp32"),
    (lambda d: d["attn_ms"].update(tokens=[9, 2, 17]), r"attn_ms\.tokens=\[9, 2, 17\]: expected strictly increasing"),
    (lambda d: d["attn_ms"].update(ms=[float("nan"), 0.1, 0.2]), r"attn_ms\.ms\[0\]=nan: expected a finite number"),
]


def test_one_side_of_a_fitted_split_may_be_below_zero(tmp_path, model):
    """A noisy profile fits attn(L_in) + mlp(L_out) with one side of a cheap block under 0: only the sums are
    times, and they are all positive, so the table loads and predicts."""
    doc = table_doc(model)
    doc["attn_ms"]["ms"][0] = -0.01
    doc["mlp_ms"]["ms"] = [v + 0.02 for v in doc["mlp_ms"]["ms"]]
    assert LatencyTable.load(write(tmp_path / "t.json", doc)).predict(model.full_schedule()) > 0


@pytest.mark.parametrize("tamper, message", BAD_TABLES)
def test_a_bad_latency_table_is_one_line_naming_the_field(tmp_path, model, capsys, tamper, message):
    assert LatencyTable.load(write(tmp_path / "ok.json", table_doc(model))).predict(model.full_schedule()) > 0
    doc = table_doc(model)
    tamper(doc)
    path = write(tmp_path / "t.json", doc)
    with pytest.raises(LatencyTableError, match=message) as e:
        LatencyTable.load(path)
    assert str(e.value).startswith(path)
    assert main(["bench", "predict", "--latency-table", path, "--quiet"]) == 2
    assert path in one_line(capsys)


# ------------------------------------------------------------------ bench.json
def test_bench_json_is_checked_on_read(tmp_path):
    doc = {"format": "fgvc-kit/bench", "version": 1, "model": {"depth": 2, "num_patches": 64},
           "target": {"backend": "openvino", "device": "cpu", "batch_size": 1, "threads": 1, "precision": "fp32"},
           "results": [{"schedule": [64, 64], "batch_size": 1, "latency_ms": {"p50": 13.0, "p90": 14.0}},
                       {"schedule": [32, 16], "batch_size": 1, "latency_ms": {"p50": 9.0, "p90": 9.5}}]}
    assert read_bench(write(tmp_path / "bench.json", doc))["results"][1]["schedule"] == [32, 16]
    for tamper, message in [
            (lambda d: d["results"][0]["latency_ms"].update(p50=-8.5), r"results\[0\]\.latency_ms\.p50=-8\.5: expected a "
             r"positive number"),
            (lambda d: d["results"][1].update(schedule=[16, 32]), r"results\[1\]\.schedule=\[16, 32\]: expected counts "
             r"that never increase"),
            (lambda d: d.update(version=2), r"version 2 is newer than this fgvc-kit reads \(version 1\)"),
            (lambda d: d["target"].update(precision="int4"), r"target\.precision='int4'"),
            (lambda d: d.update(format="fgvc-kit/search"), r"not a bench result of fgvc-kit bench \(this is a search "
             r"result")]:
        bad = copy.deepcopy(doc)
        tamper(bad)
        with pytest.raises(ConfigError, match=message):
            read_bench(write(tmp_path / "bad.json", bad))


# ------------------------------------------------------------------ checkpoints that are not checkpoints
def test_a_file_that_is_not_a_checkpoint_is_named_for_what_it_is(tmp_path, model, capsys):
    files = {
        "empty.safetensors": (b"", "empty file (0 bytes)"),
        "random.pth": (bytes(range(1, 256)) * 4, "unrecognised binary data"),
        "search.json": (json.dumps({"format": "fgvc-kit/search"}).encode(),
                        "this is a search result (search.json of fgvc-kit search), not a checkpoint"),
        "other.json": (b'{"weights": [1, 2]}', "a JSON file, not a checkpoint"),
        "model.onnx": (b"\x08\x08\x12\x07pytorch\x1a\x052.0.0" + bytes(64), "an ONNX model (fgvc-kit export's output)"),
        "model.xml": (b'<?xml version="1.0"?>\n<net name="main_graph" version="11">\n</net>\n',
                      "an OpenVINO model (IR .xml, fgvc-kit export's output)"),
    }
    for name, (data, message) in files.items():
        path = tmp_path / name
        path.write_bytes(data)
        with pytest.raises(CheckpointError, match=message.replace("(", r"\(").replace(")", r"\)")):
            tavt_kit.load_checkpoint(str(path))
        assert main(["info", "--checkpoint", str(path)]) == 2
        assert message in one_line(capsys)
    # a pickled checkpoint is refused as before, never unpickled
    marker = tmp_path / "payload-ran"
    torch.save({"model": {"w": torch.zeros(1)}, "hook": print}, tmp_path / "evil.pth")
    with pytest.raises(CheckpointError, match="holds Python objects .* that only unpickling could load"):
        tavt_kit.load_checkpoint(str(tmp_path / "evil.pth"))
    with pytest.raises(CheckpointError, match="holds Python objects"):
        tavt_kit.load_checkpoint(evil_pickle(tmp_path / "evil2.pt", marker))
    assert not marker.exists()


# ------------------------------------------------------------------ drop configs of other weights
def test_a_drop_config_searched_for_other_weights_is_refused(tmp_path, model, capsys):
    ckpt = str(tavt_kit.save_checkpoint(model, tmp_path / "m.safetensors"))
    other = copy.deepcopy(model)
    with torch.no_grad():
        other.blocks[0].mlp.fc1.weight.add_(1.0)
    info = {"backbone": model.spec["backbone"], "depth": 3, "num_patches": 16}
    mine = tmp_path / "mine.json"
    model.make_schedule([16, 12, 8]).save(mine, model_info={**info, "weights_sha256": weights_digest(model)})
    theirs = tmp_path / "theirs.json"
    model.make_schedule([16, 12, 8]).save(theirs, model_info={**info, "weights_sha256": weights_digest(other)})
    assert schedule_from_drop_file(model, mine, "drop").counts == (16, 12, 8)
    with pytest.raises(ScheduleError, match=rf"drop={theirs}: made for other weights \(sha256 "
                                            rf"{weights_digest(other)[:12]}\.\.\.\) than this checkpoint's "
                                            rf"\({weights_digest(model)[:12]}\.\.\.\)"):
        schedule_from_drop_file(model, theirs, "drop")
    assert main(["evaluate", "--checkpoint", ckpt, "--drop", str(theirs)]) == 2
    assert "made for other weights" in one_line(capsys)
    assert main(["export", "--checkpoint", ckpt, "--drop", str(theirs), "--out", str(tmp_path / "e")]) == 2
    assert "made for other weights" in one_line(capsys)
    assert not (tmp_path / "e" / "model.onnx").exists()


def test_the_report_says_a_search_is_unfinished_and_refuses_one_with_no_results(tmp_path, model):
    from tavt_kit.report import build_report

    doc = search_doc(model)
    doc.update(status="running", timing={"evaluations": 3}, settings={"holdout_images": 16, "test_images": 0})
    # ^ fp32 results written, the parent or precision stages not yet
    path = write(tmp_path / "search.json", doc)
    md = open(build_report(path, str(tmp_path / "r"))["markdown"], encoding="utf-8").read()
    assert "**Unfinished search.**" in md and "marked `running`" in md
    for key in ("full", "budgets"):
        del doc[key]
    path = write(tmp_path / "empty.json", doc)
    with pytest.raises(ConfigError, match=r"empty\.json: an unfinished search \(status 'running'"):
        build_report(path, str(tmp_path / "r2"))


def test_run_descriptions_and_demo_stages_of_a_newer_version_are_refused(tmp_path, capsys):
    from tavt_kit.demo import _Stages

    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"format": "fgvc-kit/train-run", "version": 9, "args": {}}))
    (run / "train_state.safetensors").write_bytes(b"")
    assert main(["train", "--resume", "--out", str(run)]) == 2
    assert "run description version 9 is newer than this fgvc-kit reads (1)" in one_line(capsys)
    demo = tmp_path / "demo"
    demo.mkdir()
    (demo / "stages.json").write_text(json.dumps({"format": "fgvc-kit/demo-stages", "version": 2, "stages": {}}))
    with pytest.raises(ConfigError, match=r"stages\.json: stage record version 2 is newer"):
        _Stages(str(demo), print)
    (demo / "stages.json").write_text(json.dumps({"train": {"ok": True, "settings": {}}}))  # before the format
    assert _Stages(str(demo), print).done["train"]["ok"]
