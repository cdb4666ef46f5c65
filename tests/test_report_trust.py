"""A report you can trust: it names a file for a pick only when the file is still the one exported, of the same
weights, schedule, reducers and precision, and verified; it says why each other file is not shipped; an export
folder keeps every export described."""
from __future__ import annotations

import json
import os
import shutil
from dataclasses import replace

import numpy as np
import pytest
import torch

import tavt_kit
from tavt_kit.cli import main
from tavt_kit.errors import ConfigError, ExportError
from tavt_kit.models import weights_digest
from tavt_kit.report import build_report

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from tavt_kit.export import (ExportOptions, ExportResult, VerifyOptions, export_model,  # noqa: E402
                             load_verify_data)
from tavt_kit.export.verify import ExportedRunner  # noqa: E402

DROP, SMALL = [32, 16], [16, 8]


def tiny(seed):
    torch.manual_seed(seed)
    return tavt_kit.create_model("fgvc_tiny", depth=2, num_classes=10).eval()


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A checkpoint, its verified ONNX export at DROP, and a verified export of other weights at DROP."""
    root = tmp_path_factory.mktemp("trust")
    model, other = tiny(0), tiny(1)
    ckpt = str(root / "supernet.safetensors")
    tavt_kit.save_checkpoint(model, ckpt, extra={"data": {"name": "demo"}})
    data = load_verify_data(model, "demo", max_images=16)
    given = VerifyOptions(data=(data.images, data.labels))
    model = tavt_kit.load_checkpoint(ckpt)
    fast = ExportOptions(exporter="torchscript")  # seconds faster than dynamo; what is recorded is the same
    export_model(ckpt, root / "export", DROP, ("onnx",), verify=given, options=fast)  # records its checkpoint
    export_model(other, root / "other", DROP, ("onnx",), verify=given, options=fast)
    return {"root": root, "ckpt": ckpt, "model": model, "other": other, "given": given, "fast": fast}


def point(counts, macs, lat, acc, **kw):
    return {"counts": counts, "macs": macs, "latency_ms": lat, "holdout_accuracy": acc, "test_accuracy": acc, **kw}


def write_search(folder, model, ckpt, best=None, small=None, **extra):
    full = point([64, 64], 4.0e7, 12.0, 0.95)
    best = best or point(DROP, 2.0e7, 7.0, 0.90)
    small = small or point(SMALL, 1.0e7, 4.0, 0.80)
    doc = {"format": "fgvc-kit/search", "objective": "latency",
           "latency": {"source": "table", "target": {"backend": "onnxruntime", "device": "cpu", "batch_size": 1,
                                                     "threads": 1, "precision": "fp32"}},
           "model": {"backbone": {"name": "fgvc_tiny"}, "img_size": [64, 64], "depth": 2, "num_patches": 64,
                     "num_classes": 10, "weights_sha256": weights_digest(model)},
           "source": {"checkpoint": ckpt}, "full": full, "smallest": small,
           "candidates": [dict(p, accuracy=p["holdout_accuracy"]) for p in (full, best, small)],
           "pareto_front": [small, best, full],
           "budgets": [{"label": "8ms", "objective": "latency", "limit": 0.008, "best": best, "baselines": {}},
                       {"label": "5ms", "objective": "latency", "limit": 0.005, "best": small, "baselines": {}}],
           "timing": {"evaluations": 3}, "settings": {"holdout_images": 100, "test_images": 400},
           "machine": {"cpu": "test"}, **extra}
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, "search.json")
    with open(path, "w") as f:
        json.dump(doc, f)
    return path


def ship(search, out, bench=None, exports=()):
    """The "What to ship" rows by budget, and the section's notes."""
    md = open(build_report(search, str(out), bench, [str(e) for e in exports])["markdown"]).read()
    start = md.index("## What to ship")
    section = md[start:md.index("\n## ", start)]
    rows = {line.split("|")[1].strip(): line for line in section.splitlines() if line.startswith("| ")}
    notes = [line[2:] for line in section.splitlines() if line.startswith("- ")]
    return rows, notes, md


