"""Export precisions: int8 with NNCF's accuracy control, ``--precision auto``, and the precisions refused here.

A small trained model (``trained_checkpoint``: ~85 % top-1 on the demo digits) so that accuracy bounds are real.
"""
import json
import os
import sys

import numpy as np
import pytest
import torch

import tavt_kit
import tavt_kit.export.openvino as ov_mod
from tavt_kit.bench import TimingPolicy, export_fastest
from tavt_kit.bench.fastest_export import precision_availability
from tavt_kit.cli import main
from tavt_kit.errors import BackendError, ConfigError, ExportError
from tavt_kit.target import DeploymentTarget
from tavt_kit.export import ExportOptions, QuantizeOptions, VerifyOptions, export_model, load_verify_data
from tavt_kit.export.quantize import (calibration_images, held_out_images, quantize_openvino, quantized_op_inputs,
                                      reverted_operations)

pytest.importorskip("openvino")
pytest.importorskip("nncf")

SCHED = [32, 16]  # 64 patch tokens, 2 blocks
TORCHSCRIPT = ExportOptions(exporter="torchscript")
INT8 = DeploymentTarget(precision="int8")
FAST = TimingPolicy(warmup=1, min_repeats=3, max_repeats=30, budget_s=0.05, rel_ci=0.05)
NO_BF16 = ("FP32", "INT8", "BIN", "EXPORT_IMPORT")  # a CPU with neither BF16 nor FP16

pytestmark = pytest.mark.nncf


def read(path):
    with open(path) as f:
        return json.load(f)


def _err(capsys):
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


@pytest.fixture(scope="module")
def model(trained_checkpoint):
    return tavt_kit.load_checkpoint(trained_checkpoint).eval()


# ------------------------------------------------------------------ int8 with accuracy control
def test_int8_openvino_with_accuracy_control_is_verified_and_records_what_it_kept(tmp_path, model,
                                                                                trained_checkpoint):
    res = export_model(model, tmp_path / "out", SCHED, ("openvino",), target=INT8,
                       verify=VerifyOptions(images=200, max_accuracy_drop=3),
                       quantize=QuantizeOptions(calibration_images=100),
                       options=ExportOptions(exporter="torchscript", checkpoint=trained_checkpoint))
    doc = res.doc
    assert res.verified and doc["status"] == "verified"
    assert doc["files"]["openvino"]["path"] == "model.int8.xml" and os.path.isfile(res.path("openvino"))
    q = doc["exports"]["openvino"]["quantization"]
    held = load_verify_data(model, "demo", split="holdout")
    assert q["mode"] == "accuracy_control" and q["reason"] is None and q["max_accuracy_drop"] == 3
    assert q["validation"]["split"] == "holdout" and q["validation"]["dataset"] == "demo"
    assert q["validation"]["images"] == len(held) > 0
    assert doc["calibration"]["split"] == "train" and doc["calibration"]["images"] == 100
    assert isinstance(q["kept_in_higher_precision"], list) and q["quantized_layers"] > 0
    assert q["quantized_layers"] == q["quantized_layers_ptq"] - len(q["kept_in_higher_precision"])
    # the f32 figure is the model's real held-out accuracy (PyTorch at the schedule agrees)
    with torch.no_grad():
        x = torch.cat([model.eval()(b, drop=SCHED) for b in
                       tavt_kit.export.verify.normalized_batches(model, held.images, 64)])
    torch_top1 = 100.0 * float((x.argmax(1) == held.labels).float().mean())
    assert abs(q["f32_accuracy"] - torch_top1) <= 100.0 / len(held) + 1e-9 and torch_top1 > 70
    assert q["drop_met"] and q["f32_accuracy"] - q["int8_accuracy"] <= 3 + 1e-9
    # verified on the test split: int8 within the bound of PyTorch fp32, a trained model's accuracy
    v = res.verification["openvino"]
    assert v.passed and v.precision_used == "int8+fp32" and v.images == 200 and v.precision == "int8"
    assert v.accuracy_torch > 70 and v.accuracy_torch - v.accuracy_exported <= 3
    assert "nncf" in doc["versions"] and doc["checkpoint"]["path"] == trained_checkpoint


