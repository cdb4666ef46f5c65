"""A split too small to tell accuracies apart is said in one warning line, with its size and the interval it
leaves: the held-out split a search chooses by (and a --subset of it), int8 accuracy control's held-out images
and the verification of a lower-precision export; a split of 200 images or more says nothing."""
import pytest
import torch

import tavt_kit
from tavt_kit.data import DataSpec
from tavt_kit.data.splits import (ADVISED_SPLIT_IMAGES, SMALL_SPLIT_IMAGES, accuracy_half_width, holdout_advice,
                                  small_split_warning)
from tavt_kit.search.data import EvalSet, search_data, take_subset

pytestmark = pytest.mark.usefixtures("one_thread")


def images(n, size=32, classes=4, seed=1):
    g = torch.Generator().manual_seed(seed)
    return (torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=g),
            torch.randint(0, classes, (n,), generator=g))


def warnings_in(lines):
    return [s for s in lines if s.startswith("warning:") or s.lstrip().startswith("warning:")]


# ------------------------------------------------------------------ the line
def test_the_line_says_the_size_and_the_interval_it_leaves():
    line = small_split_warning(3)
    assert line.startswith("held-out split has 3 images: accuracy differences below ±34 points cannot be told "
                           "apart") and f"at least {ADVISED_SPLIT_IMAGES} images (--holdout)" in line
    assert "\n" not in line and "±4.2 points" in small_split_warning(SMALL_SPLIT_IMAGES - 1)
    assert small_split_warning(SMALL_SPLIT_IMAGES) is None and small_split_warning(5000) is None
    assert "1 image:" in small_split_warning(1)
    assert accuracy_half_width(500) == pytest.approx(2.63, abs=0.01)
    line.encode("cp1252")  # a Windows console prints it (no character outside its code page)
    # the option that makes the held-out split larger: a fraction of train, or a dataset's own split's size
    assert holdout_advice(DataSpec("demo")) == "--holdout FRACTION"
    assert holdout_advice(DataSpec("cluttered-digits")) == "--dataset-option holdout=N"
    assert holdout_advice(None) == "--holdout FRACTION"


# ------------------------------------------------------------------ search
def test_search_data_warns_once_for_a_tiny_held_out_split_and_not_for_a_large_one():
    lines = []
    search_data(None, (EvalSet(*images(3), "holdout"), None), log=lines.append)
    (w,) = warnings_in(lines)
    assert w.startswith("warning: held-out split has 3 images: accuracy differences below ±34 points")
    assert w.endswith("(more held-out images)")  # given as tensors: no option makes them more
    lines.clear()
    search_data(None, (EvalSet(*images(SMALL_SPLIT_IMAGES), "holdout"), None), log=lines.append)
    assert warnings_in(lines) == []


def test_a_subset_too_small_to_choose_by_is_said_when_the_split_is_not():
    lines = []
    big = EvalSet(*images(300, size=8), "holdout")
    assert len(take_subset(big, 32, 0, log=lines.append).labels) == 32
    (w,) = warnings_in(lines)
    assert w.startswith("warning: held-out subset searched on has 32 images") and "all 300 held-out images" in w
    lines.clear()
    take_subset(big, 250, 0, log=lines.append)  # large enough
    take_subset(big, None, 0, log=lines.append)  # no subset
    take_subset(EvalSet(*images(100, size=8), "holdout"), 32, 0, log=lines.append)  # search_data said it of the split
    assert lines == []
    take_subset(big, 32, 0)  # no log: nothing to say it to


def test_a_search_on_a_tiny_held_out_split_says_so_in_one_line(tmp_path):
    from tavt_kit import search_schedules
    from tavt_kit.search import EvolutionSettings

    torch.manual_seed(0)
    model = tavt_kit.create_model("fgvc_tiny", depth=3, img_size=32, num_classes=4).eval()
    full = tavt_kit.count_macs(model).total()
    lines = []
    search_schedules(model, (images(40), images(20, seed=2)), [f"{0.85 * full / 1e6:.4g}M MACs"],
                     evolution=EvolutionSettings(population=4, generations=1, mutations=2, crossovers=2, seed=0),
                     out=str(tmp_path), parent=None, log=lines.append)
    said = [s for s in warnings_in(lines) if "held-out" in s]
    assert len(said) == 1 and said[0].startswith("warning: held-out split has 40 images: accuracy differences "
                                                 "below ±9.3 points cannot be told apart"), lines


# ------------------------------------------------------------------ export
onnx_needed = pytest.mark.skipif(not all(__import__("importlib").util.find_spec(m) for m in ("onnx", "onnxruntime")),
                                 reason="needs onnx and onnxruntime")


