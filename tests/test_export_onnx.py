import json

import numpy as np
import pytest
import torch

import tavt_kit
from tavt_kit.errors import ConfigError, ExportError, TavtKitError

from conftest import TINY, perturb

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from tavt_kit.export.onnx import (check_exported_matches, export_onnx, ort_session,  # noqa: E402
                                  read_onnx_info)

SCHED = [56, 40, 24]


def tiny(scorer="tavt", fuse=False, **kw):
    args = dict(TINY, num_classes=7)
    args.update(kw)
    return perturb(tavt_kit.create_model("vit_tiny_patch16_224", scorer=scorer, fuse=fuse, **args)).eval()


def ort_logits(path, x):
    sess = ort_session(path)
    return sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0]


@pytest.mark.parametrize("scorer, fuse", [("tavt", False), ("cls", False), ("tavt", True), ("tavt-sampled", False)])
def test_export_matches_pytorch_with_dynamic_batch(tmp_path, scorer, fuse):
    model = tiny(scorer, fuse)
    res = export_onnx(model, tmp_path / "m.onnx", SCHED)
    assert res.exporter == "torchscript" and res.fallback_reason is None
    assert res.max_abs_diff is not None and res.max_abs_diff <= 1e-4
    assert res.checked_batches == [1, 2] and res.schedule == SCHED
    assert res.input_shape == ["batch", 3, 64, 64] and res.output_shape == ["batch", 7]
    onnx.checker.check_model(str(tmp_path / "m.onnx"))
    # the schedule is fixed in the graph, the batch is not
    x = torch.randn(3, 3, 64, 64)
    with torch.no_grad():
        ref = model(x, drop=SCHED).numpy()
    assert np.abs(ort_logits(res.path, x) - ref).max() <= 1e-4
    with torch.no_grad():
        full = model(x).numpy()
    assert np.abs(ort_logits(res.path, x) - full).max() > 1e-3  # not the full model
    assert model.schedule is None  # restored
    json.dumps(res.to_dict())


def test_torchscript_exporter_and_metadata(tmp_path):
    model = tiny()
    model.schedule = [64, 48, 48]
    res = export_onnx(model, tmp_path / "m.onnx", exporter="torchscript", batch_size=2)
    assert res.exporter == "torchscript" and res.schedule == [64, 48, 48] and res.checked_batches == [2, 3]
    assert res.max_abs_diff <= 1e-4
    assert model.schedule.counts == (64, 48, 48)
    info = read_onnx_info(res.path)
    assert info.img_size == [64, 64] and info.num_classes == 7 and info.schedule == [64, 48, 48]
    assert info.exporter == "torchscript" and info.spec["depth"] == 3 and info.spec["token_drop"]["scorer"] == "tavt"
    full = export_onnx(tiny(), tmp_path / "full.onnx", exporter="torchscript")
    assert full.schedule == [64, 64, 64]


def test_falls_back_to_dynamo_when_torchscript_fails(tmp_path, monkeypatch):
    import tavt_kit.export.onnx as mod

    real = mod._export_once

    def broken(module, example, path, exporter, *a, **kw):
        if exporter == "torchscript":  # e.g. a PyTorch that no longer ships the TorchScript exporter
            raise RuntimeError("simulated torchscript failure\nmore text")
        return real(module, example, path, exporter, *a, **kw)

    monkeypatch.setattr(mod, "_export_once", broken)
    res = export_onnx(tiny(), tmp_path / "m.onnx", SCHED)
    assert res.exporter == "dynamo"
    assert "torchscript exporter failed" in res.fallback_reason and "simulated" in res.fallback_reason
    assert "more text" not in res.fallback_reason
    assert res.max_abs_diff <= 1e-4
    with pytest.raises(ExportError, match="export failed"):
        export_onnx(tiny(), tmp_path / "m2.onnx", SCHED, exporter="torchscript")


