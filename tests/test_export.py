"""fgvc-kit export (ONNX / OpenVINO, verification, export.json, int8) and fgvc-kit prune."""
import json
import math
import os
import sys
from dataclasses import replace

import numpy as np
import pytest
import torch

import tavt_kit
from tavt_kit.cli import main
from tavt_kit.errors import ConfigError, ExportError

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from tavt_kit.export import (ExportOptions, ExportResult, QuantizeOptions, VerifyOptions,  # noqa: E402
                             export_model, graph_token_counts, load_verify_data, verify_export)
from tavt_kit.target import DeploymentTarget  # noqa: E402
from tavt_kit.search.result import select_budget  # noqa: E402  (the rule SearchResult.budget follows)
from tavt_kit.export.verify import ExportedRunner  # noqa: E402

try:
    import openvino  # noqa: F401
    HAVE_OV = True
except ImportError:
    HAVE_OV = False

BOTH = ("onnx", "openvino") if HAVE_OV else ("onnx",)
DROP = [32, 16]  # fgvc_tiny at depth 2: 64 patch tokens + class token

# tiny models of every kind create_model builds (10 classes: the demo's digits)
MODELS = {
    "linear": ("fgvc_tiny", dict(depth=2)),
    "ffvt": ("fgvc_tiny", dict(depth=2, head="ffvt", num_token=4)),
    "mixvit": ("fgvc_tiny", dict(depth=2, head="mixvit")),
    "pim": ("fgvc_tiny", dict(depth=2, head="pim", fpn_size=32, num_selects=16)),
    "vitae": ("ViTAE_basic_Tiny", dict(img_size=64, NC_depth=[0, 0, 2])),
}


def tiny(kind="linear"):
    torch.manual_seed(0)
    name, kw = MODELS[kind]
    return tavt_kit.create_model(name, num_classes=10, **kw).eval()


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt") / "tiny.safetensors"
    tavt_kit.save_checkpoint(tiny(), path, extra={"data": {"name": "demo"}})
    return str(path)


@pytest.fixture(scope="module")
def data():
    return load_verify_data(tiny(), "demo", max_images=32)


def read(path):
    with open(path) as f:
        return json.load(f)


# ------------------------------------------------------------------ every head
@pytest.mark.parametrize("kind", list(MODELS))
def test_every_model_exports_and_verifies(tmp_path, kind, data):
    model = tiny(kind)
    sched = [8, 4] if kind == "vitae" else DROP
    res = export_model(model, tmp_path, sched, BOTH, verify=VerifyOptions(data=(data.images, data.labels)))
    doc = res.doc
    assert res.verified and res.status == "verified" and res.reason is None
    assert res.schedule == sched and doc["macs"]["schedule"] < doc["macs"]["full"]
    assert doc["exporter"]["name"] in ("dynamo", "torchscript")
    onnx.checker.check_model(res.path("onnx"))
    for fmt in BOTH:
        v = res.verification[fmt]
        assert v.passed and v.precision_used == "fp32" and v.images == 32 and v.precision == "fp32"
        assert v.agreement == 1.0 and v.accuracy_drop == 0.0 and v.max_logit_diff < 1e-4
        assert v.to_dict() == doc["verification"]["results"][fmt]  # the typed value is the record
        # the schedule's token counts are in the graph; without OpenVINO's shape inference an ONNX file cannot tell
        assert doc["exports"][fmt]["graph_keeps_token_drop"] is (True if HAVE_OV else None)
        assert doc["files"][fmt]["bytes"] > 0 and os.path.exists(res.path(fmt))
    if HAVE_OV:
        assert "INFERENCE_PRECISION_HINT=f32" in res.verification["openvino"].runtime
        assert os.path.exists(tmp_path / "model.bin")
    assert read(res.json_path) == json.loads(json.dumps(doc))
    if kind == "mixvit":  # the training-only substitution branch is not in the graph
        params = sum(p.numel() for p in model.parameters())
        inference = doc["model"]["inference_params"]
        branch = sum(p.numel() for n, p in model.named_parameters() if n.startswith("mixvit."))
        assert branch > 0 and inference == params - branch
        g = onnx.load(res.path("onnx")).graph
        exported = sum(math.prod(t.dims) for t in g.initializer)
        assert exported <= inference and not any(t.name.startswith("mixvit") for t in g.initializer)