def test_accuracy_control_reverts_the_layers_that_cost_accuracy(tmp_path, model):
    """Calibration on images scaled down to 30 % clips every activation range: plain PTQ loses most of the
    accuracy, and accuracy control has to keep layers in float to come back within 2 points."""
    from tavt_kit.export.onnx import export_onnx

    onnx_path = export_onnx(model, tmp_path / "m.onnx", SCHED, exporter="torchscript").path
    calib = 0.3 * calibration_images(model, n=100)
    x, y, info = held_out_images(model)
    ptq = quantize_openvino(onnx_path, tmp_path / "ptq.xml", calib)
    ac = quantize_openvino(onnx_path, tmp_path / "ac.xml", calib, validation=(x, y), max_accuracy_drop=2,
                           validation_info=info)
    assert ptq.mode == "ptq" and ac.mode == "accuracy_control" and ac.validation["images"] == len(y)
    assert ac.ptq_accuracy < ac.f32_accuracy - 2  # plain PTQ breaks the model ...
    assert ac.kept_in_higher_precision  # ... so layers were kept in float
    assert ac.drop_met and ac.int8_accuracy >= ac.f32_accuracy - 2  # ... until the drop is within bounds
    # the layers are the model's operations, quantised by plain PTQ and not in the file written
    quantized = quantized_op_inputs(tmp_path / "ac.xml")
    assert set(ac.kept_in_higher_precision) <= set(quantized_op_inputs(tmp_path / "ptq.xml"))
    assert not set(ac.kept_in_higher_precision) & set(quantized)
    assert reverted_operations(tmp_path / "ptq.xml", tmp_path / "ac.xml") == ac.kept_in_higher_precision


def test_reverted_operations_on_a_hand_made_pair():
    """Bookkeeping: an op loses its FakeQuantize / int8 weights in the second model -> listed, others not."""
    import openvino as ov
    import openvino.opset13 as ops

    def build(quantize_a: bool):
        x = ops.parameter([1, 4], np.float32, name="x")

        def fq(node):
            lo, hi = ops.constant(np.float32(-4)), ops.constant(np.float32(4))
            return ops.fake_quantize(node, lo, hi, lo, hi, 256)

        w = ops.constant(np.ones((4, 4), np.float32))
        a = ops.matmul(fq(x) if quantize_a else x, fq(w) if quantize_a else w, False, True, name="A")
        wq = ops.multiply(ops.convert(ops.constant(np.ones((4, 4), np.int8)), "f32"),
                          ops.constant(np.float32(0.5)))  # int8 weights, decompressed
        b = ops.matmul(fq(a), wq, False, True, name="B")
        return ov.Model([ops.result(b)], [x], "pair")

    both, only_b = build(True), build(False)
    assert quantized_op_inputs(both) == {"A": (0, 1), "B": (0, 1)}
    assert quantized_op_inputs(only_b) == {"B": (0, 1)}
    assert reverted_operations(both, only_b) == ["A"] and reverted_operations(only_b, both) == []


def test_without_a_held_out_split_int8_falls_back_to_ptq_and_says_why(tmp_path, model):
    from tavt_kit.data import DataSpec

    res = export_model(model, tmp_path / "out", SCHED, ("onnx",), target=INT8,
                       verify=VerifyOptions(data=DataSpec("demo", holdout=0.0), images=200, max_accuracy_drop=3),
                       quantize=QuantizeOptions(calibration_images=50), options=TORCHSCRIPT)
    q = res.doc["exports"]["onnx"]["quantization"]
    assert res.verified and q["mode"] == "ptq" and "no held-out" in q["reason"] and "holdout" in q["reason"]
    assert q["kept_in_higher_precision"] is None and q["validation"] is None


