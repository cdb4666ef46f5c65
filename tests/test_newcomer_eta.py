"""Every long command says how long it will take before it runs, and, over an hour, what shortens it; a busy
machine with several torch threads is named with what to do."""
import json

import pytest
import torch

import tavt_kit
import tavt_kit.progress
from tavt_kit.cli import main
from tavt_kit.data import build_dataset
from tavt_kit.machine import oversubscribed, oversubscription
from tavt_kit.progress import Estimate, timed_enough
from tavt_kit.train import TrainConfig, Trainer

pytestmark = pytest.mark.usefixtures("one_thread")

FAST = ["--steps", "8", "--batch-size", "8", "--warmup-steps", "1", "--eval-every", "8", "--save-every", "8",
        "--no-progress", "--no-test", "--workers", "0"]


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory):
    torch.manual_seed(0)
    m = tavt_kit.create_model("fgvc_tiny", depth=2, img_size=32, num_classes=10)
    return str(tavt_kit.save_checkpoint(m, tmp_path_factory.mktemp("ckpt") / "tiny.safetensors"))


# ------------------------------------------------------------------ the estimate
def test_an_estimate_over_an_hour_says_what_shortens_it():
    long = Estimate(7 * 3600 + 16 * 60, 10000, "steps", rate=6.2)
    assert long.long and long.units_in() == 1376
    assert long.line("train", "--steps to shorten") == \
        "train: ETA ~7h16m for 10000 steps (6 images/s on this machine); over an hour: --steps to shorten"
    # without a hint (a library caller): no flag, how many steps fit in an hour instead
    assert long.line("train").endswith("; over an hour (1376 steps fit in one)")
    short = Estimate(95, 500, "steps", rate=180)
    assert not short.long and short.line("train", "--steps to shorten") == \
        "train: ETA ~1m35s for 500 steps (180 images/s on this machine)"


def test_a_few_timed_steps_or_a_slow_one_are_enough():
    assert not timed_enough(0, 100.0) and not timed_enough(3, 1.0)
    assert timed_enough(5, 0.1) and timed_enough(1, 25.0)


def test_the_trainer_reports_its_estimate_once_before_the_rest_runs(tmp_path):
    model = tavt_kit.create_model("fgvc_tiny", depth=2, img_size=32, num_classes=10)
    train = build_dataset("demo", split="train", model=model)
    seen = []

    def on_estimate(estimate):
        seen.append((trainer.step, estimate))

    cfg = TrainConfig(steps=12, batch_size=8, warmup_steps=1, eval_every=0, save_every=12, log_every=4,
                      num_workers=0, progress=False)
    trainer = Trainer(model, train, cfg, out_dir=str(tmp_path / "run"), on_estimate=on_estimate)
    result = trainer.fit()
    assert len(seen) == 1
    step, est = seen[0]
    assert step == 6 < 12  # the first step warms up, the next five are timed; six steps were left
    assert est.units == 12 and est.unit == "steps" and est.seconds > 0 and est.rate > 0
    assert result.estimate is est
    events = [json.loads(line) for line in open(tmp_path / "run" / "metrics.jsonl")]
    logged = [e for e in events if e["event"] == "estimate"]
    assert len(logged) == 1 and logged[0]["units"] == 12 and logged[0]["seconds"] == pytest.approx(est.seconds)


def test_the_trainer_without_a_callback_prints_the_flagless_line_with_its_progress(tmp_path, capsys):
    model = tavt_kit.create_model("fgvc_tiny", depth=2, img_size=32, num_classes=10)
    train = build_dataset("demo", split="train", model=model)
    cfg = TrainConfig(steps=8, batch_size=8, warmup_steps=1, eval_every=0, save_every=8, log_every=4,
                      num_workers=0)  # progress None, stderr not a terminal: plain lines
    Trainer(model, train, cfg).fit()
    err = [line for line in capsys.readouterr().err.splitlines() if "ETA ~" in line]
    assert len(err) == 1 and err[0].startswith("train: ETA ~") and "for 8 steps" in err[0] and "--" not in err[0]