@pytest.mark.skipif(not HAVE_OV, reason="graph token counts are read with OpenVINO's shape inference")
def test_dropped_schedule_leaves_fewer_tokens_in_the_graph(tmp_path, ckpt, capsys):
    """Structural check: the full graph carries 65 tokens everywhere, the dropped one 33 and 17."""
    rc = main(["export", "--checkpoint", ckpt, "--format", ",".join(BOTH), "--no-verify", "--out",
               str(tmp_path / "full")])
    assert rc == 0
    full = read(tmp_path / "full" / "export.json")
    assert full["verified"] is False and full["status"] == "unverified" and "--no-verify" in full["reason"]
    assert full["verification"] == {"skipped": True} and full["schedule"]["full"]
    assert "NOT verified" in capsys.readouterr().out
    dropped = export_model(ckpt, tmp_path / "drop", DROP, BOTH, verify=VerifyOptions(enabled=False)).doc
    for fmt in BOTH:
        f_counts = graph_token_counts(tmp_path / "full" / full["files"][fmt]["path"], 96)
        d_counts = graph_token_counts(tmp_path / "drop" / dropped["files"][fmt]["path"], 96)
        assert f_counts == full["exports"][fmt]["graph_token_counts"]
        assert min(c for c in f_counts if c > 1) >= 64  # (1 is the class token read by the head)
        assert {33, 17} <= set(d_counts) and min(c for c in d_counts if c > 1) == 16
    assert dropped["macs"]["schedule"] < full["macs"]["schedule"]


# ------------------------------------------------------- the API and the command line
def _without_time(doc):
    """export.json less what depends on when it ran (``created``, ``seconds``) and on the process: OpenVINO names
    the nodes it makes with a counter of the process, so an ``.xml``'s size and hash differ between two runs."""
    if isinstance(doc, dict):
        xml = str(doc.get("path", "")).endswith(".xml")
        return {k: _without_time(v) for k, v in doc.items()
                if k not in ("created", "seconds") and not (xml and k in ("bytes", "sha256", "total_bytes"))}
    if isinstance(doc, list):
        return [_without_time(v) for v in doc]
    return doc


def test_the_api_writes_the_export_json_the_command_line_writes(tmp_path, ckpt):
    assert main(["export", "--checkpoint", ckpt, "--drop", "32,16", "--format", ",".join(BOTH),
                 "--verify-images", "32", "--out", str(tmp_path / "cli")]) == 0
    res = export_model(ckpt, tmp_path / "api", [32, 16], BOTH, verify=VerifyOptions(images=32),
                       options=ExportOptions(schedule_source={"kind": "drop", "value": "32,16"}))
    cli = read(tmp_path / "cli" / "export.json")
    assert _without_time(read(res.json_path)) == _without_time(cli)
    assert list(read(res.json_path)) == list(cli)  # the same keys in the same order
    # ExportResult.load reads it back as the export returned it
    loaded = ExportResult.load(tmp_path / "cli")
    assert loaded.verified and loaded.json_path == str(tmp_path / "cli" / "export.json")
    untimed = {f: replace(v, seconds=None) for f, v in loaded.verification.items()}
    assert untimed == {f: replace(v, seconds=None) for f, v in res.verification.items()}
    assert {f: v.to_dict() for f, v in loaded.verification.items()} == cli["verification"]["results"]
    assert loaded.schedule == [32, 16] and loaded.precisions == {f: "fp32" for f in BOTH}
    assert loaded.path("onnx") == str(tmp_path / "cli" / "model.onnx")


def test_export_result_load_refuses_other_files(tmp_path):
    other = tmp_path / "search.json"
    other.write_text(json.dumps({"format": "fgvc-kit/search", "version": 1}))
    with pytest.raises(ConfigError, match=r"search\.json: not an export record of fgvc-kit export \(this is a "
                                          r"search result"):
        ExportResult.load(other)
    newer = tmp_path / "export.json"
    newer.write_text(json.dumps({"format": "fgvc-kit/export", "version": 3}))
    with pytest.raises(ConfigError, match=r"export\.json: version 3 is newer than this fgvc-kit reads"):
        ExportResult.load(tmp_path)
    with pytest.raises(ConfigError, match="file not found"):
        ExportResult.load(tmp_path / "nowhere")
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(ConfigError, match="not valid JSON"):
        ExportResult.load(tmp_path / "bad.json")


