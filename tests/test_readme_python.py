"""README's "From Python" example runs as written (on a tiny supernet, a synthetic table and small data)."""
import os
import re

import pytest
import torch

import tavt_kit

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
pytestmark = pytest.mark.usefixtures("one_thread")


def _example() -> str:
    text = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()
    section = text.split("## From Python", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_readme_python_example_runs(tmp_path, monkeypatch, capsys):
    from test_search_api import linear_table

    pytest.importorskip("openvino")  # the example exports to OpenVINO, as README's install gives it

    torch.manual_seed(0)
    model = tavt_kit.create_model("fgvc_tiny", depth=3, img_size=32, num_classes=10)
    model.spec["data"] = {"name": "cluttered-digits", "options": {"train": 100, "holdout": 40, "test": 60}}
    tavt_kit.save_checkpoint(model, tmp_path / "supernet.safetensors")
    model = tavt_kit.load_checkpoint(tmp_path / "supernet.safetensors")
    table = linear_table(model)
    assert 0.6 < table.predict(model.full_schedule()) < 0.75  # the example's 0.6ms budget is 80-90 % of the full model
    table.save(tmp_path / "latency_table.json")
    monkeypatch.chdir(tmp_path)
    code = _example().replace("out=\"search\")", "out=\"search\", evolution=tavt_kit.search.EvolutionSettings("
                              "population=4, generations=1, mutations=3, crossovers=3))")
    scope = {}
    exec(compile(code, "README.md (From Python)", "exec"), scope)
    budget, exported = scope["budget"], scope["exported"]
    # a search on a table alone says that its latency verdicts are predictions
    assert "every latency verdict of this search is predicted" in capsys.readouterr().out
    assert budget.best.latency_ms <= 0.6 and scope["check"].passed
    assert scope["again"].budgets["0.6ms"].best == budget.best
    # what the budget recommends is what was exported
    assert budget.recommended is None  # no parent recorded: the searched pick ships
    assert budget.shipped.family == "searched" and budget.shipped.weights == "supernet"
    assert budget.shipped.pick == budget.best and budget.shipped.weights_sha256 == scope["result"].doc["model"]["weights_sha256"]
    assert exported.doc["schedule"]["counts"] == list(budget.shipped.pick.counts)
    assert list(exported.doc["files"]) == ["openvino"] and os.path.isfile(tmp_path / "export" / "export.json")