def test_a_torchscript_graph_that_disagrees_with_pytorch_falls_back_to_dynamo(tmp_path, monkeypatch):
    import tavt_kit.export.onnx as mod

    real = mod._ort_max_diff
    calls = []

    def diff(path, module, inputs):
        calls.append(path)
        return (1.0, 0.5) if len(calls) == 1 else real(path, module, inputs)  # TorchScript's graph is wrong

    monkeypatch.setattr(mod, "_ort_max_diff", diff)
    res = export_onnx(tiny(), tmp_path / "m.onnx", SCHED)
    assert res.exporter == "dynamo" and "torchscript export differs from PyTorch by 1" in res.fallback_reason
    assert res.max_abs_diff <= 1e-4


def test_export_that_disagrees_with_pytorch_is_an_error(tmp_path):
    with pytest.raises(ExportError, match="differs from PyTorch"):
        export_onnx(tiny(), tmp_path / "m.onnx", SCHED, exporter="torchscript", atol=-1.0)


def test_the_tolerance_scales_with_logits_above_one(tmp_path, monkeypatch):
    """float32 rounding grows with the logits: a supernet with logits near 10 that merges down to one token
    exported 1.7e-4 from PyTorch, and the table profile it served stopped there."""
    import tavt_kit.export.onnx as mod

    monkeypatch.setattr(mod, "_ort_max_diff", lambda path, module, inputs: (1.7e-4, 10.0))
    assert export_onnx(tiny(), tmp_path / "a.onnx", SCHED, exporter="torchscript").max_abs_diff == 1.7e-4
    monkeypatch.setattr(mod, "_ort_max_diff", lambda path, module, inputs: (1.7e-3, 10.0))
    with pytest.raises(ExportError, match=r"by 0\.0017 \(> 0\.0001 x the largest logit, 10\)"):
        export_onnx(tiny(), tmp_path / "b.onnx", SCHED, exporter="torchscript")
    monkeypatch.setattr(mod, "_ort_max_diff", lambda path, module, inputs: (1.7e-4, 0.5))
    with pytest.raises(ExportError, match=r"by 0\.00017 \(> 0\.0001\)"):  # small logits: atol itself
        export_onnx(tiny(), tmp_path / "c.onnx", SCHED, exporter="torchscript")


def test_bad_arguments(tmp_path):
    with pytest.raises(ConfigError, match="token-drop model"):
        export_onnx(torch.nn.Linear(2, 2), tmp_path / "m.onnx")
    with pytest.raises(ConfigError, match="unknown exporter"):
        export_onnx(tiny(), tmp_path / "m.onnx", exporter="nope")
    with pytest.raises(TavtKitError, match="increases"):
        export_onnx(tiny(), tmp_path / "m.onnx", [10, 20, 30])


def test_exported_file_must_match_checkpoint(tmp_path):
    model = tiny()
    res = export_onnx(model, tmp_path / "m.onnx", SCHED, exporter="torchscript")
    info = read_onnx_info(res.path)
    check_exported_matches(info, tavt_kit.spec_of(model))
    other = tavt_kit.spec_of(tiny(img_size=32))
    with pytest.raises(ExportError, match="takes 64x64 images, the checkpoint 32x32"):
        check_exported_matches(info, other)
    with pytest.raises(ExportError, match="outputs 7 classes, the checkpoint has 3"):
        check_exported_matches(info, tavt_kit.spec_of(tiny(num_classes=3)))
    with pytest.raises(ExportError, match="not found"):
        read_onnx_info(tmp_path / "missing.onnx")


