"""An exported file is named for what it holds and says the INFERENCE_PRECISION_HINT it is compiled with: the
bf16 export is the f32 IR with the bf16 hint (OpenVINO stores no bf16 weights), recorded per file in
export.json, said in one log line per file, and still found by the report; older export.json files read."""
import json
import os

import pytest
import torch

import tavt_kit
from tavt_kit.errors import ConfigError

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
ov = pytest.importorskip("openvino")

from tavt_kit.export import ExportOptions, ExportResult, VerifyOptions, export_model, load_verify_data  # noqa: E402
from tavt_kit.export import openvino as ov_mod  # noqa: E402
from tavt_kit.export.publish import choose_base  # noqa: E402
from tavt_kit.export.record import ExportRecord, hint_lines, inference_precision_hint, read_export  # noqa: E402
from tavt_kit.target import DeploymentTarget  # noqa: E402

DROP = [32, 16]  # fgvc_tiny at depth 2: 64 patch tokens
BF16_NAME = "model.f32-weights.bf16-hint.xml"
FAST = ExportOptions(exporter="torchscript")


def tiny():
    torch.manual_seed(0)
    return tavt_kit.create_model("fgvc_tiny", depth=2, num_classes=10).eval()


def _float_constants(xml):
    """The element types of an IR's floating-point constants."""
    m = ov.Core().read_model(str(xml))
    return {str(op.get_output_element_type(0)) for op in m.get_ops()
            if op.get_type_name() == "Constant" and op.get_output_element_type(0).is_real()}


def test_bf16_is_the_f32_ir_named_for_the_hint_it_needs_and_the_report_ships_it(tmp_path, monkeypatch):
    from test_report_trust import point, ship, write_search

    monkeypatch.setattr(ov_mod, "device_capabilities", lambda device="cpu": ("FP32", "BF16", "INT8"))
    model = tiny()
    ckpt = str(tmp_path / "tiny.safetensors")
    tavt_kit.save_checkpoint(model, ckpt, extra={"data": {"name": "demo"}})
    data = load_verify_data(model, "demo", max_images=16)
    given = VerifyOptions(data=(data.images, data.labels), max_accuracy_drop=10)
    out = tmp_path / "export"
    lines = []
    res = export_model(model, out, DROP, ("openvino",), target=DeploymentTarget(backend="openvino", precision="bf16"),
                       verify=given, options=FAST, log=lines.append)
    assert res.verified and res.doc["files"]["openvino"]["path"] == BF16_NAME
    assert (out / BF16_NAME).is_file() and (out / (BF16_NAME[:-4] + ".bin")).is_file()
    assert not list(out.glob("model.bf16.*"))
    assert _float_constants(out / BF16_NAME) == {"<Type: 'float32'>"}  # the weights are f32, as its name says
    # export.json: the hint per file (the export's entry and the artefact record), read back typed
    assert res.doc["exports"]["openvino"]["inference_precision_hint"] == "bf16"
    (art,) = res.doc["artefacts"]
    assert art["inference_precision_hint"] == "bf16" and art["precision"] == "bf16"
    assert ExportResult.load(out).inference_precision_hints == {"openvino": "bf16"}
    assert ExportResult.load(out).records[0].inference_precision_hint == "bf16"
    # the log says it in one line
    assert [s for s in lines if "INFERENCE_PRECISION_HINT" in s] == [
        f"{BF16_NAME}: compile with INFERENCE_PRECISION_HINT=bf16"]
    # an fp32 export of the same schedule into the same folder: model.xml with the f32 hint, both kept
    lines.clear()
    export_model(model, out, DROP, ("onnx", "openvino"), target=DeploymentTarget(backend="openvino"), verify=given,
                 options=FAST, log=lines.append)
    assert [s for s in lines if "INFERENCE_PRECISION_HINT" in s] == [
        "model.xml: compile with INFERENCE_PRECISION_HINT=f32"]
    recs = {r.path: r for r in ExportResult.load(out).records}
    assert {p: (r.precision, r.inference_precision_hint) for p, r in recs.items()} == {
        BF16_NAME: ("bf16", "bf16"), "model.xml": ("fp32", "f32"), "model.onnx": ("fp32", None)}
    # the report matches files by precision: a bf16 pick ships the bf16 file, an fp32 pick model.xml / model.onnx
    sp = write_search(str(tmp_path / "s"), model, ckpt, best=point(DROP, 2.0e7, 7.0, 0.90, precision="bf16"))
    rows, _, _ = ship(sp, tmp_path / "r", exports=[out / "export.json"])
    assert f"`../export/{BF16_NAME}` (openvino, bf16, verified" in rows["8ms"]
    sp = write_search(str(tmp_path / "s32"), model, ckpt)
    rows, _, _ = ship(sp, tmp_path / "r32", exports=[out / "export.json"])
    assert BF16_NAME not in rows["8ms"] and ("`../export/model.xml`" in rows["8ms"]
                                            or "`../export/model.onnx`" in rows["8ms"])


