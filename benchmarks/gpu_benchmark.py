"""The GPU path, run for real: training under AMP and torchrun, latency per runtime, a GPU latency table and a
search under a GPU budget, and the search evaluator's speed.

    python benchmarks/gpu_benchmark.py --out OUT [--deadline-s 480] [--stages env,train,latency,...]
    python benchmarks/gpu_benchmark.py --smoke --device cpu --out runs/gpu-smoke   # the logic, tiny, anywhere

Stages, in the order they run (each writes its figures into ``OUT/gpu.json`` as soon as it ends, so a run cut
short keeps what it finished; a stage that would start after ``--deadline-s`` is skipped and says so):

* ``env``: GPU, driver, torch / CUDA / cuDNN / timm / ONNX Runtime versions, the providers ONNX Runtime has and
  whether TensorRT imports.
* ``train``: ``fgvc-kit train`` with ``--amp bf16`` on ViT-B/16 at 448 (random init, the built-in digits), then
  ``fgvc-kit distill --amp fp16`` from it, then ``distill --amp bf16`` under ``torchrun --nproc_per_node 1``
  (DistributedDataParallel on NCCL); steps per run ``--steps``.
* ``latency``: ViT-B/16 at 448 at the full schedule, EViT 0.7, TAVT's smallest (bound 0.2), ToMe r=16 and two
  mixed schedules, batch 1 and 32, fp16 and bf16 (weights cast), on torch eager, the same captured once as a
  CUDA graph (``torch-cudagraph``) and ONNX Runtime's CUDA provider where it is installed; every schedule of one
  (runtime, precision) timed round-robin in one process. Realised speed-up = speed-up / MAC reduction.
* ``latency_cls``: the same with EViT's class-row scorer (keeps the fused attention kernel), plus EViT 0.5, on
  torch eager and captured graphs at fp16.
* ``latency_sampled``: the same as ``latency_cls`` with TAVT's score from 32 query rows (``tavt-sampled``).
* ``latency_compile``: batch 1, EViT's scorer: each schedule compiled by inductor and then captured as a CUDA
  graph (what ``torch.compile(mode="reduce-overhead")`` does), round-robin beside the captured eager graphs.
* ``table``: a latency table profiled on the GPU (torch eager, fp32, batch 32; drop and merge), with its
  median prediction error on 10 random schedules timed whole; ``table_b1``: one for batch 1 at fp16 on
  ``torch-cudagraph`` (EViT's scorer).
* ``table_b1_fp32``: ``table_b1`` at fp32, which ``search_b1`` searches beside fp16; ``table_graph``: batch 32
  on captured graphs at fp16, TAVT's score from 32 query rows (``tavt-sampled``); ``table_graph_fp32``: the same
  at fp32; ``search_graph``: the search on those two under 0.7 of the fp16 full model.
* ``search``: ``fgvc-kit search --latency-table`` (the fp32 table) on the distilled supernet under a budget of
  0.6 of its full model, with ``--remeasure`` on the GPU, candidates scored on the GPU; ``search_b1``: the same
  on the batch-1 table.
* ``suite``: the test suite but the CUDA and NNCF marks, failures named as they happen.
* ``evaluator``: candidates per minute of the search's evaluator on 600 held-out images at 448 against a plain
  loop that runs each candidate's whole forward on the same decoded images, fp32 and bf16 autocast.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import torch

from harness import one_generation

#: the checkout: child processes (the CLI, torchrun, the test suite) run from it
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

STAGES = ("env", "latency", "latency_cls", "latency_sampled", "latency_compile", "table_b1", "table_b1_fp32",
          "table", "table_graph", "table_graph_fp32", "train", "evaluator", "search", "search_b1", "search_graph",
          "suite")


class Run:
    """The run's settings, its clock and its result file."""

    def __init__(self, args):
        self.args = args
        self.t0 = time.perf_counter()
        self.out = os.path.abspath(args.out)
        os.makedirs(self.out, exist_ok=True)
        self.path = os.path.join(self.out, "gpu.json")
        self.doc = {"settings": vars(args), "stages": {}}
        if os.path.exists(self.path):  # a second call with other stages adds to the first one's figures
            with open(self.path) as f:
                self.doc["stages"] = json.load(f).get("stages", {})

    def left(self) -> float:
        return self.args.deadline_s - (time.perf_counter() - self.t0)

    def save(self) -> None:
        tmp = self.path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(self.doc, f, indent=1, default=str)
        os.replace(tmp, self.path)

    def say(self, text: str) -> None:
        print(f"[{time.perf_counter() - self.t0:6.1f}s] {text}", flush=True)


