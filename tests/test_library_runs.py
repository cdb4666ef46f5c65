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