def copy_export(world, tmp_path, name="export"):
    dest = tmp_path / name
    shutil.copytree(world["root"] / name, dest)
    return dest


# ------------------------------------------------------------------ files as exported
def test_a_deleted_or_modified_file_is_not_shipped_and_the_report_says_why(world, tmp_path):
    sp = write_search(str(tmp_path / "s"), world["model"], world["ckpt"])
    e = copy_export(world, tmp_path)
    rows, notes, _ = ship(sp, tmp_path / "r0", exports=[e / "export.json"])
    assert "`../export/model.onnx` (onnx, fp32, verified top-1" in rows["8ms"]
    assert "not exported yet" in rows["5ms"]

    with open(e / "model.onnx", "ab") as f:  # modified after export
        f.write(b"\0")
    rows, notes, md = ship(sp, tmp_path / "r1", exports=[e / "export.json"])
    assert "model.onnx`" not in rows["8ms"] and "nothing verified of this pick" in rows["8ms"]
    assert any("`../export/model.onnx` is not shipped: model.onnx: sha256 differs from export.json (modified "
               "after export)" in n for n in notes)
    assert "not shipped: model.onnx: sha256 differs" in md  # the result table says it too

    os.remove(e / "model.onnx")  # deleted
    rows, notes, _ = ship(sp, tmp_path / "r2", exports=[e / "export.json"])
    assert "model.onnx`" not in rows["8ms"]
    assert any("model.onnx: missing (deleted or moved after export)" in n for n in notes)


def test_an_export_of_other_weights_is_not_shipped_for_this_supernet(world, tmp_path):
    sp = write_search(str(tmp_path / "s"), world["model"], world["ckpt"])
    rows, notes, _ = ship(sp, tmp_path / "r", exports=[world["root"] / "other" / "export.json"])
    assert "nothing verified of this pick" in rows["8ms"] and "other/model.onnx`" not in rows["8ms"]
    assert any("is not shipped: export of other weights" in n for n in notes)


def test_the_recommendation_on_your_model_is_shipped_when_its_export_stands_for_it(world, tmp_path):
    """A budget whose recommendation is a training-free deployable of your model (the parent's weights): its
    export is shipped as the recommendation, checked against the parent's weights the search records."""
    rec = {"family": "parent", "weights": "parent", "counts": DROP, "precision": "fp32", "why": "best held-out"}
    sp = write_search(str(tmp_path / "s"), world["model"], world["ckpt"],
                      parent=point([64, 64], 4.0e7, 12.0, 0.95, path="parent.safetensors",
                                   weights_sha256=weights_digest(world["other"])))
    doc = json.load(open(sp))
    doc["budgets"][0]["recommended"] = rec
    json.dump(doc, open(sp, "w"))
    rows, _, _ = ship(sp, tmp_path / "r", exports=[world["root"] / "other" / "export.json"])
    assert "other/model.onnx` (the recommendation" in rows["8ms"]


def test_schedule_reducers_and_precision_must_be_the_picks(world, tmp_path):
    e = copy_export(world, tmp_path)
    merged = point(DROP, 2.0e7, 7.0, 0.90, reducers=["merge", "merge"])
    sp = write_search(str(tmp_path / "s1"), world["model"], world["ckpt"], best=merged)
    rows, notes, _ = ship(sp, tmp_path / "r1", exports=[e / "export.json"])
    assert "model.onnx`" not in rows["8ms"]
    assert any("exported schedule drops where the pick merges" in n for n in notes)

    at_int8 = point(DROP, 2.0e7, 7.0, 0.90, precision="int8")
    sp = write_search(str(tmp_path / "s2"), world["model"], world["ckpt"], best=at_int8)
    rows, notes, _ = ship(sp, tmp_path / "r2", exports=[e / "export.json"])
    assert "model.onnx`" not in rows["8ms"] and any("fp32 file for an int8 pick" in n for n in notes)


