"""--precisions auto (the default under a latency budget): the lower precisions measured faster than fp32 on the
target are searched, the others skipped with why in one line; a precision without its table is profiled."""
import json

import pytest

import tavt_kit
from tavt_kit.bench import LatencyTable, TimingStats
from tavt_kit.bench import precision_speed as speed
from tavt_kit.bench.identity import model_identity
from tavt_kit.cli import main
from tavt_kit.machine import machine_info
from tavt_kit.search import objective, precisions as auto
from tavt_kit.target import DeploymentTarget

pytestmark = pytest.mark.usefixtures("one_thread")
OV = DeploymentTarget(backend="openvino", device="cpu", threads=1, batch_size=1)


def caps(*names):
    return lambda device: names


def stats(ms_per_round):
    """Timings of one model: one sample a rotation, ``ms_per_round[i]`` in rotation i."""
    return TimingStats([m / 1e3 for m in ms_per_round], rounds_of=list(range(len(ms_per_round))))


def fake_timings(ms):
    """``timings=`` of measure_precision_speed: ``ms`` {precision: per-rotation ms}; records what was timed."""
    seen = {}

    def timings(model, items, *, target, policy, progress):
        seen.update(items=dict(items), target=target)
        return {k: (stats(ms[p]), {}) for k, (_, p) in items.items()}

    return timings, seen


@pytest.fixture(scope="module")
def model():
    return tavt_kit.create_model("fgvc_tiny", depth=2, img_size=32).eval()


def test_a_slower_precision_is_skipped_with_why_and_a_faster_one_kept(model, monkeypatch):
    monkeypatch.setattr(speed, "_have_nncf", lambda: True)
    fp32 = [1.0, 1.1, 0.9, 1.0, 1.05, 0.95, 1.0, 1.0, 1.02, 0.98]
    timings, seen = fake_timings({"fp32": fp32, "bf16": [1.02 * x for x in fp32], "int8": [0.41 * x for x in fp32]})
    res = speed.measure_precision_speed(model, OV, timings=timings, capabilities=caps("FP32", "BF16", "INT8"))
    assert res.kept == ("fp32", "int8")
    assert set(seen["items"]) == {"fp32", "bf16", "int8"}  # fp16 is not declared: not timed
    assert all(s.is_full for s, _ in seen["items"].values())  # the whole model, every precision beside fp32
    assert res.ratios["int8"].ratio == pytest.approx(0.41) and res.ratios["bf16"].ratio == pytest.approx(1.02)
    assert res.skipped == {"bf16": "1.02x of fp32: not faster here",
                           "fp16": "no native fp16 on this CPU: OpenVINO would run f32"}
    line = res.line()
    assert line.startswith("precisions auto: fp32, int8 (int8 0.41x of fp32 measured on openvino cpu, batch 1")
    assert line.endswith("; skipped bf16 (1.02x of fp32: not faster here), fp16 (no native fp16 on this CPU: "
                         "OpenVINO would run f32)")
    assert "\n" not in line and json.dumps(res.to_dict())


def test_a_gain_whose_interval_reaches_one_is_not_kept():
    # a median of 0.90, but in some rotations it was as slow as fp32: not measurably faster
    ratio = speed.paired_ratio(stats([0.9, 0.8, 1.05, 0.9, 1.1, 0.85, 1.0, 0.9]), stats([1.0] * 8))
    assert ratio.ratio <= speed.KEEP_AT_MOST and ratio.high >= 1.0
    assert "not measurably faster" in speed.judge(ratio)
    assert speed.judge(speed.LatencyRatio(0.96, 0.95, 0.97, 9)) == "0.96x of fp32: not faster here"
    assert speed.judge(speed.LatencyRatio(0.90, 0.88, 0.93, 9)) is None


def test_a_float_precision_that_int8_outruns_is_left_out_and_named_as_such():
    r = speed.LatencyRatio
    res = speed.decide({"bf16": r(0.62, 0.60, 0.64, 12), "int8": r(0.39, 0.37, 0.41, 12)})
    assert res.kept == ("fp32", "int8")
    assert res.skipped["bf16"].startswith("0.62x of fp32, int8 0.63x of it: int8 is faster at every schedule")
    assert "skipped bf16 (0.62x of fp32, int8 0.63x of it" in res.line()
    # int8 not clearly faster than bf16 (its interval top above 0.8 of bf16's bottom): both are searched
    assert speed.decide({"bf16": r(0.62, 0.60, 0.64, 12), "int8": r(0.46, 0.44, 0.49, 12)}).kept == \
        ("fp32", "bf16", "int8")
    # int8 slower than fp32 here (AVX2 without VNNI): bf16 stays, whatever int8 did
    assert speed.decide({"bf16": r(0.7, 0.68, 0.72, 12), "int8": r(1.5, 1.4, 1.6, 12)}).kept == ("fp32", "bf16")


