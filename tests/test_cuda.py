"""The CUDA paths: CUDA-event timing, fp16 (autocast and exported), ONNX Runtime's CUDA provider.

Marked ``cuda`` and skipped where torch sees no GPU (CI has none); run them on a GPU machine with
``pytest -m cuda``.
"""
import numpy as np
import pytest
import torch

import tavt_kit
from tavt_kit.bench import TimingPolicy, measure_latency
from tavt_kit.target import DeploymentTarget
from tavt_kit.search import EvaluationOptions

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (torch.cuda.is_available())")]

QUICK = TimingPolicy(warmup=2, min_repeats=5, max_repeats=20, budget_s=0.5)


def tiny():
    torch.manual_seed(0)
    return tavt_kit.create_model("fgvc_tiny", depth=3, img_size=32).eval()


def test_cuda_latency_is_timed_with_cuda_events():
    from tavt_kit.bench.backends import torch_runner

    model = tiny().cuda()
    x = torch.randn(2, 3, 32, 32, device="cuda")
    r = torch_runner(lambda: model(x), "cuda")
    assert r.timer is not None and r.timer() > 0  # CUDA events, not the host clock around an async launch
    rep = measure_latency(tiny(), [[12, 8, 4]], target=DeploymentTarget(backend="torch", device="cuda"),
                          batch_sizes=[1, 8], policy=QUICK)
    assert rep.timing == "cuda-events" and rep.target.device == "cuda"
    for b in (1, 8):
        assert rep.result("full", b).stats.p50 > 0 and rep.result("full", b).stats.p50 < 1.0


def test_fp16_autocast_evaluation_on_cuda_matches_fp32():
    from tavt_kit.search.evaluate import CandidateEvaluator

    model = tiny().cuda()
    g = torch.Generator().manual_seed(0)
    images = torch.randn(64, 3, 32, 32, generator=g).cuda()
    labels = torch.randint(0, model.num_classes, (64,), generator=g).cuda()
    scheds = [model.full_schedule(), model.make_schedule([12, 8, 4])]
    ev32 = CandidateEvaluator(model, images, labels, 32)
    ev16 = CandidateEvaluator(model, images, labels, 32, autocast=torch.float16, reference=ev32)
    a, b = ev32.scores(scheds), ev16.scores(scheds)
    for i in range(2):
        assert abs(a.nll[i] - b.nll[i]) / 64 < 0.05  # fp16 moves the mean NLL by well under 0.05 nats
    assert b.kl[0] / 64 < 1e-3  # the full model in fp16 against its fp32 self