def test_options_refuse_bad_values_naming_the_field():
    for make, match in ((lambda: VerifyOptions(images=0), r"verify\.images=0: expected a positive"),
                        (lambda: VerifyOptions(min_agreement=2), r"verify\.min_agreement=2: expected a fraction"),
                        (lambda: VerifyOptions(max_accuracy_drop=-1), r"verify\.max_accuracy_drop=-1"),
                        (lambda: VerifyOptions(split="val"), r"verify\.split='val': expected one of"),
                        (lambda: QuantizeOptions(calibration_split="test"),
                         r"quantize\.calibration_split='test': int8 calibration must not see the test split"),
                        (lambda: QuantizeOptions(accuracy_control_images=0), r"quantize\.accuracy_control_images=0"),
                        (lambda: ExportOptions(exporter="tflite"), r"options\.exporter='tflite': expected one of"),
                        (lambda: ExportOptions(opset=0), r"options\.opset=0")):
        with pytest.raises(ConfigError, match=match):
            make()
    with pytest.raises(ConfigError, match=r"^precision='int4': expected one of fp32, bf16, fp16, int8$"):
        DeploymentTarget(precision="int4")
    with pytest.raises(ConfigError, match=r"^formats='tflite': unknown format"):
        export_model(tiny(), "unused", formats="tflite")
    with pytest.raises(ConfigError, match=r"^precision='bf16' is not available for formats='onnx'"):
        export_model(tiny(), "unused", formats="onnx", target=DeploymentTarget(precision="bf16"))
    assert not os.path.exists("unused")
    # formats default to the target's runtime (ONNX without a target)
    from tavt_kit.export.prepare import resolve_target

    assert resolve_target(DeploymentTarget(backend="openvino"), None)[1] == ("openvino",)
    assert resolve_target(None, None) == (DeploymentTarget(backend="onnxruntime"), ("onnx",))


# ---------------------------------------------------------- search.json budgets
def search_doc(model):
    spec = model.spec
    return {"format": "fgvc-kit/search", "version": 1,
            "model": {k: spec.get(k) for k in ("backbone", "img_size", "depth", "num_patches", "num_classes")},
            "budgets": [
                {"label": "15ms", "objective": "latency", "limit": 0.015,
                 "best": {"counts": [40, 20], "macs": 1.5e7, "holdout_accuracy": 0.5, "latency_ms": 14.2},
                 "schedule_file": "schedule-15ms.json"},
                {"label": "20M MACs", "objective": "macs", "limit": 2e7, "best": {"counts": [48, 32], "macs": 2e7}},
                {"label": "1ms", "objective": "latency", "limit": 0.001, "best": None},
            ]}


def test_select_budget_by_label_unit_or_number():
    doc = search_doc(tiny())
    for text in ("15ms", "15 MS", "15", "0.015s", "15000us"):
        assert select_budget(doc, text)["label"] == "15ms"
    for text in ("20M MACs", "20m", "2e7", "20"):
        assert select_budget(doc, text)["label"] == "20M MACs"
    for text in ("7", "fast"):  # no budget of the file, and no unit to answer it from the front
        with pytest.raises(ConfigError, match=rf"^budget={text}: not a budget of search.json \(it holds 15ms, "
                                              r"20M MACs, 1ms\); give one of them, or any budget with its unit"):
            select_budget(doc, text)
    with pytest.raises(ConfigError, match="no schedule of the search space met this budget"):
        select_budget(doc, "1ms")
    with pytest.raises(ConfigError, match="has no latency figures"):
        select_budget({"budgets": []}, "15ms")


def test_any_budget_is_answered_from_the_pareto_front():
    doc = {"budgets": [], "latency": {"source": "table"}, "pareto_front": [
        {"counts": [16, 8], "macs": 1e7, "latency_ms": 4.0, "holdout_accuracy": 0.80},
        {"counts": [32, 16], "macs": 2e7, "latency_ms": 7.0, "holdout_accuracy": 0.90},
        {"counts": [64, 64], "macs": 4e7, "latency_ms": 12.0, "holdout_accuracy": 0.95}]}
    row = select_budget(doc, "8ms")
    assert row["source"] == "front" and row["best"]["counts"] == [32, 16] and row["label"] == "8ms"
    assert select_budget(doc, "30M MACs")["best"]["counts"] == [32, 16]
    assert select_budget(doc, "0.04G")["best"]["counts"] == [64, 64]
    with pytest.raises(ConfigError, match="nothing on its Pareto front fits"):
        select_budget(doc, "2ms")


def front_search_doc(model):
    """search_doc with a Pareto front predicted from a latency table (4, 12.1 and 30 ms)."""
    front = [{"counts": [16, 8], "macs": 1e7, "latency_ms": 4.0, "holdout_accuracy": 0.80},
             {"counts": [48, 32], "macs": 2e7, "latency_ms": 12.1, "holdout_accuracy": 0.912},
             {"counts": [64, 64], "macs": 4e7, "latency_ms": 30.0, "holdout_accuracy": 0.95}]
    return {**search_doc(model), "latency": {"source": "table"}, "pareto_front": front}


