"""Distillation at one schedule (a pick fine-tuned toward your model): it learns the parent's predictions at that
schedule, leaves the parent alone, and the checkpoint carries the schedule with its reducers."""
import json

import pytest
import torch
import torch.nn.functional as F

import tavt_kit
from tavt_kit.data import Normalize, build_dataset
from tavt_kit.distill import ScheduleDistillStep, distill_schedule
from tavt_kit.errors import ConfigError, ScheduleError
from tavt_kit.models.checkpoint import read_spec, weights_digest
from tavt_kit.schedules import TokenSchedule
from tavt_kit.train import TrainConfig

pytestmark = pytest.mark.usefixtures("one_thread")


def tiny(seed):
    torch.manual_seed(seed)
    return tavt_kit.create_model("fgvc_tiny", depth=3, img_size=32)


def kl_to(parent, student, sched, x):
    parent.eval(), student.eval()
    with torch.no_grad():
        p = F.softmax(parent(x), -1)
        return float(F.kl_div(F.log_softmax(student(x, drop=sched), -1), p, reduction="batchmean"))


def test_one_schedule_learns_the_parent_and_the_checkpoint_keeps_the_schedule(tmp_path):
    parent, student = tiny(0), tiny(1)  # the student stands for a supernet: other weights than the parent's
    n = student.num_patches
    sched = TokenSchedule((n // 2, n // 4, n // 8), n, reducers=("drop", "merge", "drop"))
    train = build_dataset("demo", split="train", model=student)
    x = Normalize.from_model(student)(torch.stack([train[i][0] for i in range(64)]))
    before, digest = kl_to(parent, student, sched, x), weights_digest(parent)
    cfg = TrainConfig(steps=30, batch_size=16, optimizer="adamw", lr=2e-3, warmup_steps=1, eval_every=0,
                      save_every=30, log_every=10, progress=False, num_workers=0)
    res = distill_schedule(student, parent, sched, train, cfg, out_dir=str(tmp_path))
    assert res.steps == 30
    assert kl_to(parent, student, sched, x) < 0.5 * before  # toward the parent's predictions, at that schedule
    assert weights_digest(parent) == digest  # the teacher is a frozen copy
    loaded = tavt_kit.load_checkpoint(str(tmp_path / "last.safetensors"))
    assert loaded.schedule == sched and loaded.schedule.reducers == ("drop", "merge", "drop")
    assert weights_digest(loaded) == weights_digest(student)


def test_distillation_at_one_schedule_refuses_what_it_cannot_run():
    student = tiny(1)
    with pytest.raises(ConfigError, match="parent=None"):
        ScheduleDistillStep(student.full_schedule(), None)
    with pytest.raises(ConfigError, match="kd_temperature=0"):
        ScheduleDistillStep(student.full_schedule(), tiny(0), kd_temperature=0)
    with pytest.raises(ScheduleError, match="schedule has 2 counts, the model has 3 blocks"):
        distill_schedule(student, tiny(0), [4, 2], [], TrainConfig(steps=1))


COMMON = ["--steps", "2", "--batch-size", "8", "--warmup-steps", "1", "--eval-every", "2", "--save-every", "2",
          "--no-progress", "--workers", "0", "--eval-batch-size", "64"]


@pytest.fixture(scope="module")
def supernet(tmp_path_factory):
    from tavt_kit.cli import main

    root = tmp_path_factory.mktemp("sup")
    parent = str(tavt_kit.save_checkpoint(tiny(0), root / "parent.safetensors"))
    assert main(["distill", "--checkpoint", parent, "--out", str(root / "d"), "--no-test"] + COMMON) == 0
    return root, str(root / "d" / "best.safetensors")


def test_cli_distill_drop_fine_tunes_the_pick_toward_the_recorded_parent(tmp_path, supernet, capsys):
    from tavt_kit.cli import main
    from tavt_kit.models.checkpoint import parent_of

    _, sup = supernet
    n = tavt_kit.load_checkpoint(sup).num_patches
    pick = TokenSchedule((n // 2, n // 4, n // 4), n, reducers=("merge", "drop", None))
    pick.save(tmp_path / "schedule-50pct.json")
    out = tmp_path / "ft"
    assert main(["distill", "--checkpoint", sup, "--drop", str(tmp_path / "schedule-50pct.json"),
                 "--out", str(out)] + COMMON) == 0
    said = capsys.readouterr().out
    assert f"distill: {list(pick.counts)} only, toward your model" in said
    assert "points [" in said and "paired" in said  # the test images, paired with your model
    tuned = tavt_kit.load_checkpoint(str(out / "best.safetensors"))
    assert tuned.schedule == pick and tuned.schedule.reducers == pick.reducers
    assert parent_of(tuned) == parent_of(read_spec(sup))  # the report still compares with your model
    assert "search_space" not in tuned.spec  # its weights serve that one schedule
    assert tuned.spec["distillation"]["schedule_finetune"]["schedule"]["counts"] == list(pick.counts)
    res = json.loads((out / "results.json").read_text())
    assert res["test"]["vs_parent"]["images"] > 0 and res["schedule"]["counts"] == list(pick.counts)


def test_cli_distill_drop_refuses_space_options_and_a_model_without_a_parent(tmp_path, supernet, capsys):
    from tavt_kit.cli import main

    root, sup = supernet
    n = tavt_kit.load_checkpoint(sup).num_patches
    TokenSchedule((n // 2, n // 4, n // 4), n).save(tmp_path / "pick.json")
    base = ["distill", "--drop", str(tmp_path / "pick.json"), "--out", str(tmp_path / "x"), "--no-test"] + COMMON
    assert main(base + ["--checkpoint", sup, "--bound", "0.5"]) == 2
    err = capsys.readouterr().err.strip()
    assert "--bound: not used with --drop" in err and "\n" not in err
    assert main(base + ["--checkpoint", str(root / "parent.safetensors")]) == 2
    assert "no parent recorded; --drop fine-tunes a schedule of a supernet" in capsys.readouterr().err
    # counts as the other commands take them: checked against the model before anything trains
    counts = ["distill", "--checkpoint", sup, "--out", str(tmp_path / "y"), "--no-test"] + COMMON
    assert main(counts + ["--drop", "4,2"]) == 2
    assert "schedule has 2 counts, the model has 3 blocks" in capsys.readouterr().err
    assert not (tmp_path / "y").exists()
    assert main(counts + ["--drop", f"{n // 2},{n // 4},{n // 4}"]) == 0
    assert tavt_kit.load_checkpoint(str(tmp_path / "y" / "best.safetensors")).schedule.counts == (n // 2, n // 4,
                                                                                                  n // 4)
    # a resumed run keeps its schedule: another one is refused in one line
    assert main(counts + ["--drop", f"{n // 2},{n // 2},{n // 4}", "--resume"]) == 2
    err = capsys.readouterr().err.strip()
    assert "not the schedule the run in" in err and "\n" not in err