# ---------------------------------------------------------------------------- --precision auto
def test_auto_keeps_the_fastest_precision_that_passes(tmp_path, trained_checkpoint, monkeypatch, capsys):
    monkeypatch.setattr(ov_mod, "device_capabilities", lambda device="cpu": NO_BF16)
    out = tmp_path / "out"
    rc = main(["export", "--checkpoint", trained_checkpoint, "--drop", "32,16", "--format", "openvino",
               "--precision", "auto", "--verify-images", "200", "--max-accuracy-drop", "3",
               "--calibration-images", "100", "--exporter", "torchscript", "--out", str(out)])
    text = capsys.readouterr().out
    assert rc == 0 and "chosen for openvino" in text
    doc = read(out / "export.json")
    auto = doc["auto"]
    attempts = {a["precision"]: a for a in auto["attempts"]}
    assert [a["precision"] for a in auto["attempts"]] == ["fp32", "bf16", "fp16", "int8"]
    assert all(a["format"] == "openvino" for a in auto["attempts"])
    for p in ("bf16", "fp16"):
        a = attempts[p]
        assert a["status"] == "skipped" and not a["passed"] and a["latency_ms"] is None
        assert a["reason"].startswith(f"skipped: this CPU has no native {p}")
    measured = [attempts["fp32"], attempts["int8"]]
    for a in measured:
        assert a["passed"] and a["latency_ms"] > 0 and a["batch_size"] == 1 and a["threads"] >= 1
        assert a["accuracy"] is not None and a["agreement"] > 0.9 and a["max_abs_logit_diff"] is not None
    assert attempts["int8"]["precision_used"] == "int8+fp32"
    # timed round-robin in one process, after every precision was exported
    assert attempts["fp32"]["latency_repeats"] >= 1 and attempts["int8"]["latency_repeats"] >= 1
    assert "round-robin" in auto["latency"]["measured_with"]
    best = min(measured, key=lambda a: a["latency_ms"])
    chosen = auto["chosen"]["openvino"]
    assert best["status"] == "chosen" and chosen["precision"] == best["precision"] == doc["precision"]
    assert chosen["speedup_over_fp32"] == pytest.approx(attempts["fp32"]["latency_ms"] / best["latency_ms"])
    assert auto["latency"]["batch_size"] == 1 and auto["latency"]["statistic"] == "median"
    # the chosen files are what --out holds, named as a plain export at that precision
    name = {"fp32": "model.xml", "int8": "model.int8.xml"}[best["precision"]]
    assert doc["files"]["openvino"]["path"] == name == chosen["file"] == best["file"]
    assert os.path.isfile(out / name) and os.path.isfile(out / (name[:-4] + ".bin"))
    assert sorted(os.listdir(out)) == sorted(["export.json", name, name[:-4] + ".bin"])
    assert doc["verified"] and doc["verification"]["results"]["openvino"]["passed"]
    assert [r["path"] for r in doc["artefacts"]] == [name]
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".")]  # no temporary folders left