def test_a_budget_the_search_was_not_run_for_says_what_the_front_gives():
    doc = front_search_doc(tiny())
    row = select_budget(doc, "25ms")
    assert row["source"] == "front" and row["best"]["counts"] == [48, 32]
    assert (f"{row['note']}: exporting {row['front_point']}" ==
            "25ms is not a budget of search.json (it holds 15ms, 20M MACs, 1ms): exporting the Pareto-front point "
            "at 12.1 ms predicted, 91.2 % held-out, the most accurate within 25ms")
    row = select_budget(doc, "25M MACs")
    assert row["best"]["counts"] == [48, 32] and row["front_point"].startswith("the Pareto-front point at 20M MACs")
    assert "note" not in select_budget(doc, "15ms")  # a budget of the file: its own pick, nothing to say
    with pytest.raises(ConfigError, match=r"^budget=2ms: not a budget of search.json \(it holds 15ms, 20M MACs, "
                                          r"1ms\), and nothing on its Pareto front fits \(its cheapest schedule "
                                          r"costs 4ms\); the front spans 4-30 ms predicted$"):
        select_budget(doc, "2ms")
    with pytest.raises(ConfigError, match=r"the front spans 10M-40M MACs$"):
        select_budget(doc, "5M MACs")


def test_cli_export_of_a_budget_the_search_was_not_run_for(tmp_path, ckpt, capsys):
    sj = tmp_path / "search.json"
    sj.write_text(json.dumps(front_search_doc(tavt_kit.load_checkpoint(ckpt))))
    base = ["export", "--checkpoint", ckpt, "--search", str(sj), "--format", "onnx", "--no-verify"]
    assert main(base + ["--budget", "25ms", "--out", str(tmp_path / "o")]) == 0
    out = capsys.readouterr().out
    assert (f"25ms is not a budget of {sj} (it holds 15ms, 20M MACs, 1ms): exporting the Pareto-front point at "
            "12.1 ms predicted, 91.2 % held-out, the most accurate within 25ms\n") in out
    source = read(tmp_path / "o" / "export.json")["schedule"]
    assert source["counts"] == [48, 32] and source["source"]["picked_from"] == "front"
    assert main(base + ["--budget", "15ms", "--out", str(tmp_path / "o2")]) == 0
    assert "not a budget" not in capsys.readouterr().out
    for budget, words in (("fast", "give one of them, or any budget with its unit"),
                          ("2ms", "nothing on its Pareto front fits")):
        assert main(base + ["--budget", budget, "--out", str(tmp_path / "o3")]) == 2
        err = _err(capsys)
        assert f"--budget {budget}: not a budget of {sj} (it holds 15ms, 20M MACs, 1ms)" in err and words in err


def test_cli_exports_the_schedule_of_a_search_budget(tmp_path, ckpt, capsys):
    model = tavt_kit.load_checkpoint(ckpt)
    sj = tmp_path / "search.json"
    sj.write_text(json.dumps(search_doc(model)))
    out = tmp_path / "out"
    rc = main(["export", "--checkpoint", ckpt, "--search", str(sj), "--budget", "15ms", "--format", ",".join(BOTH),
               "--verify-images", "32", "--out", str(out)])
    text = capsys.readouterr().out
    assert rc == 0 and "verified" in text and "export.json" in text
    doc = read(out / "export.json")
    assert doc["format"] == "fgvc-kit/export" and doc["verified"] is True and doc["status"] == "verified"
    assert doc["checkpoint"]["path"] == ckpt and len(doc["checkpoint"]["sha256"]) == 64
    assert doc["schedule"]["counts"] == [40, 20]
    assert doc["schedule"]["source"]["budget"] == "15ms" and doc["schedule"]["source"]["kind"] == "search"
    assert doc["macs"]["schedule"] == tavt_kit.count_macs(model, [40, 20]).total()
    assert doc["precision"] == "fp32" and doc["formats"] == list(BOTH)
    assert doc["exporter"]["name"] == doc["exports"]["onnx"]["exporter"]
    for key in ("fgvc_kit", "torch", "onnx", "onnxruntime"):
        assert key in doc["versions"]
    assert doc["verification"]["data"]["dataset"] == "demo" and doc["verification"]["data"]["split"] == "test"
    assert doc["verification"]["data"]["images"] == 32 and doc["verification"]["max_accuracy_drop"] == 0.5
    for fmt in BOTH:
        v = doc["verification"]["results"][fmt]
        assert v["passed"] and v["precision_used"] == "fp32" and v["top1_pytorch"] == v["top1_exported"]
        assert doc["files"][fmt]["bytes"] == os.path.getsize(out / doc["files"][fmt]["path"])
    if HAVE_OV:
        assert doc["files"]["openvino"]["weights"] == "model.bin" and doc["files"]["openvino"]["weights_bytes"] > 0
        assert "openvino" in doc["versions"]
    # the exported file's own metadata carries the schedule
    from tavt_kit.export.onnx import read_onnx_info

    assert read_onnx_info(out / "model.onnx").schedule == [40, 20]


