import json
import sys

import numpy as np
import pytest
import torch

import tavt_kit
from tavt_kit.bench import (LatencyTable, TimingPolicy, TimingStats, default_grid, measure_latency,
                            measure_round_robin, profile_latency, random_schedules)
from tavt_kit.bench.table import fit_separable, isotonic
from tavt_kit.cli import main
from tavt_kit.errors import (BackendError, ConfigError, ExportError, LatencyTableError)
from tavt_kit.target import DeploymentTarget

from conftest import TINY, perturb

FAST = TimingPolicy(warmup=1, min_repeats=3, max_repeats=50, budget_s=0.02, rel_ci=0.05)
FAST_ARGS = ["--warmup", "1", "--min-repeats", "3", "--time-budget", "0.02", "--threads", "1", "--quiet"]
#: torch eager on the CPU, one thread
EAGER = DeploymentTarget(backend="torch", threads=1)
ORT = DeploymentTarget(backend="onnxruntime", threads=1)


def tiny(**kw):
    args = dict(TINY, num_classes=5)
    args.update(kw)
    return perturb(tavt_kit.create_model("vit_tiny_patch16_224", **args)).eval()


# ------------------------------------------------------------------- timing
def test_timing_stats_summary_and_noise_warnings():
    st = TimingStats([0.010 + 0.00001 * i for i in range(50)])
    d = st.to_dict()
    assert d["min"] <= d["p50"] <= d["p90"] <= d["p99"] <= d["max"]
    assert d["ci95"][0] <= d["p50"] <= d["ci95"][1] and d["repeats"] == 50 and len(d["samples"]) == 50
    assert not st.noisy
    noisy = TimingStats([0.01, 0.01, 0.05, 0.01, 0.09, 0.02, 0.01, 0.08])
    assert noisy.noisy and any("vary" in w for w in noisy.warnings())


def test_round_robin_respects_min_repeats_and_stops_on_converged_median():
    calls = {"a": 0, "b": 0}
    fake = {"a": lambda: 0.002, "b": lambda: 0.004}

    def counted(k):
        def f():
            calls[k] += 1
            return fake[k]()
        return f

    stats = measure_round_robin({k: (lambda: None) for k in fake}, TimingPolicy(warmup=2, min_repeats=5, budget_s=1),
                                timer={k: counted(k) for k in fake})
    for k in fake:
        assert stats[k].converged and stats[k].n >= 5 and stats[k].p50 == fake[k]()
    assert calls["a"] == stats["a"].n + 2  # warm-up runs are not timed
    # a noisy callable stops at max_repeats
    rng = np.random.default_rng(0)
    st = measure_round_robin({"x": lambda: None}, TimingPolicy(warmup=0, min_repeats=3, max_repeats=20, budget_s=5,
                                                                rel_ci=1e-6),
                             timer={"x": lambda: float(rng.uniform(0.001, 0.01))})["x"]
    assert st.n == 20 and not st.converged


