"""The parent of a distillation: recorded in the supernet, loaded and checked; a frozen parent as the teacher."""
import sys

import pytest
import torch

import tavt_kit
from conftest import kill_once_written
from tavt_kit.cli import main
from tavt_kit.distill.inplace import InplaceDistillStep
from tavt_kit.errors import CheckpointError, ConfigError
from tavt_kit.models.checkpoint import load_parent, parent_of, read_spec, weights_digest
from tavt_kit.schedules import SearchSpace

pytestmark = pytest.mark.usefixtures("one_thread")

COMMON = ["--steps", "2", "--batch-size", "8", "--warmup-steps", "1", "--eval-every", "2", "--save-every", "2",
          "--no-progress", "--no-test", "--workers", "0", "--eval-batch-size", "64"]


def tiny(seed=0):
    torch.manual_seed(seed)
    return tavt_kit.create_model("fgvc_tiny", depth=3, img_size=32)


@pytest.fixture(scope="module")
def parent_file(tmp_path_factory):
    return str(tavt_kit.save_checkpoint(tiny(), tmp_path_factory.mktemp("p") / "parent.safetensors"))


def test_distill_records_the_parent_and_load_parent_reads_it_back(tmp_path, parent_file):
    out = tmp_path / "d"
    assert main(["distill", "--checkpoint", parent_file, "--out", str(out), "--teacher", "parent"] + COMMON) == 0
    sup = tavt_kit.load_checkpoint(str(out / "best.safetensors"))
    rec = parent_of(sup)
    assert rec == sup.spec["distillation"]["parent"] == parent_of(str(out / "best.safetensors"))
    assert rec["path"] == parent_file and rec["weights_sha256"] == read_spec(parent_file)["weights_sha256"]
    assert sup.spec["distillation"]["teacher"] == "parent"
    assert weights_digest(sup) != rec["weights_sha256"]  # the supernet trained; its parent did not
    parent = load_parent(sup)
    assert weights_digest(parent) == rec["weights_sha256"] and not parent.training
    assert parent_of(tiny()) is None and parent_of({"distillation": {"teacher": "full"}}) is None


def test_a_resumed_distillation_keeps_its_parent(tmp_path, parent_file, capsys):
    import shutil

    parent = str(tmp_path / "parent.safetensors")
    shutil.copy(parent_file, parent)
    args = ["distill", "--checkpoint", parent, "--teacher", "parent", "--steps", "6", "--batch-size", "8",
            "--warmup-steps", "1", "--eval-every", "6", "--save-every", "2", "--no-progress", "--no-test",
            "--workers", "0", "--out", str(tmp_path / "cut")]
    kill_once_written([sys.executable, "-m", "tavt_kit.cli"] + args, tmp_path / "cut" / "train_state.safetensors")
    rec = parent_of(str(tmp_path / "cut" / "last.safetensors"))
    assert rec == {"path": parent, "weights_sha256": read_spec(parent_file)["weights_sha256"]}
    tavt_kit.save_checkpoint(tiny(3), parent)  # the file now holds other weights: the frozen teacher is gone
    assert main(args + ["--resume"]) == 2
    assert "parent.safetensors: not the parent" in capsys.readouterr().err
    tavt_kit.save_checkpoint(tavt_kit.load_checkpoint(parent_file), parent)  # the same weights again
    assert main(args + ["--resume"]) == 0
    assert parent_of(str(tmp_path / "cut" / "best.safetensors")) == rec


def test_load_parent_refuses_changed_or_missing_weights(tmp_path, parent_file):
    sup = tiny(1)
    digest = read_spec(parent_file)["weights_sha256"]
    sup.spec["distillation"] = {"parent": {"path": parent_file, "weights_sha256": digest}}
    assert weights_digest(load_parent(sup)) == digest
    other = str(tavt_kit.save_checkpoint(tiny(2), tmp_path / "other.safetensors"))
    with pytest.raises(CheckpointError, match="other.safetensors: not the parent") as e:
        load_parent(sup, path=other)  # path= overrides the recorded file, and it is checked too
    assert "\n" not in str(e.value)
    sup.spec["distillation"]["parent"]["path"] = str(tmp_path / "moved.safetensors")
    with pytest.raises(CheckpointError, match="moved.safetensors: parent checkpoint not found"):
        load_parent(sup)
    with pytest.raises(CheckpointError, match="no parent recorded"):
        load_parent(tiny())