def model_name(args) -> str:
    return "fgvc_tiny" if args.smoke else "vit_base_patch16_224"


def img_size(args) -> int:
    return 32 if args.smoke else 448


def build_model(args, scorer: str = "tavt"):
    import tavt_kit

    torch.manual_seed(0)
    return tavt_kit.create_model(model_name(args), img_size=img_size(args), num_classes=10, scorer=scorer).eval()


def supernet_path(args) -> str:
    return os.path.join(args.work, "train", "distill-fp16", "best.safetensors")


def trained_or_built(args, scorer: str = "tavt"):
    """The distilled supernet where the train stage made it (a table must be for the searched model; latency does
    not depend on the weights), else the same architecture with random weights."""
    import tavt_kit

    path = supernet_path(args)
    return tavt_kit.load_checkpoint(path).eval() if os.path.exists(path) else build_model(args, scorer)


def schedules(model, more: bool = False):
    """The issue's schedules: full, EViT 0.7, TAVT's smallest, ToMe r=16 and two mixed ones (label -> schedule);
    ``more`` adds EViT 0.5 (EViT's three drops, each keeping half)."""
    from tavt_kit.schedules import SearchSpace, TokenSchedule, evit_schedule, tome_schedule

    L, N = model.depth, model.num_patches
    tavt_small = SearchSpace.tavt(L, N, bound=0.2).smallest()
    tome = tome_schedule(max(1, min(16, N // 4)), L, N)
    half = L // 2
    # mixed 1: ToMe's merges in the first half, TAVT's drops from there on (each block at TAVT's smallest counts)
    mixed1 = TokenSchedule(tavt_small.counts, N, reducers=("merge",) * half + ("drop",) * (L - half))
    # mixed 2: the EViT stages merged instead of dropped at the first stage, dropped at the others
    ev = evit_schedule(0.7, L, N)
    red = []
    first = True
    prev = N
    for c in ev.counts:
        if c < prev:
            red.append("merge" if first else "drop")
            first = False
        else:
            red.append(None)
        prev = c
    mixed2 = TokenSchedule(ev.counts, N, reducers=tuple(red))
    out = {"full": model.full_schedule(), "evit-0.7": ev, "tavt-smallest": tavt_small, "tome-r16": tome,
           "mixed-merge-then-drop": mixed1, "mixed-evit-merge-drop": mixed2}
    if more:
        out["evit-0.5"] = evit_schedule(0.5, L, N)
    return out


# ----------------------------------------------------------------------------------------------------- stages
def stage_env(run: Run) -> dict:
    import timm

    d = {"python": sys.version.split()[0], "torch": torch.__version__, "cuda": torch.version.cuda,
         "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
         "timm": timm.__version__, "cuda_available": torch.cuda.is_available()}
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        d.update(gpu=p.name, gpu_memory_gib=round(p.total_memory / 2 ** 30, 1), capability=f"{p.major}.{p.minor}",
                 multiprocessors=p.multi_processor_count, bf16=torch.cuda.is_bf16_supported())
        try:
            q = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total",
                                "--format=csv,noheader"], capture_output=True, text=True, timeout=30)
            d["nvidia_smi"] = q.stdout.strip()
        except Exception as e:  # the figures stand without it
            d["nvidia_smi"] = f"not run: {e}"
    try:
        import onnxruntime as ort

        d["onnxruntime"] = ort.__version__
        d["onnxruntime_providers"] = ort.get_available_providers()
    except ImportError as e:
        d["onnxruntime"] = f"not installed ({e})"
    try:
        import tensorrt  # noqa: F401

        d["tensorrt"] = tensorrt.__version__
    except ImportError as e:
        d["tensorrt"] = f"not installed ({e})"
    return d


def _cli(run: Run, argv, name: str, torchrun: bool = False) -> dict:
    """One fgvc-kit command (or under torchrun) in a subprocess: its exit status, wall time, last lines."""
    if torchrun:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "1", "-m", "tavt_kit.cli"] + argv
    else:
        cmd = [sys.executable, "-m", "tavt_kit.cli"] + argv
    run.say(f"{name}: {' '.join(cmd[1:])}")
    t = time.perf_counter()
    env = {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}
    p = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT,
                       timeout=max(30.0, run.left() + 60))
    wall = time.perf_counter() - t
    lines = (p.stdout + p.stderr).strip().splitlines()
    with open(os.path.join(run.out, f"{name}.log"), "w") as f:
        f.write(p.stdout + "\n--- stderr ---\n" + p.stderr)
    run.say(f"{name}: exit {p.returncode} in {wall:.1f} s; " + (lines[-1] if lines else ""))
    return {"command": " ".join(["fgvc-kit" if not torchrun else "torchrun --nproc_per_node 1 -m tavt_kit.cli"]
                                 + argv), "exit": p.returncode, "wall_s": round(wall, 1), "tail": lines[-6:]}