def test_memory_probe_sees_an_allocation():
    # in a fresh process: earlier tests leave memory that an allocator (OpenVINO's, glibc's) may hand back
    # without the resident size growing, which would hide the allocation from any RSS-based probe
    import subprocess
    import sys

    code = ("import json, numpy as np\nfrom tavt_kit.bench import MemoryProbe\nprobe = MemoryProbe('cpu')\n"
            "with probe:\n    a = np.ones(40_000_000, dtype=np.uint8)\n    del a\nprint(json.dumps(probe.to_dict()))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    d = json.loads(out.stdout.strip().splitlines()[-1])
    if d["method"] is None:
        pytest.skip("no way to read this process's memory here")
    assert d["delta_mb"] >= 30 and d["peak_mb"] >= d["delta_mb"]


# ------------------------------------------------------------------ measuring
def test_measure_latency_torch(tmp_path):
    model = tiny()
    report = measure_latency(model, [[48, 32, 16], [64, 64, 32]], target=EAGER, batch_sizes=[1, 2], policy=FAST,
                             labels=["a", "b"])
    assert [(r.label, r.batch_size) for r in report.results] == [
        ("full", 1), ("a", 1), ("b", 1), ("full", 2), ("a", 2), ("b", 2)]
    full = report.result("full", 1)
    assert full.speedup == 1.0 and full.schedule == [64, 64, 64]
    for r in report.results:
        lat = r.stats.to_dict()
        assert lat["p50"] <= lat["p90"] <= lat["p99"] and r.stats.n >= 3
        assert r.throughput > 0 and r.speedup > 0 and r.macs > 0
        assert "peak_mb" in r.memory and "method" in r.memory
    assert report.result("a").macs < full.macs
    d = report.to_dict()
    m = d["machine"]
    assert m["cpu"]["model"] and m["threads"] == 1 and "torch" in m["libraries"] and d["target"]["threads"] == 1
    assert d["model"]["depth"] == 3 and d["target"]["backend"] == "torch" and d["target"]["precision_used"] == "fp32"
    # the report is for one target (the first batch size's); bench.json holds its fields and the batch sizes
    assert report.target == EAGER and report.batch_sizes == [1, 2]
    assert DeploymentTarget.from_dict(d["target"]) == EAGER and d["target"]["batch_sizes"] == [1, 2]
    assert d["target"]["precision"] == d["target"]["precision_requested"] == "fp32"
    # bench.json of before (f32, several batch sizes as batch_size null) reads as the same target
    old = {"backend": "torch", "device": "cpu", "threads": 1, "batch_sizes": [1, 2], "batch_size": None,
           "precision_requested": "f32", "precision_used": "f32"}
    assert DeploymentTarget.from_dict(old) == EAGER
    paths = report.save(tmp_path / "out")
    assert json.load(open(paths["json"]))["format"] == "fgvc-kit/bench"
    md = open(paths["markdown"]).read()
    assert "| schedule |" in md and "speed-up" in md and "p50 ms" in md
    assert open(paths["plot"], "rb").read(8) == b"\x89PNG\r\n\x1a\n"


def test_measure_latency_torch_compile_path():
    pytest.importorskip("torch._dynamo")
    report = measure_latency(tiny(), [[48, 32, 16]], target=EAGER.with_(backend="torch-compile"),
                             compile_backend="eager", policy=FAST)
    assert len(report.results) == 2 and report.compile_backend == "eager"
    assert report.to_dict()["target"]["compile_backend"] == "eager" and report.target.backend == "torch-compile"


def test_measure_latency_exported_backends_and_files(tmp_path, monkeypatch):
    pytest.importorskip("onnxruntime")
    import tavt_kit.bench.measure as measure_mod

    monkeypatch.setattr(measure_mod, "_GROUP_BYTES", 1)  # as if two models filled the memory: groups of 2
    model = tiny()
    rep = measure_latency(model, [[48, 32, 16], [64, 48, 48]], target=ORT, exporter="torchscript", policy=FAST,
                          workdir=tmp_path / "work")
    assert [x.label for x in rep.results] == ["full", "schedule 1", "schedule 2"]
    assert all(x.speedup > 0 for x in rep.results) and any("round-robin groups" in n for n in rep.notes)
    r = rep.result("schedule 1")
    assert r.info["exporter"] == "torchscript" and r.info["export_max_abs_diff"] <= 1e-4
    assert rep.exporter == "torchscript" and rep.precision_used == "fp32" and rep.target == ORT
    onnx_path = r.info["onnx"]
    # an exported file: its schedule and shape come from the file
    rep2 = measure_latency(onnx_path, target=ORT, batch_sizes=[1, 3], policy=FAST, checkpoint=model)
    assert [x.batch_size for x in rep2.results] == [1, 3] and rep2.results[0].schedule == [48, 32, 16]
    assert rep2.source == onnx_path and rep2.to_dict()["target"]["source"] == onnx_path
    assert rep2.results[0].macs == r.macs
    with pytest.raises(ExportError, match="takes 64x64 images, the checkpoint 32x32"):
        measure_latency(onnx_path, target=ORT, checkpoint=tiny(img_size=32), policy=FAST)
    with pytest.raises(ConfigError, match="schedule fixed at export"):
        measure_latency(onnx_path, [[48, 32, 16]], target=ORT, policy=FAST)
    with pytest.raises(ConfigError, match="backend=torch: .* is an exported file; measure it with backend=onnxruntime"):
        measure_latency(onnx_path, target=EAGER, policy=FAST)
    with pytest.raises(ConfigError, match="batch_size=0: expected a positive number of images"):
        measure_latency(onnx_path, target=ORT, batch_sizes=[1, 0], policy=FAST)
    pytest.importorskip("openvino")
    rep3 = measure_latency(onnx_path, target=ORT.with_(backend="openvino"), policy=FAST)
    assert rep3.precision_used == "fp32" and rep3.results[0].info["precision_requested"] == "fp32"


def test_missing_backend_or_device_is_a_clear_error(monkeypatch):
    with pytest.raises(ConfigError, match="backend='tensorrt': expected one of"):
        DeploymentTarget(backend="tensorrt")
    monkeypatch.setitem(sys.modules, "openvino", None)
    with pytest.raises(BackendError, match="pip install openvino"):
        measure_latency(tiny(), target=DeploymentTarget(backend="openvino"))
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(BackendError, match="pip install onnxruntime"):
        measure_latency(tiny(), target=DeploymentTarget(backend="onnxruntime"))
    if not torch.cuda.is_available():
        with pytest.raises(BackendError, match="CUDA was requested.*; use device=cpu"):
            measure_latency(tiny(), target=EAGER.with_(device="cuda"))
    # torch runs bf16 / fp16 on CUDA only (weights cast); on the CPU the error names the backend that runs it there
    with pytest.raises(ConfigError, match="precision=bf16 with backend=torch runs on CUDA.*use backend=openvino"):
        measure_latency(tiny(), target=EAGER.with_(precision="bf16"))
    with pytest.raises(ConfigError, match="precision=int8 with backend=torch: int8 is a quantised OpenVINO graph"):
        measure_latency(tiny(), target=EAGER.with_(precision="int8"))
    with pytest.raises(ConfigError, match="backend=torch-cudagraph captures CUDA graphs; device=cpu"):
        measure_latency(tiny(), target=EAGER.with_(backend="torch-cudagraph"))


# ------------------------------------------------------------------ latency tables
def synthetic_table(fuse=False, offset=0.5):
    """A table with known curves: plain = L, attn = 0.6 L, mlp = 0.5 L, head = 0.01 L."""
    P, N = 1, 64
    L = [P + g for g in (1, 16, 32, 48, 64)]
    f = int(fuse)
    return LatencyTable({
        "format": "fgvc-kit/latency-table", "version": 1,
        "model": {"name": "t", "depth": 3, "embed_dim": 64, "num_heads": 2, "mlp_hidden": 256, "num_patches": N,
                  "num_prefix_tokens": P, "img_size": [64, 64], "patch_size": [8, 8], "scorer": "tavt",
                  "fuse": fuse, "head": "linear"},
        "target": {"backend": "torch", "device": "cpu", "batch_size": 1, "threads": 1},  # no precision: fp32
        "embed_ms": 2.0,
        "plain_ms": {"tokens": L, "ms": [float(v) for v in L]},
        "attn_ms": {"tokens": [v + f for v in L], "ms": [0.6 * (v + f) for v in L]},
        "mlp_ms": {"tokens": [v + f for v in L], "ms": [0.5 * (v + f) for v in L]},
        "head_ms": {"tokens": [v + f for v in L], "ms": [0.01 * (v + f) for v in L]},
        "head_nodrop_ms": 0.65,
        "offset_ms": offset,
    })


def test_a_calibration_offset_from_a_busy_machine_never_predicts_a_negative_latency():
    """The offset is the whole model's residual over its parts; on a busy machine it came out more negative than
    the smallest schedules cost, and every search over that table stopped at the first such candidate."""
    from tavt_kit.bench.calibration import _floored_offset

    t = synthetic_table(offset=0.0)
    smallest = t.predict_parts([1, 1, 1], "drop")
    parts = smallest["embed"] + sum(smallest["blocks"]) + smallest["head"]
    assert _floored_offset(t, -0.25 * parts) == -0.25 * parts and "warnings" not in t.data  # a plausible one stays
    t.data["offset_ms"] = _floored_offset(t, -10 * parts)
    assert t.data["offset_ms"] == pytest.approx(-0.5 * parts)
    assert t.predict([1, 1, 1]) == pytest.approx(0.5 * parts) and t.predict([1, 1, 1]) > 0
    assert "raised to" in t.data["warnings"][-1] and "profile again on a quiet one" in t.data["warnings"][-1]


def test_predictor_is_exact_on_grid_points_and_monotone():
    t = synthetic_table()
    assert t.predict([64, 64, 64]) == pytest.approx(2.0 + 3 * 65 + 0.65 + 0.5)
    # every block drops between grid points: attn(L_in) + mlp(L_out)
    expect = 2.0 + (0.6 * 65 + 0.5 * 49) + (0.6 * 49 + 0.5 * 33) + (0.6 * 33 + 0.5 * 17) + 0.01 * 17 + 0.5
    assert t.predict([48, 32, 16]) == pytest.approx(expect)
    assert t.predict(tavt_kit.TokenSchedule((64, 48, 48), 64)) == pytest.approx(
        2.0 + 65 + 0.6 * 65 + 0.5 * 49 + 49 + 0.01 * 49 + 0.5)
    # between grid points: linear interpolation
    assert t.predict_parts([64, 64, 40])["blocks"][2] == pytest.approx(0.6 * 65 + 0.5 * 41)
    # fewer tokens never cost more (curves are non-decreasing)
    rng = np.random.default_rng(0)
    for _ in range(20):
        a = sorted(rng.integers(2, 64, size=3).tolist(), reverse=True)
        b = [max(1, v - int(rng.integers(0, 3))) for v in a]
        b = [min(b[i], b[i - 1]) if i else b[i] for i in range(3)]
        assert t.predict(b) <= t.predict(a) + 1e-9
    # the fused token is one more token in the sequence
    tf = synthetic_table(fuse=True)
    assert tf.predict([48, 32, 16]) > t.predict([48, 32, 16])


def test_table_refuses_other_models_and_targets(tmp_path):
    t = synthetic_table()
    assert t.target == EAGER and t.precision == "fp32"
    t.check(tiny(), EAGER)
    t.check(target=EAGER.with_(threads=None))  # the runtime's default thread count matches any
    with pytest.raises(LatencyTableError, match="another model"):
        t.check(tiny(embed_dim=32))
    with pytest.raises(LatencyTableError, match="made for backend torch, not openvino; profile a table with "
                                                "backend=openvino"):
        t.check(target=EAGER.with_(backend="openvino"))
    t.check(target=EAGER.with_(backend="openvino"), fields=("batch_size",))  # only the fields named
    with pytest.raises(LatencyTableError, match="batch_size 1, not 8; profile a table with batch_size=8"):
        t.check(target=EAGER.with_(batch_size=8))
    with pytest.raises(ConfigError, match="'batch' is not one of"):
        t.check(target=EAGER, fields=("batch",))
    with pytest.raises(LatencyTableError, match="6 counts, the model has 3 blocks"):
        t.predict([64] * 6)
    with pytest.raises(LatencyTableError, match="another model"):
        t.predict(tavt_kit.TokenSchedule((64, 64, 64), 64, meta={"embed_dim": 768}))
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({"format": "fgvc-kit/latency-table", "model": {}}))
    with pytest.raises(LatencyTableError, match="malformed"):
        LatencyTable.load(path)
    path.write_text("{")
    with pytest.raises(LatencyTableError, match="not valid JSON"):
        LatencyTable.load(path)
    t.save(tmp_path / "t.json")
    assert LatencyTable.load(tmp_path / "t.json").predict([48, 32, 16]) == t.predict([48, 32, 16])


