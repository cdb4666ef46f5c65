"""``bench`` says each warning once, whether its output is a terminal, a pipe or JSON; ``bench predict`` prints and
writes a file only when ``--out`` asks for one; ``bench profile`` names an oversubscribed machine."""
import json
import os

import pytest

import tavt_kit.machine
from tavt_kit.cli import main

pytestmark = pytest.mark.usefixtures("one_thread")

FAST = ["--warmup", "1", "--min-repeats", "3", "--time-budget", "0.02", "--threads", "1", "--quiet"]


@pytest.fixture
def busy(monkeypatch):
    """A machine whose load is four times its cores: measuring notes it."""
    load = [4.0 * (os.cpu_count() or 1), 1.0, 1.0]
    monkeypatch.setattr(tavt_kit.machine, "cpu_load", lambda: load)
    monkeypatch.setattr(tavt_kit.machine, "runnable_elsewhere", lambda: 4 * (os.cpu_count() or 1))


@pytest.mark.parametrize("json_out", [False, True])
def test_bench_measure_says_every_warning_once(tmp_path, capsys, busy, json_out):
    out = tmp_path / "b"
    assert main(["bench", "measure", "--img-size", "32", "--keep-ratio", "0.7", "--no-plot", "--out", str(out)]
                + FAST + (["--json"] if json_out else [])) == 0
    captured = capsys.readouterr()
    # a log file that holds both streams; with --json, stdout is the results' data and the lines are on stderr
    text = captured.err if json_out else captured.out + captured.err
    warnings = json.load(open(out / "bench.json"))["warnings"]
    assert any("the machine was busy" in w for w in warnings)
    for w in warnings:
        assert text.count(w) == 1, (w, text)
    if json_out:
        assert json.loads(captured.out)["warnings"] == warnings


@pytest.fixture(scope="module")
def table(tmp_path_factory):
    out = tmp_path_factory.mktemp("t")
    assert main(["bench", "profile", "--img-size", "32", "--grid", "8,16", "--no-calibrate", "--no-plot",
                 "--out", str(out)] + FAST) == 0
    return str(out / "latency_table.json")


def test_bench_predict_writes_no_file_unless_asked(tmp_path, capsys, table, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["bench", "predict", "--latency-table", table, "--keep-ratio", "0.7"]) == 0
    out = capsys.readouterr().out
    assert "keep 0.7" in out and "ms" in out and "wrote" not in out
    assert os.listdir(tmp_path) == []  # no runs/bench/predictions.json
    assert main(["bench", "predict", "--latency-table", table, "--keep-ratio", "0.7", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["predictions"][1]["label"] == "keep 0.7"
    assert os.listdir(tmp_path) == []
    assert main(["bench", "predict", "--latency-table", table, "--keep-ratio", "0.7", "--out", "p"]) == 0
    assert f"wrote {os.path.join('p', 'predictions.json')}" in capsys.readouterr().out
    saved = json.load(open(tmp_path / "p" / "predictions.json"))
    assert [r["label"] for r in saved["predictions"]] == ["full", "keep 0.7"]


def test_bench_profile_warns_once_when_the_machine_is_oversubscribed(tmp_path, capsys, busy):
    argv = ["bench", "profile", "--img-size", "32", "--grid", "8,16", "--no-calibrate", "--no-plot"]
    two = FAST[:FAST.index("--threads")] + ["--threads", "2", "--quiet"]
    assert main(argv + ["--out", str(tmp_path / "a")] + two) == 0
    err = [line for line in capsys.readouterr().err.splitlines() if "oversubscribed" in line]
    assert len(err) == 1 and err[0].startswith("fgvc-kit: warning: the machine is oversubscribed")
    assert "OMP_NUM_THREADS=1 or --threads 1, or run fewer jobs at once" in err[0]
    assert main(argv + ["--out", str(tmp_path / "b")] + FAST) == 0  # one thread: nothing to say
    assert "oversubscribed" not in capsys.readouterr().err
