"""The latency-budget report answers the shipping question: which file, measured latency vs budget, accuracy lost."""
from __future__ import annotations

import hashlib
import json
import os
import statistics

import pytest

from tavt_kit.cli import main
from tavt_kit.errors import ConfigError
from tavt_kit.report import build_report


WEIGHTS = "ab" * 32  # the searched weights' content key (tavt_kit.models.weights_digest)


def point(counts, macs, lat, hold, test):
    return {"counts": counts, "macs": macs, "latency_ms": lat, "holdout_accuracy": hold, "test_accuracy": test}


def write_inputs(tmp_path):
    full = point([64, 64], 4.0e7, 12.0, 0.95, 0.94)
    mid = point([32, 16], 2.0e7, 7.0, 0.90, 0.91)
    small = point([16, 8], 1.0e7, 4.0, 0.80, 0.79)
    search = {
        "format": "fgvc-kit/search", "objective": "latency", "latency": {"source": "table", "target": {
            "backend": "openvino", "device": "cpu", "batch_size": 1, "threads": 1}},
        "model": {"backbone": {"name": "fgvc_tiny"}, "img_size": [64, 64], "depth": 2, "num_patches": 64,
                  "num_classes": 10, "weights_sha256": WEIGHTS},
        "full": full, "smallest": small, "candidates": [dict(p, accuracy=p["holdout_accuracy"])
                                                        for p in (full, mid, small)],
        "pareto_front": [small, mid, full],
        "budgets": [{"label": "8ms", "objective": "latency", "limit": 0.008, "best": mid, "baselines": {},
                     "schedule_file": "schedule-8ms.json"},
                    {"label": "5ms", "objective": "latency", "limit": 0.005, "best": small, "baselines": {}}],
        "timing": {"evaluations": 3}, "settings": {"holdout_images": 100, "test_images": 400},
        "machine": {"cpu": "test"},
    }
    (tmp_path / "search").mkdir()
    sp = tmp_path / "search" / "search.json"
    sp.write_text(json.dumps(search))
    # bench measured the 8ms pick at 9 ms (over its budget) and the full model
    bench = {"format": "fgvc-kit/bench", "target": search["latency"]["target"], "machine": {"cpu": {"model": "x"}},
             "model": {"name": "fgvc_tiny", "weights_sha256": WEIGHTS},
             "results": [{"schedule": [64, 64], "latency_ms": {"p50": 13.0, "p90": 14.0}},
                         {"schedule": [32, 16], "latency_ms": {"p50": 9.0, "p90": 9.5}}]}
    bp = tmp_path / "bench.json"
    bp.write_text(json.dumps(bench))
    (tmp_path / "export").mkdir()
    (tmp_path / "export" / "model.xml").write_text("<net/>")
    (tmp_path / "export" / "model.bin").write_bytes(b"\0" * 8)
    digest = {n: hashlib.sha256((tmp_path / "export" / n).read_bytes()).hexdigest() for n in ("model.xml", "model.bin")}
    export = {"format": "fgvc-kit/export", "version": 1, "status": "verified", "verified": True,
              "model": {"weights_sha256": WEIGHTS}, "schedule": {"counts": [32, 16], "reducers": ["drop", "drop"]},
              "formats": ["openvino"], "precision": "fp32",
              "files": {"openvino": {"path": "model.xml", "sha256": digest["model.xml"], "weights": "model.bin",
                                     "weights_sha256": digest["model.bin"]}},
              "verification": {"results": {"openvino": {"passed": True, "top1_exported": 91.0, "top1_pytorch": 91.0,
                                                        "precision_used": "f32"}}}}
    ep = tmp_path / "export" / "export.json"
    ep.write_text(json.dumps(export))
    return sp, bp, ep