def test_separable_fit_and_isotonic():
    ins = [10, 20, 30, 40]
    pairs = [(li, lo, 0.3 * li + 0.1 * li ** 2 / 40 + 0.2 * lo) for li in ins for lo in ins if lo <= li]
    I, A, O, M = fit_separable(pairs)
    for li, lo, t in pairs:
        assert A[I.index(li)] + M[O.index(lo)] == pytest.approx(t, rel=1e-9)
    assert A[0] == pytest.approx(M[0])
    assert isotonic([1, 3, 2, 4]) == [1, 2.5, 2.5, 4]
    assert default_grid(64, 9) == [1, 8, 16, 24, 32, 40, 48, 56, 64]
    for s in random_schedules(12, 784, 5, seed=1):
        assert all(0.8 - 1e-9 <= r <= 1 for r in s.keep_ratios()[:1])


def test_profile_latency_torch(tmp_path):
    model = tiny()
    table = profile_latency(model, target=EAGER, grid=[16, 40], policy=FAST, validate=2)
    d = table.to_dict()
    assert d["grid"] == [16, 40, 64]
    assert d["model"]["num_patches"] == 64 and d["target"]["backend"] == "torch" and d["machine"]["cpu"]["model"]
    assert len(d["pairs"]) == 6 and d["separability"]["pairs"] == 6
    for key in ("plain_ms", "attn_ms", "mlp_ms", "head_ms"):
        ms = d[key]["ms"]
        assert all(a <= b for a, b in zip(ms, ms[1:])), key  # non-decreasing
    # anchors from the full model to 0.3 per block: full, tavt 0.9, halving, deep 0.3 (no EViT under 4 blocks)
    assert [c["label"] for c in d["calibration"]] == ["full", "tavt 0.9", "halving", "deep 0.3"]
    assert d["calibration"][-1]["schedule"] == [20, 6, 2] and d["validation"]["n"] == 2
    for v in d["validation"]["schedules"]:
        assert v["predicted_ms"] == pytest.approx(table.predict(v["schedule"]))
    # exact on the grid: the full model is scale x (embed + depth x plain(full) + head) + offset
    full = d["parts_scale"] * (d["embed_ms"] + 3 * d["plain_ms"]["ms"][-1] + d["head_ms"]["ms"][-1]) + d["offset_ms"]
    assert table.predict([64, 64, 64]) == pytest.approx(full)
    assert table.target == EAGER and d["target"]["precision"] == "fp32"
    table.check(model, EAGER)
    path = table.save(tmp_path / "t.json")
    assert LatencyTable.load(path).predict([40, 16, 16]) == pytest.approx(table.predict([40, 16, 16]))
    rep = measure_latency(model, [[40, 16, 16]], target=EAGER, batch_sizes=[1, 2], policy=FAST, table=path)
    assert rep.result("schedule 1", 1).predicted_ms == pytest.approx(table.predict([40, 16, 16]))
    assert rep.result("schedule 1", 2).predicted_ms is None  # the table is for batch 1
    with pytest.raises(LatencyTableError, match="made for threads 1, not 2"):
        measure_latency(model, target=EAGER.with_(threads=2), policy=FAST, table=path)
    # predictions of several schedules, and their file
    from tavt_kit.bench import predict_latency

    pred = predict_latency(path, [[40, 16, 16]], model=model, target=EAGER)
    assert [r["label"] for r in pred.rows] == ["full", "schedule 1"] and pred.target == EAGER
    assert pred.rows[1]["predicted_ms"] == pytest.approx(table.predict([40, 16, 16]))
    assert pred.rows[1]["speedup"] == pytest.approx(pred.rows[0]["predicted_ms"] / pred.rows[1]["predicted_ms"])
    doc = json.load(open(pred.save(tmp_path / "p")))
    assert doc["format"] == "fgvc-kit/latency-predictions" and doc["table"] == str(path)
    assert DeploymentTarget.from_dict(doc["target"]) == EAGER and len(doc["predictions"]) == 2
    with pytest.raises(LatencyTableError, match="made for device cpu, not cuda"):
        predict_latency(table, [], target=EAGER.with_(device="cuda"))


