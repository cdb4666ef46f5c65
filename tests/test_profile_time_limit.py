"""`bench profile` under a whole-run time limit: it ends within the limit plus a bounded overhead, whatever the
load, keeps at least min_repeats per point, and states each point's noise instead of waiting for convergence."""
import math
import re
import time

import pytest

import tavt_kit
from tavt_kit.bench import TimingPolicy, measure_round_robin, profile_latency
from tavt_kit.bench import timing as timing_mod
from tavt_kit.bench.profile_cap import (MIN_TIME_LIMIT_S, PROFILE_TIME_LIMIT_S, check_time_limit, noise_summary,
                                        point_name)
from tavt_kit.bench.timing import TimeCap
from tavt_kit.cli import main
from tavt_kit.errors import ConfigError
from tavt_kit.target import DeploymentTarget

#: a policy that never converges and whose per-part budget never ends a timing: only the time limit does
ENDLESS = TimingPolicy(warmup=1, min_repeats=3, max_repeats=10 ** 7, budget_s=1e4, rel_ci=1e-12, chunk_s=0.01)
EAGER = DeploymentTarget(backend="torch", threads=1)
#: what a generous bound allows beyond the limit (building the parts, the calls to min_repeats, fitting)
OVERHEAD_S = 30.0
SUMMARY = re.compile(r"^profiled \d+ points( and \d+ whole models)? in \d+ s \(timing \d+ s of the [\d.]+ s limit\); "
                     r"noise median [\d.]+ %, worst [\d.]+ % \(\S.*\)$")


def small():
    return tavt_kit.create_model("vit_tiny_patch16_224", img_size=32, patch_size=8, embed_dim=32, depth=2,
                                 num_heads=2, num_classes=3).eval()


def test_a_profile_ends_within_its_limit_and_records_each_points_noise():
    t0 = time.perf_counter()
    table = profile_latency(small(), target=EAGER, grid=[4, 8], policy=ENDLESS, time_limit_s=1.5, validate=1)
    wall = time.perf_counter() - t0
    assert wall < 1.5 + OVERHEAD_S
    d = table.to_dict()
    t, noise = d["time"], d["noise"]
    assert t["time_limit_s"] == 1.5 and t["limit_reached"] and t["timing_s"] < 1.5 + OVERHEAD_S
    assert t["points"] == 13 and t["whole_models"] == 5  # four anchors (no EViT under 4 blocks), one random
    # every part and whole model has its relative noise (95 % CI half-width / median)
    P = 1  # the class token
    names = {"embed"} | {f"plain{P + n}" for n in (4, 8, 16)} | {f"head{P + n}" for n in (4, 8, 16)} \
        | {f"drop{P + a}_{P + b}" for a in (4, 8, 16) for b in (4, 8, 16) if b <= a}
    assert set(noise["points"]) == names
    assert {"anchor:full", "random:0", "reference"} <= set(noise["whole_models"])
    values = list(noise["points"].values()) + list(noise["whole_models"].values())
    assert all(v >= 0 for v in values)
    assert noise["worst"] == max(v for v in values if math.isfinite(v)) and noise["median"] <= noise["worst"]
    assert noise["worst_point"] in names | set(noise["whole_models"]) | {"reference (whole models)"}
    assert SUMMARY.match(noise_summary(d)), noise_summary(d)
    assert "converged" not in noise_summary(d)