def _metrics(folder: str) -> list:
    path = os.path.join(folder, "metrics.jsonl")
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()][-3:]


def stage_train(run: Run) -> dict:
    a = run.args
    work = os.path.join(a.work, "train")
    # the search's setting: 600 held-out images (TAVT's CUB search), 1000 test images (the search reports them)
    common = lambda steps: ["--dataset", "cluttered-digits", "--dataset-option", f"holdout={a.images}",  # noqa
                            "--dataset-option", f"test={a.test_images}", "--steps", str(steps),
                            "--batch-size", str(a.train_batch), "--eval-every", "0", "--no-test",
                            "--warmup-steps", str(max(1, steps // 10)), "--device", a.device]
    model = ["--model", model_name(a), "--img-size", str(img_size(a))]
    amp = (lambda p: ["--amp", p]) if a.device != "cpu" else (lambda p: ["--amp", "bf16"])
    out = {}
    t_out = os.path.join(work, "train-bf16")
    out["train_bf16"] = _cli(run, ["train"] + model + common(a.steps) + amp("bf16") + ["--out", t_out, "--overwrite"],
                             "train-bf16")
    out["train_bf16"]["metrics"] = _metrics(t_out)
    parent = os.path.join(t_out, "best.safetensors")
    if not os.path.exists(parent):
        return out
    d_out = os.path.join(work, "distill-fp16")
    out["distill_fp16"] = _cli(run, ["distill", "--checkpoint", parent] + common(a.distill_steps) + amp("fp16")
                               + ["--out", d_out, "--overwrite"], "distill-fp16")
    out["distill_fp16"]["metrics"] = _metrics(d_out)
    if run.left() > 60 and a.torchrun_steps > 0:
        r_out = os.path.join(work, "torchrun-distill-bf16")
        out["torchrun_distill_bf16"] = _cli(run, ["distill", "--checkpoint", parent] + common(a.torchrun_steps)
                                            + amp("bf16")
                                            + ["--out", r_out, "--overwrite"], "torchrun-distill-bf16",
                                            torchrun=True)
        out["torchrun_distill_bf16"]["metrics"] = _metrics(r_out)
    return out


def stage_latency(run: Run) -> dict:
    """TAVT's scorer on every runtime and precision (and ONNX Runtime's CUDA provider where it is installed)."""
    gpu = run.args.device.startswith("cuda")
    runtimes = ["torch", "torch-cudagraph"] if gpu else ["torch"]
    combos = [(rt, p) for rt in runtimes for p in (["fp16", "bf16"] if gpu else ["fp32"])]
    notes = []
    try:
        import onnxruntime as ort

        ort_cuda = "CUDAExecutionProvider" in ort.get_available_providers()
    except ImportError:
        ort_cuda = False
    if gpu and not ort_cuda:
        notes.append("ONNX Runtime has no CUDAExecutionProvider here (onnxruntime-gpu is not installed): not timed")
    if ort_cuda:
        combos.append(("onnxruntime", "fp32"))
    return _latency(run, "latency", "tavt", combos, notes)


def _fused_scorer_latency(run: Run, name: str, scorer: str) -> dict:
    """A scorer that keeps the fused attention kernel, on the best runtimes of ``latency``."""
    gpu = run.args.device.startswith("cuda")
    combos = [("torch", "fp16"), ("torch-cudagraph", "fp16")] if gpu else [("torch", "fp32")]
    return _latency(run, name, scorer, combos, [], more=True)


def stage_latency_cls(run: Run) -> dict:
    """EViT's class-row scorer, which keeps the fused attention kernel, on the best runtime of ``latency``."""
    return _fused_scorer_latency(run, "latency_cls", "cls")


def stage_latency_sampled(run: Run) -> dict:
    """TAVT's score from 32 query rows (``tavt-sampled``), which keeps the fused attention kernel too, on the
    runtimes of ``latency_cls``: does TAVT's accuracy come with ``cls``'s GPU latency?"""
    return _fused_scorer_latency(run, "latency_sampled", "tavt-sampled")


def stage_latency_compile(run: Run) -> dict:
    """Batch 1, EViT's class-row scorer: each schedule compiled by inductor (kernels fused, static shapes) and then
    captured as a CUDA graph (what ``torch.compile(mode="reduce-overhead")`` does), timed round-robin beside the
    same schedules captured without compiling, in one process."""
    from tavt_kit.bench.backends import (compile_module, compiled_runner, cudagraph_runner, run_compiled_once,
                                         set_compile_limits, torch_runner)
    from tavt_kit.bench.runners import _AtSchedule
    from tavt_kit.models import count_macs

    a = run.args
    gpu = a.device.startswith("cuda")
    dtype = torch.float16 if gpu else torch.float32
    model = build_model(a, "cls")
    scheds = schedules(model, more=True)
    labels = ["full", "evit-0.7", "evit-0.5", "mixed-evit-merge-drop", "tavt-smallest"]
    macs = {k: int(count_macs(model, scheds[k]).total()) for k in labels}
    model = model.to(a.device, dtype)
    x = torch.randn(1, 3, img_size(a), img_size(a), device=a.device, dtype=dtype)
    set_compile_limits(64)
    capture = cudagraph_runner if gpu else torch_runner
    runners, notes, compile_s = {}, [], {}
    with torch.inference_mode():
        for k in labels:
            runners[("graph", k)] = capture(lambda s=scheds[k]: model(x, drop=s), a.device)
        for k in labels:
            if run.left() < 40:
                notes.append(f"compile {k}: skipped, past the deadline")
                continue
            t = time.perf_counter()
            try:
                c = compile_module(_AtSchedule(model, scheds[k]), "inductor" if gpu else "eager")
                run_compiled_once(lambda c=c: c(x))
                runners[("compiled+graph", k)] = compiled_runner(lambda c=c: c(x), a.device)  # as backend torch-compile
            except Exception as e:
                notes.append(f"compile {k}: {type(e).__name__}: {str(e).splitlines()[0][:300] if str(e) else ''}")
                run.say(notes[-1])
                continue
            compile_s[k] = round(time.perf_counter() - t, 1)
            run.say(f"latency_compile: {k} compiled and captured in {compile_s[k]} s")
        times = {key: [] for key in runners}
        for _ in range(3 if a.smoke else 20):  # round-robin: every runner once per round, 20 calls each
            for key, r in runners.items():
                for _ in range(20):
                    if r.timer:
                        times[key].append(r.timer())
                    else:
                        t = time.perf_counter()
                        r()
                        times[key].append(time.perf_counter() - t)
    rows = []
    for (how, k), v in times.items():
        p50 = sorted(v)[len(v) // 2] * 1e3
        full = sorted(times[(how, "full")])[len(times[(how, "full")]) // 2] * 1e3 if (how, "full") in times else None
        red = macs["full"] / macs[k]
        sp = full / p50 if full else None
        rows.append({"runtime": f"torch-{how}", "precision": "fp16" if gpu else "fp32", "scorer": "cls", "batch": 1,
                     "schedule": k, "macs": macs[k], "mac_reduction": round(red, 3), "p50_ms": round(p50, 4),
                     "speedup": round(sp, 3) if sp else None, "realised": round(sp / red, 3) if sp else None,
                     "compile_s": compile_s.get(k) if how != "graph" else None})
    return {"rows": rows, "notes": notes, "macs": macs}


def _latency(run: Run, name: str, scorer: str, combos, notes, more: bool = False) -> dict:
    from tavt_kit.bench import TimingPolicy, measure_latency
    from tavt_kit.models import count_macs
    from tavt_kit.target import DeploymentTarget

    a = run.args
    model = build_model(a, scorer)
    scheds = schedules(model, more)
    macs = {k: int(count_macs(model, s).total()) for k, s in scheds.items()}
    labels = list(scheds)
    policy = TimingPolicy(warmup=3, min_repeats=10, max_repeats=500, budget_s=a.time_budget, rel_ci=0.01)
    rows = []
    for rt, p in combos:
        if run.left() < 20:
            notes.append(f"{rt} {p}: skipped, past the deadline")
            continue
        run.say(f"latency: {rt} {p}, batch {a.batches}")
        try:
            rep = measure_latency(model, [scheds[k] for k in labels], labels=labels, include_full=False,
                                  target=DeploymentTarget(backend=rt, device=a.device, precision=p),
                                  batch_sizes=a.batches, policy=policy, verify_exports=False)
        except Exception as e:
            notes.append(f"{rt} {p}: {type(e).__name__}: {str(e).splitlines()[0][:300]}")
            run.say(notes[-1])
            continue
        for r in rep.results:
            red = macs["full"] / macs[r.label]
            rows.append({"runtime": rt, "precision": p, "scorer": scorer, "batch": r.batch_size, "schedule": r.label,
                         "counts": r.schedule, "macs": macs[r.label], "mac_reduction": round(red, 3),
                         "p50_ms": round(r.stats.p50 * 1e3, 4), "speedup": round(r.speedup, 3) if r.speedup else None,
                         "realised": round(r.speedup / red, 3) if r.speedup else None})
        run.doc["stages"][name] = {"rows": rows, "notes": notes}
        run.save()
    return {"rows": rows, "notes": notes, "macs": macs, "scorer": scorer,
            "schedules": {k: {"counts": list(s.counts), "reducers": list(s.reducers) if s.reducers else None}
                          for k, s in scheds.items()}}


def _table(run: Run, backend: str, precision: str, batch: int, name: str, scorer: str = "tavt") -> dict:
    from tavt_kit.bench import TimingPolicy
    from tavt_kit.bench.profile import profile_latency
    from tavt_kit.target import DeploymentTarget

    a = run.args
    model = trained_or_built(a, scorer)
    t = time.perf_counter()
    table = profile_latency(model, target=DeploymentTarget(backend=backend, device=a.device, precision=precision,
                                                           batch_size=batch),
                            grid=a.grid, validate=a.validate, reducers="drop,merge",
                            policy=TimingPolicy(warmup=2, min_repeats=5, budget_s=a.part_budget, rel_ci=0.02),
                            progress=None)
    wall = time.perf_counter() - t
    path = os.path.join(run.out, f"{name}.json")
    table.save(path)
    v = table.data.get("validation") or {}
    return {"path": path, "backend": backend, "precision": precision, "batch": batch, "wall_s": round(wall, 1),
            "grid": table.data.get("grid"), "separability": table.data.get("separability"),
            "validation": {k: v.get(k) for k in ("n", "median_abs_error_rel", "max_abs_error_rel", "mean_error_rel",
                                                 "median_abs_error_raw_rel")},
            "full_predicted_ms": table.predict(model.full_schedule()), "scorer": scorer,
            "merge_round_ms": table.data.get("merge_round_ms")}


def stage_table(run: Run) -> dict:
    return _table(run, "torch", "fp32", max(run.args.batches), "table-fp32-b32")


def _captured(run: Run) -> tuple:
    """The runtime a GPU deploys on (captured graphs) and its half precision; torch at fp32 elsewhere (smoke)."""
    gpu = run.args.device.startswith("cuda")
    return ("torch-cudagraph", "fp16") if gpu else ("torch", "fp32")


def stage_table_b1(run: Run) -> dict:
    backend, precision = _captured(run)
    return _table(run, backend, precision, 1, "table-fp16-b1-graph", scorer="cls")


def stage_table_b1_fp32(run: Run) -> dict:
    """``table_b1``'s fp32 counterpart: a search of fp16 searches fp32 beside it (every budget compares with it),
    so ``search_b1`` needs a table at each."""
    return _table(run, _captured(run)[0], "fp32", 1, "table-fp32-b1-graph", scorer="cls")


def stage_table_graph(run: Run) -> dict:
    """Batch 32 on captured graphs at fp16 with ``tavt-sampled`` (TAVT's score beside the fused attention): does
    the table predict within 5 % where eager launches no longer overlap the GPU's work?"""
    backend, precision = _captured(run)
    return _table(run, backend, precision, max(run.args.batches), "table-fp16-b32-graph", scorer="tavt-sampled")


def stage_table_graph_fp32(run: Run) -> dict:
    """``table_graph`` at fp32, which ``search_graph`` searches beside fp16."""
    return _table(run, _captured(run)[0], "fp32", max(run.args.batches), "table-fp32-b32-graph",
                  scorer="tavt-sampled")


def stage_search_graph(run: Run) -> dict:
    """The search on the captured batch-32 tables (fp16 beside fp32, ``tavt-sampled``) under 0.7 of the fp16 full
    model's predicted latency, the picks timed on the captured graphs."""
    return _search(run, "table_graph", "search-graph", "tavt-sampled", fraction=0.7)


def stage_search(run: Run) -> dict:
    return _search(run, "table", "search", "tavt")


def stage_search_b1(run: Run) -> dict:
    """The same search on the batch-1 table (captured graphs, fp16, EViT's scorer), the picks timed there."""
    return _search(run, "table_b1", "search-b1", "cls")


def _search(run: Run, table_stage: str, name: str, scorer: str, fraction: float = 0.6) -> dict:
    a = run.args
    table = (run.doc["stages"].get(table_stage) or {}).get("result") or {}
    # a search at a lower precision searches fp32 beside it: its table too, where one was profiled
    fp32 = (run.doc["stages"].get(f"{table_stage}_fp32") or {}).get("result") or {}
    more = ["--latency-table", fp32["path"]] if fp32.get("path") and table.get("precision") != "fp32" else []
    supernet = supernet_path(a)
    if not table.get("path"):
        return {"skipped": f"needs the table (stage {table_stage})"}
    data = []
    if not os.path.exists(supernet):  # no train stage: your own model, random weights (a search of merge schedules)
        from tavt_kit import save_checkpoint

        supernet = save_checkpoint(build_model(a, scorer), os.path.join(a.work, f"random-init-{scorer}.safetensors"))
        data = ["--dataset", "cluttered-digits", "--dataset-option", f"holdout={a.images}",
                "--dataset-option", f"test={a.test_images}"]
    budget = fraction * float(table["full_predicted_ms"])
    out = os.path.join(a.work, name)
    res = _cli(run, ["search", "--checkpoint", supernet] + data + more + ["--latency-table", table["path"],
                     "--latency-budget", f"{budget:.3f}ms", "--remeasure", "--subset", str(a.images),
                     "--population", str(a.population), "--generations", str(a.generations),
                     "--mutations", str(a.population), "--crossovers", str(a.population),
                     "--no-parent-search", "--eval-device", a.device, "--out", out]
               + (["--precisions", table["precision"]] if table.get("precision", "fp32") != "fp32" else []), name)
    res["budget_ms"] = round(budget, 3)
    path = os.path.join(out, "search.json")
    if os.path.exists(path):
        with open(path) as f:
            doc = json.load(f)
        res["timing"] = doc.get("timing")
        res["full"] = {k: (doc.get("full") or {}).get(k) for k in ("latency_ms", "latency_measured_ms",
                                                                  "test_accuracy")}
        keys = ("counts", "reducers", "precision", "macs", "latency_ms", "latency_measured_ms", "test_accuracy",
                "measured_within_budget", "family", "why")
        res["budgets"] = [{"label": b.get("label"),
                           "best": {k: (b.get("best") or {}).get(k) for k in keys if k in (b.get("best") or {})},
                           "recommended": {k: (b.get("recommended") or {}).get(k) for k in keys
                                           if k in (b.get("recommended") or {})},
                           "timed_over_budget": b.get("timed_over_budget")}
                          for b in (doc.get("budgets") or [])]
    return res


def stage_evaluator(run: Run) -> dict:
    from tavt_kit.data import DataSpec, Normalize, build_dataset, cached_tensors
    from tavt_kit.schedules import SearchSpace
    from tavt_kit.search.evaluate import CandidateEvaluator

    a = run.args
    model = trained_or_built(a).to(a.device)
    spec = DataSpec("cluttered-digits", options={"holdout": a.images, "test": a.test_images})
    ds = build_dataset(spec, split="holdout", model=model, augment=False)
    images, labels = cached_tensors(ds)
    images, labels = images[: a.images], labels[: a.images]
    space = SearchSpace.tavt(model.depth, model.num_patches, bound=0.2)
    scheds = one_generation(space, a.candidates)  # the generation micro.py search-eval times
    norm = Normalize.from_model(model)
    out = {"images": int(labels.shape[0]), "candidates": len(scheds), "batch": a.eval_batch,
           "img_size": img_size(a), "device": a.device}
    for name, dtype in (("fp32", None), ("bf16", torch.bfloat16)):
        if run.left() < 15:
            out[name] = "skipped: past the deadline"
            continue

        def plain():
            correct = []
            with torch.inference_mode(), torch.autocast(torch.device(a.device).type, dtype=dtype or torch.float32,
                                                        enabled=dtype is not None):
                for s in scheds:
                    c = 0
                    for i in range(0, len(labels), a.eval_batch):
                        x = norm(images[i:i + a.eval_batch].to(a.device))
                        c += int((model(x, drop=s).argmax(-1).cpu() == labels[i:i + a.eval_batch]).sum())
                    correct.append(c)
            return correct

        def sync():
            if a.device.startswith("cuda"):
                torch.cuda.synchronize()

        ev = CandidateEvaluator(model, images, labels, a.eval_batch, transform=norm, autocast=dtype,
                                device=a.device)
        ev.correct(scheds[:2])  # warm-up: kernels, cuBLAS handles; also fills the embedding cache
        sync()
        t = time.perf_counter()
        fast = ev.correct(scheds)
        sync()
        t_fast = time.perf_counter() - t
        t = time.perf_counter()
        slow = plain()
        sync()
        t_plain = time.perf_counter() - t
        agree = sum(int(x == y) for x, y in zip(fast, slow))
        out[name] = {"evaluator_s": round(t_fast, 2), "plain_s": round(t_plain, 2),
                     "evaluator_per_min": round(len(scheds) / t_fast * 60, 1),
                     "plain_per_min": round(len(scheds) / t_plain * 60, 1),
                     "speedup": round(t_plain / t_fast, 2), "same_accuracy": f"{agree} of {len(scheds)}",
                     "max_accuracy_difference": max(abs(x - y) for x, y in zip(fast, slow)) / len(labels),
                     "block_runs": ev.stats.block_runs, "block_runs_naive": ev.stats.block_runs_naive}
        run.say(f"evaluator {name}: {out[name]}")
    return out


def stage_suite(run: Run) -> dict:
    """The whole test suite but the CUDA and NNCF marks, on this machine (GPU present), within the deadline: each
    test's outcome is printed as it ends (``-v``), so a run cut short still names its failures."""
    a = run.args
    limit = max(30.0, run.left())
    cmd = [sys.executable, "-m", "pytest", "-v", "-p", "no:cacheprovider", "-n", str(a.suite_workers), "-rf",
           "-m", "not nncf and not cuda"]
    run.say(f"suite: {' '.join(cmd[1:])} (at most {limit:.0f} s)")
    t = time.perf_counter()
    try:
        # one thread per worker: 15 workers of 16 threads each ran the suite to 66 % in 290 s on the H200 machine
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        p = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=limit, env=env)
        text, finished = p.stdout + p.stderr, True
    except subprocess.TimeoutExpired as e:
        text = (e.stdout.decode() if isinstance(e.stdout, bytes) else e.stdout or "")
        finished = False
    with open(os.path.join(run.out, "suite.log"), "w") as f:
        f.write(text)
    failed = sorted({w for line in text.splitlines() if " FAILED " in f" {line} " or " ERROR " in f" {line} "
                     for w in line.split() if "::" in w})
    return {"finished": finished, "wall_s": round(time.perf_counter() - t, 1), "failed": failed,
            "passed": sum(1 for line in text.splitlines() if " PASSED" in line),
            "tail": text.strip().splitlines()[-1:] if text.strip() else []}


FUNCS = {name: globals()[f"stage_{name}"] for name in STAGES}


def summary(doc: dict) -> str:
    """The figures the closing note quotes."""
    lines = []
    st = doc["stages"]
    env = (st.get("env") or {}).get("result") or {}
    lines.append(f"# {env.get('gpu', 'CPU')} (driver {env.get('nvidia_smi', '-')}), torch {env.get('torch')}, "
                 f"CUDA {env.get('cuda')}, cuDNN {env.get('cudnn')}, timm {env.get('timm')}, ONNX Runtime "
                 f"{env.get('onnxruntime')} {env.get('onnxruntime_providers', '')}, TensorRT {env.get('tensorrt')}")
    lat = (st.get("latency") or {}).get("result") or st.get("latency") or {}
    cls = (st.get("latency_cls") or {}).get("result") or {}
    sampled = (st.get("latency_sampled") or {}).get("result") or {}
    comp = (st.get("latency_compile") or {}).get("result") or {}
    rows = (lat.get("rows") or []) + [{**r, "runtime": r["runtime"] + "/cls"}
                                      for r in (cls.get("rows") or []) + (comp.get("rows") or [])]
    rows += [{**r, "runtime": r["runtime"] + "/sampled"} for r in sampled.get("rows") or []]
    if rows:
        lines.append("runtime                   prec batch schedule                 MACs red.   p50 ms  speed-up  "
                     "realised")
        for r in rows:
            lines.append(f"{r['runtime']:<25} {r['precision']:<4} {r['batch']:>5} {r['schedule']:<24} "
                         f"{r['mac_reduction']:>9.2f}x {r['p50_ms']:>8.3f} {r['speedup'] or 0:>8.2f}x "
                         f"{r['realised'] or 0:>8.2f}")
        for b in sorted({r["batch"] for r in rows}):
            best = {}
            for r in rows:
                if r["batch"] == b and r["schedule"] != "full":
                    best.setdefault((r["runtime"], r["precision"]), []).append(r["realised"] or 0)
            for k, v in sorted(best.items()):
                lines.append(f"batch {b:>2} {k[0]:<25} {k[1]}: realised speed-up mean {sum(v) / len(v):.2f}, "
                             f"min {min(v):.2f}")
    for n in (lat.get("notes") or []) + (comp.get("notes") or []):
        lines.append(f"note: {n}")
    for key in ("table", "table_b1", "table_b1_fp32", "table_graph", "table_graph_fp32"):
        t = (st.get(key) or {}).get("result")
        if t:
            lines.append(f"{key}: {t['backend']} {t['precision']} batch {t['batch']} scorer {t.get('scorer')}, "
                         f"{t['wall_s']} s, merge round {t.get('merge_round_ms')} ms, validation {t['validation']}")
    for key in ("search", "search_b1", "search_graph"):
        s = (st.get(key) or {}).get("result")
        if not s or s.get("skipped"):
            continue
        lines.append(f"{key}: exit {s.get('exit')}, {s.get('wall_s')} s, budget {s.get('budget_ms')} ms, "
                     f"timing {s.get('timing')}, full {s.get('full')}")
        for b in s.get("budgets") or []:
            lines.append(f"  {b['label']}: pick {b['best']}; recommended {b['recommended']}")
    e = (st.get("evaluator") or {}).get("result")
    if e:
        lines.append(f"evaluator: {e}")
    su = (st.get("suite") or {}).get("result")
    if su:
        lines.append(f"suite: finished {su['finished']}, {su['passed']} passed, failed {su['failed']}, {su['tail']}")
    tr = (st.get("train") or {}).get("result")
    if tr:
        for k, v in tr.items():
            lines.append(f"{k}: exit {v['exit']}, {v['wall_s']} s")
    for k, v in st.items():
        if v.get("error"):
            lines.append(f"{k}: FAILED {v['error']}")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True, help="folder for gpu.json, the logs and the latency tables")
    ap.add_argument("--work", help="folder for the runs (default OUT/work)")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--stages", default=",".join(STAGES))
    ap.add_argument("--deadline-s", type=float, default=480.0, help="no stage starts after this many seconds")
    ap.add_argument("--smoke", action="store_true", help="a tiny model and short runs: checks the script anywhere")
    ap.add_argument("--steps", type=int, default=200, help="train steps")
    ap.add_argument("--distill-steps", type=int, default=150)
    ap.add_argument("--torchrun-steps", type=int, default=60)
    ap.add_argument("--test-images", type=int, default=1000)
    ap.add_argument("--train-batch", type=int, default=16)
    ap.add_argument("--batches", default="1,32")
    ap.add_argument("--time-budget", type=float, default=0.5, help="seconds of timed calls per schedule")
    ap.add_argument("--part-budget", type=float, default=0.25, help="seconds of timed calls per table part")
    ap.add_argument("--grid", type=int, default=9)
    ap.add_argument("--validate", type=int, default=10)
    ap.add_argument("--images", type=int, default=600, help="held-out images (search subset, evaluator)")
    ap.add_argument("--candidates", type=int, default=16)
    ap.add_argument("--eval-batch", type=int, default=64)
    ap.add_argument("--population", type=int, default=8)
    ap.add_argument("--generations", type=int, default=2)
    ap.add_argument("--suite-workers", type=int, default=8, help="pytest-xdist workers of the suite stage")
    args = ap.parse_args()
    args.batches = [int(b) for b in str(args.batches).split(",") if b]
    args.work = os.path.abspath(args.work or os.path.join(args.out, "work"))
    if args.smoke:
        args.steps, args.train_batch, args.images, args.candidates = min(args.steps, 4), 8, 64, 6
        args.distill_steps, args.torchrun_steps, args.test_images = 4, 2, 100
        args.time_budget, args.part_budget, args.grid, args.validate = 0.05, 0.02, 3, 2
        args.population, args.generations = 4, 1
    run = Run(args)
    for name in [s for s in args.stages.split(",") if s]:
        if run.left() < 10:
            run.doc["stages"][name] = {"skipped": "past the deadline"}
            run.say(f"{name}: skipped, past the deadline")
            run.save()
            continue
        run.say(f"stage {name}")
        t = time.perf_counter()
        try:
            res = FUNCS[name](run)
            run.doc["stages"][name] = {"result": res, "wall_s": round(time.perf_counter() - t, 1)}
        except Exception as e:
            import traceback

            traceback.print_exc()
            run.doc["stages"][name] = {"error": f"{type(e).__name__}: {str(e)[:500]}",
                                       "wall_s": round(time.perf_counter() - t, 1)}
        run.save()
    text = summary(run.doc)
    print(text)
    with open(os.path.join(run.out, "summary.txt"), "w") as f:
        f.write(text + "\n")


if __name__ == "__main__":
    main()