def test_profile_latency_exported_backend(monkeypatch):
    pytest.importorskip("onnxruntime")
    import tavt_kit.bench.profile as table_mod

    monkeypatch.setattr(table_mod, "_GROUP_BYTES", 1)  # as if memory held few parts: groups + reference block
    table = profile_latency(tiny(), target=ORT, grid=[16, 32, 48], policy=FAST, calibrate=False,
                            exporter="torchscript", statistic="min")
    d = table.to_dict()
    assert d["target"]["exporter"] == "torchscript" and d["statistic"] == "min"
    assert len(d["drift"]["factors"]) == 3 and len(d["pairs"]) == 10
    assert table.predict([64, 32, 32]) > 0


# ----------------------------------------------------------------------- CLI
def test_cli_bench_profile_predict(tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["bench", "--keep-ratio", "0.8", "--drop", "64,48,32,16,8,4", "--out", str(out)] + FAST_ARGS) == 0
    text = capsys.readouterr().out
    assert "| full" in text and "keep 0.8" in text and "bench.json" in text
    d = json.load(open(out / "bench.json"))
    assert [r["label"] for r in d["results"]] == ["full", "drop", "keep 0.8"]
    assert (out / "bench.png").exists() and (out / "bench.md").exists()
    assert main(["bench", "profile", "--grid", "32,64", "--validate", "1", "--out", str(out)] + FAST_ARGS) == 0
    text = capsys.readouterr().out
    assert "separability" in text and "validation" in text and (out / "latency_table.png").exists()
    table = str(out / "latency_table.json")
    assert main(["bench", "predict", table, "--keep-ratio", "0.9"]) == 0
    text = capsys.readouterr().out
    assert "full" in text and "keep 0.9" in text and "ms" in text


