"""The deployed runtime a precision search scores its picks on: the target's own where it runs the model at
that precision here (torch: fp32, and bf16 / fp16 on a GPU), else OpenVINO (int8; half precision on a CPU)."""
import sys

import torch

import tavt_kit
from tavt_kit.search.deployed import DeployedScorer
from tavt_kit.target import DeploymentTarget


def test_a_torch_target_scores_the_model_itself_without_openvino(monkeypatch):
    monkeypatch.setitem(sys.modules, "openvino", None)  # a GPU machine's torch search needs no OpenVINO
    torch.manual_seed(0)
    model = tavt_kit.create_model("fgvc_tiny", depth=3, img_size=32).eval()
    images, labels = torch.rand(20, 3, 32, 32), torch.randint(0, 10, (20,))
    targets = {"fp32": DeploymentTarget(backend="torch", device="cpu")}
    scorer = DeployedScorer(model, lambda x: x, lambda: None, batch_size=8, targets=targets)
    sched = model.make_schedule([12, 8, 4])
    sc, runtime = scorer.scores(sched, "fp32", images, labels)
    assert runtime == "PyTorch torch on cpu, fp32"
    with torch.inference_mode():
        want = model(images, drop=sched)
    hits = want.argmax(-1) == labels
    assert sc.correct[0] == int(hits.sum()) and sc.hits[0].tolist() == hits.tolist()
    nll = -want.log_softmax(-1).gather(1, labels.view(-1, 1)).sum()
    assert abs(sc.nll[0] - float(nll)) < 1e-4 * max(1.0, float(nll))
    assert sc.kl[0] > 0  # against the full model, which keeps every token
    scorer.close()


def test_half_precision_and_int8_on_a_cpu_deploy_through_openvino():
    from tavt_kit.search.deployed import _runs_in_torch

    assert _runs_in_torch(DeploymentTarget(backend="torch", device="cpu"))
    for p in ("bf16", "fp16", "int8"):  # torch on a CPU does not deploy these: OpenVINO runs them
        assert not _runs_in_torch(DeploymentTarget(backend="torch", device="cpu", precision=p))
    assert not _runs_in_torch(DeploymentTarget(backend="openvino", device="cpu"))
