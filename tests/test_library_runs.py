"""Fine-tuning and distillation from Python: tavt_kit.train.fine_tune and tavt_kit.distill.distill, no command line."""
from __future__ import annotations

import json
import os

import pytest

from tavt_kit.distill import DistillResult, DistillSettings, distill
from tavt_kit.errors import ConfigError
from tavt_kit.train import FineTuneResult, FineTuneSettings, fine_tune

TINY = dict(dataset="demo", steps=4, batch_size=8, warmup_steps=1, eval_every=2, save_every=2, log_every=1,
            eval_batch_size=64, workers=0, progress=False)


def test_fine_tune_then_distill_from_python_and_resume(tmp_path):
    lines = []
    run = fine_tune(FineTuneSettings(model="fgvc_tiny", **TINY), out=str(tmp_path / "ft"), device="cpu",
                    log=lines.append)
    assert isinstance(run, FineTuneResult) and run.results["steps"] == 4
    assert os.path.isfile(run.last_checkpoint) and os.path.isfile(run.best_checkpoint)
    assert run.test["last"]["n"] > 0 and 0 <= run.test["last"]["top1"] <= 1
    assert json.loads(open(run.results_file).read())["test"] == run.test
    assert lines and not any("--" in line for line in lines)  # the library's lines name no command-line option
    # a resume after the finished run: the stored settings, nothing more to train
    again = fine_tune(FineTuneSettings(steps=4), out=str(tmp_path / "ft"), resume=True, device="cpu")
    assert again.results["steps"] == 4 and again.results["resumed_from"] == 4

    sup = distill(run.best_checkpoint, DistillSettings(steps=4, batch_size=8, warmup_steps=1, eval_every=2, save_every=2,
                                                       bound=0.25, drop_blocks="1", workers=0, progress=False),
                  out=str(tmp_path / "d"), device="cpu")
    assert isinstance(sup, DistillResult) and os.path.isfile(sup.best_checkpoint)
    assert {"full", "smallest"} <= set(sup.test) and sup.results["steps"] == 4
    assert sup.parent_mix == pytest.approx(0.7)
    from tavt_kit.models import load_checkpoint

    assert "search_space" in load_checkpoint(sup.best_checkpoint).spec


def test_a_bad_setting_is_refused_naming_the_parameter(tmp_path):
    with pytest.raises(ConfigError, match=r"^bound=: expected a drop ratio in \(0, 1\)") as e:
        distill(_tiny_parent(tmp_path), DistillSettings(bound=1.5, steps=2, batch_size=8, workers=0),
                out=str(tmp_path / "bad"), device="cpu")
    assert "--" not in str(e.value)
    with pytest.raises(ConfigError, match=r"resume=True and overwrite=True contradict each other") as e:
        fine_tune(out=str(tmp_path / "x"), resume=True, overwrite=True)
    assert "--" not in str(e.value)


def _tiny_parent(tmp_path) -> str:
    from tavt_kit.models import save_checkpoint
    from tavt_kit.train import build_model

    path = str(tmp_path / "parent.safetensors")
    save_checkpoint(build_model(num_classes=10, model="fgvc_tiny"), path)
    return path


def test_epochs_size_the_steps_to_the_dataset(tmp_path):
    """``epochs`` passes over the training split: the steps follow its size, the warm-up keeps the recipe's
    share; with ``steps`` it is a contradiction, said naming both (the CLI's flags, the library's parameters)."""
    lines = []
    settings = {k: v for k, v in TINY.items() if k not in ("steps", "warmup_steps")}
    run = fine_tune(FineTuneSettings(model="fgvc_tiny", epochs=0.25, test=False, **settings),
                    out=str(tmp_path / "ft"), device="cpu", log=lines.append)
    n = json.loads(open(os.path.join(run.out, "config.json")).read())["args"]
    import math

    from tavt_kit.data import build_dataset

    images = len(build_dataset("demo", split="train"))
    assert run.results["steps"] == n["steps"] == math.ceil(0.25 * images / 8)
    assert any(line.startswith(f"epochs=0.25: {run.results['steps']} steps of 8 images") for line in lines)
    with pytest.raises(ConfigError, match=r"^steps=4 and epochs=2 both given"):
        fine_tune(FineTuneSettings(model="fgvc_tiny", epochs=2, **TINY), out=str(tmp_path / "x"))
    with pytest.raises(ConfigError, match=r"^epochs=0: expected a positive number"):
        fine_tune(FineTuneSettings(model="fgvc_tiny", epochs=0), out=str(tmp_path / "y"))


def test_epochs_from_the_command_line(tmp_path, capsys):
    from tavt_kit.cli import main

    assert main(["train", "--dataset", "demo", "--steps", "4", "--epochs", "1", "--out", str(tmp_path / "t")]) == 2
    err = capsys.readouterr().err
    assert "--steps 4 and --epochs 1 both given" in err and "Traceback" not in err