def test_what_cannot_run_here_is_skipped_untimed(model, monkeypatch):
    monkeypatch.setattr(speed, "_have_nncf", lambda: False)
    timings, seen = fake_timings({})
    res = speed.measure_precision_speed(model, OV, timings=timings, capabilities=caps("FP32", "INT8"))
    assert res.kept == ("fp32",) and not seen  # nothing to time: no export, no quantisation
    assert res.skipped["int8"] == "NNCF is not installed to quantise: pip install nncf"
    assert "no native bf16" in res.skipped["bf16"]
    res = speed.measure_precision_speed(model, OV.with_(backend="torch"), timings=timings)
    assert res.kept == ("fp32",) and res.skipped["int8"] == "torch deploys fp32 only"


def test_a_timing_that_fails_keeps_fp32_and_says_why(model, monkeypatch):
    monkeypatch.setattr(speed, "_have_nncf", lambda: True)

    def broken(*a, **k):
        raise tavt_kit.BackendError("OpenVINO cannot compile the model")

    res = speed.measure_precision_speed(model, OV, ("int8",), timings=broken)
    assert res.kept == ("fp32",) and res.skipped == {"int8": "not timed: OpenVINO cannot compile the model"}


def test_a_precision_that_fails_to_compile_does_not_take_the_others_with_it(model, monkeypatch):
    # a CPU that declares BF16 but cannot compile it (a capped instruction set): int8 is still timed and judged
    monkeypatch.setattr(speed, "_have_nncf", lambda: True)
    fp32 = [1.0, 1.1, 0.9, 1.0, 1.05, 0.95, 1.0, 1.0, 1.02, 0.98]
    timings, _ = fake_timings({"fp32": fp32, "int8": [1.5 * x for x in fp32]})
    tried = []

    def bf16_breaks(model, items, **kw):
        tried.append(sorted(items))
        if "bf16" in items:
            raise tavt_kit.BackendError("OpenVINO cannot compile for CPU at bf16")
        return timings(model, items, **kw)

    res = speed.measure_precision_speed(model, OV, timings=bf16_breaks, capabilities=caps("FP32", "BF16", "INT8"))
    assert res.kept == ("fp32",)
    assert res.skipped["bf16"] == "not timed: OpenVINO cannot compile for CPU at bf16"
    assert res.skipped["int8"] == "1.50x of fp32: not faster here"  # timed on its own, not skipped for bf16
    assert tried == [["bf16", "fp32", "int8"], ["bf16", "fp32"], ["fp32", "int8"]]


def test_auto_resolves_by_the_measurement_and_says_it_once(model):
    said, calls = [], []

    def measure(m, target):
        calls.append(target)
        return speed.decide({"int8": speed.LatencyRatio(0.5, 0.45, 0.55, 10),
                             "bf16": speed.LatencyRatio(1.1, 1.0, 1.2, 10)}, {}, target)

    out = auto.resolve_precisions("auto", OV, True, said.append, model=model, measure=measure)
    assert out == ("fp32", "int8") and out.decision.ratios["int8"].ratio == 0.5
    assert said == [out.line] and "skipped bf16 (1.10x of fp32: not faster here)" in said[0]
    # a second resolution (the search resolving what the command line resolved) passes it through, unsaid
    assert auto.resolve_precisions(out, OV, True, said.append, measured_here=True) is out and len(said) == 1
    # MAC budgets only: fp32, nothing timed, nothing said
    assert auto.resolve_precisions("auto", OV, False, said.append, model=model, measure=measure) == ("fp32",)
    assert len(calls) == 1 and len(said) == 1


