"""measure_files: exported files timed round-robin in one process (what export --precision auto compares)."""
import pytest
import torch

import tavt_kit
from tavt_kit.bench import TimingPolicy, measure_files
from tavt_kit.errors import ConfigError
from tavt_kit.target import DeploymentTarget

from conftest import TINY

pytest.importorskip("onnxruntime")
pytestmark = pytest.mark.usefixtures("one_thread")

FAST = TimingPolicy(warmup=1, min_repeats=3, max_repeats=5, budget_s=0.2)


def test_files_of_both_runtimes_timed_in_one_round_robin(tmp_path):
    from tavt_kit.export.onnx import export_onnx

    torch.manual_seed(0)
    model = tavt_kit.create_model("vit_tiny_patch16_224", **dict(TINY, num_classes=5)).eval()
    full = export_onnx(model, tmp_path / "full.onnx", None).path
    dropped = export_onnx(model, tmp_path / "drop.onnx", [48, 32, 16]).path
    ort = DeploymentTarget(backend="onnxruntime", threads=1, batch_size=2)
    files = {"full": full, "drop": dropped}  # on target=
    try:
        import openvino  # noqa: F401

        files["openvino"] = (full, ort.with_(backend="openvino"))  # a file on its own target
    except ImportError:
        pass
    img = (TINY["img_size"], TINY["img_size"])
    out = measure_files(files, img, target=ort, policy=FAST)
    assert set(out) == set(files)
    for stats, info in out.values():
        assert 3 <= stats.n <= 5 and stats.p50 > 0 and info["threads"] == 1
    with pytest.raises(ConfigError, match="backend=torch: .* is an exported file"):
        measure_files({"x": (full, ort.with_(backend="torch"))}, img)
    with pytest.raises(ConfigError, match="names no target"):
        measure_files({"x": full}, img)