@pytest.mark.parametrize("argv, expected", [
    (["bench", "--backend", "onnxruntime", "--device", "cuda"], "CUDA"),
    (["bench", "--device", "tpu"], "--device tpu: expected cpu, cuda or cuda:N"),
    (["bench", "--latency-batch-size", "1", "0"], "--latency-batch-size 0: expected a positive batch size"),
    (["bench", "a", "b"], "expected one model or exported file"),
    (["bench", "profile", "--latency-batch-size", "1", "2"], "one batch size: give one --latency-batch-size"),
    (["bench", "predict", "--latency-table", "missing_table.json"], "cannot read latency table"),
    (["bench", "--drop", "64,65,1,1,1,1"], "above the grid"),
])
def test_cli_bad_input_is_one_line(capsys, argv, expected):
    if expected == "CUDA" and torch.cuda.is_available():
        pytest.skip("a GPU is present")
    assert main(argv + ["--quiet"]) == 2
    err = capsys.readouterr().err
    assert expected in err and err.count("\n") == 1 and "Traceback" not in err


def test_cli_predict_refuses_a_table_for_another_backend(tmp_path, capsys):
    t = synthetic_table()
    d = t.to_dict()
    d["model"].update(depth=6, embed_dim=96, num_heads=3, mlp_hidden=384)
    path = tmp_path / "t.json"
    LatencyTable(d).save(path)
    assert main(["bench", "predict", str(path), "--backend", "openvino"]) == 2
    assert "made for backend torch, not openvino" in capsys.readouterr().err
    ckpt = tavt_kit.save_checkpoint(tiny(), tmp_path / "m.safetensors")
    assert main(["bench", "predict", str(path), "--checkpoint", str(ckpt)]) == 2
    assert "another model" in capsys.readouterr().err