def _tiny10():
    torch.manual_seed(0)
    model = tavt_kit.create_model("fgvc_tiny", depth=2, num_classes=10).eval()
    model.spec["data"] = {"name": "demo"}
    return model


@onnx_needed
def test_a_lower_precision_verified_on_few_images_says_so_and_fp32_does_not(tmp_path):
    from tavt_kit.export import ExportOptions, VerifyOptions, export_model, load_verify_data
    from tavt_kit.target import DeploymentTarget

    model = _tiny10()
    data = load_verify_data(model, "demo", max_images=16)
    verify = VerifyOptions(data=(data.images, data.labels), max_accuracy_drop=100)
    fast = ExportOptions(exporter="torchscript")
    lines = []
    res = export_model(model, tmp_path / "fp16", [32, 16], ("onnx",), target=DeploymentTarget(precision="fp16"),
                       verify=verify, options=fast, log=lines.append)
    (w,) = [s for s in warnings_in(lines) if "verification" in s]
    assert w.startswith("warning: fp16 verification set has 16 images: accuracy differences below ±15 points")
    assert res.doc["verification"]["warning"] == w[len("warning: "):]
    lines.clear()
    res = export_model(model, tmp_path / "fp32", [32, 16], ("onnx",), verify=verify, options=fast, log=lines.append)
    assert not [s for s in warnings_in(lines) if "images" in s] and "warning" not in res.doc["verification"]


def test_int8_accuracy_control_on_few_held_out_images_is_recorded_with_the_way_to_more():
    from tavt_kit.export import QuantizeOptions, prepare_export

    model = _tiny10()
    prep = prepare_export(model, [32, 16], ("onnx",), quantize=QuantizeOptions(accuracy_control_images=8))
    validation, reason = prep.held_out()
    assert reason is None and validation["info"]["images"] == 8
    w = validation["info"]["warning"]
    assert w.startswith("int8 accuracy control's held-out split has 8 images: accuracy differences below ±21 points")
    assert w.endswith(f"(a larger --accuracy-control-images, or none: all {validation['info']['available']} "
                      "held-out images)")
    # all of the demo's held-out images: the way to more is a larger held-out split
    validation, _ = prepare_export(model, [32, 16], ("onnx",)).held_out()
    n = validation["info"]["images"]
    assert ("warning" in validation["info"]) == (n < SMALL_SPLIT_IMAGES)
    if n < SMALL_SPLIT_IMAGES:
        assert validation["info"]["warning"].endswith("(a larger held-out split, set when training: --holdout "
                                                      "FRACTION)")


@onnx_needed
@pytest.mark.nncf
def test_int8_export_says_its_small_held_out_and_verification_sets_once_each(tmp_path):
    pytest.importorskip("nncf")
    import numpy as np

    from tavt_kit.export import ExportOptions, QuantizeOptions, VerifyOptions, export_model
    from tavt_kit.export.quantize import quantize_onnx
    from tavt_kit.target import DeploymentTarget

    model = _tiny10()
    lines = []
    res = export_model(model, tmp_path / "int8", [32, 16], ("onnx",), target=DeploymentTarget(precision="int8"),
                       verify=VerifyOptions(images=16, max_accuracy_drop=100),
                       quantize=QuantizeOptions(calibration_images=8, accuracy_control_images=8),
                       options=ExportOptions(exporter="torchscript"), log=lines.append)
    said = [s for s in warnings_in(lines) if " images: " in s]
    assert [s.split(" has ")[0] for s in said] == ["warning: int8 accuracy control's held-out split",
                                                   "warning: int8 verification set"], lines
    q = res.doc["exports"]["onnx"]["quantization"]
    assert q["mode"] == "accuracy_control" and q["validation"]["warning"] == said[0][len("warning: "):]
    # the quantiser called directly on 3 held-out images warns (a UserWarning) and records it
    x = np.random.default_rng(0).standard_normal((8, 3, 64, 64)).astype(np.float32)
    with pytest.warns(UserWarning, match="held-out split has 3 images") as caught:
        r = quantize_onnx(_fp32_onnx(model, tmp_path), tmp_path / "direct.onnx", x, validation=(x[:3], [0, 1, 2]))
    # ... and the warning points at the line that called it, not into the package
    assert [w.filename for w in caught if "held-out split" in str(w.message)] == [__file__]
    assert r.validation["warning"].startswith("int8 accuracy control's held-out split has 3 images")


def _fp32_onnx(model, tmp_path):
    from tavt_kit.export import export_onnx

    return export_onnx(model, tmp_path / "fp32.onnx", [32, 16], exporter="torchscript").path
