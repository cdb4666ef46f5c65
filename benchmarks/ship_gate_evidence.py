"""How well do the held-out images tell the supernet's pick from the options on your model's weights?

    python benchmarks/ship_gate_evidence.py SEARCH_DIR SUPERNET PARENT

For a finished search (its ``search.json``) of a supernet and its parent (your model) on cluttered-digits, per
budget: the supernet's pick against each fp32 option on your model's weights (``training_free``), paired per image,
on the held-out images (NLL and top-1, each lead with its z against the per-image standard error and against the
standard error clustered by source digit) and on the test images (top-1, the same two z).

Why the clustered one: cluttered-digits draws each split's images from its own handwritten source digits, about
270 for the 1500 held-out images and 450 for the 3000 test images (``tavt_kit.data.cluttered``), so a digit that is
hard for one set of weights is hard in each of its renderings. The per-image standard error, which the
recommendation uses (it knows no sources on a user's dataset), is then optimistic by the printed factor.
"""
from __future__ import annotations

import json
import math
import os
import sys

import numpy as np
import torch


def per_image(model, d, images):
    import tavt_kit
    from tavt_kit.data import Normalize

    s = model.make_schedule(tavt_kit.TokenSchedule(tuple(d["counts"]), model.num_patches, reducers=d.get("reducers")))
    norm = Normalize.from_model(model)
    nll, hit = [], []
    with torch.inference_mode():
        for i in range(0, len(images.labels), 250):
            y = images.labels[i:i + 250].long()
            lp = model(norm(images.images[i:i + 250]), drop=s).float().log_softmax(-1)
            nll.append(-lp.gather(1, y.view(-1, 1)).squeeze(1))
            hit.append(lp.argmax(-1) == y)
    return torch.cat(nll).double().numpy(), torch.cat(hit).double().numpy()


def se(d, groups=None) -> float:
    """Standard error of the mean of ``d``: per image, or clustered by ``groups`` (sums within each group)."""
    if groups is None:
        return float(d.std(ddof=1) / math.sqrt(len(d)))
    m, labels = d.mean(), np.unique(groups)
    sums = np.array([(d[groups == g] - m).sum() for g in labels])
    return float(math.sqrt((sums ** 2).sum() * len(labels) / (len(labels) - 1)) / len(d))


def main(argv=None) -> int:
    import tavt_kit
    from tavt_kit.data.cluttered import option_key, provenance
    from tavt_kit.search.data import search_data
    from tavt_kit.search.recommend import shift

    sdir, supernet_path, parent_path = (argv or sys.argv[1:])[:3]
    torch.set_num_threads(1)
    doc = json.load(open(os.path.join(sdir, "search.json")))
    supernet = tavt_kit.load_checkpoint(supernet_path).eval()
    parent = tavt_kit.load_checkpoint(parent_path).eval()
    data = search_data(supernet, None, cache_dir=os.path.join(sdir, "cache"), log=lambda s: None)
    sources = provenance(option_key(dict(getattr(data.spec, "options", None) or {})))
    groups = {"holdout": sources["holdout"][0], "test": sources["test"][0]}
    sets = {"holdout": data.holdout, "test": data.test}
    assert len(groups["holdout"]) == len(data.holdout.labels), "the held-out split is not the generator's"
    cache = {}

    def values(weights, d, split):
        key = (weights, tuple(d["counts"]), tuple(d.get("reducers") or ()), split)
        if key not in cache:
            cache[key] = per_image(supernet if weights == "supernet" else parent, d, sets[split])
        return cache[key]

    factors = []
    for row in doc["budgets"]:
        pick = row.get("best")
        if not pick or pick.get("precision", "fp32") != "fp32":
            continue
        print(f"{row['label']}: recommended {row['recommended']['family']}")
        for name, d in (row.get("training_free") or {}).items():
            if "@" in name:
                continue
            cells = []
            for split in ("holdout", "test"):
                (pn, ph), (fn, fh) = values("supernet", pick, split), values("parent", d, split)
                for metric, diff in (("NLL", fn - pn), ("top-1", ph - fh)):
                    if split == "test" and metric == "NLL":
                        continue
                    lead = diff.mean() - ((shift(pick) - shift(d)) if split == "holdout" and metric == "NLL" else 0)
                    a, b = se(diff), se(diff, groups[split])
                    factors.append(b / a if a > 0 else float("nan"))
                    scale = 100 if metric == "top-1" else 1
                    cells.append(f"{split} {metric} lead {scale * lead:+.4g} z {lead / a:+.2f} "
                                 f"(clustered {lead / b:+.2f})")
            print(f"  pick vs {name:<15} " + "; ".join(cells))
    ok = [f for f in factors if f == f]
    print(f"clustered / per-image standard error: median {np.median(ok):.2f}, range {min(ok):.2f}-{max(ok):.2f}")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    raise SystemExit(main())