def test_a_failed_or_malformed_export_record_is_never_shipped(world, tmp_path):
    """A version-1 export.json (one export at the top level): status failed, files null."""
    e = copy_export(world, tmp_path)
    doc = json.load(open(e / "export.json"))
    v1 = {k: v for k, v in doc.items() if k != "artefacts"}
    v1.update(version=1, status="failed", reason="onnx: agreement 0.50 < 0.99", verified=False)
    json.dump(v1, open(e / "export.json", "w"))
    sp = write_search(str(tmp_path / "s"), world["model"], world["ckpt"])
    rows, notes, _ = ship(sp, tmp_path / "r1", exports=[e / "export.json"])
    assert "model.onnx`" not in rows["8ms"]
    assert any("export status failed, not verified (onnx: agreement 0.50 < 0.99)" in n for n in notes)
    v1.update(status="verified", verified=True, files=None)  # no file with a sha256: a record no export writes
    json.dump(v1, open(e / "export.json", "w"))
    with pytest.raises(ConfigError, match=r"export\.json: files=None: expected an object: each exported format's "
                       r"file with its sha256"):
        ship(sp, tmp_path / "r2", exports=[e / "export.json"])
    # a status that contradicts the records the same export wrote: the file was edited, refused naming the field
    doc.update(status="failed", verified=False)
    json.dump(doc, open(e / "export.json", "w"))
    with pytest.raises(ConfigError, match=r"export\.json: artefacts\[0\]\.status='verified': expected the status "
                       r"of the export that wrote it \('failed'"):
        ship(sp, tmp_path / "r3", exports=[e / "export.json"])


def test_other_kinds_of_file_are_refused_as_what_they_are(world, tmp_path, capsys):
    sp = write_search(str(tmp_path / "s"), world["model"], world["ckpt"])
    table = tmp_path / "latency_table.json"
    table.write_text(json.dumps({"format": "fgvc-kit/latency-table", "version": 1}))
    out = ["--out", str(tmp_path / "r"), "--no-remeasure"]

    def err():
        lines = capsys.readouterr().err.strip().splitlines()
        assert len(lines) == 1, lines
        return lines[0]

    assert main(["report", "--search", sp, "--export", sp] + out) == 2
    assert f"{sp}: not an export record of fgvc-kit export (this is a search result (search.json of fgvc-kit " \
           "search)" in err()
    assert main(["report", "--search", sp, "--export", str(table)] + out) == 2
    assert f"{table}: not an export record of fgvc-kit export (this is a latency table" in err()
    ej = str(world["root"] / "export" / "export.json")
    assert main(["report", "--search", sp, "--bench", ej] + out) == 2
    assert f"{ej}: not a bench result of fgvc-kit bench (this is an export record" in err()
    assert main(["report", "--search", ej] + out) == 2
    assert "(this is an export record" in err()
    assert main(["export", "--checkpoint", world["ckpt"], "--search", ej, "--budget", "8ms",
                 "--out", str(tmp_path / "e")]) == 2
    assert f"{ej}: not a search result" in (line := err()) and "(this is an export record" in line
    assert not os.path.exists(tmp_path / "e" / "export.json")


# ------------------------------------------------------------------ one folder, every export described
def test_a_failed_reexport_keeps_the_earlier_verified_file_shipped(world, tmp_path, monkeypatch):
    e = copy_export(world, tmp_path)

    def wrong(self, x):  # an exported model that is wrong on every image
        o = np.zeros((x.shape[0], 10), np.float32)
        o[:, 0] = 1.0
        return o

    monkeypatch.setattr(ExportedRunner, "__call__", wrong)
    with pytest.raises(ExportError):
        export_model(world["model"], e, DROP, ("onnx",), verify=replace(world["given"], min_agreement=0.99),
                     options=world["fast"])
    assert ExportResult.load(e).status == "failed"  # the top level says the latest attempt failed...
    sp = write_search(str(tmp_path / "s"), world["model"], world["ckpt"])
    rows, notes, _ = ship(sp, tmp_path / "r", exports=[e / "export.json"])
    assert "`../export/model.onnx` (onnx, fp32, verified" in rows["8ms"]  # ...the verified file is still shipped
    assert any("rejected/model.onnx` is not shipped: export status failed" in n for n in notes)


