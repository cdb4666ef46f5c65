"""The demo pipeline end to end at a reduced size: every stage's artefact, and a second run reuses them."""
import json

import pytest
import torch

from tavt_kit.cli import main

pytest.importorskip("openvino")


def test_demo_pipeline_quick(tmp_path, capsys):
    torch.set_num_threads(1)
    out = tmp_path / "demo"
    assert main(["demo", "--quick", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert text.strip().splitlines()[-1] == f"report: {out / 'report' / 'report.html'}"
    for stage in ("1/7 train", "2/7 distill", "3/7 latency table", "4/7 search", "5/7 export", "6/7 bench"):
        assert f"[{stage}" in text
    sup = out / "distill" / "best.safetensors"
    assert sup.exists() and (out / "train" / "best.safetensors").exists()
    table = json.loads((out / "bench" / "latency_table.json").read_text())
    assert table["target"]["backend"] == "torch"
    search = json.loads((out / "search" / "search.json").read_text())
    assert {b["objective"] for b in search["budgets"]} == {"latency", "macs"}
    assert search["source"]["data"]["name"] == "cluttered-digits"  # the built-in benchmark, by default
    assert search["settings"]["fitness"] == "nll" and search["budgets"][0]["best"]["test_interval"]
    assert search["latency"]["source"] == "table"
    export = json.loads((out / "export" / "export.json").read_text())
    assert export["verified"] is True and set(export["files"]) == {"onnx", "openvino"}
    assert (out / "export" / "model.onnx").exists() and (out / "export" / "model.xml").exists()
    bench = json.loads((out / "bench" / "bench.json").read_text())
    assert any(r["label"] == "full" for r in bench["results"])
    html = (out / "report" / "report.html").read_text()
    assert "verified" in html and "data:image/png;base64," in html
    # a second run reuses every finished stage
    assert main(["demo", "--quick", "--out", str(out)]) == 0
    again = capsys.readouterr().out
    assert again.count("reusing") == 6
    # other settings rerun the stage (and every stage after it), saying why; an unfinished stage is not reused
    assert main(["demo", "--quick", "--population", "5", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert text.count("reusing") == 3 and "(again: other settings (population 6 -> 5))" in text
    assert "(again: an earlier stage ran again)" in text
    doc = json.loads((out / "stages.json").read_text())
    assert doc["format"] == "fgvc-kit/demo-stages" and doc["version"] == 1
    stages = doc["stages"]
    assert all(s["ok"] for s in stages.values())
    stages["export"]["ok"] = False  # as if the export had failed its verification
    (out / "stages.json").write_text(json.dumps(doc))
    assert main(["demo", "--quick", "--population", "5", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "[5/7 export with verification] ... (again: its last run did not finish successfully)" in text


def test_the_demo_latency_budget_is_a_share_of_your_model(tmp_path, capsys):
    """The demo's latency budget is a share of your model's latency (judged by the ratio timed beside it): by default
    midway between the smallest schedule's predicted share and 1; a share the space cannot reach is refused; the old
    point-between-schedules flag is refused naming the new one."""
    from tavt_kit.cli import main
    from tavt_kit.demo import latency_share
    from tavt_kit.errors import ConfigError

    assert latency_share(None, 0.6) == pytest.approx(0.8)
    assert latency_share(0.7, 0.6) == 0.7
    with pytest.raises(ConfigError, match=r"^--latency-share 0.5: below the smallest schedule .* at least 0.60$"):
        latency_share(0.5, 0.6)
    with pytest.raises(SystemExit):
        main(["demo", "--latency-fraction", "0.5", "--out", str(tmp_path / "a")])
    assert "--latency-share" in capsys.readouterr().err
    assert main(["demo", "--latency-share", "1.5", "--out", str(tmp_path / "b")]) == 2
    assert "--latency-share 1.5: expected a share" in capsys.readouterr().err