def test_frozen_parent_teacher_does_not_train(parent_file):
    parent = tavt_kit.load_checkpoint(parent_file)
    before = {k: v.clone() for k, v in parent.state_dict().items()}
    model = tavt_kit.load_checkpoint(parent_file).train()
    space = SearchSpace.for_model(model, bound=0.3)
    step = InplaceDistillStep(space, sandwich=1, teacher="parent", parent=parent, full_label_weight=1.0,
                              full_kd_weight=1.0)
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    x, y = torch.randn(4, 3, 32, 32), torch.randint(0, 10, (4,))
    first = step.parent_logits(x)
    for _ in range(3):
        loss, metrics = step(model, x, y)
        opt.step()
        opt.zero_grad()
        assert "kd_full" in metrics
    assert torch.equal(step.parent_logits(x), first)  # the teacher's targets did not move
    assert not torch.allclose(model.eval()(x), first, atol=1e-4)  # while the trained model did
    assert all(torch.equal(before[k], v) for k, v in parent.state_dict().items())  # the caller's parent untouched
    assert all(not p.requires_grad and p.grad is None for p in step.parent.parameters())
    assert step.parent is not parent and not step.parent.training


def test_step_options_are_checked():
    space = SearchSpace.tavt(3, 16, bound=0.3)
    with pytest.raises(ConfigError, match=r"teacher='ema': expected parent or full"):
        InplaceDistillStep(space, teacher="ema")
    with pytest.raises(ConfigError, match=r"parent=None: teacher='parent' needs"):
        InplaceDistillStep(space, teacher="parent")
    with pytest.raises(ConfigError, match=r"parent=None: full_kd_weight=1.0 needs"):
        InplaceDistillStep(space, full_kd_weight=1.0)
    with pytest.raises(ConfigError, match="full_label_weight=0, full_kd_weight=0"):
        InplaceDistillStep(space, full_label_weight=0, full_kd_weight=0)


def test_distill_cli_refuses_no_full_loss(tmp_path, parent_file, capsys):
    assert main(["distill", "--checkpoint", parent_file, "--out", str(tmp_path / "x"), "--full-label-weight", "0",
                 "--full-kd-weight", "0"] + COMMON) == 2
    assert "--full-label-weight 0, --full-kd-weight 0: expected" in capsys.readouterr().err


def test_parent_mix_interpolates_the_supernet_toward_its_parent(tmp_path, parent_file, capsys):
    """--parent-mix A: the shipped weights are A x distilled + (1 - A) x parent, recorded once in the spec; 1 keeps
    the distilled weights; a value outside (0, 1] is refused with the flag's name."""
    runs = {}
    for alpha in ("1", "0.25"):
        out = tmp_path / f"mix{alpha}"
        assert main(["distill", "--checkpoint", parent_file, "--out", str(out), "--parent-mix", alpha] + COMMON) == 0
        runs[alpha] = tavt_kit.load_checkpoint(str(out / "best.safetensors"))
    assert "weights: 0.25 x distilled + 0.75 x your model's (--parent-mix)" in capsys.readouterr().out
    parent = tavt_kit.load_checkpoint(parent_file)
    assert "parent_mix" not in runs["1"].spec["distillation"] and runs["0.25"].spec["distillation"]["parent_mix"] == 0.25
    p, d, m = parent.state_dict(), runs["1"].state_dict(), runs["0.25"].state_dict()
    moved = [k for k in p if p[k].is_floating_point() and not torch.equal(p[k], d[k])]
    assert moved  # distillation trained the weights (the same seed: the same training in both runs)
    for k in moved:
        torch.testing.assert_close(m[k], 0.25 * d[k] + 0.75 * p[k], rtol=1e-5, atol=1e-6)
    # the run's end again (a resumed finished run) does not mix twice
    from tavt_kit.cli.distill import apply_parent_mix

    assert apply_parent_mix(str(tmp_path / "mix0.25" / "best.safetensors"), 0.25) is None
    assert main(["distill", "--checkpoint", parent_file, "--out", str(tmp_path / "bad"), "--parent-mix", "0"]
                + COMMON) == 2
    assert "--parent-mix 0: expected a weight in (0, 1]" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="^parent_mix=1.5"):
        tavt_kit.distill.mix_with_parent(tiny(), tiny(), 1.5)