def _old_doc(artefacts, **top):
    return {"format": "fgvc-kit/export", "version": 2, "status": "verified", "verified": True,
            "created": "2024-01-01T00:00:00+00:00", "artefacts": artefacts, **top}


def test_an_older_export_json_without_hints_reads_them_from_format_and_precision(tmp_path):
    arts = [{"path": "model.bf16.xml", "weights": "model.bf16.bin", "format": "openvino", "precision": "bf16",
             "schedule": DROP, "verified": True, "status": "verified"},
            {"path": "model.int8.xml", "format": "openvino", "precision": "int8", "schedule": DROP},
            {"path": "model.fp16.xml", "format": "openvino", "precision": "fp16", "schedule": DROP},
            {"path": "model.onnx", "format": "onnx", "precision": "fp32", "schedule": DROP}]
    (tmp_path / "export.json").write_text(json.dumps(_old_doc(arts)))
    read_export(tmp_path / "export.json")  # no hint recorded: still a valid file
    hints = {r.path: r.inference_precision_hint for r in ExportResult.load(tmp_path).records}
    assert hints == {"model.bf16.xml": "bf16", "model.int8.xml": "f32", "model.fp16.xml": "f16", "model.onnx": None}
    # a new bf16 export beside the old file takes the new name; the old record stays as it was
    assert choose_base(str(tmp_path), "bf16", DROP) == BF16_NAME[:-4]
    assert choose_base(str(tmp_path), "int8", DROP) == "model.int8"
    assert ExportRecord.from_dict({"path": "x.xml", "format": "openvino"}).inference_precision_hint is None


def test_a_recorded_hint_is_checked_and_kept():
    assert [inference_precision_hint("openvino", p) for p in ("fp32", "bf16", "fp16", "int8")] == [
        "f32", "bf16", "f16", "f32"]
    assert inference_precision_hint("onnx", "int8") is None and inference_precision_hint("openvino", "int4") is None
    rec = ExportRecord.from_dict({"path": "m.xml", "format": "openvino", "precision": "bf16",
                                  "inference_precision_hint": "f32"})
    assert rec.inference_precision_hint == "f32"  # what the file says wins over what its precision implies
    doc = _old_doc([{"path": "m.xml", "format": "openvino", "precision": "bf16", "inference_precision_hint": "fp64"}])
    from tavt_kit.export.record import validate_export

    with pytest.raises(ConfigError, match=r"artefacts\[0\]\.inference_precision_hint"):
        validate_export(doc, "export.json")
    int8 = {"files": {"openvino": {"path": "model.int8.xml"}, "onnx": {"path": "model.int8.onnx"}},
            "exports": {"openvino": {"precision": "int8"}, "onnx": {"precision": "int8"}}, "precision": "int8"}
    assert hint_lines(int8) == ["model.int8.xml: compile with INFERENCE_PRECISION_HINT=f32"]


def test_readme_deploy_snippet_gives_each_precision_its_hint():
    """The deployment snippet (README's user guide on export, docs/guides/export.md) compiles each file with its
    hint, and no document names the bf16 file by a name the export does not write."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    readme = open(os.path.join(root, "README.md"), encoding="utf-8").read()
    text = open(os.path.join(root, "docs", "guides", "export.md"), encoding="utf-8").read()
    start = text.index("## Deploying the OpenVINO model")
    end = text.find("\n## ", start + 1)
    section = text[start:end if end >= 0 else len(text)]
    assert "model.bf16.xml" not in text and "model.bf16.xml" not in readme
    for name, hint in (("model.xml", "f32"), (BF16_NAME, "bf16"), ("model.int8.xml", "f32")):
        assert f'"runs/edge/{name}", "CPU", {{"INFERENCE_PRECISION_HINT": "{hint}"}}' in section, name