def test_auto_chooses_per_format_and_records_each_file(tmp_path, model, monkeypatch):
    monkeypatch.setattr(ov_mod, "device_capabilities", lambda device="cpu": ("FP32", "BF16", "INT8"))
    res = export_fastest(model, tmp_path / "out", SCHED, ("onnx", "openvino"), precisions=("fp32", "bf16"),
                         target=DeploymentTarget(batch_size=2), verify=VerifyOptions(images=64, max_accuracy_drop=3),
                         options=TORCHSCRIPT, policy=FAST)
    doc = res.doc
    tried = [(a["format"], a["precision"], a["status"]) for a in doc["auto"]["attempts"]]
    assert tried[0][:2] == ("onnx", "fp32") and tried[1][:2] == ("openvino", "fp32")
    assert tried[2] == ("onnx", "bf16", "skipped") and tried[3][:2] == ("openvino", "bf16")
    assert all(a["batch_size"] == 2 for a in doc["auto"]["attempts"] if a["latency_ms"] is not None)
    assert doc["auto"]["chosen"]["onnx"]["precision"] == "fp32"  # the only one ONNX takes of these
    ov_pick = doc["auto"]["chosen"]["openvino"]["precision"]
    ov_times = {a["precision"]: a["latency_ms"] for a in doc["auto"]["attempts"] if a["format"] == "openvino"}
    assert ov_times[ov_pick] == min(ov_times.values())
    assert doc["precision"] == ("fp32" if ov_pick == "fp32" else "auto")
    names = {"onnx": "model.onnx", "openvino": "model.xml" if ov_pick == "fp32" else "model.f32-weights.bf16-hint.xml"}
    for fmt, name in names.items():
        assert doc["files"][fmt]["path"] == name and os.path.isfile(tmp_path / "out" / name)
        assert doc["exports"][fmt]["precision"] == doc["auto"]["chosen"][fmt]["precision"]
    assert {r["path"]: r["precision"] for r in doc["artefacts"]} == {
        names["onnx"]: "fp32", names["openvino"]: ov_pick}
    assert {r["path"]: r["inference_precision_hint"] for r in doc["artefacts"]} == {
        names["onnx"]: None, names["openvino"]: {"fp32": "f32", "bf16": "bf16"}[ov_pick]}
    assert doc["verified"] and set(res.verification) == {"onnx", "openvino"}
    assert res.precisions == {"onnx": "fp32", "openvino": ov_pick}


def test_auto_fails_naming_every_precision_when_none_passes(tmp_path, model, monkeypatch):
    from tavt_kit.export.verify import ExportedRunner

    monkeypatch.setattr(ov_mod, "device_capabilities", lambda device="cpu": NO_BF16)

    def wrong(self, x):  # every exported file answers class 0
        out = np.zeros((x.shape[0], 10), np.float32)
        out[:, 0] = 1.0
        return out

    monkeypatch.setattr(ExportedRunner, "__call__", wrong)
    out = tmp_path / "out"
    with pytest.raises(ExportError) as e:
        export_fastest(model, out, SCHED, ("openvino",), precisions=("fp32", "bf16", "int8"),
                       verify=VerifyOptions(images=64), options=TORCHSCRIPT, policy=FAST,
                       quantize=QuantizeOptions(calibration_images=20, accuracy_control=False))
    msg = str(e.value)
    assert len(msg.splitlines()) == 1 and msg.startswith("export_fastest(): no precision passed verification")
    assert "fp32 verification failed: top-1 drops" in msg and "int8 verification failed" in msg
    assert "bf16 skipped: this CPU has no native bf16" in msg
    doc = read(out / "export.json")
    assert doc["status"] == "failed" and doc["verified"] is False and doc["files"] == {}
    assert doc["reason"].startswith("--precision auto: no precision passed verification")  # as export.json always said
    assert [a["status"] for a in doc["auto"]["attempts"]] == ["failed", "skipped", "failed"]
    assert all(a["latency_ms"] > 0 for a in doc["auto"]["attempts"] if a["status"] == "failed")
    assert os.listdir(out) == ["export.json"]
    # failing again there keeps the record and appends the attempt, with what each precision did
    with pytest.raises(ExportError):
        export_fastest(model, out, SCHED, ("openvino",), precisions=("fp32",), verify=VerifyOptions(images=64),
                       options=TORCHSCRIPT, policy=FAST)
    again = read(out / "export.json")
    assert {k: again[k] for k in ("status", "reason", "auto")} == {k: doc[k] for k in ("status", "reason", "auto")}
    (attempt,) = again["failed_attempts"]
    assert attempt["precision"] == "auto" and attempt["formats"] == ["openvino"]
    assert attempt["reason"].startswith("--precision auto: no precision passed verification")
    assert [a["status"] for a in attempt["auto"]["attempts"]] == ["failed"]