def test_round_robin_stops_at_its_share_of_the_cap_under_load():
    slow = {"k": 0}

    def slowing():  # a machine that gets busier and busier: each call slower than the last
        slow["k"] += 1
        time.sleep(min(0.02, 0.0002 * slow["k"]))

    fns = {"fast": lambda: None, "slowing": slowing, "slower than the cap": lambda: time.sleep(0.15)}
    cap = TimeCap(0.1, len(fns))
    policy = TimingPolicy(warmup=3, min_repeats=4, max_repeats=10 ** 7, budget_s=1e4, rel_ci=1e-12, cap=cap)
    t0 = time.perf_counter()
    stats = measure_round_robin(fns, policy)
    elapsed = time.perf_counter() - t0
    # past its share, a callable takes only what it lacks to min_repeats: the one slower than the whole cap has
    # one warm-up call and min_repeats timed ones, nothing more
    assert stats["slower than the cap"].n == 4 and stats["slower than the cap"].warmup == 1
    assert all(s.n >= 4 for s in stats.values())
    assert elapsed < 0.1 + 5 * 0.15 + 2.0  # the cap, the slow callable's calls, a generous margin
    assert cap.reached and cap.spent == pytest.approx(elapsed, abs=0.05)
    assert set(cap.noise) == set(fns) and cap.share(1) == 0.0


def test_progress_lines_say_time_spent_and_the_limit(monkeypatch):
    monkeypatch.setattr(timing_mod, "PROGRESS_EVERY_S", 0.0)
    lines = []
    cap = TimeCap(0.3, 2, shown_limit_s=60, spent_before=12)
    measure_round_robin({"a": lambda: time.sleep(0.001), "b": lambda: None},
                        TimingPolicy(warmup=1, min_repeats=2, rel_ci=1e-12, budget_s=1e4, chunk_s=0.01, cap=cap),
                        progress=lines.append)
    assert lines and all(re.match(r"timing: \d+ s of the 60 s limit \(2 round-robin\)$", x) for x in lines), lines
    assert not any("converged" in x for x in lines)
    uncapped = []
    measure_round_robin({"a": lambda: time.sleep(0.001)}, TimingPolicy(warmup=1, min_repeats=2, rel_ci=1e-12,
                                                                       budget_s=0.6, chunk_s=0.01),
                        progress=uncapped.append)
    assert uncapped and re.match(r"timing: \d+ s of at most 1 s \(1 round-robin\)$", uncapped[0]), uncapped


@pytest.mark.parametrize("bad", [0.5, 0, -3, float("nan"), float("inf"), True, "10"])
def test_a_limit_below_the_minimum_is_refused(bad):
    with pytest.raises(ConfigError, match=r"^time_limit_s=.*: expected seconds of timing for the whole profile, at "
                                          r"least 1 "):
        check_time_limit(bad)
    check_time_limit(None)
    check_time_limit(MIN_TIME_LIMIT_S)


def test_profile_latency_refuses_a_limit_below_the_minimum_before_any_work():
    with pytest.raises(ConfigError, match="time_limit_s=0.2: expected"):
        profile_latency("no-such-model", target=EAGER, time_limit_s=0.2)


def test_cli_refuses_a_limit_below_the_minimum_in_one_line(capsys):
    assert main(["bench", "profile", "--time-limit", "0.5", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "--time-limit 0.5: expected seconds of timing for the whole profile, at least 1" in err
    assert err.count("\n") == 1 and "Traceback" not in err


def test_cli_profile_prints_one_noise_summary_line(tmp_path, capsys):
    out = tmp_path / "t"
    assert main(["bench", "profile", "--grid", "32,64", "--no-calibrate", "--time-limit", "1", "--warmup", "1",
                 "--min-repeats", "3", "--threads", "1", "--quiet", "--no-plot", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    lines = [x for x in text.splitlines() if x.startswith("profiled ")]
    assert len(lines) == 1 and SUMMARY.match(lines[0]), text
    assert "converged" not in text


def test_defaults_and_names():
    from tavt_kit.cli.bench import PROFILE_TIME_LIMIT_S as CLI_DEFAULT

    assert CLI_DEFAULT == PROFILE_TIME_LIMIT_S  # the parser's torch-free copy of the library's default
    assert point_name(("drop", 65, 40, 64, 39)) == "drop65_40" and point_name(("plain", 65)) == "plain65"
    assert point_name(("embed",)) == "embed" and point_name(("anchor",)) == "reference"
    assert point_name("anchor:full") == "anchor:full"
    assert "cap" not in TimingPolicy(cap=TimeCap(1.0, 1)).to_dict()