# ------------------------------------------------------------------ the commands
def test_train_prints_its_eta_before_the_run_ends_and_names_steps_when_long(tmp_path, tiny_ckpt, capsys,
                                                                            monkeypatch):
    assert main(["train", "--checkpoint", tiny_ckpt, "--out", str(tmp_path / "a")] + FAST) == 0
    out = capsys.readouterr().out.splitlines()
    eta = [i for i, line in enumerate(out) if line.startswith("train: ETA ~")]
    done = [i for i, line in enumerate(out) if line.startswith("trained 8 steps")]
    assert len(eta) == 1 and done and eta[0] < done[0]
    assert "for 8 steps" in out[eta[0]] and "images/s on this machine" in out[eta[0]]
    assert "over an hour" not in out[eta[0]]
    monkeypatch.setattr(tavt_kit.progress, "LONG_JOB_S", 0.0)  # this machine as slow as the newcomer's
    assert main(["train", "--checkpoint", tiny_ckpt, "--out", str(tmp_path / "b")] + FAST) == 0
    line = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("train: ETA ~"))
    assert "; over an hour: --steps to shorten (about " in line and "steps take an hour here)" in line


def test_distill_prints_its_eta_with_the_flag(tmp_path, tiny_ckpt, capsys, monkeypatch):
    monkeypatch.setattr(tavt_kit.progress, "LONG_JOB_S", 0.0)
    assert main(["distill", "--checkpoint", tiny_ckpt, "--out", str(tmp_path / "d"), "--bound", "0.25",
                 "--drop-blocks", "1"] + FAST) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if "ETA ~" in line]
    assert len(lines) == 1 and lines[0].startswith("distill: ETA ~") and "for 8 steps" in lines[0]
    assert "over an hour: --steps to shorten" in lines[0]


# ------------------------------------------------------------------ the machine
def test_oversubscription_is_named_with_what_to_do():
    msg = oversubscribed(5.2, 2, 2)
    assert msg == ("the machine is oversubscribed: load average 5.2 on 2 cores while torch uses 2 threads in this "
                   "process, which can make it several times slower; set OMP_NUM_THREADS=1, or run fewer jobs at "
                   "once")
    assert "OMP_NUM_THREADS=1 or --threads 1, or run fewer" in oversubscribed(5.2, 2, 4, remedy="--threads 1")
    assert oversubscribed(5.2, 2, 1) is None  # one thread: nothing to oversubscribe
    assert oversubscribed(1.9, 2, 2) is None and oversubscribed(2.0, 2, 2) is None  # not above the cores
    assert oversubscribed(None, 2, 2) is None and oversubscribed(3.0, None, 2) is None  # unknown: no claim
    # the load average is the last minute's: where nothing else is ready to run now (a job that just ended),
    # nothing is said; one other job running beside 2 threads on 2 cores is oversubscription
    assert oversubscribed(5.2, 2, 2, runnable=0) is None
    assert oversubscribed(5.2, 2, 2, runnable=1) == msg


def test_what_runs_elsewhere_is_read_from_the_kernel():
    from tavt_kit.machine import runnable_elsewhere

    n = runnable_elsewhere(samples=3, interval=0.0)
    assert n is None or (isinstance(n, int) and n >= 0)


def test_train_warns_once_on_a_busy_machine(tmp_path, tiny_ckpt, capsys, monkeypatch):
    import os

    import tavt_kit.machine

    monkeypatch.setattr(tavt_kit.machine, "cpu_load", lambda: [4.0 * (os.cpu_count() or 1), 1.0, 1.0])
    monkeypatch.setattr(tavt_kit.machine, "runnable_elsewhere", lambda: 4 * (os.cpu_count() or 1))
    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)
    assert oversubscription() is not None and oversubscription(threads=1) is None
    assert main(["train", "--checkpoint", tiny_ckpt, "--out", str(tmp_path / "a")] + FAST) == 0
    warned = [line for line in capsys.readouterr().out.splitlines() if "oversubscribed" in line]
    assert len(warned) == 1 and warned[0].startswith("train: warning: the machine is oversubscribed")
    assert "OMP_NUM_THREADS=1" in warned[0]