def test_precisions_available_here(monkeypatch):
    monkeypatch.setattr(ov_mod, "device_capabilities", lambda device="cpu": ("FP32", "BF16", "INT8"))
    assert precision_availability("openvino") == [
        ("fp32", None), ("bf16", None),
        ("fp16", "skipped: this CPU has no native fp16 (OpenVINO reports FP32, BF16, INT8)"), ("int8", None)]
    assert precision_availability("onnx") == [
        ("fp32", None), ("bf16", "skipped: onnx has no bf16 export (it takes fp32, fp16, int8)"), ("fp16", None),
        ("int8", None)]
    monkeypatch.setitem(sys.modules, "nncf", None)
    assert dict(precision_availability("onnx"))["int8"].startswith("skipped: nncf not installed")


# ------------------------------------------------------------------------------- bad input
def test_calibration_on_the_test_split_is_refused(tmp_path, model, trained_checkpoint, capsys):
    with pytest.raises(ConfigError, match="split='test': int8 calibration must not see the test split"):
        calibration_images(model, split="test")
    with pytest.raises(ConfigError, match="quantize.calibration_split='test'"):
        export_model(model, tmp_path / "api", target=INT8, quantize=QuantizeOptions(calibration_split="test"))
    assert not os.path.exists(tmp_path / "api")
    assert main(["export", "--checkpoint", trained_checkpoint, "--precision", "int8", "--calibration-split", "test",
                 "--out", str(tmp_path / "cli")]) == 2
    err = _err(capsys)
    assert "--calibration-split test" in err and "verification measures" in err
    assert main(["export", "--checkpoint", trained_checkpoint, "--precision", "auto", "--no-verify",
                 "--out", str(tmp_path / "cli")]) == 2
    assert "--precision auto" in _err(capsys) and not os.path.exists(tmp_path / "cli")
    with pytest.raises(ConfigError, match=r"export_fastest\(\) keeps the fastest .* verify\.enabled=False"):
        export_fastest(model, tmp_path / "api", verify=VerifyOptions(enabled=False))


def test_bf16_and_fp16_refused_on_a_cpu_without_them(tmp_path, trained_checkpoint, monkeypatch, capsys):
    monkeypatch.setattr(ov_mod, "device_capabilities", lambda device="cpu": NO_BF16)
    base = ["export", "--checkpoint", trained_checkpoint, "--format", "openvino", "--out", str(tmp_path / "o")]
    for p in ("bf16", "fp16"):
        assert main(base + ["--precision", p]) == 2
        err = _err(capsys)
        assert f"--precision {p}: this CPU has no native {p} inference" in err and "FP32, INT8" in err
        assert f"record it as {p}" in err
    assert not os.path.exists(tmp_path / "o")
    bf16 = DeploymentTarget(backend="openvino", precision="bf16")  # its format: openvino
    with pytest.raises(BackendError, match=r"^precision='bf16': this CPU has no native bf16 .* verify\.enabled=False"):
        export_model(trained_checkpoint, tmp_path / "api", target=bf16)
    # with the capability, the same request goes through to the export
    monkeypatch.setattr(ov_mod, "device_capabilities", lambda device="cpu": ("FP32", "BF16", "INT8"))
    res = export_model(trained_checkpoint, tmp_path / "api", SCHED, target=bf16, options=TORCHSCRIPT,
                       verify=VerifyOptions(images=64, max_accuracy_drop=3))
    assert res.verified and res.formats == ("openvino",) and res.verification["openvino"].precision_used in (
        "bf16", "fp32")


def test_int8_without_nncf_names_the_package(tmp_path, model, monkeypatch, capsys, trained_checkpoint):
    monkeypatch.setitem(sys.modules, "nncf", None)
    with pytest.raises(BackendError, match=r"^precision='int8' needs NNCF.*pip install nncf"):
        export_model(model, tmp_path / "o", target=INT8)
    with pytest.raises(BackendError, match="pip install nncf"):
        quantize_openvino(tmp_path / "m.onnx", tmp_path / "m.xml", np.zeros((1, 3, 32, 32), np.float32))
    assert main(["export", "--checkpoint", trained_checkpoint, "--precision", "int8", "--out",
                 str(tmp_path / "o")]) == 2
    assert "nncf" in _err(capsys)
    assert not os.path.exists(tmp_path / "o")
