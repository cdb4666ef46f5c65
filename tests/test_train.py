"""Fine-tuning engine and ``fgvc-kit train``/``evaluate``: resume, DDP, accumulation, AMP, aux losses, errors."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from torch import nn

import tavt_kit
from conftest import kill_once_written, timm_to_npz
from tavt_kit.cli import main
from tavt_kit.data import build_dataset, cached_tensors
from tavt_kit.train import ClassificationStep, TrainConfig, Trainer, build_model, evaluate
from tavt_kit.errors import ConfigError
from test_data import make_folder

pytestmark = pytest.mark.usefixtures("one_thread")


FAST = ["--steps", "4", "--batch-size", "8", "--warmup-steps", "1", "--eval-every", "2", "--save-every", "2",
        "--no-progress"]


def tiny(num_classes=10, **kw):
    return tavt_kit.create_model("fgvc_tiny", depth=2, img_size=32, num_classes=num_classes, **kw)


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ckpt") / "tiny.safetensors"
    return str(tavt_kit.save_checkpoint(tiny(), path))


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return str(make_folder(tmp_path_factory.mktemp("folder") / "data", train=6, test=3, size=(24, 20)))


def weights(model_or_path):
    m = tavt_kit.load_checkpoint(model_or_path) if isinstance(model_or_path, str) else model_or_path
    return {k: v.detach().clone() for k, v in m.state_dict().items()}


def same(a, b, atol=0.0):
    assert a.keys() == b.keys()
    if atol == 0.0:
        return all(torch.equal(a[k], b[k]) for k in a)
    return all(torch.allclose(a[k], b[k], atol=atol, rtol=0) for k in a)


# ---------------------------------------------------------------- resume
class Crash(Exception):
    pass


class CrashAfter(ClassificationStep):
    """Dies in the middle of the run (after the state of an earlier step was saved)."""

    def __init__(self, calls):
        super().__init__(0.1)
        self.calls = calls

    def __call__(self, model, images, labels):
        self.calls -= 1
        if self.calls < 0:
            raise Crash()
        return super().__call__(model, images, labels)


def _run(out, data, step_fn=None, resume=False, seed_model=0, workers=0, device="cpu"):
    # the CPU by default: bit-equal resume needs deterministic kernels; a GPU's backward adds with atomics in
    # varying order (test_cuda.py checks resume on a GPU to that tolerance)
    torch.manual_seed(seed_model)
    model = tiny(num_classes=3, drop_path_rate=0.2)  # stochastic depth: the RNG state matters too
    train = build_dataset("folder", data, "train", img_size=32, holdout=0.2)  # random crop + flip
    cfg = TrainConfig(steps=7, batch_size=4, accum_steps=2, optimizer="adamw", lr=2e-3, warmup_steps=2,
                      label_smoothing=0.1, eval_every=3, save_every=2, log_every=1, num_workers=workers, seed=5)
    hold = build_dataset("folder", data, "holdout", img_size=32, holdout=0.2)
    tr = Trainer(model, train, cfg, holdout_set=hold, out_dir=str(out), step_fn=step_fn or ClassificationStep(0.1),
                 device=device)
    return tr, tr.fit(resume=resume)


def test_resume_after_a_crash_equals_the_uninterrupted_run(tmp_path, folder):
    """Several epochs (14 training images, 8 per step), data workers, augmentation, stochastic depth."""
    ref, _ = _run(tmp_path / "ref", folder, workers=2)
    with pytest.raises(Crash):  # dies during step 6 (11 micro-batches done); the state of step 4 is on disk
        _run(tmp_path / "cut", folder, step_fn=CrashAfter(11), workers=2)
    state = json.loads(__import__("safetensors").safe_open(str(tmp_path / "cut" / "train_state.safetensors"), "pt")
                       .metadata()["fgvc-kit.train_state"])
    assert state["step"] == 4 and state["best_step"] == 3
    tr, res = _run(tmp_path / "cut", folder, resume=True, seed_model=123)  # another init: the state must win
    assert res.resumed_from == 4 and res.steps == 7
    assert same(weights(ref.model), weights(tr.model))
    assert same(weights(str(tmp_path / "ref" / "last.safetensors")), weights(str(tmp_path / "cut" / "last.safetensors")))
    assert same(weights(str(tmp_path / "ref" / "best.safetensors")), weights(str(tmp_path / "cut" / "best.safetensors")))
    assert tr.optimizer.state_dict()["param_groups"][0]["lr"] == ref.optimizer.state_dict()["param_groups"][0]["lr"]
    events = [json.loads(line) for line in open(tmp_path / "cut" / "metrics.jsonl")]
    steps = [e["step"] for e in events if e["event"] == "train"]
    assert steps == list(range(1, 8))  # lines of the lost steps 5 were dropped, none duplicated
    ref_loss = [e["loss"] for e in map(json.loads, open(tmp_path / "ref" / "metrics.jsonl")) if e["event"] == "train"]
    assert np.allclose(ref_loss, [e["loss"] for e in events if e["event"] == "train"], rtol=0, atol=1e-6)


def test_cli_run_killed_and_resumed(tmp_path, tiny_ckpt, capsys):
    args = ["train", "--checkpoint", tiny_ckpt, "--steps", "60", "--batch-size", "8", "--warmup-steps", "2",
            "--eval-every", "20", "--save-every", "3", "--no-progress", "--no-test", "--drop-path", "0.1",
            "--device", "cpu"]  # bit-equal: deterministic kernels
    state = tmp_path / "cut" / "train_state.safetensors"
    kill_once_written([sys.executable, "-m", "tavt_kit.cli"] + args + ["--out", str(tmp_path / "cut")], state,
                      timeout=120)
    killed_at = json.loads(__import__("safetensors").safe_open(str(state), "pt").metadata()["fgvc-kit.train_state"])
    assert killed_at["step"] < 60
    assert main(args + ["--out", str(tmp_path / "cut"), "--resume"]) == 0
    assert f"(resumed at {killed_at['step']})" in capsys.readouterr().out
    assert main(args + ["--out", str(tmp_path / "ref")]) == 0
    assert same(weights(str(tmp_path / "ref" / "last.safetensors")), weights(str(tmp_path / "cut" / "last.safetensors")))
    last = tavt_kit.load_checkpoint(str(tmp_path / "cut" / "last.safetensors"))
    assert last.spec["training"]["step"] == 60 and last.spec["data"]["name"] == "demo"
    assert last.spec["class_names"] == [str(i) for i in range(10)]


# ------------------------------------------------------------ equivalences
def _fit(cfg, train, seed=0):
    torch.manual_seed(seed)
    m = tiny()
    Trainer(m, train, cfg, device="cpu").fit()  # equal to 1e-5: no TF32, no atomics
    return weights(m)


def test_gradient_accumulation_matches_a_large_batch():
    train = build_dataset("demo", split="train", img_size=32, augment=False)
    base = dict(steps=3, optimizer="sgd", lr=0.05, warmup_steps=0, eval_every=0, save_every=0, log_every=1)
    big = _fit(TrainConfig(batch_size=8, accum_steps=1, **base), train)
    acc = _fit(TrainConfig(batch_size=4, accum_steps=2, **base), train)
    assert same(big, acc, atol=1e-5) and not same(big, weights(tiny()), atol=1e-3)


def test_two_processes_train_with_ddp_on_gloo(tmp_path, tiny_ckpt):
    """torchrun, 2 CPU processes of batch 4 == 1 process of batch 8 (same images, averaged gradients)."""
    common = ["--checkpoint", tiny_ckpt, "--optimizer", "sgd", "--lr", "0.05", "--steps", "3", "--warmup-steps", "1",
              "--eval-every", "3", "--save-every", "3", "--no-progress", "--no-test", "--workers", "0"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           "-m", "tavt_kit.cli", "train",
                           "--batch-size", "4", "--out", str(tmp_path / "ddp")] + common,
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    start = json.loads(open(tmp_path / "ddp" / "metrics.jsonl").readline())
    assert start["world_size"] == 2 and start["config"]["batch_size"] == 4
    assert main(["train", "--batch-size", "8", "--out", str(tmp_path / "one")] + common) == 0
    ddp, one = weights(str(tmp_path / "ddp" / "last.safetensors")), weights(str(tmp_path / "one" / "last.safetensors"))
    assert same(ddp, one, atol=1e-5) and not same(ddp, weights(tiny_ckpt), atol=1e-4)


# ------------------------------------------------------------- features
class WithAux(nn.Module):
    """A head that returns (logits, aux losses) in training mode."""

    def __init__(self):
        super().__init__()
        self.inner = tiny()
        self.spec = self.inner.spec
        self.scale = nn.Parameter(torch.tensor(1.0))

    def forward(self, x, drop=None):
        logits = self.inner(x)
        if self.training:
            return logits, {"reg": self.scale ** 2}
        return logits


def test_aux_losses_are_added_and_logged(tmp_path):
    m = WithAux()
    x, y = torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 3])
    loss, metrics = ClassificationStep()(m, x, y)
    assert torch.allclose(loss, metrics["loss_ce"] + 1.0)
    train = build_dataset("demo", split="train", img_size=32)
    cfg = TrainConfig(steps=2, batch_size=4, optimizer="sgd", lr=0.1, momentum=0.0, warmup_steps=0, clip_grad=0,
                      lr_schedule="constant", eval_every=0, save_every=0, log_every=1)
    Trainer(m, train, cfg).fit()
    assert m.scale.item() == pytest.approx(1.0 * 0.8 ** 2, rel=1e-4)  # gradient of scale^2 reached the optimiser


def test_bf16_autocast_on_cpu_and_fp16_refused():
    train = build_dataset("demo", split="train", img_size=32)
    m = tiny()
    res = Trainer(m, train, TrainConfig(steps=2, batch_size=4, warmup_steps=0, amp="bf16", eval_every=0,
                                        save_every=0, log_every=1)).fit()
    assert res.steps == 2 and all(torch.isfinite(p).all() for p in m.parameters())
    with pytest.raises(ConfigError, match="amp='fp16' needs a CUDA device"):
        Trainer(tiny(), train, TrainConfig(amp="fp16"), device="cpu")


def test_build_model_from_every_kind_of_weights(tmp_path, tiny_ckpt):
    import timm

    src = tavt_kit.load_checkpoint(tiny_ckpt)
    m = build_model(num_classes=3, class_names=["a", "b", "c"], pretrained=tiny_ckpt)
    assert m.num_classes == 3 and m.spec["img_size"] == [32, 32] and m.spec["class_names"] == ["a", "b", "c"]
    assert torch.equal(m.blocks[1].mlp.fc1.weight, src.blocks[1].mlp.fc1.weight)
    assert m.spec["normalization"] == src.spec["normalization"]
    ref = timm.create_model("vit_base_patch16_224", img_size=32, patch_size=8, embed_dim=64, depth=2, num_heads=2,
                            num_classes=7)
    timm_to_npz(ref, tmp_path / "ViT-tiny.npz")
    m = build_model(num_classes=3, pretrained=str(tmp_path / "ViT-tiny.npz"), img_size=48)
    assert m.num_classes == 3 and m.spec["img_size"] == [48, 48] and m.depth == 2
    assert torch.allclose(m.blocks[0].attn.qkv.weight, ref.blocks[0].attn.qkv.weight)
    torch.save(ref.state_dict(), tmp_path / "timm.pth")
    m = build_model(num_classes=5, pretrained=str(tmp_path / "timm.pth"))
    assert m.num_classes == 5 and torch.equal(m.patch_embed.proj.weight, ref.patch_embed.proj.weight)


# ------------------------------------------------------------ evaluation
def test_evaluate_known_case_writes_json_and_png(tmp_path, folder, capsys):
    m = tiny(num_classes=3, class_names=["cat", "dog", "eel"])
    with torch.no_grad():  # always predicts "dog", then "eel", then "cat"
        m.head.weight.zero_()
        m.head.bias.copy_(torch.tensor([0.0, 2.0, 1.0]))
    ckpt = tavt_kit.save_checkpoint(m, tmp_path / "const.safetensors")
    assert main(["evaluate", "--checkpoint", str(ckpt), "--dataset", "folder", "--data", folder,
                 "--keep-ratio", "0.5", "--workers", "0"]) == 0
    out = capsys.readouterr().out
    assert "top-1 33.33 %" in out
    doc = json.load(open(_only(tmp_path, ".eval.json")))
    assert doc["n"] == 9 and doc["top1"] == pytest.approx(1 / 3) and doc["top5"] == 1.0
    assert doc["mean_class_acc"] == pytest.approx(1 / 3)
    assert [c["accuracy"] for c in doc["per_class"]] == [0.0, 1.0, 0.0]
    assert doc["schedule"] == [8, 4] and doc["macs"] > 0
    assert {"true": "cat", "predicted": "dog", "count": 3} in doc["top_confusions"]
    png = doc["confusion_png"]
    assert png and open(png, "rb").read(8) == b"\x89PNG\r\n\x1a\n"


def _only(d, suffix):
    found = [os.path.join(d, f) for f in os.listdir(d) if f.endswith(suffix)]
    assert len(found) == 1, found
    return found[0]


def test_evaluate_agrees_with_a_direct_forward(tiny_ckpt):
    m = tavt_kit.load_checkpoint(tiny_ckpt)
    ds = build_dataset("demo", split="holdout", model=m)
    res = evaluate(m, ds, batch_size=50)
    x, y = cached_tensors(ds)
    with torch.no_grad():
        logits = m.eval()(tavt_kit.data.Normalize.from_model(m)(x))
    assert res.top1 == pytest.approx((logits.argmax(1) == y).float().mean().item())
    assert res.confusion.sum() == len(ds) and res.confusion.trace() == round(res.top1 * len(ds))


def test_cli_train_then_evaluate_on_the_recorded_dataset(tmp_path, tiny_ckpt, folder, capsys):
    out = tmp_path / "run"
    assert main(["train", "--dataset", "folder", "--data", folder, "--checkpoint", tiny_ckpt, "--holdout", "0.2",
                 "--out", str(out), "--workers", "0"] + FAST) == 0
    text = capsys.readouterr().out
    assert "test (last, step 4)" in text
    for f in ("last.safetensors", "best.safetensors", "train_state.safetensors", "metrics.jsonl", "results.json",
              "config.json"):
        assert (out / f).exists(), f
    results = json.load(open(out / "results.json"))
    assert results["steps"] == 4 and results["test"]["last"]["n"] == 9
    spec = tavt_kit.models.read_spec(str(out / "best.safetensors"))
    assert spec["class_names"] == ["cat", "dog", "eel"] and spec["data"]["holdout"] == 0.2
    # no --dataset: the checkpoint's own dataset and held-out split
    assert main(["evaluate", "--checkpoint", str(out / "best.safetensors"), "--split", "holdout",
                 "--workers", "0"]) == 0
    doc = json.load(open(out / "best.holdout.eval.json"))
    assert doc["n"] == 4 and doc["dataset"] == "folder" and os.path.exists(doc["confusion_png"])


# ------------------------------------------------------------- bad input
@pytest.mark.parametrize("argv, expected", [
    (["train", "--steps", "-5"], "--steps -5: expected a positive number of steps"),
    (["train", "--holdout", "1.5"], "--holdout 1.5: expected a fraction in [0, 1)"),
    (["train", "--batch-size", "0"], "--batch-size 0: expected a positive batch size"),
    (["train", "--steps", "100", "--warmup-steps", "500"], "--warmup-steps 500: not below --steps 100"),
    (["train", "--dataset", "xyz123"], "unknown dataset 'xyz123'; known: demo, cluttered-digits, cub, nabirds"),
    (["train", "--dataset", "cub", "--data", "no/such/dir", "--model", "fgvc_tiny"], "no/such/dir: not found"),
    (["train", "--dataset", "cub", "--data", "."], "--checkpoint: fine-tuning on cub needs weights"),
    (["train", "--checkpoint", "missing.npz"], "--checkpoint missing.npz: checkpoint not found"),
    (["train", "--num-classes", "5"], "--num-classes 5: dataset demo has 10 classes"),
    (["train", "--resume", "--out", "no/such/run"], "--resume: no/such/run holds no run to resume"),
    (["evaluate", "--checkpoint", "missing.safetensors"], "missing.safetensors: checkpoint not found"),
    (["evaluate", "--checkpoint", "CKPT", "--split", "holdout", "--holdout", "0"], "no held-out split"),
    (["evaluate", "--checkpoint", "CKPT", "--dataset", "folder", "--data", "FOLDER"],
     "the model has 10 classes, dataset folder has 3"),
    (["evaluate", "--checkpoint", "CKPT", "--drop", "8,12"], "schedule[1] = 12 increases"),
])
def test_bad_input_is_one_line(capsys, tiny_ckpt, folder, argv, expected):
    argv = [tiny_ckpt if a == "CKPT" else folder if a == "FOLDER" else a for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert expected in err and err.count("\n") == 1 and "Traceback" not in err, err


def test_existing_run_needs_resume_and_keeps_its_settings(tmp_path, tiny_ckpt, capsys):
    out = str(tmp_path / "run")
    assert main(["train", "--checkpoint", tiny_ckpt, "--out", out, "--no-test", "--workers", "0"] + FAST) == 0
    capsys.readouterr()
    assert main(["train", "--checkpoint", tiny_ckpt, "--out", out] + FAST) == 2
    assert "already holds a run; pass --resume" in capsys.readouterr().err
    assert main(["train", "--out", out, "--resume", "--lr", "0.5"]) == 2
    assert "--lr 0.5 differs from the run" in capsys.readouterr().err
    assert main(["train", "--out", out, "--resume", "--no-test"]) == 0  # finished: nothing left to do
    assert "trained 4 steps (resumed at 4)" in capsys.readouterr().out


def test_confusion_png_coarsens_many_classes(tmp_path):
    from tavt_kit.train import MetricAccumulator, plot_confusion

    acc = MetricAccumulator(400)
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(400).repeat(3)
    logits = torch.randn(1200, 400, generator=g)
    logits[torch.arange(1200), labels] += 3.0
    acc.update(logits, labels)
    res = acc.result([f"c{i}" for i in range(400)])
    assert res.top1 == pytest.approx((logits.argmax(1) == labels).float().mean().item())
    assert res.top5 >= res.top1 and res.n == 1200
    path = plot_confusion(res, tmp_path / "cm.png", max_classes=300)
    assert open(path, "rb").read(4) == b"\x89PNG"
    assert MetricAccumulator(2000).cm is None  # beyond 1000 classes: per-class counts only