def test_onnxruntime_cuda_provider(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        pytest.skip("onnxruntime without CUDAExecutionProvider (pip install onnxruntime-gpu)")
    from tavt_kit.bench.backends import ort_runner
    from tavt_kit.export.onnx import export_onnx

    model = tiny()
    path = export_onnx(model, tmp_path / "m.onnx", [12, 8, 4]).path
    x = np.random.default_rng(0).standard_normal((2, 3, 32, 32)).astype(np.float32)
    r = ort_runner(path, x, device="cuda")
    assert r.info["providers"][0] == "CUDAExecutionProvider"
    with torch.no_grad():
        ref = model(torch.from_numpy(x), drop=[12, 8, 4]).numpy()
    assert np.abs(r()[0] - ref).max() < 1e-3
    rep = measure_latency(model, [[12, 8, 4]], target=DeploymentTarget(backend="onnxruntime", device="cuda"),
                          policy=QUICK)
    assert rep.result("full", 1).stats.p50 > 0


def test_fp16_onnx_export_runs_on_cuda(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        pytest.skip("onnxruntime without CUDAExecutionProvider (pip install onnxruntime-gpu)")
    from tavt_kit.bench.backends import ort_runner
    from tavt_kit.export.graph import onnx_fp16
    from tavt_kit.export.onnx import export_onnx

    model = tiny()
    path = export_onnx(model, tmp_path / "m.onnx", [12, 8, 4]).path
    onnx_fp16(path, str(tmp_path / "m16.onnx"))
    x = np.random.default_rng(0).standard_normal((2, 3, 32, 32)).astype(np.float32)
    out = ort_runner(str(tmp_path / "m16.onnx"), x, device="cuda")()[0]
    with torch.no_grad():
        ref = model(torch.from_numpy(x), drop=[12, 8, 4]).numpy()
    assert np.abs(out - ref).max() < 0.05


# --------------------------------------------------------------------- bf16 / fp16 and captured graphs on CUDA
def test_torch_runs_fp16_and_bf16_with_the_weights_cast():
    from tavt_kit.bench.runners import ModelRunners
    from tavt_kit.target import Precision

    model = tiny().cuda()
    x = torch.randn(2, 3, 32, 32)
    full = model.full_schedule()
    with torch.inference_mode():
        ref = model(x.cuda()).float()
        for p, tol in (("fp16", 0.01), ("bf16", 0.06)):  # of the largest logit: ~3 and ~2 significant digits
            builder = ModelRunners(model, DeploymentTarget(backend="torch", device="cuda", precision=p))
            out = builder.runner(full, x)()
            assert out.dtype == Precision.torch_dtype(p)  # weights and inputs at that type, not autocast
            # the full schedule: a random tiny model's near-uniform attention ties tokens at half precision, so
            # a dropping schedule may keep other tokens than at fp32 (measured: 60 % of the logit scale apart)
            assert (out.float() - ref).abs().max() < tol * ref.abs().max()
            assert torch.isfinite(builder.runner([12, 8, 4], x)().float()).all()
            assert next(model.parameters()).dtype == torch.float32  # the caller's model keeps its own
    rep = measure_latency(tiny(), [[12, 8, 4]], policy=QUICK, batch_sizes=[1, 8],
                          target=DeploymentTarget(backend="torch", device="cuda", precision="fp16"))
    assert rep.precision_used == "fp16" and rep.result("full", 8).stats.p50 > 0


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_a_captured_cuda_graph_replays_the_eager_forward(precision):
    """The same kernels on the same input: the replay equals eager, also after the allocator has handed out the
    memory of everything the capture did not keep (a graph reads its input and weights where they were)."""
    from tavt_kit import TokenSchedule
    from tavt_kit.bench.runners import ModelRunners

    model = tiny().cuda()
    x = torch.randn(4, 3, 32, 32)
    eager = ModelRunners(model, DeploymentTarget(backend="torch", device="cuda", precision=precision))
    graph = ModelRunners(model, DeploymentTarget(backend="torch-cudagraph", device="cuda", precision=precision))
    mixed = TokenSchedule((12, 8, 4), model.num_patches, reducers=("merge", "drop", "merge"))
    for s in (model.full_schedule(), model.make_schedule([12, 8, 4]), mixed):
        r = graph.runner(s, x)
        junk = [torch.full((1 << 18,), 7.0, device="cuda") for _ in range(16)]  # reuses any memory freed since
        with torch.inference_mode():
            want = eager.runner(s, x)().float()
        del junk
        assert (r().float() - want).abs().max() <= (1e-4 if precision == "fp32" else 1e-2) * want.abs().max()
        assert r.info["captured"] == "cuda-graph" and r.timer() > 0
    rep = measure_latency(tiny(), [[12, 8, 4]], target=DeploymentTarget(backend="torch-cudagraph", device="cuda"),
                          batch_sizes=[1, 8], policy=QUICK)
    assert rep.timing == "cuda-events" and rep.result("schedule 1", 1).stats.p50 > 0


def test_torch_compile_on_cuda_is_captured_and_replays_the_eager_forward():
    """backend=torch-compile on CUDA: inductor's kernels captured once as a CUDA graph (reduce-overhead)."""
    from tavt_kit.bench.runners import ModelRunners

    model = tiny().cuda()
    x = torch.randn(2, 3, 32, 32)
    eager = ModelRunners(model, DeploymentTarget(backend="torch", device="cuda", precision="fp16"))
    compiled = ModelRunners(model, DeploymentTarget(backend="torch-compile", device="cuda", precision="fp16"))
    s = model.make_schedule([12, 8, 4])
    r = compiled.runner(s, x)
    with torch.inference_mode():
        want = eager.runner(s, x)().float()
    assert (r().float() - want).abs().max() <= 1e-2 * want.abs().max()
    assert r.info["captured"] == "cuda-graph" and r.info["compile_backend"] == "inductor" and r.timer() > 0


def test_a_latency_table_profiles_on_cuda_graphs_at_fp16():
    from tavt_kit.bench.profile import profile_latency

    target = DeploymentTarget(backend="torch-cudagraph", device="cuda", precision="fp16", batch_size=2)
    table = profile_latency(tiny(), target=target, grid=3, validate=2, reducers="drop,merge", policy=QUICK)
    assert table.target.backend == "torch-cudagraph" and table.target.precision == "fp16"
    assert table.data["validation"]["n"] == 2
    assert table.predict(tiny().make_schedule([12, 8, 4])) > 0 and table.predict(tiny().full_schedule()) > 0


def test_the_search_scores_candidates_on_the_gpu_and_leaves_the_model_on_the_cpu(tmp_path):
    from conftest import random_splits, search_model
    from tavt_kit import search_schedules
    from tavt_kit.models import count_macs
    from tavt_kit.search import EvolutionSettings

    model = search_model()
    data = random_splits(32, 32)
    budget = f"{0.7 * count_macs(model).total() / 1e6:.3f}M MACs"
    evo = EvolutionSettings(population=4, generations=1, mutations=3, crossovers=3, seed=0)
    runs = {d: search_schedules(model, data, [budget], evolution=evo, evaluation=EvaluationOptions(device=d),
                                out=str(tmp_path / d), log=lambda s: None) for d in ("cpu", "cuda")}
    assert next(model.parameters()).device.type == "cpu"  # counting and export keep the model on the CPU
    cpu, gpu = runs["cpu"].doc, runs["cuda"].doc
    assert gpu["full"]["holdout_accuracy"] == pytest.approx(cpu["full"]["holdout_accuracy"], abs=1 / 32 + 1e-9)
    assert gpu["full"]["test_accuracy"] == pytest.approx(cpu["full"]["test_accuracy"], abs=1 / 32 + 1e-9)


@pytest.mark.parametrize("scorer", ["tavt", "cls", "tavt-sampled"])
def test_every_scorer_drops_on_cuda_as_on_the_cpu(scorer):
    """The scorer ranks tokens on the GPU as on the CPU (fp32, TF32 off: the same tokens kept, the same logits),
    and at fp16 with the weights cast it gives finite logits (the explicit score rows stay in range)."""
    from tavt_kit.bench.runners import ModelRunners

    torch.manual_seed(0)
    model = tavt_kit.create_model("fgvc_tiny", depth=3, img_size=32, scorer=scorer).eval()
    x = torch.randn(4, 3, 32, 32)
    s = model.make_schedule([12, 8, 4])
    with torch.inference_mode():
        ref = model(x, drop=s)
        tf32 = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
        try:
            out = model.cuda()(x.cuda(), drop=s).cpu()
        finally:
            torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = tf32
        assert (out - ref).abs().max() <= 1e-4 * ref.abs().max()
        half = ModelRunners(model, DeploymentTarget(backend="torch-cudagraph", device="cuda", precision="fp16"))
        assert torch.isfinite(half.runner(s, x)().float()).all()


def test_training_resumed_on_the_gpu_equals_the_uninterrupted_run(tmp_path):
    """The CUDA RNG state (stochastic depth draws on the GPU) is saved and restored: the resumed run equals the
    uninterrupted one up to the order in which the GPU's backward adds (a different draw would be far off)."""
    from test_data import make_folder
    from test_train import Crash, CrashAfter, _run, weights

    folder = str(make_folder(tmp_path / "data", train=6, test=3, size=(24, 20)))
    ref, _ = _run(tmp_path / "ref", folder, device="cuda")
    with pytest.raises(Crash):
        _run(tmp_path / "cut", folder, step_fn=CrashAfter(11), device="cuda")
    tr, res = _run(tmp_path / "cut", folder, resume=True, seed_model=123, device="cuda")
    assert res.resumed_from == 4 and res.steps == 7
    a, b = weights(ref.model), weights(tr.model)
    assert all(torch.allclose(a[k], b[k], atol=1e-4, rtol=0) for k in a)


def test_a_precision_search_on_the_gpu_scores_fp16_picks_in_torch_there(monkeypatch):
    """A search of fp16 on a torch GPU target scores its picks on the model itself at fp16 on the GPU (the
    H200 machine, which has no OpenVINO, failed here once: every pick was sent to OpenVINO)."""
    import sys

    from tavt_kit.search.deployed import DeployedScorer

    monkeypatch.setitem(sys.modules, "openvino", None)
    model = tiny()
    images, labels = torch.rand(16, 3, 32, 32), torch.randint(0, model.num_classes, (16,))
    targets = {p: DeploymentTarget(backend="torch-cudagraph", device="cuda", precision=p) for p in ("fp32", "fp16")}
    scorer = DeployedScorer(model, lambda x: x, lambda: None, batch_size=8, targets=targets)
    sc, runtime = scorer.scores(model.full_schedule(), "fp16", images, labels)
    assert runtime == "PyTorch torch-cudagraph on cuda, fp16"
    assert sc.kl[0] / 16 < 1e-3  # the full model at fp16 against its fp32 self on the GPU
    assert next(model.parameters()).device.type == "cpu"
    scorer.close()