# ------------------------------------------------------------------ failures
def test_failed_verification_exits_non_zero_and_is_recorded(tmp_path, ckpt, data, monkeypatch, capsys):
    labels = data.labels.numpy()  # the CLI verifies on the same 32 demo test images (seeded subset)

    def wrong(self, x):  # an exported model that is wrong on every image
        out = np.zeros((x.shape[0], 10), np.float32)
        out[np.arange(x.shape[0]), (labels[:x.shape[0]] + 1) % 10] = 1.0
        return out

    monkeypatch.setattr(ExportedRunner, "__call__", wrong)
    out = tmp_path / "out"
    rc = main(["export", "--checkpoint", ckpt, "--drop", "32,16", "--verify-images", "32", "--out", str(out)])
    err = capsys.readouterr().err
    assert rc == 2
    assert err.startswith("fgvc-kit: error: export verification failed") and len(err.strip().splitlines()) == 1
    doc = read(out / "export.json")
    assert doc["verified"] is False and doc["status"] == "failed"
    assert "onnx: top-1 drops by" in doc["reason"] and "--max-accuracy-drop 0.5" in doc["reason"]
    v = doc["verification"]["results"]["onnx"]
    assert v["passed"] is False and v["top1_exported"] == 0.0 and v["accuracy_drop"] == v["top1_pytorch"] > 0.5
    assert doc["exports"]["onnx"]["verified"] is False and os.path.exists(out / "model.onnx")


def test_a_corrupted_export_cannot_be_verified(tmp_path, data):
    model = tiny()
    bad = tmp_path / "model.onnx"
    bad.write_bytes(b"not an onnx graph")
    with pytest.raises(ExportError, match="cannot load"):
        verify_export(model, bad, data)
    with pytest.raises(ExportError, match="not found"):
        verify_export(model, tmp_path / "missing.onnx", data)


def test_accuracy_drop_threshold_and_unlabelled_data(tmp_path, data):
    model = tiny()
    res = export_model(model, tmp_path, DROP, ("onnx",), verify=VerifyOptions(enabled=False))
    path = res.path("onnx")
    ok = verify_export(model, path, data, schedule=DROP)
    assert ok.passed and ok.accuracy_torch == ok.accuracy_exported and ok.criterion.startswith("top-1")
    # a strict logit bound fails an export that is otherwise fine
    strict = verify_export(model, path, data, schedule=DROP, max_logit_diff=0.0)
    assert not strict.passed and "--max-logit-diff" in strict.reason
    # the wrong schedule: PyTorch at the full model vs a dropped graph disagrees
    wrong = verify_export(model, path, data, schedule=None, max_logit_diff=1e-4, min_agreement=1.0)
    assert not wrong.passed and wrong.max_logit_diff > 1e-3 and wrong.limit_agreement == 1.0
    with pytest.raises(ConfigError, match=r"min_agreement=2\.0: expected a fraction"):
        verify_export(model, path, data, min_agreement=2.0)
    # without labels only agreement is measured (an upper bound of the accuracy drop)
    nolab = verify_export(model, path, (data.images, None), schedule=DROP)
    assert nolab.passed and nolab.accuracy_torch is None and "no labels" in nolab.criterion


def _err(capsys):
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