def test_every_export_in_a_folder_stays_described_and_the_report_picks_by_schedule(world, tmp_path):
    e = copy_export(world, tmp_path)
    export_model(world["model"], e, SMALL, ("onnx",), verify=world["given"], options=world["fast"])
    res = ExportResult.load(e)
    recs = {r.counts: r for r in res.records}
    assert set(recs) == {tuple(DROP), tuple(SMALL)} and all(r.verified for r in recs.values())
    assert recs[tuple(DROP)].path == "model.onnx" and recs[tuple(SMALL)].path.startswith("model.s")
    assert {r.model_weights_sha256 for r in recs.values()} == {weights_digest(world["model"])}
    assert recs[tuple(SMALL)].reducers == ("drop", "drop")
    assert res.doc["version"] == 2
    sp = write_search(str(tmp_path / "s"), world["model"], world["ckpt"])
    rows, _, _ = ship(sp, tmp_path / "r", exports=[e / "export.json"])
    assert "`../export/model.onnx`" in rows["8ms"]
    assert f"`../export/{recs[tuple(SMALL)].path}`" in rows["5ms"]


def test_an_export_json_of_version_1_still_loads(world, tmp_path):
    e = copy_export(world, tmp_path)
    doc = json.load(open(e / "export.json"))
    v1 = {k: v for k, v in doc.items() if k != "artefacts"}
    v1["version"] = 1
    v1["model"].pop("weights_sha256")
    json.dump(v1, open(e / "export.json", "w"))
    res = ExportResult.load(e)
    (rec,) = res.records
    assert rec.path == "model.onnx" and rec.verified and rec.counts == tuple(DROP)
    assert rec.model_weights_sha256 is None and rec.checkpoint_sha256  # its checkpoint's file hash
    # the report tells its weights by the checkpoint file the search names
    sp = write_search(str(tmp_path / "s"), world["model"], world["ckpt"])
    rows, _, _ = ship(sp, tmp_path / "r", exports=[e / "export.json"])
    assert "`../export/model.onnx`" in rows["8ms"]
    v1["version"] = 3
    json.dump(v1, open(e / "export.json", "w"))
    with pytest.raises(ConfigError, match="version 3 is newer"):
        ExportResult.load(e)


# ------------------------------------------------------------------ bench.json
def test_a_bench_row_is_used_only_for_the_same_weights_schedule_and_reducers(world, tmp_path):
    from tavt_kit.bench import TimingPolicy, measure_latency
    from tavt_kit.target import DeploymentTarget

    report = measure_latency(world["model"], [DROP], target=DeploymentTarget(backend="torch", threads=1),
                             policy=TimingPolicy(warmup=1, warmup_s=0.01, min_repeats=2, budget_s=0.02))
    bp = report.save(tmp_path / "bench", plot=False)["json"]
    bench = json.load(open(bp))
    assert bench["model"]["weights_sha256"] == weights_digest(world["model"])
    sp = write_search(str(tmp_path / "s"), world["model"], world["ckpt"])
    # the search's budgets are for onnxruntime: a torch measurement is not their verdict
    rows, notes, _ = ship(sp, tmp_path / "rt", bench=bp)
    assert "ms predicted / 8 ms" in rows["8ms"]
    assert any("measured on torch cpu at batch 1, while the search's budgets are for onnxruntime cpu" in n
               for n in notes)
    doc = json.load(open(sp))
    doc["latency"]["target"]["backend"] = "torch"
    json.dump(doc, open(sp, "w"))
    rows, notes, _ = ship(sp, tmp_path / "r0", bench=bp)
    assert "ms measured / 8 ms" in rows["8ms"]

    bench["model"]["weights_sha256"] = weights_digest(world["other"])  # a bench of another checkpoint
    json.dump(bench, open(bp, "w"))
    rows, notes, _ = ship(sp, tmp_path / "r1", bench=bp)
    assert "ms predicted / 8 ms" in rows["8ms"]
    assert any("bench.json's measurement of this schedule is not used (bench.json of other weights" in n
               for n in notes)

    bench["model"]["weights_sha256"] = weights_digest(world["model"])
    for r in bench["results"]:
        r["reducers"] = ["merge", "merge"] if r["schedule"] == DROP else r["reducers"]
    json.dump(bench, open(bp, "w"))
    rows, notes, _ = ship(sp, tmp_path / "r2", bench=bp)
    assert "ms predicted / 8 ms" in rows["8ms"]
    assert any("bench.json's schedule merges where the pick drops" in n for n in notes)