def test_openvino_conversion_is_f32(tmp_path):
    ov = pytest.importorskip("openvino")
    from tavt_kit.export.openvino import (PRECISIONS, compile_openvino, convert_openvino, inference_precision,
                                          read_openvino_info)

    model = tiny(fuse=True)
    conv = convert_openvino(model, tmp_path / "ov" / "m.xml", schedule=SCHED, batch_size=2, exporter="torchscript")
    assert conv.precision_checked == "f32" and conv.reference == "pytorch" and conv.max_abs_diff <= 1e-4
    assert conv.onnx_export["schedule"] == SCHED and not conv.compress_to_fp16
    info = read_openvino_info(conv.xml_path)
    assert info.img_size == [64, 64] and info.num_classes == 7 and info.schedule == SCHED
    compiled, used = compile_openvino(conv.xml_path)  # f32 unless asked otherwise
    assert used == "f32" == inference_precision(compiled)
    x = torch.randn(3, 3, 64, 64)
    with torch.no_grad():
        ref = model(x, drop=SCHED).numpy()
    assert np.abs(compiled(x.numpy())[compiled.output(0)] - ref).max() <= 1e-4
    _, low = compile_openvino(conv.xml_path, precision="bf16")
    assert low in PRECISIONS  # bf16 where the CPU has it, else what OpenVINO fell back to
    # from an ONNX file: compared with ONNX Runtime
    res = export_onnx(model, tmp_path / "m.onnx", SCHED, exporter="torchscript")
    conv2 = convert_openvino(res.path, tmp_path / "m2.xml")
    assert conv2.reference == "onnxruntime" and conv2.max_abs_diff <= 1e-4
    with pytest.raises(ConfigError, match="must end in .xml"):
        convert_openvino(res.path, tmp_path / "m.bin")
    with pytest.raises(TavtKitError, match="CUDA"):
        compile_openvino(conv.xml_path, device="cuda")


def test_graph_token_counts_reads_both_exporters_and_says_when_it_cannot_tell(tmp_path, monkeypatch):
    from tavt_kit.errors import BackendError
    from tavt_kit.export import graph_token_counts

    pytest.importorskip("openvino")
    paths = {ex: export_onnx(tiny(), tmp_path / f"{ex}.onnx", SCHED, exporter=ex).path
             for ex in ("torchscript", "dynamo")}
    width = tiny().embed_dim
    counts = {ex: graph_token_counts(p, width) for ex, p in paths.items()}
    assert counts["torchscript"] == counts["dynamo"] and {n + 1 for n in SCHED} <= set(counts["dynamo"])

    import tavt_kit.export.openvino as ov

    def missing():
        raise BackendError("openvino is not installed")

    monkeypatch.setattr(ov, "core", missing)
    # without OpenVINO, ONNX's shape inference knows the dynamo graph's lengths, not TorchScript's: None, not a guess
    assert graph_token_counts(paths["dynamo"], width) == counts["dynamo"]
    assert graph_token_counts(paths["torchscript"], width) is None


@pytest.mark.parametrize("reducer", ["drop", "merge"])
def test_kept_and_merged_tokens_are_gathered_as_whole_rows(tmp_path, reducer):
    """Tokens are picked with one row Gather, not an index broadcast to every channel and an element-wise
    gather (on OpenVINO those two cost about a sixth of a dropping model's batch-1 call), with equal values,
    at any batch size the graph is run with."""
    from tavt_kit.models.rows import take_rows

    x, idx = torch.randn(3, 10, 4), torch.tensor([[0, 9, 3], [2, 2, 5], [7, 1, 0]])
    assert torch.equal(take_rows(x, idx), x.gather(1, idx[..., None].expand(-1, -1, 4)))
    model = tiny(reducer="merge") if reducer == "merge" else tiny()
    res = export_onnx(model, tmp_path / "m.onnx", tavt_kit.TokenSchedule(tuple(SCHED), 64, reducers=(reducer,) * 3))
    assert res.max_abs_diff <= 1e-4 and res.checked_batches == [1, 2]
    nodes = onnx.load(res.path).graph.node
    made_by = {o: n.op_type for n in nodes for o in n.output}
    # index gathers of scores and positions stay; none gathers tokens through a broadcast index
    assert not [n for n in nodes if n.op_type == "GatherElements" and made_by.get(n.input[1]) == "Expand"]