def test_bad_input_is_one_line_naming_the_flag(tmp_path, ckpt, capsys, monkeypatch):
    base = ["export", "--checkpoint", ckpt, "--out", str(tmp_path / "o")]
    assert main(base + ["--format", "tflite"]) == 2
    assert "--format tflite: unknown format" in _err(capsys)
    assert main(base + ["--precision", "int4"]) == 2
    assert "--precision int4: expected one of fp32, bf16, fp16, int8" in _err(capsys)
    assert main(base + ["--precision", "bf16", "--format", "onnx"]) == 2
    assert "--precision bf16 is not available for --format onnx" in _err(capsys)
    sj = tmp_path / "search.json"
    sj.write_text(json.dumps(search_doc(tavt_kit.load_checkpoint(ckpt))))
    assert main(base + ["--search", str(sj), "--budget", "9ms"]) == 2
    assert "--budget 9ms:" in (e := _err(capsys)) and "15ms, 20M MACs" in e
    assert main(base + ["--budget", "15ms"]) == 2
    assert "--search and --budget go together" in _err(capsys)
    # a schedule for another model
    other = tavt_kit.create_model("fgvc_tiny", depth=3, num_classes=10)
    drop = tmp_path / "other.json"
    tavt_kit.TokenSchedule((40, 30, 20), 64).save(drop, model_info={k: other.spec.get(k) for k in
                                                                   ("backbone", "img_size", "depth", "num_patches")})
    assert main(base + ["--drop", str(drop)]) == 2
    assert f"--drop {drop} is a schedule for a model with depth 3, the checkpoint has 2" in _err(capsys)
    doc = {**search_doc(other), "model": {"depth": 3, "num_patches": 64}}
    for b in doc["budgets"]:  # a consistent search of that model: a count per block of its 3
        if b["best"]:
            b["best"]["counts"] = b["best"]["counts"][:1] * 3
    sj.write_text(json.dumps(doc))
    assert main(base + ["--search", str(sj), "--budget", "15ms"]) == 2
    assert "depth 3, the checkpoint has 2" in _err(capsys)
    assert main(["export", "--checkpoint", str(tmp_path / "nope.safetensors")]) == 2
    assert "checkpoint not found" in _err(capsys)
    # optional backends missing
    monkeypatch.setitem(sys.modules, "nncf", None)
    assert main(base + ["--precision", "int8"]) == 2
    assert "--precision int8 needs NNCF" in (e := _err(capsys)) and "pip install" in e
    monkeypatch.setitem(sys.modules, "openvino", None)
    assert main(base + ["--format", "onnx,openvino"]) == 2
    assert "--format openvino: openvino is not installed" in _err(capsys)
    assert not os.path.exists(tmp_path / "o" / "export.json")  # nothing was exported


# ----------------------------------------------------------------- precisions
@pytest.mark.nncf
@pytest.mark.skipif(not HAVE_OV, reason="needs openvino")
def test_int8_export_with_nncf(tmp_path, trained_checkpoint):
    """Plain post-training quantisation (--no-accuracy-control) of a trained model, verified within 3 points."""
    sched = [32, 16]  # the trained model: 64 patch tokens, 2 blocks
    res = export_model(trained_checkpoint, tmp_path, sched, ("onnx", "openvino"),
                       target=DeploymentTarget(precision="int8"), verify=VerifyOptions(images=200, max_accuracy_drop=3),
                       quantize=QuantizeOptions(calibration_images=64, accuracy_control=False))
    doc = res.doc
    assert doc["verified"] and doc["calibration"]["split"] == "train" and doc["calibration"]["images"] == 64
    assert doc["files"]["onnx"]["path"] == "model.int8.onnx" and doc["files"]["openvino"]["path"] == "model.int8.xml"
    assert "nncf" in doc["versions"]
    for fmt, used in (("onnx", "int8"), ("openvino", "int8+fp32")):
        q = doc["exports"][fmt]["quantization"]
        assert q["quantized_ops"] > 0 and q["mode"] == "ptq" and "--no-accuracy-control" in q["reason"]
        v = doc["verification"]["results"][fmt]
        assert v["precision_used"] == used and v["passed"] and v["images"] == 200
        assert v["top1_pytorch"] > 70 and v["top1_pytorch"] - v["top1_exported"] <= 3  # a trained model
        assert doc["exports"][fmt]["graph_keeps_token_drop"]
    # the IR keeps attention's Q.K^T (two activations) in float: OpenVINO's int8 kernels for it saturate on CPUs
    # without VNNI (5.5 points lost on this model on an AVX2 CPU); ONNX Runtime runs it in int8 without loss
    from tavt_kit.export.quantize import quantized_op_inputs

    kept = doc["exports"]["openvino"]["quantization"]["kept_in_float"]
    assert len(kept) == 4 and not set(kept) & set(quantized_op_inputs(tmp_path / "model.int8.xml"))
    assert doc["exports"]["onnx"]["quantization"]["kept_in_float"] == []


@pytest.mark.skipif(not HAVE_OV, reason="needs openvino")
def test_activation_matmuls_are_the_ones_without_weights():
    """int8 keeps in float the MatMuls of two activations, not layers with weights (plain or decompressed)."""
    import openvino as ov
    import openvino.opset13 as ops

    from tavt_kit.export.quantize import activation_matmuls

    x = ops.parameter([1, 4, 8], np.float32, name="x")
    w = ops.constant(np.ones((8, 8), np.float32))
    lin = ops.matmul(x, w, False, True, name="linear")
    wq = ops.multiply(ops.convert(ops.constant(np.ones((8, 8), np.int8)), "f32"), ops.constant(np.float32(0.5)))
    lin_q = ops.matmul(lin, ops.transpose(wq, ops.constant([1, 0])), False, False, name="linear_int8_weights")
    q = ops.multiply(ops.constant(np.float32(0.25)), lin_q)  # scaled activation: not weights
    scores = ops.matmul(q, lin, False, True, name="qk")
    out = ops.matmul(ops.softmax(scores, -1), lin_q, False, False, name="attn_v")
    model = ov.Model([ops.result(out)], [x], "attention")
    assert activation_matmuls(model) == ["qk", "attn_v"]


