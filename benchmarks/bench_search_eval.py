"""Candidates per minute: fgvc-kit's candidate evaluation vs evaluating each candidate from the images up.

    python benchmarks/bench_search_eval.py [--checkpoint SUPERNET] [--candidates 80] [--space tavt|evit]
                                           [--jpeg 0] [--model fgvc_tiny] [--img-size 64]

"From the images up" is what TAVT does: for every candidate, iterate the
held-out loader (decode, resize, crop, normalise) and run the whole model at
that schedule. fgvc-kit decodes and preprocesses once, caches the patch
embeddings (and the blocks no schedule drops at), walks a prefix tree of the
generation's schedules per image batch. Both paths run the same arithmetic in
the same batches, so the accuracies must be identical; the script checks it.

The candidates are one TAVT generation: a population of random members of the
space plus mutants and crossovers of it. ``--space evit`` restricts drops to
blocks L/4, L/2, 3L/4 (the first L/4 blocks are then shared by every schedule).
``--jpeg N`` uses a folder of N synthetic JPEG photos (500x375, like CUB's)
instead of the in-memory demo digits, so that decoding costs what it costs on
real datasets.
"""
from __future__ import annotations

import argparse
import os
import random
import tempfile
import time

import torch


def make_jpegs(root: str, n: int, classes: int = 10) -> None:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, count in (("train", classes), ("test", n)):
        for i in range(count):
            c = i % classes
            d = os.path.join(root, split, f"class_{c:02d}")
            os.makedirs(d, exist_ok=True)
            base = rng.integers(0, 255, size=(47, 63, 3), dtype=np.uint8)
            img = Image.fromarray(base).resize((500, 375), Image.BICUBIC)
            img.save(os.path.join(d, f"{i:05d}.jpg"), quality=90)


def one_generation(space, n: int):
    """Up to ``n`` distinct schedules of one TAVT generation: a random population of 20, then 30 mutants and 30
    crossovers of it (seeded)."""
    from tavt_kit.search.evolution import EvolutionSearch, EvolutionSettings, gene_of, schedule_of

    evo = EvolutionSearch(space, lambda s: [0.0] * len(s), lambda s: 0, EvolutionSettings(seed=0),
                          log=lambda line: None)
    rng = random.Random(0)
    pop = [gene_of(space.sample(rng)) for _ in range(20)]  # genes: (counts, reducers)
    genes = list(dict.fromkeys(pop + [evo.mutate(rng.choice(pop)) for _ in range(30)]
                               + [evo.crossover(*rng.sample(pop, 2)) for _ in range(30)]))[:n]
    return [schedule_of(g, space.num_patches) for g in genes]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--checkpoint", help="supernet (default: a random fgvc_tiny / --model)")
    ap.add_argument("--model", default="fgvc_tiny")
    ap.add_argument("--img-size", type=int, default=None)
    ap.add_argument("--candidates", type=int, default=80)
    ap.add_argument("--space", choices=("tavt", "evit"), default="tavt")
    ap.add_argument("--bound", type=float, default=0.3)
    ap.add_argument("--jpeg", type=int, default=0, help="use N synthetic JPEG photos instead of the demo digits")
    ap.add_argument("--batch-size", type=int, default=128, help="fgvc-kit's evaluation batch")
    ap.add_argument("--naive-batch", type=int, default=16, help="TAVT's eval batch size (its README: 16)")
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    import tavt_kit
    from tavt_kit.data import DataSpec, Normalize, build_dataset, cached_tensors, make_eval_loader
    from tavt_kit.schedules import SearchSpace
    from tavt_kit.schedules import evit_blocks
    from tavt_kit.search.evaluate import CandidateEvaluator

    torch.manual_seed(0)
    if args.checkpoint:
        model = tavt_kit.load_checkpoint(args.checkpoint)
    else:
        kw = {"img_size": args.img_size} if args.img_size else {}
        model = tavt_kit.create_model(args.model, **kw)
    model.eval()
    tmp = None
    if args.jpeg:
        tmp = tempfile.mkdtemp(prefix="fgvc-jpeg-")
        make_jpegs(tmp, args.jpeg, classes=model.num_classes)
        dataset = build_dataset(DataSpec("folder", root=tmp, holdout=0.0), split="test", model=model, augment=False)
    else:
        dataset = build_dataset(DataSpec("demo"), split="test", model=model, augment=False)
    drop_blocks = evit_blocks(model.depth) if args.space == "evit" else None
    space = SearchSpace.for_model(model, bound=args.bound, drop_blocks=drop_blocks)
    shared = next((i for i, b in enumerate(space.bounds) if b > 0), space.depth)

    scheds = one_generation(space, args.candidates)
    norm = Normalize.from_model(model)
    n_img = len(dataset)
    workers = 0 if not args.jpeg else min(2, os.cpu_count() or 1)

    # from the images up, one candidate at a time (TAVT's batch, then fgvc-kit's batch for a like-for-like view)
    def from_images_up(batch):
        t0 = time.perf_counter()
        out = []
        with torch.inference_mode():
            for s in scheds:
                correct = 0
                for x, y in make_eval_loader(dataset, batch, num_workers=workers):
                    correct += int((model(norm(x), drop=s).argmax(-1) == y).sum())
                out.append(correct)
        return out, time.perf_counter() - t0

    naive, t_naive = from_images_up(args.naive_batch)
    same_batch, t_same = from_images_up(args.batch_size)

    # fgvc-kit: decode once, cache embeddings and shared blocks, prefix tree per batch
    t0 = time.perf_counter()
    images, labels = cached_tensors(dataset)
    t_cache = time.perf_counter() - t0
    ev = CandidateEvaluator(model, images, labels, args.batch_size, transform=norm, shared_blocks=shared)
    t0 = time.perf_counter()
    fast = ev.correct(scheds)
    t_fast = time.perf_counter() - t0

    print(f"# {model.spec['backbone']['name']} {model.spec['img_size'][0]}px, {n_img} "
          f"{'JPEG' if args.jpeg else 'demo'} images, {len(scheds)} candidates of one TAVT generation, "
          f"space {args.space} (bound {args.bound}, {shared} shared blocks), batch {args.batch_size}, "
          f"{torch.get_num_threads()} threads")
    print(f"from the images up, batch {args.naive_batch:>3} (TAVT): {t_naive:8.2f} s  "
          f"{len(scheds) / t_naive * 60:8.1f} candidates/min")
    print(f"from the images up, batch {args.batch_size:>3}       : {t_same:8.2f} s  "
          f"{len(scheds) / t_same * 60:8.1f} candidates/min")
    print(f"fgvc-kit, batch {args.batch_size:>3}                 : {t_fast:8.2f} s  "
          f"{len(scheds) / t_fast * 60:8.1f} candidates/min (+ {t_cache:.2f} s decoding once for the whole search)")
    print(f"speed-up over TAVT's way {t_naive / t_fast:.2f}x, over the same batch {t_same / t_fast:.2f}x per "
          f"generation; block runs {ev.stats.block_runs} of {ev.stats.block_runs_naive}")
    print(f"identical accuracies: same batch {same_batch == fast}, TAVT batch {naive == fast}")
    if same_batch != fast:
        raise SystemExit("accuracies differ")


if __name__ == "__main__":
    main()
