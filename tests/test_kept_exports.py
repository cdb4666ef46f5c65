"""The latency tables a search profiles together share their exports: a second table of the same model in the same
folder exports nothing (parts and whole models); a model of another structure there exports its own."""
import pytest

import tavt_kit
from tavt_kit.bench import TimingPolicy, profile_latency
from tavt_kit.bench.kept_exports import exported_once, kept
from tavt_kit.target import DeploymentTarget

pytest.importorskip("onnxruntime")

QUICK = TimingPolicy(warmup=1, min_repeats=3, budget_s=0.05)
ORT = DeploymentTarget(backend="onnxruntime", threads=1)


def small(depth=2):
    return tavt_kit.create_model("vit_tiny_patch16_224", img_size=32, patch_size=8, embed_dim=32, depth=depth,
                                 num_heads=2, num_classes=3).eval()


def _profile(model, folder, said):
    return profile_latency(model, target=ORT, grid=[8, 16], policy=QUICK, workdir=str(folder), time_limit_s=5,
                           progress=said.append)


def test_a_second_table_in_the_same_folder_exports_nothing(tmp_path):
    first, second, other = [], [], []
    t1 = _profile(small(), tmp_path, first)
    assert any(m.startswith("exporting part") for m in first) and any("to ONNX" in m for m in first)
    t2 = _profile(small(), tmp_path, second)  # other weights, the same structure: its latency is the same
    assert not [m for m in second if m.startswith("exporting")], second
    assert set(t2.to_dict()["noise"]["points"]) == set(t1.to_dict()["noise"]["points"])
    _profile(small(depth=3), tmp_path, other)  # another structure re-exports every whole model
    assert any("to ONNX" in m for m in other)


def test_a_file_is_taken_only_under_its_own_key(tmp_path):
    path = str(tmp_path / "part.onnx")
    made = []

    def make():
        open(path, "w").write("x")
        made.append(1)
        return {"exporter": "dynamo"}

    assert exported_once(path, {"part": "a", "shape": (2, 3)}, make) == {"exporter": "dynamo"}
    assert exported_once(path, {"part": "a", "shape": [2, 3]}, make) == {"exporter": "dynamo"} and len(made) == 1
    assert kept(path, {"part": "b", "shape": [2, 3]}) is None
    exported_once(path, {"part": "b", "shape": [2, 3]}, make)
    assert len(made) == 2
    (tmp_path / "part.onnx.key.json").write_text("{not json")
    assert kept(path, {"part": "b", "shape": [2, 3]}) is None


def test_timings_beside_your_model_export_it_once(monkeypatch):
    from tavt_kit.export import onnx as onnx_mod
    from tavt_kit.schedules import TokenSchedule
    from tavt_kit.search.objective import LatencyObjective
    from tavt_kit.search.shares import ShareTimer

    model = small(depth=3)
    timer = ShareTimer(model, {"fp32": LatencyObjective.measured(model, ORT)}, log=lambda s: None, rounds=3)
    exported, original = [], onnx_mod.export_onnx

    def counting(m, path, schedule, **k):
        exported.append(list(getattr(schedule, "counts", schedule)))
        return original(m, path, schedule, **k)

    monkeypatch.setattr(onnx_mod, "export_onnx", counting)  # what the runners call where they export
    n = model.num_patches
    for counts in ([n, n // 2, n // 4], [n, n, n // 2]):
        assert timer.share(TokenSchedule(counts, n), "fp32").ratio > 0
    assert exported.count([n] * model.depth) == 1 and len(exported) == 3, exported  # your model once