def test_dropping_parts_of_a_random_model_export_despite_near_tied_scores(tmp_path):
    """A randomly initialised model attends almost uniformly, so its drop scores tie to float rounding and which
    token an exported graph keeps can differ from torch: profiling one (latency does not depend on the weights)
    failed the part's export check (a 256-token model: 14 of 20 random inputs tie at keep 96). Such inputs are
    checked on the tokens the part keeps; inputs with a clear boundary keep the whole check."""
    from tavt_kit.bench.parts import DropPart, verify_inputs
    from tavt_kit.export.onnx import export_module

    torch.manual_seed(0)
    m = tavt_kit.create_model("fgvc_tiny", num_classes=4, patch_size=4).eval()  # 256 tokens, random init
    P, N, keep = int(m.num_prefix_tokens), int(m.num_patches), 96
    part = DropPart(m.blocks[0], keep, P, N, False, m.scorer, False)
    xs = [torch.randn(2, P + N, m.embed_dim, generator=torch.Generator().manual_seed(s)) for s in range(8)]
    tied = [x for x in xs if part.near_tie(x[:1])]
    assert tied, "a random model's scores should nearly tie"
    (v,) = verify_inputs(part, tied[0])
    assert v.shape == (1, P + keep, m.embed_dim) and torch.equal(v, tied[0][:1, :P + keep])
    for i, x in enumerate(tied[:3]):  # every near-tied input exports and verifies
        export_module(part, x, tmp_path / f"drop{i}.onnx", exporter="torchscript",
                      dynamic_axes={0: "batch", 1: "tokens"}, output_axes={0: "batch"}, dim_min={0: 1, 1: P + keep},
                      verify_inputs=verify_inputs(part, x))
    # a model that attends sharply (as a trained one does) has a clear boundary: checked on every token
    with torch.no_grad():
        m.blocks[0].attn.qkv.weight.mul_(30)
    x = xs[0]
    assert not part.near_tie(x[:1])
    (v,) = verify_inputs(part, x)
    assert torch.equal(v, x[:1])
    # the fused token (EViT) stays last when an input is cut
    fused = DropPart(m.blocks[0], keep, P, N, True, m.scorer, True)
    y = torch.randn(1, P + N + 1, m.embed_dim)
    assert torch.equal(fused.all_kept(y)[:, -1], y[:, -1]) and fused.all_kept(y).shape[1] == P + keep + 1


