"""The model the demo ships as "your model": a good one, the file it records, and refused when damaged."""
import json
import shutil

import pytest
import torch

from tavt_kit import demo
from tavt_kit.errors import ConfigError

pytestmark = pytest.mark.usefixtures("one_thread")


def test_the_shipped_model_is_converged_and_scores_what_its_record_says():
    record = demo.shipped_model()
    assert record["test_top1"] >= 0.90
    curve = [acc for _, acc in record["holdout_curve"]]
    assert abs(curve[-1] - max(curve)) <= 0.01  # flat at its end: the last held-out point is the best
    from tavt_kit.data import build_dataset
    from tavt_kit.models import load_checkpoint
    from tavt_kit.train.evaluate import evaluate_tensors

    model = load_checkpoint(demo.SHIPPED_MODEL).eval()
    test = build_dataset("cluttered-digits", split="test", model=model)
    items = [test[i] for i in range(300)]
    images, labels = torch.stack([x for x, _ in items]), torch.tensor([int(y) for _, y in items])
    score = evaluate_tensors(model, images, labels, batch_size=100)
    # 300 of the test images the record scored: within 4 binomial standard errors of its figure
    assert abs(score.top1 - record["test_top1"]) <= 4 * (record["test_top1"] * (1 - record["test_top1"]) / 300) ** .5


def test_the_shipped_model_becomes_the_demos_first_stage(tmp_path):
    assert demo._install_shipped(str(tmp_path / "train"), demo.shipped_model()) == 0
    assert (tmp_path / "train" / "best.safetensors").read_bytes() == open(demo.SHIPPED_MODEL, "rb").read()
    results = json.loads((tmp_path / "train" / "results.json").read_text())
    assert results["shipped"] is True and results["test_top1"] == demo.shipped_model()["test_top1"]


def test_a_damaged_shipped_model_is_refused_naming_the_file(tmp_path, monkeypatch):
    copy = tmp_path / "fgvc_tiny-cluttered-digits.safetensors"
    shutil.copyfile(demo.SHIPPED_MODEL, copy)
    shutil.copyfile(demo.SHIPPED_MODEL[:-len(".safetensors")] + ".json", tmp_path / "fgvc_tiny-cluttered-digits.json")
    data = bytearray(copy.read_bytes())
    data[-1] ^= 1
    copy.write_bytes(bytes(data))
    monkeypatch.setattr(demo, "SHIPPED_MODEL", str(copy))
    with pytest.raises(ConfigError, match="fgvc_tiny-cluttered-digits.safetensors: sha256 .* --train-steps"):
        demo.shipped_model()