def test_report_says_what_to_ship_and_whether_it_meets_the_budget(tmp_path):
    sp, bp, ep = write_inputs(tmp_path)
    paths = build_report(str(sp), str(tmp_path / "report"), str(bp), [str(ep)], budgets=["10ms"])
    md = open(paths["markdown"]).read()
    ship = md[md.index("## What to ship"):md.index("## Reference points")]
    rows = {line.split("|")[1].strip(): line for line in ship.splitlines() if line.startswith("| ") and "ms" in line}
    # 8 ms: the verified export, measured 9 ms by bench: over the budget, flagged, negative margin
    assert "`../export/model.xml`" in rows["8ms"] and "9 ms measured / 8 ms" in rows["8ms"]
    assert "**FAIL**" in rows["8ms"] and "-1 ms" in rows["8ms"] and "(-3.00 points)" in rows["8ms"]
    # 5 ms: only predicted; passes on the prediction, says so, and is not exported yet
    assert "4 ms predicted / 5 ms" in rows["5ms"] and "pass" in rows["5ms"] and "not exported yet" in rows["5ms"]
    assert "predicted from the table; measure it" in ship and "fgvc-kit export --checkpoint" in ship
    # any budget, answered from the front
    assert "10ms (from the front)" in ship and "32,16" in rows["10ms (from the front)"]
    html = open(paths["html"]).read()
    assert "What to ship" in html and "data:image/png;base64" in html
    assert os.path.isfile(os.path.join(tmp_path, "report", "accuracy_vs_latency.png"))


def test_report_command_takes_any_budget_and_refuses_one_nothing_fits(tmp_path, capsys):
    sp, bp, ep = write_inputs(tmp_path)
    assert main(["report", "--search", str(sp), "--bench", str(bp), "--export", str(ep), "--budget", "10ms",
                 "--out", str(tmp_path / "r")]) == 0
    assert main(["report", "--search", str(sp), "--budget", "1ms", "--out", str(tmp_path / "r2")]) == 2
    assert "nothing on its Pareto front fits (its cheapest schedule costs 4ms)" in \
        capsys.readouterr().err
    with pytest.raises(ConfigError):
        build_report(str(sp), str(tmp_path / "r3"), budgets=["12"])


def test_report_measures_the_picks_here_when_the_checkpoint_is_here(tmp_path, capsys):
    import tavt_kit

    sp, _, _ = write_inputs(tmp_path)
    ckpt = str(tmp_path / "supernet.safetensors")
    model = tavt_kit.create_model("fgvc_tiny", depth=2, num_classes=10)
    tavt_kit.save_checkpoint(model, ckpt)
    doc = json.loads(sp.read_text())
    doc["source"] = {"checkpoint": ckpt}
    doc["model"]["weights_sha256"] = tavt_kit.models.weights_digest(model)  # the search of this checkpoint
    doc["latency"]["target"] = {"backend": "torch", "device": "cpu", "batch_size": 1, "threads": 1}
    sp.write_text(json.dumps(doc))
    out = tmp_path / "r"
    assert main(["report", "--search", str(sp), "--time-budget", "0.05", "--out", str(out)]) == 0
    assert (out / "bench.json").is_file()
    md = (out / "report.md").read_text()
    ship = md[md.index("## What to ship"):md.index("## Reference points")]
    # the verdict is the measurement on the search's runtime, with the table's prediction beside it
    assert ship.count("ms measured /") == 2 and "ms predicted /" not in ship and ship.count("(predicted ") == 2
    assert main(["report", "--search", str(sp), "--no-remeasure", "--out", str(tmp_path / "r2")]) == 0
    assert "ms predicted /" in (tmp_path / "r2" / "report.md").read_text()


