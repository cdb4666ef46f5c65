"""In-place distillation: the TAVT step, fgvc-kit distill (resume after a kill, torchrun on gloo)."""
import json
import os
import subprocess
import sys

import pytest
import torch

import tavt_kit
from conftest import kill_once_written
from tavt_kit.cli import main
from tavt_kit.distill.inplace import InplaceDistillStep, fixed_schedules
from tavt_kit.schedules import SearchSpace


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    torch.manual_seed(0)
    m = tavt_kit.create_model("fgvc_tiny", depth=3, img_size=32)
    return str(tavt_kit.save_checkpoint(m, tmp_path_factory.mktemp("t") / "teacher.safetensors"))


def weights(path):
    return tavt_kit.load_checkpoint(path).state_dict()


def same(a, b, atol):
    return all(torch.allclose(a[k], b[k], atol=atol, rtol=0) for k in a)


def test_step_draws_the_smallest_first_then_seeded_random_members():
    space = SearchSpace.tavt(6, 64, bound=0.3)
    step = InplaceDistillStep(space, sandwich=3, seed=5)
    subs = step.schedules(7)
    assert subs[0] == space.smallest() and len(subs) == 4
    assert subs == InplaceDistillStep(space, sandwich=3, seed=5).schedules(7)  # every rank draws the same
    assert subs != step.schedules(8) and all(space.contains(s) for s in subs)


def test_step_losses_and_gradients():
    torch.manual_seed(0)
    model = tavt_kit.create_model("fgvc_tiny", depth=3, img_size=32).train()
    space = SearchSpace.for_model(model, bound=0.3)
    step = InplaceDistillStep(space, sandwich=2, kd_temperature=2.0)
    x, y = torch.randn(4, 3, 32, 32), torch.randint(0, 10, (4,))
    loss, metrics = step(model, x, y)
    assert not loss.requires_grad  # each pass was back-propagated by the step itself
    assert model.blocks[0].attn.qkv.weight.grad is not None
    assert {"loss_full", "kd_smallest", "kd_random", "acc_smallest"} <= set(metrics)
    assert float(metrics["kd_smallest"]) > 0
    assert "evit0.7" not in fixed_schedules(SearchSpace.tavt(3, 16, bound=0.1))  # outside that space


COMMON = ["--steps", "4", "--batch-size", "8", "--warmup-steps", "1", "--eval-every", "2", "--save-every", "2",
          "--no-progress", "--workers", "0", "--eval-batch-size", "64"]


def test_distill_cli_writes_a_supernet_with_its_space(tmp_path, teacher, capsys):
    out = tmp_path / "d"
    assert main(["distill", "--checkpoint", teacher, "--out", str(out), "--bound", "0.25", "--drop-blocks", "1,2"]
                + COMMON) == 0
    sup = tavt_kit.load_checkpoint(str(out / "best.safetensors"))
    space = SearchSpace.from_dict(sup.spec["search_space"])
    assert space.bounds == (0.0, 0.25, 0.25) and sup.spec["distillation"]["sandwich"] == 2
    evals = [json.loads(line) for line in open(out / "metrics.jsonl") if '"eval"' in line]
    assert {"top1_full", "top1_smallest", "top1_middle", "top1_mean"} <= set(evals[-1])
    res = json.loads((out / "results.json").read_text())
    assert set(res["test"]) >= {"full", "smallest"}
    assert (out / "distill_curves.png").exists()
    assert "supernet:" in capsys.readouterr().out


def test_distill_bad_input(tmp_path, teacher, capsys):
    assert main(["distill", "--checkpoint", teacher, "--pretrained", teacher, "--out", str(tmp_path / "x")]) == 2
    assert "--pretrained: not used by distill" in capsys.readouterr().err
    assert main(["distill", "--checkpoint", teacher, "--bound", "1.5", "--out", str(tmp_path / "y")] + COMMON) == 2
    assert "--bound: expected a drop ratio in (0, 1)" in capsys.readouterr().err
    assert main(["distill", "--checkpoint", str(tmp_path / "none.safetensors"), "--out", str(tmp_path / "z")]) == 2
    assert "checkpoint not found" in capsys.readouterr().err


def test_killed_distillation_resumes_to_the_same_weights(tmp_path, teacher):
    args = ["distill", "--checkpoint", teacher, "--steps", "8", "--batch-size", "8", "--warmup-steps", "1",
            "--eval-every", "4", "--save-every", "2", "--no-progress", "--no-test", "--workers", "0"]
    kill_once_written([sys.executable, "-m", "tavt_kit.cli"] + args + ["--out", str(tmp_path / "cut")],
                      tmp_path / "cut" / "train_state.safetensors")
    assert main(args + ["--out", str(tmp_path / "cut"), "--resume"]) == 0
    assert main(args + ["--out", str(tmp_path / "ref")]) == 0
    assert same(weights(str(tmp_path / "ref" / "last.safetensors")), weights(str(tmp_path / "cut" / "last.safetensors")),
                atol=1e-6)


def test_two_gloo_processes_equal_one_process_with_the_same_global_batch(tmp_path, teacher):
    common = ["--checkpoint", teacher, "--optimizer", "sgd", "--lr", "0.05", "--steps", "3", "--warmup-steps", "1",
              "--eval-every", "3", "--save-every", "3", "--no-progress", "--no-test", "--workers", "0",
              "--device", "cpu"]  # both runs on the CPU (gloo), also where a GPU is present
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           "-m", "tavt_kit.cli", "distill", "--batch-size", "4", "--out", str(tmp_path / "ddp")]
                          + common, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert main(["distill", "--batch-size", "8", "--out", str(tmp_path / "one")] + common) == 0
    ddp, one = weights(str(tmp_path / "ddp" / "last.safetensors")), weights(str(tmp_path / "one" / "last.safetensors"))
    assert same(ddp, one, atol=1e-5) and not same(ddp, weights(teacher), atol=1e-4)


@pytest.fixture
def one_gpu(monkeypatch):
    """A node with one CUDA device, whatever this machine has (nothing runs on it: set_device is recorded)."""
    calls = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "set_device", calls.append)
    for k, v in {"RANK": "1", "WORLD_SIZE": "1", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "2"}.items():
        monkeypatch.setenv(k, v)  # local rank 1 of 2 on this node (a world of 1: no process group is joined)
    return calls


def test_more_processes_than_gpus_run_on_the_cpu_under_auto_and_are_refused_on_cuda(one_gpu, monkeypatch):
    from tavt_kit.errors import ConfigError
    from tavt_kit.train.distributed import init_distributed

    # found on a one-GPU machine: auto gave local rank 1 cuda:1 and torch failed with "invalid device ordinal"
    assert init_distributed("auto")[2] == torch.device("cpu") and one_gpu == []
    with pytest.raises(ConfigError, match="1 CUDA device.*at most 1 process"):
        init_distributed("cuda:1")
    monkeypatch.setenv("LOCAL_RANK", "0")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "1")
    assert init_distributed("auto")[2] == torch.device("cuda:0") and one_gpu == [torch.device("cuda:0")]