def test_a_budget_that_ships_tome_on_your_model_is_judged_on_that_deployable(world, tmp_path):
    """When a budget's recommendation is ToMe on your model, its row is that deployable's own: its test top-1
    and paired difference, its latency as bench measured it (a row timed on the supernet's weights at the same
    schedule stands for it: same operations), and the verdict on that latency, not the searched schedule's."""
    tome = point([48, 32], 2.5e7, 6.5, 0.93, reducers=["merge", "merge"], weights="parent", r=16,
                 holdout_nll=0.2, vs_parent={"difference": -0.001, "interval": [-0.004, 0.002], "resolved": False})
    sp = write_search(str(tmp_path / "s"), world["model"], world["ckpt"],
                      parent=point([64, 64], 4.0e7, 12.0, 0.931, path="parent.safetensors",
                                   weights_sha256=weights_digest(world["other"])))
    doc = json.load(open(sp))
    doc["budgets"][0]["training_free"] = {"tome_parent": tome}
    doc["budgets"][0]["recommended"] = {"family": "tome_parent", "weights": "parent", "counts": [48, 32],
                                        "reducers": ["merge", "merge"], "precision": "fp32",
                                        "why": "best held-out NLL among searched, tome_parent"}
    json.dump(doc, open(sp, "w"))
    target = {"backend": "onnxruntime", "device": "cpu", "batch_size": 1, "precision": "fp32"}
    bench = {"format": "fgvc-kit/bench", "model": {"weights_sha256": weights_digest(world["model"])},
             "target": target, "machine": {"cpu": {"model": "test", "available_cores": 1}},
             "results": [{"schedule": [64, 64], "batch_size": 1, "latency_ms": {"p50": 12.5}},
                         {"schedule": DROP, "batch_size": 1, "latency_ms": {"p50": 7.1}},
                         {"schedule": [48, 32], "reducers": ["merge", "merge"], "batch_size": 1,
                          "latency_ms": {"p50": 8.4}}]}
    bp = tmp_path / "bench.json"
    json.dump(bench, open(bp, "w"))
    rows, notes, _ = ship(sp, tmp_path / "r", bench=bp)
    row = rows["8ms"]
    assert "8.4 ms measured / 8 ms (predicted 6.5 ms)" in row and "**FAIL**" in row  # ToMe's latency, not 7.1
    assert "93.00" in row and "48m,32m" in row and "searched schedule's" not in row
    assert any(n.startswith("8ms: ships ToMe r=16 on your model") and "the searched schedule: 90.00 %" in n
               for n in notes)

    bench["results"][2]["latency_ms"]["p50"] = 7.9  # within the budget: it passes on its own measurement
    json.dump(bench, open(bp, "w"))
    rows, _, _ = ship(sp, tmp_path / "r2", bench=bp)
    assert "7.9 ms measured / 8 ms" in rows["8ms"] and "| pass |" in rows["8ms"]
