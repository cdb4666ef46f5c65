"""The newcomer walk: README's commands on a small CUB-format tree, each timed, and the report checked against bench.

    python benchmarks/newcomer_walk.py [--out runs/walk] [--classes 5] [--per-class 60] [--train-steps 300]
    python benchmarks/newcomer_walk.py --fashion /usr/share/datasets/fashion-mnist \
        --checkpoint vit_s_focus.onnx --img-size 56 --epochs 2 --distill-epochs 1

``--fashion DIR``: the images are Fashion-MNIST's (the IDX files in DIR, e.g. Debian's dataset-fashion-mnist)
written as a plain folder tree, ``train/<class>/*.png`` and ``test/<class>/*.png`` (300 and 100 per class,
64 px), read with ``--dataset folder``; ``--checkpoint`` starts from pretrained weights as README's recipe does,
``--epochs`` sizes the steps to the data. ``--to-export``: from images to a verified export only (train, distill,
a search under ``--budget-fraction`` of your model's latency that profiles its own tables, export), the total
against the goal of 15 minutes on 2 idle cores:

    python benchmarks/newcomer_walk.py --fashion /usr/share/datasets/fashion-mnist \
        --checkpoint vit_s_focus.onnx --img-size 56 --epochs 2 --distill-epochs 0.5 --to-export

A user with their own birds follows the README with ``--model fgvc_tiny`` and no other size flag: train,
distill, search under a latency budget (three ways: from a table made first by ``bench profile``; with no
table, the search profiling its own and keeping it beside the checkpoint; the same again, reusing it), export
from another folder, bench the shipped file, report. Every command is the real CLI in a child process. Printed:
each command's wall time, the search times with and without a pre-made table, and whether every verdict of the
report agrees with ``bench`` on the shipped file (measured latency <= budget). Exit 1 when one does not.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time

import numpy as np


def make_cub_tree(root: str, classes: int, per_class: int, size: int = 96, seed: int = 0) -> str:
    """``root/CUB_200_2011``: ``classes`` classes of ``per_class`` JPEGs (2/3 train), each class a coloured shape
    at a random place on a noisy background (learnable, not trivial)."""
    from PIL import Image, ImageDraw

    d = os.path.join(root, "CUB_200_2011")
    if os.path.isfile(os.path.join(d, "classes.txt")):
        return d
    rng = np.random.default_rng(seed)
    names = [f"{c + 1:03d}.Bird_{c + 1}" for c in range(classes)]
    images, labels, split = [], [], []
    i = 0
    for c, name in enumerate(names):
        hue = np.array([(c * 83) % 256, (c * 151 + 60) % 256, (c * 37 + 120) % 256])
        for k in range(per_class):
            i += 1
            bg = rng.integers(0, 120, (size, size, 3)).astype(np.uint8)
            img = Image.fromarray(bg)
            draw = ImageDraw.Draw(img)
            r = int(rng.integers(size // 8, size // 4))
            x, y = (int(v) for v in rng.integers(r, size - r, 2))
            shape = [x - r, y - r, x + r, y + r]
            (draw.ellipse if c % 2 else draw.rectangle)(shape, fill=tuple(int(v) for v in hue))
            rel = f"{name}/{name.split('.')[1]}_{k:04d}_{i}.jpg"
            os.makedirs(os.path.join(d, "images", name), exist_ok=True)
            img.save(os.path.join(d, "images", rel), quality=90)
            images.append(f"{i} {rel}")
            labels.append(f"{i} {c + 1}")
            split.append(f"{i} {1 if k < 2 * per_class // 3 else 0}")
    for fname, lines in (("images.txt", images), ("image_class_labels.txt", labels),
                         ("train_test_split.txt", split), ("classes.txt", [f"{c + 1} {n}" for c, n in enumerate(names)])):
        with open(os.path.join(d, fname), "w") as f:
            f.write("\n".join(lines) + "\n")
    return d


def make_fashion_tree(root: str, idx_dir: str, train: int = 300, test: int = 100, size: int = 64) -> str:
    """``root/fashion``: Fashion-MNIST as a user's own folder tree: the first ``train`` / ``test`` images of each
    class of the IDX files' training / test split, upscaled to ``size`` px PNGs under ``train|test/<class>/``."""
    from PIL import Image

    from tavt_kit.data.fashion import FASHION_CLASSES
    from tavt_kit.data.idx import idx_folder, read_split

    d = os.path.join(root, "fashion")
    folder = idx_folder(idx_dir)
    for split, per_class in (("train", train), ("test", test)):
        images, labels, _ = read_split(folder, split, len(FASHION_CLASSES))
        for c, name in enumerate(FASHION_CLASSES):
            out = os.path.join(d, split, name.replace("/", "-"))
            os.makedirs(out, exist_ok=True)
            for k, i in enumerate(np.flatnonzero(labels == c)[:per_class]):
                Image.fromarray(images[i]).resize((size, size), Image.BICUBIC).save(os.path.join(out, f"{k:04d}.png"))
    return d


