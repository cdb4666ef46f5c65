"""fgvc-kit search on the demo data (MAC and latency-table budgets, resume, outputs) and fgvc-kit report."""
import json
import math

import pytest
import torch

import tavt_kit
from tavt_kit.cli import main
from tavt_kit.cli.common import parse_macs, parse_seconds

EVO = ["--population", "5", "--generations", "2", "--mutations", "4", "--crossovers", "4", "--subset", "48",
       "--batch-size", "48"]


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def supernet(tmp_path_factory):
    torch.manual_seed(0)
    m = tavt_kit.create_model("fgvc_tiny", depth=3, img_size=32)
    return str(tavt_kit.save_checkpoint(m, tmp_path_factory.mktemp("s") / "supernet.safetensors"))


def test_budget_parsing():
    assert parse_macs("20G") == 20e9 and parse_macs("850M") == 850e6 and parse_macs("2.5e9") == 2.5e9
    assert parse_seconds("15ms") == pytest.approx(0.015) and parse_seconds("0.2s") == 0.2
    assert parse_seconds("800us") == pytest.approx(8e-4) and parse_seconds("12") == pytest.approx(0.012)
    for bad, fn in (("fast", parse_seconds), ("-3G", parse_macs), ("0ms", parse_seconds)):
        with pytest.raises(tavt_kit.ConfigError):
            fn(bad)


def test_search_under_a_mac_budget_and_resume(tmp_path, supernet, capsys):
    model = tavt_kit.load_checkpoint(supernet)
    full = tavt_kit.count_macs(model).total()
    out = tmp_path / "search"
    argv = ["search", "--checkpoint", supernet, "--macs-budget", f"{0.8 * full:.0f}", "--out", str(out)] + EVO
    assert main(argv) == 0
    res = json.loads((out / "search.json").read_text())
    assert res["format"] == "fgvc-kit/search" and res["settings"]["holdout_images"] == 48
    b = res["budgets"][0]
    assert b["best"]["macs"] <= 0.8 * full and b["best"]["test_accuracy"] is not None
    assert set(b["baselines"]) == {"uniform", "evit", "tome"}  # ToMe off the shelf: merge, constant r
    assert all(d["macs"] <= 0.8 * full for d in b["baselines"].values())
    sched = tavt_kit.TokenSchedule.load(out / b["schedule_file"])
    assert list(sched.counts) == b["best"]["counts"] and model.make_schedule(sched) == sched
    assert res["pareto_front"] and (out / "pareto_macs.png").exists()
    assert "searched" in capsys.readouterr().out
    # a second run replays the journal: nothing is evaluated again, same result
    assert main(argv) == 0
    again = json.loads((out / "search.json").read_text())
    assert again["timing"]["evaluations"] == 0
    # the same pick, accuracies and costs; the held-out NLL/KL of a schedule the journal does not hold (a ToMe
    # baseline) are computed again, and on CUDA a merge's scatter_add sums with atomics: low bits may differ
    noisy = {"holdout_nll", "holdout_kl"}
    first, second = b["best"], again["budgets"][0]["best"]
    assert {k: v for k, v in second.items() if k not in noisy} == {k: v for k, v in first.items() if k not in noisy}
    assert {k: second.get(k) for k in noisy} == pytest.approx({k: first.get(k) for k in noisy}, rel=1e-2, abs=1e-7)
    # report from it
    assert main(["report", str(out / "search.json"), "--out", str(tmp_path / "report")]) == 0
    html = (tmp_path / "report" / "report.html").read_text()
    assert "data:image/png;base64," in html and "Budget" in html
    assert (tmp_path / "report" / "accuracy_vs_macs.png").exists()


def test_search_with_a_latency_table(tmp_path, supernet, capsys):
    from tavt_kit.bench import TimingPolicy, profile_latency

    model = tavt_kit.load_checkpoint(supernet)
    table = profile_latency(model, grid=3, calibrate=False,
                            policy=TimingPolicy(warmup=1, min_repeats=3, max_repeats=3, budget_s=0.05))
    table.save(tmp_path / "table.json")
    full_ms = table.predict(model.full_schedule())
    from tavt_kit.search import space_of

    small_ms = table.predict(space_of(model).smallest())
    limit_ms = math.ceil(max(small_ms, full_ms) * 1e4) / 1e4  # one end of the space meets it: the search must find a pick
    out = tmp_path / "s"
    assert main(["search", "--checkpoint", supernet, "--latency-table", str(tmp_path / "table.json"),
                 "--latency-budget", f"{limit_ms:.4f}ms", "--out", str(out)] + EVO) == 0
    res = json.loads((out / "search.json").read_text())
    assert res["objective"] == "latency" and res["latency"]["source"] == "table"
    best = res["budgets"][0]["best"]
    assert best is not None and best["latency_ms"] <= limit_ms + 1e-9
    other = tavt_kit.create_model("fgvc_tiny", depth=4, img_size=32)
    tavt_kit.save_checkpoint(other, tmp_path / "other.safetensors")
    assert main(["search", "--checkpoint", str(tmp_path / "other.safetensors"), "--latency-table",
                 str(tmp_path / "table.json"), "--latency-budget", "5ms", "--out", str(tmp_path / "o")] + EVO) == 2
    # a flag that contradicts the table's target is refused field by field, by the library the command calls
    from tavt_kit.errors import LatencyTableError
    from tavt_kit.search import LatencyOptions
    from tavt_kit.search.objective import table_target

    made = table_target(table).threads or 1
    capsys.readouterr()
    assert main(["search", "--checkpoint", supernet, "--latency-table", str(tmp_path / "table.json"), "--threads",
                 str(made + 1), "--latency-budget", f"{limit_ms:.4f}ms", "--out", str(tmp_path / "t")] + EVO) == 2
    assert f"was made for --threads {made}, not --threads {made + 1}" in capsys.readouterr().err
    with pytest.raises(LatencyTableError, match=f"was made for threads={made}, not threads={made + 1}"):
        tavt_kit.search_schedules(model, None, [f"{limit_ms:.4f}ms"], out=str(tmp_path / "p"),
                                  latency=LatencyOptions(table=table, require={"threads": made + 1}))


def test_search_bad_input(tmp_path, supernet, capsys):
    assert main(["search", "--checkpoint", supernet, "--macs-budget", "lots", "--out", str(tmp_path)]) == 2
    assert "--macs-budget lots: expected a number of MACs" in capsys.readouterr().err
    assert main(["search", "--checkpoint", supernet, "--population", "0", "--out", str(tmp_path)]) == 2
    assert "--population" in capsys.readouterr().err
    assert main(["search", "--checkpoint", supernet, "--latency-budget", "5ms", "--backend", "torch",
                 "--subset", "0", "--out", str(tmp_path)]) == 2
    assert "--subset: expected a positive number" in capsys.readouterr().err
    assert main(["report", str(tmp_path / "missing.json")]) == 2
    assert "missing.json" in (err := capsys.readouterr().err) and "file not found" in err


def test_an_option_objects_field_is_said_as_the_search_flag():
    """The search command builds the library's option objects; an error one of them raises names the flag."""
    from tavt_kit.cli import build_parser
    from tavt_kit.cli.common import flag_message

    p = build_parser("search")
    args = p.parse_args(["--checkpoint", "x", "--macs-budget", "1M"])
    assert flag_message("evaluation.verify_top=-1: expected", p, args) == "--verify-top -1: expected"
    assert flag_message("evaluation.batch_size=0: expected", p, args) == "--eval-batch-size 0: expected"
    assert flag_message("latency.source='x': expected", p, args) == "--latency-source x: expected"
