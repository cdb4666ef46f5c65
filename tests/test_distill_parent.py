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
    assert rec == sup.spec["distillation"]["parent"] == parent_of(read_spec(str(out / "best.safetensors")))
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
    rec = parent_of(read_spec(str(tmp_path / "cut" / "last.safetensors")))
    assert rec == {"path": parent, "weights_sha256": read_spec(parent_file)["weights_sha256"]}
    tavt_kit.save_checkpoint(tiny(3), parent)  # the file now holds other weights: the frozen teacher is gone
    assert main(args + ["--resume"]) == 2
    assert "parent.safetensors: not the parent" in capsys.readouterr().err
    tavt_kit.save_checkpoint(tavt_kit.load_checkpoint(parent_file), parent)  # the same weights again
    assert main(args + ["--resume"]) == 0
    assert parent_of(read_spec(str(tmp_path / "cut" / "best.safetensors"))) == rec


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


def _alpha_of(model, distilled, parent):
    """How far ``model``'s weights sit from the parent's toward the distilled ones (what the mix set)."""
    k = next(k for k, v in parent.items() if v.is_floating_point() and not torch.equal(v, distilled[k]))
    d, p = distilled[k].double(), parent[k].double()
    return round(float(((model.state_dict()[k].double() - p) * (d - p)).sum() / ((d - p) ** 2).sum()), 3)


@pytest.mark.parametrize("full, mean, expect, kept", [
    # every mix keeps the parent's full schedule: the best mean over the tracked schedules (the least mixing
    # that is, ties going to the more distilled)
    ({1.0: .80, .9: .80, .8: .80, .7: .80, .6: .80, .5: .80}, {1.0: .70, .9: .72, .8: .72, .7: .71, .6: .70, .5: .69},
     0.9, True),
    # the distilled full schedule drifted: the best mean among the mixes that keep it (within 0.2 points)
    ({1.0: .77, .9: .785, .8: .799, .7: .80, .6: .802, .5: .803}, {1.0: .75, .9: .74, .8: .73, .7: .72, .6: .71, .5: .70},
     0.8, True),
    # none keeps it: the one whose full schedule comes closest
    ({1.0: .70, .9: .72, .8: .74, .7: .75, .6: .75, .5: .74}, {1.0: .70, .9: .70, .8: .70, .7: .70, .6: .70, .5: .70},
     0.7, False),
])
def test_choose_parent_mix_keeps_the_parents_accuracy_and_the_most_of_the_rest(full, mean, expect, kept):
    from tavt_kit.distill import choose_parent_mix, mix_with_parent

    parent, model = tiny(0), tiny(1)
    p, d = parent.state_dict(), {k: v.clone() for k, v in model.state_dict().items()}

    def score(m):
        if m is parent:
            return {"top1_full": 0.80, "top1_mean": 0.60}
        a = _alpha_of(m, d, p)
        return {"top1_full": full[a], "top1_mean": mean[a], "top1_smallest": mean[a]}

    choice = choose_parent_mix(model, parent, score)
    assert (choice.alpha, choice.kept) == (expect, kept)
    assert all(torch.equal(v, d[k]) for k, v in model.state_dict().items())  # left distilled: the caller mixes
    assert set(choice.scores) == {1.0, 0.9, 0.8, 0.7, 0.6, 0.5} and choice.to_dict()["tried"]["0.5"]["top1_full"] \
        == full[0.5]
    assert ("keeps your model's" if kept else "no mix kept") in choice.reason()
    mixed = mix_with_parent(tiny(1), parent, choice.alpha)
    assert _alpha_of(mixed, d, p) == expect
    with pytest.raises(ConfigError, match=r"^alphas=\[1.5\]"):
        choose_parent_mix(model, parent, score, alphas=[1.5])


def test_parent_mix_auto_chooses_on_the_held_out_images_and_records_why(tmp_path, parent_file, capsys):
    """distill --parent-mix auto: the weight chosen on the held-out images is applied, recorded in the spec (once)
    and in results.json with every weight tried; a word that is neither a weight nor auto names the flag."""
    runs = {}
    for alpha in ("1", "auto"):
        out = tmp_path / f"mix{alpha}"
        assert main(["distill", "--checkpoint", parent_file, "--out", str(out), "--parent-mix", alpha] + COMMON) == 0
        runs[alpha] = tavt_kit.load_checkpoint(str(out / "best.safetensors"))
    assert "(--parent-mix auto: " in capsys.readouterr().out
    with open(tmp_path / "mixauto" / "results.json") as f:
        res = __import__("json").load(f)
    choice = res["parent_mix_choice"]
    assert set(choice["tried"]) == {"1", "0.9", "0.8", "0.7", "0.6", "0.5"}
    assert res["parent_mix"] == choice["alpha"] == runs["auto"].spec["distillation"]["parent_mix"]
    assert res["holdout"] == choice["tried"][f"{choice['alpha']:g}"]  # what is shipped, measured when chosen
    p, d = tavt_kit.load_checkpoint(parent_file).state_dict(), runs["1"].state_dict()
    assert _alpha_of(runs["auto"], d, p) == choice["alpha"]
    from tavt_kit.cli.distill import apply_parent_mix

    assert apply_parent_mix(str(tmp_path / "mixauto" / "best.safetensors"), 0.5) is None  # chosen once
    with pytest.raises(SystemExit) as e:
        main(["distill", "--checkpoint", parent_file, "--out", str(tmp_path / "bad"), "--parent-mix", "half"] + COMMON)
    assert e.value.code == 2
    assert "argument --parent-mix: expected a weight in (0, 1] or auto, got 'half'" in capsys.readouterr().err