class Walk:
    def __init__(self, out: str):
        self.out, self.times = out, []

    def run(self, name: str, argv, cwd=None) -> str:
        cmd = [sys.executable, "-m", "tavt_kit.cli"] + [str(a) for a in argv]
        t = time.perf_counter()
        proc = subprocess.run(cmd, cwd=cwd or self.out, capture_output=True, text=True)
        dt = time.perf_counter() - t
        self.times.append((name, dt, proc.returncode))
        print(f"[{dt:7.1f} s] {name}: exit {proc.returncode}", flush=True)
        with open(os.path.join(self.out, "walk.log"), "a") as f:
            f.write(f"\n$ fgvc-kit {' '.join(str(a) for a in argv)}\n{proc.stdout}{proc.stderr}")
        if proc.returncode != 0:
            print(proc.stdout[-3000:], proc.stderr[-3000:], sep="\n")
            raise SystemExit(f"{name} failed")
        return proc.stdout + proc.stderr


#: the goal from images to a verified export, on 2 idle cores (seconds)
GOAL_S = 15 * 60


def to_export(w: Walk, out: str, ckpt: str, fraction: float) -> int:
    """After train and distill: the search under ``fraction`` of your model's latency (relative: timed beside your
    model; it profiles its own tables) and the export of what it ships. Prints the times, the total from images to
    a verified export against :data:`GOAL_S`, and what shipped; exit 1 when over the goal."""
    from tavt_kit.export import ExportResult
    from tavt_kit.search import SearchResult

    budget = f"{100 * fraction:g}%"
    evo = ["--population", "8", "--generations", "3", "--mutations", "8", "--crossovers", "8"]
    w.run(f"search --latency-budget {budget} (profiles its own tables)",
          ["search", "--checkpoint", ckpt, "--latency-budget", budget, "--out", "search"] + evo)
    w.run(f"export --search --budget {budget}", ["export", "--checkpoint", ckpt, "--search",
                                                 os.path.join(out, "search", "search.json"), "--budget", budget,
                                                 "--out", os.path.join(out, "export")])
    total = sum(dt for _, dt, _ in w.times)
    print("\n| command | wall s |\n|---|---:|")
    for name, dt, _ in w.times:
        print(f"| {name} | {dt:.1f} |")
    print(f"| images to a verified export | **{total:.1f}** ({total / 60:.1f} minutes; goal {GOAL_S / 60:g}) |")
    result = SearchResult.load(os.path.join(out, "search", "search.json"))
    b = next(iter(result.budgets.values()))
    d = b.shipped
    if d is not None:
        print(f"\nbudget {b.label} ({b.limit * 1e3:.3f} ms): ships {d.family} ({d.weights} weights) at "
              f"{list(d.pick.counts)}, {d.pick.precision}")
    rec = ExportResult.load(os.path.join(out, "export"))
    for fmt, v in rec.verification.items():
        print(f"export {fmt}: {rec.status}, {v.accuracy_torch:.2f} % in PyTorch -> {v.accuracy_exported:.2f} % exported")
    return 0 if total <= GOAL_S else 1


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=os.path.join("runs", "walk"))
    ap.add_argument("--classes", type=int, default=5)
    ap.add_argument("--per-class", type=int, default=60)
    ap.add_argument("--train-steps", type=int, default=300)
    ap.add_argument("--distill-steps", type=int, default=60)
    ap.add_argument("--budget-fraction", type=float, default=0.6, help="latency budget / the full model's")
    ap.add_argument("--fashion", metavar="DIR", help="Fashion-MNIST's IDX files: the walk on them as a folder tree")
    ap.add_argument("--checkpoint", metavar="FILE", help="pretrained weights to start from (default: fgvc_tiny)")
    ap.add_argument("--img-size", type=int, metavar="N", help="train's --img-size (default: the model's)")
    ap.add_argument("--epochs", type=float, help="train's --epochs instead of --train-steps")
    ap.add_argument("--distill-epochs", type=float, help="distill's --epochs instead of --distill-steps")
    ap.add_argument("--to-export", action="store_true",
                    help="images to a verified export only: train, distill, a search under a share of your model's "
                         "latency that profiles its own tables, export; the total against the goal of 15 minutes")
    args = ap.parse_args(argv)
    out = os.path.abspath(args.out)
    if os.path.isdir(out):
        shutil.rmtree(out)
    os.makedirs(out)
    data = os.path.join(out, "data")
    if args.fashion:
        dataset = ["--dataset", "folder", "--data", make_fashion_tree(data, args.fashion)]
    else:
        dataset = ["--dataset", "cub", "--data", make_cub_tree(data, args.classes, args.per_class)]
    w = Walk(out)
    small = ["--batch-size", "32", "--eval-every", "100", "--save-every", "100"]
    model = ["--checkpoint", args.checkpoint] if args.checkpoint else ["--model", "fgvc_tiny"]
    model += ["--img-size", args.img_size] if args.img_size else []
    length = ["--epochs", args.epochs] if args.epochs else ["--steps", args.train_steps, "--warmup-steps", "20"]
    log = w.run("train", ["train"] + dataset + model + length + ["--out", "train"] + small)
    from tavt_kit.models import load_checkpoint

    img = (load_checkpoint(os.path.join(out, "train", "best.safetensors")).spec or {}).get("img_size")
    length = ["--epochs", args.distill_epochs] if args.distill_epochs else \
        ["--steps", args.distill_steps, "--warmup-steps", "20"]
    w.run("distill", ["distill", "--checkpoint", "train/best.safetensors", "--out", "distill"] + length + small)
    ckpt = os.path.join(out, "distill", "best.safetensors")
    if args.to_export:
        return to_export(w, out, ckpt, args.budget_fraction)
    # the pre-made table: the same target and settings as the one the search profiles for itself
    w.run("bench profile (the pre-made table)", ["bench", "profile", "--checkpoint", ckpt, "--out", "table",
                                                 "--reducers", "drop,merge", "--backend", "openvino", "--grid", "9",
                                                 "--time-budget", "0.3", "--min-repeats", "5", "--warmup", "2",
                                                 "--exporter", "torchscript"])
    from tavt_kit.bench import LatencyTable

    table = LatencyTable.load(os.path.join(out, "table", "latency_table.json"))
    full_ms = table.predict(load_checkpoint(ckpt).full_schedule())
    budget = f"{args.budget_fraction * full_ms:.3g}ms"
    evo = ["--population", "8", "--generations", "3", "--mutations", "8", "--crossovers", "8"]
    w.run("search with the pre-made table", ["search", "--checkpoint", ckpt, "--latency-table",
                                             "table/latency_table.json", "--remeasure", "--latency-budget", budget,
                                             "--out", "search_table"] + evo)
    cache = os.path.join(out, "distill", "latency-tables")
    shutil.rmtree(cache, ignore_errors=True)
    w.run("search without a table (profiles its own)", ["search", "--checkpoint", ckpt, "--latency-budget", budget,
                                                        "--out", "search"] + evo)
    w.run("search without a table again (reuses it)", ["search", "--checkpoint", ckpt, "--latency-budget", budget,
                                                       "--out", "search_again"] + evo)
    from tavt_kit.search import SearchResult

    result = SearchResult.load(os.path.join(out, "search", "search.json"))
    label = next(iter(result.budgets))
    elsewhere = os.path.join(out, "elsewhere")
    os.makedirs(elsewhere)
    w.run("export (from another folder)", ["export", "--checkpoint", ckpt, "--search",
                                           os.path.join(out, "search", "search.json"), "--budget", label,
                                           "--out", os.path.join(out, "export")], cwd=elsewhere)
    w.run("bench the shipped pick", ["bench", "--checkpoint", ckpt, "--search",
                                     os.path.join(out, "search", "search.json"), "--out", "bench"])
    w.run("report", ["report", "--search", "search/search.json", "--bench", "bench/bench.json", "--export",
                     "export/export.json", "--out", "report"])
    # the report's verdict per budget against bench's measurement of the same schedule on the search's target
    md = open(os.path.join(out, "report", "report.md")).read()
    ship = md[md.index("## What to ship"):].split("\n## ")[0]
    bench = json.load(open(os.path.join(out, "bench", "bench.json")))
    agree = True
    for b in result.budgets.values():
        line = next(ln for ln in ship.splitlines() if ln.startswith(f"| {b.label} "))
        # what the budget ships (the one rule: the searched pick, or the recommendation on your model) at its reducers
        shipped = b.shipped.pick if b.shipped is not None else b.best
        counts = shipped.counts if shipped is not None else ()
        merges = tuple(r == "merge" for r in (shipped.reducers if shipped is not None and shipped.reducers
                                              else [None] * len(counts)))
        rows = [r for r in bench["results"] if tuple(r.get("schedule") or result.full.counts) == counts
                and tuple(x == "merge" for x in (r.get("reducers") or [None] * len(counts))) == merges]
        measured = rows[0]["latency_ms"]["p50"] if rows else None
        says_pass = "| pass |" in line
        ok = measured is not None and measured <= b.limit * 1e3
        agree &= says_pass == ok
        print(f"budget {b.label}: report says {'pass' if says_pass else 'FAIL'}; bench measured "
              f"{measured if measured is None else round(measured, 3)} ms -> {'agree' if says_pass == ok else 'DISAGREE'}")

    def vs(pick) -> str:
        v = pick.vs_parent if pick is not None else None
        if not v:
            return "-"
        return "{:.2f} % ({:+.2f} [{:+.2f}, {:+.2f}] points)".format(
            100 * pick.test_accuracy, 100 * v.difference, *(100 * x for x in v.interval))

    if result.parent is not None and result.parent.test_accuracy is not None:
        print(f"your model (searched test images): {100 * result.parent.test_accuracy:.2f} %")
    for b in result.budgets.values():
        shipped = b.shipped
        print(f"budget {b.label}: ships {shipped.family if shipped else 'nothing'} "
              f"{vs(shipped.pick) if shipped else ''}; ToMe on your model {vs(b.training_free.get('tome_parent'))}")
    print(f"\nimage size trained at: {img}")
    for line in log.splitlines():  # your model's test top-1, as train printed it
        if line.startswith("test"):
            print(f"your model: {line}")
    print("| command | wall s | exit |\n|---|---:|---:|")
    for name, dt, rc in w.times:
        print(f"| {name} | {dt:.1f} | {rc} |")
    return 0 if agree else 1


if __name__ == "__main__":
    raise SystemExit(main())