@pytest.mark.parametrize("scorer", ["tavt", "cls", "tavt-sampled"])
def test_dropping_parts_export_without_a_branch_openvino_refuses(tmp_path, scorer):
    """A part's token axis is dynamic; EViT's class row squeezed its size-1 axis, which the exporter cannot prove
    is 1 there and wrote as an ONNX ``If``. OpenVINO's CPU plugin refuses an ``If`` of dynamic rank, so NNCF failed
    to quantise every ``cls`` part of an int8 latency table."""
    import onnx

    from tavt_kit.bench.parts import DropPart, verify_inputs
    from tavt_kit.export.onnx import export_module

    torch.manual_seed(0)
    m = tavt_kit.create_model("fgvc_tiny", num_classes=4, depth=2, img_size=32, scorer=scorer).eval()
    P, N, keep = int(m.num_prefix_tokens), int(m.num_patches), 8
    part = DropPart(m.blocks[0], keep, P, N, False, m.scorer, False)
    x = torch.randn(2, P + N, m.embed_dim)
    res = export_module(part, x, tmp_path / "drop.onnx", exporter="torchscript", dynamic_axes={0: "batch", 1: "tokens"},
                        output_axes={0: "batch"}, dim_min={0: 1, 1: P + keep}, verify_inputs=verify_inputs(part, x))
    ops = {n.op_type for n in onnx.load(res.path).graph.node}
    assert "TopK" in ops and "If" not in ops
    # the part runs at every token count a table times, down to the fewest (tavt-sampled's query stride once froze
    # at export and reached 0 below 32 tokens)
    ort = pytest.importorskip("onnxruntime")
    sess = ort.InferenceSession(res.path, providers=["CPUExecutionProvider"])
    for n in (N, N // 2, keep):
        y = torch.randn(2, P + n, m.embed_dim)
        with torch.no_grad():
            ref = part(y)
        assert torch.allclose(torch.from_numpy(sess.run(None, {sess.get_inputs()[0].name: y.numpy()})[0]), ref,
                              atol=1e-5)