@pytest.mark.skipif(not HAVE_OV, reason="needs openvino")
def test_lower_precision_reports_what_openvino_used(tmp_path, data, monkeypatch):
    import tavt_kit.export.openvino as ov_mod
    from tavt_kit.export.openvino import compile_openvino

    # OpenVINO fp16 is verified only on a CPU with native fp16 (refused elsewhere: test_export_precision.py)
    monkeypatch.setattr(ov_mod, "device_capabilities", lambda device="cpu": ("FP32", "FP16", "INT8"))
    res = export_model(tiny(), tmp_path, DROP, ("onnx", "openvino"), target=DeploymentTarget(precision="fp16"),
                       verify=VerifyOptions(data=(data.images, data.labels), max_accuracy_drop=100))
    v = res.verification
    assert v["onnx"].precision_used == "fp16" and res.doc["files"]["onnx"]["path"] == "model.fp16.onnx"
    _, used = compile_openvino(res.path("openvino"), precision="f16")
    assert v["openvino"].precision_used == {"f32": "fp32", "f16": "fp16", "bf16": "bf16"}[used]
    assert "INFERENCE_PRECISION_HINT=f16" in v["openvino"].runtime and res.precisions == {"onnx": "fp16",
                                                                                          "openvino": "fp16"}
    assert res.doc["exports"]["openvino"]["weights"] == "f16"


# --------------------------------------------------------------------- prune
def test_prune_cli_round_trip(tmp_path, ckpt, capsys):
    pytest.importorskip("torch_pruning")
    out = tmp_path / "pruned" / "pruned.safetensors"  # --out is a folder; the checkpoint has a fixed name
    assert main(["prune", "--checkpoint", ckpt, "--channel-keep-ratio", "0.7", "--out", str(tmp_path / "pruned")]) == 0
    text = capsys.readouterr().out
    assert "params" in text and "MACs (full)" in text and str(out) in text
    before, after = tavt_kit.load_checkpoint(ckpt), tavt_kit.load_checkpoint(out)
    assert sum(p.numel() for p in after.parameters()) < sum(p.numel() for p in before.parameters())
    assert tavt_kit.count_macs(after).total() < tavt_kit.count_macs(before).total()
    assert after.spec["pruned_from"]["ratio"] == 0.3 and after.spec["data"]["name"] == "demo"
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert after.eval()(x, drop=DROP).shape == (2, 10)  # still takes token schedules
    # fgvc-kit train --pretrained fine-tunes the pruned model as it is (its narrower layers rebuilt)
    from tavt_kit.train.build import build_model

    ft = build_model(num_classes=10, pretrained=str(out))
    assert [b.mlp.fc1.out_features for b in ft.blocks] == [b.mlp.fc1.out_features for b in after.blocks]
    with pytest.raises(ConfigError, match="pruned checkpoint is fine-tuned as it is"):
        build_model(num_classes=5, pretrained=str(out))
    # a MAC target (iterative; steps that remove no head prune MLP channels only); the old file spelling of --out
    out2 = tmp_path / "target.safetensors"
    assert main(["prune", "--checkpoint", ckpt, "--macs-budget", "0.012G", "--out", str(out2)]) == 0
    assert tavt_kit.count_macs(tavt_kit.load_checkpoint(out2)).total() <= 0.012e9
    assert "a checkpoint file name is deprecated; give a folder" in capsys.readouterr().err
    assert main(["prune", "--checkpoint", ckpt, "--channel-keep-ratio", "0.7", "--out", str(tmp_path / "p.pt")]) == 2
    assert "expected an output folder" in _err(capsys)
    assert main(["prune", "--checkpoint", ckpt, "--macs-budget", "lots", "--out", str(tmp_path / "pruned")]) == 2
    assert "--macs-budget lots: expected a number of MACs" in _err(capsys)


# ------------------------------------------------------------ nothing lost
def _describes_exactly_the_files_beside_it(out):
    doc = json.load(open(out / "export.json"))
    for rec in doc["artefacts"]:
        assert tavt_kit.export.record.sha256(str(out / rec["path"])) == rec["sha256"], rec["path"]
    return doc