def test_a_malformed_search_result_is_one_line(tmp_path, capsys):
    bad = tmp_path / "search.json"
    bad.write_text(json.dumps({"format": "fgvc-kit/search", "budgets": [{"label": "x"}]}))
    assert main(["report", "--search", str(bad), "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "search.json: budgets[0]" in err


def test_a_pick_is_shown_the_latency_of_its_own_precision_only():
    """A search of (schedule, precision) pairs picks int8 and fp32 schedules: a bench.json timed at fp32 must not
    lend its figure to an int8 pick of the same schedule (a search of one precision matches by schedule)."""
    from tavt_kit.report.evidence import bench_evidence, wanted
    from tavt_kit.search import Pick, SearchResult

    search = SearchResult({"model": {"num_patches": 4}, "full": {"counts": [4, 4]}})
    bench = {"target": {"precision_requested": "f32"},
             "results": [{"schedule": [4, 2], "latency_ms": {"p50": 1.0}}, {"schedule": None, "latency_ms": {"p50": 2.0}}]}

    def row(d):
        return bench_evidence(bench, wanted(Pick.from_dict(d), search), (4, 4))

    assert row({"counts": [4, 2], "precision": "int8"}) == (None, ["fp32 latency for an int8 pick"])
    assert row({"counts": [4, 2], "precision": "fp32"})[0]["latency_ms"]["p50"] == 1.0
    assert row({"counts": [4, 2]})[0]["latency_ms"]["p50"] == 1.0
    assert row({"counts": [4, 4]})[0]["latency_ms"]["p50"] == 2.0


def test_a_share_is_judged_as_the_search_judges_it_by_the_ratio_rotation_by_rotation(tmp_path):
    """A budget of 70 % of your model's latency, and bench.json's run timed the pick at a median of 0.69 of your
    model. With its rotations recorded, the ratio rotation by rotation ran up to 0.74: the report judges it over,
    as the search's final round does, and says why; timed steadily, it passes; a bench.json without rotations
    (older files) is judged by the medians."""
    sp, bp, ep = write_inputs(tmp_path)
    search = json.loads(sp.read_text())
    search["budgets"][0].update(label="70%", fraction=0.7, limit=0.0084, schedule_file="schedule-70pct.json")
    sp.write_text(json.dumps(search))
    bench = json.loads(bp.read_text())

    def timed(ratios):
        full = [13.0 + 0.5 * (i % 2) for i in range(len(ratios))]  # the machine's speed moves both alike
        rows = bench["results"]
        pick = [r * f for r, f in zip(ratios, full)]
        for row, xs in ((rows[0], full), (rows[1], pick)):
            row["latency_ms"] = {"p50": statistics.median(xs), "samples": xs, "rounds_of": list(range(len(xs)))}
        bp.write_text(json.dumps(bench))
        paths = build_report(str(sp), str(tmp_path / "report"), str(bp), [str(ep)])
        md = open(paths["markdown"]).read()
        ship = md[md.index("## What to ship"):md.index("## Reference points")]
        return next(line for line in ship.splitlines() if line.startswith("| 70%")), ship

    moved = [0.66, 0.67, 0.69, 0.69, 0.69, 0.69, 0.70, 0.72, 0.73, 0.74, 0.67, 0.69, 0.71, 0.73, 0.66, 0.69, 0.69,
             0.68, 0.72, 0.67]
    row, ship = timed(moved)
    assert "**FAIL**" in row and "0.690 [" in row and "of your model's" in row
    assert "its median is within the budget, but rotation by rotation it ran at up to 0.71" in ship
    assert "over 20 rotations" in ship and "the table under-predicts" not in ship
    row, _ = timed([0.62 + 0.002 * (i % 5) for i in range(20)])
    assert "pass" in row and "**FAIL**" not in row
    for r in bench["results"]:  # no rotations recorded: the medians, 9 / 13 = 0.69 of your model
        r["latency_ms"] = {"p50": r["latency_ms"]["p50"]}
    bench["results"][1]["latency_ms"]["p50"] = 9.0
    bp.write_text(json.dumps(bench))
    md = open(build_report(str(sp), str(tmp_path / "report"), str(bp), [str(ep)])["markdown"]).read()
    assert "pass" in next(line for line in md.splitlines() if line.startswith("| 70%"))


def test_a_speed_up_divides_a_prediction_by_a_prediction_and_a_measurement_by_a_measurement(tmp_path):
    """The full model timed on the target (12.5 ms; its table predicts 12.0) and a baseline predicted only (6 ms):
    its speed-up is 12.0 / 6 (both predicted, said so), never the measurement over the prediction; the pick timed
    too (5 ms) is 12.5 / 5 (both measured)."""
    sp, _, _ = write_inputs(tmp_path)
    doc = json.loads(sp.read_text())
    doc["full"]["latency_measured_ms"] = 12.5
    row = doc["budgets"][0]
    row["best"] = dict(row["best"], latency_measured_ms=5.0)
    row["baselines"] = {"uniform": point([24, 20], 2.0e7, 6.0, 0.85, 0.86)}
    sp.write_text(json.dumps(doc))
    md = open(build_report(str(sp), str(tmp_path / "r"))["markdown"]).read()
    table = md[md.index("## Budget 8ms"):]
    uniform = next(ln for ln in table.splitlines() if ln.startswith("| baseline: uniform"))
    searched = next(ln for ln in table.splitlines() if ln.startswith("| **searched**"))
    assert "| 6.00 (pred.) | – | 2.00x (pred.) |" in uniform
    assert "| 5.00 | – | 2.50x |" in searched
    full = next(ln for ln in md.splitlines() if ln.startswith("| full model"))
    assert "| 12.50 | – | 1.00x |" in full