def table(model, precision="fp32", here=True, per_token=0.01):
    n = model.num_patches
    L = sorted({2, 1 + n // 2, 1 + n})
    curve = (lambda f: {"tokens": L, "ms": [f * t for t in L]})
    return LatencyTable({
        "format": "fgvc-kit/latency-table", "version": 1, "model": model_identity(model),
        "target": {"backend": "openvino", "device": "cpu", "batch_size": 1, "threads": 1,
                   "precision": {"fp32": "f32", "bf16": "bf16", "int8": "int8"}[precision]},
        **({"machine": machine_info()} if here else {}),
        "embed_ms": 0.1, "plain_ms": curve(per_token), "attn_ms": curve(per_token / 2),
        "mlp_ms": curve(per_token / 2), "head_ms": {"tokens": L, "ms": [0.1] * len(L)}, "head_nodrop_ms": 0.1,
        "offset_ms": 0.0})


def test_auto_with_tables_made_elsewhere_takes_their_precisions(model):
    said = []
    out = auto.resolve_precisions("auto", OV, True, said.append, model=model,
                                  tables={"fp32": table(model, here=False), "int8": table(model, "int8", False)},
                                  measure=lambda *a: pytest.fail("the target is elsewhere: nothing is timed"))
    assert out == ("fp32", "int8") and "nothing is timed here" in said[0]


def test_a_missing_table_is_profiled_not_refused(model, tmp_path, monkeypatch):
    asked = []

    def profiled(m, target, cache_dir, reducers, log, profile, token_multiple, export_dir=None):
        asked.append((target, cache_dir))
        return table(m, target.precision, per_token=0.005)

    monkeypatch.setattr(objective, "profiled_table", profiled)
    said = []
    objs = objective.latency_objectives(model, ("fp32", "int8"), table=table(model), table_cache=str(tmp_path),
                                        log=said.append)
    assert [(t.precision, t.batch_size, t.threads) for t, _ in asked] == [("int8", 1, 1)]
    assert asked[0][1] == str(tmp_path)  # cached beside the others
    assert objs["int8"].precision == "int8" and objs["int8"].info["profiled_for_search"]
    assert any("no table given at int8; profiling one" in s for s in said)
    full = model.full_schedule()
    assert objs["int8"](full) < objs["fp32"](full)
    # made on another machine: it cannot be profiled here; the error names the precision
    with pytest.raises(objective.MissingTableError, match="no table profiled at int8.*none can be profiled here"):
        objective.latency_objectives(model, ("fp32", "int8"), table=table(model, here=False), log=said.append)


def test_the_cli_names_the_command_that_profiles_a_missing_table(tmp_path, model, capsys):
    ckpt = str(tavt_kit.save_checkpoint(model, tmp_path / "m.safetensors"))
    table(model, here=False).save(tmp_path / "t.json")
    rc = main(["search", "--checkpoint", ckpt, "--latency-table", str(tmp_path / "t.json"), "--precisions",
               "fp32,int8", "--latency-budget", "5ms", "--out", str(tmp_path / "s")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1, err
    assert "no table profiled at int8" in err[0] and f"'fgvc-kit bench profile --checkpoint {ckpt} --backend " \
        "openvino --device cpu --latency-batch-size 1 --threads 1 --precision int8'" in err[0]


def test_the_cli_default_is_auto_and_says_what_it_kept_and_skipped(tmp_path, model, capsys, monkeypatch):
    ckpt = str(tavt_kit.save_checkpoint(model, tmp_path / "m.safetensors"))
    table(model).save(tmp_path / "t.json")  # made here: auto times the precisions at its batch size and threads
    timed = []

    def measure(m, target, *a, **k):
        timed.append(target)
        return speed.decide({"int8": speed.LatencyRatio(1.3, 1.2, 1.4, 12)},
                            {"bf16": "no native bf16 on this CPU: OpenVINO would run f32"}, target)

    monkeypatch.setattr(speed, "measure_precision_speed", measure)
    full_ms = table(model).predict(model.full_schedule())
    rc = main(["search", "--checkpoint", ckpt, "--latency-table", str(tmp_path / "t.json"), "--latency-budget",
               f"{full_ms:.4f}ms", "--population", "4", "--generations", "1", "--mutations", "2", "--crossovers",
               "2", "--subset", "32", "--batch-size", "32", "--out", str(tmp_path / "s")])
    out = capsys.readouterr().out.splitlines()
    assert rc == 0
    assert [(t.backend, t.batch_size, t.threads) for t in timed] == [("openvino", 1, 1)]
    lines = [s for s in out if s.startswith("precisions auto")]
    assert lines == ["precisions auto: fp32; skipped bf16 (no native bf16 on this CPU: OpenVINO would run f32), "
                     "int8 (1.30x of fp32: not faster here)"]
    assert not any("int8" in s for s in out if s.startswith("note:"))
    doc = json.loads((tmp_path / "s" / "search.json").read_text())
    assert doc["budgets"][0]["best"].get("precision", "fp32") == "fp32"


@pytest.mark.nncf
def test_the_measurement_on_this_machine_is_short_and_says_each_precision(model):
    pytest.importorskip("nncf")
    res = speed.measure_precision_speed(model, OV, policy=speed.TimingPolicy(**{**speed.QUICK_POLICY,
                                                                              "budget_s": 0.2}))
    assert res.kept[0] == "fp32" and "int8" in set(res.ratios) | set(res.skipped)
    assert set(res.kept[1:]) | set(res.skipped) == {"bf16", "fp16", "int8"}
    for p, r in res.ratios.items():
        assert 0 < r.low <= r.ratio <= r.high and r.rounds >= 2  # an interval: at least two paired rounds (load)
        assert (p in res.kept) == (speed.judge(r) is None)
    assert res.seconds < 60 and res.line().startswith("precisions auto: fp32")