def test_exports_add_their_own_records_and_a_failure_never_replaces_a_verified_file(tmp_path, ckpt, data,
                                                                                     monkeypatch):
    import hashlib

    out = tmp_path / "e"
    model = tavt_kit.load_checkpoint(ckpt)
    given = VerifyOptions(data=(data.images, data.labels))
    export_model(model, out, DROP, ("onnx",), verify=given)
    first = hashlib.sha256((out / "model.onnx").read_bytes()).hexdigest()
    export_model(model, out, DROP, ("onnx",), verify=given, target=DeploymentTarget(precision="fp16"))
    export_model(model, out, [16, 8], ("onnx",), verify=given)  # another schedule
    doc = _describes_exactly_the_files_beside_it(out)
    recs = {(r["precision"], tuple(r["schedule"])): r for r in doc["artefacts"]}
    assert set(recs) == {("fp32", (32, 16)), ("fp16", (32, 16)), ("fp32", (16, 8))}
    assert recs[("fp32", (32, 16))]["path"] == "model.onnx" and all(r["verified"] for r in recs.values())
    assert recs[("fp32", (16, 8))]["path"].startswith("model.s") and os.path.isfile(out / "model.onnx")

    def wrong(self, x):  # an exported model that is wrong on every image
        o = np.zeros((x.shape[0], 10), np.float32)
        o[:, 0] = 1.0
        return o

    monkeypatch.setattr(ExportedRunner, "__call__", wrong)
    with pytest.raises(ExportError):  # (an untrained model: the agreement with PyTorch is what fails)
        export_model(model, out, DROP, ("onnx",), verify=replace(given, min_agreement=0.99))
    assert hashlib.sha256((out / "model.onnx").read_bytes()).hexdigest() == first  # still the verified file
    doc = _describes_exactly_the_files_beside_it(out)
    failed = [r for r in doc["artefacts"] if not r["verified"]]
    assert [r["path"] for r in failed] == [os.path.join("rejected", "model.onnx")]
    assert any(r["path"] == "model.onnx" and r["verified"] for r in doc["artefacts"])


def test_a_kill_during_verification_leaves_the_folder_as_it_was(tmp_path, ckpt, data, monkeypatch):
    out = tmp_path / "e"
    model = tavt_kit.load_checkpoint(ckpt)
    given = VerifyOptions(data=(data.images, data.labels))
    export_model(model, out, DROP, ("onnx",), verify=given)
    before = {p: (out / p).read_bytes() for p in os.listdir(out)}

    def killed(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(tavt_kit.export.verify, "verify_export", killed)
    with pytest.raises(KeyboardInterrupt):
        export_model(model, out, [16, 8], ("onnx",), verify=given)
    assert {p: (out / p).read_bytes() for p in os.listdir(out)} == before
    assert not [p for p in os.listdir(tmp_path) if "staging" in p]


def test_export_of_a_search_for_openvino_writes_the_ir_by_default(tmp_path, ckpt, capsys):
    """A search whose latency budgets are for OpenVINO ships an OpenVINO IR without --format; otherwise onnx."""
    pytest.importorskip("openvino")
    model = tavt_kit.load_checkpoint(ckpt)
    doc = search_doc(model)
    doc["latency"] = {"source": "table", "target": {"backend": "openvino", "device": "cpu", "batch_size": 1}}
    sj = tmp_path / "search.json"
    sj.write_text(json.dumps(doc))
    base = ["export", "--checkpoint", ckpt, "--search", str(sj), "--budget", "15ms", "--no-verify",
            "--exporter", "torchscript"]
    assert main(base + ["--out", str(tmp_path / "ov")]) == 0
    assert "formats onnx,openvino: the search's latency budgets are for openvino" in capsys.readouterr().out
    assert read(tmp_path / "ov" / "export.json")["formats"] == ["onnx", "openvino"]
    doc["latency"]["target"]["backend"] = "onnxruntime"
    sj.write_text(json.dumps(doc))
    assert main(base + ["--out", str(tmp_path / "ort")]) == 0
    assert read(tmp_path / "ort" / "export.json")["formats"] == ["onnx"]
    doc["latency"]["target"]["backend"] = "openvino"
    sj.write_text(json.dumps(doc))
    capsys.readouterr()
    assert main(base + ["--format", "onnx", "--out", str(tmp_path / "asked")]) == 0  # --format says otherwise
    assert "note: the search's latency budgets are for openvino; --format onnx writes no file for it" in \
        capsys.readouterr().out
    assert read(tmp_path / "asked" / "export.json")["formats"] == ["onnx"]
